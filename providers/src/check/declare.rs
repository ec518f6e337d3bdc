//! The schema of `[[check]]`: the keys every kind shares (kind, from, tries, interval,
//! successes, deadline, timeout) and each kind's own, checked against the kind so that a key
//! of another kind is an error at its place rather than silently ignored.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::{Gate, Value};
use kz_engine::provider::{Declaration, Declared};
use kz_engine::units::{duration, format_duration};

use super::Kind;

/// The longest a check may be given to pass.
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The longest one try may wait for an answer (a connect, a request, a query).
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A `[[check]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckDecl {
    kind: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    tries: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    successes: Option<Spanned<i64>>,
    deadline: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    url: Option<Spanned<String>>,
    status: Option<Spanned<i64>>,
    contains: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    one_master_among: Option<Spanned<Vec<Spanned<String>>>>,
    password: Option<Spanned<String>>,
    master: Option<Spanned<String>>,
    sentinels: Option<Spanned<i64>>,
    replicas: Option<Spanned<i64>>,
    user: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    nodes: Option<Spanned<i64>>,
    daemonsets: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A kind-specific key as given: where it is, and its attribute.
struct Given {
    name: &'static str,
    span: Range<usize>,
    attr: Template,
}

fn text(v: &Spanned<String>) -> Template {
    Template::Text(v.clone())
}

fn number(v: &Spanned<i64>) -> Template {
    Template::Value(Value::Text(v.get_ref().to_string()))
}

fn list(v: &Spanned<Vec<Spanned<String>>>) -> Template {
    Template::List(v.get_ref().iter().map(text).collect())
}

impl CheckDecl {
    /// The kind-specific keys present, in a fixed order.
    fn given(&self) -> Vec<Given> {
        let mut out = Vec::new();
        let mut t = |name: &'static str, v: &Option<Spanned<String>>| {
            if let Some(v) = v {
                out.push(Given {
                    name,
                    span: v.span(),
                    attr: text(v),
                });
            }
        };
        t("command", &self.command);
        t("address", &self.address);
        t("url", &self.url);
        t("contains", &self.contains);
        t("role", &self.role);
        t("password", &self.password);
        t("master", &self.master);
        t("user", &self.user);
        t("database", &self.database);
        t("query", &self.query);
        t("expect", &self.expect);
        for (name, v) in [
            ("port", &self.port),
            ("status", &self.status),
            ("sentinels", &self.sentinels),
            ("replicas", &self.replicas),
            ("nodes", &self.nodes),
        ] {
            if let Some(v) = v {
                out.push(Given {
                    name,
                    span: v.span(),
                    attr: number(v),
                });
            }
        }
        for (name, v) in [
            ("one_master_among", &self.one_master_among),
            ("daemonsets", &self.daemonsets),
        ] {
            if let Some(v) = v {
                out.push(Given {
                    name,
                    span: v.span(),
                    attr: list(v),
                });
            }
        }
        out
    }
}

/// The keys each kind takes, and those it requires.
fn keys(kind: Kind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        Kind::Command => (&["command"], &["command"]),
        Kind::Tcp => (&["address", "port"], &["port"]),
        Kind::Http => (&["url", "status", "contains"], &["url"]),
        Kind::RedisRole => (
            &["address", "port", "password", "role", "one_master_among"],
            &[],
        ),
        Kind::SentinelQuorum => (&["address", "port", "master", "sentinels"], &["master"]),
        Kind::Patroni => (&["url", "replicas"], &["replicas"]),
        Kind::Postgres => (
            &[
                "address", "port", "user", "database", "password", "query", "expect",
            ],
            &[],
        ),
        Kind::RabbitmqCluster => (&["nodes"], &["nodes"]),
        Kind::Galera => (
            &["address", "port", "user", "password", "nodes"],
            &["nodes"],
        ),
        Kind::Minio => (&["url"], &[]),
        Kind::K3sNodes => (&["nodes", "daemonsets"], &["nodes"]),
    }
}

pub(super) fn declare_check(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: CheckDecl = decl.parse()?;
    let kind = match &d.kind {
        None => Kind::Command,
        Some(k) => match Kind::parse(k.get_ref()) {
            Some(kind) => kind,
            None => {
                decl.error(
                    k,
                    format!(
                        "unknown check kind `{}` (expected one of: {})",
                        k.get_ref(),
                        Kind::ALL.map(Kind::name).join(", ")
                    ),
                );
                return None;
            }
        },
    };
    let mut gate = gate(decl, &d);
    if let Some(from) = &d.from {
        if decl.hosts.contains_key(from.get_ref()) {
            gate.from = Some(from.get_ref().clone());
        } else {
            decl.error(from, format!("`from`: unknown host `{}`", from.get_ref()));
        }
    }
    let mut attrs = vec![(
        "kind".to_string(),
        Template::Value(Value::Text(kind.name().into())),
    )];
    if let Some(t) = &d.timeout {
        match duration(t.get_ref()) {
            Ok(v) if !v.is_zero() && v <= MAX_TIMEOUT => attrs.push((
                "timeout".into(),
                Template::Value(Value::Text(format_duration(v))),
            )),
            _ => decl.error(
                t,
                format!(
                    "invalid timeout `{}`: expected a duration from 1ms to 5m, e.g. 3s",
                    t.get_ref()
                ),
            ),
        }
    }
    let (allowed, required) = keys(kind);
    let given = d.given();
    for g in &given {
        if !allowed.contains(&g.name) {
            decl.error_span(
                g.span.clone(),
                format!(
                    "`{}` is not a key of a `{}` check (it takes: {})",
                    g.name,
                    kind.name(),
                    allowed.join(", ")
                ),
            );
        }
    }
    for r in required {
        if !given.iter().any(|g| g.name == *r) {
            decl.error_here(format!("a `{}` check needs `{r}`", kind.name()));
        }
    }
    values(decl, &d, kind);
    if !decl.ok() {
        return None;
    }
    attrs.extend(given.into_iter().map(|g| (g.name.to_string(), g.attr)));
    defaults(kind, &mut attrs);
    if kind == Kind::RedisRole
        && let Some(among) = &d.one_master_among
    {
        one_master_attrs(among, &mut attrs);
    }
    Some(Declared {
        attrs,
        gate: Some(gate),
    })
}

/// The hosts of `one_master_among` by name, and their addresses, interpolated after a lab
/// overlay like every address.
fn one_master_attrs(among: &Spanned<Vec<Spanned<String>>>, attrs: &mut Vec<(String, Template)>) {
    let names: Vec<Template> = among
        .get_ref()
        .iter()
        .map(|h| Template::Text(h.clone()))
        .collect();
    let addrs: Vec<Template> = among
        .get_ref()
        .iter()
        .map(|h| {
            Template::Text(Spanned::new(
                h.span(),
                format!("${{hosts.{}.address}}", h.get_ref()),
            ))
        })
        .collect();
    attrs.retain(|(k, _)| k != "one_master_among");
    attrs.push(("one_master_among".into(), Template::List(names)));
    attrs.push(("addresses".into(), Template::List(addrs)));
}

/// Where a check looks when it is not told: the instance's own host (its lab address under
/// `--lab`, since the loader interpolates after the overlay).
fn defaults(kind: Kind, attrs: &mut Vec<(String, Template)>) {
    let url = match kind {
        Kind::Patroni => Some("http://${host.address}:8008/cluster"),
        Kind::Minio => Some("http://${host.address}:9000/minio/health/cluster"),
        _ => None,
    };
    let wants_address = matches!(
        kind,
        Kind::Tcp | Kind::RedisRole | Kind::SentinelQuorum | Kind::Postgres | Kind::Galera
    );
    let mut add = |key: &str, value: &str| {
        if !attrs.iter().any(|(k, _)| k == key) {
            attrs.push((
                key.to_string(),
                Template::Text(Spanned::new(0..0, value.to_string())),
            ));
        }
    };
    if let Some(u) = url {
        add("url", u);
    }
    if wants_address {
        add("address", "${host.address}");
    }
}

/// Tries, interval, successes and deadline.
fn gate(decl: &mut Declaration<'_>, d: &CheckDecl) -> Gate {
    let mut gate = Gate::default();
    for (field, target, max) in [
        (&d.tries, &mut gate.tries, 1000),
        (&d.successes, &mut gate.successes, 100),
    ] {
        if let Some(v) = field {
            match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=max).contains(&n) => *target = n,
                _ => decl.error(v, format!("expected a number from 1 to {max}")),
            }
        }
    }
    for (field, target) in [
        (&d.interval, &mut gate.interval),
        (&d.deadline, &mut gate.deadline),
    ] {
        if let Some(v) = field {
            match duration(v.get_ref()) {
                Ok(t) if t <= MAX_DEADLINE => *target = t,
                _ => decl.error(
                    v,
                    format!(
                        "invalid duration `{}`: expected a number and a unit up to 24h, e.g. 500ms, 30s, 10m",
                        v.get_ref()
                    ),
                ),
            }
        }
    }
    if gate.successes > gate.tries {
        decl.error_here(format!(
            "`successes` ({}) cannot exceed `tries` ({})",
            gate.successes, gate.tries
        ));
    }
    gate
}

/// Checks the values of the kind-specific keys.
fn values(decl: &mut Declaration<'_>, d: &CheckDecl, kind: Kind) {
    let ranges: [(&Option<Spanned<i64>>, i64, i64); 5] = [
        (&d.port, 1, 65535),
        (&d.status, 100, 599),
        (&d.sentinels, 1, 100),
        (&d.replicas, 0, 100),
        (&d.nodes, 1, 10_000),
    ];
    for (field, lo, hi) in ranges {
        if let Some(v) = field
            && !(lo..=hi).contains(v.get_ref())
        {
            decl.error(v, format!("expected a number from {lo} to {hi}"));
        }
    }
    if let Some(p) = &d.password
        && !p.get_ref().contains("${secret.")
    {
        decl.error(
            p,
            "`password` must come from a secret (`${secret.NAME}`), so that it is never shown or stored in clear",
        );
    }
    // These values reach the host's tools as arguments (`curl URL`, `psql -U USER`), where `ps`
    // shows them: only `password` (through the tool's environment) and `command` (a script on
    // standard input) may carry a secret.
    for v in [
        &d.address,
        &d.url,
        &d.contains,
        &d.user,
        &d.database,
        &d.query,
        &d.expect,
        &d.master,
    ]
    .into_iter()
    .flatten()
    {
        if v.get_ref().contains("${secret.") {
            decl.error(
                v,
                "a secret may only be used in `password` or `command`: this value is passed to a tool as an argument, where the host's process list shows it",
            );
        }
    }
    if let Some(u) = &d.url
        && !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://"))
    {
        decl.error(u, "`url` must start with http:// or https://");
    }
    if kind == Kind::RedisRole {
        redis_role(decl, d);
    }
    if let Some(ds) = &d.daemonsets {
        for v in ds.get_ref() {
            let ok = v
                .get_ref()
                .split_once('/')
                .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty());
            if !ok {
                decl.error(v, "expected NAMESPACE/NAME, e.g. kube-system/ingress-nginx");
            }
        }
    }
}

/// `role` or `one_master_among`, exactly one; known hosts, each once.
fn redis_role(decl: &mut Declaration<'_>, d: &CheckDecl) {
    match (&d.role, &d.one_master_among) {
        (Some(_), Some(among)) => decl.error(
            among,
            "give either `role` (this host's role) or `one_master_among` (one master among these hosts), not both",
        ),
        (None, None) => decl.error_here(
            "a `redis_role` check needs `role` (\"master\" or \"replica\") or `one_master_among` (a list of hosts)",
        ),
        (Some(r), None) => {
            if !matches!(r.get_ref().as_str(), "master" | "replica") {
                decl.error(r, "expected \"master\" or \"replica\"");
            }
        }
        (None, Some(among)) => {
            if among.get_ref().len() < 2 {
                decl.error(among, "`one_master_among` needs at least 2 hosts");
            }
            let mut seen = BTreeMap::new();
            for h in among.get_ref() {
                if !decl.hosts.contains_key(h.get_ref()) {
                    decl.error(h, format!("unknown host `{}`", h.get_ref()));
                } else if seen.insert(h.get_ref().clone(), ()).is_some() {
                    decl.error(h, format!("host `{}` is listed twice", h.get_ref()));
                }
            }
        }
    }
}
