//! What a drill run records: each step with its start (from the drill's start), its duration, its
//! outcome and what was observed; `kz drill --json` prints it as it is.

use serde::{Deserialize, Serialize};

/// Version of the JSON journal (`kz drill --json`).
pub const DRILL_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// It could not be done (a command's host did not answer, podman failed).
    Error,
    /// Not run: an earlier step failed or the run was interrupted.
    Skipped,
    /// A measurement: recorded, neither passed nor failed.
    Recorded,
}

/// One step of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `steady`, `measure`, `fault`, `expect`, `restore`, `steady_again`.
    pub step: String,
    /// What it is about: a check's address, a measure's name, the fault's kind.
    pub name: String,
    /// When it started, from the start of the drill.
    pub start_ms: u64,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// What was observed (each failing check with its note, a command's output).
    pub observed: String,
    /// For an expectation that passed: the time from the end of the fault to the read that saw
    /// it pass ("a new master after 6.2 s"); for the steady state again: from the end of the
    /// restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
}

/// One drill's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRun {
    pub drill: String,
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub started: String,
    pub duration_ms: u64,
    pub passed: bool,
    /// The run was interrupted (Ctrl-C, SIGTERM): the restore still ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    pub steps: Vec<Step>,
}

/// Every drill of one `kz drill` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillJournal {
    pub format_version: u32,
    pub stack: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lab: bool,
    pub drills: Vec<DrillRun>,
    /// Drills not run because a module they use is skipped in the lab.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedDrill>,
    /// Every drill run passed.
    pub passed: bool,
}

/// A drill a lab run does not run: `skipped in the lab: REASON` of a module it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedDrill {
    pub name: String,
    pub module: String,
    pub reason: String,
}
