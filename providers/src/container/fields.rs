//! Each declared field as `inspect` reports it, docker's and podman's forms alike, compared in
//! normal form: when the container's value means what was declared, the declared value itself
//! is reported (so the plan shows no change); otherwise the container's, for the plan to show.
//! Only declared keys of `env` and `labels` are read: what the image or the runtime adds is not
//! drift.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use kz_engine::model::{Instance, Value};

use super::CREATE_ONLY;
use super::declare::format_cpus;
use super::normal;

/// The hash stamped as label `io.kz.spec`: of the create-only attributes as declared (secrets
/// included, only ever as part of this digest). `None` while one of them is unknown.
pub(crate) fn spec_hash(inst: &Instance) -> Option<String> {
    let mut m = BTreeMap::new();
    for k in CREATE_ONLY {
        if let Some(a) = inst.attr(k) {
            m.insert(k, a.known()?);
        }
    }
    let json = serde_json::to_vec(&m).ok()?;
    Some(hex::encode(Sha256::digest(&json))[..32].to_string())
}

fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::List(l) => l
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn json_texts(j: &Json) -> Vec<String> {
    match j {
        Json::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Json::String(s) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn list(items: Vec<String>) -> Value {
    Value::List(items.into_iter().map(Value::Text).collect())
}

/// `desired` when `same`, else what the container has.
fn pick(same: bool, desired: &Value, observed: Value) -> Option<Value> {
    Some(if same { desired.clone() } else { observed })
}

/// A set of normalized texts compared with the declared list.
fn set_field(
    desired: &Value,
    observed: BTreeSet<String>,
    norm: fn(&str) -> Result<String, String>,
) -> Option<Value> {
    let want: Option<BTreeSet<String>> = texts(desired).iter().map(|s| norm(s).ok()).collect();
    pick(
        want.as_ref() == Some(&observed),
        desired,
        list(observed.into_iter().collect()),
    )
}

/// The declared keys of a map (`env`, `labels`) as the container has them.
fn map_field(desired: &Value, observed: &BTreeMap<String, String>) -> Option<Value> {
    let Value::Map(want) = desired else {
        return None;
    };
    let have: BTreeMap<String, Value> = want
        .keys()
        .filter_map(|k| observed.get(k).map(|v| (k.clone(), Value::Text(v.clone()))))
        .collect();
    pick(
        desired.same_as(&Value::Map(have.clone())),
        desired,
        Value::Map(have),
    )
}

/// The container's env (from `KEY=VALUE` lines) or labels, as a map.
fn string_map(k: &str, cfg: &Json) -> BTreeMap<String, String> {
    if k == "env" {
        return json_texts(&cfg["Env"])
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
    }
    cfg["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of one declared attribute on the container; `None` when it cannot be read.
pub(super) fn field(k: &str, c: &Json, desired: &Value) -> Option<Value> {
    let cfg = &c["Config"];
    let host = &c["HostConfig"];
    let want = desired.as_str().unwrap_or("");
    match k {
        "image" => {
            let have = cfg["Image"].as_str()?.to_string();
            pick(
                normal::image(&have) == normal::image(want),
                desired,
                Value::Text(have),
            )
        }
        "command" => {
            let have = json_texts(&cfg["Cmd"]);
            pick(have == texts(desired), desired, list(have))
        }
        "entrypoint" => {
            let have = json_texts(&cfg["Entrypoint"]).join(" ");
            pick(have == want, desired, Value::Text(have))
        }
        "user" => {
            let have = cfg["User"].as_str().unwrap_or("").to_string();
            pick(have == want, desired, Value::Text(have))
        }
        "env" | "labels" => map_field(desired, &string_map(k, cfg)),
        "ports" => set_field(desired, ports(host), normal::port),
        "volumes" => set_field(desired, volumes(c), normal::volume),
        "network" => {
            let have = network(c);
            pick(have == want, desired, Value::Text(have))
        }
        "cap_add" | "cap_drop" => {
            let key = if k == "cap_add" { "CapAdd" } else { "CapDrop" };
            let have: BTreeSet<String> = json_texts(&host[key])
                .iter()
                .map(|s| normal::capability(s))
                .collect();
            // The runtime may list defaults of its own (podman's dropped capabilities).
            let all = texts(desired).iter().all(|w| have.contains(w));
            pick(all, desired, list(have.into_iter().collect()))
        }
        "restart" => {
            let p = &host["RestartPolicy"];
            let have = normal::restart(
                p["Name"].as_str().unwrap_or(""),
                p["MaximumRetryCount"].as_i64().unwrap_or(0),
            );
            pick(have == want, desired, Value::Text(have))
        }
        "memory" => {
            let have = host["Memory"].as_i64().unwrap_or(0);
            let shown = if have == 0 {
                "none".into()
            } else {
                memory_text(have)
            };
            pick(
                normal::memory(want).ok() == Some(have),
                desired,
                Value::Text(shown),
            )
        }
        "cpus" => {
            let have = host["NanoCpus"].as_i64().unwrap_or(0);
            let shown = if have == 0 {
                "none".into()
            } else {
                format_cpus(have)
            };
            pick(shown == want, desired, Value::Text(shown))
        }
        "health" => health(&cfg["Healthcheck"], desired),
        "stop_timeout" => {
            let secs = cfg["StopTimeout"].as_i64().unwrap_or(10);
            let have = normal::nanos(secs.saturating_mul(1_000_000_000));
            pick(have == want, desired, Value::Text(have))
        }
        // `runtime` is where it was found; `pull` and `start_timeout` are kz's, not the container's.
        _ => None,
    }
}

/// Bytes as the shortest exact size (`256m`).
fn memory_text(b: i64) -> String {
    for (unit, n) in [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if b % n == 0 {
            return format!("{}{unit}", b / n);
        }
    }
    b.to_string()
}

fn ports(host: &Json) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(m) = host["PortBindings"].as_object() {
        for (cport, binds) in m {
            for b in binds.as_array().into_iter().flatten() {
                let ip = b["HostIp"].as_str().unwrap_or("");
                let hp = b["HostPort"].as_str().unwrap_or("");
                let (port, proto) = cport.split_once('/').unwrap_or((cport, "tcp"));
                let hp = if hp.is_empty() { port } else { hp };
                let spec = if ip.is_empty() {
                    format!("{hp}:{port}/{proto}")
                } else if ip.contains(':') {
                    format!("[{ip}]:{hp}:{port}/{proto}")
                } else {
                    format!("{ip}:{hp}:{port}/{proto}")
                };
                out.insert(normal::port(&spec).unwrap_or(spec));
            }
        }
    }
    out
}

fn volumes(c: &Json) -> BTreeSet<String> {
    c["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Type"].as_str() == Some("bind"))
        .filter_map(|m| {
            let spec = format!(
                "{}:{}{}",
                m["Source"].as_str()?,
                m["Destination"].as_str()?,
                if m["RW"].as_bool() == Some(false) {
                    ":ro"
                } else {
                    ""
                }
            );
            Some(normal::volume(&spec).unwrap_or(spec))
        })
        .collect()
}

/// `host`, `none`, or the names of the networks it is attached to (the runtime's default
/// network as `default`).
fn network(c: &Json) -> String {
    let mode = c["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
    if mode == "host" || mode == "none" {
        return mode.to_string();
    }
    let mut names: Vec<String> = c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if names.is_empty() {
        names.push(mode.to_string());
    }
    names.sort();
    let names: Vec<&str> = names
        .iter()
        .map(|n| match n.as_str() {
            "bridge" | "podman" | "default" => "default",
            other => other,
        })
        .collect();
    names.join(",")
}

/// The health check, its timings defaulted as the runtimes do (0 means the default).
fn health(h: &Json, desired: &Value) -> Option<Value> {
    let test = json_texts(&h["Test"]);
    let command = match test.as_slice() {
        [kind, cmd] if kind == "CMD-SHELL" => cmd.clone(),
        [] => String::new(),
        other => other.join(" "),
    };
    let dur = |key: &str, default: &str| match h[key].as_i64() {
        Some(n) if n > 0 => normal::nanos(n),
        _ => default.to_string(),
    };
    let mut m = BTreeMap::new();
    m.insert("command".to_string(), Value::Text(command));
    m.insert("interval".into(), Value::Text(dur("Interval", "30s")));
    m.insert("timeout".into(), Value::Text(dur("Timeout", "30s")));
    m.insert("start_period".into(), Value::Text(dur("StartPeriod", "0s")));
    let retries = h["Retries"].as_i64().filter(|r| *r > 0).unwrap_or(3);
    m.insert("retries".into(), Value::Int(retries));
    let have = Value::Map(m);
    pick(have.same_as(desired), desired, have)
}

#[cfg(test)]
#[path = "fields_tests.rs"]
mod tests;
