//! `[lab] init = "systemd"` end to end: a lab host boots systemd with no failed unit, runs sshd
//! and Docker as a real server does, builds an image `FROM debian:12` and runs a container with
//! Docker, leaves the machine's kernel settings alone, and `kz lab down` leaves nothing behind.
//! Needs root, podman, runc and debootstrap, like tests/lab.rs; skips without.

#![allow(clippy::unwrap_used)]
// The test says why it skips and what it measured.
#![allow(clippy::print_stderr)]

mod support;

use std::time::Instant;

use support::{TestStack, lab};

const STACK: &str = r#"[stack]
name = "NAME"

[ssh]
user = "root"
connect_timeout = "5s"
command_timeout = "300s"

[lab]
init = "systemd"

[defaults]
container_runtime = "docker"

[hosts.app-01]
address = "192.0.2.41"
labels = { role = "app" }
"#;

const MODULE: &str = r#"[[image]]
name = "tiny"
on = { role = "app" }
tag = "kz-sdlab/tiny:1"
context = "tiny"

[[container]]
name = "sleeper"
on = { role = "app" }
image = "kz-sdlab/tiny:1"
network = "host"
command = ["sleep", "3600"]
depends_on = ["image.tiny"]

[[command]]
name = "units"
on = { role = "app" }
run = "systemctl is-active ssh docker"
"#;

/// Kernel settings that are the machine's, not the container's, which systemd's boot would raise
/// (pid_max by systemd-sysctl, the other two by PID 1 itself).
fn pid_max() -> String {
    ["kernel/pid_max", "fs/file-max", "fs/nr_open"]
        .iter()
        .map(|k| {
            std::fs::read_to_string(format!("/proc/sys/{k}"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_systemd_lab_host_runs_docker_like_a_real_server_and_goes_away_whole() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzsd{}", std::process::id());
    let s = TestStack::new(&name);
    s.write("stack.toml", &STACK.replace("NAME", &name));
    s.write("01_app.toml", MODULE);
    s.write("tiny/Dockerfile", "FROM debian:12\nRUN echo kz > /kz\n");
    let pid_max_before = pid_max();
    let _guard = lab::Guard(&s);

    let started = Instant::now();
    s.kz(&["lab", "up", "DIR"]).code(0).stdout_has("running");
    eprintln!("kz lab up took {:?}", started.elapsed());
    let (_, stats) = lab::podman(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        &format!("kzlab-{name}-app-01"),
    ]);
    eprintln!("memory after boot: {stats}");

    // systemd is PID 1 and booted clean; sshd and dockerd are its services.
    let host = |script: &str| lab::on_host(&name, "app-01", script);
    assert_eq!(host("cat /proc/1/comm").trim(), "systemd");
    let running = host("systemctl is-system-running --wait 2>/dev/null; true");
    assert_eq!(
        host("systemctl --failed --no-legend --plain").trim(),
        "",
        "{running}"
    );
    assert_eq!(running.trim(), "running");
    assert_eq!(
        host("systemctl is-active ssh docker kz-hostkeys"),
        "active\nactive\nactive\n"
    );
    // The services the sshd image preinstalls are not there: the stack installs its own.
    assert_eq!(
        host("command -v redis-server haproxy; dpkg -l redis-server 2>/dev/null | grep ^ii"),
        ""
    );
    assert_eq!(host("docker image inspect -f ok debian:12").trim(), "ok");

    s.kz(&["apply", "DIR", "--lab", "--yes"]).code(0);
    assert_eq!(
        host("docker ps --filter name=sleeper --format '{{.Names}} {{.Image}}'").trim(),
        "sleeper kz-sdlab/tiny:1"
    );
    assert_eq!(host("docker exec sleeper cat /kz").trim(), "kz");
    // A second plan finds nothing to do: the host reads back what was applied.
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);
    let (_, stats) = lab::podman(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        &format!("kzlab-{name}-app-01"),
    ]);
    eprintln!("memory with the container running: {stats}");
    assert_eq!(
        pid_max(),
        pid_max_before,
        "the lab host changed the machine's kernel"
    );

    // Down takes the host, its Docker storage volume and the network.
    let (_, volumes) = lab::podman(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}}={{.Destination}} {{end}}{{end}}",
        &format!("kzlab-{name}-app-01"),
    ]);
    assert!(volumes.contains("=/var/lib/docker"), "{volumes}");
    s.kz(&["lab", "down", "DIR"]).code(0);
    let label = format!("label=io.kz.lab.stack={name}");
    let (_, left) = lab::podman(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]);
    assert_eq!(left, "");
    let (_, nets) = lab::podman(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"]);
    assert_eq!(nets, "");
    for v in volumes.split_whitespace() {
        let volume = v.split('=').next().unwrap();
        assert!(
            !lab::podman(&["volume", "exists", volume]).0,
            "volume {v} outlived the lab"
        );
    }
}
