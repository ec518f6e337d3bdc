//! Both sides of a load balancer in kz's terms: what an instance declares ([`Desired`]) and what
//! the API holds ([`Current`]), the API's service objects to and from canonical service lines,
//! and the observation the plan compares.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::service::{HealthCheck, Service};
use hcloud::models;
use hcloud::models::load_balancer_service::Protocol;
use hcloud::models::load_balancer_service_health_check::Protocol as HealthProtocol;
use kz_engine::model::{Instance, Value};
use kz_engine::provider::Observation;

/// The variable holding the token when an instance names none.
pub const DEFAULT_TOKEN_ENV: &str = "HCLOUD_TOKEN";

/// Where a load balancer is created: one location, or any in a network zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Location(String),
    NetworkZone(String),
}

/// Which targets an instance declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Neither `targets` nor `target_label`: kz leaves the targets alone.
    Unmanaged,
    /// Servers by name, sorted.
    Servers(Vec<String>),
    /// A label selector.
    Label(String),
}

/// A load balancer as an instance declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    pub lb_type: String,
    pub place: Place,
    pub algorithm: String,
    pub public_interface: bool,
    pub network: Option<String>,
    pub ip: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub targets: Targets,
    pub use_private_ip: bool,
    /// Sorted by listen port.
    pub services: Vec<Service>,
    pub token_env: String,
}

/// The variable an instance's token is read from.
pub fn token_env(inst: &Instance) -> &str {
    inst.text("token_env").unwrap_or(DEFAULT_TOKEN_ENV)
}

fn value<'a>(inst: &'a Instance, key: &str) -> Result<Option<&'a Value>, String> {
    match inst.attr(key) {
        None => Ok(None),
        Some(a) => a
            .known()
            .map(Some)
            .ok_or_else(|| format!("`{key}` is not known (is a secret unset?)")),
    }
}

fn text(inst: &Instance, key: &str) -> Result<Option<String>, String> {
    match value(inst, key)? {
        None => Ok(None),
        Some(Value::Text(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` should be text")),
    }
}

fn required_text(inst: &Instance, key: &str) -> Result<String, String> {
    text(inst, key)?.ok_or_else(|| format!("`{key}` is missing"))
}

/// A list of texts as a value: how targets and services are declared and observed alike.
pub(super) fn text_list(items: Vec<String>) -> Value {
    Value::List(items.into_iter().map(Value::Text).collect())
}

/// A table of texts as a value: how labels are declared and observed alike.
pub(super) fn text_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::Text(v.clone())))
            .collect(),
    )
}

fn boolean(inst: &Instance, key: &str) -> Result<Option<bool>, String> {
    match value(inst, key)? {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("`{key}` should be true or false")),
    }
}

fn list(inst: &Instance, key: &str) -> Result<Option<Vec<String>>, String> {
    match value(inst, key)? {
        None => Ok(None),
        Some(Value::List(l)) => l
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<String>>>()
            .map(Some)
            .ok_or_else(|| format!("`{key}` should be a list of strings")),
        Some(_) => Err(format!("`{key}` should be a list")),
    }
}

impl Desired {
    pub fn from_instance(inst: &Instance) -> Result<Desired, String> {
        let place = match (text(inst, "location")?, text(inst, "network_zone")?) {
            (Some(l), None) => Place::Location(l),
            (None, Some(z)) => Place::NetworkZone(z),
            _ => return Err("exactly one of `location` and `network_zone` is needed".into()),
        };
        let labels = match value(inst, "labels")? {
            None => None,
            Some(Value::Map(m)) => Some(
                m.iter()
                    .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect::<Option<BTreeMap<String, String>>>()
                    .ok_or("`labels` should be a table of strings")?,
            ),
            Some(_) => return Err("`labels` should be a table".into()),
        };
        let targets = match (list(inst, "targets")?, text(inst, "target_label")?) {
            (None, None) => Targets::Unmanaged,
            (Some(mut l), None) => {
                l.sort();
                l.dedup();
                Targets::Servers(l)
            }
            (None, Some(s)) => Targets::Label(s),
            (Some(_), Some(_)) => {
                return Err("`targets` and `target_label` exclude each other".into());
            }
        };
        let mut services = list(inst, "services")?
            .unwrap_or_default()
            .iter()
            .map(|l| l.parse::<Service>())
            .collect::<Result<Vec<_>, _>>()?;
        services.sort_by_key(|s| s.listen_port);
        Ok(Desired {
            name: inst.address.name.clone(),
            lb_type: required_text(inst, "type")?,
            place,
            algorithm: required_text(inst, "algorithm")?,
            public_interface: boolean(inst, "public_interface")?.unwrap_or(true),
            network: text(inst, "network")?,
            ip: text(inst, "ip")?,
            labels,
            targets,
            use_private_ip: boolean(inst, "use_private_ip")?.unwrap_or(false),
            services,
            token_env: token_env(inst).to_string(),
        })
    }
}

/// A network the load balancer is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedNet {
    pub id: i64,
    /// `None` when the network could not be named (it was not looked up).
    pub name: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    pub id: i64,
    /// `None` when no server of the project has this id.
    pub name: Option<String>,
    pub use_private_ip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelTarget {
    pub selector: String,
    pub use_private_ip: bool,
}

/// A load balancer as the API holds it, with network and server ids named where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub id: i64,
    pub lb_type: String,
    pub location: String,
    pub network_zone: String,
    pub algorithm: String,
    pub public_interface: bool,
    pub networks: Vec<AttachedNet>,
    pub server_targets: Vec<ServerTarget>,
    pub label_targets: Vec<LabelTarget>,
    /// The addresses of IP targets (kz never declares one).
    pub ip_targets: Vec<String>,
    /// Sorted by listen port.
    pub services: Vec<Service>,
    pub labels: BTreeMap<String, String>,
    pub delete_protection: bool,
}

pub fn algorithm_name(a: &models::LoadBalancerAlgorithm) -> &'static str {
    use models::load_balancer_algorithm::Type;
    match a.r#type {
        Type::RoundRobin => "round_robin",
        Type::LeastConnections => "least_connections",
    }
}

pub fn algorithm_of(name: &str) -> Result<models::LoadBalancerAlgorithm, String> {
    use models::load_balancer_algorithm::Type;
    let t = match name {
        "round_robin" => Type::RoundRobin,
        "least_connections" => Type::LeastConnections,
        other => return Err(format!("unknown algorithm `{other}`")),
    };
    Ok(models::LoadBalancerAlgorithm::new(t))
}

impl Current {
    pub fn from_api(
        lb: &models::LoadBalancer,
        networks: &HashMap<i64, String>,
        servers: &HashMap<i64, String>,
    ) -> Current {
        use models::load_balancer_target::Type;
        let mut server_targets = Vec::new();
        let mut label_targets = Vec::new();
        let mut ip_targets = Vec::new();
        for t in &lb.targets {
            let use_private_ip = t.use_private_ip.unwrap_or(false);
            match (t.r#type, &t.server, &t.label_selector) {
                (Type::Server, Some(s), _) => server_targets.push(ServerTarget {
                    id: s.id,
                    name: servers.get(&s.id).cloned(),
                    use_private_ip,
                }),
                (Type::LabelSelector, _, Some(l)) => label_targets.push(LabelTarget {
                    selector: l.selector.clone(),
                    use_private_ip,
                }),
                (Type::Ip, ..) => ip_targets.extend(t.ip.as_ref().map(|i| i.ip.clone())),
                _ => {}
            }
        }
        let mut services: Vec<Service> = lb.services.iter().map(service_from_api).collect();
        services.sort_by_key(|s| s.listen_port);
        Current {
            id: lb.id,
            lb_type: lb.load_balancer_type.name.clone(),
            location: lb.location.name.clone(),
            network_zone: lb.location.network_zone.clone(),
            algorithm: algorithm_name(&lb.algorithm).to_string(),
            public_interface: lb.public_net.enabled,
            networks: lb
                .private_net
                .iter()
                .filter_map(|p| {
                    let id = p.network?;
                    Some(AttachedNet {
                        id,
                        name: networks.get(&id).cloned(),
                        ip: p.ip.clone(),
                    })
                })
                .collect(),
            server_targets,
            label_targets,
            ip_targets,
            services,
            labels: lb
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            delete_protection: lb.protection.delete,
        }
    }

    /// The sorted names of the server targets; a server that has no name in the project (gone
    /// since) shows as `#ID`.
    pub fn target_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .server_targets
            .iter()
            .map(|t| t.name.clone().unwrap_or_else(|| format!("#{}", t.id)))
            .collect();
        names.sort();
        names
    }

    /// Every target, sorted: servers by name (after `server_prefix`), label selectors as
    /// `label:SELECTOR`, IP targets as `ip:ADDRESS`.
    fn target_lines(&self, server_prefix: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .target_names()
            .into_iter()
            .map(|n| format!("{server_prefix}{n}"))
            .chain(
                self.label_targets
                    .iter()
                    .map(|l| format!("label:{}", l.selector)),
            )
            .chain(self.ip_targets.iter().map(|ip| format!("ip:{ip}")))
            .collect();
        lines.sort();
        lines
    }

    /// The targets as a declared `targets` list reads: server names, and every other target as
    /// a line no server name can be (`label:role=web`, `ip:203.0.113.9`), so that it shows as an
    /// extra line in a plan.
    pub fn targets_seen(&self) -> Vec<String> {
        self.target_lines("")
    }

    /// The targets as a declared `target_label` reads: the selector when it is the only target,
    /// nothing when there is no target, else every target (`label:…`, `server:…`, `ip:…`,
    /// joined), which no selector can equal, so that a plan shows the drift.
    pub fn target_label_seen(&self) -> String {
        let only_labels = self.server_targets.is_empty() && self.ip_targets.is_empty();
        match (self.label_targets.as_slice(), only_labels) {
            ([], true) => String::new(),
            ([one], true) => one.selector.clone(),
            _ => self.target_lines("server:").join(", "),
        }
    }
}

fn port(n: i32) -> u16 {
    u16::try_from(n).unwrap_or(0)
}

fn seconds(n: i32) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

/// A service of the API as kz's [`Service`]. An HTTP check always names its path (the API
/// always has one), so the line reads `path /` for the default.
pub fn service_from_api(s: &models::LoadBalancerService) -> Service {
    let protocol = match s.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Http => "http",
        Protocol::Https => "https",
    };
    let h = &s.health_check;
    let http = h.protocol == HealthProtocol::Http;
    let check_http = h.http.as_deref().filter(|_| http);
    Service {
        protocol: protocol.into(),
        listen_port: port(s.listen_port),
        destination_port: port(s.destination_port),
        proxyprotocol: s.proxyprotocol,
        health: HealthCheck {
            protocol: if http { "http" } else { "tcp" }.into(),
            port: port(h.port),
            interval: seconds(h.interval),
            timeout: seconds(h.timeout),
            retries: u32::try_from(h.retries).unwrap_or(0),
            http_path: http.then(|| {
                check_http
                    .map(|c| c.path.clone())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into())
            }),
            http_domain: check_http
                .and_then(|c| c.domain.clone())
                .filter(|d| !d.is_empty()),
        },
    }
}

/// Whole seconds, as the API counts them.
fn whole_seconds(what: &str, d: Duration) -> Result<i32, String> {
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "health check {what} {}: Hetzner counts in whole seconds",
            kz_engine::units::format_duration(d)
        ));
    }
    i32::try_from(d.as_secs()).map_err(|_| format!("health check {what} is too long"))
}

/// The checked values of a service for the API: protocols, whole seconds.
struct ApiService {
    protocol: Protocol,
    health_protocol: HealthProtocol,
    interval: i32,
    timeout: i32,
    retries: i32,
}

fn api_values(s: &Service) -> Result<ApiService, String> {
    let protocol = match s.protocol.as_str() {
        "tcp" => Protocol::Tcp,
        "http" => Protocol::Http,
        "https" => Protocol::Https,
        other => return Err(format!("unknown service protocol `{other}`")),
    };
    let health_protocol = match s.health.protocol.as_str() {
        "tcp" => HealthProtocol::Tcp,
        "http" => HealthProtocol::Http,
        other => return Err(format!("unknown health check protocol `{other}`")),
    };
    Ok(ApiService {
        protocol,
        health_protocol,
        interval: whole_seconds("interval", s.health.interval)?,
        timeout: whole_seconds("timeout", s.health.timeout)?,
        retries: i32::try_from(s.health.retries).map_err(|_| "too many retries".to_string())?,
    })
}

/// A service as the create and `add_service` calls take it.
pub fn service_to_api(s: &Service) -> Result<models::LoadBalancerService, String> {
    let v = api_values(s)?;
    let mut check = models::LoadBalancerServiceHealthCheck::new(
        v.interval,
        i32::from(s.health.port),
        v.health_protocol,
        v.retries,
        v.timeout,
    );
    if v.health_protocol == HealthProtocol::Http {
        check.http = Some(Box::new(models::LoadBalancerServiceHealthCheckHttp::new(
            s.health.http_domain.clone(),
            s.health.http_path.clone().unwrap_or_else(|| "/".into()),
        )));
    }
    Ok(models::LoadBalancerService::new(
        i32::from(s.destination_port),
        check,
        i32::from(s.listen_port),
        v.protocol,
        s.proxyprotocol,
    ))
}

/// A service as `update_service` takes it: every field kz knows, set.
pub fn service_to_update(s: &Service) -> Result<models::UpdateLoadBalancerService, String> {
    use models::update_load_balancer_service::Protocol as UpdateProtocol;
    use models::update_load_balancer_service_health_check::Protocol as UpdateHealthProtocol;
    let v = api_values(s)?;
    let http = v.health_protocol == HealthProtocol::Http;
    let check = models::UpdateLoadBalancerServiceHealthCheck {
        http: http.then(|| {
            Box::new(models::UpdateLoadBalancerServiceHealthCheckHttp {
                domain: Some(s.health.http_domain.clone()),
                path: Some(s.health.http_path.clone().unwrap_or_else(|| "/".into())),
                ..Default::default()
            })
        }),
        interval: Some(v.interval),
        port: Some(i32::from(s.health.port)),
        protocol: Some(if http {
            UpdateHealthProtocol::Http
        } else {
            UpdateHealthProtocol::Tcp
        }),
        retries: Some(v.retries),
        timeout: Some(v.timeout),
    };
    Ok(models::UpdateLoadBalancerService {
        destination_port: Some(i32::from(s.destination_port)),
        health_check: Some(Box::new(check)),
        http: None,
        listen_port: i32::from(s.listen_port),
        protocol: Some(match v.protocol {
            Protocol::Tcp => UpdateProtocol::Tcp,
            Protocol::Http => UpdateProtocol::Http,
            Protocol::Https => UpdateProtocol::Https,
        }),
        proxyprotocol: Some(s.proxyprotocol),
    })
}

/// What the plan compares for one instance: its declared attributes as the API holds them.
/// `network` is reported even when not declared (the first network attached, if any). A declared
/// attribute always gets a value, so that a change made behind kz's back shows; `targets` and
/// `target_label` account for every target of the load balancer, so an extra one shows too.
pub fn observe(inst: &Instance, c: &Current) -> Observation {
    let has = |k: &str| inst.attrs.contains_key(k);
    let mut attrs = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        attrs.insert(k.to_string(), v);
    };
    if has("type") {
        put("type", Value::Text(c.lb_type.clone()));
    }
    if has("location") {
        put("location", Value::Text(c.location.clone()));
    }
    if has("network_zone") {
        put("network_zone", Value::Text(c.network_zone.clone()));
    }
    if has("algorithm") {
        put("algorithm", Value::Text(c.algorithm.clone()));
    }
    if has("public_interface") {
        put("public_interface", Value::Bool(c.public_interface));
    }
    let declared_net = inst.text("network");
    let net = declared_net
        .and_then(|n| c.networks.iter().find(|a| a.name.as_deref() == Some(n)))
        .or_else(|| c.networks.first());
    match net {
        Some(n) => {
            let name = n.name.clone().unwrap_or_else(|| format!("#{}", n.id));
            put("network", Value::Text(name));
            if has("ip") {
                put("ip", Value::Text(n.ip.clone().unwrap_or_default()));
            }
        }
        None if declared_net.is_some() => {
            put("network", Value::Text(String::new()));
            if has("ip") {
                put("ip", Value::Text(String::new()));
            }
        }
        None => {}
    }
    if has("labels") {
        put("labels", text_map(&c.labels));
    }
    if has("targets") {
        put("targets", text_list(c.targets_seen()));
    }
    if has("target_label") {
        put("target_label", Value::Text(c.target_label_seen()));
    }
    if has("use_private_ip") {
        let declared = inst
            .attr("use_private_ip")
            .and_then(|a| a.known())
            .is_some_and(|v| *v == Value::Bool(true));
        let flags: Vec<bool> = if has("target_label") {
            c.label_targets.iter().map(|l| l.use_private_ip).collect()
        } else {
            c.server_targets.iter().map(|t| t.use_private_ip).collect()
        };
        // No target: nothing to compare. Targets that disagree: not what is declared.
        let seen = match flags.split_first() {
            None => declared,
            Some((first, rest)) if rest.iter().all(|f| f == first) => *first,
            Some(_) => !declared,
        };
        put("use_private_ip", Value::Bool(seen));
    }
    if has("services") {
        put(
            "services",
            text_list(c.services.iter().map(ToString::to_string).collect()),
        );
    }
    if let Some(t) = inst.attr("token_env").and_then(|a| a.known()) {
        put("token_env", t.clone());
    }
    Observation {
        exists: true,
        attrs,
        note: None,
        ..Default::default()
    }
}
