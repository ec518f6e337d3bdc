//! Issue 15's whole platform: `stacks/prod` itself (a copy, renamed so it cannot meet a lab of
//! the real directory) brought up in the lab, applied, verified green, then its four drills
//! (Redis, PostgreSQL, RabbitMQ, Galera) run and pass with their times in the journal; the next plan proposes
//! nothing; `kz lab down` leaves nothing of it behind. Module 10's load balancers are made on
//! the Hetzner API stand-in (`tests/hcloud`, on loopback), seeded with KeyBuzz's servers.
//!
//! Needs root and the lab's tools (like tests/lab.rs); skips without them. It is the longest test
//! of the suite (minutes): images are built from Debian's packages on the lab hosts.

#![allow(clippy::unwrap_used)]
// The test says why it skips and how long each step took (useful in CI logs).
#![allow(clippy::print_stderr)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kz_test_hcloud::FakeHcloud;
use support::{TestStack, lab};

/// The secrets a lab run of stacks/prod uses, with lab values (letters and digits: they go into
/// configuration files and shell scripts as they are). Those of MinIO, ProxySQL, K3s and ERPNext
/// are not set: only what the lab skips uses them, and a lab run asks for none of them.
const SECRETS: &[&str] = &[
    "PG_SUPERUSER_PASSWORD",
    "PG_REPLICATION_PASSWORD",
    "PATRONI_RAFT_PASSWORD",
    "REDIS_PASSWORD",
    "RABBITMQ_ERLANG_COOKIE",
    "RABBITMQ_ADMIN_PASSWORD",
    "MARIADB_ROOT_PASSWORD",
    "MARIADB_SST_PASSWORD",
];

/// Copies stacks/prod into `to` (its own files only: no `.kz` of a lab or state).
fn copy_stack(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".kz" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_stack(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The stack, renamed `name`, with every secret set.
fn prod_copy(name: &str) -> TestStack {
    let mut s = TestStack::new(name);
    copy_stack(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/prod"),
        s.path(),
    );
    let toml = std::fs::read_to_string(s.path().join("stack.toml")).unwrap();
    assert!(toml.contains("name = \"keybuzz\""));
    s.write(
        "stack.toml",
        &toml.replacen("name = \"keybuzz\"", &format!("name = \"{name}\""), 1),
    );
    for (i, secret) in SECRETS.iter().enumerate() {
        s = s.env(
            &format!("KZ_SECRET_{secret}"),
            &format!("Lab{i}secret{name}"),
        );
    }
    s
}

/// Runs one step, says how long it took, and hands its output back.
fn timed(what: &str, step: impl FnOnce() -> support::Run) -> support::Run {
    let start = Instant::now();
    let run = step();
    eprintln!("{what}: {:.1}s", start.elapsed().as_secs_f64());
    run
}

/// How many podman volumes this machine has (the lab's container storage is anonymous volumes).
fn volume_count() -> usize {
    lab::podman(&["volume", "ls", "-q"]).1.lines().count()
}

/// Runs drill `name` on the lab: it must pass; its journal (JSON) is returned and its text form
/// printed, with the step times an operator reads.
fn drill(s: &TestStack, name: &str) -> serde_json::Value {
    let run = timed(name, || s.kz(&["drill", "DIR", name, "--lab", "--json"]));
    let doc: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", run.stdout, run.stderr));
    assert_eq!(doc["passed"], true, "drill {name} failed: {doc:#}");
    run.code(0);
    doc["drills"][0].clone()
}

/// When the expectation on `check` passed, in milliseconds after the fault.
fn expectation_ms(drill: &serde_json::Value, check: &str) -> u64 {
    let step = drill["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "expect" && s["name"].as_str().unwrap().ends_with(check))
        .unwrap_or_else(|| panic!("no expectation {check} in {drill:#}"));
    assert_eq!(step["outcome"], "pass", "{drill:#}");
    let after = step["after_ms"].as_u64().unwrap();
    eprintln!("  {check}: passed {after} ms after the fault");
    after
}

/// What the drill's step `step` named `name` (or ending with it) observed.
fn step_observed(drill: &serde_json::Value, step: &str, name: &str) -> String {
    drill["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step && s["name"].as_str().unwrap_or_default().ends_with(name))
        .and_then(|s| s["observed"].as_str())
        .unwrap_or_else(|| panic!("no {step} {name} in {drill:#}"))
        .to_string()
}

/// A lab host's address, from the lab's file.
fn lab_address(s: &TestStack, host: &str) -> String {
    let lab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path().join(".kz/lab/lab.json")).unwrap())
            .unwrap();
    lab["hosts"][host]["address"].as_str().unwrap().to_string()
}

#[test]
fn the_keybuzz_platform_runs_in_the_lab_and_survives_its_drills() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzprod{}", std::process::id());
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let s = prod_copy(&name)
        .env("KZ_HCLOUD_ENDPOINT", &api.url())
        .env("HCLOUD_TOKEN", api.token())
        .env("KZ_HCLOUD_RETRY_BASE_MS", "20");
    let volumes_before = volume_count();
    let _down = lab::Guard(&s);

    let up = timed("lab up", || s.kz(&["lab", "up", "DIR"]));
    up.code(0)
        .stderr_has("left out 13 hosts only skipped modules use");
    assert!(up.stdout.contains("db-master-01"), "{}", up.stdout);
    // kz's own host, where module 10's checks look at the load balancers from.
    assert!(up.stdout.contains("install-01"), "{}", up.stdout);
    assert!(!up.stdout.contains("minio-01"), "{}", up.stdout);

    // Nothing of a lab run may name a production address: the plan shows every value it sends.
    let plan = s.kz(&["plan", "DIR", "--lab", "--json"]);
    plan.code(0);
    for production in ["10.0.0.0/16", "10.0.0.120", "10.0.0.11:", "10.0.0.123"] {
        assert!(
            !plan.stdout.contains(production),
            "a lab plan names {production}"
        );
    }

    let apply = timed("apply", || {
        s.kz_within(
            Duration::from_secs(1200),
            &["apply", "DIR", "--lab", "--yes"],
        )
    });
    apply
        .code(0)
        .stdout_has("skipped in the lab: no Debian package of MinIO");
    // Galera came up one node at a time (`serial`): each joiner once the node before is Synced.
    let at = |line: &str| {
        apply
            .stdout
            .find(line)
            .unwrap_or_else(|| panic!("apply never says {line:?}"))
    };
    for (synced, next) in [("maria-01", "maria-02"), ("maria-02", "maria-03")] {
        assert!(
            at(&format!(
                "07_mariadb_galera.check.node-synced[{synced}]: verified"
            )) < at(&format!(
                "07_mariadb_galera.container.galera[{next}]: creating"
            )),
            "{next} started before {synced} was Synced"
        );
    }

    let verify = timed("verify", || s.kz(&["verify", "DIR", "--lab"]));
    verify.code(0);
    for module in [
        "02_base_os",
        "03_postgresql_ha",
        "04_redis_ha",
        "05_rabbitmq_ha",
        "07_mariadb_galera",
        "10_lb",
    ] {
        // The summary's line is the last that starts with the module's name.
        let line = verify
            .stdout
            .lines()
            .rfind(|l| l.trim_start().starts_with(module))
            .unwrap_or_else(|| panic!("verify names no {module}:\n{}", verify.stdout));
        assert!(
            line.contains("OK"),
            "{module} is not OK:\n{}",
            verify.stdout
        );
    }
    for skipped in ["06_minio", "08_proxysql", "09_k3s_ha"] {
        assert!(
            verify
                .stdout
                .lines()
                .any(|l| l.trim_start().starts_with(skipped) && l.contains("SKIPPED")),
            "{skipped} is not SKIPPED:\n{}",
            verify.stdout
        );
    }
    // Module 10 in the lab: its checks through the load balancer look at one of its targets, and
    // those through ProxySQL and K3s are skipped, each with its reason.
    assert!(
        verify
            .stdout
            .contains("note: check.mariadb-via-lb skipped in the lab: it goes through ProxySQL"),
        "{}",
        verify.stdout
    );
    for check in [
        "postgres-via-lb",
        "pgbouncer-via-lb",
        "redis-master-via-lb",
        "amqp-via-lb",
    ] {
        assert!(
            verify
                .stdout
                .contains(&format!("pass 10_lb.check.{check}[install-01]")),
            "{check}:\n{}",
            verify.stdout
        );
    }
    // The load balancers, on the stand-in, as module 10 declares them.
    let mut lbs = api.load_balancer_names();
    lbs.sort();
    assert_eq!(
        lbs,
        ["lb-internal", "lb-mariadb", "lb-public-1", "lb-public-2"]
    );
    let internal = api.load_balancer("lb-internal").unwrap();
    assert_eq!(
        internal["services"].as_array().unwrap().len(),
        4,
        "{internal:#}"
    );
    assert_eq!(
        internal["targets"].as_array().unwrap().len(),
        2,
        "{internal:#}"
    );
    assert_eq!(
        internal["private_net"][0]["ip"], "10.0.0.10",
        "{internal:#}"
    );
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);

    // The Redis drill: Sentinel promotes, HAProxy follows, and kz accepts the new master.
    let redis = drill(&s, "redis-master-loss");
    for check in ["check.one-master", "check.master-through-haproxy"] {
        let after = expectation_ms(&redis, check);
        assert!(after < 60_000, "{check} after {after} ms");
    }
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);

    // The PostgreSQL drill: a new leader takes writes through HAProxy, the acknowledged write kept.
    let pg = drill(&s, "postgres-leader-loss");
    let after = expectation_ms(&pg, "check.writes-through-haproxy");
    assert!(after < 90_000, "writes through HAProxy after {after} ms");

    // The RabbitMQ drill: queue-03, which leads kz's quorum probe queue, is killed; the queue
    // elects another leader and keeps taking and giving back messages for the 15 s it is held.
    let rabbit = drill(&s, "rabbitmq-node-loss");
    expectation_ms(&rabbit, "check.quorum-queues-serving");
    assert!(
        step_observed(&rabbit, "expect", "check.quorum-queues-serving").contains("held 15s"),
        "{rabbit:#}"
    );
    let queue_03 = lab_address(&s, "queue-03");
    let leader = |when: &str| {
        step_observed(&rabbit, "measure", &format!("probe queue leader ({when})"))
            .split('\t')
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(leader("before"), format!("rabbit@{queue_03}"), "{rabbit:#}");
    assert_ne!(leader("after"), format!("rabbit@{queue_03}"), "{rabbit:#}");

    // The Galera drill: maria-03 is killed; the other two stay Synced and writable through the
    // cluster's reconfiguration (held 20 s), and maria-03 rejoins.
    let galera = drill(&s, "galera-node-loss");
    for check in ["check.synced-primary", "check.writable"] {
        expectation_ms(&galera, check);
        assert!(
            step_observed(&galera, "expect", check).contains("held 20s"),
            "{galera:#}"
        );
    }
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);

    s.kz(&["lab", "down", "DIR"]).code(0);
    let (_, left) = lab::podman(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!left.contains(&name), "containers left: {left}");
    assert_eq!(volume_count(), volumes_before, "volumes left behind");
    let (_, networks) = lab::podman(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.contains(&name), "networks left: {networks}");
}
