//! The runner: the steady state, measurements, the fault, the expectations, the restore, the
//! steady state again, each recorded as a step. Once the fault was attempted, the restore always
//! runs: after a failed expectation, a failed fault, or an interrupt.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::journal::{DrillRun, Outcome, Step};
use super::poll::{Expecting, poll, poll_expecting};
use super::{Drill, Expectation, FaultKind};
use crate::model::Stack;
use crate::plan::Runtime;
use crate::provider::CommandSpec;
use crate::render::seconds;

/// Faults on hosts from outside (stop, pause, cut a lab host): the binary drives podman, as the
/// engine spawns no process.
#[async_trait]
pub trait HostFaults: Send + Sync {
    /// Breaks `host`; says what was done.
    async fn inject(&self, host: &str, kind: FaultKind) -> Result<String, String>;
    /// Undoes `inject` (start, unpause, reconnect); says what was done.
    async fn undo(&self, host: &str, kind: FaultKind) -> Result<String, String>;
}

/// What a drill runs against.
pub struct DrillEnv<'a> {
    pub stack: &'a Stack,
    pub runtime: &'a Runtime,
    pub parallelism: usize,
    pub faults: &'a dyn HostFaults,
    /// Whether Ctrl-C or SIGTERM came: the drill then skips to its restore.
    pub interrupted: &'a (dyn Fn() -> bool + Send + Sync),
}

/// The longest output of a command kept in the journal, in characters.
const OUTPUT_LIMIT: usize = 400;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The steps of one run, timed from its start.
struct Recorder {
    start: Instant,
    steps: Vec<Step>,
}

impl Recorder {
    fn push(
        &mut self,
        (step, name): (&str, &str),
        began: Instant,
        outcome: Outcome,
        observed: String,
        after: Option<Duration>,
    ) {
        self.steps.push(Step {
            step: step.into(),
            name: name.into(),
            start_ms: millis(began.duration_since(self.start)),
            duration_ms: millis(began.elapsed()),
            outcome,
            observed,
            after_ms: after.map(millis),
        });
    }
}

/// Runs one drill and records it.
pub async fn run_drill(env: &DrillEnv<'_>, drill: &Drill) -> DrillRun {
    let started = kz_state::now_rfc3339();
    let mut rec = Recorder {
        start: Instant::now(),
        steps: Vec::new(),
    };
    let steady_ok = checks(env, &mut rec, "steady", &drill.steady, drill.steady_within).await;
    let fault_name = drill.fault.kind.name();
    let mut passed = steady_ok;
    if !steady_ok || (env.interrupted)() {
        let why = if steady_ok {
            "interrupted before the fault: nothing was broken"
        } else {
            "the steady state did not hold: nothing was broken"
        };
        rec.push(
            ("fault", fault_name),
            Instant::now(),
            Outcome::Skipped,
            why.into(),
            None,
        );
    } else {
        measures(env, drill, &mut rec, "before").await;
        let fault_ok = fault(env, drill, &mut rec).await;
        let fault_end = Instant::now();
        let expect_ok = if fault_ok && !(env.interrupted)() {
            expectations(env, drill, &mut rec, fault_end).await
        } else {
            for e in &drill.expect {
                let why = if fault_ok {
                    "interrupted"
                } else {
                    "the fault failed"
                };
                rec.push(
                    ("expect", &e.check),
                    Instant::now(),
                    Outcome::Skipped,
                    why.into(),
                    None,
                );
            }
            false
        };
        let restore_ok = restore(env, drill, &mut rec).await;
        let again_ok = checks(
            env,
            &mut rec,
            "steady_again",
            &drill.steady,
            drill.restore_within,
        )
        .await;
        measures(env, drill, &mut rec, "after").await;
        passed = fault_ok && expect_ok && restore_ok && again_ok;
    }
    let interrupted = (env.interrupted)();
    DrillRun {
        drill: drill.name.clone(),
        module: drill.module.clone(),
        description: drill.description.clone(),
        started,
        duration_ms: millis(rec.start.elapsed()),
        passed: passed && !interrupted,
        interrupted,
        steps: rec.steps,
    }
}

/// Polls `resources` for up to `within`; one step per check. Passes when every one passed.
async fn checks(
    env: &DrillEnv<'_>,
    rec: &mut Recorder,
    step: &str,
    resources: &[String],
    within: Duration,
) -> bool {
    let began = Instant::now();
    let polled = poll(env, resources, within).await;
    let mut ok = true;
    for r in resources {
        let after = polled.passed_after.get(r).copied();
        ok &= after.is_some();
        let outcome = if after.is_some() {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        rec.push((step, r), began, outcome, polled.observed(r), after);
    }
    ok
}

/// Polls every expectation at once from the end of the fault, each until its own `within`, and
/// each that passed and must hold until its hold ends.
async fn expectations(
    env: &DrillEnv<'_>,
    drill: &Drill,
    rec: &mut Recorder,
    fault_end: Instant,
) -> bool {
    let items: Vec<Expecting<'_>> = drill
        .expect
        .iter()
        .map(|e| Expecting {
            check: &e.check,
            within: e.within,
            hold: e.hold,
        })
        .collect();
    let (polled, held) = poll_expecting(env, &items).await;
    // The poll measures from its own start, right after the fault.
    let passed = |e: &Expectation| {
        polled
            .passed_after
            .get(&e.check)
            .copied()
            .filter(|t| *t <= e.within)
    };
    let mut ok = true;
    for e in &drill.expect {
        let after = passed(e);
        let (outcome, observed) = match (after, held.broke.get(&e.check)) {
            (Some(t), Some((at, seen))) => (
                Outcome::Fail,
                format!(
                    "passed {} after the fault, then failed {} after it, within its hold of {}: {seen}",
                    seconds(t),
                    seconds(*at),
                    crate::units::format_duration(e.hold)
                ),
            ),
            (Some(_), None) if held.cut.contains(&e.check) => (
                Outcome::Skipped,
                format!(
                    "{}; interrupted before its hold of {} ran out",
                    polled.observed(&e.check),
                    crate::units::format_duration(e.hold)
                ),
            ),
            (Some(_), None) if !e.hold.is_zero() => (
                Outcome::Pass,
                format!(
                    "{}; held {} ({} more reads passed)",
                    polled.observed(&e.check),
                    crate::units::format_duration(e.hold),
                    held.reads.get(&e.check).copied().unwrap_or(0)
                ),
            ),
            (Some(_), None) => (Outcome::Pass, polled.observed(&e.check)),
            (None, _) => (
                Outcome::Fail,
                format!(
                    "not passing within {}: {}",
                    crate::units::format_duration(e.within),
                    polled.observed(&e.check)
                ),
            ),
        };
        ok &= outcome == Outcome::Pass;
        rec.push(("expect", &e.check), fault_end, outcome, observed, after);
    }
    ok
}

/// Breaks what the drill breaks, on each of its hosts in turn.
async fn fault(env: &DrillEnv<'_>, drill: &Drill, rec: &mut Recorder) -> bool {
    let f = &drill.fault;
    let began = Instant::now();
    let mut seen = Vec::new();
    let mut ok = true;
    for host in &f.hosts {
        let r = match (f.kind.is_host_level(), &f.command) {
            (false, Some(c)) => run_on(env, host, c, f.timeout).await,
            (false, None) => Err("no command".into()),
            (true, _) => env.faults.inject(host, f.kind).await,
        };
        ok &= r.is_ok();
        seen.push(host_line(host, r));
    }
    let outcome = if ok { Outcome::Pass } else { Outcome::Error };
    rec.push(
        ("fault", f.kind.name()),
        began,
        outcome,
        seen.join("; "),
        None,
    );
    ok
}

/// Undoes the fault on every host, whatever happened before.
async fn restore(env: &DrillEnv<'_>, drill: &Drill, rec: &mut Recorder) -> bool {
    let f = &drill.fault;
    let began = Instant::now();
    if !f.kind.is_host_level() && f.undo.is_none() {
        rec.push(
            ("restore", f.kind.name()),
            began,
            Outcome::Pass,
            "nothing to undo (the fault has no `undo`)".into(),
            None,
        );
        return true;
    }
    let mut seen = Vec::new();
    let mut ok = true;
    for host in &f.hosts {
        let r = match (f.kind.is_host_level(), &f.undo) {
            (false, Some(u)) => run_on(env, host, u, f.timeout).await,
            (false, None) => Ok(String::new()),
            (true, _) => env.faults.undo(host, f.kind).await,
        };
        ok &= r.is_ok();
        seen.push(host_line(host, r));
    }
    let outcome = if ok { Outcome::Pass } else { Outcome::Error };
    rec.push(
        ("restore", f.kind.name()),
        began,
        outcome,
        seen.join("; "),
        None,
    );
    ok
}

/// Runs each measurement and records its output.
async fn measures(env: &DrillEnv<'_>, drill: &Drill, rec: &mut Recorder, when: &str) {
    for m in &drill.measure {
        let began = Instant::now();
        let timeout = drill.fault.timeout;
        let (outcome, observed) = match run_on(env, &m.host, &m.command, timeout).await {
            Ok(out) => (Outcome::Recorded, out),
            Err(e) => (Outcome::Error, format!("on {}: {e}", m.host)),
        };
        let name = format!("{} ({when})", m.name);
        rec.push(("measure", &name), began, outcome, observed, None);
    }
}

fn host_line(host: &str, r: Result<String, String>) -> String {
    match r {
        Ok(s) if s.is_empty() => format!("{host}: done"),
        Ok(s) => format!("{host}: {s}"),
        Err(e) => format!("{host}: FAILED: {e}"),
    }
}

/// Runs a script on a host through its transport (on standard input, like every script kz
/// runs); its output, cut to [`OUTPUT_LIMIT`], or why it failed.
async fn run_on(
    env: &DrillEnv<'_>,
    host: &str,
    script: &str,
    timeout: Duration,
) -> Result<String, String> {
    let h = env
        .stack
        .hosts
        .get(host)
        .ok_or_else(|| format!("no host `{host}` in this run"))?;
    let t = env
        .runtime
        .transports
        .transport(h)
        .map_err(|e| e.to_string())?;
    let out = t
        .run(CommandSpec {
            script: script.to_string(),
            stdin: None,
            timeout,
            public_script: false,
        })
        .await
        .map_err(|e| e.to_string())?;
    let text = cut(String::from_utf8_lossy(&out.stdout).trim());
    if out.status == 0 {
        Ok(text)
    } else {
        let err = cut(String::from_utf8_lossy(&out.stderr).trim());
        Err(format!(
            "exit {}: {}",
            out.status,
            [text, err].join(" ").trim()
        ))
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= OUTPUT_LIMIT {
        s.to_string()
    } else {
        let kept: String = s.chars().take(OUTPUT_LIMIT).collect();
        format!("{kept}...")
    }
}
