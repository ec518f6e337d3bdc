//! The `[[container]]` table: its keys, checked at load time, and the attributes they become.
//! Values keep the form the user wrote (so that `${host.*}` can be interpolated per host); the
//! comparison normalizes both sides (see `normal.rs`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::Value;
use kz_engine::provider::{Declaration, Declared};
use kz_engine::units::{duration, format_duration};

use super::normal;

/// The longest kz waits for a container to run (and be healthy).
const MAX_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// A `[[container]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerDecl {
    image: Spanned<String>,
    runtime: Option<Spanned<String>>,
    pull: Option<Spanned<String>>,
    command: Option<Vec<Spanned<String>>>,
    entrypoint: Option<Spanned<String>>,
    env: Option<BTreeMap<String, Spanned<String>>>,
    ports: Option<Vec<Spanned<String>>>,
    volumes: Option<Vec<Spanned<String>>>,
    network: Option<Spanned<String>>,
    restart: Option<Spanned<String>>,
    labels: Option<BTreeMap<String, Spanned<String>>>,
    user: Option<Spanned<String>>,
    cap_add: Option<Vec<Spanned<String>>>,
    cap_drop: Option<Vec<Spanned<String>>>,
    memory: Option<Spanned<String>>,
    cpus: Option<Spanned<toml::Value>>,
    health: Option<HealthDecl>,
    stop_timeout: Option<Spanned<String>>,
    start_timeout: Option<Spanned<String>>,
}

/// `health = { command = "...", interval = "2s", ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthDecl {
    command: Spanned<String>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    start_period: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
}

/// The runtimes kz drives.
pub(crate) const RUNTIMES: [&str; 2] = ["podman", "docker"];

/// The host setting `container_runtime`, resolved per host by the loader.
pub(crate) fn runtime_setting() -> Template {
    Template::Setting {
        key: "container_runtime",
        default: "podman",
    }
}

/// Text that names a secret: it must stay out of every command line.
fn uses_secret(s: &str) -> bool {
    s.contains("${secret.")
}

/// Text interpolated per host: checked once it is known (at apply), not now.
fn interpolated(s: &str) -> bool {
    s.contains("${")
}

fn text(v: &Spanned<String>) -> Template {
    Template::Text(v.clone())
}

fn fixed(s: impl Into<String>) -> Template {
    Template::Value(Value::Text(s.into()))
}

/// Checks a declared value now when it uses no interpolation.
fn check_form(
    decl: &mut Declaration<'_>,
    v: &Spanned<String>,
    what: &str,
    f: fn(&str) -> Result<String, String>,
) {
    if !interpolated(v.get_ref())
        && let Err(e) = f(v.get_ref())
    {
        decl.error(v, format!("invalid {what} `{}`: {e}", v.get_ref()));
    }
}

/// A duration key, as kz writes durations; `whole` asks for whole seconds.
fn duration_attr(
    decl: &mut Declaration<'_>,
    v: &Spanned<String>,
    whole: bool,
) -> Option<std::time::Duration> {
    match duration(v.get_ref()) {
        Ok(d) if whole && d.subsec_millis() != 0 => {
            decl.error(v, "expected whole seconds (runtimes take seconds)");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            decl.error(v, e.to_string());
            None
        }
    }
}

/// Refuses `${secret.*}` anywhere but `env`: a container's command line, labels and options show
/// in `ps` and in `inspect` on the host.
fn refuse_secrets(decl: &mut Declaration<'_>, d: &ContainerDecl) {
    let mut texts: Vec<&Spanned<String>> = vec![&d.image];
    texts.extend(d.entrypoint.iter().chain(&d.network).chain(&d.user));
    texts.extend(d.command.iter().flatten());
    texts.extend(d.ports.iter().flatten().chain(d.volumes.iter().flatten()));
    texts.extend(d.labels.iter().flat_map(|m| m.values()));
    texts.extend(d.health.iter().map(|h| &h.command));
    for t in texts {
        if uses_secret(t.get_ref()) {
            decl.error(
                t,
                "a secret may only be used in `env` (passed through a 0600 file): anywhere else it \
                 would show on the host's command lines",
            );
        }
    }
}

fn one_of(decl: &mut Declaration<'_>, v: &Option<Spanned<String>>, allowed: &[&str], key: &str) {
    if let Some(v) = v
        && !allowed.contains(&v.get_ref().as_str())
    {
        let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        decl.error(
            v,
            format!(
                "invalid {key} `{}`: expected {}",
                v.get_ref(),
                list.join(" or ")
            ),
        );
    }
}

pub(super) fn declare_container(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: ContainerDecl = decl.parse()?;
    refuse_secrets(decl, &d);
    one_of(decl, &d.runtime, &RUNTIMES, "runtime");
    one_of(decl, &d.pull, &["missing", "always", "never"], "pull");
    let image = d.image.get_ref();
    if image.is_empty() || image.starts_with('-') || image.chars().any(char::is_whitespace) {
        decl.error(
            &d.image,
            format!("invalid image `{image}`: expected a name such as \"redis:7\""),
        );
    }
    let mut attrs = vec![("image".to_string(), text(&d.image))];
    // The resource's own runtime, else the host's `container_runtime`, else the stack's
    // `[defaults]`, else podman.
    let runtime = match &d.runtime {
        Some(r) => fixed(r.get_ref().clone()),
        None => runtime_setting(),
    };
    attrs.push(("runtime".into(), runtime));
    if let Some(p) = &d.pull {
        attrs.push(("pull".into(), fixed(p.get_ref().clone())));
    }
    if let Some(c) = &d.command {
        attrs.push((
            "command".into(),
            Template::List(c.iter().map(text).collect()),
        ));
    }
    for (key, v) in [
        ("entrypoint", &d.entrypoint),
        ("network", &d.network),
        ("user", &d.user),
    ] {
        if let Some(v) = v {
            attrs.push((key.into(), text(v)));
        }
    }
    if d.network.as_ref().is_some_and(|n| n.get_ref() == "host")
        && let Some(p) = d.ports.as_ref().and_then(|p| p.first())
    {
        decl.error(p, "`ports` cannot be published with network = \"host\": the container uses the host's ports");
    }
    collections(decl, &d, &mut attrs);
    limits(decl, &d, &mut attrs);
    if let Some(h) = &d.health {
        health(decl, h, &mut attrs);
    }
    if let Some(t) = &d.stop_timeout
        && let Some(v) = duration_attr(decl, t, true)
    {
        attrs.push(("stop_timeout".into(), fixed(format_duration(v))));
    }
    if let Some(t) = &d.start_timeout
        && let Some(v) = duration_attr(decl, t, false)
    {
        if v.is_zero() || v > MAX_START_TIMEOUT {
            decl.error(t, "expected a duration from 1s to 1h");
        }
        attrs.push(("start_timeout".into(), fixed(format_duration(v))));
    }
    decl.ok().then_some(Declared { attrs, gate: None })
}

/// `memory` and `cpus`, the limits a runtime can change in place.
fn limits(decl: &mut Declaration<'_>, d: &ContainerDecl, attrs: &mut Vec<(String, Template)>) {
    if let Some(m) = &d.memory {
        match normal::memory(m.get_ref()) {
            Ok(_) => attrs.push((
                "memory".into(),
                fixed(m.get_ref().trim().to_ascii_lowercase()),
            )),
            Err(e) => decl.error(m, e),
        }
    }
    if let Some(c) = &d.cpus {
        let n = match c.get_ref() {
            toml::Value::Integer(i) => Some(*i as f64),
            toml::Value::Float(f) => Some(*f),
            _ => None,
        };
        match n.map(normal::nano_cpus) {
            Some(Ok(nano)) => attrs.push(("cpus".into(), fixed(format_cpus(nano)))),
            Some(Err(e)) => decl.error(c, e),
            None => decl.error(c, "expected a number of CPUs such as 0.5 or 2"),
        }
    }
}

/// CPUs as a short decimal (`0.5`, `2`), from `NanoCpus`.
pub(crate) fn format_cpus(nano: i64) -> String {
    let s = format!("{:.3}", nano as f64 / 1e9);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The health check as a map: the command, and its timings with runtimes' defaults filled in,
/// so that the comparison with `inspect` is exact.
fn health(decl: &mut Declaration<'_>, h: &HealthDecl, attrs: &mut Vec<(String, Template)>) {
    let mut m = BTreeMap::new();
    m.insert("command".to_string(), text(&h.command));
    for (key, v, default) in [
        ("interval", &h.interval, "30s"),
        ("timeout", &h.timeout, "30s"),
        ("start_period", &h.start_period, "0s"),
    ] {
        let d = match v {
            Some(v) => match duration_attr(decl, v, false) {
                Some(d) if d.is_zero() && key != "start_period" => {
                    decl.error(v, format!("`{key}` must be longer than 0s"));
                    continue;
                }
                Some(d) => format_duration(d),
                None => continue,
            },
            None => default.to_string(),
        };
        m.insert(key.to_string(), fixed(d));
    }
    let retries = match &h.retries {
        Some(r) if (1..=100).contains(r.get_ref()) => *r.get_ref(),
        Some(r) => {
            decl.error(r, "expected a number of retries from 1 to 100");
            3
        }
        None => 3,
    };
    m.insert("retries".to_string(), Template::Value(Value::Int(retries)));
    attrs.push(("health".into(), Template::Map(m)));
}

/// `env`, `ports`, `volumes`, `restart`, `labels` and the capabilities.
fn collections(decl: &mut Declaration<'_>, d: &ContainerDecl, attrs: &mut Vec<(String, Template)>) {
    if let Some(env) = &d.env {
        let mut m = BTreeMap::new();
        for (k, v) in env {
            if k.is_empty() || k.contains('=') || k.chars().any(char::is_whitespace) {
                decl.error(v, format!("invalid variable name `{k}`"));
            }
            if v.get_ref().contains('\n') {
                decl.error(
                    v,
                    format!("the value of `{k}` holds a newline, which an env file cannot carry"),
                );
            }
            m.insert(k.clone(), text(v));
        }
        attrs.push(("env".into(), Template::Map(m)));
    }
    for (key, list, f) in [
        (
            "ports",
            &d.ports,
            normal::port as fn(&str) -> Result<String, String>,
        ),
        ("volumes", &d.volumes, normal::volume),
    ] {
        if let Some(list) = list {
            for v in list {
                check_form(decl, v, &key[..key.len() - 1], f);
            }
            attrs.push((key.into(), Template::List(list.iter().map(text).collect())));
        }
    }
    if let Some(r) = &d.restart {
        if normal::valid_restart(r.get_ref()) {
            attrs.push(("restart".into(), fixed(r.get_ref().clone())));
        } else {
            decl.error(r, format!("invalid restart `{}`: expected \"no\", \"always\", \"unless-stopped\", \"on-failure\" or \"on-failure:N\"", r.get_ref()));
        }
    }
    if let Some(l) = &d.labels {
        for (k, v) in l {
            if k.starts_with("io.kz.") {
                decl.error(v, format!("label `{k}`: the prefix io.kz. is kz's own"));
            }
        }
        let m = l.iter().map(|(k, v)| (k.clone(), text(v))).collect();
        attrs.push(("labels".into(), Template::Map(m)));
    }
    for (key, list) in [("cap_add", &d.cap_add), ("cap_drop", &d.cap_drop)] {
        if let Some(list) = list {
            let mut caps = Vec::new();
            for c in list {
                if normal::valid_capability(c.get_ref()) {
                    caps.push(normal::capability(c.get_ref()));
                } else {
                    decl.error(
                        c,
                        format!(
                            "invalid capability `{}`: expected a name such as NET_ADMIN",
                            c.get_ref()
                        ),
                    );
                }
            }
            caps.sort();
            caps.dedup();
            let caps = caps.into_iter().map(Value::Text).collect();
            attrs.push((key.into(), Template::Value(Value::List(caps))));
        }
    }
}
