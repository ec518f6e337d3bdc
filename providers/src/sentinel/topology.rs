//! The decision: from every member's Redis and Sentinel, what the group is (healthy, a failover
//! in progress, no master, split brain, a phantom master) and what kz would do, choosing the
//! replica to promote as Sentinel itself would.

use std::collections::BTreeMap;

use super::read::{Member, Redis, Sentinel, SentinelView};

/// The `topology` a healthy group shows, whichever host is its master: a legitimate failover
/// is never a change.
pub const HEALTHY: &str = "one master, sentinels agree";

/// The node kz would make master, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub host: String,
    pub offset: i64,
    /// How many of the eligible nodes share its replication id (its history).
    pub shared: usize,
    pub eligible: usize,
    /// It already says `role:master`.
    pub is_master: bool,
}

impl Candidate {
    fn text(&self) -> String {
        let history = if self.shared == self.eligible {
            "same replication id".to_string()
        } else {
            format!(
                "replication id of {} of {} nodes",
                self.shared, self.eligible
            )
        };
        format!(
            "would {} {} (offset {}, {history})",
            if self.is_master { "keep" } else { "promote" },
            self.host,
            self.offset
        )
    }
}

/// What the group is, and what apply does about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No sentinel monitors the group and no Redis follows another: a group to make.
    New,
    /// The sentinels agree on a master that says `role:master`; `summary` describes it.
    Healthy { master: String, summary: String },
    /// A failover is under way: apply waits up to `failover-timeout`.
    Wait { text: String },
    /// The sentinels' master is sound, but some sentinels lack the group (or name another):
    /// apply registers it there, and points `strays` (nodes not following it) at `master`.
    Align {
        master: String,
        strays: Vec<String>,
        unregistered: Vec<String>,
        text: String,
    },
    /// No usable master: apply asks the sentinels to fail over, else promotes `candidate`.
    Promote {
        candidate: Option<Candidate>,
        text: String,
    },
}

impl Verdict {
    /// The `topology` attribute as observed.
    pub fn topology(&self) -> String {
        match self {
            Verdict::New => "no sentinel monitors the group".into(),
            Verdict::Healthy { .. } => HEALTHY.into(),
            Verdict::Wait { text }
            | Verdict::Align { text, .. }
            | Verdict::Promote { text, .. } => text.clone(),
        }
    }
}

/// More than half of `n`.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

fn monitoring(members: &[Member]) -> Vec<(&Member, &SentinelView)> {
    members
        .iter()
        .filter_map(|m| match &m.sentinel {
            Sentinel::Monitoring(v) => Some((m, v)),
            _ => None,
        })
        .collect()
}

fn up(members: &[Member]) -> Vec<(&Member, &Redis)> {
    members
        .iter()
        .filter_map(|m| m.redis.as_ref().ok().map(|r| (m, r)))
        .collect()
}

/// The host a Sentinel or a replica names by address, or the address itself.
fn host_at<'a>(members: &'a [Member], ip: &'a str) -> &'a str {
    members
        .iter()
        .find(|m| m.address == ip)
        .map_or(ip, |m| m.host.as_str())
}

/// The master most sentinels name, with their count.
pub fn named(members: &[Member]) -> Option<(String, usize)> {
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, v) in monitoring(members) {
        *votes.entry(host_at(members, &v.ip)).or_default() += 1;
    }
    votes
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(h, n)| (h.to_string(), n))
}

/// What the sentinels say, in a few words.
fn sentinels_text(members: &[Member]) -> String {
    let seen = monitoring(members);
    let down: Vec<&str> = members
        .iter()
        .filter(|m| matches!(m.sentinel, Sentinel::Down(_)))
        .map(|m| m.host.as_str())
        .collect();
    let mut out = match named(members) {
        None => "no sentinel monitors the group".to_string(),
        Some((h, n)) if n == seen.len() => format!("{n} sentinels name {h}"),
        Some(_) => {
            let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, v) in &seen {
                *votes.entry(host_at(members, &v.ip)).or_default() += 1;
            }
            let parts: Vec<String> = votes.iter().map(|(h, n)| format!("{h} ({n})")).collect();
            format!("sentinels disagree: {}", parts.join(", "))
        }
    };
    if !down.is_empty() {
        out.push_str(&format!("; no sentinel answers on {}", down.join(", ")));
    }
    out
}

/// The node Sentinel would promote: among nodes that answer and may be promoted (priority not
/// 0), those sharing the most common replication id (offsets compare only within one history),
/// then the lowest replica priority, the highest offset, the lowest run id.
pub fn choose(members: &[Member]) -> Option<Candidate> {
    let eligible: Vec<(&Member, &Redis)> = up(members)
        .into_iter()
        .filter(|(_, r)| r.priority != 0)
        .collect();
    let in_history = |r: &Redis, id: &str| r.replid == id || r.replid2 == id;
    let history = eligible
        .iter()
        .map(|(_, r)| r.replid.as_str())
        .max_by_key(|id| {
            let group = eligible.iter().filter(|(_, r)| in_history(r, id));
            let max = group.clone().map(|(_, r)| r.offset).max().unwrap_or(0);
            (group.count(), max)
        })?;
    let group: Vec<&(&Member, &Redis)> = eligible
        .iter()
        .filter(|(_, r)| in_history(r, history))
        .collect();
    let best = group.iter().min_by(|(_, a), (_, b)| {
        a.priority
            .cmp(&b.priority)
            .then(b.offset.cmp(&a.offset))
            .then(a.run_id.cmp(&b.run_id))
    })?;
    Some(Candidate {
        host: best.0.host.clone(),
        offset: best.1.offset,
        shared: group.len(),
        eligible: eligible.len(),
        is_master: best.1.master,
    })
}

/// The roles of the nodes, in a few words: "3 replicas, redis-03 down".
fn nodes_text(members: &[Member]) -> String {
    let replicas = up(members).iter().filter(|(_, r)| !r.master).count();
    let down: Vec<&str> = members
        .iter()
        .filter(|m| m.redis.is_err())
        .map(|m| m.host.as_str())
        .collect();
    let mut out = format!("{replicas} replica{}", if replicas == 1 { "" } else { "s" });
    if !down.is_empty() {
        out.push_str(&format!(", {} down", down.join(", ")));
    }
    out
}

/// Whether a Redis that could not be read may count as down. A master the sentinels agree on is
/// down only when they say so (`s_down` or `o_down`); another node only when nothing listens on
/// its port. A wrong password or a hung server is no reason to fail over a master that may
/// serve well: the read is then an error, and nothing is repaired on a guess.
fn check_reads(members: &[Member], agreed: Option<&str>) -> Result<(), String> {
    for m in members {
        let Err(e) = &m.redis else { continue };
        if agreed == Some(m.host.as_str()) {
            let flagged = monitoring(members).iter().any(|(_, v)| {
                v.ip == m.address && v.flags.iter().any(|f| f == "s_down" || f == "o_down")
            });
            if !flagged {
                return Err(format!(
                    "cannot read Redis on {}: {e}; the sentinels name it master and none \
                     considers it down (s_down, o_down), so kz changes nothing",
                    m.host
                ));
            }
        } else if !e.refused {
            return Err(format!("cannot read Redis on {}: {e}", m.host));
        }
    }
    Ok(())
}

/// The whole decision, or why the group cannot be judged (a Redis kz cannot read).
pub fn assess(members: &[Member]) -> Result<Verdict, String> {
    let seen = monitoring(members);
    let nodes = up(members);
    let agreed = named(members)
        .filter(|(_, n)| *n >= majority(members.len()))
        .map(|(h, _)| h);
    if let Some((m, _)) = seen.iter().find(|(_, v)| v.failover_in_progress()) {
        return Ok(Verdict::Wait {
            text: format!(
                "FAILOVER IN PROGRESS (sentinel on {}); {}; would wait for it",
                m.host,
                sentinels_text(members)
            ),
        });
    }
    check_reads(members, agreed.as_deref())?;
    if seen.is_empty() && nodes.iter().all(|(_, r)| r.master) {
        return Ok(Verdict::New);
    }
    let masters: Vec<&str> = nodes
        .iter()
        .filter(|(_, r)| r.master)
        .map(|(m, _)| m.host.as_str())
        .collect();
    if let Some(master) = agreed.filter(|h| masters.contains(&h.as_str())) {
        return Ok(settled(members, master));
    }
    let candidate = choose(members);
    let head = match masters.len() {
        0 => format!("NO MASTER: {}", nodes_text(members)),
        1 => format!(
            "PHANTOM MASTER: {} says master, but {}",
            masters[0],
            sentinels_text(members)
        ),
        _ => format!("SPLIT BRAIN: {} say master", masters.join(" and ")),
    };
    let sentinels = if masters.len() == 1 {
        String::new()
    } else {
        format!("; {}", sentinels_text(members))
    };
    let then = candidate
        .as_ref()
        .map_or("no node can be promoted".to_string(), Candidate::text);
    Ok(Verdict::Promote {
        candidate,
        text: format!("{head}{sentinels}; {then}"),
    })
}

/// The sentinels agree on `master`, which says `role:master`: healthy, unless some sentinels lack
/// the group.
fn settled(members: &[Member], master: String) -> Verdict {
    let address = members
        .iter()
        .find(|m| m.host == master)
        .map_or("", |m| m.address.as_str());
    let nodes = up(members);
    let strays: Vec<String> = nodes
        .iter()
        .filter(|(m, r)| m.host != master && (r.master || r.master_host != address))
        .map(|(m, _)| m.host.clone())
        .collect();
    let unregistered: Vec<String> = members
        .iter()
        .filter(|m| !matches!(&m.sentinel, Sentinel::Monitoring(v) if v.ip == address))
        .map(|m| m.host.clone())
        .collect();
    // Every other member counts, a stopped one too: "1 of 2 in sync" says one is missing.
    let replicas = members.len().saturating_sub(1);
    let in_sync = nodes
        .iter()
        .filter(|(m, r)| m.host != master && !r.master && r.link_up && r.master_host == address)
        .count();
    let agree = members.len() - unregistered.len();
    let mut summary = format!(
        "master {master}, {in_sync} of {replicas} replica{} in sync, {agree} sentinel{} agree",
        if replicas == 1 { "" } else { "s" },
        if agree == 1 { "" } else { "s" }
    );
    let down: Vec<&str> = members
        .iter()
        .filter(|m| m.redis.is_err())
        .map(|m| m.host.as_str())
        .collect();
    if !down.is_empty() {
        summary.push_str(&format!("; Redis down on {}", down.join(", ")));
    }
    // Nodes that claim master or follow elsewhere while the sentinels agree are Sentinel's to
    // reconfigure (a restarted old master says `role:master` until it is demoted): kz only says so.
    if !strays.is_empty() {
        summary.push_str(&format!(
            "; {} not following {master} yet",
            strays.join(", ")
        ));
    }
    if unregistered.is_empty() {
        return Verdict::Healthy { master, summary };
    }
    let text = format!(
        "{summary}; would register the group on the sentinel{} of {}",
        if unregistered.len() == 1 { "" } else { "s" },
        unregistered.join(", ")
    );
    Verdict::Align {
        master,
        strays,
        unregistered,
        text,
    }
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
