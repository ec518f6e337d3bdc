//! Secrets, saved plans, locking, interrupts and crashes: the promises kz makes about safety.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{TestStack, read};

const SECRET: &str = "s3cr3t-Pa55-w0rd";

fn secret_stack() -> TestStack {
    let s = TestStack::new("secrets");
    s.write(
        "04_redis.toml",
        r#"
[[file]]
name = "redis-conf"
on = ["local"]
path = "@ROOT@/redis.conf"
content = "port 6379\nrequirepass ${secret.redis_password}\n"
mode = "0640"

[[command]]
name = "auth-check"
on = ["local"]
run = "echo 'using ${secret.redis_password}'; echo 'bad ${secret.redis_password}' >&2; exit 1"
"#,
    );
    s
}

/// Every file under the stack's `.kz` and the given extra files, concatenated.
fn all_written(s: &TestStack, extra: &[&std::path::Path]) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(s.path().join(".kz"))
        .expect(".kz")
        .flatten()
    {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(e.path()).unwrap_or_default(),
        ));
    }
    for p in extra {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(p).unwrap_or_default(),
        ));
    }
    text
}

#[test]
fn apply_refuses_to_start_without_its_secrets_and_names_every_one() {
    let s = secret_stack();
    s.write(
        "05.toml",
        "[[file]]\nname = \"other\"\non = [\"local\"]\npath = \"@ROOT@/other\"\ncontent = \"${secret.other_token}\"\n",
    );
    s.kz(&["apply", "DIR", "--yes"])
        .code(1)
        .stderr_has("refusing to apply: 2 secrets are not set: KZ_SECRET_OTHER_TOKEN, KZ_SECRET_REDIS_PASSWORD (nothing was changed)");
    assert!(!s.at("redis.conf").exists());
    assert!(
        !s.path().join(".kz").exists(),
        "apply wrote state before refusing"
    );
    // Validate and plan work without secret values.
    s.kz(&["validate", "DIR"]).code(0);
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("content: (sensitive)")
        .stderr_has("")
        .stdout_has("warning: secrets not set: KZ_SECRET_OTHER_TOKEN, KZ_SECRET_REDIS_PASSWORD");
}

#[test]
fn a_secret_never_reaches_stdout_stderr_state_or_plan_files() {
    let s = secret_stack().env("KZ_SECRET_REDIS_PASSWORD", SECRET);
    let plan_file = s.root.path().join("saved.plan");
    let mut outputs = String::new();
    for args in [
        vec!["plan", "DIR"],
        vec!["plan", "DIR", "--json"],
        vec!["plan", "DIR", "--out", plan_file.to_str().expect("utf8")],
        vec!["apply", "DIR", "--yes"],
        vec!["plan", "DIR"],
        vec!["state", "show", "DIR", "04_redis.file.redis-conf[local]"],
        vec!["state", "show", "DIR", "04_redis.command.auth-check[local]"],
    ] {
        let r = s.kz(&args);
        outputs.push_str(&r.stdout);
        outputs.push_str(&r.stderr);
    }
    // The secret did reach the host, where it belongs.
    assert!(read(&s.at("redis.conf")).contains(SECRET));
    assert!(outputs.contains("(sensitive)"), "{outputs}");
    // The failing command printed it on both streams: kz masked it.
    assert!(outputs.contains("bad (sensitive)"), "{outputs}");
    assert!(
        !outputs.contains(SECRET),
        "secret in kz's output:\n{outputs}"
    );
    let written = all_written(&s, &[&plan_file]);
    assert!(
        written.contains("sensitive_hash"),
        "state records a keyed hash"
    );
    assert!(!written.contains(SECRET), "secret in state or plan file");

    // A changed secret is detected through the keyed hash, still without showing either value.
    let s2 = s.env("KZ_SECRET_REDIS_PASSWORD", "another-value-123");
    let r = s2.kz(&["plan", "DIR", "--refresh=false"]);
    r.code(0)
        .stdout_has("~ 04_redis.file.redis-conf[local] will be updated in place")
        .stdout_has("content: (sensitive)");
    assert!(!r.stdout.contains("another-value-123"));
}

fn saved_plan_stack() -> TestStack {
    let s = TestStack::new("saved");
    s.write(
        "01.toml",
        "[[file]]\nname = \"a\"\non = [\"local\"]\npath = \"@ROOT@/a\"\ncontent = \"one\\n\"\n",
    );
    s
}

#[test]
fn a_saved_plan_applies_exactly_what_was_reviewed() {
    let s = saved_plan_stack();
    let plan = s.root.path().join("p.json");
    let p = plan.to_str().expect("utf8");
    s.kz(&["plan", "DIR", "--out", p])
        .code(0)
        .stdout_has("Saved the plan to");
    assert_eq!(
        std::fs::metadata(&plan)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("meta"),
        0o600
    );
    s.kz(&["apply", p]).code(0).stdout_has("Apply: 1 applied");
    assert_eq!(read(&s.at("a")), "one\n");
    // The same plan again is stale: the state moved on.
    s.kz(&["apply", p])
        .code(1)
        .stderr_has("the saved plan is stale: it was made against state serial 0 but the state is now at serial");
}

#[test]
fn a_saved_plan_is_refused_when_the_stack_changed() {
    let s = saved_plan_stack();
    let plan = s.root.path().join("p.json");
    let p = plan.to_str().expect("utf8");
    s.kz(&["plan", "DIR", "--out", p]).code(0);
    s.write(
        "01.toml",
        "[[file]]\nname = \"a\"\non = [\"local\"]\npath = \"@ROOT@/a\"\ncontent = \"two\\n\"\n",
    );
    s.kz(&["apply", p])
        .code(1)
        .stderr_has("the saved plan is stale: the stack files changed since it was made");
    assert!(!s.at("a").exists());
}

#[test]
fn a_saved_plan_is_refused_when_a_secret_changed() {
    let s = secret_stack().env("KZ_SECRET_REDIS_PASSWORD", SECRET);
    let plan = s.root.path().join("p.json");
    let p = plan.to_str().expect("utf8");
    s.kz(&["plan", "DIR", "--out", p]).code(0);
    let s = s.env("KZ_SECRET_REDIS_PASSWORD", "changed-in-between");
    s.kz(&["apply", p])
        .code(1)
        .stderr_has("secret values differ from when it was made");
    // Saving a plan without its secrets is refused: it could not be checked later.
    let s3 = secret_stack();
    s3.kz(&["plan", "DIR", "--out", p])
        .code(1)
        .stderr_has("refusing to save a plan: 1 secret is not set: KZ_SECRET_REDIS_PASSWORD");
}

fn slow_stack(n: usize, sleep: &str) -> TestStack {
    let s = TestStack::new("slow");
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[command]]\nname = \"c{i:03}\"\non = [\"local\"]\nrun = \"sleep {sleep}; touch @ROOT@/done-{i:03}\"\ncheck = \"test -e @ROOT@/done-{i:03}\"\n\n"
        ));
    }
    s.write("01.toml", &text);
    s
}

#[test]
fn a_second_apply_fails_at_once_naming_the_holder() {
    let s = slow_stack(1, "3");
    let mut first = s
        .command(&["apply", "DIR", "--yes"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait until the first apply holds the lock (its holder record is written).
    let lock = s.path().join(".kz/state.lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&lock).map_or(true, |t| t.is_empty()) {
        assert!(Instant::now() < deadline, "first apply never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(1)
        .stderr_has("state is locked by pid ")
        .stderr_has(&format!("pid {}", first.id()))
        .stderr_has("kz --color never apply");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the second apply waited"
    );
    // With a lock timeout, it waits for the first and then goes on.
    let r = s.kz(&["apply", "DIR", "--yes", "--lock-timeout", "20s"]);
    r.code(0).stderr_has(&format!(
        "Waiting up to 20s for the state lock held by pid {}",
        first.id()
    ));
    assert!(first.wait().expect("wait").success());
}

#[test]
fn kill_9_mid_apply_leaves_a_valid_state_and_the_next_apply_converges() {
    let s = slow_stack(200, "0.05");
    let mut child = s
        .command(&["apply", "DIR", "--yes", "--parallelism", "4"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    // Let it get part of the way.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = std::fs::read_dir(s.root.path())
            .map(|d| d.count())
            .unwrap_or(0);
        if done >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "apply made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    // The commands that were in flight outlive kz (as on a real host) and finish.
    std::thread::sleep(Duration::from_millis(500));
    let recorded = s.state_addresses().len();
    let done = std::fs::read_dir(s.root.path()).expect("root").count();
    assert!(recorded > 0 && recorded < 200, "recorded {recorded}");
    assert!(done >= recorded, "state records more than was done");
    // At most the changes in flight were done but not recorded: the next plan adopts them.
    let r = s.kz(&["plan", "DIR", "--json"]);
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        v["summary"]["adopt"].as_u64(),
        Some((done - recorded) as u64)
    );
    assert!(
        done - recorded <= 4,
        "more than the in-flight changes were lost: {}",
        done - recorded
    );
    // The kernel released the dead process's lock: the next apply converges at once.
    s.kz(&["apply", "DIR", "--yes", "--parallelism", "20"])
        .code(0);
    assert_eq!(s.state_addresses().len(), 200);
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn ctrl_c_lets_running_changes_finish_starts_nothing_new_and_saves_state() {
    let s = TestStack::new("interrupt");
    let mut text = String::new();
    for i in 0..6 {
        text.push_str(&format!(
            "[[command]]\nname = \"c{i}\"\non = [\"local\"]\nrun = \"touch @ROOT@/started-{i}; sleep 1; touch @ROOT@/done-{i}\"\n\n"
        ));
    }
    s.write("01.toml", &text);
    let child = s
        .command(&["apply", "DIR", "--yes", "--parallelism", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Interrupt once the first two changes run (a fixed delay would race a slow plan).
    wait_for_files(&s, "started-", 2);
    // SAFETY-free: signal through the kill command, as a user's Ctrl-C would.
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(ok.success());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Interrupted: nothing new was started"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Apply: 2 applied, 0 failed, 4 not attempted."),
        "{stdout}"
    );
    assert_eq!(s.state_addresses().len(), 2);
    // The lock was released.
    s.kz(&["apply", "DIR", "--yes", "--parallelism", "6"])
        .code(0);
    assert_eq!(s.state_addresses().len(), 6);
}

#[test]
fn force_unlock_reports_a_free_lock() {
    let s = saved_plan_stack();
    s.kz(&["force-unlock", "DIR"])
        .code(0)
        .stdout_has("The state is not locked.");
}

#[test]
fn a_corrupt_state_is_an_error_not_a_panic() {
    let s = saved_plan_stack();
    std::fs::create_dir_all(s.path().join(".kz")).expect("mkdir");
    std::fs::write(s.path().join(".kz/state.json"), "{ not json").expect("write");
    let r = s.kz(&["plan", "DIR"]);
    r.code(1).stderr_has("invalid state file");
    assert!(!r.stderr.contains("panicked"));
}

#[test]
fn a_second_ctrl_c_aborts_running_changes_and_kills_their_processes() {
    let s = TestStack::new("abort");
    s.write(
        "01.toml",
        "[[command]]\nname = \"long\"\non = [\"local\"]\nrun = \"sleep 29.4171; touch @ROOT@/finished\"\n",
    );
    let child = s
        .command(&["apply", "DIR", "--yes"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id().to_string();
    // Interrupt once the command runs (a fixed delay would race a slow plan).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::process::Command::new("pgrep")
        .args(["-f", "^sleep 29.4171"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
    {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..2 {
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill");
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "abort did not stop the apply"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Second interrupt: aborting 1 running change."),
        "{stdout}"
    );
    // The aborted command's process group is gone: nothing is left to finish its work.
    let ps = std::process::Command::new("sh")
        .args(["-c", "ps -eo args | grep -c '^[s]leep 29.4171'"])
        .output()
        .expect("ps");
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "0",
        "the aborted process survived"
    );
    assert!(s.state_addresses().is_empty());
}

#[test]
fn a_secret_too_short_to_mask_is_refused() {
    let s = secret_stack().env("KZ_SECRET_REDIS_PASSWORD", "x");
    s.kz(&["plan", "DIR"])
        .code(1)
        .stderr_has("KZ_SECRET_REDIS_PASSWORD must hold at least 6 characters");
}

#[test]
fn a_secret_dropped_from_a_file_stays_masked_in_the_diff_and_the_plan_file() {
    let s = secret_stack().env("KZ_SECRET_REDIS_PASSWORD", SECRET);
    s.kz(&["apply", "DIR", "--yes"]).code(1);
    s.write(
        "04_redis.toml",
        "[[file]]\nname = \"redis-conf\"\non = [\"local\"]\npath = \"@ROOT@/redis.conf\"\ncontent = \"include /etc/redis/auth.conf\\n\"\nmode = \"0640\"\n",
    );
    let plan_file = s.root.path().join("p.json");
    let r = s.kz(&["plan", "DIR", "--out", plan_file.to_str().expect("utf8")]);
    r.code(0)
        .stdout_has("content: (sensitive) → \"include /etc/redis/auth.conf\\n\"");
    assert!(!r.stdout.contains(SECRET), "{}", r.stdout);
    assert!(!read(&plan_file).contains(SECRET));
}

#[test]
fn secrets_are_masked_in_ascii_mode_and_kept_out_of_the_process_list() {
    let secret = "Grüße-2024-geheim";
    let s = TestStack::new("ascii-secret").env("KZ_SECRET_TOKEN", secret);
    s.write(
        "01.toml",
        "[[command]]\nname = \"auth\"\non = [\"local\"]\nrun = \"sleep 1.5; echo \\\"bad ${secret.token}\\\" >&2; exit 1\"\n",
    );
    let child = s
        .command(&["apply", "DIR", "--yes"])
        .env("LANG", "C")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(700));
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("geheim"),
        "the secret is visible in ps"
    );
    assert!(stdout.contains("bad (sensitive)"), "{stdout}");
    assert!(!stdout.contains("geheim"), "{stdout}");
}

#[test]
fn an_environment_change_makes_a_saved_plan_stale() {
    let s = TestStack::new("envplan").env("KZ_TEST_GREETING", "hello");
    s.write(
        "01.toml",
        "[[file]]\nname = \"g\"\non = [\"local\"]\npath = \"@ROOT@/g\"\ncontent = \"${env.KZ_TEST_GREETING}\\n\"\n",
    );
    let plan_file = s.root.path().join("p.json");
    let p = plan_file.to_str().expect("utf8");
    s.kz(&["plan", "DIR", "--out", p]).code(0);
    let s = s.env("KZ_TEST_GREETING", "changed");
    s.kz(&["apply", p])
        .code(1)
        .stderr_has("the stack files changed since it was made");
}

/// Waits until `count` files whose names start with `prefix` exist in the stack's scratch root.
fn wait_for_files(s: &TestStack, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = std::fs::read_dir(s.root.path())
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .count()
            })
            .unwrap_or(0);
        if n >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {count} `{prefix}` files appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
