//! Polling checks: the plan's read (one round trip per host), restricted to the checks asked
//! for, repeated every [`POLL_INTERVAL`] until each has passed or the time runs out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::DrillEnv;
use crate::plan::read_all;
use crate::verify::{CheckReport, CheckResult, check_report};

/// Time between two reads of the checks still failing.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What the polls saw, by check resource (`MODULE.TYPE.NAME`).
#[derive(Debug, Default)]
pub(super) struct Polled {
    /// When it first passed on every instance, from the start of the poll.
    pub passed_after: BTreeMap<String, Duration>,
    /// Its instances' reports of the last read that read it.
    pub last: BTreeMap<String, Vec<CheckReport>>,
}

impl Polled {
    /// A check's last observation as one line: each instance's result, host and note.
    pub(super) fn observed(&self, resource: &str) -> String {
        match self.last.get(resource) {
            None => "not read".into(),
            Some(r) if r.is_empty() => {
                "no instance of it in this run (its hosts were left out?)".into()
            }
            Some(reports) => reports
                .iter()
                .map(|c| {
                    let word = match c.result {
                        CheckResult::Pass => "pass",
                        CheckResult::Fail => "FAIL",
                        CheckResult::Unreachable => "UNREACHABLE",
                        CheckResult::Error => "ERROR",
                    };
                    format!("{word} on {}: {}", c.host, c.observed)
                })
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// Reads `resources` until each passed on all its instances, `within` ran out, or the run was
/// interrupted. A `within` of zero reads once.
pub(super) async fn poll(env: &DrillEnv<'_>, resources: &[String], within: Duration) -> Polled {
    let start = Instant::now();
    let mut polled = Polled::default();
    let mut pending: Vec<&String> = resources.iter().collect();
    pending.dedup();
    while !pending.is_empty() {
        let read = read_once(env, &pending).await;
        let at = start.elapsed();
        for (r, reports) in read {
            if passes(&reports) {
                polled.passed_after.insert(r.clone(), at);
            }
            polled.last.insert(r, reports);
        }
        pending.retain(|r| !polled.passed_after.contains_key(*r));
        let elapsed = start.elapsed();
        if pending.is_empty() || elapsed >= within || (env.interrupted)() {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL.min(within - elapsed)).await;
    }
    polled
}

/// How each expectation held after it first passed (those with a `hold`).
#[derive(Debug, Default)]
pub(super) struct Held {
    /// When it stopped passing (from the poll's start), and what that read saw.
    pub broke: BTreeMap<String, (Duration, String)>,
    /// How many reads it passed while held.
    pub reads: BTreeMap<String, u32>,
    /// The run was interrupted while one was still held: its hold did not run out.
    pub interrupted: bool,
}

/// One expectation: a check, how long it may take to pass, and how long it must then go on
/// passing.
pub(super) struct Expecting<'a> {
    pub check: &'a String,
    pub within: Duration,
    pub hold: Duration,
}

/// Reads every expectation from now on: each until it passed (or its `within` ran out), and one
/// with a `hold` again and again until its first pass plus its hold, the first failing read
/// ending it. All in one loop, so each hold starts at its own first pass whatever the others do.
pub(super) async fn poll_expecting(env: &DrillEnv<'_>, items: &[Expecting<'_>]) -> (Polled, Held) {
    let start = Instant::now();
    let mut polled = Polled::default();
    let mut held = Held::default();
    loop {
        let at = start.elapsed();
        let reading: Vec<&String> = items
            .iter()
            .filter(|e| match polled.passed_after.get(e.check) {
                None => at < e.within || !polled.last.contains_key(e.check),
                Some(first) => at < *first + e.hold && !held.broke.contains_key(e.check),
            })
            .map(|e| e.check)
            .collect();
        if reading.is_empty() {
            break;
        }
        if (env.interrupted)() {
            held.interrupted = items
                .iter()
                .any(|e| polled.passed_after.contains_key(e.check) && !e.hold.is_zero());
            break;
        }
        let read = read_once(env, &reading).await;
        let at = start.elapsed();
        for (r, reports) in read {
            match polled.passed_after.get(&r) {
                None if passes(&reports) => {
                    polled.passed_after.insert(r.clone(), at);
                }
                None => {}
                Some(_) if passes(&reports) => *held.reads.entry(r.clone()).or_default() += 1,
                Some(_) => {
                    let mut p = Polled::default();
                    p.last.insert(r.clone(), reports.clone());
                    held.broke.insert(r.clone(), (at, p.observed(&r)));
                }
            }
            polled.last.insert(r, reports);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    (polled, held)
}

fn passes(reports: &[CheckReport]) -> bool {
    !reports.is_empty() && reports.iter().all(|c| c.result == CheckResult::Pass)
}

/// One read of the checks `pending` (one round trip per host): each one's instances' reports.
async fn read_once(env: &DrillEnv<'_>, pending: &[&String]) -> Vec<(String, Vec<CheckReport>)> {
    let stack = env.stack;
    let selected: Vec<bool> = stack
        .instances
        .iter()
        .map(|i| i.gate.is_some() && pending.contains(&&i.address.resource()))
        .collect();
    let reads = read_all(
        stack,
        &stack.instances,
        &selected,
        env.parallelism,
        env.runtime,
    )
    .await;
    pending
        .iter()
        .map(|r| {
            let reports: Vec<CheckReport> = stack
                .instances
                .iter()
                .enumerate()
                .filter(|(i, inst)| selected[*i] && &&inst.address.resource() == r)
                .map(|(i, inst)| check_report(inst, i, &reads))
                .collect();
            ((*r).clone(), reports)
        })
        .collect()
}
