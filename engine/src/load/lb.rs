//! `[[lb]]`: a Hetzner Cloud load balancer, checked and reduced to the attributes its provider
//! compares (see `docs/stack-format.md`). It belongs to no host of the inventory: its instance
//! lives on the `hcloud` pseudo-host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::raw::{LbDecl, LbHealthCheckDecl, LbServiceDecl};
use super::resources::{Decl, DeclAttr};
use super::{Loader, loc, suggest};
use crate::diag::{Diagnostic, Location, SourceFile};
use crate::lb::{HealthCheck, Service};
use crate::model::{Host, Value};
use crate::units::parse_duration;

/// The pseudo-host of Hetzner Cloud resources, in addresses such as `10_lb.lb.lb-internal[hcloud]`.
pub const HCLOUD_HOST: &str = "hcloud";

/// The variable holding the API token when the resource names none.
pub const DEFAULT_TOKEN_ENV: &str = "HCLOUD_TOKEN";

impl Loader<'_> {
    pub(crate) fn lb_decl<'a>(
        &mut self,
        module: &str,
        src: &Arc<SourceFile>,
        l: &'a Spanned<LbDecl>,
        hosts: &BTreeMap<String, Host>,
    ) -> Option<Decl<'a>> {
        let d = l.get_ref();
        let before = self.diags.0.len();
        let mut attrs: Vec<(&'static str, DeclAttr<'a>)> = Vec::new();
        let mut fixed = |name: &'static str, v: Value| attrs.push((name, DeclAttr::Fixed(v)));

        let t = d.lb_type.get_ref();
        if t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            self.error(Diagnostic::at(
                loc(src, &d.lb_type),
                format!("invalid load balancer type `{t}`: expected a type name such as \"lb11\""),
            ));
        }
        fixed("type", Value::Text(t.clone()));

        match (&d.location, &d.network_zone) {
            (Some(l), None) => fixed("location", Value::Text(l.get_ref().clone())),
            (None, Some(z)) => fixed("network_zone", Value::Text(z.get_ref().clone())),
            (Some(_), Some(z)) => self.error(Diagnostic::at(
                loc(src, z),
                "`location` and `network_zone` are exclusive: give one of them",
            )),
            (None, None) => self.error(Diagnostic::at(
                Location::new(src, l.span()),
                format!(
                    "load balancer `{}` needs `location` (e.g. \"nbg1\") or `network_zone` (e.g. \"eu-central\")",
                    d.name.get_ref()
                ),
            )),
        }

        let algorithm = match &d.algorithm {
            None => "round_robin".to_string(),
            Some(a) if ["round_robin", "least_connections"].contains(&a.get_ref().as_str()) => {
                a.get_ref().clone()
            }
            Some(a) => {
                self.error(Diagnostic::at(
                    loc(src, a),
                    format!(
                        "invalid algorithm `{}`: expected \"round_robin\" or \"least_connections\"",
                        a.get_ref()
                    ),
                ));
                String::new()
            }
        };
        fixed("algorithm", Value::Text(algorithm));
        if d.public_interface == Some(false) && d.network.is_none() {
            self.error(Diagnostic::at(
                Location::new(src, l.span()),
                "`public_interface = false` needs a `network`: a load balancer without either is unreachable",
            ));
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
                self.error(Diagnostic::at(
                    loc(src, ip),
                    "`ip` is the load balancer's address in its private network: it needs `network`",
                ));
            } else if ip.get_ref().parse::<Ipv4Addr>().is_err() {
                self.error(Diagnostic::at(
                    loc(src, ip),
                    format!("invalid ip `{}`: expected an IPv4 address", ip.get_ref()),
                ));
            }
            fixed("ip", Value::Text(ip.get_ref().clone()));
        }
        if let Some(labels) = &d.labels {
            fixed("labels", Value::Map(labels.clone()));
        }

        let has_targets = match (&d.targets, &d.target_label) {
            (Some(_), Some(tl)) => {
                self.error(Diagnostic::at(
                    loc(src, tl),
                    "`targets` and `target_label` are exclusive: give one of them",
                ));
                true
            }
            (Some(list), None) => {
                let servers = self.lb_targets(src, list, hosts);
                fixed("targets", Value::List(servers));
                true
            }
            (None, Some(tl)) => {
                let sel = tl.get_ref();
                let (k, v) = sel.split_once('=').unwrap_or((sel, "x"));
                if k.is_empty() || v.is_empty() || sel.contains(char::is_whitespace) {
                    self.error(Diagnostic::at(
                        loc(src, tl),
                        format!("invalid target_label `{sel}`: expected KEY=VALUE, e.g. \"role=haproxy\""),
                    ));
                }
                fixed("target_label", Value::Text(sel.clone()));
                true
            }
            (None, None) => false,
        };
        match d.use_private_ip {
            Some(_) if !has_targets => self.error(Diagnostic::at(
                Location::new(src, l.span()),
                "`use_private_ip` applies to targets: give `targets` or `target_label`",
            )),
            Some(true) if d.network.is_none() => self.error(Diagnostic::at(
                Location::new(src, l.span()),
                "`use_private_ip = true` needs the load balancer in a `network`",
            )),
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
            if let Some(service) = self.lb_service(src, s) {
                if !ports.insert(service.listen_port) {
                    self.error(Diagnostic::at(
                        loc(src, &s.get_ref().listen_port),
                        format!(
                            "duplicate address: two services listen on port {}",
                            service.listen_port
                        ),
                    ));
                }
                services.push(service);
            }
        }
        services.sort_by_key(|s| s.listen_port);
        fixed(
            "services",
            Value::List(services.iter().map(Service::to_string).collect()),
        );

        let token_env = match &d.token_env {
            None => DEFAULT_TOKEN_ENV.to_string(),
            Some(t) => {
                let v = t.get_ref();
                if v.is_empty()
                    || v.starts_with(|c: char| c.is_ascii_digit())
                    || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.error(Diagnostic::at(
                        loc(src, t),
                        format!("invalid token_env `{v}`: expected an environment variable name"),
                    ));
                }
                v.clone()
            }
        };
        fixed("token_env", Value::Text(token_env));

        if self.diags.0.len() != before {
            return None;
        }
        Some(Decl {
            module: module.into(),
            kind: "lb",
            file: Arc::clone(src),
            span: l.span(),
            name: &d.name,
            on: None,
            depends_on: &d.depends_on,
            attrs,
        })
    }

    /// The Hetzner server names of `targets`: each is a stack host, its server named like it
    /// unless the host sets `hcloud_server`.
    fn lb_targets(
        &mut self,
        src: &Arc<SourceFile>,
        list: &Spanned<Vec<Spanned<String>>>,
        hosts: &BTreeMap<String, Host>,
    ) -> Vec<String> {
        if list.get_ref().is_empty() {
            self.error(Diagnostic::at(
                loc(src, list),
                "`targets` is empty: list stack hosts, or leave it out",
            ));
        }
        let mut servers = BTreeSet::new();
        for t in list.get_ref() {
            let name = t.get_ref();
            match hosts.get(name) {
                Some(h) => {
                    let server = h.hcloud_server.clone().unwrap_or_else(|| name.clone());
                    if !servers.insert(server) {
                        self.error(Diagnostic::at(
                            loc(src, t),
                            format!("duplicate address: target `{name}` is listed twice"),
                        ));
                    }
                }
                None => self.error(Diagnostic::at(
                    loc(src, t),
                    format!(
                        "unknown host `{name}` in `targets`{}",
                        suggest(name, hosts.keys())
                    ),
                )),
            }
        }
        servers.into_iter().collect()
    }

    fn lb_service(&mut self, src: &Arc<SourceFile>, s: &Spanned<LbServiceDecl>) -> Option<Service> {
        let d = s.get_ref();
        let protocol = d.protocol.get_ref();
        match protocol.as_str() {
            "tcp" | "http" => {}
            "https" => {
                self.error(Diagnostic::at(
                    loc(src, &d.protocol),
                    "protocol \"https\" is not supported yet (it needs certificates): terminate TLS on the targets with \"tcp\"",
                ));
                return None;
            }
            other => {
                self.error(Diagnostic::at(
                    loc(src, &d.protocol),
                    format!("invalid protocol `{other}`: expected \"tcp\" or \"http\""),
                ));
                return None;
            }
        }
        let listen_port = self.port(src, &d.listen_port)?;
        let destination_port = match &d.destination_port {
            Some(p) => self.port(src, p)?,
            None => listen_port,
        };
        let health = match &d.health_check {
            None => HealthCheck::default_for(destination_port),
            Some(h) => self.lb_health(src, h, destination_port)?,
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
        &mut self,
        src: &Arc<SourceFile>,
        h: &Spanned<LbHealthCheckDecl>,
        destination_port: u16,
    ) -> Option<HealthCheck> {
        let d = h.get_ref();
        let mut out = HealthCheck::default_for(destination_port);
        if let Some(p) = &d.protocol {
            match p.get_ref().as_str() {
                "tcp" | "http" => out.protocol = p.get_ref().clone(),
                other => {
                    self.error(Diagnostic::at(
                        loc(src, p),
                        format!(
                            "invalid health check protocol `{other}`: expected \"tcp\" or \"http\""
                        ),
                    ));
                    return None;
                }
            }
        }
        if let Some(p) = &d.port {
            out.port = self.port(src, p)?;
        }
        for (field, target) in [
            (&d.interval, &mut out.interval),
            (&d.timeout, &mut out.timeout),
        ] {
            if let Some(v) = field {
                match parse_duration(v.get_ref()) {
                    Some(t) if t >= Duration::from_secs(1) && t.subsec_millis() == 0 => *target = t,
                    _ => {
                        self.error(Diagnostic::at(
                            loc(src, v),
                            format!(
                                "invalid duration `{}`: expected whole seconds, e.g. \"15s\"",
                                v.get_ref()
                            ),
                        ));
                        return None;
                    }
                }
            }
        }
        if let Some(r) = &d.retries {
            match u32::try_from(*r.get_ref()) {
                Ok(n) if n <= 5 => out.retries = n,
                _ => {
                    self.error(Diagnostic::at(
                        loc(src, r),
                        "retries must be between 0 and 5",
                    ));
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
                    self.error(Diagnostic::at(
                        loc(src, v),
                        "`path` and `domain` apply to health checks with protocol = \"http\"",
                    ));
                    return None;
                }
                if v.get_ref().is_empty() || v.get_ref().contains(char::is_whitespace) {
                    self.error(Diagnostic::at(
                        loc(src, v),
                        format!("invalid value `{}`: no spaces allowed", v.get_ref()),
                    ));
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

    fn port(&mut self, src: &Arc<SourceFile>, p: &Spanned<i64>) -> Option<u16> {
        match u16::try_from(*p.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.error(Diagnostic::at(
                    loc(src, p),
                    format!("invalid port {}: expected 1 to 65535", p.get_ref()),
                ));
                None
            }
        }
    }
}

/// The pseudo-host of Hetzner Cloud resources: reached through the API, never over SSH.
pub fn api_host() -> Host {
    Host {
        name: HCLOUD_HOST.into(),
        address: "Hetzner Cloud API".into(),
        labels: BTreeMap::new(),
        hcloud_server: None,
        transport: crate::model::TransportKind::Api,
        ssh: crate::model::SshSettings::default(),
    }
}
