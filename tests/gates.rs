//! Gates (`[[check]]`) and provider progress, through the `kz` binary on the local host: a check
//! runs again after the changes it depends on, stops what depends on it when it fails, and lets
//! it run once it passes within its tries.

mod support;

use support::TestStack;

/// A flag file, a command that removes it (the upstream change), a check of the flag (the gate)
/// and a file that depends on the check.
fn gated(check_tries: u32) -> TestStack {
    let s = TestStack::new("gates");
    std::fs::create_dir_all(s.at("run")).expect("mkdir");
    std::fs::write(s.at("run/flag"), "up\n").expect("flag");
    s.write(
        "01_db.toml",
        &format!(
            r#"
[[command]]
name = "restart"
on = ["local"]
run = "rm -f @ROOT@/run/flag"
check = "test -f @ROOT@/run/restarted"

[[check]]
name = "up"
on = ["local"]
command = "test -f @ROOT@/run/flag || {{ echo flag is gone; exit 3; }}"
tries = {check_tries}
interval = "100ms"
deadline = "10s"
depends_on = ["command.restart"]

[[file]]
name = "app"
on = ["local"]
path = "@ROOT@/etc/app.conf"
content = "db = up\n"
depends_on = ["check.up"]
"#
        ),
    );
    s
}

#[test]
fn a_gate_that_fails_after_an_upstream_change_stops_what_depends_on_it() {
    let s = gated(2);
    // At plan time the flag is there: the gate passes, and runs again after the restart.
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("Gates:")
        .stdout_has(
            "01_db.check.up[local] passing; runs again at apply, after the changes it depends on",
        );
    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(1)
        .stdout_has("01_db.command.restart[local]: created")
        .stdout_has("01_db.check.up[local]: failed to verify")
        .stdout_has("gate: failed after 2 tries")
        .stdout_has("exit 3: flag is gone")
        .stdout_has("01_db.file.app[local]: not attempted because 01_db.check.up[local] failed");
    assert!(!s.at("etc/app.conf").exists(), "the gated file was written");
    // The check is never recorded: it changes nothing.
    let recorded = s.state_addresses();
    assert_eq!(recorded, vec!["01_db.command.restart[local]".to_string()]);
}

#[test]
fn a_gate_that_passes_on_its_third_try_lets_its_dependents_run() {
    let s = gated(3);
    // The check counts its runs: it fails until its fifth (the plan's read is the first, the
    // apply's own plan the second, then the apply's three tries).
    let counter = s.at("run/count");
    let text = std::fs::read_to_string(s.path().join("01_db.toml")).expect("read");
    let text = text
        .replace(
            "command = \"test -f",
            &format!(
                "command = \"n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 5 ] || {{ echo run $n; exit 1; }}; test -f",
                c = counter.display()
            ),
        )
        .replace(&format!("rm -f {}/run/flag", s.root()), "true");
    s.write("01_db.toml", &text);
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("01_db.check.up[local] failing (exit 1: run 1)");
    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(0)
        .stdout_has("try 1 of 3: exit 1: run 3")
        .stdout_has("try 2 of 3: exit 1: run 4")
        .stdout_has("01_db.check.up[local]: verified")
        .stdout_has("01_db.file.app[local]: created")
        .stdout_has("1 verified");
    assert_eq!(
        std::fs::read_to_string(&counter).expect("counter").trim(),
        "5",
        "two plans' reads and three tries"
    );
    assert_eq!(
        std::fs::read_to_string(s.at("etc/app.conf")).expect("app.conf"),
        "db = up\n"
    );
}

#[test]
fn a_gate_above_which_nothing_changed_is_not_run_again() {
    let s = gated(1);
    std::fs::write(s.at("run/restarted"), "").expect("restarted");
    let counter = s.at("run/count");
    let text = std::fs::read_to_string(s.path().join("01_db.toml")).expect("read");
    let text = text.replace(
        "command = \"test -f",
        &format!(
            "command = \"n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; test -f",
            c = counter.display()
        ),
    );
    s.write("01_db.toml", &text);
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("01_db.check.up[local] passing; nothing it depends on changes");
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("01_db.file.app[local]: created");
    // Read by the two plans, not run again by the apply.
    assert_eq!(
        std::fs::read_to_string(&counter).expect("counter").trim(),
        "2"
    );
}

#[test]
fn a_slow_change_reports_its_progress_while_it_runs() {
    let s = TestStack::new("slow");
    s.write(
        "01_app.toml",
        r#"
[[command]]
name = "migrate"
on = ["local"]
run = "sleep 3"
"#,
    );
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("01_app.command.migrate[local]: `run` still running after 2s")
        .stdout_has("01_app.command.migrate[local]: created");
}
