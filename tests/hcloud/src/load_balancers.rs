//! Creating, changing and deleting load balancers.
//!
//! Bodies arrive already checked against the document's request schemas (`routes::parse_body`),
//! so the shapes are right here; what is left are the rules the schemas cannot say (a server must
//! exist, a port must be free, ...).
//!
//! Changes go through actions. A change is made on a copy of the load balancer, the action is
//! started, and the copy replaces the original only if the action is not one armed to fail: a
//! failed action leaves the world as it was. A successful change is visible at once; the action
//! reports `running` until its delay has passed (see `state::Action`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::catalog;
use crate::errors::{ApiError, FieldError};
use crate::labels::Selector;
use crate::routes::{Call, Reply, ok};
use crate::state::{LoadBalancer, Target, World};
use crate::util::Cidr;

pub fn dispatch(world: &mut World, call: &Call) -> Reply {
    match (call.method, call.template) {
        ("POST", "/load_balancers") => create(world, &call.body),
        ("PUT", "/load_balancers/{id}") => update(world, call.id(0, "load balancer")?, &call.body),
        ("DELETE", "/load_balancers/{id}") => delete(world, call.id(0, "load balancer")?),
        ("POST", t) => match t.strip_prefix("/load_balancers/{id}/actions/") {
            Some(name) => action(world, call.id(0, "load balancer")?, name, &call.body),
            None => Err(unrouted(call)),
        },
        _ => Err(unrouted(call)),
    }
}

/// A route in `ROUTES` without a handler: a bug here, reported loudly.
fn unrouted(call: &Call) -> ApiError {
    ApiError::new(
        "server_error",
        format!(
            "kz-test-hcloud: no handler for {} {}",
            call.method, call.template
        ),
    )
}

fn str_of<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

fn labels_of(body: &Value) -> Option<crate::labels::Labels> {
    body.get("labels").and_then(Value::as_object).map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect()
    })
}

fn create(world: &mut World, body: &Value) -> Reply {
    let name = str_of(body, "name").unwrap_or_default().to_owned();
    if world.lb_by_name(&name).is_some() {
        return Err(uniqueness("name"));
    }
    let type_name = str_of(body, "load_balancer_type").unwrap_or_default();
    let lb_type = catalog::load_balancer_type(type_name)
        .ok_or_else(|| ApiError::field("load_balancer_type", "load balancer type not found"))?;
    let zone = str_of(body, "network_zone");
    let location = match (str_of(body, "location"), zone) {
        (Some(l), _) => {
            let location = catalog::location(l)
                .ok_or_else(|| ApiError::field("location", "location not found"))?;
            if zone.is_some_and(|z| z != location.network_zone) {
                return Err(ApiError::field(
                    "network_zone",
                    "does not match the location's network zone",
                ));
            }
            location
        }
        (None, Some(z)) => catalog::location_in_zone(z)
            .ok_or_else(|| ApiError::field("network_zone", "network zone not found"))?,
        (None, None) => {
            return Err(ApiError::invalid_input(vec![
                FieldError {
                    name: "location".into(),
                    messages: vec!["location or network_zone is required".into()],
                },
                FieldError {
                    name: "network_zone".into(),
                    messages: vec!["location or network_zone is required".into()],
                },
            ]));
        }
    };
    let private_net = match body.get("network").and_then(Value::as_i64) {
        Some(network) => Some((network, free_ip(world, network, "network", None, None)?)),
        None => None,
    };
    let (ipv4, ipv6) = world.public_ips();
    let id = world.lb_id();
    let mut lb = LoadBalancer {
        id,
        name,
        labels: labels_of(body).unwrap_or_default(),
        created: SystemTime::now(),
        lb_type,
        location,
        algorithm: body
            .pointer("/algorithm/type")
            .and_then(Value::as_str)
            .unwrap_or("round_robin")
            .to_owned(),
        // The API allocates public addresses either way; the flag only switches the interface.
        public_enabled: body
            .get("public_interface")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        ipv4,
        ipv6,
        private_net,
        services: Vec::new(),
        targets: Vec::new(),
        delete_protected: false,
        added: Default::default(),
    };
    for service in body
        .get("services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add_service(&mut lb, service)?;
    }
    for target in body
        .get("targets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let target = parse_target(target, true)?;
        check_new_target(world, &lb, &target)?;
        add_target(&mut lb, target);
    }
    let (action, succeeds) =
        world.start_action("create_load_balancer", vec![(id, "load_balancer")]);
    let rendered = world.lb_json(&lb);
    if succeeds {
        world.load_balancers.insert(id, lb);
    }
    Ok((
        201,
        Some(json!({"load_balancer": rendered, "action": world.action_json(action)})),
    ))
}

fn uniqueness(field: &str) -> ApiError {
    ApiError {
        details: Some(json!({"fields": [{"name": field}]})),
        ..ApiError::new("uniqueness_error", format!("{field} is already used"))
    }
}

fn update(world: &mut World, id: i64, body: &Value) -> Reply {
    if !world.load_balancers.contains_key(&id) {
        return Err(ApiError::not_found("load balancer", id));
    }
    let name = str_of(body, "name");
    if let Some(name) = name
        && world
            .load_balancers
            .values()
            .any(|l| l.name == name && l.id != id)
    {
        return Err(uniqueness("name"));
    }
    let labels = labels_of(body);
    let Some(lb) = world.load_balancers.get_mut(&id) else {
        return Err(ApiError::not_found("load balancer", id));
    };
    if let Some(name) = name {
        lb.name = name.to_owned();
    }
    if let Some(labels) = labels {
        lb.labels = labels;
    }
    let lb = &world.load_balancers[&id];
    ok(json!({"load_balancer": world.lb_json(lb)}))
}

fn delete(world: &mut World, id: i64) -> Reply {
    let lb = world
        .load_balancers
        .get(&id)
        .ok_or_else(|| ApiError::not_found("load balancer", id))?;
    check_unlocked(world, "load_balancer", id)?;
    if lb.delete_protected {
        return Err(ApiError::new(
            "protected",
            "load balancer is delete protected",
        ));
    }
    world.load_balancers.remove(&id);
    Ok((204, None))
}

/// `locked` (423) while an action runs on the resource, as the real API answers: a load balancer
/// takes one action at a time, and attaching or detaching a load balancer locks the network too,
/// so that two load balancers cannot join one network at once.
fn check_unlocked(world: &World, kind: &str, id: i64) -> Result<(), ApiError> {
    match world.running_action(kind, id) {
        None => Ok(()),
        Some(a) => {
            let what = kind.replace('_', " ");
            Err(ApiError::new(
                "locked",
                format!("{what} {id} is locked by a running action ({})", a.command),
            ))
        }
    }
}

/// `POST /load_balancers/{id}/actions/<name>`: the change on a copy, then the action.
fn action(world: &mut World, id: i64, name: &str, body: &Value) -> Reply {
    let mut lb = world
        .load_balancers
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("load balancer", id))?;
    check_unlocked(world, "load_balancer", id)?;
    if matches!(name, "attach_to_network" | "detach_from_network")
        && let Some(network) = body["network"].as_i64()
        && world.networks.contains_key(&network)
    {
        check_unlocked(world, "network", network)?;
    }
    let mut resources = vec![(id, "load_balancer")];
    let command = match name {
        "add_service" => {
            add_service(&mut lb, body)?;
            "add_service"
        }
        "update_service" => {
            update_service(&mut lb, body)?;
            "update_service"
        }
        "delete_service" => {
            let port = body["listen_port"].as_i64().unwrap_or_default();
            let before = lb.services.len();
            lb.services
                .retain(|s| s["listen_port"].as_i64() != Some(port));
            if lb.services.len() == before {
                return Err(ApiError::field("listen_port", "service not found"));
            }
            lb.added.remove(&format!("service:{port}"));
            "delete_service"
        }
        "add_target" => {
            let target = parse_target(body, true)?;
            check_new_target(world, &lb, &target)?;
            add_target(&mut lb, target);
            "add_target"
        }
        "remove_target" => {
            let target = parse_target(body, false)?;
            let before = lb.targets.len();
            lb.targets.retain(|t| !t.same_as(&target));
            if lb.targets.len() == before {
                return Err(ApiError::field(target_field(&target), "target not found"));
            }
            lb.added.remove(&target.key());
            "remove_target"
        }
        "attach_to_network" => {
            let network = body["network"].as_i64().unwrap_or_default();
            if !world.networks.contains_key(&network) {
                return Err(ApiError::field("network", "network not found"));
            }
            if lb.private_net.is_some() {
                return Err(ApiError::new(
                    "load_balancer_already_attached",
                    "load balancer is already attached to a network",
                ));
            }
            let ip = free_ip(
                world,
                network,
                "network",
                str_of(body, "ip"),
                str_of(body, "ip_range"),
            )?;
            lb.private_net = Some((network, ip));
            resources.push((network, "network"));
            "attach_to_network"
        }
        "detach_from_network" => {
            let network = body["network"].as_i64().unwrap_or_default();
            if lb.private_net.map(|(n, _)| n) != Some(network) {
                return Err(ApiError::new(
                    "load_balancer_not_attached_to_network",
                    "load balancer is not attached to this network",
                ));
            }
            lb.private_net = None;
            resources.push((network, "network"));
            "detach_from_network"
        }
        "enable_public_interface" => {
            lb.public_enabled = true;
            "enable_public_interface"
        }
        "disable_public_interface" => {
            if lb.private_net.is_none() {
                return Err(ApiError::new(
                    "load_balancer_not_attached_to_network",
                    "load balancer is not attached to a network",
                ));
            }
            if lb.targets.iter().any(|t| !t.use_private_ip()) {
                return Err(ApiError::new(
                    "targets_without_use_private_ip",
                    "load balancer has targets that use the public IP",
                ));
            }
            lb.public_enabled = false;
            "disable_public_interface"
        }
        "change_algorithm" => {
            lb.algorithm = str_of(body, "type").unwrap_or("round_robin").to_owned();
            "change_algorithm"
        }
        "change_type" => {
            let wanted = str_of(body, "load_balancer_type").unwrap_or_default();
            let lb_type = catalog::load_balancer_type(wanted).ok_or_else(|| {
                ApiError::field("load_balancer_type", "load balancer type not found")
            })?;
            if lb.services.len() > lb_type.max_services || lb.targets.len() > lb_type.max_targets {
                return Err(ApiError::new(
                    "invalid_load_balancer_type",
                    "the load balancer has more services or targets than this type allows",
                ));
            }
            lb.lb_type = lb_type;
            "change_load_balancer_type"
        }
        "change_protection" => {
            if let Some(on) = body.get("delete").and_then(Value::as_bool) {
                lb.delete_protected = on;
            }
            "change_protection"
        }
        _ => {
            return Err(ApiError::new(
                "server_error",
                format!("kz-test-hcloud: no handler for load balancer action {name}"),
            ));
        }
    };
    let (action, succeeds) = world.start_action(command, resources);
    if succeeds {
        world.load_balancers.insert(id, lb);
    }
    Ok((201, Some(json!({"action": world.action_json(action)}))))
}

// --- Services --------------------------------------------------------------------------------

fn add_service(lb: &mut LoadBalancer, body: &Value) -> Result<(), ApiError> {
    let port = body["listen_port"].as_i64().unwrap_or_default();
    if lb.service(port).is_some() {
        return Err(ApiError::new(
            "source_port_already_used",
            format!("listen port {port} is already used by a service"),
        ));
    }
    if lb.services.len() >= lb.lb_type.max_services {
        return Err(ApiError::new(
            "resource_limit_exceeded",
            format!(
                "{} allows at most {} services",
                lb.lb_type.name, lb.lb_type.max_services
            ),
        ));
    }
    lb.services.push(normalize_service(body));
    lb.added
        .insert(format!("service:{port}"), SystemTime::now());
    Ok(())
}

/// Adds a checked target; its health is `unknown` for a while (see `World::lb_json`).
fn add_target(lb: &mut LoadBalancer, target: Target) {
    lb.added.insert(target.key(), SystemTime::now());
    lb.targets.push(target);
}

fn update_service(lb: &mut LoadBalancer, body: &Value) -> Result<(), ApiError> {
    let port = body["listen_port"].as_i64().unwrap_or_default();
    let service = lb
        .service_mut(port)
        .ok_or_else(|| ApiError::field("listen_port", "service not found"))?;
    let mut merged = service.clone();
    merge(&mut merged, body);
    *service = normalize_service(&merged);
    Ok(())
}

/// Deep-merges the keys of `patch` into `base` (objects merge, anything else replaces).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// A service as the API returns it: every optional part present with its default; `http` only
/// for HTTP(S) services, `health_check.http` only for HTTP health checks.
fn normalize_service(s: &Value) -> Value {
    let protocol = s["protocol"].as_str().unwrap_or("tcp");
    let hc = &s["health_check"];
    let hc_protocol = hc["protocol"].as_str().unwrap_or("tcp");
    let mut health_check = json!({
        "protocol": hc_protocol,
        "port": hc.get("port").cloned().unwrap_or_else(|| s["destination_port"].clone()),
        "interval": hc.get("interval").cloned().unwrap_or(json!(15)),
        "timeout": hc.get("timeout").cloned().unwrap_or(json!(10)),
        "retries": hc.get("retries").cloned().unwrap_or(json!(3)),
    });
    if hc_protocol == "http" {
        let http = &hc["http"];
        health_check["http"] = json!({
            "domain": http.get("domain").cloned().unwrap_or(Value::Null),
            "path": http.get("path").cloned().unwrap_or(json!("/")),
            "response": http.get("response").cloned().unwrap_or(json!("")),
            "status_codes": http.get("status_codes").cloned().unwrap_or(json!(["2??", "3??"])),
            "tls": http.get("tls").cloned().unwrap_or(json!(false)),
        });
    }
    let mut service = Map::new();
    service.insert("protocol".into(), json!(protocol));
    service.insert("listen_port".into(), s["listen_port"].clone());
    service.insert("destination_port".into(), s["destination_port"].clone());
    service.insert(
        "proxyprotocol".into(),
        s.get("proxyprotocol").cloned().unwrap_or(json!(false)),
    );
    service.insert("health_check".into(), health_check);
    if protocol != "tcp" {
        let http = &s["http"];
        service.insert(
            "http".into(),
            json!({
                "cookie_name": http.get("cookie_name").cloned().unwrap_or(json!("HCLBSTICKY")),
                "cookie_lifetime": http.get("cookie_lifetime").cloned().unwrap_or(json!(300)),
                "certificates": http.get("certificates").cloned().unwrap_or(json!([])),
                "redirect_http": http.get("redirect_http").cloned().unwrap_or(json!(false)),
                "sticky_sessions": http.get("sticky_sessions").cloned().unwrap_or(json!(false)),
            }),
        );
    }
    Value::Object(service)
}

// --- Targets ---------------------------------------------------------------------------------

/// The target a request names. `use_private_ip` is read only when adding.
fn parse_target(body: &Value, adding: bool) -> Result<Target, ApiError> {
    let use_private_ip = adding
        && body
            .get("use_private_ip")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    match str_of(body, "type").unwrap_or_default() {
        "server" => body
            .pointer("/server/id")
            .and_then(Value::as_i64)
            .map(|id| Target::Server { id, use_private_ip })
            .ok_or_else(|| ApiError::field("server", "is required for a server target")),
        "label_selector" => {
            let selector = body
                .pointer("/label_selector/selector")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::field("label_selector", "is required for a label_selector target")
                })?;
            Selector::parse(selector).map_err(|e| ApiError::field("label_selector.selector", e))?;
            Ok(Target::LabelSelector {
                selector: selector.to_owned(),
                use_private_ip,
            })
        }
        _ => {
            let ip = body
                .pointer("/ip/ip")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::field("ip", "is required for an ip target"))?;
            ip.parse::<IpAddr>()
                .map_err(|_| ApiError::field("ip.ip", "is not an IP address"))?;
            Ok(Target::Ip { ip: ip.to_owned() })
        }
    }
}

fn target_field(t: &Target) -> &'static str {
    match t {
        Target::Server { .. } => "server",
        Target::LabelSelector { .. } => "label_selector",
        Target::Ip { .. } => "ip",
    }
}

/// The rules for adding `target` to `lb`, in the order the API's error table suggests.
fn check_new_target(world: &World, lb: &LoadBalancer, target: &Target) -> Result<(), ApiError> {
    if lb.targets.iter().any(|t| t.same_as(target)) {
        return Err(ApiError::new(
            "target_already_defined",
            "the target is already defined",
        ));
    }
    if lb.targets.len() >= lb.lb_type.max_targets {
        return Err(ApiError::new(
            "resource_limit_exceeded",
            format!(
                "{} allows at most {} targets",
                lb.lb_type.name, lb.lb_type.max_targets
            ),
        ));
    }
    let not_attached = || {
        ApiError::new(
            "load_balancer_not_attached_to_network",
            "load balancer is not attached to a network",
        )
    };
    let public_disabled = || {
        ApiError::new(
            "load_balancer_public_interface_disabled",
            "load balancer's public interface is disabled",
        )
    };
    match target {
        Target::Server { id, use_private_ip } => {
            // What the real API answers for a server it cannot use as a target.
            let server = world
                .servers
                .get(id)
                .ok_or_else(|| ApiError::field("server", "cloud target was not found"))?;
            if *use_private_ip {
                let (network, _) = lb.private_net.ok_or_else(not_attached)?;
                if !server.private_net.iter().any(|(n, _)| *n == network) {
                    return Err(ApiError::new(
                        "server_not_attached_to_network",
                        "server is not attached to the load balancer's network",
                    ));
                }
            } else if !lb.public_enabled {
                return Err(public_disabled());
            }
        }
        Target::LabelSelector { use_private_ip, .. } => {
            if *use_private_ip {
                lb.private_net.ok_or_else(not_attached)?;
            } else if !lb.public_enabled {
                return Err(public_disabled());
            }
        }
        Target::Ip { ip } => {
            if world.servers.values().any(|s| s.ipv4.to_string() == *ip) {
                return Err(ApiError::new(
                    "cloud_resource_ip_not_allowed",
                    "the IP belongs to a Hetzner Cloud resource",
                ));
            }
            if !lb.public_enabled {
                return Err(public_disabled());
            }
        }
    }
    Ok(())
}

// --- Networks --------------------------------------------------------------------------------

/// A private address in `network` for a load balancer: `wanted` if it is free, else the first
/// free one (of `ip_range` if given).
fn free_ip(
    world: &World,
    network: i64,
    field: &str,
    wanted: Option<&str>,
    ip_range: Option<&str>,
) -> Result<Ipv4Addr, ApiError> {
    let cidr = world
        .networks
        .get(&network)
        .map(|n| n.cidr)
        .ok_or_else(|| ApiError::field(field, "network not found"))?;
    let range = match ip_range {
        Some(r) => Cidr::parse(r)
            .filter(|r| r.len >= cidr.len && cidr.contains(Ipv4Addr::from(r.base)))
            .ok_or_else(|| ApiError::field("ip_range", "is not a subnet of the network"))?,
        None => cidr,
    };
    let used = world.used_ips(network);
    match wanted {
        Some(ip) => {
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| ApiError::field("ip", "is not an IPv4 address"))?;
            if !range.contains(ip) {
                return Err(ApiError::field("ip", "is not in the network's range"));
            }
            if used.contains(&ip) || !cidr.is_host(ip) {
                return Err(ApiError::new(
                    "ip_not_available",
                    format!("IP {ip} is not available"),
                ));
            }
            Ok(ip)
        }
        None => range.hosts().find(|h| !used.contains(h)).ok_or_else(|| {
            ApiError::new("no_subnet_available", "no IP is available in the network")
        }),
    }
}
