//! `kz drill` through the binary: refusals on hosts that are not a lab; drills with command
//! faults on the local host, typed through a terminal (`script` gives kz one); and on the lab, a
//! Redis master-loss drill on three hosts with Sentinel that passes with its times in the
//! journal, and a quorum-loss drill that fails, names the check and what it saw, and restores.

#![allow(clippy::unwrap_used)]
// The lab test says why it skips.
#![allow(clippy::print_stderr)]

mod support;

use std::process::{Command, Stdio};

use support::TestStack;

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
expect = [{ check = "check.flag", within = "10s" }]
measure = [{ name = "marker", on = "local", command = "echo measured-here" }]

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
    s.kz(&["validate", "DIR"]).code(0);
    s.kz(&["drill", "DIR"])
        .code(1)
        .stderr_has("kz drill breaks things on purpose: run it on the lab")
        .stderr_has("(nothing was run)");
    s.kz(&["drill", "DIR", "blip", "--i-know-this-is-production"])
        .code(1)
        .stderr_has("without a terminal to type the stack's name on (nothing was run)");
    s.kz(&["drill", "DIR", "nope", "--i-know-this-is-production"])
        .code(1)
        .stderr_has("no drill `nope` in the stack (drills: blip, broken)");
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
    // The broken flag never heals: the failed check and what it saw, then the undo ran.
    assert!(out.contains("✗ expect       01_m.check.flag FAIL"), "{out}");
    assert!(
        out.contains("not passing within 1500ms: FAIL on local: exit 1"),
        "{out}"
    );
    assert!(out.contains("✓ restore      command pass"), "{out}");
    assert!(out.contains("FAILED in "), "{out}");
    assert!(out.contains("Drills: 1 passed, 1 failed."), "{out}");
    assert!(s.at("undo-ran").exists(), "the restore did not run");
    assert!(!s.at("broken").exists(), "the fault was not undone");
}
