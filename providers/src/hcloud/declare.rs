//! `[[lb]]`: a Hetzner Cloud load balancer, checked and reduced to the attributes its provider
//! compares (see `docs/stack-format.md`). It lives behind the API, on no host of the inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use kz_engine::load::declare::{Declaration, Declared, Template};
use kz_engine::load::suggest;
use kz_engine::model::{Host, Value};
use kz_engine::units::{DurationError, duration};
use serde::Deserialize;
use toml::Spanned;

use super::service::{HealthCheck, Service};
use super::spec::{DEFAULT_TOKEN_ENV, text_list, text_map};

/// The host-table key naming the Hetzner server behind a host, when its name differs.
pub const SERVER_SETTING: &str = "hcloud_server";

/// A Hetzner Cloud load balancer, as written in a module file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LbDecl {
    #[serde(rename = "type")]
    lb_type: Spanned<String>,
    location: Option<Spanned<String>>,
    network_zone: Option<Spanned<String>>,
    algorithm: Option<Spanned<String>>,
    public_interface: Option<bool>,
    network: Option<Spanned<String>>,
    ip: Option<Spanned<String>>,
    labels: Option<BTreeMap<String, String>>,
    targets: Option<Spanned<Vec<Spanned<String>>>>,
    target_label: Option<Spanned<String>>,
    use_private_ip: Option<bool>,
    token_env: Option<Spanned<String>>,
    #[serde(default)]
    service: Vec<Spanned<LbServiceDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LbServiceDecl {
    protocol: Spanned<String>,
    listen_port: Spanned<i64>,
    destination_port: Option<Spanned<i64>>,
    #[serde(default)]
    proxyprotocol: bool,
    health_check: Option<Spanned<LbHealthCheckDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LbHealthCheckDecl {
    protocol: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    path: Option<Spanned<String>>,
    domain: Option<Spanned<String>>,
}

/// Reads one `[[lb]]` table.
pub(super) fn declare_lb(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: LbDecl = decl.parse()?;
    let hosts = decl.hosts;
    let mut attrs: Vec<(String, Template)> = Vec::new();
    let mut fixed = |name: &str, v: Value| attrs.push((name.to_string(), Template::Value(v)));

    let t = d.lb_type.get_ref();
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        decl.error(
            &d.lb_type,
            format!("invalid load balancer type `{t}`: expected a type name such as \"lb11\""),
        );
    }
    fixed("type", Value::Text(t.clone()));

    match (&d.location, &d.network_zone) {
            (Some(l), None) => fixed("location", Value::Text(l.get_ref().clone())),
            (None, Some(z)) => fixed("network_zone", Value::Text(z.get_ref().clone())),
            (Some(_), Some(z)) => decl.error(z, "`location` and `network_zone` are exclusive: give one of them",
            ),
            (None, None) => decl.error_here(format!(
                    "load balancer `{}` needs `location` (e.g. \"nbg1\") or `network_zone` (e.g. \"eu-central\")",
                    decl.name
                ),
            ),
        }

    let algorithm = match &d.algorithm {
        None => "round_robin".to_string(),
        Some(a) if ["round_robin", "least_connections"].contains(&a.get_ref().as_str()) => {
            a.get_ref().clone()
        }
        Some(a) => {
            decl.error(
                a,
                format!(
                    "invalid algorithm `{}`: expected \"round_robin\" or \"least_connections\"",
                    a.get_ref()
                ),
            );
            String::new()
        }
    };
    fixed("algorithm", Value::Text(algorithm));
    if d.public_interface == Some(false) && d.network.is_none() {
        decl.error_here("`public_interface = false` needs a `network`: a load balancer without either is unreachable",
            );
    }
    fixed(
        "public_interface",
        Value::Bool(d.public_interface.unwrap_or(true)),
    );

    if let Some(n) = &d.network {
        fixed("network", Value::Text(n.get_ref().clone()));
    }
    if let Some(ip) = &d.ip {
        if d.network.is_none() {
            decl.error(
                ip,
                "`ip` is the load balancer's address in its private network: it needs `network`",
            );
        } else if ip.get_ref().parse::<Ipv4Addr>().is_err() {
            decl.error(
                ip,
                format!("invalid ip `{}`: expected an IPv4 address", ip.get_ref()),
            );
        }
        fixed("ip", Value::Text(ip.get_ref().clone()));
    }
    if let Some(labels) = &d.labels {
        fixed("labels", text_map(labels));
    }

    let has_targets = match (&d.targets, &d.target_label) {
        (Some(_), Some(tl)) => {
            decl.error(
                tl,
                "`targets` and `target_label` are exclusive: give one of them",
            );
            true
        }
        (Some(list), None) => {
            let servers = lb_targets(decl, list, hosts);
            fixed("targets", text_list(servers));
            true
        }
        (None, Some(tl)) => {
            let sel = tl.get_ref();
            let (k, v) = sel.split_once('=').unwrap_or((sel, "x"));
            if k.is_empty() || v.is_empty() || sel.contains(char::is_whitespace) {
                decl.error(
                    tl,
                    format!(
                        "invalid target_label `{sel}`: expected KEY=VALUE, e.g. \"role=haproxy\""
                    ),
                );
            }
            fixed("target_label", Value::Text(sel.clone()));
            true
        }
        (None, None) => false,
    };
    match d.use_private_ip {
        Some(_) if !has_targets => {
            decl.error_here("`use_private_ip` applies to targets: give `targets` or `target_label`")
        }
        Some(true) if d.network.is_none() => {
            decl.error_here("`use_private_ip = true` needs the load balancer in a `network`")
        }
        _ => {}
    }
    if has_targets {
        fixed(
            "use_private_ip",
            Value::Bool(d.use_private_ip.unwrap_or(false)),
        );
    }

    let mut services = Vec::new();
    let mut ports = BTreeSet::new();
    for s in &d.service {
        if let Some(service) = lb_service(decl, s) {
            if !ports.insert(service.listen_port) {
                decl.error(
                    &s.get_ref().listen_port,
                    format!(
                        "duplicate address: two services listen on port {}",
                        service.listen_port
                    ),
                );
            }
            services.push(service);
        }
    }
    services.sort_by_key(|s| s.listen_port);
    fixed(
        "services",
        text_list(services.iter().map(Service::to_string).collect()),
    );

    let token_env = match &d.token_env {
        None => DEFAULT_TOKEN_ENV.to_string(),
        Some(t) => {
            let v = t.get_ref();
            if v.is_empty()
                || v.starts_with(|c: char| c.is_ascii_digit())
                || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                decl.error(
                    t,
                    format!("invalid token_env `{v}`: expected an environment variable name"),
                );
            }
            v.clone()
        }
    };
    fixed("token_env", Value::Text(token_env));

    if !decl.ok() {
        return None;
    }
    Some(Declared { attrs, gate: None })
}

/// The Hetzner server names of `targets`: each is a stack host, its server named like it
/// unless the host sets `hcloud_server`.
fn lb_targets(
    decl: &mut Declaration<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    hosts: &BTreeMap<String, Host>,
) -> Vec<String> {
    if list.get_ref().is_empty() {
        decl.error(
            list,
            "`targets` is empty: list stack hosts, or leave it out",
        );
    }
    let mut servers = BTreeSet::new();
    for t in list.get_ref() {
        let name = t.get_ref();
        match hosts.get(name) {
            Some(h) => {
                let server = h
                    .settings
                    .get(SERVER_SETTING)
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                if !servers.insert(server) {
                    decl.error(
                        t,
                        format!("duplicate address: target `{name}` is listed twice"),
                    );
                }
            }
            None => decl.error(
                t,
                format!(
                    "unknown host `{name}` in `targets`{}",
                    suggest(name, hosts.keys())
                ),
            ),
        }
    }
    servers.into_iter().collect()
}

fn lb_service(decl: &mut Declaration<'_>, s: &Spanned<LbServiceDecl>) -> Option<Service> {
    let d = s.get_ref();
    let protocol = d.protocol.get_ref();
    match protocol.as_str() {
        "tcp" | "http" => {}
        "https" => {
            decl.error(&d.protocol, "protocol \"https\" is not supported yet (it needs certificates): terminate TLS on the targets with \"tcp\"",
                );
            return None;
        }
        other => {
            decl.error(
                &d.protocol,
                format!("invalid protocol `{other}`: expected \"tcp\" or \"http\""),
            );
            return None;
        }
    }
    let listen_port = port(decl, &d.listen_port)?;
    let destination_port = match &d.destination_port {
        Some(p) => port(decl, p)?,
        None => listen_port,
    };
    let health = match &d.health_check {
        None => HealthCheck::default_for(destination_port),
        Some(h) => lb_health(decl, h, destination_port)?,
    };
    Some(Service {
        protocol: protocol.clone(),
        listen_port,
        destination_port,
        proxyprotocol: d.proxyprotocol,
        health,
    })
}

fn lb_health(
    decl: &mut Declaration<'_>,
    h: &Spanned<LbHealthCheckDecl>,
    destination_port: u16,
) -> Option<HealthCheck> {
    let d = h.get_ref();
    let mut out = HealthCheck::default_for(destination_port);
    if let Some(p) = &d.protocol {
        match p.get_ref().as_str() {
            "tcp" | "http" => out.protocol = p.get_ref().clone(),
            other => {
                decl.error(
                    p,
                    format!(
                        "invalid health check protocol `{other}`: expected \"tcp\" or \"http\""
                    ),
                );
                return None;
            }
        }
    }
    if let Some(p) = &d.port {
        out.port = port(decl, p)?;
    }
    for (field, target) in [
        (&d.interval, &mut out.interval),
        (&d.timeout, &mut out.timeout),
    ] {
        if let Some(v) = field {
            match duration(v.get_ref()) {
                Ok(t) if t >= Duration::from_secs(1) && t.subsec_millis() == 0 => *target = t,
                Err(e @ DurationError::TooLong(_)) => {
                    decl.error(v, e.to_string());
                    return None;
                }
                _ => {
                    decl.error(
                        v,
                        format!(
                            "invalid duration `{}`: expected whole seconds, e.g. \"15s\"",
                            v.get_ref()
                        ),
                    );
                    return None;
                }
            }
        }
    }
    if let Some(r) = &d.retries {
        match u32::try_from(*r.get_ref()) {
            Ok(n) if n <= 5 => out.retries = n,
            _ => {
                decl.error(r, "retries must be between 0 and 5");
                return None;
            }
        }
    }
    for (field, target) in [
        (&d.path, &mut out.http_path),
        (&d.domain, &mut out.http_domain),
    ] {
        if let Some(v) = field {
            if out.protocol != "http" {
                decl.error(
                    v,
                    "`path` and `domain` apply to health checks with protocol = \"http\"",
                );
                return None;
            }
            if v.get_ref().is_empty() || v.get_ref().contains(char::is_whitespace) {
                decl.error(
                    v,
                    format!("invalid value `{}`: no spaces allowed", v.get_ref()),
                );
                return None;
            }
            *target = Some(v.get_ref().clone());
        }
    }
    if out.protocol == "http" && out.http_path.is_none() {
        out.http_path = Some("/".into());
    }
    Some(out)
}

fn port(decl: &mut Declaration<'_>, p: &Spanned<i64>) -> Option<u16> {
    match u16::try_from(*p.get_ref()) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            decl.error(
                p,
                format!("invalid port {}: expected 1 to 65535", p.get_ref()),
            );
            None
        }
    }
}
