//! What lab tests share: whether a lab can run here, commands inside lab hosts (what a host really
//! holds, read without kz), and a guard that takes the lab down however the test ends.

// The lab tests say why they skip.
#![allow(clippy::print_stderr)]

use std::process::Command;

use super::TestStack;

/// kz's own podman configuration for the lab (runc, no default ulimits).
pub const CONTAINERS_CONF: &str = "/var/cache/kz-lab/containers.conf";

/// Root and the lab's tools: without them the lab cannot run here, and the test skips. CI has them.
pub fn possible() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    });
    let tools = ["podman", "runc", "debootstrap"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !(root && tools) {
        eprintln!("skipping: lab tests need root, podman, runc and debootstrap");
    }
    root && tools
}

/// Runs podman on this machine with the lab's configuration: whether it succeeded, its output.
pub fn podman(args: &[&str]) -> (bool, String) {
    let o = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", CONTAINERS_CONF)
        .output()
        .unwrap_or_else(|e| panic!("podman: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

/// A shell script run inside lab host `host` of stack `stack`, not through kz: its output.
pub fn on_host(stack: &str, host: &str, script: &str) -> String {
    let o = Command::new("podman")
        .args(["exec", &format!("kzlab-{stack}-{host}"), "sh", "-c", script])
        .env("CONTAINERS_CONF", CONTAINERS_CONF)
        .output()
        .unwrap_or_else(|e| panic!("podman exec: {e}"));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Takes the lab down however the test ends, so no container outlives it.
pub struct Guard<'a>(pub &'a TestStack);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.0.kz(&["lab", "down", "DIR"]);
    }
}

/// Like [`Guard`], for tests that pause lab hosts: those named are unpaused first, so a test
/// that failed while they were paused still takes its lab down whole.
pub struct PausingGuard<'a>(pub &'a TestStack, pub &'static [&'static str]);

impl Drop for PausingGuard<'_> {
    fn drop(&mut self) {
        for h in self.1 {
            let _ = self.0.kz(&["lab", "unpause", "DIR", h]);
        }
        let _ = self.0.kz(&["lab", "down", "DIR"]);
    }
}
