//! The world the fake API serves: networks, servers, load balancers and actions, and how each is
//! rendered as the API renders it.
//!
//! Everything is kept typed and rendered on the way out, so that a response is always built from
//! the one source of truth and the contract test checks the rendering, not stored copies.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::catalog::{self, LoadBalancerType, Location};
use crate::labels::{Labels, Selector};
use crate::util::{Cidr, rfc3339};

/// How long an action stays `running` unless [`World::action_delay`] says otherwise.
pub const DEFAULT_ACTION_DELAY: Duration = Duration::from_millis(300);

/// How long a new target (or a target of a new service) is reported with health `unknown`
/// before its first health check is in, unless [`World::health_delay`] says otherwise.
pub const DEFAULT_HEALTH_DELAY: Duration = Duration::from_secs(1);

pub struct Network {
    pub id: i64,
    pub name: String,
    pub cidr: Cidr,
    pub labels: Labels,
    pub created: SystemTime,
}

pub struct Server {
    pub id: i64,
    pub name: String,
    pub labels: Labels,
    pub created: SystemTime,
    pub location: &'static Location,
    pub ipv4: Ipv4Addr,
    /// The server's IPv6 /64, as the API shows it (`2001:db8:1::/64`).
    pub ipv6_net: String,
    /// (network id, ip) for each attached network.
    pub private_net: Vec<(i64, Ipv4Addr)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Server {
        id: i64,
        use_private_ip: bool,
    },
    LabelSelector {
        selector: String,
        use_private_ip: bool,
    },
    Ip {
        ip: String,
    },
}

impl Target {
    pub fn use_private_ip(&self) -> bool {
        match self {
            Target::Server { use_private_ip, .. }
            | Target::LabelSelector { use_private_ip, .. } => *use_private_ip,
            Target::Ip { .. } => false,
        }
    }

    /// The same target as far as add/remove are concerned (`use_private_ip` aside).
    /// A key naming the target among those of its load balancer (`server:ID`, `label:SEL`,
    /// `ip:IP`).
    pub fn key(&self) -> String {
        match self {
            Target::Server { id, .. } => format!("server:{id}"),
            Target::LabelSelector { selector, .. } => format!("label:{selector}"),
            Target::Ip { ip } => format!("ip:{ip}"),
        }
    }

    pub fn same_as(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Server { id: a, .. }, Target::Server { id: b, .. }) => a == b,
            (
                Target::LabelSelector { selector: a, .. },
                Target::LabelSelector { selector: b, .. },
            ) => a == b,
            (Target::Ip { ip: a }, Target::Ip { ip: b }) => a == b,
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct LoadBalancer {
    pub id: i64,
    pub name: String,
    pub labels: Labels,
    pub created: SystemTime,
    pub lb_type: &'static LoadBalancerType,
    pub location: &'static Location,
    pub algorithm: String,
    pub public_enabled: bool,
    pub ipv4: Ipv4Addr,
    pub ipv6: String,
    /// A load balancer is attached to at most one network (`load_balancer_already_attached`).
    pub private_net: Option<(i64, Ipv4Addr)>,
    /// Services in their rendered form, every optional part filled with the API's defaults.
    pub services: Vec<Value>,
    pub targets: Vec<Target>,
    pub delete_protected: bool,
    /// When each target (by [`Target::key`]) and each service (`service:PORT`) was added; one
    /// missing was there from the start (seeded), and its health is known.
    pub added: BTreeMap<String, SystemTime>,
}

impl LoadBalancer {
    pub fn service(&self, listen_port: i64) -> Option<&Value> {
        self.services
            .iter()
            .find(|s| s["listen_port"].as_i64() == Some(listen_port))
    }

    pub fn service_mut(&mut self, listen_port: i64) -> Option<&mut Value> {
        self.services
            .iter_mut()
            .find(|s| s["listen_port"].as_i64() == Some(listen_port))
    }
}

pub struct Action {
    pub id: i64,
    pub command: String,
    pub resources: Vec<(i64, &'static str)>,
    pub started: SystemTime,
    /// When it stops `running`.
    pub due: SystemTime,
    /// `Some((code, message))`: ends in `error`, and its change was never made.
    pub failure: Option<(String, String)>,
}

impl Action {
    pub fn status(&self, now: SystemTime) -> &'static str {
        match (now >= self.due, &self.failure) {
            (false, _) => "running",
            (true, None) => "success",
            (true, Some(_)) => "error",
        }
    }

    pub fn json(&self, now: SystemTime) -> Value {
        let status = self.status(now);
        let done = status != "running";
        json!({
            "id": self.id,
            "command": self.command,
            "status": status,
            "progress": if done { 100 } else { 0 },
            "started": rfc3339(self.started),
            "finished": done.then(|| rfc3339(self.due)),
            "resources": self
                .resources
                .iter()
                .map(|(id, kind)| json!({"id": id, "type": kind}))
                .collect::<Vec<_>>(),
            "error": match (&self.failure, done) {
                (Some((code, message)), true) => json!({"code": code, "message": message}),
                _ => Value::Null,
            },
        })
    }

    pub fn concerns(&self, kind: &str, id: i64) -> bool {
        self.resources.iter().any(|(i, k)| *k == kind && *i == id)
    }
}

pub struct World {
    pub networks: BTreeMap<i64, Network>,
    pub servers: BTreeMap<i64, Server>,
    pub load_balancers: BTreeMap<i64, LoadBalancer>,
    pub actions: BTreeMap<i64, Action>,
    pub action_delay: Duration,
    pub health_delay: Duration,
    /// Set by `fail_next_action`: the next action created fails with it.
    pub fail_next_action: Option<(String, String)>,
    next_network_id: i64,
    next_server_id: i64,
    next_lb_id: i64,
    next_action_id: i64,
    next_public_ip: u32,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        World {
            networks: BTreeMap::new(),
            servers: BTreeMap::new(),
            load_balancers: BTreeMap::new(),
            actions: BTreeMap::new(),
            action_delay: DEFAULT_ACTION_DELAY,
            health_delay: DEFAULT_HEALTH_DELAY,
            fail_next_action: None,
            // Each kind counts from its own base, so that an id used for the wrong kind of
            // resource is a 404 rather than a silent hit.
            next_network_id: 1_001,
            next_server_id: 10_001,
            next_lb_id: 20_001,
            next_action_id: 90_001,
            next_public_ip: 1,
        }
    }

    pub fn network_id(&mut self) -> i64 {
        self.next_network_id += 1;
        self.next_network_id - 1
    }

    pub fn server_id(&mut self) -> i64 {
        self.next_server_id += 1;
        self.next_server_id - 1
    }

    pub fn lb_id(&mut self) -> i64 {
        self.next_lb_id += 1;
        self.next_lb_id - 1
    }

    /// A fresh public address pair: IPv4 from 198.18.0.0/15 (reserved for benchmarking, so never
    /// anybody's real host) and an IPv6 /64 from the documentation prefix 2001:db8::/32.
    pub fn public_ips(&mut self) -> (Ipv4Addr, String) {
        let n = self.next_public_ip;
        self.next_public_ip += 1;
        let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n);
        (v4, format!("2001:db8:{n:x}::"))
    }

    /// Records an action. It fails if `fail_next_action` was armed; the caller makes its change
    /// only when this returns `true`.
    pub fn start_action(
        &mut self,
        command: &str,
        resources: Vec<(i64, &'static str)>,
    ) -> (i64, bool) {
        let id = self.next_action_id;
        self.next_action_id += 1;
        let started = SystemTime::now();
        let failure = self.fail_next_action.take();
        let succeeds = failure.is_none();
        self.actions.insert(
            id,
            Action {
                id,
                command: command.to_owned(),
                resources,
                started,
                due: started + self.action_delay,
                failure,
            },
        );
        (id, succeeds)
    }

    /// The action still running on this resource, if any: the real API locks a resource while an
    /// action runs on it, and refuses another change with `locked` (423) until it is done.
    pub fn running_action(&self, kind: &str, id: i64) -> Option<&Action> {
        let now = SystemTime::now();
        self.actions
            .values()
            .find(|a| a.concerns(kind, id) && a.status(now) == "running")
    }

    pub fn action_json(&self, id: i64) -> Value {
        self.actions
            .get(&id)
            .map(|a| a.json(SystemTime::now()))
            .unwrap_or(Value::Null)
    }

    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.name == name)
    }

    pub fn server_by_name(&self, name: &str) -> Option<&Server> {
        self.servers.values().find(|s| s.name == name)
    }

    pub fn lb_by_name(&self, name: &str) -> Option<&LoadBalancer> {
        self.load_balancers.values().find(|l| l.name == name)
    }

    pub fn lb_by_name_mut(&mut self, name: &str) -> Option<&mut LoadBalancer> {
        self.load_balancers.values_mut().find(|l| l.name == name)
    }

    /// Every private address taken in a network, by servers and load balancers.
    pub fn used_ips(&self, network: i64) -> Vec<Ipv4Addr> {
        let servers = self
            .servers
            .values()
            .flat_map(|s| s.private_net.iter())
            .filter(|(n, _)| *n == network)
            .map(|(_, ip)| *ip);
        let lbs = self
            .load_balancers
            .values()
            .filter_map(|l| l.private_net)
            .filter(|(n, _)| *n == network)
            .map(|(_, ip)| ip);
        servers.chain(lbs).collect()
    }

    /// The servers a label selector target currently selects.
    pub fn selected_servers(&self, selector: &str) -> Vec<i64> {
        match Selector::parse(selector) {
            Ok(sel) => self
                .servers
                .values()
                .filter(|s| sel.matches(&s.labels))
                .map(|s| s.id)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    // --- Rendering -------------------------------------------------------------------------

    pub fn network_json(&self, n: &Network) -> Value {
        let servers: Vec<i64> = self
            .servers
            .values()
            .filter(|s| s.private_net.iter().any(|(id, _)| *id == n.id))
            .map(|s| s.id)
            .collect();
        let lbs: Vec<i64> = self
            .load_balancers
            .values()
            .filter(|l| l.private_net.is_some_and(|(id, _)| id == n.id))
            .map(|l| l.id)
            .collect();
        json!({
            "id": n.id,
            "name": n.name,
            "ip_range": n.cidr.to_string(),
            "subnets": [{
                "type": "cloud",
                "ip_range": n.cidr.to_string(),
                "network_zone": "eu-central",
                "gateway": n.cidr.gateway().to_string(),
                "vswitch_id": null,
            }],
            "routes": [],
            "servers": servers,
            "load_balancers": lbs,
            "protection": {"delete": false},
            "labels": n.labels,
            "created": rfc3339(n.created),
            "expose_routes_to_vswitch": false,
        })
    }

    pub fn server_json(&self, s: &Server) -> Value {
        let lbs: Vec<i64> = self
            .load_balancers
            .values()
            .filter(|l| {
                l.targets.iter().any(|t| match t {
                    Target::Server { id, .. } => *id == s.id,
                    Target::LabelSelector { selector, .. } => {
                        self.selected_servers(selector).contains(&s.id)
                    }
                    Target::Ip { .. } => false,
                })
            })
            .map(|l| l.id)
            .collect();
        let created = rfc3339(s.created);
        json!({
            "id": s.id,
            "name": s.name,
            "status": "running",
            "created": created,
            "public_net": {
                "ipv4": {
                    "id": s.id + 500_000,
                    "ip": s.ipv4.to_string(),
                    "blocked": false,
                    "dns_ptr": format!("static.{}.clients.your-server.de", s.ipv4),
                },
                "ipv6": {
                    "id": s.id + 600_000,
                    "ip": format!("{}/64", s.ipv6_net),
                    "blocked": false,
                    "dns_ptr": [],
                },
                "floating_ips": [],
                "firewalls": [],
            },
            "private_net": s
                .private_net
                .iter()
                .map(|(network, ip)| json!({
                    "network": network,
                    "ip": ip.to_string(),
                    "alias_ips": [],
                    "mac_address": format!("86:00:00:{:02x}:{:02x}:{:02x}",
                        (s.id >> 16) & 0xff, (s.id >> 8) & 0xff, s.id & 0xff),
                }))
                .collect::<Vec<_>>(),
            "server_type": catalog::server_type_json(),
            "datacenter": catalog::datacenter_json(s.location),
            "location": s.location.json(),
            "image": catalog::image_json(&created),
            "iso": null,
            "rescue_enabled": false,
            "locked": false,
            "backup_window": null,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": catalog::SERVER_INCLUDED_TRAFFIC,
            "protection": {"delete": false, "rebuild": false},
            "labels": s.labels,
            "volumes": [],
            "load_balancers": lbs,
            "primary_disk_size": 40,
            "placement_group": null,
        })
    }

    pub fn lb_json(&self, lb: &LoadBalancer) -> Value {
        // The fake runs no health checks: a target is `unknown` on a service until the health
        // delay has passed since both were there, then `healthy`, as a first check would find it.
        let now = SystemTime::now();
        let since = |key: &str| lb.added.get(key).copied().unwrap_or(SystemTime::UNIX_EPOCH);
        let health_of = |target: &str| -> Vec<Value> {
            lb.services
                .iter()
                .map(|s| {
                    let port = s["listen_port"].as_i64().unwrap_or_default();
                    let from = since(target).max(since(&format!("service:{port}")));
                    let status = if now < from + self.health_delay {
                        "unknown"
                    } else {
                        "healthy"
                    };
                    json!({"listen_port": port, "status": status})
                })
                .collect()
        };
        let targets: Vec<Value> = lb
            .targets
            .iter()
            .map(|t| match t {
                Target::Server { id, use_private_ip } => json!({
                    "type": "server",
                    "server": {"id": id},
                    "use_private_ip": use_private_ip,
                    "health_status": health_of(&t.key()),
                }),
                Target::LabelSelector {
                    selector,
                    use_private_ip,
                } => json!({
                    "type": "label_selector",
                    "label_selector": {"selector": selector},
                    "use_private_ip": use_private_ip,
                    "targets": self
                        .selected_servers(selector)
                        .iter()
                        .map(|id| json!({
                            "type": "server",
                            "server": {"id": id},
                            "use_private_ip": use_private_ip,
                            "health_status": health_of(&t.key()),
                        }))
                        .collect::<Vec<_>>(),
                }),
                Target::Ip { ip } => json!({
                    "type": "ip",
                    "ip": {"ip": ip},
                    "health_status": health_of(&t.key()),
                }),
            })
            .collect();
        json!({
            "id": lb.id,
            "name": lb.name,
            "public_net": {
                "enabled": lb.public_enabled,
                "ipv4": {
                    "ip": lb.ipv4.to_string(),
                    "dns_ptr": format!("static.{}.clients.your-server.de", lb.ipv4),
                },
                "ipv6": {"ip": format!("{}1", lb.ipv6), "dns_ptr": null},
            },
            "private_net": lb
                .private_net
                .iter()
                .map(|(network, ip)| json!({"network": network, "ip": ip.to_string()}))
                .collect::<Vec<_>>(),
            "location": lb.location.json(),
            "load_balancer_type": lb.lb_type.json(),
            "protection": {"delete": lb.delete_protected},
            "labels": lb.labels,
            "created": rfc3339(lb.created),
            "services": lb.services,
            "targets": targets,
            "algorithm": {"type": lb.algorithm},
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": catalog::LB_INCLUDED_TRAFFIC,
        })
    }
}
