//! A host overlay: one run reaches the stack's hosts somewhere else than the stack says (the lab's
//! disposable hosts). The loader applies it in one place, right after reading the inventory, so
//! `${host.address}` and `${hosts.NAME.address}` are the overlay's; hosts it has no entry for are
//! left out of the run with everything on them.

use std::collections::BTreeMap;

use crate::model::{Instance, SshSettings, TransportKind, Value};

/// Where and how to reach each host the overlay covers.
#[derive(Debug, Clone, Default)]
pub struct HostOverlay {
    /// What the overlay is, in messages ("the lab").
    pub name: String,
    pub hosts: BTreeMap<String, HostReach>,
    /// Keep the instances behind an API: the binary sets it only when the API is a stand-in
    /// on this machine's loopback (so a lab run never reaches a real API).
    pub keep_api: bool,
}

/// One host's address and SSH settings under the overlay (user, port, keys, known_hosts, no jump
/// host; deadlines and session limits stay the stack's).
#[derive(Debug, Clone)]
pub struct HostReach {
    pub address: String,
    pub ssh: SshSettings,
}

/// What a run under an overlay leaves out of the stack.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub hosts: Vec<String>,
    pub instances: usize,
}

const MISSING_PREFIX: &str = "kz-overlay-has-no-host-";

/// The address given, under an overlay, to a host it has no entry for: a value that uses it is
/// refused, never sent to an overlay host pointing at the real machine.
pub fn missing_host_marker(host: &str) -> String {
    format!("{MISSING_PREFIX}{host}")
}

/// The host whose missing-host marker a value holds, if any.
pub(crate) fn uses_missing_host(v: &Value) -> Option<String> {
    let find = |s: &str| {
        let at = s.find(MISSING_PREFIX)? + MISSING_PREFIX.len();
        let name: String = s[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        Some(name)
    };
    v.texts().into_iter().find_map(find)
}

impl HostOverlay {
    /// Points each covered host at the overlay (address, SSH, transport) and marks the others;
    /// returns the names of the hosts left out.
    pub(crate) fn apply_to_hosts(
        &self,
        hosts: &mut BTreeMap<String, crate::model::Host>,
    ) -> Vec<String> {
        let mut left_out = Vec::new();
        for h in hosts.values_mut() {
            match self.hosts.get(&h.name) {
                Some(r) => {
                    // The overlay says who and where; the stack keeps its deadlines and limits.
                    let own = &h.ssh;
                    h.ssh = SshSettings {
                        connect_timeout: own.connect_timeout,
                        command_timeout: own.command_timeout,
                        keepalive: own.keepalive,
                        max_sessions: own.max_sessions,
                        ..r.ssh.clone()
                    };
                    h.address = r.address.clone();
                    h.transport = TransportKind::Ssh;
                }
                None => {
                    h.address = missing_host_marker(&h.name);
                    left_out.push(h.name.clone());
                }
            }
        }
        left_out
    }

    /// Leaves out the instances on a left-out host, and those behind an API (an overlay has
    /// none, unless `keep_api`); keeps dependencies only on what stays.
    pub(crate) fn filter_instances(&self, instances: &mut Vec<Instance>, gone: &[String]) -> usize {
        let before = instances.len();
        instances.retain(|i| {
            (self.keep_api || i.hosts().next().is_some())
                && !i.hosts().any(|m| gone.iter().any(|g| g == m))
        });
        let kept: std::collections::HashSet<String> =
            instances.iter().map(|i| i.address.to_string()).collect();
        for i in instances.iter_mut() {
            i.depends_on.retain(|d| kept.contains(&d.to_string()));
        }
        before - instances.len()
    }
}
