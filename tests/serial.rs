//! `serial`, through the `kz` binary on three local hosts: the instances of a resource run one
//! host at a time in host order (and overlap without the key), and with `after_each` a failing
//! check on one host leaves the next hosts not attempted.

mod support;

use support::TestStack;

/// Three hosts, all this machine, declared out of name order.
fn three_hosts(name: &str) -> TestStack {
    let s = TestStack::new(name);
    let mut stack = format!("[stack]\nname = \"{name}\"\n");
    for h in ["h2", "h3", "h1"] {
        stack += &format!("\n[hosts.{h}]\ntransport = \"local\"\nlabels = {{ role = \"db\" }}\n");
    }
    s.write("stack.toml", &stack);
    s
}

/// A command on each host that logs its start and end around half a second of work.
fn logged(serial: &str) -> String {
    format!(
        r#"
[[command]]
name = "restart"
on = {{ role = "db" }}
run = "echo START ${{host.name}} >> @ROOT@/log; sleep 0.5; echo END ${{host.name}} >> @ROOT@/log"
{serial}
"#
    )
}

fn log(s: &TestStack) -> Vec<String> {
    std::fs::read_to_string(s.at("log"))
        .expect("the commands' log")
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn serial_runs_one_host_at_a_time_in_host_order() {
    let s = three_hosts("serial");
    s.write("01_db.toml", &logged("serial = true"));
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(
        log(&s),
        [
            "START h1", "END h1", "START h2", "END h2", "START h3", "END h3"
        ]
    );
}

/// Without `serial` the three commands overlap: the test above would see it.
#[test]
fn without_serial_the_hosts_overlap() {
    let s = three_hosts("parallel");
    s.write("01_db.toml", &logged(""));
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let lines = log(&s);
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines[..2].iter().all(|l| l.starts_with("START")),
        "expected overlapping runs: {lines:?}"
    );
}

/// Once applied, the chain through the check costs nothing: the check is read passing, and
/// nothing runs again.
#[test]
fn after_each_with_nothing_to_change_is_no_change() {
    let s = three_hosts("serial-steady");
    s.write(
        "01_db.toml",
        &(logged("serial = { after_each = \"check.ok\" }") + CHECK.replace("H2", "none").as_str()),
    );
    // The plan says the order; its JSON too.
    s.kz(&["plan", "DIR"]).code(0).stdout_has(
        "One host at a time:\n  01_db.command.restart: h1, then h2, then h3, each once 01_db.check.ok passes on the host before\n",
    );
    let j = s.kz(&["plan", "DIR", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&j.stdout).expect("a JSON plan");
    assert_eq!(
        doc["serial"],
        serde_json::json!([{
            "resource": "01_db.command.restart",
            "hosts": ["h1", "h2", "h3"],
            "after_each": "01_db.check.ok"
        }])
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(log(&s).len(), 6);
    let p = s.kz(&["plan", "DIR"]);
    p.code(0)
        .stdout_has("No changes. The hosts match the stack.");
    // Nothing changes: no order to show.
    assert!(!p.stdout.contains("One host at a time"), "{}", p.stdout);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(log(&s).len(), 6, "nothing ran again");
}

/// Passes on every host but `H2`.
const CHECK: &str = r#"
[[check]]
name = "ok"
on = { role = "db" }
depends_on = ["command.restart"]
command = "test ${host.name} != H2"
tries = 1
interval = "100ms"
deadline = "5s"
"#;

#[test]
fn a_failing_check_stops_the_next_hosts() {
    let s = three_hosts("serial-check");
    s.write(
        "01_db.toml",
        &(logged("serial = { after_each = \"check.ok\" }") + CHECK.replace("H2", "h2").as_str()),
    );
    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(1)
        .stdout_has("01_db.command.restart[h1]: created")
        .stdout_has("01_db.command.restart[h2]: created")
        .stdout_has("01_db.check.ok[h2]: failed")
        .stdout_has("01_db.command.restart[h3]: not attempted because 01_db.check.ok[h2] failed");
    assert_eq!(log(&s), ["START h1", "END h1", "START h2", "END h2"]);
    assert!(
        !r.stdout.contains("01_db.command.restart[h3]: created"),
        "{}",
        r.stdout
    );
}
