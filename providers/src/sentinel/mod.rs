//! The `sentinel` resource: one Redis replication group with its sentinels, one instance over
//! its member hosts (`Placement::Group`). Every member's Redis and Sentinel are read in that
//! host's batched read (`read.rs`); `topology.rs` decides what the group is and what Sentinel
//! would choose; `repair.rs` makes a new group, registers it on the sentinels, and repairs a
//! group without a sound master, asking the sentinels first.

mod balancers;
mod declare;
mod read;
mod repair;
mod topology;

use std::collections::BTreeMap;

use async_trait::async_trait;

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, Placement, Provider,
    ProviderError,
};

use read::{Member, Sentinel};
use topology::{Verdict, assess, majority};

#[derive(Debug)]
pub struct SentinelProvider;

/// An instance's values, as the read and the changes use them.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub initial_master: String,
    pub redis_port: u16,
    pub sentinel_port: u16,
    /// `None`: the majority of the members.
    pub quorum: Option<u32>,
    pub down_after_ms: u64,
    pub failover_ms: u64,
    pub auth: Option<String>,
    pub conf: String,
    pub start: Option<String>,
    pub cli: String,
    pub members: Vec<String>,
    pub addresses: BTreeMap<String, String>,
    /// The HAProxy hosts kz checks after a change.
    pub balancers: Option<balancers::Balancers>,
}

impl Group {
    pub fn from(inst: &Instance) -> Result<Group, String> {
        let text = |k: &str| {
            inst.text(k)
                .map(String::from)
                .ok_or_else(|| format!("`{k}` is not known (is a secret unset?)"))
        };
        let settings = text("settings")?;
        let mut words = settings.split(", ").filter_map(|p| p.split_once(' '));
        let mut next = || words.next().map(|(_, v)| v.to_string()).unwrap_or_default();
        let (quorum, down, failover) = (next(), next(), next());
        let addresses = match inst.attr("addresses").and_then(|a| a.known()) {
            Some(Value::Map(m)) => m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(Group {
            name: text("master_name")?,
            initial_master: text("initial_master")?,
            redis_port: text("redis_port")?.parse().map_err(|_| "bad redis_port")?,
            sentinel_port: text("sentinel_port")?
                .parse()
                .map_err(|_| "bad sentinel_port")?,
            quorum: quorum.parse().ok(),
            down_after_ms: down.parse().map_err(|_| "bad settings")?,
            failover_ms: failover.parse().map_err(|_| "bad settings")?,
            auth: match inst.attr("auth") {
                None => None,
                Some(_) => Some(text("auth")?),
            },
            conf: text("sentinel_conf")?,
            start: inst.text("sentinel_start").map(String::from),
            cli: text("cli")?,
            members: inst.members.clone(),
            addresses,
            balancers: balancers_of(inst),
        })
    }

    pub fn quorum(&self) -> u32 {
        self.quorum
            .unwrap_or_else(|| u32::try_from(majority(self.members.len())).unwrap_or(1))
    }

    pub fn address<'a>(&'a self, host: &'a str) -> &'a str {
        self.addresses.get(host).map_or(host, String::as_str)
    }

    /// The `settings` line as the sentinels hold it: the quorum shows as the declared word when
    /// it is the majority the declaration asked for.
    fn settings_seen(&self, members: &[Member]) -> Option<String> {
        let mut seen: Vec<String> = members
            .iter()
            .filter_map(|m| match &m.sentinel {
                Sentinel::Monitoring(v) => {
                    let q = if self.quorum.is_none() && v.quorum == self.quorum() {
                        declare::MAJORITY.to_string()
                    } else {
                        v.quorum.to_string()
                    };
                    Some(declare::settings_line(
                        &q,
                        v.down_after_ms,
                        v.failover_timeout_ms,
                    ))
                }
                _ => None,
            })
            .collect();
        seen.dedup();
        match seen.len() {
            0 => None,
            1 => seen.pop(),
            _ => Some(format!("sentinels differ: {}", seen.join(" / "))),
        }
    }
}

/// The `haproxy` attribute, as declared.
fn balancers_of(inst: &Instance) -> Option<balancers::Balancers> {
    let Some(Value::Map(m)) = inst.attr("haproxy").and_then(|a| a.known()) else {
        return None;
    };
    let text = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let hosts = match m.get("hosts") {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    Some(balancers::Balancers {
        hosts,
        backend: text("backend"),
        socket: text("socket"),
    })
}

/// The members of a group as read, in member order.
fn members_of(g: &Group, out: &MemberOutputs) -> Result<Vec<Member>, String> {
    g.members
        .iter()
        .map(|h| {
            let o = out
                .on(h)
                .ok_or_else(|| format!("member {h} was not read"))?;
            Ok(read::parse(
                h,
                g.address(h),
                &String::from_utf8_lossy(&o.stdout),
            ))
        })
        .collect()
}

/// What the plan sees of a group; an error when a Redis cannot be read (see `assess`).
fn observation(g: &Group, members: &[Member]) -> Result<Observation, String> {
    let verdict = assess(members)?;
    let mut attrs = BTreeMap::new();
    attrs.insert("topology".to_string(), Value::Text(verdict.topology()));
    if let Some(s) = g.settings_seen(members) {
        attrs.insert("settings".to_string(), Value::Text(s));
    }
    let exists = verdict != Verdict::New;
    // The topology in sync reads the same whichever host is master, so the plan shows no
    // change: the live line names the master. Otherwise the change itself says what is wrong.
    let live = match &verdict {
        Verdict::Healthy { summary, .. } => Some(summary.clone()),
        _ => None,
    };
    Ok(Observation {
        exists,
        attrs,
        note: (!exists).then(|| format!("no sentinel monitors `{}` yet", g.name)),
        live,
        ..Default::default()
    })
}

#[async_trait]
impl Provider for SentinelProvider {
    fn kind(&self) -> &'static str {
        "sentinel"
    }

    fn placement(&self) -> Placement {
        Placement::Group
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare::declare(decl)
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        Group::from(inst).ok().map(|g| read::script(&g))
    }

    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let g = Group::from(inst)?;
        if !g.members.contains(&g.initial_master) {
            return Err(format!(
                "`initial_master` {} is not one of the group's hosts ({})",
                g.initial_master,
                g.members.join(", ")
            ));
        }
        observation(&g, &members_of(&g, out)?)
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        repair::ensure(cx).await
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        repair::ensure(cx).await
    }

    async fn delete(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        repair::forget(cx).await
    }
}
