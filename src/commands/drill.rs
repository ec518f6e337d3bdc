//! `kz drill`: runs declared failover tests one at a time under the state lock, and prints their
//! journal. A drill breaks things on purpose, so it runs on a lab (`--lab`), or on the stack's own
//! hosts only with `--i-know-this-is-production` and the stack's name typed on a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use kz_engine::drill::{
    DRILL_FORMAT_VERSION, Drill, DrillEnv, DrillJournal, FaultKind, HostFaults, SkippedDrill,
    run_drill,
};
use kz_engine::lab::LabOverlay;
use kz_engine::render::render_drills;

use super::{CmdResult, FAILED, Failure, OK, Signals, lock, open_for_plan, parallelism, runtime};
use crate::cli::DrillArgs;
use crate::lab::Fault;
use crate::output::Shell;

/// Host-level faults on lab hosts, through podman.
struct LabFaults(LabOverlay);

#[async_trait]
impl HostFaults for LabFaults {
    async fn inject(&self, host: &str, kind: FaultKind) -> Result<String, String> {
        let what = match kind {
            FaultKind::StopHost => Fault::Stop,
            FaultKind::PauseHost => Fault::Pause,
            FaultKind::CutHost => Fault::Cut,
            _ => return Err(format!("`{}` is no host-level fault", kind.name())),
        };
        crate::lab::host_fault(&self.0, host, what)
            .await
            .map(String::from)
    }

    async fn undo(&self, host: &str, kind: FaultKind) -> Result<String, String> {
        let what = match kind {
            FaultKind::StopHost => Fault::Start,
            FaultKind::PauseHost => Fault::Unpause,
            FaultKind::CutHost => Fault::Heal,
            _ => return Err(format!("`{}` is no host-level fault", kind.name())),
        };
        crate::lab::host_fault(&self.0, host, what)
            .await
            .map(String::from)
    }
}

/// Outside a lab no host-level fault is possible (the loader refuses to run them anyway).
struct NoHostFaults;

#[async_trait]
impl HostFaults for NoHostFaults {
    async fn inject(&self, _: &str, kind: FaultKind) -> Result<String, String> {
        Err(format!("a `{}` fault needs --lab", kind.name()))
    }

    async fn undo(&self, _: &str, kind: FaultKind) -> Result<String, String> {
        Err(format!("a `{}` fault needs --lab", kind.name()))
    }
}

pub(super) async fn drill_cmd(shell: &Shell, args: DrillArgs, command_line: &str) -> CmdResult {
    if !args.lab && !args.i_know_this_is_production {
        return Err(format!(
            "kz drill breaks things on purpose: run it on the lab (kz drill {d} --lab), or on the stack's own hosts with --i-know-this-is-production and the stack's name typed on a terminal (nothing was run)",
            d = args.dir.display()
        )
        .into());
    }
    let ws = open_for_plan(shell, &args.dir, args.lab)?;
    let (drills, skipped) = lab_skips(select(&ws.stack.drills, &args.names)?, &ws.stack.left_out);
    if !args.lab {
        refuse_host_faults(&drills)?;
        typed_confirmation(shell, &ws.stack.name, &drills)?;
    }
    let faults: Box<dyn HostFaults> = if args.lab {
        Box::new(LabFaults(LabOverlay::load(&args.dir)?))
    } else {
        Box::new(NoHostFaults)
    };
    // The state lock: no apply, and no other drill, while faults are in the hosts.
    let _guard = lock(shell, &ws, command_line, args.lock.lock_timeout).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let listener = listen(Arc::clone(&stop));
    let run_env = runtime(&ws);
    let interrupted = move || stop.load(Ordering::SeqCst);
    let env = DrillEnv {
        stack: &ws.stack,
        runtime: &run_env,
        parallelism: parallelism(&ws, args.parallelism),
        faults: faults.as_ref(),
        interrupted: &interrupted,
    };
    let mut runs = Vec::new();
    for d in &drills {
        if !args.json {
            shell.errln(&format!("Running drill {} ({})...", d.name, d.module));
        }
        runs.push(run_drill(&env, d).await);
        if interrupted() {
            break;
        }
    }
    listener.abort();
    let journal = DrillJournal {
        format_version: DRILL_FORMAT_VERSION,
        stack: ws.stack.name.clone(),
        lab: args.lab,
        passed: runs.len() == drills.len() && runs.iter().all(|r| r.passed),
        drills: runs,
        skipped,
    };
    if args.json {
        shell.outln(&serde_json::to_string_pretty(&journal).map_err(|e| e.to_string())?);
    } else {
        shell.out(&render_drills(&journal, &shell.style));
    }
    Ok(if journal.passed { OK } else { FAILED })
}

/// Ctrl-C and SIGTERM set `stop`: the drill under way skips to its restore, the rest are not run.
fn listen(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut signals = Signals::new();
        while signals.next().await.is_some() {
            stop.store(true, Ordering::SeqCst);
        }
    })
}

/// The drills named, in the stack's order, or every drill.
fn select(all: &[Drill], names: &[String]) -> Result<Vec<Drill>, Failure> {
    if all.is_empty() {
        return Err(
            "the stack declares no drill (see [[drill]] in docs/stack-format.md)"
                .to_string()
                .into(),
        );
    }
    for n in names {
        if !all.iter().any(|d| &d.name == n) {
            let known: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
            return Err(
                format!("no drill `{n}` in the stack (drills: {})", known.join(", ")).into(),
            );
        }
    }
    Ok(all
        .iter()
        .filter(|d| names.is_empty() || names.contains(&d.name))
        .cloned()
        .collect())
}

/// The drills a lab run can run, and those it cannot because a module they use is skipped in
/// the lab (outside the lab no module is skipped, so every drill runs).
fn lab_skips(
    drills: Vec<Drill>,
    skipped: &kz_engine::overlay::LeftOut,
) -> (Vec<Drill>, Vec<SkippedDrill>) {
    let mut run = Vec::new();
    let mut not_run = Vec::new();
    for d in drills {
        match d.lab_skip(skipped) {
            Some(reason) => not_run.push(SkippedDrill {
                name: d.name.clone(),
                module: d.module.clone(),
                reason,
            }),
            None => run.push(d),
        }
    }
    (run, not_run)
}

fn refuse_host_faults(drills: &[Drill]) -> Result<(), Failure> {
    match drills.iter().find(|d| d.fault.kind.is_host_level()) {
        Some(d) => Err(format!(
            "drill `{}` stops, pauses or cuts hosts (`{}`), which only a lab allows: run it with --lab (nothing was run)",
            d.name,
            d.fault.kind.name()
        )
        .into()),
        None => Ok(()),
    }
}

/// Production: the stack's name typed on a terminal; without a terminal, refused.
fn typed_confirmation(shell: &Shell, stack: &str, drills: &[Drill]) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(
            "refusing to run drills on the stack's own hosts without a terminal to type the stack's name on (nothing was run)"
                .to_string()
                .into(),
        );
    }
    let names: Vec<&str> = drills.iter().map(|d| d.name.as_str()).collect();
    // On standard error, so that `--json` output stays one document.
    shell.errln(&format!(
        "kz drill will break things on the hosts of stack `{stack}` (not a lab): {}.\n  Type the stack's name to go on:",
        names.join(", ")
    ));
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() == stack {
        Ok(())
    } else {
        shell.errln("Cancelled: nothing was run.");
        Err(Failure::Shown)
    }
}
