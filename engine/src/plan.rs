//! Planning: desired (the stack) against actual (read from the hosts, one round trip per host)
//! against state (what kz manages), into a list of changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use petgraph::Direction;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use kz_state::State;

use crate::graph::{DepGraph, Node};
use crate::model::{Attr, AttrValue, Instance, Stack, TransportKind, Value};
use crate::provider::{
    CommandSpec, Observation, ProbeOutput, Providers, TransportError, TransportFactory,
};
use crate::record::{instance_from_state, read_attrs, same};

/// Version of the JSON plan document (`kz plan --json`, `kz plan --out`).
pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    /// It exists and matches but is not in state yet: apply records it without touching it.
    Adopt,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Adopt => "adopt",
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
    pub host: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attributes: Vec<AttrChange>,
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
    pub changes: Vec<Change>,
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
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }
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

/// What planning and applying need from outside the engine.
#[derive(Clone)]
pub struct Env {
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
    #[error("--replace `{0}` is not an instance of the stack (expected MODULE.TYPE.NAME[HOST])")]
    UnknownReplace(String),
    /// Loading rejects cycles; a stack built some other way may still hold one.
    #[error("dependency cycle: {0}")]
    Cycle(String),
    #[error("resource type `{0}` has no provider in this build of kz")]
    NoProvider(String),
}

/// Whether a `--target` value names this instance (by address, resource or module).
pub fn matches_target(target: &str, address: &str, resource: &str, module: &str) -> bool {
    target == address || target == resource || target == module
}

/// The instances a plan covers: all, or the targets plus everything they depend on.
pub fn select(
    stack: &Stack,
    graph: &DepGraph,
    targets: &[String],
) -> Result<Vec<bool>, PlanInputError> {
    if targets.is_empty() {
        return Ok(vec![true; stack.instances.len()]);
    }
    let mut selected = vec![false; stack.instances.len()];
    let mut stack_nodes = Vec::new();
    for t in targets {
        let mut hit = false;
        for (i, inst) in stack.instances.iter().enumerate() {
            let a = &inst.address;
            if matches_target(t, &a.to_string(), &a.resource(), &a.module) {
                stack_nodes.push(graph.instance_nodes[i]);
                hit = true;
            }
        }
        if !hit && !stack.modules.contains_key(t) {
            stack_nodes.clear();
            return Err(PlanInputError::UnknownTarget(t.clone()));
        }
    }
    // Walk dependencies backwards from the targets.
    let mut seen: HashSet<_> = stack_nodes.iter().copied().collect();
    while let Some(n) = stack_nodes.pop() {
        if let Node::Instance(i) = graph.graph[n] {
            selected[i] = true;
        }
        for p in graph.graph.neighbors_directed(n, Direction::Incoming) {
            if seen.insert(p) {
                stack_nodes.push(p);
            }
        }
    }
    Ok(selected)
}

pub async fn plan(
    stack: &Stack,
    state: Option<&State>,
    opts: &PlanOptions,
    env: &Env,
) -> Result<Plan, PlanInputError> {
    let graph = DepGraph::build(&stack.instances, &stack.modules)
        .map_err(|c| PlanInputError::Cycle(c.members.join(" -> ")))?;
    let mut selected = select(stack, &graph, &opts.targets)?;
    // Deleted-from-stack instances that a target names are planned too.
    let deletes: Vec<(&String, &kz_state::ResourceState)> = state
        .map(|s| {
            let declared: HashSet<String> = stack
                .instances
                .iter()
                .map(|i| i.address.to_string())
                .collect();
            s.resources
                .iter()
                .filter(|(a, _)| !declared.contains(*a))
                .filter(|(a, r)| {
                    opts.targets.is_empty()
                        || opts.targets.iter().any(|t| {
                            matches_target(
                                t,
                                a,
                                &format!("{}.{}.{}", r.module, r.kind, r.name),
                                &r.module,
                            )
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    if !opts.targets.is_empty() && selected.iter().all(|s| !s) && deletes.is_empty() {
        return Err(PlanInputError::UnknownTarget(opts.targets.join(", ")));
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
        if env.providers.get(inst.kind()).is_none() {
            return Err(PlanInputError::NoProvider(inst.kind().to_string()));
        }
    }

    let mut errors = Vec::new();
    let mut read = ReadStats::default();
    let observations = if opts.refresh {
        read_hosts(
            stack,
            &selected,
            opts.parallelism,
            env,
            &mut errors,
            &mut read,
        )
        .await
    } else {
        HashMap::new()
    };
    let failed_hosts: HashSet<&str> = errors
        .iter()
        .filter(|e| e.address.is_none())
        .map(|e| e.host.as_str())
        .collect();
    let failed_instances: HashSet<&str> =
        errors.iter().filter_map(|e| e.address.as_deref()).collect();

    let mut changes = Vec::new();
    let mut summary = Summary::default();
    let mut unknown_used = false;
    for (i, inst) in stack.instances.iter().enumerate() {
        if !selected[i] {
            continue;
        }
        let addr = inst.address.to_string();
        if failed_hosts.contains(inst.host()) || failed_instances.contains(addr.as_str()) {
            continue;
        }
        let provider = env
            .providers
            .get(inst.kind())
            .ok_or_else(|| PlanInputError::NoProvider(inst.kind().to_string()))?;
        let recorded = state.and_then(|s| s.resources.get(&addr));
        let decision = decide(
            inst,
            provider.force_new(),
            state,
            recorded.map(read_attrs).as_ref(),
            observations.get(&i),
            replace.contains(addr.as_str()),
        );
        unknown_used |= inst.attrs.values().any(|a| a.value == AttrValue::Unknown);
        match decision {
            None => summary.no_op += 1,
            Some(c) => changes.push(c),
        }
    }
    for (addr, r) in deletes {
        changes.push(delete_change(
            addr,
            r,
            Some("no longer in the stack".into()),
        ));
    }
    changes.sort_by(|a, b| (&a.host, &a.address).cmp(&(&b.host, &b.address)));
    for c in &changes {
        match c.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Replace => summary.replace += 1,
            Action::Delete => summary.delete += 1,
            Action::Adopt => summary.adopt += 1,
        }
    }
    let mut warnings = Vec::new();
    if unknown_used {
        warnings.push(format!(
            "secrets not set: {}; changes to attributes that use them cannot be detected until they are",
            stack
                .secrets_missing
                .iter()
                .map(|s| crate::interp::secret_var(s))
                .collect::<Vec<_>>()
                .join(", ")
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
        changes,
        errors,
        summary,
        read,
        stack_dir: None,
        secrets_digest: None,
        lab: false,
    })
}

/// The deletion of a recorded instance, showing what it recorded.
pub fn delete_change(address: &str, r: &kz_state::ResourceState, reason: Option<String>) -> Change {
    let inst = instance_from_state(r);
    Change {
        address: address.to_string(),
        module: r.module.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        host: r.host.clone(),
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
        other => serde_json::to_value(other).unwrap_or_default(),
    }
}

/// The change for one declared instance, or `None` when it is in sync.
fn decide(
    inst: &Instance,
    force_new: &[&str],
    state: Option<&State>,
    recorded: Option<&BTreeMap<String, Attr>>,
    observed: Option<&Observation>,
    replace: bool,
) -> Option<Change> {
    let exists = observed.map_or(recorded.is_some(), |o| o.exists);
    let before_of = |k: &str| -> Option<Attr> {
        if let Some(v) = observed.and_then(|o| o.attrs.get(k)) {
            // Observed values stay masked when the attribute holds a secret now or held one when
            // it was applied (the host's copy still contains it).
            let sensitive = inst.attrs.get(k).is_some_and(|a| a.sensitive)
                || recorded.and_then(|r| r.get(k)).is_some_and(|a| a.sensitive);
            return Some(Attr {
                value: AttrValue::Known(v.clone()),
                sensitive,
            });
        }
        recorded.and_then(|r| r.get(k)).cloned()
    };
    let diff = |only_changed: bool| -> Vec<AttrChange> {
        inst.attrs
            .iter()
            .filter_map(|(k, desired)| {
                let before = if exists { before_of(k) } else { None };
                // Observed attributes compare with the host; the others with the state, where a
                // missing value means it was unset when applied (so setting it is a change).
                let comparable =
                    observed.is_some_and(|o| o.attrs.contains_key(k)) || recorded.is_some();
                if only_changed
                    && (!comparable || before.as_ref().is_some_and(|b| same(state, desired, b)))
                {
                    return None;
                }
                Some(AttrChange {
                    name: k.clone(),
                    before: before.as_ref().map(shown),
                    after: Some(shown(desired)),
                    sensitive: desired.sensitive || before.as_ref().is_some_and(|b| b.sensitive),
                    unknown: desired.value == AttrValue::Unknown,
                })
            })
            .collect()
    };
    let a = &inst.address;
    let change = |action: Action, reason: Option<String>, attributes: Vec<AttrChange>| Change {
        address: a.to_string(),
        module: a.module.clone(),
        kind: a.kind.clone(),
        name: a.name.clone(),
        host: a.host.clone(),
        action,
        reason,
        attributes,
    };
    if replace && recorded.is_some() {
        return Some(change(
            Action::Replace,
            Some("replacement requested with --replace".into()),
            diff(false),
        ));
    }
    // An attribute that cannot change in place is compared with what exists when it can be read
    // (an object made outside kz, or forgotten by the state, is replaced too), else the record.
    for k in force_new {
        let old = if exists {
            before_of(k)
        } else {
            recorded.and_then(|r| r.get(*k)).cloned()
        };
        if let (Some(d), Some(old)) = (inst.attrs.get(*k), old)
            && !same(state, d, &old)
        {
            let attributes = vec![AttrChange {
                name: (*k).to_string(),
                before: Some(shown(&old)),
                after: Some(shown(d)),
                sensitive: d.sensitive,
                unknown: false,
            }];
            return Some(change(
                Action::Replace,
                Some(format!("`{k}` cannot change in place")),
                attributes,
            ));
        }
    }
    if !exists {
        let reason = match (recorded.is_some(), observed.and_then(|o| o.note.clone())) {
            (true, Some(note)) => Some(format!("{note}; recorded in state but gone from the host")),
            (true, None) => Some("recorded in state but gone from the host".into()),
            (false, note) => note,
        };
        return Some(change(Action::Create, reason, diff(false)));
    }
    let changed = diff(true);
    match (recorded.is_some(), changed.is_empty()) {
        (true, true) => None,
        (true, false) => Some(change(Action::Update, None, changed)),
        (false, true) => Some(change(
            Action::Adopt,
            Some("exists and matches; apply records it without touching it".into()),
            Vec::new(),
        )),
        (false, false) => Some(change(
            Action::Update,
            Some("exists on the host but is not managed by kz yet".into()),
            changed,
        )),
    }
}

/// Reads every selected instance that has a probe, one transport round trip per host.
async fn read_hosts(
    stack: &Stack,
    selected: &[bool],
    parallelism: usize,
    env: &Env,
    errors: &mut Vec<PlanError>,
    stats: &mut ReadStats,
) -> HashMap<usize, Observation> {
    // Per host, the sections of its one read: a provider's batched probe for several of its
    // instances, or one probe per instance.
    let mut by_kind: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, inst) in stack.instances.iter().enumerate() {
        if selected[i] {
            by_kind
                .entry((inst.host(), inst.kind()))
                .or_default()
                .push(i);
        }
    }
    let mut by_host: BTreeMap<&str, Vec<(Vec<usize>, String)>> = BTreeMap::new();
    let mut api_reads = tokio::task::JoinSet::new();
    let mut api_tasks = HashMap::new();
    for ((host, kind), indices) in by_kind {
        let Some(provider) = env.providers.get(kind) else {
            continue;
        };
        if stack
            .hosts
            .get(host)
            .is_some_and(|h| h.transport == TransportKind::Api)
        {
            // Resources behind an API are read by their provider, all at once, while the hosts
            // are read.
            let provider = Arc::clone(provider);
            let insts: Vec<Instance> = indices
                .iter()
                .map(|i| stack.instances[*i].clone())
                .collect();
            let task = api_reads.spawn(async move { provider.read(&insts).await });
            api_tasks.insert(task.id(), (host.to_string(), indices));
            continue;
        }
        let insts: Vec<&Instance> = indices.iter().map(|i| &stack.instances[*i]).collect();
        if insts.len() > 1
            && let Some(p) = provider.probe_batch(&insts)
        {
            by_host.entry(host).or_default().push((indices, p));
            continue;
        }
        for i in indices {
            if let Some(p) = provider.probe(&stack.instances[i]) {
                by_host.entry(host).or_default().push((vec![i], p));
            }
        }
    }
    let limit = Arc::new(Semaphore::new(parallelism.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (host_name, probes) in by_host {
        let Some(host) = stack.hosts.get(host_name) else {
            continue;
        };
        let transport = match env.transports.transport(host) {
            Ok(t) => t,
            Err(e) => {
                errors.push(PlanError {
                    host: host_name.to_string(),
                    address: None,
                    message: format!("{} ({}): {e}", host.name, host.address),
                });
                continue;
            }
        };
        let timeout = host.ssh.command_timeout;
        let limit = Arc::clone(&limit);
        let label = format!("{} ({})", host.name, host.address);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let nonce = crate::random_hex(8);
            let script = batch_script(&nonce, probes.iter().map(|(_, p)| p.as_str()));
            let out = transport
                .run(CommandSpec {
                    script,
                    stdin: None,
                    timeout,
                })
                .await;
            let connections = transport.connections();
            (label, probes, nonce, out, connections)
        });
    }
    let mut observations = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((label, probes, nonce, out, connections)) = joined else {
            continue;
        };
        let host_name = label.split(' ').next().unwrap_or_default().to_string();
        stats.hosts += 1;
        stats.round_trips += 1;
        stats.connections += connections;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                // A host that cannot be reached at all reads best without the step name.
                let step = match e {
                    TransportError::Connect(_)
                    | TransportError::Auth(_)
                    | TransportError::HostKey(_) => "",
                    _ => "read: ",
                };
                errors.push(PlanError {
                    host: host_name,
                    address: None,
                    message: format!("{label}: {step}{e}"),
                });
                continue;
            }
        };
        let sections = split_batch(&nonce, &out.stdout, probes.len());
        for ((indices, _), section) in probes.iter().zip(sections) {
            let insts: Vec<&Instance> = indices.iter().map(|i| &stack.instances[*i]).collect();
            let provider = env.providers.get(insts[0].kind());
            let results: Vec<Result<Observation, String>> = match (section, provider) {
                (Some(p), Some(prov)) if insts.len() > 1 => prov.observe_batch(&insts, &p),
                (Some(p), Some(prov)) => vec![prov.observe(insts[0], &p)],
                (Some(_), None) => insts
                    .iter()
                    .map(|_| Err("no provider".to_string()))
                    .collect(),
                (None, _) => {
                    let e = format!(
                        "probe output missing (read exited {}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    insts.iter().map(|_| Err(e.clone())).collect()
                }
            };
            for ((i, inst), result) in indices.iter().zip(&insts).zip(results) {
                record_read(
                    &mut observations,
                    errors,
                    (&host_name, &label),
                    *i,
                    inst,
                    result,
                );
            }
        }
    }
    while let Some(joined) = api_reads.join_next_with_id().await {
        let (id, results) = match joined {
            Ok((id, results)) => (id, results),
            Err(e) => (e.id(), None),
        };
        let Some((host, indices)) = api_tasks.remove(&id) else {
            continue;
        };
        stats.api_reads += 1;
        // Every instance gets an observation or an error: one left unread would be planned as
        // if it did not exist.
        let mut results = results.unwrap_or_default().into_iter();
        for i in &indices {
            let inst = &stack.instances[*i];
            let result = results
                .next()
                .unwrap_or_else(|| Err("the provider's read gave no answer".to_string()));
            record_read(&mut observations, errors, (&host, &host), *i, inst, result);
        }
    }
    errors.sort_by(|a, b| (&a.host, &a.address).cmp(&(&b.host, &b.address)));
    observations
}

/// Keeps what was read of instance `i`, or the error that names it. `host` is `(name, label)`:
/// the host's name, and how messages show it (`redis-01 (10.0.0.123)`).
fn record_read(
    observations: &mut HashMap<usize, Observation>,
    errors: &mut Vec<PlanError>,
    (name, label): (&str, &str),
    i: usize,
    inst: &Instance,
    result: Result<Observation, String>,
) {
    match result {
        Ok(o) => {
            observations.insert(i, o);
        }
        Err(message) => errors.push(PlanError {
            host: name.to_string(),
            address: Some(inst.address.to_string()),
            message: format!("{label}: read {}: {message}", inst.address),
        }),
    }
}

/// Joins probes into one script; each section is framed by markers carrying a random nonce, so no
/// output can be mistaken for a marker.
pub fn batch_script<'a>(nonce: &str, probes: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for (i, p) in probes.enumerate() {
        s.push_str(&format!(
            "printf '%s\\n' 'KZ-{nonce}-BEGIN-{i}'\n( {p}\n) </dev/null\nprintf '\\nKZ-{nonce}-END-{i} %d\\n' \"$?\"\n"
        ));
    }
    s
}

/// Cuts the batched output back into one section per probe.
pub fn split_batch(nonce: &str, stdout: &[u8], count: usize) -> Vec<Option<ProbeOutput>> {
    let mut out = Vec::with_capacity(count);
    let mut pos = 0;
    for i in 0..count {
        let begin = format!("KZ-{nonce}-BEGIN-{i}\n");
        let end = format!("\nKZ-{nonce}-END-{i} ");
        let section = find(&stdout[pos..], begin.as_bytes()).and_then(|b| {
            let start = pos + b + begin.len();
            let e = start + find(&stdout[start..], end.as_bytes())?;
            let after = e + end.len();
            let nl = after + find(&stdout[after..], b"\n")?;
            let status = std::str::from_utf8(&stdout[after..nl])
                .ok()?
                .trim()
                .parse()
                .ok()?;
            pos = nl + 1;
            Some(ProbeOutput {
                stdout: stdout[start..e].to_vec(),
                status,
            })
        });
        out.push(section);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_keeps_sections_apart() {
        let out = b"KZ-ab-BEGIN-0\nhello\nKZ-ab-END-0 0\nKZ-ab-BEGIN-1\n\nKZ-ab-END-1 3\n";
        let s = split_batch("ab", out, 3);
        assert_eq!(
            s[0].as_ref().map(|p| (p.stdout.clone(), p.status)),
            Some((b"hello".to_vec(), 0))
        );
        assert_eq!(
            s[1].as_ref().map(|p| (p.stdout.clone(), p.status)),
            Some((Vec::new(), 3))
        );
        assert!(s[2].is_none());
    }
}
