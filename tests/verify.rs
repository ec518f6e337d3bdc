//! `kz verify` and the check kinds that can run here, through the `kz` binary: tcp, http,
//! command and postgres against real services on 127.0.0.1 (a listener of the test, a real
//! PostgreSQL), then on the lab (redis_role against a real Redis, a check run `from` another
//! host, and a paused host that fails within its connect timeout while the others go on).

#![allow(clippy::unwrap_used)]
// The lab test says why it skips.
#![allow(clippy::print_stderr)]

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::pg::Postgres;
use support::{TestStack, lab};

/// A tiny HTTP server on 127.0.0.1: every request gets `200 healthy`. Returns its port.
fn http_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut conn = conn;
            let mut buf = [0u8; 2048];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nstatus: ready",
            );
        }
    });
    port
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn local_stack(web: u16, closed: u16) -> TestStack {
    let s = TestStack::new("verify");
    s.write(
        "01_web.toml",
        &format!(
            r#"
[module]
description = "a web server that answers"

[[check]]
name = "port"
on = ["local"]
kind = "tcp"
address = "127.0.0.1"
port = {web}

[[check]]
name = "health"
on = ["local"]
kind = "http"
url = "http://127.0.0.1:{web}/health"
contains = "ready"
"#
        ),
    );
    s.write(
        "02_queue.toml",
        &format!(
            r#"
[module]
depends_on = ["01_web"]

[[check]]
name = "amqp"
on = ["local"]
kind = "tcp"
address = "127.0.0.1"
port = {closed}
tries = 1

[[check]]
name = "script"
on = ["local"]
command = "echo all good"
"#
        ),
    );
    s.write(
        "03_app.toml",
        "[[file]]\nname = \"conf\"\non = [\"local\"]\npath = \"@ROOT@/app.conf\"\ncontent = \"x\\n\"\n",
    );
    s
}

#[test]
fn verify_reports_each_module_and_fails_when_a_check_fails() {
    let web = http_server();
    let closed = closed_port();
    let s = local_stack(web, closed);
    let r = s.kz(&["verify", "DIR"]);
    r.code(1)
        .stdout_has("01_web ── OK")
        .stdout_has("pass 01_web.check.port[local] on local: 127.0.0.1:")
        .stdout_has("accepts connections")
        .stdout_has("pass 01_web.check.health[local] on local: status 200, body contains \"ready\"")
        .stdout_has("02_queue ── FAILING")
        .stdout_has(&format!(
            "FAIL 02_queue.check.amqp[local] on local: 127.0.0.1:{closed}: Connection refused"
        ))
        .stdout_has("03_app ── NOT DEPLOYED")
        .stdout_has("Not verified");
    assert!(r.stdout.contains("took "), "{}", r.stdout);

    // The same facts for machines, in ASCII under --ascii.
    let j = s.kz(&["verify", "DIR", "--json"]);
    j.code(1);
    let doc: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    let status: Vec<(&str, &str)> = doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["module"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [
            ("01_web", "ok"),
            ("02_queue", "failing"),
            ("03_app", "not_deployed")
        ]
    );
    let amqp = &doc["modules"][1]["checks"][0];
    assert_eq!(amqp["result"], "fail");
    assert_eq!(amqp["host"], "local");
    assert!(amqp["at"].as_str().unwrap().ends_with('Z'));
    assert!(amqp["duration_ms"].as_u64().is_some());
    assert_eq!(doc["passed"], false);

    let a = s.kz(&["--ascii", "verify", "DIR"]);
    assert!(a.stdout.is_ascii(), "{}", a.stdout);
    a.stdout_has("[FAIL] FAIL 02_queue.check.amqp[local]")
        .stdout_has("01_web -- OK");

    // One module: it passes, so verify exits 0; a module that does not exist is refused.
    s.kz(&["verify", "DIR", "--module", "01_web"])
        .code(0)
        .stdout_has("Verified");
    s.kz(&["verify", "DIR", "--module", "09_nope"])
        .code(1)
        .stderr_has("--module `09_nope` is not a module of the stack");
}

#[test]
fn a_deployed_stack_whose_checks_pass_verifies_with_exit_0() {
    let web = http_server();
    let s = local_stack(web, web);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["verify", "DIR"])
        .code(0)
        .stdout_has("03_app ── UNCHECKED")
        .stdout_has("02_queue ── OK")
        .stdout_has("Verified: every module with checks passes.");
}

#[test]
fn a_postgres_check_runs_its_query_through_psql() {
    let pg = Postgres::start();
    let s = TestStack::new("verifypg").env("KZ_SECRET_PG_PASSWORD", "not-used-by-trust-auth");
    s.write(
        "01_db.toml",
        &format!(
            r#"
[[check]]
name = "query"
on = ["local"]
kind = "postgres"
address = "127.0.0.1"
port = {port}
user = "kz"
password = "${{secret.PG_PASSWORD}}"
query = "select count(*) from pg_stat_activity where backend_type = 'client backend'"
expect = "1"

[[check]]
name = "wrong"
on = ["local"]
kind = "postgres"
address = "127.0.0.1"
port = {port}
user = "kz"
query = "select 'replica'"
expect = "leader"
"#,
            port = pg.port
        ),
    );
    let r = s.kz(&["verify", "DIR"]);
    r.code(1)
        .stdout_has(&format!(
            "pass 01_db.check.query[local] on local: 127.0.0.1:{}: answered \"1\"",
            pg.port
        ))
        .stdout_has("answered \"replica\", expected \"leader\"");
    assert!(!r.stdout.contains("not-used-by-trust-auth"));
}

#[test]
fn a_check_password_never_reaches_a_command_line() {
    let pg = Postgres::start();
    let secret = "s3cret-check-password-91";
    let s = TestStack::new("verifyps").env("KZ_SECRET_PG_PASSWORD", secret);
    s.write(
        "01_db.toml",
        &format!(
            r#"
[[check]]
name = "slow"
on = ["local"]
kind = "postgres"
address = "127.0.0.1"
port = {port}
user = "kz"
password = "${{secret.PG_PASSWORD}}"
query = "select pg_sleep(1.5), 'kz-witness'"
timeout = "10s"
"#,
            port = pg.port
        ),
    );
    let mut child = s
        .command(&["verify", "DIR"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut leaked, mut seen) = (false, false);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        for line in support::command_lines() {
            leaked |= line.contains(secret);
            seen |= line.contains("psql");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(seen, "psql was never seen running");
    assert!(!leaked, "the password showed in the process list");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
}

const LAB_STACK: &str = r#"[stack]
name = "NAME"

[ssh]
user = "root"
connect_timeout = "3s"
command_timeout = "30s"

[hosts.h1]
address = "192.0.2.41"

[hosts.h2]
address = "192.0.2.42"
"#;

const LAB_REDIS: &str = r#"
[[command]]
name = "redis"
on = ["h1"]
check = "redis-cli -p 6379 ping | grep -q PONG"
run = "redis-server --daemonize yes --bind 0.0.0.0 --protected-mode no && sleep 0.3 && redis-cli ping"
timeout = "30s"

[[check]]
name = "master"
on = ["h1"]
kind = "redis_role"
role = "master"
depends_on = ["command.redis"]

[[command]]
name = "sentinel"
on = ["h1"]
depends_on = ["command.redis"]
check = "redis-cli -p 26379 ping | grep -q PONG"
run = '''printf 'port 26379\nsentinel monitor mymaster 127.0.0.1 6379 1\n' > /tmp/kz-sentinel.conf && redis-sentinel /tmp/kz-sentinel.conf --daemonize yes && sleep 0.5 && redis-cli -p 26379 ping'''
timeout = "30s"

[[check]]
name = "quorum"
on = ["h1"]
kind = "sentinel_quorum"
master = "mymaster"
sentinels = 1
depends_on = ["command.sentinel"]
"#;

const LAB_CACHE: &str = r#"
[[file]]
name = "conf"
on = ["h1"]
path = "/etc/kz-cache.conf"
content = "port 6380\n"

[[check]]
name = "replica-port"
on = ["h1"]
kind = "tcp"
port = 6380
tries = 1
depends_on = ["file.conf"]
"#;

const LAB_FAR: &str = r#"
[[file]]
name = "motd"
on = ["h2"]
path = "/etc/motd"
content = "far\n"

[[check]]
name = "reaches-redis"
on = ["h1"]
from = "h2"
kind = "tcp"
port = 6379
"#;

/// A replica on h2 following h1: one master among the two.
const LAB_PAIR: &str = r#"
[[command]]
name = "replica"
on = ["h2"]
check = "redis-cli -p 6379 ping | grep -q PONG"
run = "redis-server --daemonize yes --bind 0.0.0.0 --protected-mode no --replicaof ${hosts.h1.address} 6379 && sleep 0.3 && redis-cli ping"
timeout = "30s"

[[check]]
name = "one-master"
on = ["h1"]
kind = "redis_role"
one_master_among = ["h1", "h2"]
depends_on = ["command.replica"]
"#;

fn statuses(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["module"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn verify_on_the_lab_names_the_healthy_the_failing_and_the_paused() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzvf{}", std::process::id());
    let s = TestStack::new(&name);
    s.write("stack.toml", &LAB_STACK.replace("NAME", &name));
    s.write("01_redis.toml", LAB_REDIS);
    s.write("02_cache.toml", LAB_CACHE);
    s.write("03_far.toml", LAB_FAR);
    s.write("05_pair.toml", LAB_PAIR);
    let _guard = lab::PausingGuard(&s, &["h2"]);
    s.kz(&["lab", "up", "DIR"]).code(0);
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(1)
        .stdout_has("01_redis.check.master[h1]: verified")
        .stdout_has("02_cache.check.replica-port[h1]: failed to verify");

    // Everything reachable: the check run from h2 reaches h1's Redis.
    s.kz(&["verify", "DIR", "--lab"])
        .code(1)
        .stdout_has("01_redis ── OK")
        .stdout_has("pass 01_redis.check.master[h1] on h1: role:master on h1")
        .stdout_has(
            "pass 01_redis.check.quorum[h1] on h1: mymaster: quorum reachable, 1 sentinels usable",
        )
        .stdout_has("02_cache ── FAILING")
        .stdout_has("03_far ── OK")
        .stdout_has("pass 03_far.check.reaches-redis[h1] on h2: ")
        .stdout_has(
            "pass 05_pair.check.one-master[h1] on h1: one master, h1 (h1 master, h2 replica)",
        );
    // The pair would wait on h2's frozen Redis: it leaves before the pause.
    s.remove("05_pair.toml");

    // A module never applied, and h2 frozen: TCP connects, SSH never answers.
    s.write(
        "04_later.toml",
        "[[file]]\nname = \"x\"\non = [\"h1\"]\npath = \"/etc/later\"\ncontent = \"x\\n\"\n",
    );
    s.kz(&["lab", "pause", "DIR", "h2"]).code(0);
    let started = Instant::now();
    let r = s.kz_within(Duration::from_secs(30), &["verify", "DIR", "--lab"]);
    let took = started.elapsed();
    r.code(1)
        .stdout_has("01_redis ── OK")
        .stdout_has("02_cache ── FAILING")
        .stdout_has("FAIL 02_cache.check.replica-port[h1] on h1: ")
        .stdout_has("03_far ── UNREACHABLE")
        .stdout_has("UNREACHABLE 03_far.check.reaches-redis[h1] on h2: h2 (")
        .stdout_has("04_later ── NOT DEPLOYED");
    // The connect timeout is 3s; the others went on meanwhile.
    assert!(took < Duration::from_secs(10), "verify took {took:?}");

    let j = s.kz_within(
        Duration::from_secs(30),
        &["verify", "DIR", "--lab", "--json"],
    );
    j.code(1);
    let doc: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(
        statuses(&doc),
        [
            ("01_redis".to_string(), "ok".to_string()),
            ("02_cache".into(), "failing".into()),
            ("03_far".into(), "unreachable".into()),
            ("04_later".into(), "not_deployed".into()),
        ]
    );
    let far = &doc["modules"][2]["checks"][0];
    assert_eq!(far["result"], "unreachable");
    assert_eq!(far["host"], "h2");
    assert!(far["duration_ms"].as_u64().unwrap() < 6000, "{far}");
    assert_eq!(doc["lab"], true);
    assert_eq!(doc["passed"], false);
}
