//! The load balancers in front of a group: after kz changed the group, each HAProxy host named in
//! `haproxy` must route to exactly one server of the backend, the master. kz reads HAProxy's own
//! view through its stats socket (`show stat`), with `socat` when the host has it, else Python's
//! standard library (Debian hosts have `python3`; the lab image has no `socat`).

use std::time::Duration;

use tokio::time::{Instant, sleep};

use kz_engine::provider::{ApplyCtx, CommandSpec, ProviderError, shell_quote};

/// Which HAProxy hosts route to the group, through which backend and stats socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Balancers {
    pub hosts: Vec<String>,
    pub backend: String,
    pub socket: String,
}

/// The stats socket the `haproxy` resource renders by default.
pub const DEFAULT_SOCKET: &str = "/run/haproxy/admin.sock";

/// How long HAProxy's checks may take to follow the master (its `rise`/`fall` at 1 s intervals
/// need a few seconds; a check every 3 s, three falls, need about ten).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(20);

/// A server's state as HAProxy reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerState {
    pub name: String,
    /// `UP`, `DOWN`, `UP 1/2` (going down), `MAINT`, `no check`...
    pub status: String,
}

impl ServerState {
    fn up(&self) -> bool {
        self.status == "UP" || self.status.starts_with("UP ")
    }
}

/// The script that prints `show stat` from the socket.
pub fn script(socket: &str) -> String {
    format!(
        r#"kz_sock={sock}
if command -v socat >/dev/null 2>&1; then
  echo 'show stat' | timeout 5 socat stdio "unix-connect:$kz_sock"
elif command -v python3 >/dev/null 2>&1; then
  timeout 5 python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(4)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.write(out.decode("utf-8", "replace"))
' "$kz_sock"
else
  echo 'reading the stats socket needs socat or python3' >&2; exit 4
fi
"#,
        sock = shell_quote(socket)
    )
}

/// The servers of `backend` in a `show stat` answer (CSV, its header line starting with `# `).
pub fn parse(out: &str, backend: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = out.lines();
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .ok_or_else(|| format!("unexpected answer from the stats socket: {}", first(out)))?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (px, sv, st) = match (col("pxname"), col("svname"), col("status")) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err("the stats socket's answer lacks pxname, svname or status".into()),
    };
    let servers: Vec<ServerState> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(px) == Some(&backend))
        .filter(|f| !matches!(f.get(sv), Some(&"BACKEND") | Some(&"FRONTEND") | None))
        .map(|f| ServerState {
            name: f[sv].to_string(),
            status: f.get(st).unwrap_or(&"").to_string(),
        })
        .collect();
    if servers.is_empty() {
        return Err(format!("HAProxy has no backend `{backend}` with servers"));
    }
    Ok(servers)
}

fn first(s: &str) -> &str {
    s.lines().next().unwrap_or("(nothing)")
}

/// Whether the servers route to `master` alone; else what is wrong, in a few words.
pub fn judge(servers: &[ServerState], master: &str) -> Result<(), String> {
    let up: Vec<&str> = servers
        .iter()
        .filter(|s| s.up())
        .map(|s| s.name.as_str())
        .collect();
    match up.as_slice() {
        [one] if *one == master => Ok(()),
        [] => Err(format!("no server is up (master {master})")),
        _ => Err(format!(
            "up: {} (expected only the master, {master})",
            up.join(", ")
        )),
    }
}

/// Reads one HAProxy host's servers of the backend.
async fn read(cx: &ApplyCtx, b: &Balancers, host: &str) -> Result<Vec<ServerState>, String> {
    let t = cx.transport(host).await.map_err(|e| e.to_string())?;
    let out = t
        .run(CommandSpec {
            script: script(&b.socket),
            timeout: Duration::from_secs(10),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(format!(
            "cannot read {} (exit {}): {}",
            b.socket,
            out.status,
            crate::tail(&out.stderr, 3)
        ));
    }
    parse(&String::from_utf8_lossy(&out.stdout), &b.backend)
}

/// Waits, under a deadline, until every HAProxy host routes to `master` alone; a summary
/// ("haproxy-01, haproxy-02 route to redis-02") or an error naming each host that does not.
pub async fn verify(cx: &ApplyCtx, b: &Balancers, master: &str) -> Result<String, ProviderError> {
    let deadline = Instant::now() + FOLLOW_TIMEOUT;
    loop {
        let mut wrong = Vec::new();
        for h in &b.hosts {
            let verdict = read(cx, b, h).await.and_then(|s| judge(&s, master));
            if let Err(e) = verdict {
                wrong.push(format!("{h}: {e}"));
            }
        }
        if wrong.is_empty() {
            return Ok(format!(
                "{} route{} to {master}",
                b.hosts.join(", "),
                if b.hosts.len() == 1 { "s" } else { "" }
            ));
        }
        if Instant::now() >= deadline || cx.aborted() {
            return Err(ProviderError::new(
                "verify haproxy",
                format!(
                    "backend `{}` does not route to the master alone after {}s: {}",
                    b.backend,
                    FOLLOW_TIMEOUT.as_secs(),
                    wrong.join("; ")
                ),
            ));
        }
        cx.progress(format!(
            "waiting for HAProxy to follow {master}: {}",
            wrong.join("; ")
        ));
        sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n\
        redis,FRONTEND,,,0,1,2000,3,0,0,0,0,0,,,,,OPEN,\n\
        redis,redis-01,0,0,0,1,,3,0,0,,0,,0,0,0,0,DOWN,1\n\
        redis,redis-02,0,0,0,1,,3,0,0,,0,,0,0,0,0,UP,1\n\
        redis,redis-03,0,0,0,1,,3,0,0,,0,,0,0,0,0,DOWN 1/2,1\n\
        redis,BACKEND,0,0,0,1,200,3,0,0,0,,,0,0,0,0,UP,1\n";

    #[test]
    fn the_servers_of_the_backend_are_read_from_show_stat() {
        let s = parse(STAT, "redis").expect("parses");
        let names: Vec<(&str, &str)> = s
            .iter()
            .map(|s| (s.name.as_str(), s.status.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("redis-01", "DOWN"),
                ("redis-02", "UP"),
                ("redis-03", "DOWN 1/2")
            ]
        );
        assert!(
            parse(STAT, "nope")
                .expect_err("refused")
                .contains("no backend `nope`")
        );
        assert!(parse("Unknown command\n", "redis").is_err());
    }

    #[test]
    fn only_the_master_may_be_up() {
        let s = parse(STAT, "redis").expect("parses");
        assert_eq!(judge(&s, "redis-02"), Ok(()));
        assert!(
            judge(&s, "redis-01")
                .expect_err("refused")
                .contains("up: redis-02")
        );
        let going_down = STAT.replace("DOWN,1\nredis,redis-02", "UP 1/2,1\nredis,redis-02");
        let s = parse(&going_down, "redis").expect("parses");
        assert_eq!(
            judge(&s, "redis-02").expect_err("refused"),
            "up: redis-01, redis-02 (expected only the master, redis-02)"
        );
        let none = STAT.replace(",UP,1\nredis,redis-03", ",DOWN,1\nredis,redis-03");
        assert!(
            judge(&parse(&none, "redis").expect("parses"), "redis-02")
                .expect_err("refused")
                .contains("no server is up")
        );
    }
}
