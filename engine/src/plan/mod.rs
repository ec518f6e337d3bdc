//! Planning: desired (the stack) against actual (read from the hosts, one round trip per host)
//! against state (what kz manages), into a list of changes.
//!
//! `select` chooses the instances (`--target`), `read` reads them, `decide` makes each one's
//! change; this file holds the plan document and strings them together.

mod changes;
mod decide;
mod read;
mod select;

pub(crate) use read::{Reads, panic_message, read_all};
pub use read::{batch_script, split_batch};
pub use select::{matches_target, select};

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use kz_state::State;

use crate::graph::DepGraph;
use crate::model::{Attr, AttrValue, Instance, Stack, Value};
use crate::provider::{Placement, Providers, TransportFactory};
use crate::record::instance_from_state;

/// Version of the JSON plan document (`kz plan --json`, `kz plan --out`).
pub const PLAN_FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    /// It exists and matches but is not in state yet: apply records it without touching it.
    Adopt,
    /// A gate runs again at apply time (never a change of the plan: see [`Plan::gates`]).
    Verify,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Adopt => "adopt",
            Action::Verify => "verify",
        }
    }
}

/// One attribute that differs, as shown to the user: values of sensitive attributes are masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrChange {
    pub name: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// The new value depends on a secret that is not set: it will be known at apply time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: String,
    pub module: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// The host of an instance on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The hosts of an instance spanning a group of hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The API of an instance behind one ("Hetzner Cloud").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attributes: Vec<AttrChange>,
}

/// A gate, as the plan read it, and whether apply will run it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStatus {
    pub address: String,
    /// It passes now; `None` when it was not read (`--refresh=false`, or its host unreadable).
    pub passing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Apply runs it again: it does not pass now, or something it depends on changes.
    pub will_run: bool,
}

/// An instance that exists but whose attributes could not all be compared, because they use a
/// secret that is not set: the plan cannot say whether it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unverified {
    pub address: String,
    /// The attributes not compared.
    pub attributes: Vec<String>,
}

/// A part of an instance its host cannot change (swap inside a container): left as it is, and
/// shown so that its absence from the changes is explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotApplicable {
    pub address: String,
    /// The attribute, or a part of one (`sysctl vm.swappiness`).
    pub attribute: String,
    pub reason: String,
}

/// A live fact of an instance, as its provider read it (see [`crate::provider::Observation::live`]):
/// shown whether the instance changes or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveFact {
    pub address: String,
    pub text: String,
}

/// A module gone from the stack, and how many instances of it the plan deletes (all it has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedModule {
    pub module: String,
    pub deletes: usize,
}

/// A host or an instance that could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanError {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub adopt: usize,
    pub no_op: usize,
    /// Instances that could not be compared (see [`Plan::unverified`]), counted in no change
    /// field above unless something else of theirs changes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unverified: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadStats {
    /// Hosts read from (refresh only).
    pub hosts: usize,
    /// Transport round trips spent reading: one per host.
    pub round_trips: usize,
    /// Connections opened to read (SSH): one per host, plus one per jump host.
    #[serde(default)]
    pub connections: usize,
    /// Reads of resources behind an API (one per provider, e.g. Hetzner Cloud).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub api_reads: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRef {
    pub lineage: Option<String>,
    pub serial: u64,
}

/// A plan, as rendered and as saved by `kz plan --out`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub kz_version: String,
    pub stack: String,
    pub stack_digest: String,
    pub state: StateRef,
    pub refreshed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Modules the state holds but the stack no longer declares, whose every instance this plan
    /// deletes: a module file removed, renamed, or no longer read is said loudly, above the
    /// changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_modules: Vec<RemovedModule>,
    /// Modules a lab run leaves out (`lab = { skip = "..." }`), with their reasons and the
    /// modules that depend on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_modules: Vec<crate::overlay::SkippedModule>,
    /// Resources a lab run leaves out on their own (`lab = { skip = "..." }`, or behind an API
    /// with no stand-in here), with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_resources: Vec<crate::overlay::SkippedResource>,
    /// Resources with changes here that apply one host at a time (`serial`), in their order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial: Vec<crate::model::SerialOrder>,
    /// The modules that have changes, in the order apply reaches them, with how many.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<ModuleChanges>,
    pub changes: Vec<Change>,
    /// Instances whose attributes use secrets that are not set, so they could not be compared:
    /// whether they changed is not known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified: Vec<Unverified>,
    /// Parts the hosts cannot change, left as they are (see [`NotApplicable`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applicable: Vec<NotApplicable>,
    /// What instances are live (a replication group's master), in stack order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<LiveFact>,
    /// The health checks that gate what depends on them, as read now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateStatus>,
    pub errors: Vec<PlanError>,
    pub summary: Summary,
    pub read: ReadStats,
    /// Set in saved plans: the stack directory the plan was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_dir: Option<String>,
    /// Set in saved plans: a salted digest of the secret values the plan was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_digest: Option<String>,
    /// The plan was made against the stack's lab (`--lab`): it applies to the lab only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lab: bool,
}

impl Plan {
    /// Whether the plan has changes, or cannot rule them out (instances not compared):
    /// `--detailed-exitcode` never says "no changes" about what it did not compare.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty() || !self.unverified.is_empty()
    }
}

impl Change {
    /// Where the change happens, as plans group changes: `host NAME`, `hosts A, B, C`, or the
    /// API's name.
    pub fn place(&self) -> String {
        match (&self.host, &self.service) {
            (Some(h), _) => format!("host {h}"),
            (None, Some(s)) => s.clone(),
            (None, None) => format!("hosts {}", self.members.join(", ")),
        }
    }
}

/// One module of a plan, in apply order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModuleChanges {
    pub module: String,
    pub changes: usize,
}

/// How many changes each module that has some holds, modules in apply order.
fn module_changes(order: &[String], changes: &[Change]) -> Vec<ModuleChanges> {
    order
        .iter()
        .map(|m| ModuleChanges {
            module: m.clone(),
            changes: changes
                .iter()
                .filter(|c| c.address.split('.').next() == Some(m.as_str()))
                .count(),
        })
        .filter(|m| m.changes > 0)
        .collect()
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub refresh: bool,
    pub targets: Vec<String>,
    pub replace: Vec<String>,
    pub parallelism: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            refresh: true,
            targets: Vec::new(),
            replace: Vec::new(),
            parallelism: 10,
        }
    }
}

/// What planning and applying need from outside the engine: the providers, and how to reach
/// each host.
#[derive(Clone)]
pub struct Runtime {
    pub providers: Providers,
    pub transports: Arc<dyn TransportFactory>,
}

/// Bad `--target` or `--replace` values: user input, reported before anything is read.
#[derive(Debug, thiserror::Error)]
pub enum PlanInputError {
    #[error(
        "--target `{0}` matches no instance of the stack or the state (expected MODULE, MODULE.TYPE.NAME or MODULE.TYPE.NAME[HOST])"
    )]
    UnknownTarget(String),
    #[error("--target {0}: nothing of it runs here")]
    SkippedTarget(String),
    #[error("--replace `{0}` is not an instance of the stack (expected MODULE.TYPE.NAME[HOST])")]
    UnknownReplace(String),
    /// Loading rejects cycles; a stack built some other way may still hold one.
    #[error("dependency cycle: {0}")]
    Cycle(String),
    #[error("resource type `{0}` has no provider in this build of kz")]
    NoProvider(String),
}

pub async fn plan(
    stack: &Stack,
    state: Option<&State>,
    opts: &PlanOptions,
    runtime: &Runtime,
) -> Result<Plan, PlanInputError> {
    let graph = DepGraph::build(&stack.instances, &stack.modules)
        .map_err(|c| PlanInputError::Cycle(c.members.join(" -> ")))?;
    let mut selected = select(stack, &graph, &opts.targets).map_err(|e| match e {
        PlanInputError::UnknownTarget(_) => skipped_target(stack, &opts.targets).unwrap_or(e),
        e => e,
    })?;
    let mut deletes = select::deleted_in_scope(stack, state, &opts.targets);
    // A module or resource skipped in the lab is left alone there: what the lab's state recorded
    // of it (applied before it was skipped) is neither read nor deleted; nor is what lives behind
    // an API the run does not reach.
    let mut left_alone = Vec::new();
    stack
        .left_out
        .keep_out_of_deletes(&mut deletes, &mut left_alone);
    if !opts.targets.is_empty() && selected.iter().all(|s| !s) && deletes.is_empty() {
        return Err(skipped_target(stack, &opts.targets)
            .unwrap_or_else(|| PlanInputError::UnknownTarget(opts.targets.join(", "))));
    }
    let replace: HashSet<&str> = opts.replace.iter().map(String::as_str).collect();
    for r in &replace {
        match stack
            .instances
            .iter()
            .position(|i| i.address.to_string() == *r)
        {
            Some(i) => selected[i] = true,
            None => return Err(PlanInputError::UnknownReplace((*r).to_string())),
        }
    }
    for inst in &stack.instances {
        if runtime.providers.get(inst.kind()).is_none() {
            return Err(PlanInputError::NoProvider(inst.kind().to_string()));
        }
    }
    // Probes may use what the last apply computed (a container id).
    let instances = with_outputs(&stack.instances, state);

    let reads = if opts.refresh {
        read::read_all(stack, &instances, &selected, opts.parallelism, runtime).await
    } else {
        read::Reads::default()
    };
    let mut d = changes::decide_all(&instances, &selected, state, &reads, &replace, runtime);
    let removed_modules = changes::removed_modules(stack, state, &deletes);
    for (addr, r) in deletes {
        let mut c = delete_change(addr, r, Some("no longer in the stack".into()));
        c.service = service_of(runtime, &c.kind, c.host.is_none() && c.members.is_empty());
        d.changes.push(c);
    }
    // Hosts first, then groups, then what lives behind an API (load balancers, which depend on
    // everything else); within a place, modules in the order apply reaches them.
    let order = stack.module_order();
    let rank = |m: &str| order.iter().position(|o| o == m).unwrap_or(order.len());
    d.changes.sort_by_cached_key(|c| {
        let kind = match (&c.host, &c.service) {
            (Some(_), _) => 0,
            (None, None) => 1,
            (None, Some(_)) => 2,
        };
        let module = c.address.split('.').next().unwrap_or("");
        (kind, c.place(), rank(module), c.address.clone())
    });
    let modules = module_changes(&order, &d.changes);
    d.summary.count(&d.changes);
    d.summary.unverified = d.unverified.len();
    mark_gates_below_changes(stack, &graph, &d.changes, &mut d.gates);
    let mut warnings = left_alone;
    if d.unknown_used {
        warnings.push(format!(
            "secrets not set: {}; changes to attributes that use them cannot be detected until they are",
            stack.secrets.missing_vars().join(", ")
        ));
    }
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION,
        kz_version: env!("CARGO_PKG_VERSION").into(),
        stack: stack.name.clone(),
        stack_digest: stack.digest.clone(),
        state: StateRef {
            lineage: state.map(|s| s.lineage.clone()),
            serial: state.map_or(0, |s| s.serial),
        },
        refreshed: opts.refresh,
        targets: opts.targets.clone(),
        warnings,
        removed_modules,
        skipped_modules: stack.left_out.modules.clone(),
        skipped_resources: stack.left_out.resources.clone(),
        serial: stack
            .serial
            .iter()
            .filter(|o| {
                d.changes
                    .iter()
                    .any(|c| format!("{}.{}.{}", c.module, c.kind, c.name) == o.resource)
            })
            .cloned()
            .collect(),
        modules,
        changes: d.changes,
        unverified: d.unverified,
        not_applicable: d.not_applicable,
        live: d.live,
        gates: d.gates,
        errors: reads.errors,
        summary: d.summary,
        read: reads.stats,
        stack_dir: None,
        secrets_digest: None,
        lab: false,
    })
}

/// A gate runs again at apply time when anything it depends on, directly or through modules,
/// has a change in the plan.
fn mark_gates_below_changes(
    stack: &Stack,
    graph: &DepGraph,
    changes: &[Change],
    gates: &mut [GateStatus],
) {
    // Adopting changes nothing on a host.
    let changed: HashSet<&str> = changes
        .iter()
        .filter(|c| c.action != Action::Adopt)
        .map(|c| c.address.as_str())
        .collect();
    for g in gates.iter_mut().filter(|g| !g.will_run) {
        let Some(i) = stack
            .instances
            .iter()
            .position(|inst| inst.address.to_string() == g.address)
        else {
            continue;
        };
        let mut todo = vec![graph.instance_nodes[i]];
        let mut seen: HashSet<_> = todo.iter().copied().collect();
        while let Some(n) = todo.pop() {
            for p in graph
                .graph
                .neighbors_directed(n, petgraph::Direction::Incoming)
            {
                if !seen.insert(p) {
                    continue;
                }
                if let crate::graph::Node::Instance(j) = graph.graph[p]
                    && changed.contains(stack.instances[j].address.to_string().as_str())
                {
                    g.will_run = true;
                    break;
                }
                todo.push(p);
            }
            if g.will_run {
                break;
            }
        }
    }
}

/// The API an instance on no host lives behind, for plans to name it.
pub(super) fn service_of(runtime: &Runtime, kind: &str, on_no_host: bool) -> Option<String> {
    match runtime.providers.get(kind)?.placement() {
        Placement::Api { service } if on_no_host => Some(service.to_string()),
        _ => None,
    }
}

/// The instances, each with the values its provider computed when it was last applied.
/// Borrowed as they are when the state records no output (nearly always): a copy of every
/// instance would cost a large stack time and memory for nothing.
fn with_outputs<'a>(instances: &'a [Instance], state: Option<&State>) -> Cow<'a, [Instance]> {
    let Some(state) = state.filter(|s| s.resources.values().any(|r| !r.outputs.is_empty())) else {
        return Cow::Borrowed(instances);
    };
    Cow::Owned(
        instances
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if let Some(r) = state.resources.get(&i.address.to_string()) {
                    i.outputs = crate::record::read_outputs(r);
                }
                i
            })
            .collect(),
    )
}

/// The deletion of a recorded instance, showing what it recorded.
pub fn delete_change(address: &str, r: &kz_state::ResourceState, reason: Option<String>) -> Change {
    let inst = instance_from_state(r);
    Change {
        address: address.to_string(),
        module: r.module.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        host: inst.address.host.clone(),
        members: r.members.clone(),
        service: None,
        action: Action::Delete,
        reason,
        attributes: inst
            .attrs
            .iter()
            .map(|(k, a)| AttrChange {
                name: k.clone(),
                before: Some(shown(a)),
                after: None,
                sensitive: a.sensitive,
                unknown: false,
            })
            .collect(),
    }
}

/// The JSON form of an attribute as shown: masked when sensitive.
pub fn shown(a: &Attr) -> serde_json::Value {
    if a.sensitive {
        return serde_json::Value::String("(sensitive)".into());
    }
    match &a.value {
        AttrValue::Known(v) => shown_value(v),
        AttrValue::Unknown => serde_json::Value::String("(known after apply)".into()),
        AttrValue::Hashed(_) => serde_json::Value::String("(sensitive)".into()),
    }
}

fn shown_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Bytes(b) => {
            serde_json::to_value(crate::model::ContentDigest::of(b)).unwrap_or_default()
        }
        Value::List(l) => serde_json::Value::Array(l.iter().map(shown_value).collect()),
        Value::Map(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), shown_value(v))).collect())
        }
        other => serde_json::to_value(other).unwrap_or_default(),
    }
}

/// A target the lab left out is no unknown one: the error says why it is not in this run.
fn skipped_target(stack: &Stack, targets: &[String]) -> Option<PlanInputError> {
    let skipped: Vec<String> = targets
        .iter()
        .filter_map(|t| {
            let resource = t.split('[').next().unwrap_or(t);
            stack
                .left_out
                .skip_reason(resource)
                .map(|why| format!("`{t}` is {why}"))
        })
        .collect();
    (!skipped.is_empty()).then(|| PlanInputError::SkippedTarget(skipped.join("; ")))
}
