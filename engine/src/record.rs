//! Conversions between instance attributes and their recorded form in the state.
//! Secrets are recorded only as keyed hashes; large contents only as digests.

use std::collections::BTreeMap;

use kz_state::{AttrState, ResourceState, State};

use crate::model::{Address, Attr, AttrValue, Attrs, ContentDigest, Instance, Value};

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
    Instance {
        address: Address {
            module: r.module.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            host: r.host.clone(),
        },
        attrs: read_attrs(r),
        depends_on: r
            .depends_on
            .iter()
            .filter_map(|d| Address::parse(d))
            .collect(),
    }
}

/// The state entry for an instance that was just applied.
pub fn record_instance(
    state: &State,
    inst: &Instance,
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
        host: inst.address.host.clone(),
        attributes,
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
