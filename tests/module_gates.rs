//! Module gates on the lab: a load balancer (against the Hetzner API stand-in on 127.0.0.1)
//! whose module depends on a module with a failing check is not attempted, the apply summary
//! naming the check; once the check passes, the next apply creates it. Needs root, podman, runc
//! and debootstrap, like tests/lab.rs; skips without.

#![allow(clippy::unwrap_used)]
// The test says why it skips.
#![allow(clippy::print_stderr)]

mod support;

use std::process::Command;

use kz_test_hcloud::FakeHcloud;
use support::{TestStack, lab};

/// A command run inside a lab host with podman, not through kz.
fn on_host(stack: &str, host: &str, script: &str) {
    let o = Command::new("podman")
        .args(["exec", &format!("kzlab-{stack}-{host}"), "sh", "-c", script])
        .env("CONTAINERS_CONF", lab::CONTAINERS_CONF)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {o:?}");
}

const STACK: &str = r#"[stack]
name = "NAME"

[ssh]
user = "root"
connect_timeout = "5s"
command_timeout = "30s"

[hosts.haproxy-01]
address = "192.0.2.51"
"#;

/// Module 3 stands for the modules the load balancers wait for: its check passes once the
/// service answers (here: once a flag file exists).
const DB: &str = r#"
[[file]]
name = "conf"
on = ["haproxy-01"]
path = "/etc/kz-db.conf"
content = "db\n"

[[check]]
name = "ready"
on = ["haproxy-01"]
command = "test -f /run/db-ready || { echo no leader yet; exit 1; }"
tries = 2
interval = "200ms"
deadline = "10s"
depends_on = ["file.conf"]
"#;

const LB: &str = r#"
[module]
depends_on = ["03_db"]

[[lb]]
name = "lb-internal"
type = "lb11"
network_zone = "eu-central"
targets = ["haproxy-01"]

[[lb.service]]
protocol = "tcp"
listen_port = 5432
"#;

#[test]
fn a_load_balancer_waits_for_the_checks_of_the_modules_it_depends_on() {
    if !lab::possible() {
        return;
    }
    let api = FakeHcloud::start();
    api.add_server("haproxy-01", &[], None);
    let name = format!("kzmg{}", std::process::id());
    let s = TestStack::new(&name)
        .env("KZ_HCLOUD_ENDPOINT", &api.url())
        .env("HCLOUD_TOKEN", api.token())
        .env("KZ_HCLOUD_RETRY_BASE_MS", "20");
    s.write("stack.toml", &STACK.replace("NAME", &name));
    s.write("03_db.toml", DB);
    s.write("10_lb.toml", LB);
    let _guard = lab::Guard(&s);
    s.kz(&["lab", "up", "DIR"]).code(0);

    // With the stand-in on loopback, the lab keeps the load balancer in its plan.
    s.kz(&["plan", "DIR", "--lab"])
        .code(0)
        .stdout_has("10_lb.lb.lb-internal");

    let r = s.kz(&["apply", "DIR", "--lab", "--yes"]);
    r.code(1)
        .stdout_has("03_db.file.conf[haproxy-01]: created")
        .stdout_has("03_db.check.ready[haproxy-01]: failed to verify")
        .stdout_has("exit 1: no leader yet")
        .stdout_has(
            "10_lb.lb.lb-internal: not attempted because 03_db.check.ready[haproxy-01] failed",
        )
        .stdout_has("Held back:")
        .stdout_has("  03_db.check.ready[haproxy-01] failed: 10_lb.lb.lb-internal");
    assert!(api.load_balancer("lb-internal").is_none());

    // The database comes up: the next apply reads the check passing (nothing above it changes,
    // so it is not run again) and creates the load balancer.
    on_host(&name, "haproxy-01", "touch /run/db-ready");
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("03_db.check.ready[haproxy-01] passing; nothing it depends on changes")
        .stdout_has("10_lb.lb.lb-internal: created")
        .stdout_has("Apply: 1 applied, 1 verified, 0 failed, 0 not attempted.");
    assert!(api.load_balancer("lb-internal").is_some());
}
