//! The plan/apply lifecycle on the local transport, against real files in temp directories.

mod support;

use std::os::unix::fs::MetadataExt;

use support::{TestStack, read};

fn two_files() -> TestStack {
    let s = TestStack::new("life");
    s.write(
        "01_base.toml",
        r#"
[[file]]
name = "motd"
on = ["local"]
path = "@ROOT@/etc/motd"
content = "hello\nworld\n"
mode = "0644"

[[file]]
name = "conf"
on = { role = "app" }
path = "@ROOT@/etc/app.conf"
content = "port = 80\n"
mode = "0600"
depends_on = ["file.motd"]
"#,
    );
    s
}

#[test]
fn create_then_noop_then_drift_then_repair_then_removal() {
    let s = two_files();
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(2)
        .stdout_has("Plan: 2 to create, 0 to update, 0 to replace, 0 to delete, 0 to adopt.");
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 2 applied, 0 failed, 0 not attempted.");
    assert_eq!(read(&s.at("etc/motd")), "hello\nworld\n");
    assert_eq!(
        std::fs::metadata(s.at("etc/app.conf"))
            .expect("meta")
            .mode()
            & 0o7777,
        0o600
    );

    // In sync: no changes, exit 0.
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");

    // Drift behind kz's back: the plan shows the diff and exits 2.
    std::fs::write(s.at("etc/motd"), "hello\nthere\n").expect("drift");
    let r = s.kz(&["plan", "DIR", "--detailed-exitcode"]);
    r.code(2)
        .stdout_has("~ 01_base.file.motd[local] will be updated in place")
        .stdout_has("-there")
        .stdout_has("+world")
        .stdout_has("Plan: 0 to create, 1 to update");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(read(&s.at("etc/motd")), "hello\nworld\n");

    // A mode changed behind kz's back is repaired without rewriting the content.
    std::fs::set_permissions(
        s.at("etc/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .expect("chmod");
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("mode: \"0666\" → \"0600\"");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(
        std::fs::metadata(s.at("etc/app.conf"))
            .expect("meta")
            .mode()
            & 0o7777,
        0o600
    );

    // Removing a resource from the stack deletes the file.
    s.write(
        "01_base.toml",
        r#"
[[file]]
name = "motd"
on = ["local"]
path = "@ROOT@/etc/motd"
content = "hello\nworld\n"
mode = "0644"
"#,
    );
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("- 01_base.file.conf[local] will be deleted");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert!(!s.at("etc/app.conf").exists());
    assert_eq!(
        s.state_addresses(),
        vec!["01_base.file.motd[local]".to_string()]
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_deleted_file_is_recreated() {
    let s = two_files();
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    std::fs::remove_file(s.at("etc/motd")).expect("rm");
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(2)
        .stdout_has("+ 01_base.file.motd[local] will be created (file absent; recorded in state but gone from the host)");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(read(&s.at("etc/motd")), "hello\nworld\n");
}

#[test]
fn existing_matching_files_are_adopted_without_being_touched() {
    let s = two_files();
    std::fs::create_dir_all(s.at("etc")).expect("mkdir");
    std::fs::write(s.at("etc/motd"), "hello\nworld\n").expect("write");
    std::fs::set_permissions(
        s.at("etc/motd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let before = std::fs::metadata(s.at("etc/motd")).expect("meta");
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("= 01_base.file.motd[local] will be adopted")
        .stdout_has("Plan: 1 to create, 0 to update, 0 to replace, 0 to delete, 1 to adopt.");
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("01_base.file.motd[local]: adopted");
    let after = std::fs::metadata(s.at("etc/motd")).expect("meta");
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "adopt rewrote the file"
    );
    assert!(
        s.state_addresses()
            .contains(&"01_base.file.motd[local]".to_string())
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn an_unmanaged_file_that_differs_is_an_update_with_its_diff() {
    let s = two_files();
    std::fs::create_dir_all(s.at("etc")).expect("mkdir");
    std::fs::write(s.at("etc/motd"), "old\n").expect("write");
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("~ 01_base.file.motd[local] will be updated in place (exists on the host but is not managed by kz yet)")
        .stdout_has("-old");
}

#[test]
fn target_limits_the_plan_to_the_target_and_its_dependencies() {
    let s = two_files();
    s.write(
        "02_other.toml",
        r#"
[[file]]
name = "unrelated"
on = ["local"]
path = "@ROOT@/other"
content = "x\n"
"#,
    );
    let r = s.kz(&["plan", "DIR", "--target", "01_base.file.conf"]);
    r.code(0)
        .stdout_has("01_base.file.conf[local]")
        .stdout_has("01_base.file.motd[local]")
        .stdout_has("Plan: 2 to create");
    assert!(!r.stdout.contains("02_other"), "{}", r.stdout);
    s.kz(&["apply", "DIR", "--yes", "--target", "02_other"])
        .code(0);
    assert!(s.at("other").exists());
    assert!(!s.at("etc/motd").exists());
    s.kz(&["plan", "DIR", "--target", "nope"])
        .code(1)
        .stderr_has("--target `nope` matches no instance");
}

#[test]
fn replace_recreates_an_instance_in_sync() {
    let s = two_files();
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    // A hard link keeps the old inode alive, so the new file cannot reuse its number.
    std::fs::hard_link(s.at("etc/motd"), s.at("old-motd")).expect("link");
    let before = std::fs::metadata(s.at("etc/motd")).expect("meta").ino();
    s.kz(&["plan", "DIR", "--replace", "01_base.file.motd[local]"])
        .code(0)
        .stdout_has(
            "-/+ 01_base.file.motd[local] will be replaced (replacement requested with --replace)",
        )
        .stdout_has("Plan: 0 to create, 0 to update, 1 to replace");
    s.kz(&[
        "apply",
        "DIR",
        "--yes",
        "--replace",
        "01_base.file.motd[local]",
    ])
    .code(0)
    .stdout_has("replaced");
    let after = std::fs::metadata(s.at("etc/motd")).expect("meta").ino();
    assert_ne!(before, after, "the file was not rewritten");
    s.kz(&["plan", "DIR", "--replace", "01_base.file.nope[local]"])
        .code(1)
        .stderr_has("--replace `01_base.file.nope[local]` is not an instance of the stack");
}

#[test]
fn changing_a_path_replaces_the_file() {
    let s = two_files();
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.write(
        "01_base.toml",
        &std::fs::read_to_string(s.path().join("01_base.toml"))
            .expect("read")
            .replace("etc/motd", "etc/motd.new"),
    );
    s.kz(&["plan", "DIR"]).code(0).stdout_has(
        "-/+ 01_base.file.motd[local] will be replaced (`path` cannot change in place)",
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert!(!s.at("etc/motd").exists());
    assert_eq!(read(&s.at("etc/motd.new")), "hello\nworld\n");
}

#[test]
fn ensure_absent_removes_a_file_and_keeps_it_away() {
    let s = TestStack::new("absent");
    std::fs::write(s.at("stale"), "x").expect("write");
    s.write(
        "01.toml",
        "[[file]]\nname = \"stale\"\non = [\"local\"]\npath = \"@ROOT@/stale\"\nensure = \"absent\"\n",
    );
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("ensure: \"present\" → \"absent\"");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert!(!s.at("stale").exists());
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn source_files_are_copied_byte_for_byte() {
    let s = TestStack::new("source");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    std::fs::create_dir_all(s.path().join("files")).expect("mkdir");
    std::fs::write(s.path().join("files/blob.bin"), &bytes).expect("write");
    s.write(
        "01.toml",
        "[[file]]\nname = \"blob\"\non = [\"local\"]\npath = \"@ROOT@/blob.bin\"\nsource = \"files/blob.bin\"\n",
    );
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("(content of 5000 bytes, sha256");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(std::fs::read(s.at("blob.bin")).expect("read"), bytes);
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn commands_run_when_check_fails_and_again_when_triggers_change() {
    let s = TestStack::new("cmd");
    let stack = |version: &str| {
        format!(
            r#"
[[command]]
name = "mark"
on = ["local"]
run = "echo ran >> @ROOT@/log; touch @ROOT@/marker"
check = "test -e @ROOT@/marker"
triggers = {{ version = "{version}" }}
"#
        )
    };
    s.write("01.toml", &stack("1"));
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("will be created (check exited 1)");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
    s.write("01.toml", &stack("2"));
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("triggers: {\"version\":\"1\"} → {\"version\":\"2\"}");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(read(&s.at("log")), "ran\nran\n");
}

#[test]
fn a_failure_stops_its_dependents_and_spares_independent_branches() {
    let s = TestStack::new("fail");
    s.write(
        "01.toml",
        r#"
[[command]]
name = "broken"
on = ["local"]
run = "echo 'disk on fire' >&2; exit 3"

[[file]]
name = "after-broken"
on = ["local"]
path = "@ROOT@/after"
content = "x"
depends_on = ["command.broken"]

[[file]]
name = "independent"
on = ["local"]
path = "@ROOT@/independent"
content = "y"
"#,
    );
    s.write(
        "02.toml",
        "[module]\ndepends_on = [\"01\"]\n\n[[file]]\nname = \"later\"\non = [\"local\"]\npath = \"@ROOT@/later\"\ncontent = \"z\"\n",
    );
    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(1)
        .stdout_has("01.command.broken[local]: failed to create")
        .stdout_has("local (127.0.0.1): run: exit status 3: disk on fire")
        .stdout_has(
            "01.file.after-broken[local]: not attempted because 01.command.broken[local] failed",
        )
        .stdout_has("02.file.later[local]: not attempted because 01.command.broken[local] failed")
        .stdout_has("Apply: 1 applied, 1 failed, 2 not attempted.");
    assert!(s.at("independent").exists());
    assert!(!s.at("after").exists());
    assert!(!s.at("later").exists());
    assert_eq!(
        s.state_addresses(),
        vec!["01.file.independent[local]".to_string()]
    );
}

#[test]
fn module_order_is_respected() {
    let s = TestStack::new("order");
    s.write(
        "10_lb.toml",
        "[module]\ndepends_on = [\"04_redis\", \"03_pg\"]\n\n[[command]]\nname = \"lb\"\non = [\"local\"]\nrun = \"echo lb >> @ROOT@/order\"\n",
    );
    s.write(
        "04_redis.toml",
        "[[command]]\nname = \"redis\"\non = [\"local\"]\nrun = \"sleep 0.3; echo redis >> @ROOT@/order\"\n",
    );
    s.write(
        "03_pg.toml",
        "[[command]]\nname = \"pg\"\non = [\"local\"]\nrun = \"sleep 0.2; echo pg >> @ROOT@/order\"\n",
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let order = read(&s.at("order"));
    assert!(
        order.ends_with("lb\n"),
        "the load balancer did not wait: {order}"
    );
    s.kz(&["graph", "DIR"])
        .code(0)
        .stdout_has("subgraph \"cluster_10_lb\"")
        .stdout_has("\"module:04_redis\" -> \"module:10_lb\"");
}

#[test]
fn destroy_runs_in_reverse_dependency_order() {
    let s = TestStack::new("destroy");
    let cmd = |name: &str, deps: &str| {
        format!(
            "[[command]]\nname = \"{name}\"\non = [\"local\"]\nrun = \"true\"\ndestroy = \"echo {name} >> @ROOT@/destroyed\"\ndepends_on = [{deps}]\n\n"
        )
    };
    s.write(
        "01.toml",
        &[
            cmd("a", ""),
            cmd("b", "\"command.a\""),
            cmd("c", "\"command.b\""),
        ]
        .concat(),
    );
    s.write(
        "02.toml",
        &format!("[module]\ndepends_on = [\"01\"]\n\n{}", cmd("d", "")),
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["destroy", "DIR"])
        .code(1)
        .stderr_has("refusing to go on without --yes");
    s.kz(&["destroy", "DIR", "--yes"])
        .code(0)
        .stdout_has("Destroy: 4 applied");
    let order: Vec<String> = read(&s.at("destroyed")).lines().map(String::from).collect();
    let pos = |n: &str| order.iter().position(|o| o == n).expect("destroyed");
    assert!(
        pos("d") < pos("a"),
        "module 02 must go before module 01: {order:?}"
    );
    assert!(pos("c") < pos("b") && pos("b") < pos("a"), "{order:?}");
    assert!(s.state_addresses().is_empty());
}

#[test]
fn apply_without_a_terminal_or_yes_refuses_and_changes_nothing() {
    let s = two_files();
    s.kz(&["apply", "DIR"])
        .code(1)
        .stderr_has("refusing to go on without --yes: there is no terminal to confirm on");
    assert!(!s.at("etc/motd").exists());
}

#[test]
fn state_commands_list_show_and_forget() {
    let s = two_files();
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let r = s.kz(&["state", "list", "DIR"]);
    r.code(0);
    assert_eq!(
        r.stdout,
        "01_base.file.conf[local]\n01_base.file.motd[local]\n"
    );
    s.kz(&["state", "show", "DIR", "01_base.file.conf[local]"])
        .code(0)
        .stdout_has("mode = 0600")
        .stdout_has("depends_on: 01_base.file.motd[local]");
    s.kz(&["state", "rm", "DIR", "01_base.file.conf[local]"])
        .code(0)
        .stdout_has("Removed 01_base.file.conf[local] from the state");
    assert!(
        s.at("etc/app.conf").exists(),
        "state rm must not touch the host"
    );
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("= 01_base.file.conf[local] will be adopted");
    s.kz(&["state", "show", "DIR", "nope"])
        .code(1)
        .stderr_has("is not in the state");
}

#[test]
fn plan_json_is_a_documented_document() {
    let s = two_files();
    let r = s.kz(&["plan", "DIR", "--json"]);
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON on stdout");
    assert_eq!(v["format_version"], 2);
    assert_eq!(v["stack"], "life");
    assert_eq!(v["summary"]["create"], 2);
    assert_eq!(v["read"]["round_trips"], 1);
    let c = &v["changes"][0];
    assert_eq!(c["action"], "create");
    assert_eq!(c["address"], "01_base.file.conf[local]");
    assert_eq!(c["type"], "file");
    let content = c["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .find(|a| a["name"] == "content")
        .expect("content attr");
    assert_eq!(content["after"], "port = 80\n");
    assert!(content["before"].is_null());
}

#[test]
fn refresh_false_trusts_the_state_and_reads_nothing() {
    let s = two_files();
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    std::fs::remove_file(s.at("etc/motd")).expect("rm");
    let r = s.kz(&[
        "plan",
        "DIR",
        "--refresh=false",
        "--json",
        "--detailed-exitcode",
    ]);
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["read"]["round_trips"], 0);
    assert_eq!(v["refreshed"], false);
}

#[test]
fn ascii_output_has_only_ascii() {
    let s = two_files();
    s.write(
        "02.toml",
        "[[file]]\nname = \"accents\"\non = [\"local\"]\npath = \"@ROOT@/fr\"\ncontent = \"État: vérifié ✓\\n\"\n",
    );
    let r = s.kz(&["--ascii", "plan", "DIR"]);
    r.code(0)
        .stdout_has("+\\u{c9}tat: v\\u{e9}rifi\\u{e9} \\u{2713}");
    assert!(r.stdout.is_ascii(), "non-ASCII output in --ascii mode");
    // A non-UTF-8 locale picks ASCII by itself.
    let out = s
        .command(&["plan", "DIR"])
        .env("LANG", "C")
        .output()
        .expect("run");
    assert!(out.stdout.is_ascii());
}

#[test]
fn version_and_completions() {
    let s = TestStack::new("misc");
    let r = s.kz(&["--version"]);
    r.code(0);
    assert_eq!(r.stdout, format!("kz {}\n", env!("CARGO_PKG_VERSION")));
    s.kz(&["completions", "bash"]).code(0).stdout_has("_kz()");
    s.kz(&["validate", "DIR"])
        .code(0)
        .stdout_has("Stack `misc` is valid: 1 host, 0 modules, 0 resource instances.");
}

#[test]
fn one_batched_read_handles_small_large_absent_and_odd_files() {
    let s = TestStack::new("batch");
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir_all(s.path().join("files")).expect("mkdir");
    std::fs::write(s.path().join("files/big.bin"), &big).expect("write");
    s.write(
        "01.toml",
        r#"
[[file]]
name = "big"
on = ["local"]
path = "@ROOT@/big.bin"
source = "files/big.bin"

[[file]]
name = "small"
on = ["local"]
path = "@ROOT@/small"
content = "small\n"

[[file]]
name = "odd"
on = ["local"]
path = "@ROOT@/odd 'name' $(x)\nline2"
content = "odd\n"

[[file]]
name = "empty"
on = ["local"]
path = "@ROOT@/empty"
content = ""
"#,
    );
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied");
    assert_eq!(std::fs::read(s.at("big.bin")).expect("read"), big);
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
    // Drift in each kind of file is seen through the one batched read.
    let mut changed = big.clone();
    changed[1_000_000] ^= 1;
    std::fs::write(s.at("big.bin"), &changed).expect("write");
    std::fs::write(s.at("odd 'name' $(x)\nline2"), "ODD\n").expect("write");
    std::fs::remove_file(s.at("small")).expect("rm");
    std::fs::write(s.at("empty"), "not empty").expect("write");
    let r = s.kz(&["plan", "DIR", "--json"]);
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["summary"]["update"], 3, "{}", r.stdout);
    assert_eq!(v["summary"]["create"], 1);
    assert_eq!(v["read"]["round_trips"], 1);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
    // A directory where a file should be is an error for that instance only.
    std::fs::remove_file(s.at("small")).expect("rm");
    std::fs::create_dir(s.at("small")).expect("mkdir");
    s.kz(&["plan", "DIR"])
        .code(1)
        .stdout_has("read 01.file.small[local]: the path is a directory");
}

#[test]
fn a_new_timeout_is_recorded_without_running_the_command_again() {
    let s = TestStack::new("cmdattrs");
    let stack = |timeout: &str, triggers: &str| {
        format!(
            "[[command]]\nname = \"once\"\non = [\"local\"]\nrun = \"echo ran >> @ROOT@/log\"\ntimeout = \"{timeout}\"\n{triggers}\n"
        )
    };
    s.write("01.toml", &stack("30s", ""));
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.write("01.toml", &stack("1m", ""));
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("timeout: \"30s\" → \"1m\"");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(
        read(&s.at("log")),
        "ran\n",
        "a new timeout re-ran the command"
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
    // Adding triggers to a command already run is a change, and runs it.
    s.write("01.toml", &stack("1m", "triggers = { v = \"2\" }"));
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(2)
        .stdout_has("triggers: (none) → {\"v\":\"2\"}");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(read(&s.at("log")), "ran\nran\n");
}

#[test]
fn owner_alone_keeps_the_group_and_numeric_ids_compare_as_numbers() {
    let s = TestStack::new("owners");
    std::fs::write(s.at("owned"), "x\n").expect("write");
    let st = std::process::Command::new("chown")
        .args(["daemon:daemon"])
        .arg(s.at("owned"))
        .status()
        .expect("chown");
    assert!(st.success());
    s.write(
        "01.toml",
        "[[file]]\nname = \"owned\"\non = [\"local\"]\npath = \"@ROOT@/owned\"\ncontent = \"y\\n\"\nowner = \"daemon\"\n\n\
         [[file]]\nname = \"numeric\"\non = [\"local\"]\npath = \"@ROOT@/numeric\"\ncontent = \"n\\n\"\nowner = \"0\"\ngroup = \"0\"\n",
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let meta = std::fs::metadata(s.at("owned")).expect("meta");
    let daemon_gid = std::process::Command::new("id")
        .args(["-g", "daemon"])
        .output()
        .expect("id");
    assert_eq!(
        meta.gid().to_string(),
        String::from_utf8_lossy(&daemon_gid.stdout).trim(),
        "the group was reset"
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn switching_a_file_from_absent_to_present_is_seen_without_refresh() {
    let s = TestStack::new("absent2");
    s.write(
        "01.toml",
        "[[file]]\nname = \"f\"\non = [\"local\"]\npath = \"@ROOT@/f\"\nensure = \"absent\"\n",
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.write(
        "01.toml",
        "[[file]]\nname = \"f\"\non = [\"local\"]\npath = \"@ROOT@/f\"\ncontent = \"now here\\n\"\n",
    );
    s.kz(&["plan", "DIR", "--refresh=false", "--detailed-exitcode"])
        .code(2)
        .stdout_has("+now here");
}
