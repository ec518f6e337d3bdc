//! The actions that bring a load balancer from what it is ([`Current`]) to what an instance
//! declares ([`Desired`]), in an order the API accepts:
//!
//! 1. the public interface on, when wanted, or for a while when the load balancer must leave its
//!    network (a load balancer with neither is refused); a private load balancer public for a
//!    while loses its services first, and gets them back last, so it never serves publicly;
//! 2. what goes away: targets, services, then networks left. All of it before the type changes,
//!    so that a smaller type (fewer services and targets allowed) has room: `change_type` is
//!    refused with `invalid_load_balancer_type` while the load balancer holds more than the new
//!    type allows;
//! 3. type, algorithm, labels;
//! 4. the network joined (at its declared IP);
//! 5. the public interface off (it needs the network, and targets on private IPs), before any
//!    target is added, so that a private load balancer never serves a target publicly;
//! 6. what comes: targets added (a private-IP target needs the network first), services changed
//!    and added. All of it after the type changes, so that a larger type has room.
//!
//! An attribute the instance does not declare is left alone on the load balancer: what it holds
//! there is neither compared nor cleaned up, even when an earlier declaration set it (taking
//! `labels`, `network`, `targets` or `target_label` out of a declaration leaves the labels, the
//! network or the targets as they are). When `targets` or `target_label` is declared, every
//! other target (other servers, other label selectors, IP targets) is removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::service::Service;

use super::spec::{Current, Desired, Targets};

/// One change, as one API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    ChangeType(String),
    ChangeAlgorithm(String),
    SetLabels(BTreeMap<String, String>),
    EnablePublicInterface,
    DisablePublicInterface,
    RemoveServerTarget {
        id: i64,
        name: String,
    },
    RemoveLabelTarget(String),
    RemoveIpTarget(String),
    DetachFromNetwork {
        id: i64,
    },
    AttachToNetwork {
        id: i64,
        ip: Option<String>,
    },
    AddServerTarget {
        id: i64,
        name: String,
        use_private_ip: bool,
    },
    AddLabelTarget {
        selector: String,
        use_private_ip: bool,
    },
    DeleteService(u16),
    UpdateService(Service),
    AddService(Service),
}

impl Op {
    /// The name of the API action, which is also the step named in errors.
    pub fn step(&self) -> &'static str {
        match self {
            Op::ChangeType(_) => "change_type",
            Op::ChangeAlgorithm(_) => "change_algorithm",
            Op::SetLabels(_) => "update",
            Op::EnablePublicInterface => "enable_public_interface",
            Op::DisablePublicInterface => "disable_public_interface",
            Op::RemoveServerTarget { .. } | Op::RemoveLabelTarget(_) | Op::RemoveIpTarget(_) => {
                "remove_target"
            }
            Op::DetachFromNetwork { .. } => "detach_from_network",
            Op::AttachToNetwork { .. } => "attach_to_network",
            Op::AddServerTarget { .. } | Op::AddLabelTarget { .. } => "add_target",
            Op::DeleteService(_) => "delete_service",
            Op::UpdateService(_) => "update_service",
            Op::AddService(_) => "add_service",
        }
    }
}

/// Ids the plan needs, looked up by name beforehand.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The id of the declared network (`None` when it is not declared or does not exist).
    pub network: Option<i64>,
    /// The servers of the project by name (looked up only when targets are declared).
    pub servers: HashMap<String, i64>,
}

/// The server ids of `names`, or an error naming every server that does not exist.
pub fn server_ids(names: &[String], servers: &HashMap<String, i64>) -> Result<Vec<i64>, String> {
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !servers.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let s = if missing.len() == 1 { "" } else { "s" };
        return Err(format!(
            "no server named {} in the project (target{s} of load balancer)",
            missing.join(", ")
        ));
    }
    Ok(names
        .iter()
        .filter_map(|n| servers.get(n).copied())
        .collect())
}

/// The actions, in order; an error when a declared network or server does not exist.
pub fn plan(d: &Desired, c: &Current, r: &Resolved) -> Result<Vec<Op>, String> {
    let mut head = Vec::new();
    if d.lb_type != c.lb_type {
        head.push(Op::ChangeType(d.lb_type.clone()));
    }
    if d.algorithm != c.algorithm {
        head.push(Op::ChangeAlgorithm(d.algorithm.clone()));
    }
    if let Some(l) = &d.labels
        && *l != c.labels
    {
        head.push(Op::SetLabels(l.clone()));
    }

    // Networks.
    let mut detach = Vec::new();
    let mut attach = None;
    if let Some(name) = &d.network {
        let id = r
            .network
            .ok_or_else(|| format!("no network named {name} in the project"))?;
        for n in &c.networks {
            let wrong_ip = d.ip.is_some() && n.ip != d.ip;
            if n.id != id || wrong_ip {
                detach.push(n.id);
            }
        }
        if !c.networks.iter().any(|n| n.id == id) || detach.contains(&id) {
            attach = Some(Op::AttachToNetwork {
                id,
                ip: d.ip.clone(),
            });
        }
    }
    // A target on a private IP goes with the network it uses, and comes back after.
    let leaves = |private: bool| private && !detach.is_empty();

    // Targets: when declared, the declared ones and no other.
    let mut remove = Vec::new();
    let mut add = Vec::new();
    let (want_servers, want_label): (&[String], Option<&str>) = match &d.targets {
        Targets::Unmanaged => (&[], None),
        Targets::Servers(names) => (names, None),
        Targets::Label(s) => (&[], Some(s)),
    };
    if d.targets != Targets::Unmanaged {
        let mut kept = BTreeSet::new();
        for t in &c.server_targets {
            let wanted = t.name.as_ref().is_some_and(|n| want_servers.contains(n));
            if wanted && t.use_private_ip == d.use_private_ip && !leaves(t.use_private_ip) {
                kept.extend(t.name.clone());
            } else {
                remove.push(Op::RemoveServerTarget {
                    id: t.id,
                    name: t.name.clone().unwrap_or_else(|| format!("#{}", t.id)),
                });
            }
        }
        let new: Vec<String> = want_servers
            .iter()
            .filter(|n| !kept.contains(n.as_str()))
            .cloned()
            .collect();
        let ids = server_ids(&new, &r.servers)?;
        for (name, id) in new.into_iter().zip(ids) {
            add.push(Op::AddServerTarget {
                id,
                name,
                use_private_ip: d.use_private_ip,
            });
        }

        let mut kept = false;
        for l in &c.label_targets {
            let keep = !kept
                && want_label == Some(l.selector.as_str())
                && l.use_private_ip == d.use_private_ip
                && !leaves(l.use_private_ip);
            if keep {
                kept = true;
            } else {
                remove.push(Op::RemoveLabelTarget(l.selector.clone()));
            }
        }
        if let (Some(selector), false) = (want_label, kept) {
            add.push(Op::AddLabelTarget {
                selector: selector.to_string(),
                use_private_ip: d.use_private_ip,
            });
        }

        // kz never declares an IP target: every one is extra.
        remove.extend(c.ip_targets.iter().cloned().map(Op::RemoveIpTarget));
    }

    // The public interface.
    let for_a_while = !c.public_interface && !detach.is_empty();
    let enable = (d.public_interface && !c.public_interface) || for_a_while;
    let disable = !d.public_interface && (c.public_interface || for_a_while);
    // A private load balancer public only while it changes networks must not serve publicly
    // then: its services go before the interface comes on, and come back after it is off.
    let hide = for_a_while && !d.public_interface;

    // Services, by listen port.
    let now: BTreeMap<u16, &Service> = if hide {
        BTreeMap::new()
    } else {
        c.services.iter().map(|s| (s.listen_port, s)).collect()
    };
    let want: BTreeMap<u16, &Service> = d.services.iter().map(|s| (s.listen_port, s)).collect();
    let gone: Vec<Op> = c
        .services
        .iter()
        .map(|s| s.listen_port)
        .filter(|p| hide || !want.contains_key(p))
        .map(Op::DeleteService)
        .collect();
    let mut services = Vec::new();
    for (p, s) in &want {
        match now.get(p) {
            None => services.push(Op::AddService((*s).clone())),
            Some(old) if old != s => services.push(Op::UpdateService((*s).clone())),
            Some(_) => {}
        }
    }

    let mut ops = Vec::new();
    let mut gone = gone;
    if hide {
        ops.append(&mut gone);
    }
    if enable {
        ops.push(Op::EnablePublicInterface);
    }
    // What goes away, then the type (room for a smaller one), then what comes (room in a larger).
    ops.extend(remove);
    ops.extend(gone);
    ops.extend(detach.into_iter().map(|id| Op::DetachFromNetwork { id }));
    ops.extend(head);
    ops.extend(attach);
    if disable {
        ops.push(Op::DisablePublicInterface);
    }
    ops.extend(add);
    ops.extend(services);
    Ok(ops)
}
