//! The `check` resource: a health check that is also a gate. It changes nothing: a plan reads it
//! like everything else and shows whether it passes; an apply runs it again after anything it
//! depends on changed, retrying until its deadline, and what depends on it waits until it passes.
//!
//! Kind `command` (exit 0 passes) is the first; other kinds (tcp, http, redis_role, ...) extend
//! [`CheckDecl`].

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::{Gate, Instance};
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, Provider, ProviderError,
};
use kz_engine::units::duration;

#[derive(Debug)]
pub struct CheckProvider;

/// The longest a check may be given to pass.
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// A `[[check]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckDecl {
    /// A shell command that passes when it exits 0.
    command: Spanned<String>,
    tries: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    successes: Option<Spanned<i64>>,
    deadline: Option<Spanned<String>>,
}

fn declare_check(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: CheckDecl = decl.parse()?;
    let mut gate = Gate::default();
    for (field, target, max) in [
        (&d.tries, &mut gate.tries, 1000),
        (&d.successes, &mut gate.successes, 100),
    ] {
        if let Some(v) = field {
            match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=max).contains(&n) => *target = n,
                _ => decl.error(v, format!("expected a number from 1 to {max}")),
            }
        }
    }
    for (field, target) in [
        (&d.interval, &mut gate.interval),
        (&d.deadline, &mut gate.deadline),
    ] {
        if let Some(v) = field {
            match duration(v.get_ref()) {
                Ok(t) if t <= MAX_DEADLINE => *target = t,
                _ => decl.error(
                    v,
                    format!(
                        "invalid duration `{}`: expected a number and a unit up to 24h, e.g. 500ms, 30s, 10m",
                        v.get_ref()
                    ),
                ),
            }
        }
    }
    if gate.successes > gate.tries {
        decl.error_here(format!(
            "`successes` ({}) cannot exceed `tries` ({})",
            gate.successes, gate.tries
        ));
    }
    if !decl.ok() {
        return None;
    }
    Some(Declared {
        attrs: vec![("command".into(), Template::Text(d.command.clone()))],
        gate: Some(gate),
    })
}

#[async_trait]
impl Provider for CheckProvider {
    fn kind(&self) -> &'static str {
        "check"
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare_check(decl)
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        // Its own shell, so that its syntax cannot break the batch, reading the command from
        // standard input, so that a secret in it stays out of `ps`; the last lines of its output
        // are the evidence shown when it fails.
        let command = inst.text("command")?;
        Some(format!(
            "o=$({}); s=$?\necho \"$s\"\nprintf '%s\\n' \"$o\" | tail -n 3",
            crate::own_shell(command, " 2>&1")
        ))
    }

    fn observe(&self, _inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let code: i32 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("unexpected answer from the check: `{}`", text.trim()))?;
        let said: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
        Ok(Observation {
            exists: code == 0,
            attrs: Default::default(),
            note: (code != 0).then(|| {
                if said.is_empty() {
                    format!("exit {code}")
                } else {
                    format!("exit {code}: {}", said.join(" / "))
                }
            }),
            ..Default::default()
        })
    }

    /// A check is never created: the engine runs it as a gate.
    async fn create(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }

    async fn update(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }

    async fn delete(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }
}
