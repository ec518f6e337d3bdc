//! stacks/prod, KeyBuzz's production stack (issue 14): it names real servers, so only the commands
//! that reach no host run on it here: `validate`, `graph` and `plan --refresh=false`. Each runs on
//! a copy of the stack, with no secret set, as on a machine that has none.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const MODULES: [&str; 9] = [
    "02_base_os",
    "03_postgresql_ha",
    "04_redis_ha",
    "05_rabbitmq_ha",
    "06_minio",
    "07_mariadb_galera",
    "08_proxysql",
    "09_k3s_ha",
    "10_lb",
];

/// A copy of stacks/prod in a temporary directory, so that nothing is ever written beside the
/// repository's stack.
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/prod");
    let st = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", src.display()))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(st.success());
    let _ = std::fs::remove_dir_all(dir.path().join(".kz"));
    dir
}

/// Runs kz with the stack directory as its last argument, without any KZ_SECRET_* or token.
fn kz(dir: &Path, args: &[&str]) -> support::Run {
    // An endpoint that refuses connections at once: were anything to call the API, it would fail
    // rather than reach Hetzner.
    kz_with_api(dir, args, Some("http://127.0.0.1:9/v1"))
}

/// `kz ARGS DIR` with `KZ_HCLOUD_ENDPOINT` set to `endpoint`, or unset.
fn kz_with_api(dir: &Path, args: &[&str], endpoint: Option<&str>) -> support::Run {
    let mut c = Command::new(support::kz_bin());
    c.args(["--color", "never"]).args(args).arg(dir);
    c.env("LANG", "C.UTF-8").env_remove("LC_ALL");
    c.env_remove("HCLOUD_TOKEN").env_remove("SSH_AUTH_SOCK");
    match endpoint {
        Some(e) => c.env("KZ_HCLOUD_ENDPOINT", e),
        None => c.env_remove("KZ_HCLOUD_ENDPOINT"),
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("KZ_SECRET_") {
            c.env_remove(k);
        }
    }
    let o = c.output().expect("run kz");
    support::Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn validate_passes_with_every_module() {
    let dir = copy();
    let run = kz(dir.path(), &["validate"]);
    run.code(0);
    run.stdout_has("Stack `keybuzz` is valid: 28 hosts, 9 modules");
    // The seed's four drills (issue 15).
    run.stdout_has(", 4 drills.");
}

#[test]
fn graph_puts_module_10_after_3_to_9_and_those_after_2() {
    let dir = copy();
    let run = kz(dir.path(), &["graph"]);
    run.code(0);
    // Module edges: "module:A" -> "module:B" [...]: B waits for A.
    let mut after: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in run.stdout.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("\"module:") else {
            continue;
        };
        let Some((from, rest)) = rest.split_once("\" -> \"module:") else {
            continue;
        };
        let Some((to, _)) = rest.split_once('"') else {
            continue;
        };
        after
            .entry(to.to_string())
            .or_default()
            .insert(from.to_string());
    }
    let lb = after.get("10_lb").cloned().unwrap_or_default();
    for m in &MODULES[1..8] {
        assert!(lb.contains(*m), "10_lb does not wait for {m}: {after:?}");
        let deps = after.get(*m).cloned().unwrap_or_default();
        assert!(
            deps.contains("02_base_os"),
            "{m} does not wait for 02_base_os: {after:?}"
        );
    }
    assert!(!after.contains_key("02_base_os"), "{after:?}");
    for m in MODULES {
        assert!(
            run.stdout.contains(&format!("subgraph \"cluster_{m}\"")),
            "no cluster {m}"
        );
    }
}

#[test]
fn the_offline_plan_lists_every_module_without_secrets() {
    let dir = copy();
    let run = kz(dir.path(), &["plan", "--refresh=false", "--json"]);
    run.code(0);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON plan");
    let changes = plan["changes"].as_array().expect("changes");
    let modules: BTreeSet<&str> = changes
        .iter()
        .map(|c| c["module"].as_str().expect("module"))
        .collect();
    assert_eq!(modules, MODULES.into_iter().collect(), "{}", run.stdout);
    // Nothing was read: the plan trusted the (empty) state, as it must on real servers.
    assert_eq!(plan["read"]["round_trips"], 0, "{}", run.stdout);
    assert_eq!(plan["read"]["connections"], 0, "{}", run.stdout);
    // Every resource is planned for creation, the four load balancers and the bases of 27 servers
    // among them.
    for lb in ["lb-internal", "lb-mariadb", "lb-public-1", "lb-public-2"] {
        let addr = format!("10_lb.lb.{lb}");
        assert!(
            changes.iter().any(|c| c["address"] == addr.as_str()),
            "no {addr}"
        );
    }
    let bases = changes
        .iter()
        .filter(|c| {
            c["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("02_base_os.system.base["))
        })
        .count();
    assert_eq!(bases, 27);
    // The secrets are unset: the plan says so, and apply would refuse.
    assert!(
        plan["warnings"]
            .to_string()
            .contains("KZ_SECRET_REDIS_PASSWORD"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_text_plan_shows_every_module_and_ends_with_module_10s_gates() {
    let dir = copy();
    let run = kz(dir.path(), &["plan", "--refresh=false"]);
    run.code(0);
    for m in MODULES {
        run.stdout_has(&format!("{m}."));
    }
    run.stdout_has("Plan: ");
    // Gates are listed in module order, so module 10's come last.
    let gates: Vec<&str> = run
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(".check.") && l.contains("runs at apply"))
        .collect();
    let modules: Vec<&str> = gates
        .iter()
        .map(|l| l.split('.').next().unwrap_or(""))
        .collect();
    let mut sorted = modules.clone();
    sorted.sort();
    assert_eq!(modules, sorted, "{gates:?}");
    assert_eq!(modules.last(), Some(&"10_lb"), "{gates:?}");
    for m in &MODULES[1..] {
        assert!(modules.contains(m), "no gate of {m}: {gates:?}");
    }
    // The changes: the hosts first, the load balancers (behind the Hetzner API) last, and one
    // line naming every module in the order apply reaches them, module 10 last.
    let headings: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("── "))
        .collect();
    assert_eq!(
        headings.last(),
        Some(&"── Hetzner Cloud ──"),
        "{headings:?}"
    );
    let order = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Modules, in apply order: "))
        .expect("the modules line");
    let named: Vec<&str> = order
        .split(", ")
        .map(|m| m.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(named, MODULES, "{order}");
}

/// The seed's drills (issue 15), each in the module it exercises, naming checks of the stack.
#[test]
fn the_seeds_four_drills_are_declared_in_their_modules() {
    let dir = copy();
    let expected = [
        ("03_postgresql_ha", "postgres-leader-loss"),
        ("04_redis_ha", "redis-master-loss"),
        ("05_rabbitmq_ha", "rabbitmq-node-loss"),
        ("07_mariadb_galera", "galera-node-loss"),
    ];
    for (module, name) in expected {
        let text = std::fs::read_to_string(dir.path().join(format!("{module}.toml"))).unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let drills = doc["drill"].as_array().expect("a [[drill]]");
        assert_eq!(drills.len(), 1, "{module}");
        assert_eq!(drills[0]["name"].as_str(), Some(name), "{module}");
        assert!(!drills[0]["expect"].as_array().unwrap().is_empty());
    }
    // Every check a drill names exists: validate refuses the stack otherwise.
    kz(dir.path(), &["validate"]).code(0).stdout_has("4 drills");
}

/// Points every host of the stack at a made-up lab, for `plan --lab --refresh=false`, which
/// reaches no host: the lab's view of the stack without any lab.
fn fake_lab(dir: &Path) {
    let tsv = std::fs::read_to_string(dir.join("servers.tsv")).unwrap();
    let mut hosts: Vec<String> = tsv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("hostname"))
        .filter_map(|l| l.split('\t').next())
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    hosts.push("install-01".into());
    let entries: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "\"{h}\": {{\"container\": \"kzlab-keybuzz-{h}\", \"address\": \"10.89.252.{}\"}}",
                i + 10
            )
        })
        .collect();
    let lab = format!(
        "{{\"stack\": \"keybuzz\", \"network\": \"kzlab-keybuzz\", \"subnet\": \"10.89.252.0/24\", \"hosts\": {{{}}}}}",
        entries.join(", ")
    );
    std::fs::create_dir_all(dir.join(".kz/lab")).unwrap();
    std::fs::write(dir.join(".kz/lab/lab.json"), lab).unwrap();
}

/// MinIO, ProxySQL and K3s have no Debian package: the lab skips those modules, each with its
/// reason, and keeps Galera (module 7) and the load balancers (module 10, on the Hetzner API
/// stand-in), whose checks through ProxySQL and K3s are skipped one by one.
#[test]
fn the_lab_skips_minio_proxysql_k3s_and_the_checks_through_them_with_their_reasons() {
    let dir = copy();
    fake_lab(dir.path());
    let run = kz(dir.path(), &["plan", "--lab", "--refresh=false", "--json"]);
    run.code(0);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON plan");
    let skipped: Vec<(String, String)> = plan["skipped_modules"]
        .as_array()
        .expect("skipped modules")
        .iter()
        .map(|m| (m["module"].to_string(), m["reason"].to_string()))
        .collect();
    let names: Vec<&str> = skipped.iter().map(|(m, _)| m.trim_matches('"')).collect();
    assert_eq!(
        names,
        ["06_minio", "08_proxysql", "09_k3s_ha"],
        "{skipped:?}"
    );
    for (needle, (_, reason)) in [
        "no Debian package of MinIO",
        "no Debian package of ProxySQL",
        "no Debian package of K3s",
    ]
    .iter()
    .zip(&skipped)
    {
        assert!(reason.contains(needle), "{reason}");
    }
    // 10_lb depends on every skipped module.
    assert_eq!(
        plan["skipped_modules"][0]["dependents"],
        serde_json::json!(["10_lb"])
    );
    let resources: Vec<(&str, &str)> = plan["skipped_resources"]
        .as_array()
        .expect("skipped resources")
        .iter()
        .map(|r| {
            (
                r["resource"].as_str().unwrap_or_default(),
                r["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        resources,
        [
            (
                "check.mariadb-via-lb",
                "it goes through ProxySQL (module 8), which has no Debian package"
            ),
            (
                "check.ingress-via-lb-public-1",
                "it goes to ingress-nginx on K3s (module 9), which has no Debian package"
            ),
            (
                "check.ingress-via-lb-public-2",
                "it goes to ingress-nginx on K3s (module 9), which has no Debian package"
            ),
        ],
        "{}",
        run.stdout
    );
    let changes: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str())
        .collect();
    for lb in ["lb-internal", "lb-mariadb", "lb-public-1", "lb-public-2"] {
        assert!(
            changes.contains(&format!("10_lb.lb.{lb}").as_str()),
            "{lb} is not planned in the lab: {changes:?}"
        );
    }
    for c in &changes {
        assert!(
            !["06_minio.", "08_proxysql.", "09_k3s_ha."]
                .iter()
                .any(|m| c.starts_with(m)),
            "{c} is planned in the lab"
        );
        // No part of ProxySQL is left in module 7: it would need the vendor's image.
        assert!(
            !(c.starts_with("07_mariadb_galera.") && c.contains("proxysql")),
            "{c} is planned in the lab"
        );
    }
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("07_mariadb_galera.container.galera"))
    );

    let text = kz(dir.path(), &["plan", "--lab", "--refresh=false"]);
    text.code(0)
        .stdout_has("06_minio: skipped in the lab: no Debian package of MinIO")
        .stdout_has("10_lb depends on 08_proxysql, skipped in the lab")
        .stdout_has("10_lb.check.mariadb-via-lb: skipped in the lab: it goes through ProxySQL")
        .stdout_has(
            "07_mariadb_galera.container.galera: maria-01, then maria-02, then maria-03, \
             each once 07_mariadb_galera.check.node-synced passes on the host before",
        );
}

/// Without a stand-in of the Hetzner API on this machine, a lab run leaves the load balancers
/// out, and says why: a lab never changes real cloud resources.
#[test]
fn without_an_api_stand_in_the_lab_leaves_the_load_balancers_out() {
    let dir = copy();
    fake_lab(dir.path());
    for endpoint in [
        None,
        Some("https://api.hetzner.cloud/v1"),
        Some("http://10.0.0.1/v1"),
    ] {
        let out = kz_with_api(dir.path(), &["plan", "--lab", "--refresh=false"], endpoint);
        out.code(0).stdout_has(
            "10_lb.lb.lb-internal: skipped in the lab: it lives behind the Hetzner Cloud API, \
             which a lab run reaches only through a stand-in on this machine",
        );
        assert!(
            !out.stdout.contains("+ 10_lb.lb."),
            "{endpoint:?}: {}",
            out.stdout
        );
        // Its checks stay: in the lab they look at the load balancer's targets.
        assert!(
            out.stdout
                .contains("10_lb.system.control-clients[install-01]"),
            "{}",
            out.stdout
        );
    }
}
