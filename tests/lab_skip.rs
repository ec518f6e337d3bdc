//! Modules skipped in the lab (`[module] lab = { skip = "REASON" }`): left out of `--lab` runs
//! with their reason shown by plan, apply, verify (SKIPPED, not failing) and drill; the modules
//! that depend on them are told so and are not held by their (absent) checks; without `--lab`
//! nothing changes.
//!
//! The first tests need no lab: a plan with `--refresh=false` and a verify of modules without
//! checks to read connect to nothing, so a hand-written `lab.json` is enough. The last one runs
//! a one-host lab (root and podman, like tests/lab.rs; skips without).

#![allow(clippy::unwrap_used)]

mod support;

use support::{TestStack, lab};

/// A module skipped in the lab, with a file and a check that always fails: outside the lab it
/// would hold back `10_lb`, which depends on it.
const MINIO: &str = r#"[module]
description = "object storage"
lab = { skip = "no Debian package of MinIO" }

[[file]]
name = "conf"
on = { role = "app" }
path = "@ROOT@/minio.conf"
content = "minio\n"

[[check]]
name = "cluster-health"
on = { role = "app" }
kind = "command"
command = "test -n '${secret.MINIO_LAB_PASSWORD}'; CHECK"
tries = 1
successes = 1
interval = "1s"
timeout = "5s"

[[drill]]
name = "minio-node-loss"
steady = ["check.cluster-health"]
fault = { kind = "command", hosts = HOSTS, command = "true" }
expect = [{ check = "check.cluster-health", within = "5s" }]
"#;

/// Depends on the skipped module; deploys one file.
const LB: &str = r#"[module]
depends_on = ["06_minio"]

[[file]]
name = "front"
on = { role = "app" }
path = "@ROOT@/front.conf"
content = "front\n"
"#;

/// A module that depends on the skipped one and declares nothing: verify can judge it without
/// reading a host.
const EMPTY_DEPENDENT: &str = "[module]\ndepends_on = [\"06_minio\"]\n";

/// A stack on the local host with the modules above; `check` is the skipped module's check.
fn stack(name: &str, check: &str) -> TestStack {
    let s = TestStack::new(name);
    s.write(
        "06_minio.toml",
        &MINIO
            .replace("CHECK", check)
            .replace("HOSTS", "[\"local\"]"),
    );
    s.write("10_lb.toml", LB);
    s.write("11_after.toml", EMPTY_DEPENDENT);
    s
}

/// A lab overlay written by hand: its host is never reached by the commands these tests run.
fn fake_lab(s: &TestStack, name: &str) {
    s.write(
        ".kz/lab/lab.json",
        &format!(
            r#"{{"stack": "{name}", "network": "kzlab-{name}", "subnet": "10.89.251.0/24",
  "hosts": {{"local": {{"container": "kzlab-{name}-local", "address": "10.89.251.10"}}}}}}"#
        ),
    );
}

#[test]
fn plan_under_lab_leaves_out_the_skipped_module_and_says_why() {
    let name = format!("kzskip{}", std::process::id());
    let s = stack(&name, "false");
    s.kz(&["validate", "DIR"])
        .code(0)
        .stdout_has("3 modules, 3 resource instances, 1 drill");

    // Without --lab, nothing changes: the module is planned like any other.
    let p = s.kz(&["plan", "DIR"]);
    p.code(0).stdout_has("06_minio.file.conf[local]");
    assert!(!p.stdout.contains("skipped in the lab"), "{}", p.stdout);
    let json = s.kz(&["plan", "DIR", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(doc.get("skipped_modules").is_none(), "{}", json.stdout);

    // Its secret is needed to save a plan outside the lab, not in it: nothing there uses it.
    let out = s.path().join("saved.plan");
    let out = out.to_str().unwrap();
    s.kz(&["plan", "DIR", "--refresh=false", "--out", out])
        .code(1)
        .stderr_has("KZ_SECRET_MINIO_LAB_PASSWORD");
    fake_lab(&s, &name);
    s.kz(&["plan", "DIR", "--lab", "--refresh=false", "--out", out])
        .code(0);
    let p = s.kz(&["plan", "DIR", "--lab", "--refresh=false"]);
    p.code(0)
        .stdout_has("Skipped in the lab:")
        .stdout_has(
            "06_minio: skipped in the lab: no Debian package of MinIO (2 instances left out)",
        )
        .stdout_has(
            "10_lb depends on 06_minio, skipped in the lab: its checks do not hold 10_lb here",
        )
        .stdout_has("11_after depends on 06_minio, skipped in the lab")
        .stdout_has("10_lb.file.front[local]");
    assert!(!p.stdout.contains("06_minio.file"), "{}", p.stdout);
    // A target the lab left out says why, rather than "matches no instance".
    s.kz(&[
        "plan",
        "DIR",
        "--lab",
        "--refresh=false",
        "--target",
        "06_minio.file.conf[local]",
    ])
    .code(1)
    .stderr_has(
        "--target `06_minio.file.conf[local]` is skipped in the lab: no Debian package of MinIO",
    );

    let json = s.kz(&["plan", "DIR", "--lab", "--refresh=false", "--json"]);
    json.code(0);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let skipped = &doc["skipped_modules"];
    assert_eq!(skipped.as_array().map(Vec::len), Some(1), "{}", json.stdout);
    assert_eq!(skipped[0]["module"], "06_minio");
    assert_eq!(skipped[0]["reason"], "no Debian package of MinIO");
    assert_eq!(skipped[0]["instances"], 2);
    assert_eq!(
        skipped[0]["dependents"],
        serde_json::json!(["10_lb", "11_after"])
    );
    let changes: Vec<&str> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str())
        .collect();
    assert_eq!(changes, ["10_lb.file.front[local]"], "{}", json.stdout);
}

#[test]
fn verify_reports_a_skipped_module_as_skipped_without_failing() {
    let name = format!("kzskipv{}", std::process::id());
    let s = stack(&name, "true").env("KZ_SECRET_MINIO_LAB_PASSWORD", "minio-lab-secret");
    // Outside the lab the module is applied, and its check runs (here, on this machine).
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["verify", "DIR", "--module", "06_minio"])
        .code(0)
        .stdout_has("06_minio ── OK");

    fake_lab(&s, &name);
    let args = [
        "verify", "DIR", "--lab", "--module", "06_minio", "--module", "11_after",
    ];
    let v = s.kz(&args);
    v.code(0)
        .stdout_has("06_minio ── SKIPPED\n  skipped in the lab: no Debian package of MinIO\n")
        .stdout_has("note: 11_after depends on 06_minio, skipped in the lab")
        .stdout_has("06_minio  SKIPPED (skipped in the lab: no Debian package of MinIO)")
        .stdout_has("Verified");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let j = s.kz(&json_args);
    j.code(0);
    let doc: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(doc["passed"], true, "{}", j.stdout);
    assert_eq!(doc["modules"][0]["status"], "skipped");
    assert_eq!(
        doc["modules"][0]["reason"],
        "skipped in the lab: no Debian package of MinIO"
    );
    assert_eq!(
        doc["modules"][1]["notes"],
        serde_json::json!(["11_after depends on 06_minio, skipped in the lab"])
    );
}

#[test]
fn a_drill_of_a_skipped_module_is_not_run_in_the_lab() {
    let name = format!("kzskipd{}", std::process::id());
    let s = stack(&name, "true");
    fake_lab(&s, &name);
    // Nothing to run, nothing reached: the drill's module is skipped.
    let d = s.kz(&["drill", "DIR", "--lab"]);
    d.code(0)
        .stdout_has(
            "Drill minio-node-loss (06_minio): skipped in the lab: no Debian package of MinIO",
        )
        .stdout_has("Drills: 0 passed, 0 failed, 1 skipped in the lab.");
    let j = s.kz(&["drill", "DIR", "--lab", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(doc["skipped"][0]["name"], "minio-node-loss", "{}", j.stdout);
    assert_eq!(doc["drills"], serde_json::json!([]));
}

/// A lab host: the skipped module's failing check holds nothing back, the module that depends
/// on it is applied, and apply and verify say why.
const LAB_STACK: &str = r#"[stack]
name = "NAME"

[ssh]
user = "root"
connect_timeout = "5s"
command_timeout = "60s"

[hosts.app-01]
address = "192.0.2.41"
labels = { role = "app" }
"#;

#[test]
fn in_a_lab_the_skipped_modules_checks_hold_nothing_back() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzskipl{}", std::process::id());
    let s = TestStack::new(&name);
    s.write("stack.toml", &LAB_STACK.replace("NAME", &name));
    s.write(
        "06_minio.toml",
        &MINIO
            .replace("CHECK", "false")
            .replace("HOSTS", "[\"app-01\"]")
            .replace("@ROOT@", "/srv"),
    );
    s.write("10_lb.toml", &LB.replace("@ROOT@", "/srv"));
    let _guard = lab::Guard(&s);
    s.kz(&["lab", "up", "DIR"]).code(0);

    let a = s.kz(&["apply", "DIR", "--lab", "--yes"]);
    a.code(0)
        .stdout_has("06_minio: skipped in the lab: no Debian package of MinIO")
        .stdout_has("10_lb depends on 06_minio, skipped in the lab")
        .stdout_has("Apply: 1 applied, 0 failed, 0 not attempted.");
    // Said by the plan, and again by the report at the end.
    assert_eq!(
        a.stdout.matches("10_lb depends on 06_minio").count(),
        2,
        "{}",
        a.stdout
    );
    assert_eq!(
        lab::on_host(&name, "app-01", "cat /srv/front.conf; ls /srv"),
        "front\nfront.conf\n"
    );

    s.kz(&["verify", "DIR", "--lab"])
        .code(0)
        .stdout_has("06_minio ── SKIPPED")
        .stdout_has("note: 10_lb depends on 06_minio, skipped in the lab");
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");
}

/// A check's own `address` or `url` is not overlaid like host addresses: under `--lab`, one that
/// points outside the lab (a production load balancer) is refused before anything connects.
#[test]
fn a_check_aimed_outside_the_lab_is_refused_before_anything_runs() {
    let name = format!("kzaim{}", std::process::id());
    let s = stack(&name, "true");
    s.write(
        "12_lb_checks.toml",
        "[[check]]\nname = \"via-lb\"\non = [\"local\"]\nkind = \"tcp\"\naddress = \"10.0.0.10\"\nport = 5432\n",
    );
    fake_lab(&s, &name);
    s.kz(&["plan", "DIR", "--lab", "--refresh=false"])
        .code(1)
        .stderr_has("refusing to use the lab: 12_lb_checks.check.via-lb[local] would reach 10.0.0.10, outside the lab network 10.89.251.0/24");
    s.write(
        "12_lb_checks.toml",
        "[[check]]\nname = \"via-lb\"\non = [\"local\"]\nkind = \"http\"\nurl = \"http://10.0.0.5/\"\n",
    );
    s.kz(&["verify", "DIR", "--lab"])
        .code(1)
        .stderr_has("would reach 10.0.0.5, outside the lab network");
    // A check of the lab host itself (its default address) is the lab's.
    s.write(
        "12_lb_checks.toml",
        "[[check]]\nname = \"own\"\non = [\"local\"]\nkind = \"tcp\"\nport = 5432\n",
    );
    s.kz(&["plan", "DIR", "--lab", "--refresh=false"]).code(0);
}

/// A check whose production target has no lab counterpart says where a lab run looks instead
/// (`lab = { address = "..." }`, so the guard above lets it through) or why the lab leaves it
/// out (`lab = { skip = "..." }`, said by plan, and its dependents no longer wait for it).
#[test]
fn a_check_gets_its_lab_target_or_is_skipped_with_its_reason() {
    let name = format!("kzlabck{}", std::process::id());
    let s = stack(&name, "true");
    s.write(
        "12_lb_checks.toml",
        r#"[[check]]
name = "via-lb"
on = ["local"]
kind = "tcp"
address = "10.0.0.10"
port = 5432
lab = { address = "${hosts.local.address}" }

[[check]]
name = "via-proxysql"
on = ["local"]
kind = "tcp"
address = "10.0.0.20"
port = 3306
lab = { skip = "it goes through ProxySQL, which the lab has not" }

[[file]]
name = "after"
on = ["local"]
path = "@ROOT@/after.conf"
content = "after\n"
depends_on = ["check.via-proxysql", "check.via-lb"]
"#,
    );
    // Outside the lab nothing is skipped.
    let p = s.kz(&["plan", "DIR", "--refresh=false"]);
    p.code(0);
    assert!(!p.stdout.contains("skipped in the lab"), "{}", p.stdout);

    fake_lab(&s, &name);
    s.kz(&["plan", "DIR", "--lab", "--refresh=false"])
        .code(0)
        .stdout_has(
            "12_lb_checks.check.via-proxysql: skipped in the lab: it goes through ProxySQL, \
             which the lab has not (1 instance left out)",
        )
        .stdout_has("12_lb_checks.file.after[local]");
    let j = s.kz(&["plan", "DIR", "--lab", "--refresh=false", "--json"]);
    j.code(0);
    let doc: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(
        doc["skipped_resources"],
        serde_json::json!([{
            "module": "12_lb_checks",
            "resource": "check.via-proxysql",
            "reason": "it goes through ProxySQL, which the lab has not",
            "instances": 1
        }]),
        "{}",
        j.stdout
    );
    // The file is planned (its dependency on the skipped check is dropped), and nothing of the
    // skipped check is.
    assert!(
        doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["address"] == "12_lb_checks.file.after[local]"),
        "{}",
        j.stdout
    );
    assert!(!j.stdout.contains("via-proxysql[local]"), "{}", j.stdout);

    // Without its lab target, the first check is refused as aimed outside the lab.
    let text = std::fs::read_to_string(s.path().join("12_lb_checks.toml")).unwrap();
    s.write(
        "12_lb_checks.toml",
        &text.replace("lab = { address = \"${hosts.local.address}\" }\n", ""),
    );
    s.kz(&["plan", "DIR", "--lab", "--refresh=false"])
        .code(1)
        .stderr_has("12_lb_checks.check.via-lb[local] would reach 10.0.0.10")
        .stderr_has("lab = { address = ");
}
