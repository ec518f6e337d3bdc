//! `[[sentinel]]` end to end, on three lab hosts running Redis and Sentinel: a group made from
//! empty hosts (one master, two replicas, three sentinels agreeing), a failover by Sentinel that
//! kz does not fight, and the seed's state (every node a replica, no sentinel) shown as NO MASTER
//! with its candidate and repaired with the data kept. Needs root, podman, runc and debootstrap,
//! like tests/lab.rs; skips without.

#![allow(clippy::unwrap_used)]
// The test says why it skips.
#![allow(clippy::print_stderr)]

mod support;

use std::time::Duration;

use support::redis::{self, roles, settled};
use support::{TestStack, lab, wait_until};

fn on_host(stack: &str, host: &str, script: &str) -> String {
    lab::on_host(stack, host, script).replace('\r', "")
}

const STACK: &str = r#"[stack]
name = "NAME"

[ssh]
user = "root"
connect_timeout = "5s"
command_timeout = "60s"

[hosts.redis-01]
address = "192.0.2.41"
labels = { role = "redis" }

[hosts.redis-02]
address = "192.0.2.42"
labels = { role = "redis" }

[hosts.redis-03]
address = "192.0.2.43"
labels = { role = "redis" }
"#;

/// Redis is started by a command (no systemd in lab hosts), its file written once: Sentinel
/// rewrites it (`CONFIG REWRITE` after `REPLICAOF`), so a `[[file]]` owning it would fight each
/// failover. The sentinel resource makes the group, writes each sentinel.conf once and starts
/// the sentinels with `sentinel_start`.
const MODULE: &str = r#"[[command]]
name = "redis-running"
on = { role = "redis" }
check = "redis-cli -p 6379 ping | grep -q PONG"
run = """
[ -f /etc/redis/kz.conf ] || printf '%s\\n' 'bind 0.0.0.0' 'port 6379' 'protected-mode no' \
  'daemonize yes' 'dir /var/lib/redis' 'logfile /var/log/redis/kz.log' > /etc/redis/kz.conf
chown redis:redis /etc/redis/kz.conf
runuser -u redis -- redis-server /etc/redis/kz.conf && sleep 0.3 && redis-cli -p 6379 ping
"""
timeout = "30s"

[[sentinel]]
name = "cache"
on = { role = "redis" }
depends_on = ["command.redis-running"]
master_name = "cache"
initial_master = "redis-01"
down_after = "2s"
failover_timeout = "10s"
sentinel_conf = "/etc/redis/kz-sentinel.conf"
sentinel_start = "redis-sentinel /etc/redis/kz-sentinel.conf --daemonize yes --logfile /var/log/redis/kz-sentinel.log"
"#;

fn sentinel_changes(plan: &str) -> Vec<serde_json::Value> {
    let json: serde_json::Value = serde_json::from_str(plan).unwrap();
    json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "sentinel")
        .cloned()
        .collect()
}

#[test]
fn a_group_is_made_survives_a_failover_and_is_repaired_from_no_master() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzsen{}", std::process::id());
    let s = TestStack::new(&name);
    s.write("stack.toml", &STACK.replace("NAME", &name));
    s.write("05_redis.toml", MODULE);
    let _guard = lab::Guard(&s);
    s.kz(&["lab", "up", "DIR"]).code(0);

    // From empty hosts: one master (the initial one), two replicas, three sentinels agreeing.
    s.kz(&["plan", "DIR", "--lab"])
        .code(0)
        .stdout_has("no sentinel monitors `cache` yet");
    s.kz(&["apply", "DIR", "--lab", "--yes"]).code(0);
    assert_eq!(settled(&name), Some("redis-01"), "{:?}", roles(&name));
    let info = on_host(&name, "redis-01", "redis-cli info replication");
    assert!(info.contains("connected_slaves:2"), "{info}");
    let ck = on_host(
        &name,
        "redis-02",
        "redis-cli -p 26379 sentinel ckquorum cache",
    );
    assert!(ck.starts_with("OK"), "{ck}");
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);
    // One round trip per host.
    let plan = s.kz(&["plan", "DIR", "--lab", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["read"]["hosts"], 3);
    assert_eq!(json["read"]["round_trips"], 3, "{}", plan.stdout);

    // The data that must survive everything below.
    assert!(on_host(&name, "redis-01", "redis-cli set kz-key kept").contains("OK"));
    wait_until(
        "the write to reach the replicas",
        Duration::from_secs(10),
        || {
            redis::HOSTS
                .iter()
                .all(|h| on_host(&name, h, "redis-cli get kz-key").trim() == "kept")
        },
    );

    // The master's Redis stops: Sentinel fails over, and kz proposes nothing for the group.
    on_host(&name, "redis-01", "redis-cli shutdown nosave");
    wait_until("Sentinel's failover", Duration::from_secs(40), || {
        settled(&name).is_some_and(|m| m != "redis-01")
    });
    let plan = s.kz(&["plan", "DIR", "--lab", "--json"]);
    assert_eq!(
        sentinel_changes(&plan.stdout),
        Vec::<serde_json::Value>::new(),
        "{}",
        plan.stdout
    );
    // Redis comes back on redis-01 (the command) and Sentinel makes it a replica.
    s.kz(&["apply", "DIR", "--lab", "--yes"]).code(0);
    wait_until("the old master to follow", Duration::from_secs(30), || {
        settled(&name).is_some_and(|m| m != "redis-01")
    });

    // The seed's state: no sentinel, every node a replica of nothing.
    for h in redis::HOSTS {
        on_host(
            &name,
            h,
            "redis-cli -p 26379 shutdown nosave; redis-cli replicaof 127.0.0.1 1",
        );
    }
    let plan = s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"]);
    plan.code(2)
        .stdout_has("NO MASTER: 3 replicas")
        .stdout_has("would promote redis-0");
    s.kz(&["apply", "DIR", "--lab", "--yes"]).code(0);
    let master = settled(&name).unwrap_or_else(|| panic!("{:?}", roles(&name)));
    assert_eq!(
        on_host(&name, master, "redis-cli get kz-key").trim(),
        "kept"
    );
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);
}
