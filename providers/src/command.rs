//! The `command` resource: `run` when `check` fails, when it was never run, or when it changes.

use std::time::Duration;

use async_trait::async_trait;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::{Instance, Value};
use kz_engine::provider::{
    Applied, ApplyCtx, CommandSpec, Declaration, Declared, MemberOutputs, Observation, Provider,
    ProviderError, Transport,
};
use kz_engine::units::{DurationError, duration, format_duration, parse_duration};

#[derive(Debug)]
pub struct CommandProvider;

/// A `[[command]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandDecl {
    run: Spanned<String>,
    check: Option<Spanned<String>>,
    destroy: Option<Spanned<String>>,
    triggers: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    timeout: Option<Spanned<String>>,
}

fn declare_command(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: CommandDecl = decl.parse()?;
    let mut attrs = vec![("run".to_string(), Template::Text(d.run.clone()))];
    for (name, v) in [("check", &d.check), ("destroy", &d.destroy)] {
        if let Some(v) = v {
            attrs.push((name.into(), Template::Text(v.clone())));
        }
    }
    if let Some(t) = &d.triggers {
        let mut m = BTreeMap::new();
        for (k, v) in t.get_ref() {
            let text = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    decl.error(
                        v,
                        format!("value of `{k}` must be a string, number or boolean"),
                    );
                    return None;
                }
            };
            m.insert(k.clone(), Template::Text(Spanned::new(v.span(), text)));
        }
        attrs.push(("triggers".into(), Template::Map(m)));
    }
    if let Some(t) = &d.timeout {
        match duration(t.get_ref()) {
            Ok(v) if !v.is_zero() => attrs.push((
                "timeout".into(),
                Template::Value(Value::Text(format_duration(v))),
            )),
            Ok(_) => {
                decl.error(t, DurationError::Invalid(t.get_ref().clone()).to_string());
                return None;
            }
            Err(e) => {
                decl.error(t, e.to_string());
                return None;
            }
        }
    }
    Some(Declared { attrs, gate: None })
}

/// How long a command runs before its first progress line, then between two of them.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

fn timeout(inst: &Instance, t: &dyn Transport) -> Duration {
    inst.text("timeout")
        .and_then(parse_duration)
        .unwrap_or_else(|| t.command_timeout())
}

async fn run(cx: &ApplyCtx, step: &str, attr: &str) -> Result<(), ProviderError> {
    let inst = cx.instance();
    let script = inst.text(attr).ok_or_else(|| {
        ProviderError::new(step, format!("`{attr}` is not known (is a secret unset?)"))
    })?;
    let t = cx.own_transport().await?;
    let t: &dyn Transport = &*t;
    let spec = CommandSpec {
        script: script.to_string(),
        stdin: None,
        timeout: timeout(inst, t),
        ..Default::default()
    };
    // A long command tells how long it has been running, so a slow step never looks hung.
    let started = Instant::now();
    let running = t.run(spec);
    tokio::pin!(running);
    let out = loop {
        tokio::select! {
            out = &mut running => break out,
            () = tokio::time::sleep(PROGRESS_EVERY) => {
                cx.progress(format!(
                    "`{step}` still running after {}",
                    format_duration(Duration::from_secs(started.elapsed().as_secs()))
                ));
            }
        }
    };
    let out = out.map_err(|e| ProviderError::transport(step, e))?;
    if out.status == 0 {
        Ok(())
    } else {
        let err = crate::tail(&out.stderr, 10);
        let out_tail = crate::tail(&out.stdout, 5);
        let detail = if err.is_empty() { out_tail } else { err };
        Err(ProviderError::new(
            step,
            format!(
                "exit status {}{}{}",
                out.status,
                if detail.is_empty() { "" } else { ": " },
                detail
            ),
        ))
    }
}

#[async_trait]
impl Provider for CommandProvider {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare_command(decl)
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        // The check runs in its own shell so that a syntax error in it cannot break the batch,
        // reading it from standard input, so that a secret in it stays out of `ps`.
        let check = inst.text("check")?;
        Some(format!(
            "{}echo $?",
            crate::own_shell(check, " >/dev/null 2>&1")
        ))
    }

    fn observe(&self, _inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let code: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("unexpected answer from check: `{}`", text.trim()))?;
        Ok(Observation {
            exists: code == 0,
            attrs: Default::default(),
            note: (code != 0).then(|| format!("check exited {code}")),
            ..Default::default()
        })
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        run(cx, "run", "run").await?;
        Ok(Applied::default())
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        // Only what the command does or when it runs warrants running it again; a new `timeout`
        // or `destroy` is just recorded.
        if cx
            .changed()
            .iter()
            .any(|c| matches!(c.as_str(), "run" | "check" | "triggers"))
        {
            run(cx, "run", "run").await?;
        }
        Ok(Applied::default())
    }

    async fn delete(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        match cx.instance().attr("destroy") {
            None => {
                return Ok(Applied {
                    note: Some(
                        "forgotten: it has no `destroy` command, so the host was not touched"
                            .into(),
                    ),
                    ..Applied::default()
                });
            }
            Some(a) if a.known().is_none() => {
                return Err(ProviderError::new(
                    "destroy",
                    "`destroy` uses a secret and this resource is no longer in the stack, so kz only has a hash of it: put the resource back to run its destroy, or forget it with kz state rm ADDRESS",
                ));
            }
            Some(_) => {}
        }
        run(cx, "destroy", "destroy").await?;
        Ok(Applied::default())
    }
}
