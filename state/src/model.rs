//! The state data model: what kz recorded about each resource instance.

use std::collections::BTreeMap;
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::FORMAT_VERSION;

/// Prefix of every keyed hash produced by [`State::hash_secret`], naming the
/// algorithm so that it can be changed later without ambiguity.
const HASH_PREFIX: &str = "hmac-sha256:";

/// Number of random bytes in a state's hash key.
const HASH_KEY_LEN: usize = 32;

/// Everything kz manages in one stack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Version of the state format, always [`FORMAT_VERSION`] once read.
    pub format_version: u32,
    /// UUID v4 identifying this state for its whole life, so that a state
    /// from another stack can be told apart from an older copy of this one.
    pub lineage: String,
    /// Incremented by every write of the backend.
    pub serial: u64,
    /// Version of the kz that wrote this state last.
    pub kz_version: String,
    /// Hex of 32 random bytes: key of the keyed hashes of secrets.
    pub hash_key: String,
    /// Recorded resource instances, by instance address
    /// (e.g. `04_redis.file.conf[redis-01]`).
    pub resources: BTreeMap<String, ResourceState>,
    /// Recorded modules, by module name.
    pub modules: BTreeMap<String, ModuleState>,
}

/// What kz recorded about one resource instance when it last applied it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceState {
    /// Module that declares the resource.
    pub module: String,
    /// Resource type, e.g. `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Resource name within its module.
    pub name: String,
    /// Host the instance lives on; empty for an instance on no single host (a group of hosts, or
    /// an API).
    #[serde(default)]
    pub host: String,
    /// The hosts an instance spanning several hosts was applied on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Recorded attributes, by name.
    pub attributes: BTreeMap<String, AttrState>,
    /// Values the provider computed while applying (an id, a digest), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, AttrState>,
    /// Instance addresses this one depended on when applied, so that it can
    /// be destroyed in the right order after its configuration is gone.
    pub depends_on: Vec<String>,
    /// RFC 3339 UTC time of creation.
    pub created_at: String,
    /// RFC 3339 UTC time of the last update.
    pub updated_at: String,
}

/// One recorded attribute.
///
/// Serialized as `{"value": <json>}` or
/// `{"sensitive_hash": "hmac-sha256:<hex>"}`. Sensitive values are never
/// stored in clear: only their keyed hash, enough to detect a change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AttrState {
    /// A plain value.
    Value(serde_json::Value),
    /// The keyed hash of a sensitive value, from [`State::hash_secret`].
    SensitiveHash(String),
}

/// What kz recorded about one module.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModuleState {
    /// Modules this one depended on when applied.
    pub depends_on: Vec<String>,
}

impl State {
    /// Creates an empty state with a fresh lineage, serial 0 and a fresh
    /// random hash key.
    ///
    /// # Panics
    ///
    /// Only if the operating system cannot provide random bytes, in which
    /// case no safe lineage or key could be made either.
    pub fn new(kz_version: &str) -> State {
        let mut key = [0u8; HASH_KEY_LEN];
        // A predictable key would let anyone reading the state brute-force
        // short secrets from their hashes, so there is no fallback here.
        getrandom::fill(&mut key).expect("the operating system must provide random bytes");
        State {
            format_version: FORMAT_VERSION,
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            kz_version: kz_version.to_owned(),
            hash_key: hex::encode(key),
            resources: BTreeMap::new(),
            modules: BTreeMap::new(),
        }
    }

    /// Returns the keyed hash of a secret, `hmac-sha256:<hex>`, keyed by this
    /// state's `hash_key`.
    ///
    /// The key is the hex-decoded `hash_key`. Should `hash_key` not be valid
    /// hex (states read by [`crate::LocalBackend::read`] are checked, but the
    /// field is public), its raw bytes are used as the key instead, so the
    /// result stays deterministic and nothing panics.
    pub fn hash_secret(&self, value: &[u8]) -> String {
        let key = hex::decode(&self.hash_key).unwrap_or_else(|_| self.hash_key.as_bytes().to_vec());
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC accepts keys of any length");
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        format!("{HASH_PREFIX}{}", hex::encode(digest))
    }

    /// Checks the invariants that serde alone cannot: the format version, the
    /// lineage and the hash key. Returns a message describing the first
    /// violation found.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(unsupported_version(u64::from(self.format_version)));
        }
        if uuid::Uuid::parse_str(&self.lineage).is_err() {
            return Err(format!("lineage {:?} is not a UUID", self.lineage));
        }
        let key_ok = self.hash_key.len() == 2 * HASH_KEY_LEN
            && self.hash_key.bytes().all(|b| b.is_ascii_hexdigit());
        if !key_ok {
            return Err(format!(
                "hash_key must be {} hexadecimal digits",
                2 * HASH_KEY_LEN
            ));
        }
        Ok(())
    }
}

/// Message for a state written in a format this kz does not know.
pub(crate) fn unsupported_version(version: u64) -> String {
    format!(
        "format_version {version} is not supported (this kz reads format_version {FORMAT_VERSION}); \
         it was probably written by a different version of kz"
    )
}

/// The current time as RFC 3339 UTC with second precision, e.g.
/// `2026-11-27T15:00:00Z`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn new_states_have_distinct_lineages_and_hex_keys() {
        let a = State::new("0.1.0");
        let b = State::new("0.1.0");
        assert_ne!(a.lineage, b.lineage);
        assert_ne!(a.hash_key, b.hash_key);
        for state in [&a, &b] {
            assert_eq!(state.format_version, FORMAT_VERSION);
            assert_eq!(state.serial, 0);
            assert_eq!(state.kz_version, "0.1.0");
            assert_eq!(state.hash_key.len(), 64);
            assert!(state.hash_key.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(state.resources.is_empty() && state.modules.is_empty());
            assert_eq!(state.check(), Ok(()));
        }
    }

    #[test]
    fn hash_secret_is_stable_per_key_and_differs_across_keys() {
        let a = State::new("0.1.0");
        let b = State::new("0.1.0");
        let h1 = a.hash_secret(b"hunter2");
        assert_eq!(h1, a.hash_secret(b"hunter2"));
        assert_ne!(h1, b.hash_secret(b"hunter2"));
        assert_ne!(h1, a.hash_secret(b"hunter3"));
        let hex = h1.strip_prefix("hmac-sha256:").unwrap();
        assert_eq!(hex.len(), 64);
    }

    #[test]
    fn hash_secret_matches_hmac_sha256() {
        // RFC 4231 test case 2 ("Jefe"), checked against the hex-decoded key.
        let mut state = State::new("0.1.0");
        state.hash_key = hex::encode(b"Jefe");
        assert_eq!(
            state.hash_secret(b"what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hash_secret_does_not_panic_on_a_bad_key() {
        let mut state = State::new("0.1.0");
        state.hash_key = "not hex".to_owned();
        assert!(state.hash_secret(b"x").starts_with("hmac-sha256:"));
        assert!(state.check().is_err());
    }

    #[test]
    fn attributes_serialize_externally_tagged() {
        let value = serde_json::to_value(AttrState::Value(serde_json::json!(3))).unwrap();
        assert_eq!(value, serde_json::json!({"value": 3}));
        let hash = serde_json::to_value(AttrState::SensitiveHash("hmac-sha256:ab".into())).unwrap();
        assert_eq!(
            hash,
            serde_json::json!({"sensitive_hash": "hmac-sha256:ab"})
        );
    }

    #[test]
    fn now_is_rfc3339_utc_seconds() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-27T15:00:00Z".len());
        assert!(now.ends_with('Z'));
        assert!(humantime::parse_rfc3339(&now).is_ok());
    }
}
