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
    /// Values of secrets the stack declares but this run does not use (what a lab run skips):
    /// masked in output all the same, never required.
    unused_values: Vec<String>,
}

impl Secrets {
    /// Reads the values of `used` (secret names) through `env`.
    pub fn read(used: Vec<String>, env: &dyn Fn(&str) -> Option<String>) -> Secrets {
        let values = used
            .iter()
            .filter_map(|s| env(&secret_var(s)).map(|v| (s.clone(), v)))
            .collect();
        Secrets {
            used,
            values,
            unused_values: Vec::new(),
        }
    }

    /// As [`Secrets::read`], and the values of `declared` secrets this run does not use, for
    /// masking only.
    pub fn read_with_declared(
        used: Vec<String>,
        declared: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Secrets {
        let mut s = Secrets::read(used, env);
        s.unused_values = declared
            .iter()
            .filter(|d| !s.used.contains(d))
            .filter_map(|d| env(&secret_var(d)))
            .filter(|v| v.chars().count() >= MIN_SECRET_LEN)
            .collect();
        s
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

    /// Every value that is set, for the output layer to mask (those of declared secrets this run
    /// does not use included).
    pub fn values(&self) -> Vec<String> {
        self.values
            .values()
            .chain(&self.unused_values)
            .cloned()
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret the run does not use (a lab skips what uses it) is masked, never required.
    #[test]
    fn declared_but_unused_secrets_are_masked_not_required() {
        let env = |v: &str| (v == "KZ_SECRET_SKIPPED").then(|| "skipped-secret".to_string());
        let s = Secrets::read_with_declared(
            vec!["KEPT".into()],
            &["KEPT".into(), "SKIPPED".into()],
            &env,
        );
        assert_eq!(s.missing(), vec!["KEPT"]);
        assert_eq!(s.values(), vec!["skipped-secret".to_string()]);
        assert!(s.require_all().is_err_and(|e| e.contains("KZ_SECRET_KEPT")));
    }
}
