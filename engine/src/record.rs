//! Conversions between instance attributes and their recorded form in the state.
//! Secrets are recorded only as keyed hashes; large contents only as digests.

use std::collections::BTreeMap;

use kz_state::{AttrState, ResourceState, State};

use crate::model::{Address, Attr, AttrValue, Attrs, ContentDigest, Instance, Value};
use crate::provider::Applied;

/// Contents larger than this are recorded by digest, to keep the state small.
const INLINE_LIMIT: usize = 64 * 1024;

/// The recorded form of one attribute, or `None` when its value is not known.
pub fn record_attr(state: &State, attr: &Attr) -> Option<AttrState> {
    match &attr.value {
        AttrValue::Unknown => None,
        AttrValue::Hashed(h) => Some(AttrState::SensitiveHash(h.clone())),
        AttrValue::Known(v) if attr.sensitive => Some(AttrState::SensitiveHash(
            state.hash_secret(&sensitive_bytes(v)),
        )),
        AttrValue::Known(v) => {
            let v = match v {
                Value::Bytes(b) => Value::Digest(ContentDigest::of(b)),
                Value::Text(t) if t.len() > INLINE_LIMIT => {
                    Value::Digest(ContentDigest::of(t.as_bytes()))
                }
                other => other.clone(),
            };
            serde_json::to_value(v).ok().map(AttrState::Value)
        }
    }
}

/// The bytes a sensitive value is hashed from.
pub fn sensitive_bytes(v: &Value) -> Vec<u8> {
    match v.as_bytes() {
        Some(b) => b.to_vec(),
        None => serde_json::to_vec(v).unwrap_or_default(),
    }
}

pub fn read_attr(a: &AttrState) -> Attr {
    match a {
        AttrState::SensitiveHash(h) => Attr {
            value: AttrValue::Hashed(h.clone()),
            sensitive: true,
        },
        AttrState::Value(v) => Attr::plain(
            serde_json::from_value(v.clone()).unwrap_or_else(|_| Value::Text(v.to_string())),
        ),
    }
}

pub fn read_attrs(r: &ResourceState) -> Attrs {
    r.attributes
        .iter()
        .map(|(k, v)| (k.clone(), read_attr(v)))
        .collect()
}

/// Rebuilds an instance from its state entry (for deleting what the stack no longer declares).
pub fn instance_from_state(r: &ResourceState) -> Instance {
    let host = (!r.host.is_empty()).then(|| r.host.clone());
    let members = r.members.clone();
    Instance {
        address: Address {
            module: r.module.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            host,
        },
        members,
        attrs: read_attrs(r),
        depends_on: r
            .depends_on
            .iter()
            .filter_map(|d| Address::parse(d))
            .collect(),
        outputs: read_outputs(r),
        gate: None,
    }
}

/// The values a provider computed when the instance was last applied.
pub fn read_outputs(r: &ResourceState) -> BTreeMap<String, Value> {
    r.outputs
        .iter()
        .filter_map(|(k, v)| read_attr(v).known().map(|v| (k.clone(), v.clone())))
        .collect()
}

/// The state entry for an instance that was just applied.
pub fn record_instance(
    state: &State,
    inst: &Instance,
    applied: &Applied,
    previous: Option<&ResourceState>,
) -> ResourceState {
    let now = kz_state::now_rfc3339();
    let attributes: BTreeMap<String, AttrState> = inst
        .attrs
        .iter()
        .filter_map(|(k, a)| record_attr(state, a).map(|r| (k.clone(), r)))
        .collect();
    ResourceState {
        module: inst.address.module.clone(),
        kind: inst.address.kind.clone(),
        name: inst.address.name.clone(),
        host: inst.address.host.clone().unwrap_or_default(),
        members: inst.members.clone(),
        attributes,
        outputs: applied
            .outputs
            .iter()
            .filter_map(|(k, v)| {
                record_attr(state, &Attr::plain(v.clone())).map(|r| (k.clone(), r))
            })
            .collect(),
        depends_on: inst.depends_on.iter().map(ToString::to_string).collect(),
        created_at: previous.map_or_else(|| now.clone(), |p| p.created_at.clone()),
        updated_at: now,
    }
}

/// Whether a desired attribute matches a recorded or observed one. An unknown desired value
/// (an unset secret) cannot be compared and counts as matching; the plan warns about it.
pub fn same(state: Option<&State>, desired: &Attr, other: &Attr) -> bool {
    match (&desired.value, &other.value) {
        (AttrValue::Unknown, _) => true,
        (AttrValue::Known(d), AttrValue::Known(o)) => d.same_as(o),
        (AttrValue::Known(d), AttrValue::Hashed(h)) => {
            state.is_some_and(|s| s.hash_secret(&sensitive_bytes(d)) == *h)
        }
        (AttrValue::Hashed(a), AttrValue::Hashed(b)) => a == b,
        (AttrValue::Hashed(_), _) | (_, AttrValue::Unknown) => false,
    }
}

/// Re-keys state entries recorded under an older address form: an instance that now lives on no
/// host (behind an API) was once recorded on a pseudo-host (`10_lb.lb.web[pseudo]`). An entry of
/// the same resource on a host the inventory does not have is the same instance. Returns how
/// many entries moved.
pub fn rekey_hostless(state: &mut State, stack: &crate::model::Stack) -> usize {
    let mut moved = 0;
    for inst in stack.instances.iter().filter(|i| i.address.host.is_none()) {
        let addr = inst.address.to_string();
        if state.resources.contains_key(&addr) {
            continue;
        }
        let old = state.resources.iter().find_map(|(k, r)| {
            (r.module == inst.address.module
                && r.kind == inst.address.kind
                && r.name == inst.address.name
                && !r.host.is_empty()
                && !stack.hosts.contains_key(&r.host))
            .then(|| k.clone())
        });
        if let Some(old) = old
            && let Some(mut r) = state.resources.remove(&old)
        {
            r.host = String::new();
            r.members = inst.members.clone();
            state.resources.insert(addr, r);
            moved += 1;
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Stack, Value};

    #[test]
    fn nested_values_keep_their_shape_through_the_state() {
        let state = State::new("test");
        let v = Value::Map(BTreeMap::from([
            (
                "servers".to_string(),
                Value::List(vec![Value::Text("a".into()), Value::Int(2)]),
            ),
            ("check".to_string(), Value::Bool(true)),
        ]));
        let recorded = record_attr(&state, &Attr::plain(v.clone())).expect("recorded");
        assert_eq!(read_attr(&recorded).known(), Some(&v));
    }

    #[test]
    fn an_instance_once_recorded_on_a_pseudo_host_is_found_without_it() {
        let mut state = State::new("test");
        let old = ResourceState {
            module: "10_lb".into(),
            kind: "lb".into(),
            name: "web".into(),
            host: "pseudo".into(),
            members: Vec::new(),
            attributes: BTreeMap::new(),
            outputs: BTreeMap::new(),
            depends_on: Vec::new(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        state
            .resources
            .insert("10_lb.lb.web[pseudo]".into(), old.clone());
        let mut stack = Stack {
            name: "s".into(),
            description: None,
            dir: ".".into(),
            parallelism: None,
            state: crate::model::StateConfig {
                backend: kz_state::BackendConfig::Local,
            },
            hosts: BTreeMap::new(),
            modules: BTreeMap::new(),
            instances: vec![instance_from_state(&ResourceState {
                host: String::new(),
                ..old
            })],
            digest: String::new(),
            secrets: Default::default(),
            serial: Vec::new(),
            left_out: Default::default(),
            drills: Vec::new(),
            networks: Default::default(),
            lab: Default::default(),
        };
        assert_eq!(rekey_hostless(&mut state, &stack), 1);
        assert!(state.resources.contains_key("10_lb.lb.web"));
        assert!(!state.resources.contains_key("10_lb.lb.web[pseudo]"));
        // A second pass finds nothing more to move.
        assert_eq!(rekey_hostless(&mut state, &stack), 0);
        stack.instances.clear();
        assert_eq!(rekey_hostless(&mut state, &stack), 0);
    }
}
