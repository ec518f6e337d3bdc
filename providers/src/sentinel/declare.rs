//! The schema of `[[sentinel]]`: one Redis replication group with its sentinels, spanning the
//! hosts `on` selects. Values are checked here; the group's health is one attribute (`topology`)
//! and the sentinels' settings another (`settings`), both read back from the hosts.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::Value;
use kz_engine::provider::{Declaration, Declared};
use kz_engine::units::duration;

use super::topology::HEALTHY;

/// A `[[sentinel]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SentinelDecl {
    master_name: Spanned<String>,
    initial_master: Spanned<String>,
    redis_port: Option<Spanned<i64>>,
    sentinel_port: Option<Spanned<i64>>,
    quorum: Option<Spanned<i64>>,
    down_after: Option<Spanned<String>>,
    failover_timeout: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    sentinel_conf: Option<Spanned<String>>,
    sentinel_start: Option<Spanned<String>>,
    cli: Option<Spanned<String>>,
    haproxy: Option<Spanned<HaproxyDecl>>,
}

/// `haproxy = { hosts = [...], backend = "redis" }`: the load balancers kz checks after a change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaproxyDecl {
    hosts: Spanned<Vec<String>>,
    backend: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
}

/// Sentinel's own bounds would accept more; beyond these a setting is surely a mistake.
const MAX_DOWN_AFTER: Duration = Duration::from_secs(3600);
const MAX_FAILOVER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The canonical line of the sentinels' settings, as `observe` reads them back.
pub fn settings_line(quorum: &str, down_after_ms: u64, failover_timeout_ms: u64) -> String {
    format!(
        "quorum {quorum}, down-after-milliseconds {down_after_ms}, failover-timeout {failover_timeout_ms}"
    )
}

/// The default quorum, as `settings` shows it: more than half of the members.
pub const MAJORITY: &str = "majority";

/// A master name as Sentinel accepts it, and as kz can put on a command line unquoted.
fn valid_master_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn port(decl: &mut Declaration<'_>, v: &Option<Spanned<i64>>, default: u16) -> u16 {
    match v {
        None => default,
        Some(p) => match u16::try_from(*p.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                decl.error(p, "expected a port from 1 to 65535");
                default
            }
        },
    }
}

fn millis(
    decl: &mut Declaration<'_>,
    v: &Option<Spanned<String>>,
    default: Duration,
    max: Duration,
) -> u64 {
    let Some(v) = v else {
        return u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    };
    match duration(v.get_ref()) {
        Ok(d) if d >= Duration::from_millis(100) && d <= max => {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        }
        _ => {
            decl.error(
                v,
                format!(
                    "invalid duration `{}`: expected a number and a unit from 100ms to {}, e.g. 5s",
                    v.get_ref(),
                    kz_engine::units::format_duration(max)
                ),
            );
            0
        }
    }
}

/// The `haproxy` attribute: a table of the hosts, the backend and the stats socket.
fn balancers(decl: &mut Declaration<'_>, h: &Spanned<HaproxyDecl>) -> Template {
    let d = h.get_ref();
    if d.hosts.get_ref().is_empty() {
        decl.error(
            &d.hosts,
            "`haproxy.hosts`: name at least one host running HAProxy",
        );
    }
    let mut hosts = Vec::new();
    for name in d.hosts.get_ref() {
        if !decl.hosts.contains_key(name) {
            decl.error(&d.hosts, format!("`haproxy.hosts`: unknown host `{name}`"));
        } else if !hosts.contains(name) {
            hosts.push(name.clone());
        }
    }
    let backend = d.backend.as_ref().map_or("redis", |b| b.get_ref().as_str());
    if let Some(b) = &d.backend
        && (b.get_ref().is_empty()
            || !b
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
    {
        decl.error(
            b,
            "`haproxy.backend`: expected a backend name (letters, digits, `-`, `_`, `.`, `:`)",
        );
    }
    let socket = d
        .socket
        .as_ref()
        .map_or(super::balancers::DEFAULT_SOCKET, |s| s.get_ref().as_str());
    if let Some(s) = &d.socket
        && (!s.get_ref().starts_with('/') || s.get_ref().contains(['\n', '\r', '\0']))
    {
        decl.error(
            s,
            "`haproxy.socket`: expected an absolute path to HAProxy's stats socket",
        );
    }
    Template::Map(
        [
            (
                "hosts".to_string(),
                Template::Value(Value::List(hosts.into_iter().map(Value::Text).collect())),
            ),
            ("backend".to_string(), text(backend)),
            ("socket".to_string(), text(socket)),
        ]
        .into_iter()
        .collect(),
    )
}

fn text(s: &str) -> Template {
    Template::Value(Value::Text(s.to_string()))
}

/// The group's names: Sentinel's name for it, and a host of the inventory to start from.
fn check_names(decl: &mut Declaration<'_>, d: &SentinelDecl) {
    if !valid_master_name(d.master_name.get_ref()) {
        decl.error(
            &d.master_name,
            format!(
                "invalid master name `{}`: use letters, digits, `-`, `_` and `.`",
                d.master_name.get_ref()
            ),
        );
    }
    if !decl.hosts.contains_key(d.initial_master.get_ref()) {
        decl.error(
            &d.initial_master,
            format!(
                "unknown host `{}`: `initial_master` names a host of the inventory, one of `on`",
                d.initial_master.get_ref()
            ),
        );
    }
}

pub fn declare(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: SentinelDecl = decl.parse()?;
    check_names(decl, &d);
    let redis_port = port(decl, &d.redis_port, 6379);
    let sentinel_port = port(decl, &d.sentinel_port, 26379);
    if redis_port == sentinel_port {
        decl.error_here("`redis_port` and `sentinel_port` must differ");
    }
    // The majority of the group's sentinels by default; the members are known only after the
    // hosts are selected, so the word stands for it here and `observe` and apply resolve it.
    let quorum = match &d.quorum {
        None => MAJORITY.to_string(),
        Some(q) => match u32::try_from(*q.get_ref()) {
            Ok(n) if (1..=100).contains(&n) => n.to_string(),
            _ => {
                decl.error(q, "expected a number of sentinels from 1 to 100");
                MAJORITY.to_string()
            }
        },
    };
    let down_after = millis(decl, &d.down_after, Duration::from_secs(5), MAX_DOWN_AFTER);
    let failover = millis(
        decl,
        &d.failover_timeout,
        Duration::from_secs(60),
        MAX_FAILOVER_TIMEOUT,
    );
    if let Some(a) = &d.auth
        && (a.get_ref().is_empty() || a.get_ref().contains(['\n', '\r', '\0']))
    {
        decl.error(
            a,
            "`auth` must be one non-empty line (use a ${secret.NAME})",
        );
    }
    let conf = d
        .sentinel_conf
        .clone()
        .unwrap_or_else(|| Spanned::new(0..0, "/etc/redis/sentinel.conf".to_string()));
    let haproxy = d.haproxy.as_ref().map(|h| balancers(decl, h));
    if !decl.ok() {
        return None;
    }
    let mut attrs = vec![
        ("topology".to_string(), text(HEALTHY)),
        (
            "settings".to_string(),
            text(&settings_line(&quorum, down_after, failover)),
        ),
        (
            "master_name".to_string(),
            Template::Text(d.master_name.clone()),
        ),
        (
            "initial_master".to_string(),
            Template::Text(d.initial_master.clone()),
        ),
        ("redis_port".to_string(), text(&redis_port.to_string())),
        (
            "sentinel_port".to_string(),
            text(&sentinel_port.to_string()),
        ),
        ("sentinel_conf".to_string(), Template::Path(conf)),
        (
            "cli".to_string(),
            d.cli
                .clone()
                .map_or_else(|| text("redis-cli"), Template::Text),
        ),
        // Each member's address as this run sees it (after a lab overlay): Sentinel answers
        // with addresses, which kz maps back to hosts, and announces them.
        (
            "addresses".to_string(),
            Template::PerMember(Box::new(Template::Text(Spanned::new(
                d.master_name.span(),
                "${host.address}".to_string(),
            )))),
        ),
    ];
    if let Some(a) = &d.auth {
        attrs.push(("auth".into(), Template::Text(a.clone())));
    }
    if let Some(h) = haproxy {
        attrs.push(("haproxy".into(), h));
    }
    if let Some(s) = &d.sentinel_start {
        attrs.push(("sentinel_start".into(), Template::Text(s.clone())));
    }
    Some(Declared { attrs, gate: None })
}
