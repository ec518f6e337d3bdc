//! Issue 13's "Done when", end to end on the lab stack of the repository (stacks/lab): three
//! Redis hosts with Sentinel and two HAProxy hosts. From empty hosts, one apply makes one master,
//! two replicas and three agreeing sentinels, and both HAProxy hosts route 6379 to the master;
//! when the master's Redis stops, Sentinel fails over, both HAProxy hosts follow within 10 s and
//! the plan proposes nothing for the group (its live line names the new master); every node a
//! replica (the seed's state) is shown as NO MASTER with its candidate and repaired with the
//! data kept, then verified through HAProxy's stats socket; a configuration with an invalid
//! directive is refused with HAProxy's message while the previous one keeps serving. Needs root,
//! podman, runc and debootstrap, like tests/lab.rs; skips without.

#![allow(clippy::unwrap_used)]
// The test reports its timings.
#![allow(clippy::print_stderr)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::redis::{self, roles, settled};
use support::{TestStack, lab, read, wait_until};

/// The password the last step gives Redis, and HAProxy's check through a secret.
const PASSWORD: &str = "kz-lab-pw-7f3a";

const FILES: [&str; 4] = [
    "stack.toml",
    "02_base_os.toml",
    "03_lb.toml",
    "04_redis_ha.toml",
];

/// The lab stack of the repository, under a name of its own.
fn lab_stack(name: &str) -> TestStack {
    let s = TestStack::new(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/lab");
    for f in FILES {
        let text = read(&src.join(f)).replace("name = \"lab\"", &format!("name = \"{name}\""));
        s.write(f, &text);
    }
    s
}

fn on_host(name: &str, host: &str, script: &str) -> String {
    lab::on_host(name, host, script).replace('\r', "")
}

/// Writes through each HAProxy (from redis-03: lab hosts reach each other) until the value
/// lands on `master`; fails after `limit`. How long it took.
fn routes_to(name: &str, lbs: &[String], master: &str, tag: &str, limit: Duration) -> Duration {
    routes_to_as("", name, lbs, master, tag, limit)
}

/// The same, for a Redis with a password (`REDISCLI_AUTH=PW `, else empty).
fn routes_to_as(
    auth: &str,
    name: &str,
    lbs: &[String],
    master: &str,
    tag: &str,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    for (n, addr) in lbs.iter().enumerate() {
        for i in 0.. {
            let (key, value) = (format!("k-{tag}-{n}"), format!("v{i}"));
            let set = on_host(
                name,
                "redis-03",
                &format!("{auth}redis-cli -h {addr} -p 6379 SET {key} {value}"),
            );
            if set.trim() == "OK"
                && on_host(name, master, &format!("{auth}redis-cli GET {key}")).trim() == value
            {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "HAProxy at {addr} does not route to {master} after {:?}",
                start.elapsed()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    start.elapsed()
}

fn changes_of(plan: &str, kind: &str) -> Vec<serde_json::Value> {
    let json: serde_json::Value = serde_json::from_str(plan).unwrap();
    json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind)
        .cloned()
        .collect()
}

fn live_of(plan: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(plan).unwrap();
    let live = json["live"].as_array().cloned().unwrap_or_default();
    assert_eq!(live.len(), 1, "{plan}");
    assert_eq!(live[0]["address"], "04_redis_ha.sentinel.cache");
    live[0]["text"].as_str().unwrap().to_string()
}

/// A lab run: the stack and the load balancers' addresses.
struct Lab<'a> {
    s: &'a TestStack,
    name: &'a str,
    lbs: Vec<String>,
}

#[test]
fn redis_follows_its_master_through_sentinel_and_haproxy() {
    if !lab::possible() {
        return;
    }
    let started = Instant::now();
    let name = format!("kzha{}", std::process::id());
    let s = lab_stack(&name).env("KZ_SECRET_REDIS_PASSWORD", PASSWORD);
    let _guard = lab::Guard(&s);
    s.kz(&["lab", "up", "DIR"]).code(0);
    eprintln!("lab up: {:.1}s", started.elapsed().as_secs_f64());
    let lab = Lab {
        s: &s,
        name: &name,
        lbs: ["haproxy-01", "haproxy-02"]
            .iter()
            .map(|h| on_host(&name, h, "hostname -i").trim().to_string())
            .collect(),
    };
    made_from_empty_hosts(&lab);
    eprintln!(
        "applied and checked: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    keeps_data_written_before(&lab);
    let master = failover_is_followed(&lab);
    let master = no_master_is_repaired(&lab, master);
    eprintln!(
        "repaired from NO MASTER: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    an_invalid_directive_is_refused(&lab, master);
    a_password_goes_through_a_secret(&lab, master);
    eprintln!("whole test: {:.1}s", started.elapsed().as_secs_f64());
}

/// From empty hosts: one master, two replicas, three sentinels agreeing, checked through both
/// HAProxy stats sockets at the end of the apply; the next plan is empty and reads each host once.
fn made_from_empty_hosts(lab: &Lab) {
    let (s, name) = (lab.s, lab.name);
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("made with master redis-01")
        .stdout_has("haproxy-01, haproxy-02 route to redis-01");
    assert_eq!(settled(name), Some("redis-01"), "{:?}", roles(name));
    let info = on_host(name, "redis-01", "redis-cli info replication");
    assert!(info.contains("connected_slaves:2"), "{info}");
    for h in redis::HOSTS {
        let ck = on_host(name, h, "redis-cli -p 26379 sentinel ckquorum cache");
        assert!(ck.starts_with("OK 3 usable Sentinels"), "{h}: {ck}");
        // Each node and each sentinel announces the host's address (NAT, containers).
        let own = on_host(name, h, "hostname -i").trim().to_string();
        let announced = on_host(
            name,
            h,
            "redis-cli config get replica-announce-ip | tail -n 1; \
             redis-cli -p 26379 sentinel config get announce-ip | tail -n 1",
        );
        assert_eq!(announced, format!("{own}\n{own}\n"), "{h}");
    }
    routes_to(name, &lab.lbs, "redis-01", "first", Duration::from_secs(10));
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.")
        .stdout_has("04_redis_ha.sentinel.cache: master redis-01, 2 of 2 replicas in sync, 3 sentinels agree");
    // The whole lab stack's plan: one round trip per host.
    let plan = s.kz(&["plan", "DIR", "--lab", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["read"]["hosts"], 5, "{}", plan.stdout);
    assert_eq!(json["read"]["round_trips"], 5, "{}", plan.stdout);
}

/// The data that must survive everything after.
fn keeps_data_written_before(lab: &Lab) {
    let name = lab.name;
    assert_eq!(
        on_host(name, "redis-01", "redis-cli set kz-key kept").trim(),
        "OK"
    );
    wait_until(
        "the write to reach the replicas",
        Duration::from_secs(10),
        || {
            redis::HOSTS
                .iter()
                .all(|h| on_host(name, h, "redis-cli get kz-key").trim() == "kept")
        },
    );
}

/// The master's Redis stops: Sentinel fails over, both HAProxy hosts follow within 10 s, and
/// the plan proposes no change to the topology; its live line names the new master. Redis comes
/// back on the old master (the command) and Sentinel makes it a replica. The new master.
fn failover_is_followed(lab: &Lab) -> &'static str {
    let (s, name) = (lab.s, lab.name);
    on_host(name, "redis-01", "redis-cli shutdown nosave");
    let stopped = Instant::now();
    let mut master = "redis-01";
    wait_until("Sentinel's failover", Duration::from_secs(40), || {
        master = settled(name).unwrap_or("redis-01");
        master != "redis-01"
    });
    let failed_over = Instant::now();
    let took = routes_to(name, &lab.lbs, master, "flip", Duration::from_secs(10));
    eprintln!(
        "failover after {:.1}s; both HAProxy hosts routed to {master} {:.1}s later",
        (failed_over - stopped).as_secs_f64(),
        took.as_secs_f64()
    );
    let plan = s.kz(&["plan", "DIR", "--lab", "--json"]);
    for kind in ["sentinel", "haproxy"] {
        assert_eq!(
            changes_of(&plan.stdout, kind),
            Vec::<serde_json::Value>::new(),
            "{}",
            plan.stdout
        );
    }
    assert!(
        live_of(&plan.stdout).starts_with(&format!(
            "master {master}, 1 of 2 replicas in sync, 3 sentinels agree; Redis down on redis-01"
        )),
        "{}",
        plan.stdout
    );
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("04_redis_ha.command.redis-running[redis-01]");
    wait_until("the old master to follow", Duration::from_secs(30), || {
        settled(name) == Some(master)
    });
    master
}

/// The seed's state (no sentinel, every node a replica of nothing) is shown as NO MASTER with
/// its candidate, repaired, verified through HAProxy, and the data is still there. The master.
fn no_master_is_repaired(lab: &Lab, before: &str) -> &'static str {
    let (s, name) = (lab.s, lab.name);
    for h in redis::HOSTS {
        on_host(
            name,
            h,
            "redis-cli -p 26379 shutdown nosave; redis-cli replicaof 127.0.0.1 1",
        );
    }
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(2)
        .stdout_has("NO MASTER: 3 replicas")
        .stdout_has("would promote redis-0");
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("repaired by hand: promoted redis-0")
        .stdout_has("haproxy-01, haproxy-02 route to redis-0");
    let master = settled(name).unwrap_or_else(|| panic!("{:?} (was {before})", roles(name)));
    assert_eq!(on_host(name, master, "redis-cli get kz-key").trim(), "kept");
    for addr in &lab.lbs {
        let got = on_host(name, "redis-03", &format!("redis-cli -h {addr} GET kz-key"));
        assert_eq!(got.trim(), "kept", "through {addr}");
    }
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);
    master
}

/// An invalid directive fails at validation with HAProxy's message; the previous configuration
/// keeps serving.
fn an_invalid_directive_is_refused(lab: &Lab, master: &str) {
    let s = lab.s;
    let lb = read(&s.path().join("03_lb.toml")).replace(
        "\"maxconn 2000\"",
        "\"maxconn 2000\", \"bogus-directive 1\"",
    );
    s.write("03_lb.toml", &lb);
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(1)
        .stdout_has("validate: HAProxy refused the configuration (haproxy -c); the live file is untouched and nothing was reloaded")
        .stdout_has("unknown keyword 'bogus-directive' in 'global' section");
    routes_to(lab.name, &lab.lbs, master, "kept", Duration::from_secs(5));
}

/// Redis gets a password (by hand here: nodes, replication, sentinels), and HAProxy's check logs
/// in with it from a secret: the plan never shows it, the file is 0640 root:haproxy, and both
/// HAProxy hosts route to the master again.
fn a_password_goes_through_a_secret(lab: &Lab, master: &str) {
    let (s, name) = (lab.s, lab.name);
    for h in redis::HOSTS {
        on_host(
            name,
            h,
            &format!(
                "redis-cli config set masterauth {PASSWORD}; redis-cli -p 26379 sentinel set cache auth-pass {PASSWORD}"
            ),
        );
    }
    for h in redis::HOSTS {
        on_host(
            name,
            h,
            &format!("redis-cli config set requirepass {PASSWORD}"),
        );
    }
    let lb = read(&s.path().join("03_lb.toml"))
        .replace(", \"bogus-directive 1\"", "")
        .replace(
            "check = \"redis_master\"",
            "check = \"redis_master\"\nauth = \"${secret.REDIS_PASSWORD}\"",
        );
    s.write("03_lb.toml", &lb);
    let plan = s.kz(&["plan", "DIR", "--lab", "--target", "03_lb"]);
    plan.code(0).stdout_has("config: (sensitive)");
    assert!(!plan.stdout.contains(PASSWORD), "{}", plan.stdout);
    let apply = s.kz(&["apply", "DIR", "--lab", "--yes", "--target", "03_lb"]);
    apply.code(0).stdout_has("Apply: 2 applied, 0 failed");
    assert!(!apply.stdout.contains(PASSWORD), "{}", apply.stdout);
    for h in ["haproxy-01", "haproxy-02"] {
        let st = on_host(name, h, "stat -c '%a %U %G' /etc/haproxy/haproxy.cfg");
        assert_eq!(st.trim(), "640 root haproxy", "{h}");
    }
    let auth = format!("REDISCLI_AUTH={PASSWORD} ");
    routes_to_as(
        &auth,
        name,
        &lab.lbs,
        master,
        "auth",
        Duration::from_secs(10),
    );
}
