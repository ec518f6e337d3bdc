//! `kz lab` end to end, on real podman containers: up, apply over SSH, a paused host, down.
//! Needs root, podman, runc and debootstrap (`.ci/run` installs them); the first run builds the
//! base image (about a minute), later runs reuse it.

#![allow(clippy::unwrap_used)]
// The lab test reports its own timing (the issue bounds it at 5 minutes), and why it skips.
#![allow(clippy::print_stderr)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{TestStack, lab, read};

/// The lab stack of the repository, under a name of its own so that its containers and network
/// cannot meet those of another run.
fn lab_stack(name: &str) -> TestStack {
    let s = TestStack::new(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/lab");
    for f in [
        "stack.toml",
        "02_base_os.toml",
        "03_lb.toml",
        "04_redis_ha.toml",
    ] {
        let text = read(&src.join(f)).replace("name = \"lab\"", &format!("name = \"{name}\""));
        s.write(f, &text);
    }
    s
}

/// A file on a lab host, read with podman (not through kz).
fn remote(name: &str, host: &str, path: &str) -> String {
    lab::podman(&["exec", &format!("kzlab-{name}-{host}"), "cat", path]).1
}

#[test]
fn a_lab_is_made_applied_to_survives_a_frozen_host_and_leaves_nothing_behind() {
    if !lab::possible() {
        return;
    }
    let started = Instant::now();
    let name = format!("kzt{}", std::process::id());
    let s = lab_stack(&name);
    let _guard = lab::Guard(&s);

    let up = s.kz(&["lab", "up", "DIR"]);
    up.code(0)
        .stdout_has("redis-01")
        .stdout_has("redis-03")
        .stdout_has("running");
    eprintln!("lab up: {:.1}s", started.elapsed().as_secs_f64());
    let known = read(&s.path().join(".kz/lab/known_hosts"));
    assert_eq!(
        known.lines().count(),
        5,
        "one host key per lab host:\n{known}"
    );
    assert!(
        known.lines().all(|l| l.contains(" ssh-ed25519 ")),
        "{known}"
    );

    // The first apply converges all five hosts over SSH, as a user would run it.
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("Apply: 14 applied, 0 failed, 0 not attempted.");
    assert!(remote(&name, "redis-02", "/etc/motd").contains("redis-02: managed by kz"));
    let lab: serde_json::Value =
        serde_json::from_str(&read(&s.path().join(".kz/lab/lab.json"))).unwrap();
    let master = lab["hosts"]["redis-01"]["address"].as_str().unwrap();
    let (_, replication) = lab::podman(&[
        "exec",
        &format!("kzlab-{name}-redis-03"),
        "redis-cli",
        "info",
        "replication",
    ]);
    assert!(
        replication.contains(&format!("master_host:{master}")),
        "the replica follows the master at its lab address:\n{replication}"
    );
    // Lab state is the lab's own; the real state was never written.
    assert!(s.path().join(".kz/lab/state.json").is_file());
    assert!(!s.path().join(".kz/state.json").exists());

    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");

    // A frozen host: TCP connects, nothing answers. It fails within its connect timeout (5s);
    // the other four take the change (both motd files), and what depends on redis-02 waits.
    let motd = read(&s.path().join("02_base_os.toml")).replace("managed by kz", "managed by kz!");
    s.write("02_base_os.toml", &motd);
    s.kz(&["lab", "pause", "DIR", "redis-02"]).code(0);
    let t = Instant::now();
    let frozen = s.kz(&["apply", "DIR", "--lab", "--yes"]);
    let took = t.elapsed();
    frozen
        .code(1)
        .stdout_has("error: redis-02 (")
        .stdout_has("connect: timed out after 5s")
        .stdout_has("Unreachable hosts: redis-02")
        .stdout_has("Apply: 4 applied, 2 failed, 2 not attempted.");
    assert!(
        took < Duration::from_secs(45),
        "a frozen host must not hang the apply (took {took:?})"
    );
    assert!(remote(&name, "redis-01", "/etc/motd").contains("managed by kz!"));
    assert!(remote(&name, "redis-03", "/etc/motd").contains("managed by kz!"));
    s.kz(&["lab", "status", "DIR"]).code(0).stdout_has("paused");

    // Thawed, the next apply converges it, and the plan after is empty.
    s.kz(&["lab", "unpause", "DIR", "redis-02"]).code(0);
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("02_base_os.file.motd[redis-02]");
    assert!(remote(&name, "redis-02", "/etc/motd").contains("managed by kz!"));
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);

    // Another checkout of the same stack cannot take this lab over, nor take it down.
    let twin = lab_stack(&name);
    twin.kz(&["lab", "up", "DIR"])
        .code(1)
        .stderr_has("belongs to the lab of another directory");
    twin.kz(&["lab", "down", "DIR"])
        .code(0)
        .stdout_has("0 hosts");
    s.kz(&["lab", "status", "DIR"])
        .code(0)
        .stdout_has("running");

    // Down leaves no container, network, process or overlay behind.
    s.kz(&["lab", "down", "DIR"]).code(0).stdout_has("5 hosts");
    let filter = format!("label=io.kz.lab.stack={name}");
    let (_, left) = lab::podman(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
    assert_eq!(left, "", "containers left behind");
    let (exists, _) = lab::podman(&["network", "exists", &format!("kzlab-{name}")]);
    assert!(!exists, "network left behind");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines().any(|l| l.contains(&format!("kzlab-{name}"))),
        "processes left behind:\n{ps}"
    );
    assert!(!s.path().join(".kz/lab").exists());
    eprintln!("whole lab test: {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn a_lab_run_refuses_an_address_outside_the_lab_network() {
    // No container needed: the overlay alone is checked before anything connects.
    let s = lab_stack("kzguard");
    let lab = serde_json::json!({
        "stack": "kzguard",
        "network": "kzlab-kzguard",
        "subnet": "10.89.250.0/24",
        "hosts": {
            "redis-01": { "container": "kzlab-kzguard-redis-01", "address": "10.89.250.10" },
            "redis-02": { "container": "kzlab-kzguard-redis-02", "address": "10.0.0.11" },
            "redis-03": { "container": "kzlab-kzguard-redis-03", "address": "10.89.250.12" }
        }
    });
    s.write(".kz/lab/lab.json", &lab.to_string());
    s.kz(&["plan", "DIR", "--lab"])
        .code(1)
        .stderr_has("refusing to use the lab: host `redis-02` would be reached at 10.0.0.11, outside the lab network 10.89.250.0/24");
}

#[test]
fn without_a_lab_the_error_says_how_to_make_one() {
    let s = lab_stack("kznolab");
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(1)
        .stderr_has("no lab for this stack: run `kz lab up");
}

#[test]
fn lab_up_names_the_packages_it_misses() {
    let s = lab_stack("kzreq");
    let empty = tempfile::tempdir().unwrap();
    let mut c = s.command(&["lab", "up", "DIR"]);
    c.env("PATH", empty.path());
    let o = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "apt-get update && apt-get install -y podman runc debootstrap openssh-client"
        ),
        "{stderr}"
    );
}

#[test]
fn a_lab_run_refuses_a_value_that_uses_a_host_the_lab_lacks() {
    // A lab made without redis-01: HAProxy's server line names redis-01, which has no lab
    // host; its real address must not reach a lab host.
    let s = lab_stack("kzpart");
    let lab = serde_json::json!({
        "stack": "kzpart",
        "network": "kzlab-kzpart",
        "subnet": "10.89.251.0/24",
        "hosts": {
            "redis-02": { "container": "kzlab-kzpart-redis-02", "address": "10.89.251.11" },
            "redis-03": { "container": "kzlab-kzpart-redis-03", "address": "10.89.251.12" },
            "haproxy-01": { "container": "kzlab-kzpart-haproxy-01", "address": "10.89.251.21" },
            "haproxy-02": { "container": "kzlab-kzpart-haproxy-02", "address": "10.89.251.22" }
        }
    });
    s.write(".kz/lab/lab.json", &lab.to_string());
    s.kz(&["plan", "DIR", "--lab"])
        .code(1)
        .stderr_has("03_lb.haproxy.lb[haproxy-01] uses the address of host `redis-01`, which the lab has no host for");
}

#[test]
fn a_lab_network_widened_by_hand_is_refused() {
    let s = lab_stack("kzwide");
    let lab = serde_json::json!({
        "stack": "kzwide",
        "network": "kzlab-kzwide",
        "subnet": "0.0.0.0/0",
        "hosts": {
            "redis-01": { "container": "kzlab-kzwide-redis-01", "address": "91.98.128.153" },
            "redis-02": { "container": "kzlab-kzwide-redis-02", "address": "10.0.0.11" },
            "redis-03": { "container": "kzlab-kzwide-redis-03", "address": "10.0.0.12" }
        }
    });
    s.write(".kz/lab/lab.json", &lab.to_string());
    s.kz(&["plan", "DIR", "--lab"])
        .code(1)
        .stderr_has("refusing to use the lab: its network 0.0.0.0/0");
}
