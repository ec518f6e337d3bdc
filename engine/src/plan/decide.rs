//! Decisions: for one declared instance, what it declares against what its host holds and what
//! the state recorded, into a change (or none).

use std::collections::BTreeMap;

use kz_state::State;

use super::{Action, AttrChange, Change, shown};
use crate::model::{Attr, AttrValue, Instance};
use crate::provider::Observation;
use crate::record::same;

/// The attributes of an instance that exists that could not be compared: their value uses a
/// secret that is not set. Such an instance is never called in sync, nor a match.
pub(super) fn uncompared(
    inst: &Instance,
    recorded: Option<&BTreeMap<String, Attr>>,
    observed: Option<&Observation>,
) -> Vec<String> {
    if !observed.map_or(recorded.is_some(), |o| o.exists) {
        return Vec::new();
    }
    inst.attrs
        .iter()
        .filter(|(k, a)| {
            a.value == AttrValue::Unknown
                && (observed.is_some_and(|o| o.attrs.contains_key(*k)) || recorded.is_some())
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The change for one declared instance, or `None` when it is in sync (or, for the attributes
/// [`uncompared`] names, when nothing else differs).
pub(super) fn decide(
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
        members: if a.host.is_some() {
            Vec::new()
        } else {
            inst.members.clone()
        },
        service: None,
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
        (false, true) => {
            let not_compared = uncompared(inst, recorded, observed);
            let reason = if not_compared.is_empty() {
                "exists and matches; apply records it without touching it".to_string()
            } else {
                let names: Vec<String> = not_compared.iter().map(|k| format!("`{k}`")).collect();
                format!(
                    "exists; {} not compared: {} a secret that is not set",
                    names.join(", "),
                    if names.len() == 1 {
                        "it uses"
                    } else {
                        "they use"
                    }
                )
            };
            Some(change(Action::Adopt, Some(reason), Vec::new()))
        }
        (false, false) => Some(change(
            Action::Update,
            Some("exists on the host but is not managed by kz yet".into()),
            changed,
        )),
    }
}
