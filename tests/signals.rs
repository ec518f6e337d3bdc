//! Signals leave nothing running (issue 11, item 12): an interrupted plan ends its probes, and
//! SIGTERM to an apply aborts what runs, records what finished, and leaves no command to finish
//! after kz has exited.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use support::{TestStack, command_lines};

/// How many processes run `sleep MARK`.
fn running(mark: &str) -> usize {
    let needle = format!("sleep {mark}");
    command_lines()
        .iter()
        .filter(|l| l.trim_end() == needle)
        .count()
}

/// Waits until `n` processes run `sleep MARK`.
fn wait_running(mark: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(mark) < n {
        assert!(Instant::now() < deadline, "the commands did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// Waits for kz to exit, boundedly, and returns its output.
fn finish(mut child: Child) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "kz did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Nothing runs `sleep MARK` any more, within a few seconds.
fn assert_none_left(mark: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(mark) > 0 {
        assert!(
            Instant::now() < deadline,
            "a process kz started outlived it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checking(mark: &str) -> TestStack {
    let s = TestStack::new("sig");
    s.write(
        "01_app.toml",
        &format!(
            r#"
[[command]]
name = "slow-check"
on = ["local"]
run = "true"
check = "sleep {mark}; touch @ROOT@/checked"
"#
        ),
    );
    s
}

#[test]
fn sigterm_and_sigint_to_a_plan_end_its_probes() {
    for (sig, mark, word) in [
        ("TERM", "31.4159", "SIGTERM"),
        ("INT", "31.4158", "an interrupt"),
    ] {
        let s = checking(mark);
        let mut c = s.command(&["plan", "DIR"]);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().expect("kz plan");
        wait_running(mark, 1);
        signal(&child, sig);
        let out = finish(child);
        assert_eq!(out.status.code(), Some(1), "{sig}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("stopped by {word}")),
            "{sig}: {stderr}"
        );
        assert_none_left(mark);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!s.at("checked").exists(), "{sig}: the probe ran on");
    }
}

#[test]
fn sigterm_to_an_apply_aborts_what_runs_and_records_what_finished() {
    let mark = "31.2718";
    let s = TestStack::new("sigapply");
    let mut toml = String::from(
        "[[command]]\nname = \"quick\"\non = [\"local\"]\nrun = \"touch @ROOT@/quick\"\n",
    );
    for i in 0..4 {
        toml.push_str(&format!(
            "\n[[command]]\nname = \"slow{i}\"\non = [\"local\"]\nrun = \"sleep {mark}; touch @ROOT@/done{i}\"\n"
        ));
    }
    s.write("01_app.toml", &toml);
    let mut c = s.command(&["apply", "DIR", "--yes", "--parallelism", "5"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("kz apply");
    wait_running(mark, 4);
    signal(&child, "TERM");
    let out = finish(child);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_none_left(mark);
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..4 {
        assert!(
            !s.at(&format!("done{i}")).exists(),
            "slow{i} finished after kz exited"
        );
    }
    // What finished before the signal is recorded; what was aborted is not.
    assert!(s.at("quick").exists());
    assert_eq!(
        s.state_addresses(),
        vec!["01_app.command.quick[local]".to_string()]
    );
}

/// A health check that keeps failing only waits: the first SIGINT stops its retries at once
/// (there is no change to finish), where it used to hold the apply for its whole deadline.
#[test]
fn sigint_stops_a_health_check_s_retries_at_once() {
    let s = TestStack::new("siggate");
    s.write(
        "01_app.toml",
        r#"
[[command]]
name = "made"
on = ["local"]
run = "touch @ROOT@/made"
check = "test -e @ROOT@/made"

[[check]]
name = "never"
on = ["local"]
depends_on = ["command.made"]
command = "echo try >> @ROOT@/tries; false"
tries = 100
interval = "5s"
deadline = "10m"
"#,
    );
    let mut c = s.command(&["apply", "DIR", "--yes"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("kz apply");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The plan reads the check once; apply's first try is the second line.
    let tries = || std::fs::read_to_string(s.at("tries")).map_or(0, |t| t.lines().count());
    while tries() < 2 {
        assert!(Instant::now() < deadline, "the check never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    signal(&child, "INT");
    let out = finish(child);
    let waited = sent.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        waited < Duration::from_secs(4),
        "the first interrupt waited {waited:?} for the check's retries"
    );
    assert!(stdout.contains("stopped waiting: interrupted"), "{stdout}");
}
