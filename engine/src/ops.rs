//! Operations the commands are made of: opening a stack and its state, saved plans, destroy plans.
//! The CLI strings these together; nothing here prints.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use kz_state::{Backend, HeldLock, LockInfo, State, StateError};

use crate::apply::StateSink;
use crate::model::Stack;
use crate::plan::{
    PLAN_FORMAT_VERSION, Plan, ReadStats, StateRef, Summary, delete_change, matches_target,
};

/// A stack with its state backend.
pub struct Workspace {
    pub stack: Stack,
    pub backend: Arc<dyn Backend>,
}

impl Workspace {
    pub fn new(stack: Stack, backend: Arc<dyn Backend>) -> Workspace {
        Workspace { stack, backend }
    }

    pub async fn lock(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<Box<dyn HeldLock>, StateError> {
        self.backend
            .lock(&LockInfo::current(command), timeout)
            .await
    }

    /// Where a state that could not be written to a remote backend is kept.
    pub fn rescue_path(&self) -> PathBuf {
        self.stack.dir.join(".kz").join("state.rescue.json")
    }

    /// Refuses to apply when a secret the stack uses is not set, naming every missing variable.
    pub fn require_secrets(&self) -> Result<(), String> {
        self.stack.secrets.require_all()
    }

    /// A salted digest of the secret values, so a saved plan can tell they changed.
    pub fn secrets_digest(&self, salt: &str) -> String {
        self.stack.secrets.digest(salt)
    }
}

/// Saves the state to the backend after every change. When a remote backend stays unreachable
/// past its retries, the state goes to the rescue file instead (and keeps going there for the rest
/// of the run), so nothing that was applied is lost.
pub struct BackendSink<'a> {
    pub ws: &'a Workspace,
    pub who: LockInfo,
    /// The state lock this apply holds; it checks it before every change.
    pub lock: Box<dyn HeldLock>,
    degraded: Option<String>,
}

impl<'a> BackendSink<'a> {
    pub fn new(ws: &'a Workspace, command: &str, lock: Box<dyn HeldLock>) -> BackendSink<'a> {
        BackendSink {
            ws,
            who: LockInfo::current(command),
            lock,
            degraded: None,
        }
    }
}

#[async_trait::async_trait]
impl StateSink for BackendSink<'_> {
    async fn ensure_lock(&mut self, state: &State) -> Result<(), String> {
        if !self.lock.is_lost() {
            return Ok(());
        }
        // The session that held the lock ended (the database restarted): take it back at once,
        // only if nobody wrote meanwhile.
        match self.ws.backend.relock(&self.who, state).await {
            Ok(l) => {
                self.lock = l;
                Ok(())
            }
            Err(e) => Err(error_chain(&e)),
        }
    }

    async fn save(&mut self, state: &mut State) -> Result<(), String> {
        if self.degraded.is_none() {
            match self.ws.backend.write(state, &self.who).await {
                Ok(()) => return Ok(()),
                Err(e) if self.ws.backend.is_remote() => self.degraded = Some(error_chain(&e)),
                Err(e) => return Err(error_chain(&e)),
            }
        }
        let rescue = self.ws.rescue_path();
        let cause = self.degraded.clone().unwrap_or_default();
        // `.kz` private and git-ignored, as the local backend makes it: the rescue file holds the
        // state and its hash key. A failure shows in the write that follows.
        let _ = kz_state::ensure_kz_dir(rescue.parent().unwrap_or(Path::new(".kz")));
        write_private_json(&rescue, state).map_err(|e| {
            format!(
                "{cause}; and the rescue file {} could not be written either: {e}",
                rescue.display()
            )
        })?;
        if cause.starts_with(kz_state::STALE_WRITE) {
            // The database answered: another kz wrote it since this one read it.
            return Err(format!(
                "{} refused the write ({cause}); the state of this apply is saved in {} instead. Check kz state history {}, then push it with kz state push --force {} {} or remove it",
                self.ws.backend.describe(),
                rescue.display(),
                self.ws.stack.dir.display(),
                self.ws.stack.dir.display(),
                rescue.display()
            ));
        }
        Err(format!(
            "{} could not be written ({cause}); the state is saved in {} instead. Once the database is back, run: kz state push {} {}",
            self.ws.backend.describe(),
            rescue.display(),
            self.ws.stack.dir.display(),
            rescue.display()
        ))
    }
}

/// Replaces a file atomically (see [`kz_state::write_file_atomically`], the one helper every file
/// kz writes goes through).
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    kz_state::write_file_atomically(path, bytes, mode).map_err(|e| error_chain(&e))
}

/// Replaces a text file atomically, keeping its mode.
pub fn write_text_atomically(path: &Path, text: &str) -> Result<(), String> {
    let mode = fs::metadata(path).map_or(0o644, |m| {
        std::os::unix::fs::PermissionsExt::mode(&m.permissions())
    });
    write_atomically(path, text.as_bytes(), mode)
}

/// Writes JSON readable by its owner only, atomically.
pub fn write_private_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let json = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    write_atomically(path, &json, 0o600)
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

/// Writes a plan for `kz apply PLANFILE`, readable by its owner only. What the hosts hold is
/// never written: the `before` side of every change goes in as a digest (see [`for_file`]).
pub fn write_plan_file(path: &Path, plan: &Plan) -> Result<(), String> {
    let mut json = serde_json::to_vec_pretty(&for_file(plan)).map_err(|e| e.to_string())?;
    json.push(b'\n');
    // Atomically: an interrupted write never leaves half a plan that apply would then refuse,
    // nor a truncated old one.
    write_atomically(path, &json, 0o600)
        .map_err(|e| format!("cannot write plan file {}: {e}", path.display()))
}

/// A plan as a file holds it: the values read from the hosts (or recorded) replaced by their
/// digest. A host file may hold a secret that its declared content does not name, so nothing
/// masks it: only the digest leaves the process. Numbers and booleans stay; the values the stack
/// declares (`after`) are written as they are (secret ones are masked already).
pub fn for_file(plan: &Plan) -> Plan {
    let mut plan = plan.clone();
    for c in &mut plan.changes {
        for a in &mut c.attributes {
            if let Some(b) = &mut a.before {
                *b = digest_value(b);
            }
        }
    }
    plan
}

fn digest_value(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    let bytes = match v {
        J::String(s) if s == "(sensitive)" || s == "(known after apply)" => return v.clone(),
        J::Object(o) if o.contains_key("sha256") && o.contains_key("size") => return v.clone(),
        J::Null | J::Bool(_) | J::Number(_) => return v.clone(),
        J::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    };
    serde_json::to_value(crate::model::ContentDigest::of(&bytes)).unwrap_or(J::Null)
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
    let mut records: Vec<(&String, &kz_state::ResourceState)> = state.resources.iter().collect();
    // Under the lab, what lives behind an API it does not reach (and what it skips) is left alone.
    let mut warnings = Vec::new();
    ws.stack
        .left_out
        .keep_out_of_deletes(&mut records, &mut warnings);
    for (addr, r) in records {
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
        warnings,
        removed_modules: Vec::new(),
        skipped_modules: Vec::new(),
        skipped_resources: Vec::new(),
        serial: Vec::new(),
        modules: Vec::new(),
        unverified: Vec::new(),
        not_applicable: Vec::new(),
        live: Vec::new(),
        gates: Vec::new(),
        summary: Summary {
            delete: changes.len(),
            ..Summary::default()
        },
        changes,
        errors: Vec::new(),
        read: ReadStats::default(),
        stack_dir: None,
        secrets_digest: None,
        lab: false,
    }
}
