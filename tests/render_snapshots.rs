//! Snapshots of the rendered plan, so every change to what users read is reviewed.
//! Update them with `INSTA_UPDATE=always cargo test --test render_snapshots` (or cargo insta review).

mod support;

use support::TestStack;

/// A stack whose plan has every action at once: create, update, replace, delete, adopt.
fn every_action() -> TestStack {
    let s = TestStack::new("render");
    let v1 = r#"
[module]
description = "Redis HA"

[[file]]
name = "redis-conf"
on = ["local"]
path = "@ROOT@/redis.conf"
content = """
bind 10.0.0.123
port 6379
maxmemory 2gb
appendonly yes
"""
mode = "0640"

[[file]]
name = "old"
on = ["local"]
path = "@ROOT@/old.conf"
content = "to be removed\n"

[[file]]
name = "moved"
on = ["local"]
path = "@ROOT@/moved-from"
content = "x\n"
"#;
    s.write("04_redis_ha.toml", v1);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let v2 = r#"
[module]
description = "Redis HA"

[[file]]
name = "redis-conf"
on = ["local"]
path = "@ROOT@/redis.conf"
content = """
bind 10.0.0.123
port 6379
maxmemory 4gb
appendonly yes
"""
mode = "0600"

[[file]]
name = "moved"
on = ["local"]
path = "@ROOT@/moved-to"
content = "x\n"

[[file]]
name = "sentinel"
on = ["local"]
path = "@ROOT@/sentinel.conf"
content = "sentinel monitor keybuzz ${hosts.local.address} 6379 2\n"

[[file]]
name = "existing"
on = ["local"]
path = "@ROOT@/existing"
content = "already here\n"

[[command]]
name = "password"
on = ["local"]
run = "echo ${secret.redis_password} > /dev/null"
"#;
    s.write("04_redis_ha.toml", v2);
    std::fs::write(s.at("existing"), "already here\n").expect("write");
    s
}

fn normalized(s: &TestStack, text: &str) -> String {
    text.replace(&s.root(), "[ROOT]")
}

#[test]
fn plan_rendering_utf8() {
    let s = every_action();
    let r = s.kz(&["plan", "DIR"]);
    r.code(0);
    insta::assert_snapshot!("plan_utf8", normalized(&s, &r.stdout));
}

#[test]
fn plan_rendering_ascii() {
    let s = every_action();
    let r = s.kz(&["--ascii", "plan", "DIR"]);
    r.code(0);
    assert!(r.stdout.is_ascii());
    insta::assert_snapshot!("plan_ascii", normalized(&s, &r.stdout));
}

#[test]
fn plan_rendering_in_colour() {
    let s = every_action();
    let r = s.kz(&["--color", "always", "plan", "DIR"]);
    r.code(0);
    assert!(r.stdout.contains("\x1b[32m"), "no colour");
    let out = s
        .command(&["--color", "auto", "plan", "DIR"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));
}
