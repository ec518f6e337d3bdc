//! Operations the commands are made of: opening a stack and its state, saved plans, destroy plans.
//! The CLI strings these together; nothing here prints.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use kz_state::{LocalBackend, LockInfo, State, StateError, StateLock};

use crate::apply::StateSink;
use crate::interp::secret_var;
use crate::model::Stack;
use crate::plan::{
    PLAN_FORMAT_VERSION, Plan, ReadStats, StateRef, Summary, delete_change, matches_target,
};

/// The shortest secret value kz accepts: shorter ones cannot be masked in output reliably.
pub const MIN_SECRET_LEN: usize = 6;

/// A stack with its state backend.
pub struct Workspace {
    pub stack: Stack,
    pub backend: LocalBackend,
}

impl Workspace {
    pub fn new(stack: Stack) -> Workspace {
        let backend = LocalBackend::new(&stack.dir);
        Workspace { stack, backend }
    }

    pub fn lock(&self, command: &str, timeout: Duration) -> Result<StateLock, StateError> {
        self.backend.lock(&LockInfo::current(command), timeout)
    }

    /// The current state, or a fresh one when the stack was never applied.
    pub fn state_or_new(&self) -> Result<State, StateError> {
        Ok(self
            .backend
            .read()?
            .unwrap_or_else(|| State::new(env!("CARGO_PKG_VERSION"))))
    }

    /// The values of every secret the stack uses, for the output layer to mask.
    pub fn secret_values(&self) -> Vec<String> {
        self.stack
            .secrets_used
            .iter()
            .filter_map(|s| std::env::var(secret_var(s)).ok())
            .collect()
    }

    /// Secrets so short that masking them would garble the output (an `x` would hide every `x`)
    /// and that could not be told apart from ordinary text: they are refused.
    pub fn short_secrets(&self) -> Vec<String> {
        self.stack
            .secrets_used
            .iter()
            .filter(|s| {
                std::env::var(secret_var(s)).is_ok_and(|v| v.chars().count() < MIN_SECRET_LEN)
            })
            .map(|s| secret_var(s))
            .collect()
    }

    /// Refuses to apply when a secret the stack uses is not set, naming every missing variable.
    pub fn require_secrets(&self) -> Result<(), String> {
        if self.stack.secrets_missing.is_empty() {
            return Ok(());
        }
        let vars: Vec<String> = self
            .stack
            .secrets_missing
            .iter()
            .map(|s| secret_var(s))
            .collect();
        Err(format!(
            "refusing to apply: {} secret{} not set: {} (nothing was changed)",
            vars.len(),
            if vars.len() == 1 { " is" } else { "s are" },
            vars.join(", ")
        ))
    }

    /// A salted digest of the secret values, so a saved plan can tell they changed.
    pub fn secrets_digest(&self, salt: &str) -> String {
        let mut h = Sha256::new();
        h.update(salt.as_bytes());
        for s in &self.stack.secrets_used {
            h.update(s.as_bytes());
            h.update([0]);
            if let Ok(v) = std::env::var(secret_var(s)) {
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
        }
        format!("{salt}:{}", hex::encode(h.finalize()))
    }
}

/// The state sink of the local backend.
pub struct LocalSink<'a>(pub &'a LocalBackend);

impl StateSink for LocalSink<'_> {
    fn save(&mut self, state: &mut State) -> Result<(), String> {
        self.0.write(state).map_err(|e| error_chain(&e))
    }
}

/// An error and its causes on one line: `failed to write X: No space left on device`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Writes a plan for `kz apply PLANFILE`, readable by its owner only.
pub fn write_plan_file(path: &Path, plan: &Plan) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(plan).map_err(|e| e.to_string())?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write plan file {}: {e}", path.display()))?;
    f.write_all(&json)
        .and_then(|()| f.write_all(b"\n"))
        .map_err(|e| format!("cannot write plan file {}: {e}", path.display()))
}

pub fn read_plan_file(path: &Path) -> Result<Plan, String> {
    let bytes =
        fs::read(path).map_err(|e| format!("cannot read plan file {}: {e}", path.display()))?;
    let plan: Plan = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a kz plan file: {e}", path.display()))?;
    if plan.format_version != PLAN_FORMAT_VERSION {
        return Err(format!(
            "{}: plan format_version {} is not supported (this kz reads {PLAN_FORMAT_VERSION})",
            path.display(),
            plan.format_version
        ));
    }
    Ok(plan)
}

/// The stack directory a saved plan was made from.
pub fn plan_stack_dir(plan: &Plan, path: &Path) -> Result<PathBuf, String> {
    plan.stack_dir.as_ref().map(PathBuf::from).ok_or_else(|| {
        format!(
            "{}: the plan does not name its stack directory",
            path.display()
        )
    })
}

/// Refuses a saved plan made against another state, other stack files, or other secrets.
pub fn check_saved_plan(
    plan: &Plan,
    ws: &Workspace,
    state: &State,
    state_exists: bool,
) -> Result<(), String> {
    let lineage_ok = match &plan.state.lineage {
        Some(l) => state_exists && *l == state.lineage,
        None => !state_exists || state.serial == 0,
    };
    if !lineage_ok || (state_exists && plan.state.serial != state.serial) {
        return Err(format!(
            "the saved plan is stale: it was made against state serial {} but the state is now at serial {}{}; run kz plan again",
            plan.state.serial,
            if state_exists { state.serial } else { 0 },
            if lineage_ok {
                ""
            } else {
                " of another lineage"
            }
        ));
    }
    if plan.stack_digest != ws.stack.digest {
        return Err(
            "the saved plan is stale: the stack files changed since it was made; run kz plan again"
                .into(),
        );
    }
    if let Some(d) = &plan.secrets_digest {
        let salt = d.split(':').next().unwrap_or_default();
        if ws.secrets_digest(salt) != *d {
            return Err("the saved plan is stale: secret values differ from when it was made; run kz plan again".into());
        }
    }
    Ok(())
}

/// A plan that deletes everything in the state (optionally only what the targets name).
pub fn destroy_plan(ws: &Workspace, state: &State, targets: &[String]) -> Plan {
    let mut changes = Vec::new();
    for (addr, r) in &state.resources {
        let resource = format!("{}.{}.{}", r.module, r.kind, r.name);
        if !targets.is_empty()
            && !targets
                .iter()
                .any(|t| matches_target(t, addr, &resource, &r.module))
        {
            continue;
        }
        changes.push(delete_change(addr, r, None));
    }
    changes.sort_by(|a, b| (&a.host, &a.address).cmp(&(&b.host, &b.address)));
    Plan {
        format_version: PLAN_FORMAT_VERSION,
        kz_version: env!("CARGO_PKG_VERSION").into(),
        stack: ws.stack.name.clone(),
        stack_digest: ws.stack.digest.clone(),
        state: StateRef {
            lineage: Some(state.lineage.clone()),
            serial: state.serial,
        },
        refreshed: false,
        targets: targets.to_vec(),
        warnings: Vec::new(),
        summary: Summary {
            delete: changes.len(),
            ..Summary::default()
        },
        changes,
        errors: Vec::new(),
        read: ReadStats::default(),
        stack_dir: None,
        secrets_digest: None,
    }
}
