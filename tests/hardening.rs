//! What trying to break kz found (issue 11): each test drives the real binary on the input that
//! broke it.

mod support;

use std::time::Duration;

use support::TestStack;

const SECRET: &str = "Xy7-pass-word-41-zz";

/// A stack whose one file holds a secret.
fn secret_file_stack() -> TestStack {
    let s = TestStack::new("hardening").env("KZ_SECRET_DB", SECRET);
    s.write(
        "10_app.toml",
        r#"
[[file]]
name = "db"
on = ["local"]
path = "@ROOT@/db.conf"
content = "password = ${secret.db}\n"
"#,
    );
    s
}

/// Item 2: a module file that is a symbolic link is read like any other, and a plan that deletes
/// every instance of a module gone from the stack says so above the changes.
#[test]
fn module_links_are_followed_and_a_vanished_module_is_announced() {
    let s = TestStack::new("links");
    s.write(
        "shared/20_app.toml",
        "[[file]]\nname = \"a\"\non = [\"local\"]\npath = \"@ROOT@/a\"\ncontent = \"a\\n\"\n\n\
         [[file]]\nname = \"b\"\non = [\"local\"]\npath = \"@ROOT@/b\"\ncontent = \"b\\n\"\n",
    );
    s.write(
        "10_base.toml",
        "[[file]]\nname = \"base\"\non = [\"local\"]\npath = \"@ROOT@/base\"\ncontent = \"x\\n\"\n",
    );
    std::os::unix::fs::symlink("shared/20_app.toml", s.path().join("20_app.toml")).expect("link");
    s.kz(&["validate", "DIR"])
        .code(0)
        .stdout_has("2 modules, 3 resource instances");
    s.kz(&["apply", "DIR", "--yes"]).code(0);

    // The link goes (a checkout that drops links, a rename): the module's instances would all go.
    s.remove("20_app.toml");
    let plan = s.kz(&["plan", "DIR"]);
    plan.code(0).stdout_has(
        "warning: module `20_app` is no longer in the stack: this plan deletes all 2 of its instances",
    );
    let warning = plan.stdout.find("warning: module").expect("warning");
    let first_change = plan.stdout.find("20_app.file.a").expect("a change");
    assert!(
        warning < first_change,
        "the warning must come before the changes:\n{}",
        plan.stdout
    );
    // A module that only loses some of its resources is no removed module.
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.write(
        "10_base.toml",
        "[[file]]\nname = \"other\"\non = [\"local\"]\npath = \"@ROOT@/other\"\ncontent = \"x\\n\"\n",
    );
    let plan = s.kz(&["plan", "DIR"]);
    plan.code(0);
    assert!(!plan.stdout.contains("warning: module"), "{}", plan.stdout);
}

/// Item 3: with a secret unset, a file holding it that was edited on the host is not called in
/// sync, `--detailed-exitcode` does not say "no changes", and nothing is called a match.
#[test]
fn what_uses_an_unset_secret_is_reported_as_not_compared() {
    let s = secret_file_stack();
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    std::fs::write(s.at("db.conf"), "password = edited-by-hand\n").expect("edit");

    let plan = s.kz_without(&["KZ_SECRET_DB"], &["plan", "DIR"]);
    plan.code(0)
        .stdout_has("1 instance could not be compared with the hosts")
        .stdout_has("10_app.file.db[local] (`content`)")
        .stdout_has("secrets not set: KZ_SECRET_DB")
        .stdout_has("No changes found, but 1 instance could not be compared");
    assert!(
        !plan.stdout.contains("The hosts match the stack"),
        "{}",
        plan.stdout
    );
    s.kz_without(&["KZ_SECRET_DB"], &["plan", "--detailed-exitcode", "DIR"])
        .code(2);
    let json = s.kz_without(&["KZ_SECRET_DB"], &["plan", "--json", "DIR"]);
    json.code(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["summary"]["unverified"], 1, "{}", json.stdout);
    assert_eq!(v["unverified"][0]["address"], "10_app.file.db[local]");

    // With the secret set, the edit is a change like any other.
    s.kz(&["plan", "--detailed-exitcode", "DIR"])
        .code(2)
        .stdout_has("1 to update");

    // Without a state, what exists is not "adopted (exists and matches)".
    std::fs::remove_dir_all(s.path().join(".kz")).expect("forget the state");
    let plan = s.kz_without(&["KZ_SECRET_DB"], &["plan", "DIR"]);
    plan.code(0)
        .stdout_has("exists; `content` not compared: it uses a secret that is not set")
        .stdout_has("1 more instance could not be compared");
    assert!(!plan.stdout.contains("matches"), "{}", plan.stdout);
}

/// Item 4: a host file holding a secret its declared content does not name: the saved plan holds
/// a digest of what the host holds, never the content.
#[test]
fn a_saved_plan_holds_no_observed_content() {
    let s = secret_file_stack();
    s.write(
        "20_other.toml",
        r#"
[[file]]
name = "motd"
on = ["local"]
path = "@ROOT@/motd"
content = "welcome\n"
"#,
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    std::fs::write(
        s.at("motd"),
        format!("copied by hand: {SECRET}\nand a line only the host knows\n"),
    )
    .expect("edit");
    let out = s.path().join("p.json");
    let out_s = out.display().to_string();
    s.kz(&["plan", "--out", &out_s, "DIR"])
        .code(0)
        .stdout_has("1 to update");
    let saved = std::fs::read_to_string(&out).expect("plan file");
    assert!(!saved.contains(SECRET), "secret in the plan file:\n{saved}");
    assert!(
        !saved.contains("only the host knows"),
        "observed content in the plan file:\n{saved}"
    );
    let v: serde_json::Value = serde_json::from_str(&saved).expect("json");
    let before = &v["changes"][0]["attributes"][0]["before"];
    assert!(before["sha256"].is_string(), "{saved}");
    // The declared side stays readable, and the saved plan still applies.
    assert!(saved.contains("welcome"), "{saved}");
    s.kz(&["apply", &out_s, "--yes"]).code(0);
    assert_eq!(support::read(&s.at("motd")), "welcome\n");
}

/// Item 8: `source` is confined to the stack directory, to regular files, to a size; a FIFO no
/// longer hangs validate.
#[test]
fn source_reads_only_regular_files_of_the_stack_directory() {
    let s = TestStack::new("sources");
    let file = |source: &str| {
        format!(
            "[[file]]\nname = \"f\"\non = [\"local\"]\npath = \"@ROOT@/f\"\nsource = \"{source}\"\n"
        )
    };
    let limit = Duration::from_secs(60);

    s.write(
        "10_app.toml",
        &file("../../../../../../../../../../etc/passwd"),
    );
    s.kz_within(limit, &["validate", "DIR"])
        .code(1)
        .stderr_has("10_app.toml:5:10: cannot read source")
        .stderr_has("it lies outside the stack directory");

    // A link inside the stack to a file outside it is outside too.
    std::os::unix::fs::symlink("/etc/passwd", s.path().join("passwd")).expect("link");
    s.write("10_app.toml", &file("passwd"));
    s.kz_within(limit, &["validate", "DIR"])
        .code(1)
        .stderr_has("it lies outside the stack directory");

    // A device reached through a link: outside, and never read.
    std::os::unix::fs::symlink("/dev/zero", s.path().join("zero")).expect("link");
    s.write("10_app.toml", &file("zero"));
    s.kz_within(limit, &["validate", "DIR"])
        .code(1)
        .stderr_has("it lies outside the stack directory");

    // A FIFO inside the stack: refused at once, never opened.
    let fifo = s.path().join("files/pipe");
    std::fs::create_dir_all(fifo.parent().expect("parent")).expect("mkdir");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    s.write("10_app.toml", &file("files/pipe"));
    s.kz_within(limit, &["validate", "DIR"])
        .code(1)
        .stderr_has("files/pipe`: not a regular file");

    // Over the limit (a sparse file: no disk is used).
    let big = std::fs::File::create(s.path().join("files/big")).expect("create");
    big.set_len(64 * 1024 * 1024 + 1).expect("set_len");
    s.write("10_app.toml", &file("files/big"));
    s.kz_within(limit, &["validate", "DIR"])
        .code(1)
        .stderr_has("67108865 bytes, over the limit of 67108864 bytes");

    // At the limit, fine.
    big.set_len(64 * 1024 * 1024).expect("set_len");
    s.kz_within(limit, &["validate", "DIR"]).code(0);
}

/// Item 9: huge durations are refused where they are written, with their place, instead of
/// overflowing later inside a worker.
#[test]
fn huge_durations_are_refused_when_parsed() {
    let s = TestStack::new("durations");
    s.write(
        "stack.toml",
        "[stack]\nname = \"durations\"\n\n[ssh]\ncommand_timeout = \"18446744073709551615s\"\n\n\
         [hosts.local]\ntransport = \"local\"\n",
    );
    s.write(
        "10_app.toml",
        "[[command]]\nname = \"c\"\non = [\"local\"]\nrun = \"true\"\ntimeout = \"9223372036854775807s\"\n",
    );
    let v = s.kz(&["validate", "DIR"]);
    v.code(1)
        .stderr_has("stack.toml:5:19: duration `18446744073709551615s` is too long: at most 8760h (365 days)")
        .stderr_has("10_app.toml:5:11: duration `9223372036854775807s` is too long");
    assert!(!v.stderr.contains("panicked"), "{}", v.stderr);

    s.write(
        "stack.toml",
        "[stack]\nname = \"durations\"\n\n[hosts.local]\ntransport = \"local\"\n",
    );
    s.write("10_app.toml", "");
    let run = s.kz(&[
        "apply",
        "--lock-timeout",
        "9223372036854775807s",
        "DIR",
        "--yes",
    ]);
    run.code(2).stderr_has(
        "invalid value '9223372036854775807s' for '--lock-timeout <LOCK_TIMEOUT>': duration `9223372036854775807s` is too long: at most 8760h (365 days)",
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    // The longest duration accepted is accepted.
    s.kz(&["apply", "--lock-timeout", "8760h", "DIR", "--yes"])
        .code(0);
}

#[test]
fn destroy_says_what_it_only_forgot_and_titles_its_summary_destroy() {
    let s = TestStack::new("forget");
    s.write(
        "01_app.toml",
        r#"
[[command]]
name = "init"
on = ["local"]
run = "true"

[[command]]
name = "cleanup"
on = ["local"]
run = "touch @ROOT@/made"
destroy = "rm -f @ROOT@/made"

[[file]]
name = "conf"
on = ["local"]
path = "@ROOT@/app.conf"
content = "x\n"
"#,
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert!(s.at("made").exists());
    let r = s.kz(&["destroy", "DIR", "--yes"]);
    r.code(0)
        .stdout_has(
            "01_app.command.init[local]: forgotten: it has no `destroy` command, so the host was not touched",
        )
        .stdout_has("01_app.command.cleanup[local]: deleted")
        .stdout_has("01_app.file.conf[local]: deleted")
        .stdout_has("Destroy: 3 applied, 0 failed, 0 not attempted.");
    assert!(
        !r.stdout.contains("command.init[local]: deleted"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("Apply:"), "{}", r.stdout);
    assert!(!s.at("made").exists() && !s.at("app.conf").exists());
}
