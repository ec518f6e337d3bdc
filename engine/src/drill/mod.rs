//! Drills: declared failover tests (`[[drill]]` in a module file). A drill is no infrastructure:
//! plan and apply never read it; `kz drill` runs it. `mod.rs` is the model the loader makes,
//! `run.rs` the runner deciding each step, `poll.rs` the polling of checks, `journal.rs` what a
//! run records.

mod journal;
mod poll;
mod run;

pub use journal::{DRILL_FORMAT_VERSION, DrillJournal, DrillRun, Outcome, SkippedDrill, Step};
pub use run::{DrillEnv, HostFaults, run_drill};

use std::time::Duration;

/// One `[[drill]]`, validated: every check it names is a gate of the stack, every host a host.
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    pub module: String,
    pub name: String,
    pub description: Option<String>,
    /// Checks (`MODULE.TYPE.NAME`) that must pass before the fault, and again after the restore.
    pub steady: Vec<String>,
    /// How long the steady state may take to hold before the fault.
    pub steady_within: Duration,
    pub fault: Fault,
    pub expect: Vec<Expectation>,
    /// How long the steady state may take to hold again after the restore.
    pub restore_within: Duration,
    /// Commands whose output is recorded before the fault and after the restore.
    pub measure: Vec<Measure>,
}

impl Drill {
    /// Why a lab run cannot run this drill: its own module, or a check it waits for (or that
    /// check's module), is skipped in the lab (`skipped in the lab: REASON`).
    pub fn lab_skip(&self, left_out: &crate::overlay::LeftOut) -> Option<String> {
        if let Some(m) = left_out.modules.iter().find(|m| m.module == self.module) {
            return Some(m.said());
        }
        self.steady
            .iter()
            .chain(self.expect.iter().map(|e| &e.check))
            .find_map(|c| left_out.skip_reason(c))
    }
}

/// What a drill breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `podman stop` of lab hosts; undone by a start.
    StopHost,
    /// `podman pause` of lab hosts (TCP connects, nothing answers); undone by unpause.
    PauseHost,
    /// Lab hosts cut off their network; undone by reconnecting them.
    CutHost,
    /// A command on each host of `hosts`, undone by `undo` (if given).
    Command,
    /// `podman kill` (or docker) of a container on each host; undone by a start.
    KillContainer,
    /// `podman stop` (or docker) of a container on each host; undone by a start.
    StopContainer,
    /// `systemctl stop` of a service on each host; undone by a start.
    StopService,
}

impl FaultKind {
    pub const NAMES: [&'static str; 7] = [
        "stop_host",
        "pause_host",
        "cut_host",
        "command",
        "kill_container",
        "stop_container",
        "stop_service",
    ];

    pub fn parse(s: &str) -> Option<FaultKind> {
        Some(match s {
            "stop_host" => FaultKind::StopHost,
            "pause_host" => FaultKind::PauseHost,
            "cut_host" => FaultKind::CutHost,
            "command" => FaultKind::Command,
            "kill_container" => FaultKind::KillContainer,
            "stop_container" => FaultKind::StopContainer,
            "stop_service" => FaultKind::StopService,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::StopHost => "stop_host",
            FaultKind::PauseHost => "pause_host",
            FaultKind::CutHost => "cut_host",
            FaultKind::Command => "command",
            FaultKind::KillContainer => "kill_container",
            FaultKind::StopContainer => "stop_container",
            FaultKind::StopService => "stop_service",
        }
    }

    /// Whether the fault acts on a host from outside (podman), which only a lab allows.
    pub fn is_host_level(self) -> bool {
        matches!(
            self,
            FaultKind::StopHost | FaultKind::PauseHost | FaultKind::CutHost
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub hosts: Vec<String>,
    /// The script run on each host for every kind but the host-level ones (written by the user
    /// for `command`, made by kz for containers and services); `undo` restores.
    pub command: Option<String>,
    pub undo: Option<String>,
    /// The deadline of the fault's and the undo's commands on each host.
    pub timeout: Duration,
}

/// A check that must pass within a time after the fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub check: String,
    pub within: Duration,
    /// Once it passes, how long it must go on passing (read every half second): "the other two
    /// *stay* Synced" holds through the cluster's reconfiguration, not only at its first read.
    pub hold: Duration,
}

/// A command whose output the journal records, before the fault and after the restore.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub name: String,
    pub host: String,
    pub command: String,
}
