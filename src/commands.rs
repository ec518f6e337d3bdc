//! One function per command: each strings engine operations together and returns the exit code.

use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;
use tokio::sync::{mpsc, watch};

use kz_engine::apply::Interrupt;
use kz_engine::apply::{ApplyOptions, apply};
use kz_engine::lab::LabOverlay;
use kz_engine::load::load_stack;
use kz_engine::model::Stack;
use kz_engine::ops::{
    BackendSink, Workspace, check_saved_plan, destroy_plan, error_chain, plan_stack_dir,
    read_plan_file, write_plan_file,
};
use kz_engine::plan::{Plan, PlanOptions, Runtime, plan};
use kz_engine::render::{render_plan, render_report};
use kz_state::{HeldLock, State, StateError};

use crate::cli::{ApplyArgs, Cli, Command, DestroyArgs, PlanArgs};
use crate::output::Shell;

/// Exit codes: 0 success, 1 error, 2 changes present (`plan --detailed-exitcode`).
const OK: i32 = 0;
const FAILED: i32 = 1;
const CHANGES: i32 = 2;

pub async fn run(cli: Cli, shell: Shell) -> i32 {
    let command_line: Vec<String> = std::env::args().collect();
    let command_line = command_line.join(" ");
    match cli.command {
        Command::Validate { dir } => validate(&shell, &dir),
        Command::Plan(args) => plan_cmd(&shell, args).await,
        Command::Apply(args) => apply_cmd(&shell, args, &command_line).await,
        Command::Destroy(args) => destroy_cmd(&shell, args, &command_line).await,
        Command::Graph { dir } => match load(&shell, &dir) {
            Some(stack) => {
                shell.out(&kz_engine::graph::to_dot(&stack.instances, &stack.modules));
                OK
            }
            None => FAILED,
        },
        Command::State(cmd) => crate::state_commands::run(&shell, cmd, &command_line).await,
        Command::ForceUnlock { dir } => force_unlock(&shell, &dir).await,
        Command::Trust { dir, host, yes } => trust(&shell, &dir, &host, yes).await,
        Command::Lab(cmd) => crate::lab::run(&shell, cmd).await,
        Command::Completions { shell: sh } => {
            let mut buf = Vec::new();
            clap_complete::generate(sh, &mut Cli::command(), "kz", &mut buf);
            shell.out(&String::from_utf8_lossy(&buf));
            OK
        }
    }
}

/// Providers and transports for one run: the transports are cached, so the plan and the apply of
/// one command share each host's connection.
fn runtime(ws: &Workspace) -> Runtime {
    Runtime {
        providers: kz_providers::providers(),
        transports: std::sync::Arc::new(kz_providers::Transports::new(ws.stack.hosts.clone())),
    }
}

/// Loads a stack, printing every problem found; it needs no state backend.
pub(crate) fn load(shell: &Shell, dir: &Path) -> Option<Stack> {
    load_with(shell, dir, None)
}

/// Loads a stack, as its lab sees it when `lab` is given.
fn load_with(shell: &Shell, dir: &Path, lab: Option<&LabOverlay>) -> Option<Stack> {
    let providers = kz_providers::providers();
    let loaded = match lab {
        Some(l) => kz_engine::load::load_stack_in_lab(dir, &providers, l),
        None => load_stack(dir, &providers),
    };
    match loaded {
        Ok(stack) => {
            let short = stack.secrets.too_short();
            if !short.is_empty() {
                shell.error(&format!(
                    "{} must hold at least {} characters: a shorter secret cannot be masked reliably in kz's output",
                    short.join(", "),
                    kz_engine::secrets::MIN_SECRET_LEN
                ));
                return None;
            }
            let mut secrets = stack.secrets.values();
            // API tokens the providers read are masked too: a command that prints its
            // environment must not show them.
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
            Some(stack)
        }
        Err(diags) => {
            for d in &diags.0 {
                shell.error(&d.to_string());
            }
            None
        }
    }
}

/// Loads a stack and opens its state backend.
pub(crate) fn open(shell: &Shell, dir: &Path) -> Option<Workspace> {
    open_in(shell, dir, false)
}

/// Loads a stack, points it at its lab when `lab` is set (`--lab`), and opens its state backend.
fn open_in(shell: &Shell, dir: &Path, lab: bool) -> Option<Workspace> {
    let overlay = match lab.then(|| LabOverlay::load(dir)).transpose() {
        Ok(o) => o,
        Err(e) => {
            shell.error(&e);
            return None;
        }
    };
    let mut stack = load_with(shell, dir, overlay.as_ref())?;
    if let Some(overlay) = &overlay {
        let left_out = overlay.apply_to(&mut stack);
        match left_out {
            Ok(l) if l.hosts.is_empty() => {}
            Ok(l) => shell.warn(&format!(
                "lab: left out {} on {}, which the lab has no host for",
                count(l.instances, "resource instance"),
                l.hosts.join(", "),
            )),
            Err(e) => {
                shell.error(&e);
                return None;
            }
        }
    }
    match crate::backend::open_backend(&stack, &stack.state.backend) {
        Ok(backend) => Some(Workspace::new(stack, backend)),
        Err(e) => {
            shell.error(&e);
            None
        }
    }
}

/// Like `open`, for commands that plan: refused while a rescue file from an earlier apply waits
/// to be pushed, since planning against the database would forget what that apply did.
fn open_for_plan(shell: &Shell, dir: &Path, lab: bool) -> Option<Workspace> {
    let ws = open_in(shell, dir, lab)?;
    let rescue = ws.rescue_path();
    if ws.backend.is_remote() && rescue.exists() {
        shell.error(&format!(
            "{} holds the state of an apply whose database writes failed; push it first (kz state push {} {}), or delete it if you know it is obsolete",
            rescue.display(),
            dir.display(),
            rescue.display()
        ));
        return None;
    }
    Some(ws)
}

pub(crate) fn state_error(shell: &Shell, e: &StateError) -> i32 {
    shell.error(&error_chain(e));
    FAILED
}

fn validate(shell: &Shell, dir: &Path) -> i32 {
    let Some(s) = load(shell, dir) else {
        return FAILED;
    };
    let hosts = s.hosts.len();
    shell.outln(&format!(
        "Stack `{}` is valid: {}, {}, {}.",
        s.name,
        count(hosts, "host"),
        count(s.modules.len(), "module"),
        count(s.instances.len(), "resource instance"),
    ));
    OK
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

async fn plan_cmd(shell: &Shell, args: PlanArgs) -> i32 {
    let Some(ws) = open_for_plan(shell, &args.dir, args.lab) else {
        return FAILED;
    };
    if args.out.is_some()
        && let Err(e) = ws.require_secrets()
    {
        shell.error(&e.replace("refusing to apply", "refusing to save a plan"));
        return FAILED;
    }
    let state = match ws.backend.read().await {
        Ok(s) => s.map(|mut s| {
            kz_engine::record::rekey_hostless(&mut s, &ws.stack);
            s
        }),
        Err(e) => return state_error(shell, &e),
    };
    let opts = PlanOptions {
        refresh: args.refresh,
        targets: args.targets,
        replace: args.replace,
        parallelism: parallelism(&ws, args.parallelism),
    };
    let mut p = match plan(&ws.stack, state.as_ref(), &opts, &runtime(&ws)).await {
        Ok(p) => p,
        Err(e) => {
            shell.error(&e.to_string());
            return FAILED;
        }
    };
    if let Some(out) = &args.out {
        let dir = std::fs::canonicalize(&ws.stack.dir).unwrap_or_else(|_| ws.stack.dir.clone());
        p.stack_dir = Some(dir.to_string_lossy().into_owned());
        p.secrets_digest = Some(ws.secrets_digest(&kz_engine::random_hex(16)));
        p.lab = args.lab;
        if let Err(e) = write_plan_file(out, &p) {
            shell.error(&e);
            return FAILED;
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&p) {
            Ok(j) => shell.outln(&j),
            Err(e) => {
                shell.error(&e.to_string());
                return FAILED;
            }
        }
    } else {
        shell.out(&render_plan(&p, &shell.style));
        if let Some(out) = &args.out {
            shell.outln(&format!(
                "\nSaved the plan to {}; apply it with: kz apply {}",
                out.display(),
                out.display()
            ));
        }
    }
    if !p.errors.is_empty() {
        FAILED
    } else if args.detailed_exitcode && p.has_changes() {
        CHANGES
    } else {
        OK
    }
}

pub(crate) async fn lock(
    shell: &Shell,
    ws: &Workspace,
    command: &str,
    timeout: Duration,
) -> Option<Box<dyn HeldLock>> {
    if !timeout.is_zero()
        && let Ok(Some(holder)) = ws.backend.lock_holder().await
    {
        let who = holder.map_or_else(|| "another process".to_string(), |h| h.to_string());
        shell.errln(&format!(
            "Waiting up to {} for the state lock held by {who}...",
            kz_engine::units::format_duration(timeout)
        ));
    }
    match ws.lock(command, timeout).await {
        Ok(l) => Some(l),
        Err(e) => {
            state_error(shell, &e);
            None
        }
    }
}

/// Whether the user agreed to go on: `--yes`, or `yes` typed on a terminal.
pub(crate) fn confirmed(shell: &Shell, yes: bool, question: &str) -> bool {
    if yes {
        return true;
    }
    match shell.confirm(question) {
        Some(true) => true,
        Some(false) => {
            shell.errln("Cancelled: nothing was changed.");
            false
        }
        None => {
            shell.error("refusing to go on without --yes: there is no terminal to confirm on (nothing was changed)");
            false
        }
    }
}

async fn apply_cmd(shell: &Shell, args: ApplyArgs, command_line: &str) -> i32 {
    if args.target.is_file() {
        return apply_saved(shell, &args, command_line).await;
    }
    let Some((ws, guard, mut state, exists)) = prepare_apply(
        shell,
        &args.target,
        args.lab,
        command_line,
        args.lock.lock_timeout,
    )
    .await
    else {
        return FAILED;
    };
    let par = parallelism(&ws, args.parallelism);
    let opts = PlanOptions {
        refresh: true,
        targets: args.targets.clone(),
        replace: args.replace.clone(),
        parallelism: par,
    };
    let run_env = runtime(&ws);
    let p = match plan(&ws.stack, exists.then_some(&state), &opts, &run_env).await {
        Ok(p) => p,
        Err(e) => {
            shell.error(&e.to_string());
            return FAILED;
        }
    };
    shell.out(&render_plan(&p, &shell.style));
    if !p.has_changes() {
        return if p.errors.is_empty() { OK } else { FAILED };
    }
    if !confirmed(shell, args.yes, "\nApply these changes?") {
        return FAILED;
    }
    execute(
        shell,
        &ws,
        &run_env,
        &p,
        &mut state,
        par,
        guard,
        command_line,
    )
    .await
}

/// What every apply starts with: the stack, all its secrets, the lock, then the state (a new one
/// when the stack was never applied; the flag says whether it existed).
async fn prepare_apply(
    shell: &Shell,
    dir: &Path,
    lab: bool,
    command_line: &str,
    lock_timeout: Duration,
) -> Option<(Workspace, Box<dyn HeldLock>, State, bool)> {
    let ws = open_for_plan(shell, dir, lab)?;
    if let Err(e) = ws.require_secrets() {
        shell.error(&e);
        return None;
    }
    let guard = lock(shell, &ws, command_line, lock_timeout).await?;
    match ws.backend.read().await {
        Ok(Some(mut s)) => {
            kz_engine::record::rekey_hostless(&mut s, &ws.stack);
            Some((ws, guard, s, true))
        }
        Ok(None) => Some((ws, guard, State::new(env!("CARGO_PKG_VERSION")), false)),
        Err(e) => {
            state_error(shell, &e);
            None
        }
    }
}

async fn apply_saved(shell: &Shell, args: &ApplyArgs, command_line: &str) -> i32 {
    let path = &args.target;
    let saved = match read_plan_file(path).and_then(|p| plan_stack_dir(&p, path).map(|d| (p, d))) {
        Ok(x) => x,
        Err(e) => {
            shell.error(&e);
            return FAILED;
        }
    };
    let (p, dir) = saved;
    if args.lab && !p.lab {
        shell.error(&format!(
            "{} was not planned with --lab: it applies to the real hosts, not the lab",
            path.display()
        ));
        return FAILED;
    }
    // A saved plan carries its lab flag: a lab plan never reaches the real hosts.
    let Some((ws, guard, mut state, exists)) =
        prepare_apply(shell, &dir, p.lab, command_line, args.lock.lock_timeout).await
    else {
        return FAILED;
    };
    if let Err(e) = check_saved_plan(&p, &ws, &state, exists) {
        shell.error(&e);
        return FAILED;
    }
    shell.out(&render_plan(&p, &shell.style));
    if !p.has_changes() {
        return OK;
    }
    let par = parallelism(&ws, args.parallelism);
    execute(
        shell,
        &ws,
        &runtime(&ws),
        &p,
        &mut state,
        par,
        guard,
        command_line,
    )
    .await
}

async fn destroy_cmd(shell: &Shell, args: DestroyArgs, command_line: &str) -> i32 {
    let Some(ws) = open_for_plan(shell, &args.dir, args.lab) else {
        return FAILED;
    };
    let Some(guard) = lock(shell, &ws, command_line, args.lock.lock_timeout).await else {
        return FAILED;
    };
    let mut state = match ws.backend.read().await {
        Ok(Some(s)) => s,
        Ok(None) => {
            shell.outln("Nothing to destroy: this stack has no state.");
            return OK;
        }
        Err(e) => return state_error(shell, &e),
    };
    let p = destroy_plan(&ws, &state, &args.targets);
    shell.out(&render_plan(&p, &shell.style));
    if !p.has_changes() {
        return OK;
    }
    if !confirmed(
        shell,
        args.yes,
        "\nDestroy these resources? They are deleted from the hosts.",
    ) {
        return FAILED;
    }
    let par = parallelism(&ws, args.parallelism);
    execute(
        shell,
        &ws,
        &runtime(&ws),
        &p,
        &mut state,
        par,
        guard,
        command_line,
    )
    .await
}

/// Runs a plan with live progress; Ctrl-C once stops starting new changes, twice aborts them.
#[allow(clippy::too_many_arguments)]
async fn execute(
    shell: &Shell,
    ws: &Workspace,
    run_env: &Runtime,
    p: &Plan,
    state: &mut State,
    parallelism: usize,
    guard: Box<dyn HeldLock>,
    command_line: &str,
) -> i32 {
    let (tx, rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel_rx) = watch::channel(Interrupt::None);
    let interrupts = tokio::spawn(async move {
        // SIGTERM acts like a second Ctrl-C: what runs is aborted and what finished is recorded,
        // so nothing is left running after kz exits.
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let level = tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    if r.is_err() {
                        break;
                    }
                    match *cancel_tx.borrow() {
                        Interrupt::None => Interrupt::Stop,
                        _ => Interrupt::Abort,
                    }
                }
                Some(()) = async {
                    match term.as_mut() {
                        Some(t) => t.recv().await,
                        None => std::future::pending().await,
                    }
                } => Interrupt::Abort,
            };
            if cancel_tx.send(level).is_err() {
                break;
            }
        }
    });
    let mut sink = BackendSink::new(ws, command_line, guard);
    shell.outln("");
    let (report, ()) = tokio::join!(
        async {
            apply(
                &ws.stack,
                p,
                state,
                &mut sink,
                &ApplyOptions { parallelism },
                run_env,
                tx,
                cancel_rx,
            )
            .await
        },
        shell.draw_progress(p.changes.len(), rx)
    );
    interrupts.abort();
    shell.out(&render_report(&report, &shell.style));
    if let Err(e) = sink.lock.release() {
        shell.warn(&format!(
            "could not clear the lock holder record: {}",
            error_chain(&e)
        ));
    }
    if report.success() { OK } else { FAILED }
}

async fn force_unlock(shell: &Shell, dir: &Path) -> i32 {
    let Some(ws) = open(shell, dir) else {
        return FAILED;
    };
    match ws.backend.lock_holder().await {
        Ok(None) => {
            shell.outln("The state is not locked.");
            OK
        }
        Ok(Some(holder)) => match ws.backend.force_unlock().await {
            Ok(_) => {
                let who =
                    holder.map_or_else(|| "an unknown process".to_string(), |h| h.to_string());
                shell.outln(&format!(
                    "Broke the lock held by {who}. If that process is still running, stop it: it no longer excludes others."
                ));
                OK
            }
            Err(e) => state_error(shell, &e),
        },
        Err(e) => state_error(shell, &e),
    }
}

/// `kz trust`: show the key a host presents and record it after confirmation. A key that differs
/// from the recorded one is never replaced here: the user removes the old line knowingly.
async fn trust(shell: &Shell, dir: &Path, host_name: &str, yes: bool) -> i32 {
    use kz_providers::ssh::known_hosts::{Verdict, check, fingerprint, host_pattern, learn};
    let Some(ws) = open(shell, dir) else {
        return FAILED;
    };
    let Some(host) = ws.stack.hosts.get(host_name) else {
        shell.error(&format!("unknown host `{host_name}` (see stack.toml)"));
        return FAILED;
    };
    if host.transport != kz_engine::model::TransportKind::Ssh {
        shell.error(&format!(
            "host `{host_name}` is reached without SSH: it has no host key to trust"
        ));
        return FAILED;
    }
    let transports = kz_providers::Transports::new(ws.stack.hosts.clone());
    let t = match transports.ssh(host) {
        Ok(t) => t,
        Err(e) => {
            shell.error(&format!("{} ({}): {e}", host.name, host.address));
            return FAILED;
        }
    };
    let key = match t.fetch_host_key().await {
        Ok(k) => k,
        Err(e) => {
            shell.error(&format!("{} ({}): {e}", host.name, host.address));
            return FAILED;
        }
    };
    let path = t.known_hosts();
    let pattern = host_pattern(&host.address, host.ssh.port);
    let fp = fingerprint(&key);
    shell.outln(&format!(
        "{} ({pattern}) presents this {} key:\n  {fp}",
        host.name,
        key.algorithm().as_str()
    ));
    match check(&path, &host.address, host.ssh.port, &key) {
        Ok(Verdict::Known) => {
            shell.outln(&format!("It is already trusted in {}.", path.display()));
            OK
        }
        Ok(Verdict::Changed { line }) => {
            shell.error(&format!(
                "{}:{line} records a DIFFERENT key for {pattern}. If the host was rebuilt, delete that line and run kz trust again; otherwise this may be an attack.",
                path.display()
            ));
            FAILED
        }
        Ok(Verdict::Unknown) => {
            if !confirmed(shell, yes, &format!("\nRecord it in {}?", path.display())) {
                return FAILED;
            }
            match learn(&path, &host.address, host.ssh.port, &key) {
                Ok(()) => {
                    shell.outln(&format!(
                        "Trusted: recorded {pattern} in {}.",
                        path.display()
                    ));
                    OK
                }
                Err(e) => {
                    shell.error(&e);
                    FAILED
                }
            }
        }
        Err(e) => {
            shell.error(&e);
            FAILED
        }
    }
}
