//! `kz apply`: plan and apply a stack directory, or apply a saved plan; and the run of changes
//! that `kz destroy` shares.

use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use kz_engine::apply::{ApplyOptions, Interrupt, apply};
use kz_engine::ops::{
    BackendSink, Workspace, check_saved_plan, error_chain, plan_stack_dir, read_plan_file,
};
use kz_engine::plan::{Plan, PlanOptions, Runtime, plan};
use kz_engine::render::{render_plan, render_report};
use kz_state::{HeldLock, State};

use super::{
    CmdResult, FAILED, Failure, OK, Signals, Stop, confirmed, lock, open_for_plan, parallelism,
    read_state, runtime, runtime_with, unless_interrupted,
};
use crate::cli::ApplyArgs;
use crate::output::Shell;

/// A stack ready to be changed: its workspace, the state lock, and the state (a new one when
/// the stack was never applied).
pub(super) struct Applying {
    pub ws: Workspace,
    pub lock: Box<dyn HeldLock>,
    pub state: State,
    /// The state existed before this run.
    pub existed: bool,
}

pub(super) async fn apply_cmd(shell: &Shell, args: ApplyArgs, command_line: &str) -> CmdResult {
    if args.target.is_file() {
        return apply_saved(shell, &args, command_line).await;
    }
    let a = prepare(
        shell,
        &args.target,
        args.lab,
        command_line,
        args.lock.lock_timeout,
    )
    .await?;
    let par = parallelism(&a.ws, args.parallelism);
    let opts = PlanOptions {
        refresh: true,
        targets: args.targets.clone(),
        replace: args.replace.clone(),
        parallelism: par,
    };
    let (run_env, transports) = runtime_with(&a.ws);
    let p = unless_interrupted(
        &transports,
        plan(&a.ws.stack, a.existed.then_some(&a.state), &opts, &run_env),
    )
    .await?
    .map_err(|e| e.to_string())?;
    shell.out(&render_plan(&p, &shell.style));
    if !p.has_changes() {
        return Ok(if p.errors.is_empty() { OK } else { FAILED });
    }
    confirmed(shell, args.yes, "\nApply these changes?")?;
    Ok(execute(shell, a, &run_env, &p, par, command_line, "Apply").await)
}

/// What every apply starts with: the stack, all its secrets, the lock, then the state.
pub(super) async fn prepare(
    shell: &Shell,
    dir: &Path,
    lab: bool,
    command_line: &str,
    lock_timeout: Duration,
) -> Result<Applying, Failure> {
    let ws = open_for_plan(shell, dir, lab)?;
    ws.require_secrets()?;
    let guard = lock(shell, &ws, command_line, lock_timeout).await?;
    let (state, existed) = match read_state(&ws).await? {
        Some(s) => (s, true),
        None => (State::new(env!("CARGO_PKG_VERSION")), false),
    };
    Ok(Applying {
        ws,
        lock: guard,
        state,
        existed,
    })
}

async fn apply_saved(shell: &Shell, args: &ApplyArgs, command_line: &str) -> CmdResult {
    let path = &args.target;
    let p = read_plan_file(path)?;
    let dir = plan_stack_dir(&p, path)?;
    if args.lab && !p.lab {
        return Err(format!(
            "{} was not planned with --lab: it applies to the real hosts, not the lab",
            path.display()
        )
        .into());
    }
    // A saved plan carries its lab flag: a lab plan never reaches the real hosts.
    let a = prepare(shell, &dir, p.lab, command_line, args.lock.lock_timeout).await?;
    check_saved_plan(&p, &a.ws, &a.state, a.existed)?;
    shell.out(&render_plan(&p, &shell.style));
    if !p.has_changes() {
        return Ok(OK);
    }
    let par = parallelism(&a.ws, args.parallelism);
    let run_env = runtime(&a.ws);
    Ok(execute(shell, a, &run_env, &p, par, command_line, "Apply").await)
}

/// Runs a plan with live progress; Ctrl-C once stops starting new changes, twice (or SIGTERM)
/// aborts them.
pub(super) async fn execute(
    shell: &Shell,
    a: Applying,
    run_env: &Runtime,
    p: &Plan,
    parallelism: usize,
    command_line: &str,
    title: &str,
) -> i32 {
    let (tx, rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel_rx) = watch::channel(Interrupt::None);
    let interrupts = tokio::spawn(forward_interrupts(cancel_tx));
    let Applying {
        ws,
        lock,
        mut state,
        ..
    } = a;
    let mut sink = BackendSink::new(&ws, command_line, lock);
    let opts = ApplyOptions { parallelism };
    shell.outln("");
    let (report, ()) = tokio::join!(
        apply(
            &ws.stack, p, &mut state, &mut sink, &opts, run_env, tx, cancel_rx,
        ),
        shell.draw_progress(p.changes.len(), rx)
    );
    interrupts.abort();
    shell.out(&render_report(&report, &shell.style, title));
    if let Err(e) = sink.lock.release() {
        shell.warn(&format!(
            "could not clear the lock holder record: {}",
            error_chain(&e)
        ));
    }
    if report.success() { OK } else { FAILED }
}

/// Turns Ctrl-C into `Stop` then `Abort`, and SIGTERM into `Abort` at once: what runs is
/// aborted and what finished is recorded, so nothing is left running after kz exits.
async fn forward_interrupts(cancel: watch::Sender<Interrupt>) {
    let mut signals = Signals::new();
    while let Some(stop) = signals.next().await {
        let level = match (stop, *cancel.borrow()) {
            (Stop::Interrupt, Interrupt::None) => Interrupt::Stop,
            _ => Interrupt::Abort,
        };
        if cancel.send(level).is_err() {
            break;
        }
    }
}
