//! `kz lab`: one disposable Debian host per stack host, as podman containers on a network of
//! their own, so a change can be tried before production. What the engine needs to use a lab
//! (the overlay in `DIR/.kz/lab/`) is in `kz_engine::lab`; this module makes and breaks the hosts.

mod hosts;
pub mod image;
mod nested;
pub mod podman;
mod select;
mod systemd;

use std::path::Path;
use std::time::Duration;

use kz_engine::lab::{LabOverlay, lab_dir};
use kz_engine::model::Stack;

use crate::cli::LabCommand;
use crate::output::Shell;
use podman::Podman;
use select::{only_skipped, select_hosts};

const OK: i32 = 0;
const FAILED: i32 = 1;

/// The label every lab container and network carries, valued with the stack name.
pub const STACK_LABEL: &str = "io.kz.lab.stack";

pub fn network_name(stack: &str) -> String {
    format!("kzlab-{stack}")
}

pub fn container_name(stack: &str, host: &str) -> String {
    format!("kzlab-{stack}-{host}")
}

pub async fn run(shell: &Shell, cmd: LabCommand) -> i32 {
    let result = match cmd {
        LabCommand::Up {
            dir,
            hosts,
            module,
            privileged,
        } => up(shell, &dir, &hosts, module.as_deref(), privileged).await,
        LabCommand::Down { dir } => down(shell, &dir).await,
        LabCommand::Status { dir } => status(shell, &dir).await,
        LabCommand::Stop { dir, host } => fault(shell, &dir, &host, Fault::Stop).await,
        LabCommand::Start { dir, host } => fault(shell, &dir, &host, Fault::Start).await,
        LabCommand::Pause { dir, host } => fault(shell, &dir, &host, Fault::Pause).await,
        LabCommand::Unpause { dir, host } => fault(shell, &dir, &host, Fault::Unpause).await,
        LabCommand::Cut { dir, host } => fault(shell, &dir, &host, Fault::Cut).await,
        LabCommand::Heal { dir, host } => fault(shell, &dir, &host, Fault::Heal).await,
        LabCommand::LoadImage {
            dir,
            image_tar,
            hosts,
        } => load_image(shell, &dir, image_tar.as_deref(), &hosts).await,
    };
    match result {
        Ok(()) => OK,
        Err(e) => {
            shell.error(&e);
            FAILED
        }
    }
}

/// What `kz lab` needs on this machine, with the one command that installs what is missing.
fn check_requirements() -> Result<(), String> {
    let tools = [
        ("podman", "podman"),
        ("runc", "runc"),
        ("debootstrap", "debootstrap"),
        ("ssh-keygen", "openssh-client"),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "kz lab needs {} (missing); install with:\n  apt-get update && apt-get install -y {}",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    if !is_root() {
        problems.push(
            "kz lab must run as root (podman networks with their own addresses and debootstrap need it)"
                .to_string(),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(program);
            p.is_file()
                && std::fs::metadata(&p).is_ok_and(|m| {
                    std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
        })
    })
}

/// Whether this process runs as root, read from /proc (the crate allows no `unsafe` for geteuid).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

fn podman() -> Result<Podman, String> {
    Podman::new(&image::cache_dir().join("containers.conf"))
}

fn load_stack(shell: &Shell, dir: &Path) -> Result<Stack, String> {
    crate::commands::load(shell, dir).map_err(|f| match f {
        crate::commands::Failure::Message(m) => m,
        crate::commands::Failure::Shown => "the stack has errors (above)".to_string(),
    })
}

async fn up(
    shell: &Shell,
    dir: &Path,
    wanted: &[String],
    module: Option<&str>,
    privileged: bool,
) -> Result<(), String> {
    check_requirements()?;
    let stack = load_stack(shell, dir)?;
    let mut selected = select_hosts(&stack, wanted, module)?;
    if wanted.is_empty() && module.is_none() {
        let out = only_skipped(&stack);
        if !out.is_empty() {
            selected.retain(|h| !out.contains(h));
            shell.errln(&format!(
                "lab: left out {} only skipped modules use: {}",
                crate::commands::count(out.len(), "host"),
                out.join(", ")
            ));
        }
    }
    let podman = podman()?;
    if !image::present(&podman).await {
        image::build(&podman, &|m| shell.errln(&format!("lab: {m}"))).await?;
    }
    if stack.lab.init == kz_engine::model::LabInit::Systemd && !systemd::present(&podman).await {
        systemd::build(&podman, &|m| shell.errln(&format!("lab: {m}"))).await?;
    }
    let overlay = hosts::up(shell, &podman, &stack, &selected, privileged).await?;
    print_status(shell, &overlay, &hosts::states(&podman, &overlay).await);
    shell.outln(&format!(
        "\nNext: kz plan {d} --lab, then kz apply {d} --lab --yes. Remove it with: kz lab down {d}",
        d = dir.display()
    ));
    Ok(())
}

async fn down(shell: &Shell, dir: &Path) -> Result<(), String> {
    // The stack name says which containers are the lab's; from the overlay when the stack no
    // longer loads.
    let name = match LabOverlay::load(dir) {
        Ok(o) => o.stack,
        Err(_) => load_stack(shell, dir)?.name,
    };
    let podman = podman()?;
    let (removed, network) = hosts::down(&podman, &name, dir).await?;
    let path = lab_dir(dir);
    if path.exists() {
        std::fs::remove_dir_all(&path)
            .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    }
    shell.outln(&format!(
        "Removed the lab of stack `{name}`: {}, {}and {}.",
        crate::commands::count(removed, "host"),
        if network {
            format!("network {}, ", network_name(&name))
        } else {
            String::new()
        },
        path.display()
    ));
    Ok(())
}

async fn status(shell: &Shell, dir: &Path) -> Result<(), String> {
    let overlay = LabOverlay::load(dir)?;
    let podman = podman()?;
    print_status(shell, &overlay, &hosts::states(&podman, &overlay).await);
    Ok(())
}

fn print_status(shell: &Shell, overlay: &LabOverlay, states: &[(String, String)]) {
    let width = overlay
        .hosts
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "Lab of stack `{}` on network {} ({}):\n{:width$}  {:15}  STATE\n",
        overlay.stack, overlay.network, overlay.subnet, "HOST", "ADDRESS"
    );
    for (name, h) in &overlay.hosts {
        let state = states
            .iter()
            .find(|(n, _)| n == name)
            .map_or("missing", |(_, s)| s.as_str());
        out.push_str(&format!("{name:width$}  {:15}  {state}\n", h.address));
    }
    shell.out(&out);
}

/// What `kz lab stop|start|pause|unpause|cut|heal` (and a drill's host-level fault) does to a host.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    Stop,
    Start,
    Pause,
    Unpause,
    Cut,
    Heal,
}

async fn fault(shell: &Shell, dir: &Path, host: &str, what: Fault) -> Result<(), String> {
    let overlay = LabOverlay::load(dir)?;
    let done = host_fault(&overlay, host, what).await?;
    shell.outln(&format!(
        "Lab host {host} ({}): {done}.",
        overlay.hosts[host].address
    ));
    Ok(())
}

/// Does `what` to one lab host through podman; says what was done.
pub(crate) async fn host_fault(
    overlay: &LabOverlay,
    host: &str,
    what: Fault,
) -> Result<&'static str, String> {
    let lab = overlay.hosts.get(host).ok_or_else(|| {
        format!(
            "no lab host `{host}`: the lab has {}",
            overlay.hosts.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let podman = podman()?;
    let c = lab.container.as_str();
    let net = overlay.network.as_str();
    Ok(match what {
        Fault::Stop => {
            podman.run(&["stop", "-t", "2", c]).await?;
            "stopped"
        }
        Fault::Start => {
            podman.run(&["start", c]).await?;
            hosts::wait_for_ssh(&lab.address).await?;
            "started"
        }
        Fault::Pause => {
            podman.run(&["pause", c]).await?;
            "paused (TCP connects, nothing answers)"
        }
        Fault::Unpause => {
            podman.run(&["unpause", c]).await?;
            "unpaused"
        }
        Fault::Cut => {
            podman.run(&["network", "disconnect", net, c]).await?;
            "cut off the lab network"
        }
        Fault::Heal => {
            podman
                .run(&["network", "connect", "--ip", &lab.address, net, c])
                .await?;
            "back on the lab network"
        }
    })
}

async fn load_image(
    shell: &Shell,
    dir: &Path,
    tar: Option<&Path>,
    wanted: &[String],
) -> Result<(), String> {
    let overlay = LabOverlay::load(dir)?;
    let podman = podman()?;
    let targets: Vec<&String> = if wanted.is_empty() {
        overlay.hosts.keys().collect()
    } else {
        for w in wanted {
            if !overlay.hosts.contains_key(w) {
                return Err(format!("no lab host `{w}`"));
            }
        }
        wanted.iter().collect()
    };
    // Without a tarball, the lab's own base image, saved once in the lab's cache (`kz lab up`
    // loads the same archive into hosts that run containers).
    let tar = match tar {
        Some(t) => {
            if !t.is_file() {
                return Err(format!("{}: no such image tarball", t.display()));
            }
            t.to_path_buf()
        }
        None => image::save(&podman).await?,
    };
    for host in targets {
        let lab = &overlay.hosts[host];
        let loaded = hosts::load_image(&podman, &lab.container, &tar).await;
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                let hint = if e.contains("overlay") || e.contains("privileged") {
                    format!(
                        "\n  nested podman needs privileged lab hosts: kz lab down {d} && kz lab up {d} --privileged",
                        d = dir.display()
                    )
                } else {
                    String::new()
                };
                return Err(format!("{host}: load-image: {e}{hint}"));
            }
        };
        shell.outln(&format!("Lab host {host}: loaded {loaded}"));
    }
    Ok(())
}

/// Runs a tool (debootstrap, tar, ssh-keygen) under a deadline; an error carries the end of its
/// output.
pub(crate) async fn run_tool(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<(), String> {
    // In a process group of its own, so that a deadline ends what it started too (debootstrap
    // runs dpkg and maintainer scripts in the chroot).
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id();
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(|e| format!("cannot run {program}: {e}"))?,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
            return Err(format!(
                "{program} took longer than {}",
                kz_engine::units::format_duration(timeout)
            ));
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    Err(format!(
        "{program} failed ({}):\n{}",
        out.status,
        lines[lines.len().saturating_sub(15)..].join("\n")
    ))
}
