//! The shell snippet of each kind: it runs on the check's host inside that host's one batched
//! read, changes nothing, and prints what `observe` parses. Values are quoted; passwords go
//! into the environment of the tool inside the script, which travels on standard input, so
//! they never appear on a command line.
//!
//! What a host needs: `sh` for `command`; `bash` (Debian's default, for `/dev/tcp`) or
//! `python3` for `tcp`; `curl` or `python3` for `http`, `patroni` and `minio`; `redis-cli` for
//! `redis_role` and `sentinel_quorum`; `psql` for `postgres`; `mysql` (or `mariadb`) for
//! `galera`; `rabbitmqctl` and `rabbitmq-diagnostics` for `rabbitmq_cluster`; `kubectl` (or
//! `k3s kubectl`) for `k3s_nodes`.

use std::time::Duration;

use kz_engine::model::{Instance, Value};
use kz_engine::provider::shell_quote;
use kz_engine::units::parse_duration;

use super::Kind;

/// How long one try waits for an answer unless the check says `timeout`.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The marker line that ends the body of an HTTP answer: `KZ-HTTP <status>` (000: no answer).
pub(super) const HTTP_END: &str = "KZ-HTTP";

/// A text attribute, quoted for the shell; an unknown value (a secret unset) yields `None`.
fn q(inst: &Instance, key: &str) -> Option<String> {
    inst.text(key).map(shell_quote)
}

fn texts(inst: &Instance, key: &str) -> Vec<String> {
    match inst.attr(key).and_then(|a| a.known()) {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whole seconds of the per-try timeout, at least one (the tools take seconds).
pub(super) fn timeout_secs(inst: &Instance) -> u64 {
    let t = inst
        .text("timeout")
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_TIMEOUT);
    t.as_secs_f64().ceil().max(1.0) as u64
}

pub(super) fn probe(kind: Kind, inst: &Instance) -> Option<String> {
    let t = timeout_secs(inst);
    match kind {
        Kind::Command => {
            // Its own shell, so that its syntax cannot break the batch; the last lines of its
            // output are the evidence shown when it fails.
            let command = inst.text("command")?;
            Some(format!(
                "o=$({}); s=$?\necho \"$s\"\nprintf '%s\\n' \"$o\" | tail -n 3",
                crate::own_shell(command, " 2>&1")
            ))
        }
        Kind::Tcp => Some(tcp(&q(inst, "address")?, inst.text("port")?, t)),
        Kind::Http | Kind::Patroni | Kind::Minio => Some(http(&q(inst, "url")?, t)),
        Kind::RedisRole => redis_role(inst, t),
        Kind::SentinelQuorum => Some(format!(
            "timeout {t} redis-cli -h {} -p {} sentinel ckquorum {} 2>&1 | head -n 3",
            q(inst, "address")?,
            inst.text("port").unwrap_or("26379"),
            q(inst, "master")?
        )),
        Kind::Postgres => postgres(inst, t),
        Kind::RabbitmqCluster => Some(format!(
            "timeout {t} rabbitmqctl -q cluster_status --formatter json 2>&1 | tail -c 65536\n\
             echo; echo KZ-QUORUM\n\
             o=$(timeout {t} rabbitmq-diagnostics -q check_if_node_is_quorum_critical 2>&1); e=$?\n\
             printf '%s\\n' \"$o\" | tail -n 3\n\
             echo \"KZ-EXIT $e\""
        )),
        Kind::Galera => galera(inst, t),
        Kind::K3sNodes => Some(format!(
            "if command -v kubectl >/dev/null 2>&1; then k=kubectl; else k='k3s kubectl'; fi\n\
             timeout {t} $k get nodes --no-headers 2>&1 | head -n 2000\n\
             echo KZ-DS\n\
             timeout {t} $k get daemonsets -A --no-headers 2>&1 | head -n 2000"
        )),
    }
}

/// Connects and closes: bash's `/dev/tcp`, else python3. Prints `exit N` last.
fn tcp(address: &str, port: &str, t: u64) -> String {
    let port = shell_quote(port);
    format!(
        "if command -v bash >/dev/null 2>&1; then timeout {t} bash -c 'exec 3<>/dev/tcp/\"$0\"/\"$1\"' {address} {port} 2>&1\n\
         else timeout {t} python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), {t}).close()' {address} {port} 2>&1; fi\n\
         echo \"exit $?\""
    )
}

/// Fetches a URL with curl, else python3: the body (its last 64 KiB), then `KZ-HTTP <status>`.
fn http(url: &str, t: u64) -> String {
    format!(
        "if command -v curl >/dev/null 2>&1; then curl -sS -m {t} -w '\\n{HTTP_END} %{{http_code}}\\n' {url} 2>&1 | tail -c 65536\n\
         elif command -v python3 >/dev/null 2>&1; then python3 - {url} {t} <<'KZ_PY'\n\
import sys, urllib.request, urllib.error\n\
try:\n\
    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))\n\
    code, body = r.status, r.read()\n\
except urllib.error.HTTPError as e:\n\
    code, body = e.code, e.read()\n\
except Exception as e:\n\
    code, body = 0, str(e).encode()\n\
sys.stdout.buffer.write(body[-65536:])\n\
sys.stdout.write('\\n{HTTP_END} %03d\\n' % code)\n\
KZ_PY\n\
         else echo 'neither curl nor python3 on this host'; echo '{HTTP_END} 000'; fi"
    )
}

/// `NAME ROLE` per Redis asked: this host's, or each of `one_master_among`.
fn redis_role(inst: &Instance, t: u64) -> Option<String> {
    let port = inst.text("port").unwrap_or("6379");
    let mut s = String::new();
    if let Some(p) = inst.attr("password") {
        let p = p.known()?.as_str()?;
        s.push_str(&format!(
            "REDISCLI_AUTH={}; export REDISCLI_AUTH\n",
            shell_quote(p)
        ));
    }
    let targets: Vec<(String, String)> = match inst.text("role") {
        Some(_) => vec![(
            inst.host().unwrap_or("host").to_string(),
            inst.text("address")?.to_string(),
        )],
        None => texts(inst, "one_master_among")
            .into_iter()
            .zip(texts(inst, "addresses"))
            .collect(),
    };
    for (name, addr) in targets {
        s.push_str(&format!(
            "printf '%s ' {}; r=$(timeout {t} redis-cli --no-auth-warning -h {} -p {port} role 2>&1 | head -n 1); echo \"${{r:-no answer}}\"\n",
            shell_quote(&name),
            shell_quote(&addr),
        ));
    }
    Some(s)
}

/// The query through psql, read from a here-document; `KZ-EXIT N` last.
fn postgres(inst: &Instance, t: u64) -> Option<String> {
    let mut s = String::new();
    if let Some(p) = inst.attr("password") {
        let p = p.known()?.as_str()?;
        s.push_str(&format!(
            "PGPASSWORD={}; export PGPASSWORD\n",
            shell_quote(p)
        ));
    }
    let query = inst.text("query").unwrap_or("select 1");
    let mut delim = String::from("KZ_SQL");
    while query.lines().any(|l| l == delim) {
        delim.push('_');
    }
    // Its status is kept apart from the output's tail: a pipeline's status would be tail's.
    s.push_str(&format!(
        "o=$(PGCONNECT_TIMEOUT={t} timeout {t} psql -X -A -t -q -v ON_ERROR_STOP=1 -h {} -p {} -U {} -d {} -f - 2>&1 <<'{delim}'\n{query}\n{delim}\n); e=$?\nprintf '%s\\n' \"$o\" | tail -n 5\necho \"KZ-EXIT $e\"",
        q(inst, "address")?,
        inst.text("port").unwrap_or("5432"),
        shell_quote(inst.text("user").unwrap_or("postgres")),
        shell_quote(inst.text("database").unwrap_or("postgres")),
    ));
    Some(s)
}

/// The wsrep status variables, tab-separated.
fn galera(inst: &Instance, t: u64) -> Option<String> {
    let mut s = String::new();
    if let Some(p) = inst.attr("password") {
        let p = p.known()?.as_str()?;
        s.push_str(&format!("MYSQL_PWD={}; export MYSQL_PWD\n", shell_quote(p)));
    }
    s.push_str(&format!(
        "if command -v mysql >/dev/null 2>&1; then m=mysql; else m=mariadb; fi\n\
         timeout {t} $m -N -B --connect-timeout={t} -h {} -P {} -u {} -e \"SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_size','wsrep_local_state_comment','wsrep_cluster_status')\" 2>&1 | head -n 20",
        q(inst, "address")?,
        inst.text("port").unwrap_or("3306"),
        shell_quote(inst.text("user").unwrap_or("root")),
    ));
    Some(s)
}
