//! `kz verify`: every health check of the stack, run once, read-only, and reported module by
//! module. It reuses the plan's read (one round trip per host, each host under its connect and
//! command deadlines, hosts read concurrently), restricted to checks and the hosts they run on.
//!
//! Verify tells the truth now: each check runs once, without its apply-time retries, so a
//! failing platform is reported in seconds rather than after every check's deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use kz_state::State;

use crate::model::{Instance, Stack, Value};
use crate::plan::{Reads, Runtime, read_all};

/// The attribute of a check's observation that says how long its probe ran, in milliseconds;
/// without it, a check took as long as its host's read.
pub const ELAPSED_ATTR: &str = "elapsed_ms";

/// Version of the JSON report (`kz verify --json`).
pub const VERIFY_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    Pass,
    Fail,
    /// Its host could not be reached (connect, auth or host key).
    Unreachable,
    /// It could not be read (a secret it uses is unset, its read broke off).
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleStatus {
    Ok,
    Failing,
    Unreachable,
    /// The state holds none of its resources: it was never applied (or was destroyed).
    NotDeployed,
    /// Deployed, but it declares no check: nothing says whether it works.
    Unchecked,
    /// Left out of the lab (`lab = { skip = "..." }`): not checked there, and no failure.
    Skipped,
}

impl ModuleStatus {
    pub fn label(self) -> &'static str {
        match self {
            ModuleStatus::Ok => "OK",
            ModuleStatus::Failing => "FAILING",
            ModuleStatus::Unreachable => "UNREACHABLE",
            ModuleStatus::NotDeployed => "NOT DEPLOYED",
            ModuleStatus::Unchecked => "UNCHECKED",
            ModuleStatus::Skipped => "SKIPPED",
        }
    }
}

/// One check's run: where, what was seen, when, how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub address: String,
    /// The host it ran on (its own, or its `from` host).
    pub host: String,
    pub result: CheckResult,
    /// What was observed, or why it could not be.
    pub observed: String,
    /// When its host's read ended (RFC 3339, UTC).
    pub at: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleReport {
    pub module: String,
    pub status: ModuleStatus,
    /// Why a SKIPPED module is skipped: `skipped in the lab: no Debian package of MinIO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the report says of it besides its checks: `10_lb depends on 06_minio, skipped in
    /// the lab`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub checks: Vec<CheckReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub format_version: u32,
    pub stack: String,
    pub started: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lab: bool,
    pub modules: Vec<ModuleReport>,
    /// Every module is OK (or has no check to fail).
    pub passed: bool,
}

/// Bad `--module` values.
#[derive(Debug, thiserror::Error)]
#[error("--module `{0}` is not a module of the stack (modules: {1})")]
pub struct UnknownModule(pub String, pub String);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs every check of the stack (or of `modules`) once and reports.
pub async fn verify(
    stack: &Stack,
    state: Option<&State>,
    modules: &[String],
    parallelism: usize,
    runtime: &Runtime,
) -> Result<VerifyReport, UnknownModule> {
    for m in modules {
        if !stack.modules.contains_key(m) {
            let known: Vec<&str> = stack.modules.keys().map(String::as_str).collect();
            return Err(UnknownModule(m.clone(), known.join(", ")));
        }
    }
    let wanted = |m: &str| modules.is_empty() || modules.iter().any(|w| w == m);
    let started = kz_state::now_rfc3339();
    let clock = Instant::now();
    let selected: Vec<bool> = stack
        .instances
        .iter()
        .map(|i| i.gate.is_some() && wanted(&i.address.module))
        .collect();
    let reads = read_all(stack, &stack.instances, &selected, parallelism, runtime).await;
    let mut by_module: BTreeMap<&str, Vec<CheckReport>> = BTreeMap::new();
    for (i, inst) in stack.instances.iter().enumerate() {
        if selected[i] {
            by_module
                .entry(&inst.address.module)
                .or_default()
                .push(check_report(inst, i, &reads));
        }
    }
    let mut out = Vec::new();
    for name in stack.modules.keys().filter(|m| wanted(m)) {
        let checks = by_module.remove(name.as_str()).unwrap_or_default();
        let skipped = stack.left_out.modules.iter().find(|m| &m.module == name);
        let status = match skipped {
            Some(_) => ModuleStatus::Skipped,
            None => module_status(stack, state, name, &checks),
        };
        // A module is told when one it depends on is skipped (its absent checks passed
        // nothing), and which of its own resources the lab left out.
        let notes = stack
            .left_out
            .modules
            .iter()
            .filter(|m| m.dependents.contains(name))
            .map(|m| format!("{name} depends on {}, skipped in the lab", m.module))
            .chain(
                stack
                    .left_out
                    .resources
                    .iter()
                    .filter(|r| &r.module == name)
                    .map(|r| format!("{} {}", r.resource, r.said())),
            )
            .collect();
        out.push(ModuleReport {
            module: name.clone(),
            status,
            reason: skipped.map(crate::overlay::SkippedModule::said),
            notes,
            checks,
        });
    }
    let passed = out.iter().all(|m| {
        matches!(
            m.status,
            ModuleStatus::Ok | ModuleStatus::Unchecked | ModuleStatus::Skipped
        )
    });
    Ok(VerifyReport {
        format_version: VERIFY_FORMAT_VERSION,
        stack: stack.name.clone(),
        started,
        duration_ms: millis(clock.elapsed()),
        lab: false,
        modules: out,
        passed,
    })
}

pub(crate) fn check_report(inst: &Instance, i: usize, reads: &Reads) -> CheckReport {
    let host = inst.read_host().unwrap_or_default().to_string();
    let address = inst.address.to_string();
    let (elapsed, at) = reads
        .timings
        .get(&host)
        .map(|(d, t)| (*d, humantime_seconds(*t)))
        .unwrap_or((Duration::ZERO, kz_state::now_rfc3339()));
    let own_error = reads
        .errors
        .iter()
        .find(|e| e.address.as_deref() == Some(address.as_str()));
    let host_error = reads
        .errors
        .iter()
        .find(|e| e.address.is_none() && e.host == host);
    let (result, observed, duration) = match (reads.observations.get(&i), own_error, host_error) {
        (Some(o), _, _) => {
            let took = match o.attrs.get(ELAPSED_ATTR) {
                Some(Value::Int(ms)) => Duration::from_millis(u64::try_from(*ms).unwrap_or(0)),
                _ => elapsed,
            };
            let seen = o
                .note
                .clone()
                .unwrap_or_else(|| if o.exists { "passed" } else { "failed" }.into());
            let r = if o.exists {
                CheckResult::Pass
            } else {
                CheckResult::Fail
            };
            (r, seen, took)
        }
        (None, Some(e), _) => (CheckResult::Error, e.message.clone(), elapsed),
        (None, None, Some(e)) if reads.unreachable.contains(&host) => {
            (CheckResult::Unreachable, e.message.clone(), elapsed)
        }
        (None, None, Some(e)) => (CheckResult::Error, e.message.clone(), elapsed),
        (None, None, None) => (
            CheckResult::Error,
            "not read (does it use a secret that is not set?)".into(),
            elapsed,
        ),
    };
    CheckReport {
        address,
        host,
        result,
        observed,
        at,
        duration_ms: millis(duration),
    }
}

fn humantime_seconds(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A module's verdict: not deployed when the state holds none of its resources (a module of
/// checks only deploys nothing, so it is judged by its checks); else failing when a check
/// failed on a host that answered, unreachable when a host did not answer, OK when all pass.
fn module_status(
    stack: &Stack,
    state: Option<&State>,
    module: &str,
    checks: &[CheckReport],
) -> ModuleStatus {
    let deploys = stack
        .instances
        .iter()
        .any(|i| i.address.module == module && i.gate.is_none());
    let deployed = state.is_some_and(|s| s.resources.values().any(|r| r.module == module));
    if deploys && !deployed {
        return ModuleStatus::NotDeployed;
    }
    if checks.is_empty() {
        return ModuleStatus::Unchecked;
    }
    if checks
        .iter()
        .any(|c| matches!(c.result, CheckResult::Fail | CheckResult::Error))
    {
        ModuleStatus::Failing
    } else if checks.iter().any(|c| c.result == CheckResult::Unreachable) {
        ModuleStatus::Unreachable
    } else {
        ModuleStatus::Ok
    }
}
