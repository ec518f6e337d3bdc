//! Every selected instance's decision, and the modules a plan removes whole.

use std::collections::HashSet;

use kz_state::State;

use super::read::Reads;
use super::{
    Action, Change, GateStatus, LiveFact, NotApplicable, RemovedModule, Runtime, Summary,
    Unverified, decide, service_of,
};
use crate::model::{AttrValue, Instance, Stack};
use crate::record::read_attrs;

/// What the decisions of a plan add up to.
#[derive(Default)]
pub(super) struct Decisions {
    pub changes: Vec<Change>,
    pub gates: Vec<GateStatus>,
    pub unverified: Vec<Unverified>,
    pub not_applicable: Vec<NotApplicable>,
    pub live: Vec<LiveFact>,
    pub summary: Summary,
    /// An attribute uses a secret that is not set.
    pub unknown_used: bool,
}

/// Decides every selected instance that was read (or needs no read): its change, or its gate.
pub(super) fn decide_all(
    instances: &[Instance],
    selected: &[bool],
    state: Option<&State>,
    reads: &Reads,
    replace: &HashSet<&str>,
    runtime: &Runtime,
) -> Decisions {
    let failed_hosts: HashSet<&str> = reads
        .errors
        .iter()
        .filter(|e| e.address.is_none())
        .map(|e| e.host.as_str())
        .collect();
    let failed_instances: HashSet<&str> = reads
        .errors
        .iter()
        .filter_map(|e| e.address.as_deref())
        .collect();
    let mut d = Decisions::default();
    for (i, inst) in instances.iter().enumerate() {
        let addr = inst.address.to_string();
        if !selected[i]
            || inst.read_host().is_some_and(|h| failed_hosts.contains(h))
            || failed_instances.contains(addr.as_str())
        {
            continue;
        }
        let Some(provider) = runtime.providers.get(inst.kind()) else {
            continue;
        };
        let observed = reads.observations.get(&i);
        if inst.gate.is_some() {
            d.gates.push(GateStatus {
                address: addr,
                passing: observed.map(|o| o.exists),
                note: observed.and_then(|o| o.note.clone()),
                will_run: observed.is_none_or(|o| !o.exists),
            });
            continue;
        }
        if let Some(text) = observed.and_then(|o| o.live.clone()) {
            d.live.push(LiveFact {
                address: addr.clone(),
                text,
            });
        }
        if let Some(o) = observed {
            d.not_applicable
                .extend(o.not_applicable.iter().map(|(k, why)| NotApplicable {
                    address: addr.clone(),
                    attribute: k.clone(),
                    reason: why.clone(),
                }));
        }
        let recorded = state.and_then(|s| s.resources.get(&addr)).map(read_attrs);
        let not_compared = decide::uncompared(inst, recorded.as_ref(), observed);
        if !not_compared.is_empty() {
            d.unverified.push(Unverified {
                address: addr.clone(),
                attributes: not_compared,
            });
        }
        let decision = decide::decide(
            inst,
            provider.force_new(),
            state,
            recorded.as_ref(),
            observed,
            replace.contains(addr.as_str()),
        );
        d.unknown_used |= inst.attrs.values().any(|a| a.value == AttrValue::Unknown);
        match decision {
            None => d.summary.no_op += 1,
            Some(mut c) => {
                c.service = service_of(runtime, &c.kind, c.host.is_none() && c.members.is_empty());
                d.changes.push(c);
            }
        }
    }
    d
}

/// The modules the stack no longer has and whose every recorded instance the plan deletes.
pub(super) fn removed_modules(
    stack: &Stack,
    state: Option<&State>,
    deletes: &[(&String, &kz_state::ResourceState)],
) -> Vec<RemovedModule> {
    let mut removed: Vec<RemovedModule> = Vec::new();
    for (_, r) in deletes {
        if stack.modules.contains_key(&r.module) {
            continue;
        }
        match removed.iter_mut().find(|m| m.module == r.module) {
            Some(m) => m.deletes += 1,
            None => removed.push(RemovedModule {
                module: r.module.clone(),
                deletes: 1,
            }),
        }
    }
    // With --target, a module may lose only some of its instances: that is no removed module.
    removed.retain(|m| {
        state.is_some_and(|s| {
            s.resources
                .values()
                .filter(|r| r.module == m.module)
                .count()
                == m.deletes
        })
    });
    removed.sort_by(|a, b| a.module.cmp(&b.module));
    removed
}

impl Summary {
    /// Counts the changes by action.
    pub(super) fn count(&mut self, changes: &[Change]) {
        for c in changes {
            match c.action {
                Action::Create => self.create += 1,
                Action::Update => self.update += 1,
                Action::Replace => self.replace += 1,
                Action::Delete => self.delete += 1,
                Action::Adopt => self.adopt += 1,
                Action::Verify => {}
            }
        }
    }
}
