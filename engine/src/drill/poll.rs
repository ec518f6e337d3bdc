//! Polling checks: the plan's read (one round trip per host), restricted to the checks asked
//! for, repeated every [`POLL_INTERVAL`] until each has passed or the time runs out.

use std::collections::{BTreeMap, BTreeSet};
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
    let items: Vec<Expecting<'_>> = resources
        .iter()
        .map(|check| Expecting {
            check,
            within,
            hold: Duration::ZERO,
        })
        .collect();
    poll_expecting(env, &items).await.0
}

/// How each expectation held after it first passed (those with a `hold`).
#[derive(Debug, Default)]
pub(super) struct Held {
    /// When it stopped passing (from the poll's start), and what that read saw.
    pub broke: BTreeMap<String, (Duration, String)>,
    /// How many reads it passed while held.
    pub reads: BTreeMap<String, u32>,
    /// Those still held when the run was interrupted: their hold did not run out.
    pub cut: BTreeSet<String>,
}

/// One expectation: a check, how long it may take to pass, and how long it must then go on
/// passing.
pub(super) struct Expecting<'a> {
    pub check: &'a String,
    pub within: Duration,
    pub hold: Duration,
}

/// Reads every expectation from now on: each until it passed (or its `within` ran out, one read
/// at least), and one with a `hold` again and again until its first pass plus its hold, the first
/// failing read ending it; or until the run is interrupted. All in one loop, so each hold starts
/// at its own first pass whatever the others do.
pub(super) async fn poll_expecting(env: &DrillEnv<'_>, items: &[Expecting<'_>]) -> (Polled, Held) {
    let start = Instant::now();
    let mut polled = Polled::default();
    let mut held = Held::default();
    let mut reading: Vec<&Expecting<'_>> = items.iter().collect();
    while !reading.is_empty() {
        let checks: Vec<&String> = reading.iter().map(|e| e.check).collect();
        let read = read_once(env, &checks).await;
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
        // What is read again, and until when: the time left is judged right after a read, so
        // the last read falls at the deadline itself.
        let elapsed = start.elapsed();
        let ends: Vec<(&Expecting<'_>, Duration)> = reading
            .iter()
            .filter_map(|e| match polled.passed_after.get(e.check) {
                None => Some((*e, e.within)),
                Some(_) if held.broke.contains_key(e.check) => None,
                Some(first) => Some((*e, *first + e.hold)),
            })
            .filter(|(_, end)| elapsed < *end)
            .collect();
        if (env.interrupted)() {
            held.cut = ends
                .iter()
                .filter(|(e, _)| polled.passed_after.contains_key(e.check))
                .map(|(e, _)| e.check.clone())
                .collect();
            break;
        }
        let Some(next) = ends.iter().map(|(_, end)| *end - elapsed).min() else {
            break;
        };
        reading = ends.into_iter().map(|(e, _)| e).collect();
        tokio::time::sleep(POLL_INTERVAL.min(next)).await;
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
