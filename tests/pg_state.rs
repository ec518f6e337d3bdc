//! The PostgreSQL state backend through the real `kz` binary, against a real PostgreSQL server
//! (tests/support/pg.rs): storage, locking, crashes, stale writers, history, migrations, and an
//! outage in the middle of an apply.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::pg::Postgres;
use support::{TestStack, read};

const URL_ENV: &str = "KZ_STATE_PG";

/// A stack named `name` with one local host, its state in `pg` (`[state]` gets `state_extra`).
fn pg_stack(name: &str, pg: &Postgres, state_extra: &str) -> TestStack {
    let s = TestStack::new(name).env(URL_ENV, &pg.url());
    s.write(
        "stack.toml",
        &format!(
            "[stack]\nname = \"{name}\"\n\n[state]\nbackend = \"postgres\"\nurl_env = \"{URL_ENV}\"\n{state_extra}\n\n[hosts.local]\ntransport = \"local\"\nlabels = {{ role = \"app\" }}\n"
        ),
    );
    s
}

/// A module with one file resource holding `content`.
fn file_module(s: &TestStack, content: &str) {
    s.write(
        "01_files.toml",
        &format!(
            "[[file]]\nname = \"motd\"\non = [\"local\"]\npath = \"@ROOT@/etc/motd\"\ncontent = \"{content}\\n\"\n"
        ),
    );
}

/// A module with one command that marks its start in `ROOT/started`, then runs `then`.
fn slow_module(s: &TestStack, then: &str) {
    s.write(
        "01_slow.toml",
        &format!(
            "[[command]]\nname = \"slow\"\non = [\"local\"]\nrun = \"touch @ROOT@/started; {then}\"\n"
        ),
    );
}

/// The serial the database holds for `stack`, if any.
fn db_serial(pg: &Postgres, stack: &str) -> Option<i64> {
    let out = pg.psql(&format!(
        "SELECT serial FROM kz.states WHERE stack = '{stack}'"
    ));
    (!out.is_empty()).then(|| out.parse().expect("serial is a number"))
}

/// The state document the database holds for `stack`.
fn db_document(pg: &Postgres, stack: &str) -> serde_json::Value {
    let out = pg.psql(&format!(
        "SELECT document::text FROM kz.states WHERE stack = '{stack}'"
    ));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("document of {stack}: {e}: {out}"))
}

fn addresses(doc: &serde_json::Value) -> Vec<String> {
    doc["resources"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// `kz plan DIR --json --refresh=false`, parsed.
fn plan_json(s: &TestStack) -> serde_json::Value {
    let r = s.kz(&["plan", "DIR", "--json", "--refresh=false"]);
    r.code(0);
    serde_json::from_str(&r.stdout).expect("plan --json prints JSON")
}

#[track_caller]
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(s: &TestStack, args: &[&str]) -> Child {
    s.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kz")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits for a child with a deadline; kills it (and fails) past it.
#[track_caller]
fn finish_within(mut child: Child, timeout: Duration, what: &str) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("collect output");
            panic!("{what} did not end within {timeout:?}: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a prepared command: exit code, stdout, stderr.
fn output(mut c: Command) -> (i32, String, String) {
    let o = c.output().expect("run kz");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn apply_stores_the_state_in_the_database_and_nothing_locally() {
    let pg = Postgres::start();
    let s = pg_stack("round", &pg, "");
    file_module(&s, "hello");
    s.write(
        "02_cmds.toml",
        "[[command]]\nname = \"marker\"\non = [\"local\"]\nrun = \"touch @ROOT@/marker\"\n",
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(2)
        .stdout_has("Plan: 2 to create");
    // A plan reads the database but writes nothing to it.
    assert_eq!(db_serial(&pg, "round"), None, "plan wrote a state");

    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 2 applied, 0 failed, 0 not attempted.");
    assert_eq!(read(&s.at("etc/motd")), "hello\n");
    assert!(s.at("marker").exists());

    let serial = db_serial(&pg, "round").expect("a row in kz.states for the stack");
    assert!(serial > 0, "serial {serial}");
    let doc = db_document(&pg, "round");
    let expected = vec![
        "01_files.file.motd[local]".to_string(),
        "02_cmds.command.marker[local]".to_string(),
    ];
    assert_eq!(addresses(&doc), expected);
    assert_eq!(doc["serial"].as_i64(), Some(serial), "document serial");
    let history = pg.psql("SELECT count(*) FROM kz.history WHERE stack = 'round'");
    assert_ne!(history, "0", "no history kept");

    let r = s.kz(&["state", "list", "DIR"]);
    r.code(0);
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), expected);
    s.kz(&["state", "show", "DIR", "01_files.file.motd[local]"])
        .code(0)
        .stdout_has("content = hello");

    // In sync: the next plan (which reads the state back from the database) is a no-op.
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");
    let v = plan_json(&s);
    assert_eq!(v["state"]["serial"].as_i64(), Some(serial));
    assert_eq!(v["state"]["lineage"], doc["lineage"]);

    assert!(
        !s.path().join(".kz/state.json").exists(),
        "a local state file was written"
    );
    // The lock is released once apply ends.
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0"
    );
}

#[test]
fn the_lock_is_released_and_its_holder_row_removed_before_kz_exits() {
    let pg = Postgres::start();
    let s = pg_stack("release", &pg, "");
    for i in 0..5 {
        file_module(&s, &format!("v{i}"));
        // Right after the previous command, without waiting for the lock: it must be free.
        s.kz(&["apply", "DIR", "--yes", "--lock-timeout", "0s"])
            .code(0)
            .stdout_has("Apply: 1 applied");
        assert_eq!(
            pg.psql("SELECT count(*) FROM kz.locks WHERE stack = 'release'"),
            "0",
            "the holder row outlived kz"
        );
        assert_eq!(
            pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
            "0",
            "the advisory lock outlived kz"
        );
    }
    // A lock dropped rather than released (state push) is released the same way.
    let pushed = s.path().join("pushed.json");
    std::fs::write(&pushed, db_document(&pg, "release").to_string()).expect("write");
    s.kz(&["state", "push", "DIR", pushed.to_str().expect("utf8")])
        .code(0);
    assert_eq!(
        pg.psql("SELECT count(*) FROM kz.locks WHERE stack = 'release'"),
        "0",
        "the holder row outlived kz state push"
    );
}

#[test]
fn a_second_apply_fails_at_once_naming_the_holder_and_a_third_waits() {
    let pg = Postgres::start();
    let s = pg_stack("locked", &pg, "");
    slow_module(&s, "sleep 3");
    let first = spawn(&s, &["apply", "DIR", "--yes"]);
    let first_pid = first.id();
    // The command runs with the lock held.
    wait_until(
        "the first apply to start its command",
        Duration::from_secs(20),
        || s.at("started").exists(),
    );
    let started = Instant::now();

    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(1)
        .stderr_has(&format!("state is locked by pid {first_pid} "))
        .stderr_has("postgres kz.locks[locked]")
        .stderr_has("apply");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the second apply waited {:?} with --lock-timeout 0",
        started.elapsed()
    );

    // With a lock timeout, the third waits for the first, then sees what it recorded.
    let r = s.kz(&["apply", "DIR", "--yes", "--lock-timeout", "20s"]);
    r.code(0).stdout_has("No changes.");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the third apply did not wait for the first ({:?})",
        started.elapsed()
    );
    let o = finish_within(first, Duration::from_secs(20), "the first apply");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Apply: 1 applied, 0 failed, 0 not attempted."),
        "{}",
        text(&o)
    );
    assert_eq!(
        addresses(&db_document(&pg, "locked")),
        vec!["01_slow.command.slow[local]".to_string()]
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0",
        "a lock outlived its holder"
    );
}

#[test]
fn kill_9_of_the_holder_frees_the_lock_within_seconds() {
    let pg = Postgres::start();
    let s = pg_stack("killed", &pg, "");
    // The command records its pid so that the test can end it afterwards: it outlives kz.
    slow_module(&s, "echo $$ > @ROOT@/pid; exec sleep 30");
    let mut holder = s
        .command(&["apply", "DIR", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kz");
    wait_until(
        "the apply to start its command",
        Duration::from_secs(20),
        || std::fs::read_to_string(s.at("pid")).is_ok_and(|p| p.ends_with('\n')),
    );
    // It does hold the lock.
    s.kz(&["apply", "DIR", "--yes"])
        .code(1)
        .stderr_has(&format!("state is locked by pid {} ", holder.id()));
    holder.kill().expect("kill -9");
    holder.wait().expect("reap");
    let sleeper = read(&s.at("pid")).trim().to_string();

    // A fast command now, so that only the lock wait is measured.
    slow_module(&s, "touch @ROOT@/done");
    let started = Instant::now();
    let r = s.kz(&["apply", "DIR", "--yes", "--lock-timeout", "10s"]);
    let took = started.elapsed();
    let _ = Command::new("kill").arg(&sleeper).status();
    r.code(0)
        .stdout_has("Apply: 1 applied, 0 failed, 0 not attempted.");
    assert!(
        took < Duration::from_secs(10),
        "the lock of the killed apply was not freed in time ({took:?})"
    );
    assert!(s.at("done").exists());
}

#[test]
fn pushing_a_stale_state_is_refused_unless_forced() {
    let pg = Postgres::start();
    let s = pg_stack("stale", &pg, "");
    file_module(&s, "one");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let old_serial = db_serial(&pg, "stale").expect("state written");
    let old = s.root.path().join("old-state.json");
    std::fs::write(&old, db_document(&pg, "stale").to_string()).expect("write old state");
    let old_arg = old.to_str().expect("utf8 path");

    // Another apply moves the state on.
    file_module(&s, "two");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let current = db_serial(&pg, "stale").expect("state written");
    assert!(current > old_serial, "{current} <= {old_serial}");

    s.kz(&["state", "push", "DIR", old_arg])
        .code(1)
        .stderr_has("moved on")
        .stderr_has(&format!("serial {current} there, {old_serial} in the file"));
    assert_eq!(
        db_serial(&pg, "stale"),
        Some(current),
        "a refused push wrote"
    );

    s.kz(&["state", "push", "DIR", old_arg, "--force"])
        .code(0)
        .stdout_has(&format!("as serial {}.", current + 1));
    assert_eq!(db_serial(&pg, "stale"), Some(current + 1));
    // The pushed copy is what the database now holds: it records the old content.
    let r = s.kz(&["plan", "DIR", "--json", "--refresh=false"]);
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["state"]["serial"].as_i64(), Some(current + 1));
    assert_eq!(v["changes"][0]["action"], "update", "{}", r.stdout);
    assert_eq!(v["changes"][0]["attributes"][0]["before"], "one\n");
    // The old file itself is left alone (it is not the rescue file).
    assert!(old.exists());
}

#[test]
fn after_force_unlock_the_old_holder_cannot_overwrite_the_new_state() {
    let pg = Postgres::start();
    let s = pg_stack("broken", &pg, "retry = \"1s\"");
    file_module(&s, "base");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.write(
        "01_cmds.toml",
        r#"
[[command]]
name = "a"
on = ["local"]
run = "touch @ROOT@/a-started; sleep 3; touch @ROOT@/a"
check = "test -e @ROOT@/a"

[[command]]
name = "b"
on = ["local"]
run = "sleep 5; touch @ROOT@/b"
check = "test -e @ROOT@/b"
"#,
    );
    let first = spawn(
        &s,
        &[
            "apply",
            "DIR",
            "--yes",
            "--parallelism",
            "1",
            "--target",
            "01_cmds.command.a",
        ],
    );
    let first_pid = first.id();
    wait_until("the first apply to start", Duration::from_secs(20), || {
        s.at("a-started").exists()
    });
    s.kz(&["force-unlock", "DIR"])
        .code(0)
        .stdout_has(&format!("Broke the lock held by pid {first_pid} "));
    // Meanwhile another kz takes the lock and records b.
    s.write(
        "01_cmds.toml",
        &read(&s.path().join("01_cmds.toml")).replace("sleep 5; ", ""),
    );
    s.kz(&["apply", "DIR", "--yes", "--target", "01_cmds.command.b"])
        .code(0)
        .stdout_has("Apply: 1 applied");
    let moved_on = db_serial(&pg, "broken").expect("b recorded");

    // The first apply read the state before b was recorded: its write must be refused, not
    // silently drop b from the state.
    let o = finish_within(first, Duration::from_secs(30), "the first apply");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("stale state"), "{out}");
    assert!(out.contains("state.rescue.json"), "{out}");
    // The database never went away: the message must not wait for it to come back.
    assert!(!out.contains("once the database is back"), "{out}");
    assert!(!out.contains("Once the database is back"), "{out}");
    assert!(out.contains("kz state push --force"), "{out}");
    // The rescue file holds the state and its hash key: `.kz` is private and git-ignored.
    let kz_dir = s.path().join(".kz");
    let mode = std::fs::metadata(&kz_dir)
        .expect(".kz")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, ".kz mode {mode:o}");
    assert_eq!(
        std::fs::read_to_string(kz_dir.join(".gitignore"))
            .unwrap_or_default()
            .trim(),
        "*",
        ".kz has no .gitignore of `*`"
    );
    assert!(s.at("a").exists());
    let doc = db_document(&pg, "broken");
    assert_eq!(
        addresses(&doc),
        vec![
            "01_cmds.command.b[local]".to_string(),
            "01_files.file.motd[local]".to_string()
        ],
        "the stale writer overwrote the state"
    );
    assert_eq!(db_serial(&pg, "broken"), Some(moved_on));
    // Its rescue file is behind the database: pushing it needs --force.
    let rescue = s.path().join(".kz/state.rescue.json");
    s.kz(&["state", "push", "DIR", rescue.to_str().expect("utf8")])
        .code(1)
        .stderr_has("moved on");
    // While that rescue file waits, planning is refused: it would forget what it records.
    s.kz(&["plan", "DIR"]).code(1).stderr_has("push it first");
    // The operator judges it obsolete (the database moved on) and removes it; the next apply
    // adopts what the first one did.
    std::fs::remove_file(&rescue).expect("remove the rescue file");
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("01_cmds.command.a[local]: adopted");
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn history_lists_every_version_and_rollback_restores_one_as_a_new_serial() {
    let pg = Postgres::start();
    let s = pg_stack("hist", &pg, "");
    file_module(&s, "one");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let after_first = db_serial(&pg, "hist").expect("state written");
    file_module(&s, "two");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let after_second = db_serial(&pg, "hist").expect("state written");
    assert!(after_second > after_first);
    assert_eq!(read(&s.at("etc/motd")), "two\n");

    let r = s.kz(&["state", "history", "DIR"]);
    r.code(0).stdout_has("serial").stdout_has("changes");
    let rows: Vec<(i64, String)> =
        r.stdout
            .lines()
            .skip(1)
            .map(|l| {
                let mut f = l.split_whitespace();
                let serial = f.next().and_then(|x| x.parse().ok()).unwrap_or_else(|| {
                    panic!("history line without a serial: {l:?}\n{}", r.stdout)
                });
                let _at = f.next();
                let summary: Vec<&str> = f.take(3).collect();
                (serial, summary.join(" "))
            })
            .collect();
    let serials: Vec<i64> = rows.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        serials,
        (1..=after_second).collect::<Vec<_>>(),
        "every serial, oldest first\n{}",
        r.stdout
    );
    for (_, summary) in &rows {
        let parts: Vec<&str> = summary.split(' ').collect();
        assert!(
            parts.len() == 3
                && ["+", "~", "-"].iter().zip(&parts).all(|(p, x)| {
                    x.strip_prefix(p)
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                }),
            "summary {summary:?} is not `+N ~N -N`\n{}",
            r.stdout
        );
    }
    assert_eq!(rows[0].1, "+1 ~0 -0", "{}", r.stdout);
    assert!(
        rows.iter()
            .any(|(n, sum)| *n > after_first && sum == "+0 ~1 -0"),
        "the second apply's update is not in the history\n{}",
        r.stdout
    );

    s.kz(&[
        "state",
        "rollback",
        "DIR",
        &after_first.to_string(),
        "--yes",
    ])
    .code(0)
    .stdout_has(&format!(
        "Restored serial {after_first} as serial {}.",
        after_second + 1
    ));
    let v = plan_json(&s);
    assert_eq!(v["state"]["serial"].as_i64(), Some(after_second + 1));
    // The state records the first content again, so against the state the file needs updating.
    assert_eq!(v["summary"]["update"].as_u64(), Some(1), "{v}");
    assert_eq!(v["changes"][0]["address"], "01_files.file.motd[local]");
    assert_eq!(v["changes"][0]["attributes"][0]["name"], "content");
    assert_eq!(v["changes"][0]["attributes"][0]["before"], "one\n");
    assert_eq!(v["changes"][0]["attributes"][0]["after"], "two\n");
    // The host was not touched, and the rollback is itself a version in the history.
    assert_eq!(read(&s.at("etc/motd")), "two\n");
    s.kz(&["state", "history", "DIR"])
        .code(0)
        .stdout_has("state rollback");

    // An unknown serial is refused.
    s.kz(&["state", "rollback", "DIR", "999", "--yes"])
        .code(1)
        .stderr_has("no stored version with serial 999");
}

#[test]
fn migrate_local_to_postgres_and_back_keeps_lineage_and_serial() {
    let pg = Postgres::start();
    // A local stack first (no [state] table).
    let s = TestStack::new("mig").env(URL_ENV, &pg.url());
    file_module(&s, "one");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let v = plan_json(&s);
    let lineage = v["state"]["lineage"].as_str().expect("lineage").to_string();
    let serial = v["state"]["serial"].as_i64().expect("serial");
    assert!(serial > 0);

    s.kz(&[
        "state",
        "migrate",
        "DIR",
        "--to",
        "postgres",
        "--url-env",
        URL_ENV,
    ])
    .code(0)
    .stdout_has(&format!("lineage {lineage}, serial {serial}"));
    let toml = read(&s.path().join("stack.toml"));
    assert!(toml.contains("backend = \"postgres\""), "{toml}");
    assert!(toml.contains(&format!("url_env = \"{URL_ENV}\"")), "{toml}");
    assert!(
        toml.contains("name = \"mig\""),
        "the rest of stack.toml was lost: {toml}"
    );
    assert_eq!(db_serial(&pg, "mig"), Some(serial));
    assert_eq!(db_document(&pg, "mig")["lineage"], lineage.as_str());
    let v = plan_json(&s);
    assert_eq!(v["state"]["lineage"], lineage.as_str());
    assert_eq!(v["state"]["serial"].as_i64(), Some(serial));
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
    // Migrating to where it already is is refused.
    s.kz(&[
        "state",
        "migrate",
        "DIR",
        "--to",
        "postgres",
        "--url-env",
        URL_ENV,
    ])
    .code(1)
    .stderr_has("already on this backend");

    // Work on postgres moves the serial past the local copy left behind.
    file_module(&s, "two");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let moved = db_serial(&pg, "mig").expect("state");
    assert!(moved > serial);
    let local: serde_json::Value =
        serde_json::from_str(&read(&s.path().join(".kz/state.json"))).expect("local copy");
    assert_eq!(
        local["serial"].as_i64(),
        Some(serial),
        "the local copy changed"
    );

    s.kz(&["state", "migrate", "DIR", "--to", "local"])
        .code(0)
        .stdout_has(&format!("lineage {lineage}, serial {moved}"));
    let toml = read(&s.path().join("stack.toml"));
    assert!(toml.contains("backend = \"local\""), "{toml}");
    assert!(!toml.contains("url_env"), "{toml}");
    let local: serde_json::Value =
        serde_json::from_str(&read(&s.path().join(".kz/state.json"))).expect("local state");
    assert_eq!(local["serial"].as_i64(), Some(moved));
    assert_eq!(local["lineage"], lineage.as_str());
    let v = plan_json(&s);
    assert_eq!(v["state"]["lineage"], lineage.as_str());
    assert_eq!(v["state"]["serial"].as_i64(), Some(moved));
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");
}

#[test]
fn another_lineage_of_the_same_stack_is_never_overwritten() {
    let pg = Postgres::start();
    // Two directories that both call their stack `twin`, each with its own local state.
    let a = TestStack::new("twin").env(URL_ENV, &pg.url());
    let b = TestStack::new("twin").env(URL_ENV, &pg.url());
    file_module(&a, "from a");
    file_module(&b, "from b");
    a.kz(&["apply", "DIR", "--yes"]).code(0);
    b.kz(&["apply", "DIR", "--yes"]).code(0);
    let lineage_a = plan_json(&a)["state"]["lineage"].clone();
    assert_ne!(lineage_a, plan_json(&b)["state"]["lineage"]);

    a.kz(&[
        "state",
        "migrate",
        "DIR",
        "--to",
        "postgres",
        "--url-env",
        URL_ENV,
    ])
    .code(0);
    b.kz(&[
        "state",
        "migrate",
        "DIR",
        "--to",
        "postgres",
        "--url-env",
        URL_ENV,
    ])
    .code(1)
    .stderr_has("already holds another state");
    assert!(
        !read(&b.path().join("stack.toml")).contains("postgres"),
        "stack.toml was switched although the copy was refused"
    );
    assert_eq!(db_document(&pg, "twin")["lineage"], lineage_a);

    // Pushing the other lineage's state file is refused too.
    let b_state = b.path().join(".kz/state.json");
    a.kz(&[
        "state",
        "push",
        "DIR",
        b_state.to_str().expect("utf8"),
        "--force",
    ])
    .code(1)
    .stderr_has("holds another lineage");
    assert_eq!(db_document(&pg, "twin")["lineage"], lineage_a);
    a.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn postgres_stopped_mid_apply_leaves_a_rescue_file_that_push_restores() {
    let mut pg = Postgres::start();
    let s = pg_stack("outage", &pg, "retry = \"2s\"");
    let mut module = String::new();
    for i in 0..4 {
        module.push_str(&format!(
            "[[command]]\nname = \"c{i}\"\non = [\"local\"]\nrun = \"sleep 1; touch @ROOT@/done-{i}\"\ncheck = \"test -e @ROOT@/done-{i}\"\n\n"
        ));
    }
    s.write("01_cmds.toml", &module);
    let child = spawn(&s, &["apply", "DIR", "--yes", "--parallelism", "1"]);
    // Once the first change is recorded in the database, the database goes away.
    wait_for_first_record(&pg, "outage");
    pg.stop();
    let stopped = Instant::now();
    let o = finish_within(
        child,
        Duration::from_secs(60),
        "the apply without its database",
    );
    let took = stopped.elapsed();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        took < Duration::from_secs(30),
        "the apply took {took:?} to give up"
    );
    let rescue = s.path().join(".kz/state.rescue.json");
    let rescue_text = rescue.display().to_string();
    assert!(out.contains(&rescue_text), "rescue path not printed\n{out}");
    assert!(
        out.contains(&format!(
            "kz state push {} {rescue_text}",
            s.path().display()
        )),
        "the way to push it is not printed\n{out}"
    );
    // Without its database the apply holds no lock any more: it starts nothing new, and what
    // it did is in the rescue file.
    assert!(out.contains("State lock lost"), "{out}");
    let done = (0..4)
        .filter(|i| s.at(&format!("done-{i}")).exists())
        .count();
    assert!((1..4).contains(&done), "{done} changes done\n{out}");
    let mode = std::fs::metadata(&rescue)
        .unwrap_or_else(|e| panic!("no rescue file {rescue_text}: {e}\n{out}"))
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "rescue file mode {mode:o}");
    let saved: serde_json::Value = serde_json::from_str(&read(&rescue)).expect("rescue is JSON");
    assert_eq!(
        addresses(&saved).len(),
        done,
        "the rescue file lacks changes"
    );

    pg.start_again();
    let recorded = addresses(&db_document(&pg, "outage")).len();
    assert!(
        recorded < done,
        "the database recorded everything ({recorded})"
    );
    s.kz(&["state", "push", "DIR", &rescue_text])
        .code(0)
        .stdout_has("Pushed");
    assert!(!rescue.exists(), "the pushed rescue file was kept");
    assert_eq!(addresses(&db_document(&pg, "outage")).len(), done);
    // Nothing applied was lost: the next plan only has what was never started, and after it
    // is applied the stack is a no-op.
    let r = s.kz(&["plan", "DIR", "--json"]);
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        v["summary"]["create"].as_u64(),
        Some((4 - done) as u64),
        "{}",
        r.stdout
    );
    assert_eq!(v["summary"]["adopt"].as_u64(), Some(0), "{}", r.stdout);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");
}

#[test]
fn a_lock_lost_in_a_database_restart_does_not_let_two_applies_run_the_same_changes() {
    let mut pg = Postgres::start();
    let s = pg_stack("blip", &pg, "retry = \"30s\"");
    let mut module = String::new();
    for i in 0..6 {
        module.push_str(&format!(
            "[[command]]\nname = \"c{i}\"\non = [\"local\"]\nrun = \"echo start >> @ROOT@/runs-{i}; sleep 1; touch @ROOT@/done-{i}\"\n\n"
        ));
    }
    s.write("01_cmds.toml", &module);
    let first = spawn(&s, &["apply", "DIR", "--yes", "--parallelism", "1"]);
    wait_for_first_record(&pg, "blip");
    // A short outage, well within the write retry: the first apply goes on, but the session that
    // held its advisory lock is gone.
    pg.stop();
    std::thread::sleep(Duration::from_millis(300));
    pg.start_again();
    let second = s.kz(&["apply", "DIR", "--yes", "--parallelism", "1"]);
    let first = finish_within(first, Duration::from_secs(60), "the first apply");
    let runs: Vec<usize> = (0..6)
        .map(|i| {
            std::fs::read_to_string(s.at(&format!("runs-{i}")))
                .unwrap_or_default()
                .lines()
                .count()
        })
        .collect();
    let twice = runs.iter().filter(|n| **n > 1).count();
    // At most the change in flight during the restart may run again; every later one must be
    // run by one apply only (the first notices it lost its lock, or the second is refused).
    assert!(
        twice <= 1,
        "after the database restart, {twice} changes ran twice, by two applies at once (runs of c0..c5: {runs:?})\n--- first apply: {}\n--- second apply (exit {}):\n{}{}",
        text(&first),
        second.code,
        second.stdout,
        second.stderr
    );
}

#[test]
fn two_stacks_on_one_database_lock_independently() {
    let pg = Postgres::start();
    let a = pg_stack("alpha", &pg, "");
    let b = pg_stack("beta", &pg, "");
    slow_module(&a, "sleep 2");
    slow_module(&b, "sleep 2");
    let ca = spawn(&a, &["apply", "DIR", "--yes"]);
    let mut cb = spawn(&b, &["apply", "DIR", "--yes"]);
    wait_until(
        "both applies to run at once",
        Duration::from_secs(20),
        || a.at("started").exists() && b.at("started").exists(),
    );
    // Both hold their lock at the same time.
    assert!(
        cb.try_wait().expect("try_wait").is_none(),
        "beta ended early"
    );
    let oa = finish_within(ca, Duration::from_secs(30), "alpha's apply");
    let ob = finish_within(cb, Duration::from_secs(30), "beta's apply");
    assert_eq!(oa.status.code(), Some(0), "alpha: {}", text(&oa));
    assert_eq!(ob.status.code(), Some(0), "beta: {}", text(&ob));
    assert_eq!(
        pg.psql("SELECT stack FROM kz.states ORDER BY stack"),
        "alpha\nbeta"
    );
    a.kz(&["state", "list", "DIR"])
        .code(0)
        .stdout_has("01_slow.command.slow[local]");
    b.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn validate_needs_no_database_but_plan_names_the_missing_variable() {
    let pg = Postgres::start();
    let s = pg_stack("noenv", &pg, "");
    file_module(&s, "one");
    let without = |args: &[&str]| {
        let mut c = s.command(args);
        c.env_remove(URL_ENV);
        output(c)
    };
    let (code, stdout, stderr) = without(&["validate", "DIR"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Stack `noenv` is valid"), "{stdout}");

    for args in [
        &["plan", "DIR"][..],
        &["apply", "DIR", "--yes"][..],
        &["state", "list", "DIR"][..],
    ] {
        let (code, stdout, stderr) = without(args);
        assert_eq!(code, 1, "{args:?}\n{stdout}{stderr}");
        assert!(
            stderr.contains(&format!("${URL_ENV}")) && stderr.contains("not set"),
            "{args:?} does not name the variable\n{stderr}"
        );
    }
    assert!(!s.at("etc/motd").exists());
    assert!(!s.path().join(".kz/state.json").exists());
    // With the variable, the same stack plans (and a plan writes no state).
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(2);
    assert_eq!(db_serial(&pg, "noenv"), None);
}

/// Waits until an apply on `stack` has recorded its first change in the database.
fn wait_for_first_record(pg: &Postgres, stack: &str) {
    wait_until(
        "the first change to be recorded",
        Duration::from_secs(30),
        || {
            pg.try_psql(&format!(
                "SELECT serial FROM kz.states WHERE stack = '{stack}'"
            ))
            .is_ok_and(|o| !o.is_empty())
        },
    );
}
