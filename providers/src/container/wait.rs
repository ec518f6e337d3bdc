//! After a start: wait until the container runs, and is healthy when it has a health check,
//! under its `start_timeout`, with progress; on failure, the error carries its log's last lines.

use std::time::{Duration, Instant};

use kz_engine::provider::{ApplyCtx, CommandSpec, ProviderError, Transport, shell_quote};
use kz_engine::units::{format_duration, parse_duration};

use super::read::strip_digest;
use super::{container_name, runtime_of};

/// How long a container is given to run (and be healthy) when `start_timeout` is not set.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The pause between two looks.
const POLL: Duration = Duration::from_secs(1);

/// The log lines an error shows.
const LOG_LINES: u32 = 20;

/// One look at the container: `STATUS HEALTH IMAGE_ID`. Podman runs health checks from systemd
/// timers, which hosts without systemd lack: kz runs the check itself before each look, which
/// records its result as the timer would.
fn look_script(rt: &str, name: &str, health: bool) -> String {
    let q = shell_quote(name);
    let rtq = shell_quote(rt);
    let run_check = if health && rt == "podman" {
        format!("podman healthcheck run -- {q} >/dev/null 2>&1\n")
    } else {
        String::new()
    };
    format!(
        "{run_check}{rtq} container inspect --format \
         '{{{{.State.Status}}}} {{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{end}}}}/ {{{{.Image}}}}' -- {q}"
    )
}

/// What one look saw.
struct Look {
    status: String,
    health: String,
    image: String,
}

fn parse_look(s: &str) -> Option<Look> {
    let (status, rest) = s.trim().split_once(' ')?;
    let (health, image) = rest.split_once("/ ")?;
    Some(Look {
        status: status.to_string(),
        health: health.trim().to_string(),
        image: strip_digest(image.trim()),
    })
}

async fn sh(t: &dyn Transport, script: String) -> Result<(i32, String, String), ProviderError> {
    let out = t
        .run(CommandSpec {
            script,
            stdin: None,
            timeout: t.command_timeout(),
            public_script: false,
        })
        .await
        .map_err(|e| ProviderError::transport("wait", e))?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The last lines of the container's log (its output and errors), for an error message. The
/// output layer masks secret values in them.
async fn log_tail(t: &dyn Transport, rt: &str, name: &str) -> String {
    let script = format!(
        "{} logs --tail {LOG_LINES} -- {} 2>&1",
        shell_quote(rt),
        shell_quote(name)
    );
    match sh(t, script).await {
        Ok((_, out, _)) if !out.trim().is_empty() => {
            format!("; last lines of its log:\n{}", out.trim_end())
        }
        _ => "; its log is empty".to_string(),
    }
}

/// Waits until the container of `cx` runs (and is healthy); returns the id of its image.
pub(super) async fn until_ready(cx: &ApplyCtx, t: &dyn Transport) -> Result<String, ProviderError> {
    let inst = cx.instance();
    let rt = runtime_of(inst);
    let name = container_name(inst);
    let health = inst.attr("health").is_some();
    let deadline = inst
        .text("start_timeout")
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_START_TIMEOUT);
    let start = Instant::now();
    let mut last_said = String::new();
    loop {
        let (status, out, err) = sh(t, look_script(rt, name, health)).await?;
        if status != 0 {
            return Err(ProviderError::new(
                "wait",
                format!(
                    "cannot inspect container {name}: {}",
                    crate::tail(err.as_bytes(), 3)
                ),
            ));
        }
        let look = parse_look(&out).ok_or_else(|| {
            ProviderError::new("wait", format!("unexpected answer `{}`", out.trim()))
        })?;
        let ready = look.status == "running" && (!health || look.health == "healthy");
        if ready {
            return Ok(look.image);
        }
        let state = if health && look.status == "running" {
            format!(
                "running, health {}",
                if look.health.is_empty() {
                    "unknown"
                } else {
                    &look.health
                }
            )
        } else {
            look.status.clone()
        };
        if matches!(look.status.as_str(), "exited" | "dead") {
            let logs = log_tail(t, rt, name).await;
            return Err(ProviderError::new(
                "wait",
                format!("container {name} stopped ({state}){logs}"),
            ));
        }
        if start.elapsed() >= deadline || cx.aborted() {
            let logs = log_tail(t, rt, name).await;
            let why = if cx.aborted() {
                "aborted".to_string()
            } else {
                format!("not ready within {}", format_duration(deadline))
            };
            return Err(ProviderError::new(
                "wait",
                format!("container {name} {why} ({state}){logs}"),
            ));
        }
        if state != last_said {
            cx.progress(format!("waiting for container {name}: {state}"));
            last_said = state;
        }
        tokio::time::sleep(POLL).await;
    }
}
