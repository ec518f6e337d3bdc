//! The jobs of an apply: one per change of the plan, per gate, and per instance that could not be
//! read (it fails at once, so what depends on it is not attempted).

use std::collections::HashMap;

use kz_state::State;

use crate::model::{AttrValue, Instance, Stack};
use crate::plan::{Action, Plan};
use crate::record::{instance_from_state, same};

/// A unit of work: one change of one instance.
pub(super) struct Job {
    pub(super) address: String,
    pub(super) action: Action,
    pub(super) instance: Instance,
    /// For replace: the instance as recorded, whose remains are removed first.
    pub(super) previous: Option<Instance>,
    pub(super) changed: Vec<String>,
    /// It could not be read during the plan: it fails at once, without being tried.
    pub(super) unreadable: Option<Unreadable>,
    /// A gate that passed when planned runs again only if something above it changed.
    pub(super) gate_passed_in_plan: bool,
}

/// Why an instance could not be read during the plan.
#[derive(Debug, Clone)]
pub(super) struct Unreadable {
    pub(super) message: String,
    /// Its whole host was unreachable (the summary lists the host).
    pub(super) host_unreachable: bool,
}

impl Job {
    fn new(address: &str, action: Action, instance: Instance) -> Job {
        Job {
            address: address.to_string(),
            action,
            instance,
            previous: None,
            changed: Vec::new(),
            unreadable: None,
            gate_passed_in_plan: false,
        }
    }
}

/// The deletions of the plan and the instances they delete (for their graph): from the stack
/// when still declared (it knows the secrets; the state only has their hashes), else from the
/// state.
pub(super) fn deletions(
    stack: &Stack,
    declared: &HashMap<String, usize>,
    plan: &Plan,
    state: &State,
) -> (Vec<Instance>, Vec<Option<Job>>) {
    let mut instances = Vec::new();
    let mut jobs = Vec::new();
    for c in plan.changes.iter().filter(|c| c.action == Action::Delete) {
        let Some(recorded) = state.resources.get(&c.address) else {
            continue;
        };
        let inst = declared.get(&c.address).map_or_else(
            || instance_from_state(recorded),
            |i| stack.instances[*i].clone(),
        );
        instances.push(inst.clone());
        jobs.push(Some(Job::new(&c.address, Action::Delete, inst)));
    }
    (instances, jobs)
}

/// The jobs of everything but deletions, by instance index. A change of an instance the stack
/// no longer has fails, in `failed`.
pub(super) fn changes(
    stack: &Stack,
    declared: &HashMap<String, usize>,
    plan: &Plan,
    state: &State,
    failed: &mut Vec<(String, String)>,
) -> Vec<Option<Job>> {
    let mut jobs: Vec<Option<Job>> = (0..stack.instances.len()).map(|_| None).collect();
    for c in plan.changes.iter().filter(|c| c.action != Action::Delete) {
        let Some(&i) = declared.get(&c.address) else {
            failed.push((
                c.address.clone(),
                "not in the stack any more (the plan is stale)".into(),
            ));
            continue;
        };
        let inst = stack.instances[i].clone();
        let previous = (c.action == Action::Replace)
            .then(|| state.resources.get(&c.address))
            .flatten()
            .map(|r| recorded_with_secrets(state, r, &inst));
        let mut job = Job::new(&c.address, c.action, inst);
        job.changed = c.attributes.iter().map(|a| a.name.clone()).collect();
        job.previous = previous;
        jobs[i] = Some(job);
    }
    // Gates run again after what they depend on changed (or when they did not pass).
    for g in &plan.gates {
        if let Some(&i) = declared.get(&g.address) {
            let mut job = Job::new(&g.address, Action::Verify, stack.instances[i].clone());
            job.gate_passed_in_plan = g.passing == Some(true);
            jobs[i] = Some(job);
        }
    }
    // Instances that could not be read fail, so that what depends on them is not attempted.
    for (i, inst) in stack.instances.iter().enumerate() {
        let addr = inst.address.to_string();
        let err = plan.errors.iter().find(|e| {
            e.address.as_deref() == Some(addr.as_str())
                || (e.address.is_none() && inst.read_host() == Some(e.host.as_str()))
        });
        if let (Some(e), None) = (err, &jobs[i]) {
            let mut job = Job::new(&addr, Action::Update, inst.clone());
            job.unreadable = Some(Unreadable {
                message: e.message.clone(),
                host_unreachable: e.address.is_none(),
            });
            jobs[i] = Some(job);
        }
    }
    jobs
}

/// The recorded instance a replacement removes, with its hashed attributes filled from the
/// stack where they still match, so it can be removed with its real values.
fn recorded_with_secrets(state: &State, r: &kz_state::ResourceState, inst: &Instance) -> Instance {
    let mut old = instance_from_state(r);
    for (k, a) in &mut old.attrs {
        if let (AttrValue::Hashed(_), Some(d)) = (&a.value, inst.attrs.get(k))
            && same(Some(state), d, a)
        {
            *a = d.clone();
        }
    }
    old
}

/// Each declared instance's index, by address.
pub(super) fn by_address(stack: &Stack) -> HashMap<String, usize> {
    stack
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| (inst.address.to_string(), i))
        .collect()
}
