//! The secrets a stack uses (`${secret.NAME}`), read once from the environment when the stack is
//! loaded, through the same function that resolves them in values.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::interp::secret_var;

/// The shortest secret value kz accepts: shorter ones cannot be masked in output reliably.
pub const MIN_SECRET_LEN: usize = 6;

/// The secrets of a stack: which it uses, and the values of those that are set.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    used: Vec<String>,
    values: BTreeMap<String, String>,
}

impl Secrets {
    /// Reads the values of `used` (secret names) through `env`.
    pub fn read(used: Vec<String>, env: &dyn Fn(&str) -> Option<String>) -> Secrets {
        let values = used
            .iter()
            .filter_map(|s| env(&secret_var(s)).map(|v| (s.clone(), v)))
            .collect();
        Secrets { used, values }
    }

    /// The names of the secrets the stack uses, sorted.
    pub fn used(&self) -> &[String] {
        &self.used
    }

    /// The names of the secrets that are not set.
    pub fn missing(&self) -> Vec<&str> {
        self.used
            .iter()
            .filter(|s| !self.values.contains_key(*s))
            .map(String::as_str)
            .collect()
    }

    /// The environment variables of the secrets that are not set.
    pub fn missing_vars(&self) -> Vec<String> {
        self.missing().into_iter().map(secret_var).collect()
    }

    /// Every value that is set, for the output layer to mask.
    pub fn values(&self) -> Vec<String> {
        self.values.values().cloned().collect()
    }

    /// The variables of secrets so short that masking them would garble the output (an `x`
    /// would hide every `x`): they are refused.
    pub fn too_short(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|(_, v)| v.chars().count() < MIN_SECRET_LEN)
            .map(|(k, _)| secret_var(k))
            .collect()
    }

    /// Refuses to apply when a secret is not set, naming every missing variable.
    pub fn require_all(&self) -> Result<(), String> {
        let vars = self.missing_vars();
        if vars.is_empty() {
            return Ok(());
        }
        Err(format!(
            "refusing to apply: {} secret{} not set: {} (nothing was changed)",
            vars.len(),
            if vars.len() == 1 { " is" } else { "s are" },
            vars.join(", ")
        ))
    }

    /// A salted digest of the values, so a saved plan can tell they changed.
    pub fn digest(&self, salt: &str) -> String {
        let mut h = Sha256::new();
        h.update(salt.as_bytes());
        for s in &self.used {
            h.update(s.as_bytes());
            h.update([0]);
            if let Some(v) = self.values.get(s) {
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
        }
        format!("{salt}:{}", hex::encode(h.finalize()))
    }
}
