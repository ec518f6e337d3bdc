//! `[[haproxy]]` end to end, on lab hosts (podman containers running sshd): three Redis hosts
//! and two HAProxy hosts. Both HAProxy hosts route 6379 to the Redis master with the ready-made
//! `redis_master` check, follow a master changed by hand within 10 s, start again when stopped,
//! and keep serving the previous configuration when a new one has an invalid directive. Needs
//! root, podman, runc and debootstrap, like tests/lab.rs; skips without.

#![allow(clippy::unwrap_used)]
// The test says why it skips.
#![allow(clippy::print_stderr)]

mod support;

use std::time::{Duration, Instant};

use support::{TestStack, lab};

const STACK: &str = r#"[stack]
name = "NAME"

[ssh]
user = "root"
connect_timeout = "5s"
command_timeout = "60s"

[hosts.redis-01]
address = "192.0.2.41"
labels = { role = "redis", redis_role = "master" }

[hosts.redis-02]
address = "192.0.2.42"
labels = { role = "redis", redis_role = "replica" }

[hosts.redis-03]
address = "192.0.2.43"
labels = { role = "redis", redis_role = "replica" }

[hosts.lb-01]
address = "192.0.2.51"
labels = { role = "lb" }

[hosts.lb-02]
address = "192.0.2.52"
labels = { role = "lb" }
"#;

/// Redis as in stacks/lab: started by a command; the replicas follow redis-01 from their
/// configuration file, so a master changed by hand leaves nothing for the next plan to change.
const REDIS: &str = r#"[[file]]
name = "redis-master-conf"
on = { redis_role = "master" }
path = "/etc/redis/kz.conf"
content = "bind 0.0.0.0\nport 6379\nprotected-mode no\ndaemonize yes\ndir /var/lib/redis\n"

[[file]]
name = "redis-replica-conf"
on = { redis_role = "replica" }
path = "/etc/redis/kz.conf"
content = "bind 0.0.0.0\nport 6379\nprotected-mode no\ndaemonize yes\ndir /var/lib/redis\nreplicaof ${hosts.redis-01.address} 6379\n"

[[command]]
name = "redis-running"
on = { role = "redis" }
depends_on = ["file.redis-master-conf", "file.redis-replica-conf"]
check = "redis-cli -p 6379 ping | grep -q PONG"
run = "runuser -u redis -- redis-server /etc/redis/kz.conf && sleep 0.2 && redis-cli -p 6379 ping"
timeout = "30s"
"#;

/// HAProxy on the two load balancers; `EXTRA` (global lines) and `RAW` (lines at the end) are
/// replaced by tests.
const LB: &str = r#"[[haproxy]]
name = "lb"
on = { role = "lb" }
extra_global = [EXTRA]
extra = [RAW]

[haproxy.defaults]
"timeout client" = "1h"

[[haproxy.frontend]]
name = "redis"
bind = "*:6379"
default_backend = "redis"

[[haproxy.backend]]
name = "redis"
balance = "first"
check = "redis_master"
servers = { role = "redis" }
port = 6379
"#;

fn lb(extra: &str) -> String {
    lb_raw(extra, "")
}

fn lb_raw(extra: &str, raw: &str) -> String {
    LB.replace("EXTRA", extra).replace("RAW", raw)
}

/// A `SET` through the HAProxy of `lb`, sent from redis-03 (lab hosts reach each other); true
/// when Redis answered `OK`, which only a master does.
fn set_through(name: &str, lb_addr: &str, key: &str, value: &str) -> bool {
    lab::on_host(
        name,
        "redis-03",
        &format!("redis-cli -h {lb_addr} -p 6379 SET {key} {value}"),
    )
    .trim()
        == "OK"
}

fn get_on(name: &str, host: &str, key: &str) -> String {
    lab::on_host(name, host, &format!("redis-cli GET {key}"))
        .trim()
        .to_string()
}

/// Writes through each load balancer until the value lands on `master`, for at most `limit`.
fn routes_to(name: &str, lbs: &[String], master: &str, tag: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    for (n, addr) in lbs.iter().enumerate() {
        let mut i = 0;
        loop {
            let (key, value) = (format!("k-{tag}-{n}"), format!("v{i}"));
            if set_through(name, addr, &key, &value) && get_on(name, master, &key) == value {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "load balancer {addr} does not route to {master} after {:?}",
                start.elapsed()
            );
            std::thread::sleep(Duration::from_millis(200));
            i += 1;
        }
    }
    start.elapsed()
}

/// A bad configuration never serves: refused by `haproxy -c` (nothing reloaded), or taken by
/// `haproxy -c` but not by the reload (rolled back). Either way the previous one keeps serving.
fn refusals(s: &TestStack, name: &str, lbs: &[String]) {
    // An invalid directive fails at validation with HAProxy's words; the live file stays, and
    // HAProxy still serves it.
    let live = lab::on_host(name, "lb-01", "cat /etc/haproxy/haproxy.cfg");
    s.write("20_lb.toml", &lb(r#""maxconn 2000", "bogus-directive 1""#));
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(1)
        .stdout_has("validate: HAProxy refused the configuration (haproxy -c); the live file is untouched and nothing was reloaded")
        .stdout_has("unknown keyword 'bogus-directive' in 'global' section");
    assert_eq!(
        lab::on_host(name, "lb-01", "cat /etc/haproxy/haproxy.cfg"),
        live
    );
    assert_eq!(
        lab::on_host(
            name,
            "lb-01",
            "ls /etc/haproxy/haproxy.cfg.kz-new 2>/dev/null"
        ),
        ""
    );
    routes_to(name, lbs, "redis-02", "kept", Duration::from_secs(5));

    // A configuration HAProxy accepts but cannot serve (port 22 is sshd's): the reload fails,
    // the previous file comes back and serves again.
    s.write(
        "20_lb.toml",
        &lb_raw(
            r#""maxconn 2000""#,
            r#""listen clash", "    bind *:22", "    server s 127.0.0.1:1""#,
        ),
    );
    s.kz(&[
        "apply",
        "DIR",
        "--lab",
        "--yes",
        "--target",
        "20_lb.haproxy.lb[lb-01]",
    ])
    .code(1)
    .stdout_has("HAProxy did not take the new configuration")
    .stdout_has("cannot bind socket (Address already in use) for [0.0.0.0:22]")
    .stdout_has("the previous configuration was restored and serves again");
    assert_eq!(
        lab::on_host(name, "lb-01", "cat /etc/haproxy/haproxy.cfg"),
        live
    );
    routes_to(name, lbs, "redis-02", "rollback", Duration::from_secs(10));
}

#[test]
fn two_haproxy_hosts_follow_the_redis_master_and_refuse_a_bad_configuration() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzhap{}", std::process::id());
    let s = TestStack::new(&name);
    s.write("stack.toml", &STACK.replace("NAME", &name));
    let _guard = lab::Guard(&s);
    s.kz(&["lab", "up", "DIR"]).code(0).stdout_has("running");
    s.write("10_redis.toml", REDIS);
    s.write("20_lb.toml", &lb(""));

    // One round trip per host, and the configuration shown as text with lab addresses.
    let plan = s.kz(&["plan", "DIR", "--lab", "--json"]);
    plan.code(0);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["read"]["hosts"], 5, "{}", plan.stdout);
    assert_eq!(json["read"]["round_trips"], 5, "{}", plan.stdout);
    let redis_01 = lab::on_host(&name, "redis-01", "hostname -i")
        .trim()
        .to_string();
    s.kz(&["plan", "DIR", "--lab"])
        .code(0)
        .stdout_has("+    tcp-check expect string role:master")
        .stdout_has(&format!("+    server redis-01 {redis_01}:6379 check"));

    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("0 failed, 0 not attempted.");
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");
    let lbs: Vec<String> = ["lb-01", "lb-02"]
        .iter()
        .map(|h| lab::on_host(&name, h, "hostname -i").trim().to_string())
        .collect();
    routes_to(&name, &lbs, "redis-01", "first", Duration::from_secs(15));

    // The master changes by hand: redis-02 is promoted, the others follow it.
    let redis_02 = lab::on_host(&name, "redis-02", "hostname -i")
        .trim()
        .to_string();
    lab::on_host(&name, "redis-02", "redis-cli replicaof no one");
    for h in ["redis-01", "redis-03"] {
        lab::on_host(&name, h, &format!("redis-cli replicaof {redis_02} 6379"));
    }
    let took = routes_to(&name, &lbs, "redis-02", "flip", Duration::from_secs(10));
    eprintln!("both load balancers routed to the new master after {took:?}");
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);

    // A reload keeps the master and forks a new worker.
    let pid = "cat /run/haproxy-kz-lb.pid";
    let workers = |h: &str| lab::on_host(&name, h, &format!("ps -o pid= --ppid $({pid})"));
    let (master, before) = (lab::on_host(&name, "lb-01", pid), workers("lb-01"));
    s.write("20_lb.toml", &lb(r#""maxconn 2000""#));
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("Apply: 2 applied, 0 failed");
    assert_eq!(lab::on_host(&name, "lb-01", pid), master);
    assert_ne!(workers("lb-01"), before);
    routes_to(&name, &lbs, "redis-02", "reload", Duration::from_secs(10));

    refusals(&s, &name, &lbs);

    // HAProxy stopped behind kz's back: the plan says so, the apply starts it again.
    s.write("20_lb.toml", &lb(r#""maxconn 2000""#));
    lab::on_host(&name, "lb-02", &format!("kill $({pid}); sleep 0.5"));
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(2)
        .stdout_has("running: false \u{2192} true");
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("Apply: 1 applied, 0 failed");
    routes_to(&name, &lbs, "redis-02", "restart", Duration::from_secs(10));
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);

    interrupted(&s, &name);
}

/// What an apply stopped half way leaves: on lb-01 a live file HAProxy was never reloaded with
/// (its recorded digest differs), on lb-02 a new file beside the live one. The plan shows both,
/// the apply reloads lb-01 and removes lb-02's leftover.
fn interrupted(s: &TestStack, name: &str) {
    let cfg = "/etc/haproxy/haproxy.cfg";
    lab::on_host(name, "lb-01", &format!("echo '1 2' > {cfg}.kz-serving"));
    lab::on_host(name, "lb-02", &format!("echo leftover > {cfg}.kz-new"));
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(2)
        .stdout_has("HAProxy was not reloaded with this file")
        .stdout_has("an interrupted apply left PATH.kz-new beside this file");
    let pid = "cat /run/haproxy-kz-lb.pid";
    let before = lab::on_host(name, "lb-01", &format!("ps -o pid= --ppid $({pid})"));
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("Apply: 2 applied, 0 failed");
    assert_ne!(
        lab::on_host(name, "lb-01", &format!("ps -o pid= --ppid $({pid})")),
        before
    );
    assert_eq!(
        lab::on_host(name, "lb-02", &format!("ls {cfg}.kz-new 2>/dev/null")),
        ""
    );
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);
}

/// Every kind of line, rendered: the ready-made checks, servers by labels and by hosts, per-host
/// parameters, directives over kz's base settings, raw lines.
const RENDERED: &str = r#"[[haproxy]]
name = "snap"
on = { role = "app" }
path = "@ROOT@/haproxy.cfg"
reload = "master"
extra_global = ["maxconn 4000"]
extra = ["listen stats", "    mode http", "    bind 127.0.0.1:8404", "    stats enable"]

[haproxy.global]
"hard-stop-after" = "30s"
"stats timeout" = false

[haproxy.defaults]
"timeout client" = "1h"
option = ["dontlognull", "redispatch"]

[[haproxy.frontend]]
name = "redis"
bind = ["127.0.0.1:6379", "${host.address}:6380"]
default_backend = "redis"

[[haproxy.backend]]
name = "redis"
balance = "first"
check = "redis_master"
servers = { role = "redis" }
port = 6379
server_params = "maxconn 1000"
host_params = { redis-02 = "backup" }

[[haproxy.backend]]
name = "pg-primary"
check = "patroni_primary"
servers = ["db-01", "db-02"]
port = 5432

[[haproxy.backend]]
name = "pg-replicas"
balance = "roundrobin"
check = "patroni_replica"
servers = ["db-02", "db-01"]
port = 5432

[[haproxy.backend]]
name = "rabbitmq"
check = "rabbitmq"
servers = ["db-01"]
port = 5672

[[haproxy.backend]]
name = "pgbouncer"
check = "pgbouncer"
servers = ["db-01"]
port = 6432
extra = ["timeout server 2h"]

[[haproxy.backend]]
name = "plain"
check = "tcp"
servers = ["db-02"]
port = 9000
"#;

const HOSTS: &str = r#"
[hosts.redis-01]
address = "10.0.0.11"
labels = { role = "redis" }

[hosts.redis-02]
address = "10.0.0.12"
labels = { role = "redis" }

[hosts.db-01]
address = "10.0.0.21"

[hosts.db-02]
address = "10.0.0.22"
"#;

/// The rendered file as the plan of a first apply shows it (every line added).
fn rendered(plan: &str) -> String {
    plan.lines()
        .skip_while(|l| l.trim() != "config:")
        .skip(2)
        .take_while(|l| l.starts_with("        +"))
        .map(|l| format!("{}\n", &l["        +".len()..]))
        .collect()
}

#[test]
fn the_configuration_renders_deterministically_and_reads_in_one_round_trip() {
    let s = TestStack::new("haproxy-render");
    let stack = std::fs::read_to_string(s.path().join("stack.toml")).unwrap();
    s.write("stack.toml", &format!("{stack}{HOSTS}"));
    s.write("10_lb.toml", RENDERED);
    let plan = s.kz(&["plan", "DIR"]);
    plan.code(0)
        .stdout_has("will be created (no configuration file (HAProxy run by master))");
    let text = rendered(&plan.stdout);
    insta::assert_snapshot!("haproxy_rendered", text);
    // The same declaration renders the same bytes every time.
    assert_eq!(rendered(&s.kz(&["plan", "DIR"]).stdout), text);
    let json = s.kz(&["plan", "DIR", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["read"]["round_trips"], 1, "{json}");
    assert!(!s.at("haproxy.cfg").exists(), "a plan writes nothing");
}

#[test]
fn a_configuration_holding_a_secret_is_never_shown() {
    let s = TestStack::new("haproxy-secret").env("KZ_SECRET_STATS_PW", "s3cr3t-pa55");
    s.write(
        "10_lb.toml",
        r#"[[haproxy]]
name = "lb"
on = { role = "app" }
path = "@ROOT@/haproxy.cfg"
reload = "master"
extra = ["userlist ops", "    user admin insecure-password ${secret.STATS_PW}"]
"#,
    );
    let plan = s.kz(&["plan", "DIR"]);
    plan.code(0).stdout_has("config:  (sensitive)");
    assert!(!plan.stdout.contains("s3cr3t"), "{}", plan.stdout);
}
