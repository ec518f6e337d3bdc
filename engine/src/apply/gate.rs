//! Gates at apply time: a health check runs again, fresh, after anything it depends on changed,
//! retrying until it passes as often as it must or its deadline passes. It never changes a host.

use std::time::{Duration, Instant};

use crate::model::Gate;
use crate::provider::{
    Applied, ApplyCtx, CommandSpec, MemberOutputs, Observation, ProbeOutput, Provider,
    ProviderError,
};

/// Runs the gate of `cx`'s instance until it passes, or fails with what it saw last.
pub(super) async fn verify(
    provider: &dyn Provider,
    cx: &ApplyCtx,
    gate: &Gate,
) -> Result<Applied, ProviderError> {
    let started = Instant::now();
    let mut passes = 0;
    let mut last = String::from("it never ran");
    let mut tries = 0;
    while tries < gate.tries.max(1) {
        tries += 1;
        let left = gate.deadline.saturating_sub(started.elapsed());
        let seen = match tokio::time::timeout(left, observe_now(provider, cx, left)).await {
            Ok(r) => r,
            Err(_) => Err("its deadline passed while it ran".to_string()),
        };
        match seen {
            Ok(o) if o.exists => {
                passes += 1;
                if passes >= gate.successes.max(1) {
                    return Ok(Applied::default());
                }
                last = "passed, but not often enough in a row".into();
            }
            Ok(o) => {
                passes = 0;
                last = o.note.unwrap_or_else(|| "failing".into());
            }
            Err(e) => {
                passes = 0;
                last = e;
            }
        }
        if tries >= gate.tries
            || started.elapsed() + gate.interval >= gate.deadline
            || cx.interrupted()
        {
            break;
        }
        cx.progress(format!(
            "try {tries} of {}: {last}; again in {}",
            gate.tries,
            crate::units::format_duration(gate.interval)
        ));
        cx.sleep_unless_interrupted(gate.interval).await;
        if cx.interrupted() {
            last = format!("{last} (stopped waiting: interrupted)");
            break;
        }
    }
    Err(ProviderError::new(
        "gate",
        format!(
            "failed after {tries} tr{} in {}: {last}",
            if tries == 1 { "y" } else { "ies" },
            crate::units::format_duration(Duration::from_millis(
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
            ))
        ),
    ))
}

/// Reads the instance now: its probes on each member (behind each host's session limit), or its
/// provider's API read.
async fn observe_now(
    provider: &dyn Provider,
    cx: &ApplyCtx,
    left: Duration,
) -> Result<Observation, String> {
    let inst = cx.instance();
    if inst.hosts().next().is_none() {
        return match provider.read(std::slice::from_ref(inst)).await {
            Some(mut r) if !r.is_empty() => r.remove(0),
            _ => Err("its provider cannot read it".into()),
        };
    }
    let mut outs = MemberOutputs::default();
    // A gate with a `from` host runs there; others on their own host (or each member).
    let hosts: Vec<&str> = match inst.gate.as_ref().and_then(|g| g.from.as_deref()) {
        Some(from) => vec![from],
        None => inst.hosts().collect(),
    };
    for host in hosts {
        let Some(script) = provider.probe(inst, host) else {
            continue;
        };
        let t = cx.transport(host).await.map_err(|e| e.to_string())?;
        let out = t
            .run(CommandSpec {
                script,
                stdin: None,
                timeout: left.min(t.command_timeout()),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("{}: {e}", cx.host_label(host)))?;
        outs.outputs.push((
            host.to_string(),
            ProbeOutput {
                stdout: out.stdout,
                status: out.status,
            },
        ));
    }
    provider.observe(inst, &outs)
}
