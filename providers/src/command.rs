//! The `command` resource: `run` when `check` fails, when it was never run, or when it changes.

use std::time::Duration;

use async_trait::async_trait;

use kz_engine::model::Instance;
use kz_engine::provider::{
    CommandSpec, Observation, ProbeOutput, Provider, ProviderError, Transport, shell_quote,
};
use kz_engine::units::parse_duration;

#[derive(Debug)]
pub struct CommandProvider;

fn timeout(inst: &Instance, t: &dyn Transport) -> Duration {
    inst.text("timeout")
        .and_then(parse_duration)
        .unwrap_or_else(|| t.command_timeout())
}

async fn run(
    inst: &Instance,
    t: &dyn Transport,
    step: &str,
    attr: &str,
) -> Result<(), ProviderError> {
    let script = inst.text(attr).ok_or_else(|| {
        ProviderError::new(step, format!("`{attr}` is not known (is a secret unset?)"))
    })?;
    let out = t
        .run(CommandSpec {
            script: script.to_string(),
            stdin: None,
            timeout: timeout(inst, t),
        })
        .await
        .map_err(|e| ProviderError::transport(step, e))?;
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

    fn probe(&self, inst: &Instance) -> Option<String> {
        // The check runs in its own shell so that a syntax error in it cannot break the batch.
        let check = inst.text("check")?;
        Some(format!(
            "sh -c {} >/dev/null 2>&1 </dev/null\necho $?",
            shell_quote(check)
        ))
    }

    fn observe(&self, _inst: &Instance, out: &ProbeOutput) -> Result<Observation, String> {
        let text = String::from_utf8_lossy(&out.stdout);
        let code: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("unexpected answer from check: `{}`", text.trim()))?;
        Ok(Observation {
            exists: code == 0,
            attrs: Default::default(),
            note: (code != 0).then(|| format!("check exited {code}")),
        })
    }

    async fn create(&self, inst: &Instance, t: &dyn Transport) -> Result<(), ProviderError> {
        run(inst, t, "run", "run").await
    }

    async fn update(
        &self,
        inst: &Instance,
        changed: &[String],
        t: &dyn Transport,
    ) -> Result<(), ProviderError> {
        // Only what the command does or when it runs warrants running it again; a new `timeout`
        // or `destroy` is just recorded.
        if changed
            .iter()
            .any(|c| matches!(c.as_str(), "run" | "check" | "triggers"))
        {
            run(inst, t, "run", "run").await
        } else {
            Ok(())
        }
    }

    async fn delete(&self, inst: &Instance, t: &dyn Transport) -> Result<(), ProviderError> {
        match inst.attr("destroy") {
            None => return Ok(()),
            Some(a) if a.known().is_none() => {
                return Err(ProviderError::new(
                    "destroy",
                    "`destroy` uses a secret and this resource is no longer in the stack, so kz only has a hash of it: put the resource back to run its destroy, or forget it with kz state rm ADDRESS",
                ));
            }
            Some(_) => {}
        }
        run(inst, t, "destroy", "destroy").await
    }
}
