//! `kz drill` through the binary: refusals on hosts that are not a lab; drills with command
//! faults on the local host, typed through a terminal (`script` gives kz one), one of them an
//! expectation that passes and then breaks within its `hold`; and on the lab, a
//! Redis master-loss drill on three hosts with Sentinel that passes with its times in the
//! journal, and a quorum-loss drill that fails, names the check and what it saw, and restores.

#![allow(clippy::unwrap_used)]
// The lab test says why it skips.
#![allow(clippy::print_stderr)]

mod support;

use std::process::{Command, Stdio};

use support::{TestStack, lab};

/// A flag file breaks the `flag` check; one drill breaks it for a moment, one for good (until
/// its undo).
const LOCAL_DRILLS: &str = r#"
[[check]]
name = "flag"
on = ["local"]
command = "test ! -e @ROOT@/broken"

[[drill]]
name = "blip"
description = "the flag breaks and heals itself"
steady = ["check.flag"]
fault = { kind = "command", hosts = ["local"], command = "touch @ROOT@/broken; touch @ROOT@/fault-ran; (sleep 1; rm -f @ROOT@/broken) >/dev/null 2>&1 &" }
expect = [{ check = "check.flag", within = "10s", hold = "1s" }]
measure = [{ name = "marker", on = "local", command = "echo measured-here" }]

[[drill]]
name = "relapse"
description = "the flag holds at first, then breaks while it must hold"
steady = ["check.flag"]
fault = { kind = "command", hosts = ["local"], command = "(sleep 1; touch @ROOT@/broken) >/dev/null 2>&1 &", undo = "sleep 0.5; rm -f @ROOT@/broken" }
expect = [{ check = "check.flag", within = "5s", hold = "4s" }]

[[check]]
name = "late"
on = ["local"]
command = "test -e @ROOT@/late"

# The flag blinks while another expectation is still waiting: its hold is read from its own
# first pass, not from when the last expectation passed.
[[drill]]
name = "blink"
steady = ["check.flag"]
fault = { kind = "command", hosts = ["local"], command = "(sleep 1; touch @ROOT@/broken; sleep 1; rm -f @ROOT@/broken; sleep 2; touch @ROOT@/late) >/dev/null 2>&1 &", undo = "sleep 3; rm -f @ROOT@/broken @ROOT@/late" }
expect = [{ check = "check.flag", within = "5s", hold = "3s" }, { check = "check.late", within = "10s" }]

[[drill]]
name = "broken"
steady = ["check.flag"]
fault = { kind = "command", hosts = ["local"], command = "touch @ROOT@/broken", undo = "rm -f @ROOT@/broken && touch @ROOT@/undo-ran" }
expect = [{ check = "check.flag", within = "1500ms" }]
"#;

#[test]
fn drills_refuse_hosts_that_are_not_a_lab_without_the_flag_and_a_terminal() {
    let s = TestStack::new("drillrefuse");
    s.write("01_m.toml", LOCAL_DRILLS);
    s.kz(&["validate", "DIR"])
        .code(0)
        .stdout_has("2 resource instances, 4 drills.");
    // A drill is no infrastructure: the plan has only the check to show.
    let plan = s.kz(&["plan", "DIR", "--json"]);
    plan.code(0);
    assert!(plan.stdout.contains("01_m.check.flag"), "{}", plan.stdout);
    assert!(!plan.stdout.contains(".drill."), "{}", plan.stdout);
    s.kz(&["drill", "DIR"])
        .code(1)
        .stderr_has("kz drill breaks things on purpose: run it on the lab")
        .stderr_has("(nothing was run)");
    s.kz(&["drill", "DIR", "blip", "--i-know-this-is-production"])
        .code(1)
        .stderr_has("without a terminal to type the stack's name on (nothing was run)");
    s.kz(&["drill", "DIR", "nope", "--i-know-this-is-production"])
        .code(1)
        .stderr_has("no drill `nope` in the stack (drills: blip, relapse, blink, broken)");
    assert!(!s.at("fault-ran").exists(), "a fault ran");
    assert!(!s.at("broken").exists());

    // A host-level fault is for labs only, whatever the flags.
    s.write(
        "02_host.toml",
        "[[drill]]\nname = \"pause\"\nfault = { kind = \"pause_host\", hosts = [\"local\"] }\nexpect = [{ check = \"01_m.check.flag\", within = \"5s\" }]\n",
    );
    s.kz(&["drill", "DIR", "pause", "--i-know-this-is-production"])
        .code(1)
        .stderr_has(
            "drill `pause` stops, pauses or cuts hosts (`pause_host`), which only a lab allows",
        );
}

fn script_available() -> bool {
    Command::new("sh")
        .args(["-c", "command -v script"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `kz ARGS` on a terminal (through `script`), typing `typed` on it.
fn kz_on_terminal(s: &TestStack, args: &[&str], typed: &str) -> (i32, String) {
    let dir = s.path().display().to_string();
    let mut line = format!("{} --color never", support::kz_bin());
    for a in args {
        line.push(' ');
        line.push_str(if *a == "DIR" { &dir } else { a });
    }
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{typed}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn typed_stack_name_runs_drills_that_pass_fail_and_always_restore() {
    if !script_available() {
        eprintln!("skipping: needs `script` (util-linux) for a terminal");
        return;
    }
    let s = TestStack::new("drilllocal");
    s.write("01_m.toml", LOCAL_DRILLS);

    // A wrong name: nothing runs.
    let (code, out) = kz_on_terminal(&s, &["drill", "DIR", "--i-know-this-is-production"], "nope");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Type the stack's name to go on"), "{out}");
    assert!(out.contains("Cancelled: nothing was run."), "{out}");
    assert!(!s.at("fault-ran").exists());

    let (code, out) = kz_on_terminal(
        &s,
        &["drill", "DIR", "--i-know-this-is-production"],
        "drilllocal",
    );
    assert_eq!(code, 1, "{out}");
    // The blip heals within its time: the expectation passes, with its time after the fault.
    assert!(
        out.contains("Drill blip ── 01_m (the flag breaks and heals itself)"),
        "{out}"
    );
    assert!(
        out.contains("measure      marker (before) recorded"),
        "{out}"
    );
    assert!(out.contains("measured-here"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("✓ expect       01_m.check.flag pass ")
                && l.ends_with("s after the fault")),
        "{out}"
    );
    assert!(out.contains("PASSED in "), "{out}");
    assert!(out.contains("; held 1s ("), "{out}");
    // The relapse passes at first, then breaks while it must hold: failed, with both times.
    assert!(
        out.contains(
            "Drill relapse ── 01_m (the flag holds at first, then breaks while it must hold)"
        ),
        "{out}"
    );
    assert!(out.contains("then failed "), "{out}");
    assert!(
        out.contains("after it, within its hold of 4s: FAIL on local: exit 1"),
        "{out}"
    );
    // The broken flag never heals: the failed check and what it saw, then the undo ran.
    assert!(out.contains("✗ expect       01_m.check.flag FAIL"), "{out}");
    assert!(
        out.contains("not passing within 1500ms: FAIL on local: exit 1"),
        "{out}"
    );
    assert!(out.contains("✓ restore      command pass"), "{out}");
    assert!(out.contains("FAILED in "), "{out}");
    // The blink: the flag broke at about 1 s, within its hold, while check.late still waited.
    assert!(
        out.contains("within its hold of 3s: FAIL on local: exit 1"),
        "{out}"
    );
    assert!(out.contains("Drills: 1 passed, 3 failed."), "{out}");
    assert!(s.at("undo-ran").exists(), "the restore did not run");
    assert!(!s.at("broken").exists(), "the fault was not undone");
}

const LAB_STACK: &str = r#"[stack]
name = "NAME"

[ssh]
user = "root"
connect_timeout = "3s"
command_timeout = "30s"

[hosts.h1]
address = "192.0.2.51"

[hosts.h2]
address = "192.0.2.52"

[hosts.h3]
address = "192.0.2.53"
"#;

/// Redis on three hosts, h1 the first master, a Sentinel on each (quorum 2, a master is down
/// after 1 s), and the drills.
const LAB_REDIS: &str = r#"
[[command]]
name = "master"
on = ["h1"]
check = "redis-cli ping | grep -q PONG"
run = "redis-server --daemonize yes --bind 0.0.0.0 --protected-mode no && sleep 0.3 && redis-cli ping"

[[command]]
name = "replica"
on = ["h2", "h3"]
depends_on = ["command.master"]
check = "redis-cli ping | grep -q PONG"
run = "redis-server --daemonize yes --bind 0.0.0.0 --protected-mode no --replicaof ${hosts.h1.address} 6379 && sleep 0.3 && redis-cli ping"

[[command]]
name = "sentinel"
on = ["h1", "h2", "h3"]
depends_on = ["command.master", "command.replica"]
check = "redis-cli -p 26379 ping | grep -q PONG"
run = '''printf 'port 26379\nsentinel monitor mymaster ${hosts.h1.address} 6379 2\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\n' > /etc/kz-sentinel.conf && redis-sentinel /etc/kz-sentinel.conf --daemonize yes && sleep 0.5 && redis-cli -p 26379 ping'''

[[check]]
name = "one-master"
on = ["h1"]
kind = "redis_role"
one_master_among = ["h1", "h2", "h3"]
depends_on = ["command.sentinel"]
tries = 20
interval = "1s"
timeout = "1s"

[[check]]
name = "quorum"
on = ["h1"]
kind = "sentinel_quorum"
master = "mymaster"
sentinels = 3
depends_on = ["command.sentinel"]
tries = 30
interval = "1s"

[[drill]]
name = "master-loss"
description = "the master dies; Sentinel promotes a replica"
steady = ["check.one-master", "check.quorum"]
fault = { kind = "command", hosts = ["h1", "h2", "h3"], command = "if redis-cli info replication | grep -q role:master; then redis-cli shutdown nosave || true; i=0; while redis-cli ping >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; echo shut down the master; else echo a replica, left alone; fi", undo = "redis-cli ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 0.0.0.0 --protected-mode no" }
expect = [{ check = "check.one-master", within = "30s" }, { check = "check.quorum", within = "30s" }]
restore_within = "40s"
measure = [{ name = "master", on = "h3", command = "redis-cli -p 26379 sentinel get-master-addr-by-name mymaster | head -n 1" }]

[[drill]]
name = "quorum-loss"
description = "the new master and the other replica frozen: no Sentinel majority, no master"
steady = ["check.one-master", "check.quorum"]
fault = { kind = "pause_host", hosts = ["h2", "h3"] }
expect = [{ check = "check.one-master", within = "4s" }]
restore_within = "40s"
"#;

fn step<'a>(drill: &'a serde_json::Value, step: &str, name: &str) -> &'a serde_json::Value {
    drill["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step && s["name"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no step {step} {name} in {drill:#}"))
}

#[test]
fn lab_drills_measure_a_failover_and_report_a_lost_quorum() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzdr{}", std::process::id());
    let s = TestStack::new(&name);
    s.write("stack.toml", &LAB_STACK.replace("NAME", &name));
    s.write("01_redis.toml", LAB_REDIS);
    let _guard = lab::PausingGuard(&s, &["h2", "h3"]);
    s.kz(&["lab", "up", "DIR"]).code(0);
    s.kz(&["apply", "DIR", "--lab", "--yes"]).code(0);

    // The master dies: Sentinel promotes a replica, times recorded from the fault.
    let r = s.kz(&["drill", "DIR", "master-loss", "--lab", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", r.stdout, r.stderr));
    r.code(0);
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["lab"], true);
    let d = &doc["drills"][0];
    assert_eq!(d["drill"], "master-loss");
    assert!(
        step(d, "fault", "command")["observed"]
            .as_str()
            .unwrap()
            .contains("h1: shut down the master"),
        "{d:#}"
    );
    let promoted = step(d, "expect", ".check.one-master");
    assert_eq!(promoted["outcome"], "pass", "{d:#}");
    let after = promoted["after_ms"].as_u64().unwrap();
    assert!(
        (500..30_000).contains(&after),
        "new master after {after} ms"
    );
    assert!(
        !promoted["observed"]
            .as_str()
            .unwrap()
            .contains("one master, h1"),
        "{d:#}"
    );
    assert_eq!(
        step(d, "steady_again", ".check.one-master")["outcome"],
        "pass"
    );
    let before = step(d, "measure", "master (before)")["observed"].clone();
    let moved = step(d, "measure", "master (after)")["observed"].clone();
    assert_ne!(before, moved, "the master did not move: {d:#}");
    for st in d["steps"].as_array().unwrap() {
        eprintln!(
            "master-loss: +{}ms {} {} {} ({:?} ms after): {}",
            st["start_ms"], st["step"], st["name"], st["outcome"], st["after_ms"], st["observed"]
        );
    }

    // The new master (h2 or h3) and the other replica frozen: h1's Sentinel alone has no
    // majority, so no master comes back until the restore.
    let new_master = if moved.as_str().unwrap().ends_with(".52") {
        "h2"
    } else {
        "h3"
    };
    // Sentinel made the old master a replica again: the stack's own plan has nothing to do.
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);
    let r = s.kz(&["drill", "DIR", "quorum-loss", "--lab"]);
    r.code(1)
        .stdout_has("✗ expect       01_redis.check.one-master FAIL")
        .stdout_has("not passing within 4s: FAIL on h1: no master")
        .stdout_has("✓ restore      pause_host pass")
        .stdout_has(&format!("{new_master}: unpaused"))
        .stdout_has("FAILED in ");
    // The restore ran: both hosts answer again.
    s.kz(&["verify", "DIR", "--lab"]).code(0);
}

/// The pid of the `kz` process whose command line names `dir` (the test's own stack).
fn kz_pid_for(dir: &str) -> Option<String> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.first().map(String::as_str) == Some(support::kz_bin())
            && args.iter().any(|a| a == dir)
        {
            return Some(pid);
        }
    }
    None
}

#[test]
fn an_interrupted_drill_still_restores() {
    if !script_available() {
        eprintln!("skipping: needs `script` (util-linux) for a terminal");
        return;
    }
    let s = TestStack::new("drillint");
    s.write("01_m.toml", LOCAL_DRILLS.replace("1500ms", "60s").as_str());
    let dir = s.path().display().to_string();
    let root = s.root();
    let apply_dir = dir.clone();
    let interrupter = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if std::path::Path::new(&format!("{root}/broken")).exists()
                && let Some(pid) = kz_pid_for(&dir)
            {
                // While the fault is in, the drill holds the state lock: no apply meanwhile.
                let apply = Command::new(support::kz_bin())
                    .args(["apply", &apply_dir, "--yes"])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&apply.stderr).to_string();
                assert_eq!(apply.status.code(), Some(1), "{err}");
                assert!(err.contains("state is locked by pid "), "{err}");
                assert!(err.contains("drill"), "{err}");
                let _ = Command::new("kill").args(["-INT", &pid]).status();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    });
    let started = std::time::Instant::now();
    let (code, out) = kz_on_terminal(
        &s,
        &["drill", "DIR", "broken", "--i-know-this-is-production"],
        "drillint",
    );
    assert!(
        interrupter.join().unwrap(),
        "kz was never interrupted: {out}"
    );
    assert_eq!(code, 1, "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(out.contains("✓ restore      command pass"), "{out}");
    assert!(out.contains("INTERRUPTED after "), "{out}");
    assert!(s.at("undo-ran").exists(), "the restore did not run: {out}");
    assert!(!s.at("broken").exists(), "the fault was not undone");
}
