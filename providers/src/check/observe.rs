//! What each kind's probe printed, judged: pass or fail, and a note saying what was observed
//! ("role:master on redis-01", "2 of 3 nodes Synced"), shown in plans, apply errors and
//! `kz verify` reports.

use kz_engine::model::{Instance, Value};

use super::Kind;
use super::probe::HTTP_END;

/// A verdict: passes, and what was seen.
pub(super) type Verdict = (bool, String);

fn num(inst: &Instance, key: &str) -> Option<u64> {
    inst.text(key)?.parse().ok()
}

/// The last few non-empty lines, joined, for notes about failures.
fn gist(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let s = all[all.len().saturating_sub(lines)..].join(" / ");
    if s.is_empty() { "no output".into() } else { s }
}

pub(super) fn judge(kind: Kind, inst: &Instance, text: &str) -> Result<Verdict, String> {
    match kind {
        Kind::Command => command(text),
        Kind::Tcp => Ok(tcp(inst, text)),
        Kind::Http => Ok(http(inst, text)),
        Kind::Minio => Ok(minio(text)),
        Kind::Patroni => Ok(patroni(inst, text)),
        Kind::RedisRole => Ok(redis_role(inst, text)),
        Kind::SentinelQuorum => Ok(sentinel_quorum(inst, text)),
        Kind::Postgres => Ok(postgres(inst, text)),
        Kind::RabbitmqCluster => Ok(rabbitmq(inst, text)),
        Kind::Galera => Ok(galera(inst, text)),
        Kind::K3sNodes => Ok(k3s(inst, text)),
    }
}

fn command(text: &str) -> Result<Verdict, String> {
    let mut lines = text.lines();
    let code: i32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("unexpected answer from the check: `{}`", text.trim()))?;
    let said: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let note = if code == 0 {
        String::new()
    } else if said.is_empty() {
        format!("exit {code}")
    } else {
        format!("exit {code}: {}", said.join(" / "))
    };
    Ok((code == 0, note))
}

fn tcp(inst: &Instance, text: &str) -> Verdict {
    let target = format!(
        "{}:{}",
        inst.text("address").unwrap_or("?"),
        inst.text("port").unwrap_or("?")
    );
    let code = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("exit "))
        .and_then(|c| c.trim().parse::<i32>().ok());
    match code {
        Some(0) => (true, format!("{target} accepts connections")),
        Some(124) => (
            false,
            format!(
                "{target}: no answer within {}s",
                super::probe::timeout_secs(inst)
            ),
        ),
        _ => {
            let said = text
                .lines()
                .filter(|l| !l.starts_with("exit "))
                .collect::<Vec<_>>();
            // bash says `bash: line 1: /dev/tcp/H/P: Connection refused`: the last part is news.
            let said = gist(&said.join("\n"), 1);
            let said = said.rsplit(": ").next().unwrap_or(&said).to_string();
            (false, format!("{target}: {said}"))
        }
    }
}

/// The body and status of an HTTP answer (status 0: none).
fn http_answer(text: &str) -> (u16, &str) {
    match text.rfind(HTTP_END) {
        Some(at) => {
            let status = text[at + HTTP_END.len()..].trim().parse().unwrap_or(0);
            (status, text[..at].trim_end_matches('\n'))
        }
        None => (0, text),
    }
}

fn http(inst: &Instance, text: &str) -> Verdict {
    let (status, body) = http_answer(text);
    let want: u16 = num(inst, "status")
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(200);
    if status == 0 {
        return (false, format!("no answer: {}", gist(body, 1)));
    }
    if status != want {
        return (false, format!("status {status}, expected {want}"));
    }
    match inst.text("contains") {
        Some(c) if !body.contains(c) => (
            false,
            format!("status {status}, but the body does not contain {c:?}"),
        ),
        Some(c) => (true, format!("status {status}, body contains {c:?}")),
        None => (true, format!("status {status}")),
    }
}

fn minio(text: &str) -> Verdict {
    match http_answer(text) {
        (200, _) => (true, "cluster healthy (200)".into()),
        (0, body) => (false, format!("no answer: {}", gist(body, 1))),
        (503, _) => (false, "cluster unhealthy (503: write quorum lost)".into()),
        (s, _) => (false, format!("cluster health answered {s}")),
    }
}

fn patroni(inst: &Instance, text: &str) -> Verdict {
    let (status, body) = http_answer(text);
    if status != 200 {
        return (
            false,
            format!("Patroni /cluster answered {status}: {}", gist(body, 1)),
        );
    }
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(body) else {
        return (false, "Patroni's answer is not JSON".into());
    };
    let members = doc["members"].as_array().cloned().unwrap_or_default();
    let field = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or("").to_string();
    let leaders: Vec<String> = members
        .iter()
        .filter(|m| field(m, "role") == "leader" && field(m, "state") == "running")
        .map(|m| field(m, "name"))
        .collect();
    let streaming = members
        .iter()
        .filter(|m| {
            matches!(field(m, "role").as_str(), "replica" | "sync_standby")
                && matches!(field(m, "state").as_str(), "streaming" | "running")
        })
        .count();
    let want = num(inst, "replicas").unwrap_or(0);
    let leader = match leaders.as_slice() {
        [one] => format!("leader {one}"),
        [] => "no leader".into(),
        many => format!("{} leaders ({})", many.len(), many.join(", ")),
    };
    let note = format!("{leader}, {streaming} of {want} replicas streaming");
    (leaders.len() == 1 && streaming as u64 >= want, note)
}

fn redis_role(inst: &Instance, text: &str) -> Verdict {
    let seen: Vec<(&str, String)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(h, r)| {
            let r = r.trim();
            (
                h,
                if r == "slave" {
                    "replica".into()
                } else {
                    r.to_string()
                },
            )
        })
        .collect();
    if let Some(want) = inst.text("role") {
        return match seen.first() {
            Some((h, r)) if r == want => (true, format!("role:{r} on {h}")),
            Some((h, r)) => (false, format!("role:{r} on {h}, expected {want}")),
            None => (false, format!("no answer: {}", gist(text, 1))),
        };
    }
    let masters: Vec<&str> = seen
        .iter()
        .filter(|(_, r)| r == "master")
        .map(|(h, _)| *h)
        .collect();
    let all = seen
        .iter()
        .map(|(h, r)| format!("{h} {r}"))
        .collect::<Vec<_>>()
        .join(", ");
    match masters.as_slice() {
        [m] => (true, format!("one master, {m} ({all})")),
        [] => (false, format!("no master ({all})")),
        many => (false, format!("{} masters ({all})", many.len())),
    }
}

fn sentinel_quorum(inst: &Instance, text: &str) -> Verdict {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no answer");
    // "OK 3 usable Sentinels. Quorum and failover authorization can be reached"
    let usable: Option<u64> = first.split_whitespace().nth(1).and_then(|n| n.parse().ok());
    let master = inst.text("master").unwrap_or("?");
    if !first.starts_with("OK") {
        return (false, format!("{master}: {first}"));
    }
    match (num(inst, "sentinels"), usable) {
        (Some(want), Some(n)) if n < want => (
            false,
            format!("{master}: quorum reachable, but {n} of {want} sentinels usable"),
        ),
        (_, Some(n)) => (
            true,
            format!("{master}: quorum reachable, {n} sentinels usable"),
        ),
        _ => (true, format!("{master}: {first}")),
    }
}

fn exit_code(text: &str) -> Option<i32> {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("KZ-EXIT "))
        .and_then(|c| c.trim().parse().ok())
}

fn postgres(inst: &Instance, text: &str) -> Verdict {
    let code = exit_code(text);
    let out: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("KZ-EXIT ") && !l.trim().is_empty())
        .collect();
    let out = out.join("\n");
    let target = format!(
        "{}:{}",
        inst.text("address").unwrap_or("?"),
        inst.text("port").unwrap_or("5432")
    );
    if code != Some(0) {
        return (false, format!("{target}: {}", gist(&out, 2)));
    }
    match inst.text("expect") {
        Some(e) if !out.contains(e) => (
            false,
            format!("{target}: answered {:?}, expected {e:?}", gist(&out, 1)),
        ),
        _ => (true, format!("{target}: answered {:?}", gist(&out, 1))),
    }
}

fn rabbitmq(inst: &Instance, text: &str) -> Verdict {
    let (status, quorum) = text.split_once("KZ-QUORUM").unwrap_or((text, ""));
    let want = num(inst, "nodes").unwrap_or(1);
    let running = serde_json::from_str::<serde_json::Value>(status.trim())
        .ok()
        .and_then(|d| d["running_nodes"].as_array().map(Vec::len));
    let Some(running) = running else {
        return (false, format!("cluster_status: {}", gist(status, 1)));
    };
    let running = running as u64;
    let quorum_ok = exit_code(quorum) == Some(0);
    let note = format!(
        "{running} of {want} nodes running; {}",
        if quorum_ok {
            "quorum queues usable".to_string()
        } else {
            format!(
                "quorum critical: {}",
                gist(quorum.replace("KZ-EXIT", "exit").as_str(), 1)
            )
        }
    );
    (running >= want && quorum_ok, note)
}

fn galera(inst: &Instance, text: &str) -> Verdict {
    let mut size = None;
    let mut state = None;
    let mut status = None;
    for l in text.lines() {
        match l.split_once('\t') {
            Some(("wsrep_cluster_size", v)) => size = v.trim().parse::<u64>().ok(),
            Some(("wsrep_local_state_comment", v)) => state = Some(v.trim().to_string()),
            Some(("wsrep_cluster_status", v)) => status = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let want = num(inst, "nodes").unwrap_or(1);
    let (Some(size), Some(state)) = (size, state) else {
        return (false, format!("no wsrep status: {}", gist(text, 1)));
    };
    let primary = status.as_deref().is_none_or(|s| s == "Primary");
    let note = format!(
        "cluster size {size} of {want}, this node {state}{}",
        status
            .map(|s| format!(", component {s}"))
            .unwrap_or_default()
    );
    (size == want && state == "Synced" && primary, note)
}

fn k3s(inst: &Instance, text: &str) -> Verdict {
    let (nodes, ds) = text.split_once("KZ-DS").unwrap_or((text, ""));
    let want = num(inst, "nodes").unwrap_or(1);
    let mut ready = 0u64;
    let mut not_ready = Vec::new();
    for l in nodes.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 2 {
            continue;
        }
        if f[1].split(',').next() == Some("Ready") {
            ready += 1;
        } else {
            not_ready.push(format!("{} {}", f[0], f[1]));
        }
    }
    if ready == 0 && not_ready.is_empty() {
        return (false, format!("no nodes listed: {}", gist(nodes, 1)));
    }
    let mut problems = Vec::new();
    let wanted: Vec<String> = match inst.attr("daemonsets").and_then(|a| a.known()) {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    for w in &wanted {
        let (ns, name) = w.split_once('/').unwrap_or(("", w));
        let line = ds
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() >= 5 && f[0] == ns && f[1] == name);
        match line {
            Some(f) if f[2] == f[4] && f[2] != "0" => {}
            Some(f) => problems.push(format!("{w} {} of {} ready", f[4], f[2])),
            None => problems.push(format!("{w} missing")),
        }
    }
    let mut note = format!("{ready} of {want} nodes Ready");
    if !not_ready.is_empty() {
        note.push_str(&format!(" ({})", not_ready.join(", ")));
    }
    if !wanted.is_empty() {
        if problems.is_empty() {
            note.push_str(&format!("; {} DaemonSets ready", wanted.len()));
        } else {
            note.push_str(&format!("; {}", problems.join(", ")));
        }
    }
    (ready >= want && problems.is_empty(), note)
}
