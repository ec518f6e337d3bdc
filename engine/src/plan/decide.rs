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
                && !observed.is_some_and(|o| o.not_applicable.contains_key(*k))
                && (observed.is_some_and(|o| o.attrs.contains_key(*k)) || recorded.is_some())
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// One instance as the plan sees it: what it declares, what its host holds, what the state
/// recorded.
struct Sides<'a> {
    inst: &'a Instance,
    state: Option<&'a State>,
    recorded: Option<&'a BTreeMap<String, Attr>>,
    observed: Option<&'a Observation>,
    exists: bool,
}

impl Sides<'_> {
    /// The value an attribute has now: observed on the host, else as recorded.
    fn before_of(&self, k: &str) -> Option<Attr> {
        if let Some(v) = self.observed.and_then(|o| o.attrs.get(k)) {
            // Observed values stay masked when the attribute holds a secret now or held one when
            // it was applied (the host's copy still contains it).
            let sensitive = self.inst.attrs.get(k).is_some_and(|a| a.sensitive)
                || self
                    .recorded
                    .and_then(|r| r.get(k))
                    .is_some_and(|a| a.sensitive);
            return Some(Attr {
                value: AttrValue::Known(v.clone()),
                sensitive,
            });
        }
        self.recorded.and_then(|r| r.get(k)).cloned()
    }

    /// The attributes as changes: all of them, or only those that differ.
    fn diff(&self, only_changed: bool) -> Vec<AttrChange> {
        self.inst
            .attrs
            .iter()
            // What the host cannot change is left as it is: never a change, never applied.
            .filter(|(k, _)| {
                !self
                    .observed
                    .is_some_and(|o| o.not_applicable.contains_key(*k))
            })
            .filter_map(|(k, desired)| {
                let before = if self.exists { self.before_of(k) } else { None };
                // Observed attributes compare with the host; the others with the state, where a
                // missing value means it was unset when applied (so setting it is a change).
                let comparable = self.observed.is_some_and(|o| o.attrs.contains_key(k))
                    || self.recorded.is_some();
                if only_changed
                    && (!comparable
                        || before
                            .as_ref()
                            .is_some_and(|b| same(self.state, desired, b)))
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
    }

    fn change(
        &self,
        action: Action,
        reason: Option<String>,
        attributes: Vec<AttrChange>,
    ) -> Change {
        let a = &self.inst.address;
        Change {
            address: a.to_string(),
            module: a.module.clone(),
            kind: a.kind.clone(),
            name: a.name.clone(),
            host: a.host.clone(),
            members: self.inst.members.clone(),
            service: None,
            action,
            reason,
            attributes,
        }
    }

    /// A replacement forced by an attribute that cannot change in place, compared with what
    /// exists when it can be read (an object made outside kz, or forgotten by the state, is
    /// replaced too), else with the record.
    fn forced_replacement(&self, force_new: &[&str]) -> Option<Change> {
        for k in force_new {
            let old = if self.exists {
                self.before_of(k)
            } else {
                self.recorded.and_then(|r| r.get(*k)).cloned()
            };
            if let (Some(d), Some(old)) = (self.inst.attrs.get(*k), old)
                && !same(self.state, d, &old)
            {
                let attributes = vec![AttrChange {
                    name: (*k).to_string(),
                    before: Some(shown(&old)),
                    after: Some(shown(d)),
                    sensitive: d.sensitive,
                    unknown: false,
                }];
                return Some(self.change(
                    Action::Replace,
                    Some(format!("`{k}` cannot change in place")),
                    attributes,
                ));
            }
        }
        None
    }

    /// It exists, matches what could be compared, and is not recorded yet.
    fn adoption(&self) -> Change {
        let not_compared = uncompared(self.inst, self.recorded, self.observed);
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
        self.change(Action::Adopt, Some(reason), Vec::new())
    }
}

/// The change for one declared instance, or `None` when it is in sync.
pub(super) fn decide(
    inst: &Instance,
    force_new: &[&str],
    state: Option<&State>,
    recorded: Option<&BTreeMap<String, Attr>>,
    observed: Option<&Observation>,
    replace: bool,
) -> Option<Change> {
    let sides = Sides {
        inst,
        state,
        recorded,
        observed,
        exists: observed.map_or(recorded.is_some(), |o| o.exists),
    };
    if replace && recorded.is_some() {
        return Some(sides.change(
            Action::Replace,
            Some("replacement requested with --replace".into()),
            sides.diff(false),
        ));
    }
    if let Some(c) = sides.forced_replacement(force_new) {
        return Some(c);
    }
    if !sides.exists {
        let reason = match (recorded.is_some(), observed.and_then(|o| o.note.clone())) {
            (true, Some(note)) => Some(format!("{note}; recorded in state but gone from the host")),
            (true, None) => Some("recorded in state but gone from the host".into()),
            (false, note) => note,
        };
        return Some(sides.change(Action::Create, reason, sides.diff(false)));
    }
    let changed = sides.diff(true);
    match (recorded.is_some(), changed.is_empty()) {
        (true, true) => None,
        (true, false) => Some(sides.change(Action::Update, None, changed)),
        (false, true) => Some(sides.adoption()),
        (false, false) => Some(sides.change(
            Action::Update,
            Some("exists on the host but is not managed by kz yet".into()),
            changed,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{Address, Value};

    fn instance() -> Instance {
        Instance {
            address: Address {
                module: "m".into(),
                kind: "system".into(),
                name: "base".into(),
                host: Some("web-01".into()),
            },
            members: Vec::new(),
            attrs: BTreeMap::from([
                (
                    "dns".to_string(),
                    Attr::plain(Value::Text("10.0.0.2".into())),
                ),
                ("swap".to_string(), Attr::plain(Value::Text("off".into()))),
            ]),
            depends_on: Vec::new(),
            outputs: BTreeMap::new(),
            gate: None,
        }
    }

    #[test]
    fn a_part_not_applicable_is_neither_a_change_nor_applied() {
        let inst = instance();
        let mut seen = Observation {
            exists: true,
            attrs: BTreeMap::from([
                ("dns".to_string(), Value::Text("10.0.0.2".into())),
                ("swap".to_string(), Value::Text("on".into())),
            ]),
            ..Default::default()
        };
        let differs = decide(&inst, &[], None, None, Some(&seen), false).map(|c| c.attributes);
        assert_eq!(differs.map(|a| a.len()), Some(1), "swap differs");
        seen.not_applicable
            .insert("swap".into(), "inside a container".into());
        let c = decide(&inst, &[], None, None, Some(&seen), false);
        assert_eq!(c.as_ref().map(|c| c.action), Some(Action::Adopt), "{c:?}");
        let recorded: BTreeMap<String, Attr> = inst.attrs.clone();
        assert_eq!(
            decide(&inst, &[], None, Some(&recorded), Some(&seen), false),
            None
        );
        // Even when it must be made whole (no read), the part is never part of the change.
        seen.exists = false;
        let c = decide(&inst, &[], None, None, Some(&seen), false).expect("a creation");
        assert!(c.attributes.iter().all(|a| a.name != "swap"), "{c:?}");
    }
}
