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

/// How a check held after it first passed: each `(resource, until)` is read again and again
/// until `until` (from `start`); the first read that does not pass ends its hold.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// When it stopped passing (from `start`), and what that read saw.
    pub broke: BTreeMap<String, (Duration, String)>,
    /// How many reads it passed while held.
    pub reads: BTreeMap<String, u32>,
}

pub(super) async fn hold(
    env: &DrillEnv<'_>,
    holding: &[(String, Duration)],
    start: Instant,
) -> Held {
    let mut held = Held::default();
    loop {
        let at = start.elapsed();
        let pending: Vec<&String> = holding
            .iter()
            .filter(|(r, until)| at < *until && !held.broke.contains_key(r))
            .map(|(r, _)| r)
            .collect();
        if pending.is_empty() || (env.interrupted)() {
            break;
        }
        let read = read_once(env, &pending).await;
        let at = start.elapsed();
        for (r, reports) in read {
            if passes(&reports) {
                *held.reads.entry(r).or_default() += 1;
            } else {
                let mut p = Polled::default();
                p.last.insert(r.clone(), reports);
                let seen = p.observed(&r);
                held.broke.insert(r, (at, seen));
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    held
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
