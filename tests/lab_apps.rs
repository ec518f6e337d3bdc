//! `stacks/lab-apps` on two lab hosts, as a user would run it: module 2 (packages, UFW with SSH
//! kept open, an sshd drop-in, resolvers, sysctl) and an image built from the stack with two
//! containers (one with a health check and a secret in its env). It converges, the next plan is
//! empty, the containers serve through the firewall, and the secret is nowhere it must not be.
//! Needs root, podman, runc and debootstrap, like tests/lab.rs; skips without.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{TestStack, command_lines, lab, read};

const SECRET: &str = "lab-apps-secret-93be0f";

/// The repository's stack, under a name of its own so that its lab cannot meet another run's.
fn stack(name: &str) -> TestStack {
    let s = TestStack::new(name).env("KZ_SECRET_WEB_TOKEN", SECRET);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/lab-apps");
    for f in [
        "stack.toml",
        "02_base_os.toml",
        "03_apps.toml",
        "images/web/Containerfile",
        "images/web/server.py",
        "images/web/health.py",
    ] {
        let text = read(&src.join(f)).replace("name = \"lab-apps\"", &format!("name = \"{name}\""));
        s.write(f, &text);
    }
    s
}

/// Runs `kz apply` while watching every process's command line for the secret.
fn apply_watched(s: &TestStack) -> (std::process::Output, bool) {
    let child = s
        .command(&["apply", "DIR", "--lab", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let watcher = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(300);
        let mut seen = false;
        while Instant::now() < until && !seen && !stop.load(Ordering::Relaxed) {
            // The lab hosts' processes are this machine's too: one look covers both sides.
            seen = command_lines().iter().any(|l| l.contains(SECRET));
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    (out, seen)
}

#[test]
fn module_2_and_containers_converge_on_two_lab_hosts() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzapps{}", std::process::id());
    let s = stack(&name);
    let _guard = lab::Guard(&s);
    s.kz(&["lab", "up", "DIR"]).code(0).stdout_has("running");

    // Both hosts run containers of their own, from the lab image known as debian:12.
    let images = lab::on_host(
        &name,
        "app-01",
        "podman images --format '{{.Repository}}:{{.Tag}}'",
    );
    assert!(images.contains("localhost/debian:12"), "{images}");

    let (out, leaked) = apply_watched(&s);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Apply: 10 applied, 0 failed, 0 not attempted."),
        "{stdout}"
    );
    assert!(!leaked, "the secret showed in a process's command line");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    assert!(!read(&s.path().join(".kz/lab/state.json")).contains(SECRET));

    for host in ["app-01", "app-02"] {
        let facts = lab::on_host(
            &name,
            host,
            "command -v jq; ufw status; cat /etc/ssh/sshd_config.d/10-kz.conf; \
             cat /proc/sys/net/core/somaxconn; podman ps --format '{{.Names}} {{.Status}}'",
        );
        assert!(facts.contains("/usr/bin/jq"), "{host}: {facts}");
        assert!(facts.contains("Status: active"), "{host}: {facts}");
        assert!(
            facts.contains("PasswordAuthentication no"),
            "{host}: {facts}"
        );
        assert!(facts.contains("1024"), "{host}: {facts}");
        assert!(
            facts.contains("web Up") && facts.contains("(healthy)"),
            "{host}: {facts}"
        );
        assert!(facts.contains("cache Up"), "{host}: {facts}");
        // The token reached the container, through a file that is gone.
        let served = lab::on_host(
            &name,
            host,
            "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8080/\").read().decode())'",
        );
        assert!(served.contains("token set: True"), "{host}: {served}");
    }
    // app-02 reaches app-01's cache through app-01's firewall (6380 is allowed from role app).
    let lab_json: serde_json::Value =
        serde_json::from_str(&read(&s.path().join(".kz/lab/lab.json"))).unwrap();
    let app01 = lab_json["hosts"]["app-01"]["address"].as_str().unwrap();
    let pong = lab::on_host(
        &name,
        "app-02",
        &format!("redis-cli -h {app01} -p 6380 ping"),
    );
    assert_eq!(pong.trim(), "PONG");

    // Converged: the next plan has nothing to do, reads each host once, and says what a
    // container cannot change; a saved plan holds no secret.
    let saved = s.path().join("again.plan");
    s.kz(&[
        "plan",
        "DIR",
        "--lab",
        "--detailed-exitcode",
        "--out",
        saved.to_str().unwrap(),
    ])
    .code(0)
    .stdout_has("No changes.")
    .stdout_has("Read 2 hosts in 2 round trips.")
    .stdout_has("swap: not applicable here (inside a container)");
    assert!(!String::from_utf8_lossy(&std::fs::read(&saved).unwrap()).contains(SECRET));
}
