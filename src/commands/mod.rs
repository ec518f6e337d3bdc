//! One file per command (`plan.rs`, `apply.rs`, ...), each stringing engine operations together;
//! below them, the helpers they share: loading a stack, opening its state, taking the lock,
//! asking for confirmation. A command returns its exit code, or a [`Failure`] that [`run`]
//! prints once.

mod apply;
mod destroy;
mod drill;
mod lock;
mod plan;
mod state;
mod trust;
mod validate;
mod verify;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::CommandFactory;

use kz_engine::lab::LabOverlay;
use kz_engine::load::load_stack;
use kz_engine::model::Stack;
use kz_engine::ops::{Workspace, error_chain};
use kz_engine::overlay::HostOverlay;
use kz_engine::plan::Runtime;
use kz_state::{HeldLock, State, StateError};

use crate::backend::StateChoice;
use crate::cli::{Cli, Command};
use crate::output::Shell;

/// Exit codes: 0 success, 1 error, 2 changes present (`plan --detailed-exitcode`).
pub(crate) const OK: i32 = 0;
pub(crate) const FAILED: i32 = 1;
pub(crate) const CHANGES: i32 = 2;

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// What went wrong was already printed (diagnostics, a refusal, a report).
    Shown,
    /// A message still to print.
    Message(String),
}

impl Failure {
    /// Prints the message, if any, and gives the exit code.
    pub(crate) fn report(self, shell: &Shell) -> i32 {
        if let Failure::Message(m) = self {
            shell.error(&m);
        }
        FAILED
    }
}

impl From<String> for Failure {
    fn from(m: String) -> Failure {
        Failure::Message(m)
    }
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Failure {
        Failure::Message(error_chain(&e))
    }
}

/// A command's exit code, or why it failed.
pub(crate) type CmdResult = Result<i32, Failure>;

pub async fn run(cli: Cli, shell: Shell) -> i32 {
    let command_line: Vec<String> = std::env::args().collect();
    let command_line = command_line.join(" ");
    let result = match cli.command {
        Command::Validate { dir } => validate::validate(&shell, &dir),
        Command::Graph { dir } => validate::graph(&shell, &dir),
        Command::Plan(args) => plan::plan_cmd(&shell, args).await,
        Command::Apply(args) => apply::apply_cmd(&shell, args, &command_line).await,
        Command::Destroy(args) => destroy::destroy_cmd(&shell, args, &command_line).await,
        Command::Verify(args) => verify::verify_cmd(&shell, args).await,
        Command::Drill(args) => drill::drill_cmd(&shell, args, &command_line).await,
        Command::State(cmd) => state::run(&shell, cmd, &command_line).await,
        Command::ForceUnlock { dir } => lock::force_unlock(&shell, &dir).await,
        Command::Trust { dir, host, yes } => trust::trust(&shell, &dir, &host, yes).await,
        Command::Lab(cmd) => Ok(crate::lab::run(&shell, cmd).await),
        Command::Completions { shell: sh } => {
            let mut buf = Vec::new();
            clap_complete::generate(sh, &mut Cli::command(), "kz", &mut buf);
            shell.out(&String::from_utf8_lossy(&buf));
            Ok(OK)
        }
    };
    result.unwrap_or_else(|f| f.report(&shell))
}

/// Providers and transports for one run: the transports are cached, so the plan and the apply of
/// one command share each host's connection.
fn runtime(ws: &Workspace) -> Runtime {
    runtime_with(ws).0
}

/// The runtime, and its transports as such, to wait for their clean-ups after an interrupt.
fn runtime_with(ws: &Workspace) -> (Runtime, Arc<kz_providers::Transports>) {
    let transports = Arc::new(kz_providers::Transports::new(ws.stack.hosts.clone()));
    // A lab run's providers reach an API only through a stand-in here, so that neither the lab's
    // state (load balancers it recorded) nor a saved plan can make it change real ones.
    let providers = if ws.stack.left_out.under_overlay {
        kz_providers::lab_providers()
    } else {
        kz_providers::providers()
    };
    let runtime = Runtime {
        providers,
        transports: Arc::clone(&transports) as Arc<dyn kz_engine::provider::TransportFactory>,
    };
    (runtime, transports)
}

/// Runs `work` (a plan: reads only) unless Ctrl-C or SIGTERM comes first; then what it started
/// is stopped (local process groups killed as its futures drop, remote ones killed through their
/// SSH sessions) before kz exits, and nothing was changed.
async fn unless_interrupted<T>(
    transports: &kz_providers::Transports,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    let mut signals = Signals::new();
    let name = tokio::select! {
        out = work => return Ok(out),
        Some(stop) = signals.next() => match stop {
            Stop::Interrupt => "an interrupt",
            Stop::Terminate => "SIGTERM",
        },
    };
    transports.finish_all().await;
    Err(format!("stopped by {name}: the reads under way were ended; nothing was changed").into())
}

/// A signal that asks kz to stop.
pub(crate) enum Stop {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

/// Where kz learns of Ctrl-C and SIGTERM, for the plan's reads and for apply alike.
pub(crate) struct Signals {
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// The next signal; `None` when Ctrl-C cannot be listened to (then none will come).
    pub(crate) async fn next(&mut self) -> Option<Stop> {
        let term = async {
            match self.term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.ok().map(|()| Stop::Interrupt),
            Some(()) = term => Some(Stop::Terminate),
        }
    }
}

/// Loads a stack, printing every problem found; it needs no state backend.
pub(crate) fn load(shell: &Shell, dir: &Path) -> Result<Stack, Failure> {
    load_with(shell, dir, None)
}

/// Loads a stack, as its lab sees it when `lab` is given.
fn load_with(shell: &Shell, dir: &Path, overlay: Option<&HostOverlay>) -> Result<Stack, Failure> {
    let providers = kz_providers::providers();
    let loaded = match overlay {
        Some(o) => kz_engine::load::load_stack_with_overlay(dir, &providers, o),
        None => load_stack(dir, &providers),
    };
    let stack = match loaded {
        Ok(stack) => stack,
        Err(diags) => {
            for d in &diags.0 {
                shell.error(&d.to_string());
            }
            return Err(Failure::Shown);
        }
    };
    let short = stack.secrets.too_short();
    if !short.is_empty() {
        return Err(format!(
            "{} must hold at least {} characters: a shorter secret cannot be masked reliably in kz's output",
            short.join(", "),
            kz_engine::secrets::MIN_SECRET_LEN
        )
        .into());
    }
    let mut secrets = stack.secrets.values();
    // API tokens the providers read are masked too: a command that prints its environment must
    // not show them.
    for p in providers.all() {
        let insts: Vec<&kz_engine::model::Instance> = stack
            .instances
            .iter()
            .filter(|i| i.kind() == p.kind())
            .collect();
        if !insts.is_empty() {
            secrets.extend(
                p.secret_values(&insts)
                    .into_iter()
                    .filter(|v| v.len() >= kz_engine::secrets::MIN_SECRET_LEN),
            );
        }
    }
    shell.set_secrets(secrets);
    Ok(stack)
}

/// Loads a stack and opens its state backend.
pub(crate) fn open(shell: &Shell, dir: &Path) -> Result<Workspace, Failure> {
    open_in(shell, dir, false)
}

/// Loads a stack, points it at its lab when `lab` is set (`--lab`), and opens its state backend.
fn open_in(shell: &Shell, dir: &Path, lab: bool) -> Result<Workspace, Failure> {
    let lab_overlay = lab.then(|| LabOverlay::load(dir)).transpose()?;
    let mut overlay = lab_overlay
        .as_ref()
        .map(|o| o.host_overlay(dir))
        .transpose()?;
    if let Some(o) = overlay.as_mut() {
        o.keep_api = kz_providers::hcloud::stand_in_from_env();
        o.api_hint = "set KZ_HCLOUD_ENDPOINT to its loopback URL".into();
    }
    let stack = load_with(shell, dir, overlay.as_ref())?;
    if let Some(o) = &lab_overlay {
        o.check_stack(&stack)?;
    }
    let left_out = &stack.left_out;
    if !left_out.hosts.is_empty() {
        shell.warn(&format!(
            "lab: left out {} on {}, which the lab has no host for",
            count(left_out.instances, "resource instance"),
            left_out.hosts.join(", "),
        ));
    }
    let choice = if lab {
        StateChoice::Lab
    } else {
        StateChoice::Configured(stack.state.backend.clone())
    };
    let backend = crate::backend::open_backend(&stack, &choice)?;
    Ok(Workspace::new(stack, backend))
}

/// Like `open`, for commands that plan: refused while a rescue file from an earlier apply waits
/// to be pushed, since planning against the database would forget what that apply did.
fn open_for_plan(shell: &Shell, dir: &Path, lab: bool) -> Result<Workspace, Failure> {
    let ws = open_in(shell, dir, lab)?;
    let rescue = ws.rescue_path();
    if ws.backend.is_remote() && rescue.exists() {
        return Err(format!(
            "{} holds the state of an apply whose database writes failed; push it first (kz state push {} {}), or delete it if you know it is obsolete",
            rescue.display(),
            dir.display(),
            rescue.display()
        )
        .into());
    }
    Ok(ws)
}

/// The state of a workspace, if it has one, with entries of older address forms re-keyed.
async fn read_state(ws: &Workspace) -> Result<Option<State>, Failure> {
    Ok(ws.backend.read().await?.map(|mut s| {
        kz_engine::record::rekey_hostless(&mut s, &ws.stack);
        s
    }))
}

/// `1 host`, `2 hosts`.
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn parallelism(ws: &Workspace, flag: Option<usize>) -> usize {
    flag.or(ws.stack.parallelism).unwrap_or(10).max(1)
}

/// Takes the state lock, saying whom it waits for when it may wait.
pub(crate) async fn lock(
    shell: &Shell,
    ws: &Workspace,
    command: &str,
    timeout: Duration,
) -> Result<Box<dyn HeldLock>, Failure> {
    if !timeout.is_zero()
        && let Ok(Some(holder)) = ws.backend.lock_holder().await
    {
        let who = holder.to_string();
        shell.errln(&format!(
            "Waiting up to {} for the state lock held by {who}...",
            kz_engine::units::format_duration(timeout)
        ));
    }
    Ok(ws.lock(command, timeout).await?)
}

/// Goes on when the user agreed: `--yes`, or `yes` typed on a terminal.
pub(crate) fn confirmed(shell: &Shell, yes: bool, question: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    match shell.confirm(question) {
        Some(true) => Ok(()),
        Some(false) => {
            shell.errln("Cancelled: nothing was changed.");
            Err(Failure::Shown)
        }
        None => Err(
            "refusing to go on without --yes: there is no terminal to confirm on (nothing was changed)"
                .to_string()
                .into(),
        ),
    }
}
