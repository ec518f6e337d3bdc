//! Container runtimes for tests, with no registry: a busybox image imported from the machine's
//! `busybox-static`, podman configured for runc, and a docker daemon started by the test.
//!
//! Podman here needs runc and no default ulimits (crun and the rlimits fail in this kind of
//! machine): the setup writes `/etc/containers/containers.conf.d/90-kz-test.conf` once (a drop-in,
//! so the machine's own containers.conf is left alone; `kz lab` uses its own file anyway).

#![allow(dead_code)]
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The image every container test runs.
pub const IMAGE: &str = "localhost/kz-test-busybox:1";

const PODMAN_CONF: &str = "/etc/containers/containers.conf.d/90-kz-test.conf";

pub fn sh(script: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

fn have(tool: &str) -> bool {
    sh(&format!("command -v {tool}")).status.success()
}

fn root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A root filesystem of busybox and its links, as a tar on standard output of `script`'s pipe.
fn rootfs_script() -> &'static str {
    "(d=$(mktemp -d) && mkdir -p $d/bin $d/tmp $d/etc && cp /bin/busybox $d/bin/ && \
     for a in $(/bin/busybox --list); do [ $a = busybox ] || ln -sf busybox $d/bin/$a; done && \
     echo 'root:x:0:0:root:/:/bin/sh' > $d/etc/passwd && tar -C $d -c . ; rm -rf $d)"
}

/// Whether podman tests can run (root, podman, runc, busybox); says why not otherwise.
pub fn podman_possible() -> bool {
    let ok = root() && ["podman", "runc", "busybox"].iter().all(|t| have(t));
    if !ok {
        eprintln!("skipping: container tests need root, podman, runc and busybox-static");
    }
    ok
}

/// Configures podman for runc and imports the test image, once per test binary.
pub fn setup_podman() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !Path::new(PODMAN_CONF).exists() {
            std::fs::create_dir_all("/etc/containers/containers.conf.d").expect("conf dir");
            std::fs::write(
                PODMAN_CONF,
                "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n",
            )
            .expect("podman conf");
        }
        let out = sh(&format!(
            "podman image exists {IMAGE} || {{ {} | podman import --change 'ENV PATH=/bin' - {IMAGE} >/dev/null; }}",
            rootfs_script()
        ));
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    });
}

/// Whether docker tests can run: root, dockerd, docker and busybox.
pub fn docker_possible() -> bool {
    let ok = root()
        && ["dockerd", "docker", "containerd", "busybox"]
            .iter()
            .all(|t| have(t));
    if !ok {
        eprintln!("skipping: docker tests need root, docker.io, containerd and busybox-static");
    }
    ok
}

/// A docker daemon of the test's own (data under /var/lib/kz-test-docker), on the default
/// socket so that `docker` on the host finds it; no iptables rules and no bridge, so the
/// machine's other networks are left alone: its containers use the host's network. Stopped on
/// drop. When a daemon already answers, it is used as it is.
pub struct Dockerd {
    child: Option<Child>,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        if sh("docker info >/dev/null 2>&1").status.success() {
            return Dockerd { child: None }.with_image();
        }
        let log = std::fs::File::create("/tmp/kz-test-dockerd.log").expect("dockerd log");
        let child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--data-root",
                "/var/lib/kz-test-docker",
                "--exec-root",
                "/run/kz-test-docker",
                "--pidfile",
                "/run/kz-test-docker.pid",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { child: Some(child) };
        let start = Instant::now();
        while !sh("docker info >/dev/null 2>&1").status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not answer within 60 s (see /tmp/kz-test-dockerd.log)"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d.with_image()
    }

    fn with_image(self) -> Dockerd {
        let out = sh(&format!(
            "docker image inspect {IMAGE} >/dev/null 2>&1 || {{ {} | docker import --change 'ENV PATH=/bin' - {IMAGE} >/dev/null; }}",
            rootfs_script()
        ));
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none()
                && start.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes containers by name when dropped, whatever the test did.
pub struct Cleanup {
    pub runtime: &'static str,
    pub names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.names {
            let fast = if self.runtime == "podman" {
                " -t 0"
            } else {
                ""
            };
            let _ = sh(&format!("{} rm -f{fast} {n} >/dev/null 2>&1", self.runtime));
        }
    }
}

/// `RUNTIME inspect --format FORMAT NAME`, trimmed; empty when it does not exist.
pub fn inspect(runtime: &str, name: &str, format: &str) -> String {
    let out = sh(&format!(
        "{runtime} container inspect --format '{format}' {name} 2>/dev/null"
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
