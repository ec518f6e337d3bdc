//! The schema of `[[haproxy]]`: global and defaults settings, frontends, backends whose servers
//! are hosts of the inventory, ready-made checks and raw extra lines, checked here and rendered
//! into one text attribute, `config`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::Value;
use kz_engine::provider::{Declaration, Declared};

use super::checks;
use super::render::{Config, Section, Server, render};

/// Where the configuration lives unless `path` says otherwise (Debian's and the unit's file).
pub const DEFAULT_PATH: &str = "/etc/haproxy/haproxy.cfg";

/// A `[[haproxy]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaproxyDecl {
    path: Option<Spanned<String>>,
    reload: Option<Spanned<String>>,
    global: Option<BTreeMap<String, Spanned<toml::Value>>>,
    defaults: Option<BTreeMap<String, Spanned<toml::Value>>>,
    #[serde(default)]
    extra_global: Vec<Spanned<String>>,
    #[serde(default)]
    extra_defaults: Vec<Spanned<String>>,
    #[serde(default)]
    frontend: Vec<Spanned<FrontendDecl>>,
    #[serde(default)]
    backend: Vec<Spanned<BackendDecl>>,
    #[serde(default)]
    extra: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontendDecl {
    name: Spanned<String>,
    bind: Spanned<toml::Value>,
    mode: Option<Spanned<String>>,
    default_backend: Option<Spanned<String>>,
    #[serde(default)]
    options: Vec<Spanned<String>>,
    #[serde(default)]
    extra: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendDecl {
    name: Spanned<String>,
    mode: Option<Spanned<String>>,
    balance: Option<Spanned<String>>,
    #[serde(default)]
    options: Vec<Spanned<String>>,
    check: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    servers: Option<Spanned<toml::Value>>,
    port: Option<Spanned<i64>>,
    server_params: Option<Spanned<String>>,
    host_params: Option<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    extra: Vec<Spanned<String>>,
}

/// Settings kz writes unless the stack sets them: the stats socket operators expect, and the
/// timeouts without which HAProxy warns.
const BASE_GLOBAL: &[(&str, &str)] = &[
    (
        "stats socket",
        "/run/haproxy/admin.sock mode 660 level admin",
    ),
    ("stats timeout", "30s"),
];
const BASE_DEFAULTS: &[(&str, &str)] = &[
    ("mode", "tcp"),
    ("timeout client", "30m"),
    ("timeout connect", "5s"),
    ("timeout server", "30m"),
];

/// A proxy name as HAProxy accepts it: letters, digits, `-`, `_`, `.`, `:`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// A value that becomes part of one configuration line: a newline would smuggle in another.
fn one_line(decl: &mut Declaration<'_>, v: &Spanned<String>, what: &str) -> Option<String> {
    let s = v.get_ref();
    if s.trim().is_empty() || s.contains(['\n', '\r']) {
        decl.error(v, format!("{what}: expected one non-empty line"));
        return None;
    }
    Some(s.trim().to_string())
}

fn lines(decl: &mut Declaration<'_>, list: &[Spanned<String>], what: &str) -> Vec<String> {
    list.iter()
        .filter_map(|l| one_line(decl, l, what))
        .collect()
}

/// A `global` or `defaults` table as directive lines, over kz's base settings: a string or an
/// integer is the value, `true` a directive alone, `false` leaves the directive out, a list
/// repeats it.
fn directives(
    decl: &mut Declaration<'_>,
    table: &Option<BTreeMap<String, Spanned<toml::Value>>>,
    base: &[(&str, &str)],
    section: &str,
) -> Vec<String> {
    let mut out: BTreeMap<String, Vec<String>> = base
        .iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect();
    for (k, v) in table.iter().flatten() {
        let key = k.split_whitespace().collect::<Vec<_>>().join(" ");
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            decl.error(v, format!("invalid {section} directive `{k}`"));
            continue;
        }
        let values = match v.get_ref() {
            toml::Value::Boolean(false) => {
                out.remove(&key);
                continue;
            }
            toml::Value::Boolean(true) => vec![String::new()],
            toml::Value::Array(items) => items.iter().filter_map(scalar).collect(),
            other => scalar(other).into_iter().collect(),
        };
        let expected = match v.get_ref() {
            toml::Value::Array(items) => values.len() == items.len() && !items.is_empty(),
            _ => !values.is_empty(),
        };
        if !expected || values.iter().any(|s| s.contains(['\n', '\r'])) {
            decl.error(
                v,
                format!("{section} `{key}`: expected a one-line string, an integer, true, false or a list of strings"),
            );
            continue;
        }
        out.insert(key, values);
    }
    out.into_iter()
        .flat_map(|(k, vs)| {
            vs.into_iter().map(move |v| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k} {v}")
                }
            })
        })
        .collect()
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn mode_line(decl: &mut Declaration<'_>, m: &Option<Spanned<String>>) -> Option<String> {
    let m = m.as_ref()?;
    if ["tcp", "http"].contains(&m.get_ref().as_str()) {
        Some(format!("mode {}", m.get_ref()))
    } else {
        decl.error(
            m,
            format!(
                "invalid mode `{}`: expected \"tcp\" or \"http\"",
                m.get_ref()
            ),
        );
        None
    }
}

fn frontend(decl: &mut Declaration<'_>, f: &FrontendDecl, backends: &[String]) -> Option<Section> {
    let name = f.name.get_ref();
    if !valid_name(name) {
        decl.error(
            &f.name,
            format!("invalid frontend name `{name}`: expected letters, digits, `-`, `_`, `.`, `:`"),
        );
    }
    let mut out: Vec<String> = mode_line(decl, &f.mode).into_iter().collect();
    let binds: Vec<Spanned<String>> = match f.bind.get_ref() {
        toml::Value::String(s) => vec![Spanned::new(f.bind.span(), s.clone())],
        toml::Value::Array(a) if !a.is_empty() && a.iter().all(|v| v.is_str()) => a
            .iter()
            .filter_map(|v| v.as_str())
            .map(|s| Spanned::new(f.bind.span(), s.to_string()))
            .collect(),
        _ => {
            decl.error(
                &f.bind,
                "`bind`: expected an address such as \"*:6379\" or a list of them",
            );
            Vec::new()
        }
    };
    for b in &binds {
        if let Some(l) = one_line(decl, b, "`bind`") {
            out.push(format!("bind {l}"));
        }
    }
    for o in lines(decl, &f.options, "`options`") {
        out.push(format!("option {o}"));
    }
    if let Some(b) = &f.default_backend {
        if backends.contains(b.get_ref()) {
            out.push(format!("default_backend {}", b.get_ref()));
        } else {
            decl.error(
                b,
                format!(
                    "unknown backend `{}`: declare it with [[haproxy.backend]]",
                    b.get_ref()
                ),
            );
        }
    }
    out.extend(lines(decl, &f.extra, "`extra`"));
    Some(Section {
        name: name.clone(),
        lines: out,
        servers: Vec::new(),
    })
}

/// The hosts `servers` names: a list of hosts of the inventory, or a table of labels.
fn server_hosts(decl: &mut Declaration<'_>, s: &Spanned<toml::Value>) -> Vec<String> {
    match s.get_ref() {
        toml::Value::Array(a) if a.iter().all(|v| v.is_str()) => {
            let mut hosts = Vec::new();
            for h in a.iter().filter_map(|v| v.as_str()) {
                if !decl.hosts.contains_key(h) {
                    decl.error(s, format!("`servers`: unknown host `{h}`"));
                } else if !hosts.iter().any(|x| x == h) {
                    hosts.push(h.to_string());
                }
            }
            hosts
        }
        toml::Value::Table(t) if !t.is_empty() && t.values().all(|v| v.is_str()) => {
            let hosts: Vec<String> = decl
                .hosts
                .values()
                .filter(|h| {
                    t.iter()
                        .all(|(k, v)| h.labels.get(k).map(String::as_str) == v.as_str())
                })
                .map(|h| h.name.clone())
                .collect();
            if hosts.is_empty() {
                decl.error(s, "`servers`: these labels match no host of the inventory");
            }
            hosts
        }
        _ => {
            decl.error(s, "`servers`: expected a list of hosts or a table of labels, e.g. { role = \"redis\" }");
            Vec::new()
        }
    }
}

/// The server lines of a backend: the check's parameters, `server_params`, then the host's own.
fn servers(
    decl: &mut Declaration<'_>,
    b: &BackendDecl,
    hosts: Vec<String>,
    port: u16,
    check: Option<&checks::Check>,
) -> Vec<Server> {
    let name = b.name.get_ref();
    let common = match &b.server_params {
        Some(p) => one_line(decl, p, "`server_params`").unwrap_or_default(),
        None => String::new(),
    };
    let mut per_host = BTreeMap::new();
    for (h, p) in b.host_params.iter().flatten() {
        if !hosts.contains(h) {
            decl.error(
                p,
                format!("`host_params`: `{h}` is not a server of backend `{name}`"),
            );
        } else if let Some(l) = one_line(decl, p, "`host_params`") {
            per_host.insert(h.clone(), l);
        }
    }
    hosts
        .into_iter()
        .map(|host| {
            let params: Vec<&str> = [check.map_or("", |c| c.server), &common]
                .into_iter()
                .chain(per_host.get(&host).map(String::as_str))
                .filter(|s| !s.is_empty())
                .collect();
            Server {
                params: params.join(" "),
                host,
                port,
            }
        })
        .collect()
}

/// The password of a check that logs in (`auth`), as it goes between double quotes in a
/// `tcp-check send` line: only `redis_master` takes one, and it must be one word (Redis splits
/// an inline `AUTH` at spaces) without `"`, `\` or `$` (HAProxy's quoting, escapes, variables).
fn auth_line(decl: &mut Declaration<'_>, b: &BackendDecl, c: &checks::Check) -> Option<String> {
    let a = b.auth.as_ref()?;
    if !c.takes_auth {
        decl.error(
            a,
            format!("`auth` is for the `redis_master` check, not `{}`", c.name),
        );
        return None;
    }
    // A `${secret.NAME}` reference is kept whole: the loader puts the value in at each run.
    let literal = a.get_ref().replace("${", "");
    if a.get_ref().trim().is_empty()
        || literal.contains(['"', '\\', '$'])
        || literal.contains(char::is_whitespace)
    {
        decl.error(
            a,
            "`auth`: expected one word without spaces, `\"`, `\\` or `$` (use a ${secret.NAME})",
        );
        return None;
    }
    Some(a.get_ref().clone())
}

fn backend(decl: &mut Declaration<'_>, b: &BackendDecl) -> Option<Section> {
    let name = b.name.get_ref();
    if !valid_name(name) {
        decl.error(
            &b.name,
            format!("invalid backend name `{name}`: expected letters, digits, `-`, `_`, `.`, `:`"),
        );
    }
    let mut out: Vec<String> = mode_line(decl, &b.mode).into_iter().collect();
    if let Some(bal) = &b.balance
        && let Some(l) = one_line(decl, bal, "`balance`")
    {
        out.push(format!("balance {l}"));
    }
    for o in lines(decl, &b.options, "`options`") {
        out.push(format!("option {o}"));
    }
    let check = match &b.check {
        None => None,
        Some(c) => match checks::find(c.get_ref()) {
            Some(found) => Some(found),
            None => {
                decl.error(
                    c,
                    format!(
                        "unknown check `{}`: expected one of {}",
                        c.get_ref(),
                        checks::names()
                    ),
                );
                None
            }
        },
    };
    if let Some(c) = check {
        out.extend(checks::lines(c, auth_line(decl, b, c).as_deref()));
    } else if let Some(a) = &b.auth {
        decl.error(a, "`auth` needs `check = \"redis_master\"`");
    }
    out.extend(lines(decl, &b.extra, "`extra`"));
    let hosts = b
        .servers
        .as_ref()
        .map(|s| server_hosts(decl, s))
        .unwrap_or_default();
    let port = match (&b.servers, &b.port) {
        (Some(_), None) => {
            decl.error(
                &b.name,
                format!("backend `{name}` has `servers` but no `port`"),
            );
            0
        }
        (_, Some(p)) => match u16::try_from(*p.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                decl.error(
                    p,
                    format!("invalid port {}: expected 1 to 65535", p.get_ref()),
                );
                0
            }
        },
        (None, None) => 0,
    };
    let servers = servers(decl, b, hosts, port, check);
    Some(Section {
        name: name.clone(),
        lines: out,
        servers,
    })
}

/// How the configuration is put in service: `auto`, `systemd`, `master` or `container:NAME`.
fn reload_mode(decl: &mut Declaration<'_>, r: &Option<Spanned<String>>) -> String {
    let Some(r) = r else {
        return "auto".into();
    };
    let s = r.get_ref();
    let ok = match s.strip_prefix("container:") {
        Some(name) => {
            name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        }
        None => ["auto", "systemd", "master"].contains(&s.as_str()),
    };
    if !ok {
        decl.error(r, format!("invalid reload `{s}`: expected \"auto\", \"systemd\", \"master\" or \"container:NAME\""));
    }
    s.clone()
}

fn unique<'a>(
    decl: &mut Declaration<'_>,
    names: impl Iterator<Item = &'a Spanned<String>>,
    what: &str,
) {
    let mut seen = Vec::new();
    for n in names {
        if seen.contains(n.get_ref()) {
            decl.error(n, format!("{what} `{}` is declared twice", n.get_ref()));
        }
        seen.push(n.get_ref().clone());
    }
}

pub fn declare(decl: &mut Declaration<'_>) -> Option<Declared> {
    let sd: Spanned<HaproxyDecl> = decl.parse()?;
    let span = sd.span();
    let d = sd.into_inner();
    unique(
        decl,
        d.frontend.iter().map(|f| &f.get_ref().name),
        "frontend",
    );
    unique(decl, d.backend.iter().map(|b| &b.get_ref().name), "backend");
    let backend_names: Vec<String> = d
        .backend
        .iter()
        .map(|b| b.get_ref().name.get_ref().clone())
        .collect();
    let mut config = Config {
        header: format!(
            "Written by kz ({}.haproxy.{}): changes made here are undone by the next apply.",
            decl.module, decl.name
        ),
        global: directives(decl, &d.global, BASE_GLOBAL, "global"),
        defaults: directives(decl, &d.defaults, BASE_DEFAULTS, "defaults"),
        ..Default::default()
    };
    config
        .global
        .extend(lines(decl, &d.extra_global, "`extra_global`"));
    config
        .defaults
        .extend(lines(decl, &d.extra_defaults, "`extra_defaults`"));
    for f in &d.frontend {
        config
            .frontends
            .extend(frontend(decl, f.get_ref(), &backend_names));
    }
    for b in &d.backend {
        config.backends.extend(backend(decl, b.get_ref()));
    }
    // Raw lines keep their own indentation: they may be whole sections.
    for l in &d.extra {
        if l.get_ref().contains(['\n', '\r']) {
            decl.error(l, "`extra`: one line per item");
        } else {
            config.extra.push(l.get_ref().trim_end().to_string());
        }
    }
    let reload = reload_mode(decl, &d.reload);
    if !decl.ok() {
        return None;
    }
    let path = match d.path {
        Some(p) => Template::Path(p),
        None => Template::Value(Value::Text(DEFAULT_PATH.into())),
    };
    Some(Declared {
        attrs: vec![
            ("path".into(), path),
            (
                "config".into(),
                Template::Text(Spanned::new(span, render(&config))),
            ),
            ("reload".into(), Template::Value(Value::Text(reload))),
            ("running".into(), Template::Value(Value::Bool(true))),
        ],
        gate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_haproxy_identifiers() {
        for ok in ["redis", "pg-primary", "a_b.c:d"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "x\ny", "a#b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
