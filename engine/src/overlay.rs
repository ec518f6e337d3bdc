//! A host overlay: one run reaches the stack's hosts somewhere else than the stack says (the lab's
//! disposable hosts). The loader applies it in one place, right after reading the inventory, so
//! `${host.address}` and `${hosts.NAME.address}` are the overlay's; hosts it has no entry for are
//! left out of the run with everything on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Instance, Module, SshSettings, TransportKind, Value};

/// Where and how to reach each host the overlay covers.
#[derive(Debug, Clone, Default)]
pub struct HostOverlay {
    /// What the overlay is, in messages ("the lab").
    pub name: String,
    pub hosts: BTreeMap<String, HostReach>,
    /// Keep the instances behind an API: the binary sets it only when the API is a stand-in
    /// on this machine's loopback (so a lab run never reaches a real API).
    pub keep_api: bool,
    /// How to give the run a stand-in of the API, added to the reason instances behind it are
    /// left out (the binary knows its variable: `set KZ_HCLOUD_ENDPOINT to its loopback URL`).
    pub api_hint: String,
    /// Leave out the modules declared `lab = { skip = "..." }` (set by the lab's overlay).
    pub skip_lab_modules: bool,
    /// The one network every `[networks]` range of the stack stands for under the overlay (the
    /// lab's subnet), so `${networks.private}` in a firewall rule or pg_hba.conf follows the hosts.
    pub network: Option<String>,
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
    /// The run is under an overlay (the lab): the binary then gives it providers that reach an
    /// API only through a stand-in on this machine.
    pub under_overlay: bool,
    pub hosts: Vec<String>,
    pub instances: usize,
    /// Modules skipped in the lab (`lab = { skip = "..." }`), in name order.
    pub modules: Vec<SkippedModule>,
    /// Resources skipped in the lab one by one (their own `lab = { skip = "..." }`, or behind an
    /// API with no stand-in on this machine), in module order; those of a skipped module are not
    /// repeated here.
    pub resources: Vec<SkippedResource>,
    /// Resource types behind an API this run does not reach (no stand-in of it on this machine),
    /// with why: what the state records of them is left alone, neither read nor deleted.
    pub api_kinds: Vec<(String, String)>,
}

impl LeftOut {
    /// Why the check (or other resource) at `address` (`MODULE.KIND.NAME`) is not in this run:
    /// its module or itself is skipped in the lab.
    pub fn skip_reason(&self, address: &str) -> Option<String> {
        let module = address.split('.').next().unwrap_or_default();
        if let Some(m) = self.modules.iter().find(|m| m.module == module) {
            return Some(m.said());
        }
        self.resources
            .iter()
            .find(|r| r.address() == address)
            .map(SkippedResource::said)
    }

    /// Why a state record of type `kind` is left alone by this run (behind an API it does not
    /// reach), if it is.
    pub fn api_left_alone(&self, kind: &str) -> Option<&str> {
        self.api_kinds
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, why)| why.as_str())
    }

    /// Drops from `deletes` the state records this run leaves alone (those of skipped modules and
    /// resources, and those behind an API it does not reach), and says why for the last ones,
    /// whose declaration may be gone.
    pub fn keep_out_of_deletes(
        &self,
        deletes: &mut Vec<(&String, &kz_state::ResourceState)>,
        warnings: &mut Vec<String>,
    ) {
        deletes.retain(|(addr, r)| {
            let resource = format!("{}.{}.{}", r.module, r.kind, r.name);
            if self.skip_reason(&resource).is_some() {
                return false;
            }
            match self.api_left_alone(&r.kind) {
                Some(why) => {
                    warnings.push(format!("{addr} is left alone: {why}"));
                    false
                }
                None => true,
            }
        });
    }
}

/// One resource a lab run leaves out while its module runs, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedResource {
    pub module: String,
    /// `KIND.NAME`, as plans name resources within a module (`check.mariadb-via-lb`).
    pub resource: String,
    pub reason: String,
    /// How many of its instances were left out.
    pub instances: usize,
}

impl SkippedResource {
    /// `MODULE.KIND.NAME`.
    pub fn address(&self) -> String {
        format!("{}.{}", self.module, self.resource)
    }

    /// `skipped in the lab: REASON`.
    pub fn said(&self) -> String {
        format!("skipped in the lab: {}", self.reason)
    }
}

/// A module a lab run leaves out whole, why, and the modules that depend on it, which its
/// checks (absent) then do not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedModule {
    pub module: String,
    pub reason: String,
    /// How many of its instances were left out.
    pub instances: usize,
    /// Modules whose `depends_on` names it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<String>,
}

impl SkippedModule {
    /// `skipped in the lab: REASON`, as plan, apply, verify and drill say it.
    pub fn said(&self) -> String {
        format!("skipped in the lab: {}", self.reason)
    }

    /// `10_lb depends on 06_minio, skipped in the lab`, one line per dependent.
    pub fn dependent_notes(&self) -> Vec<String> {
        self.dependents
            .iter()
            .map(|d| format!("{d} depends on {}, skipped in the lab", self.module))
            .collect()
    }
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

    /// Leaves out every instance of the modules skipped in the lab (when this overlay skips
    /// them), and says which modules those were and which depend on them. Dependencies on what
    /// was left out are dropped by [`HostOverlay::filter_instances`], which runs next.
    pub(crate) fn skip_modules(
        &self,
        instances: &mut Vec<Instance>,
        modules: &BTreeMap<String, Module>,
    ) -> Vec<SkippedModule> {
        if !self.skip_lab_modules {
            return Vec::new();
        }
        let mut skipped = Vec::new();
        for m in modules.values() {
            let Some(reason) = &m.lab_skip else { continue };
            let before = instances.len();
            instances.retain(|i| i.address.module != m.name);
            let dependents = modules
                .values()
                .filter(|d| d.depends_on.contains(&m.name))
                .map(|d| d.name.clone())
                .collect();
            skipped.push(SkippedModule {
                module: m.name.clone(),
                reason: reason.clone(),
                instances: before - instances.len(),
                dependents,
            });
        }
        skipped
    }

    /// Leaves out the instances of each resource skipped on its own (`skips`: the
    /// resource's `MODULE.KIND.NAME` and why), and says which those were. Dependencies on them
    /// are dropped by [`HostOverlay::filter_instances`], which runs next.
    pub(crate) fn skip_resources(
        &self,
        instances: &mut Vec<Instance>,
        skips: &[(String, String)],
    ) -> Vec<SkippedResource> {
        let mut skipped = Vec::new();
        for (address, reason) in skips {
            let before = instances.len();
            instances.retain(|i| i.address.resource() != *address);
            let (module, resource) = address.split_once('.').unwrap_or((address, ""));
            if before > instances.len() {
                skipped.push(SkippedResource {
                    module: module.to_string(),
                    resource: resource.to_string(),
                    reason: reason.clone(),
                    instances: before - instances.len(),
                });
            }
        }
        skipped
    }

    /// Leaves out the instances on a left-out host.
    pub(crate) fn filter_instances(&self, instances: &mut Vec<Instance>, gone: &[String]) -> usize {
        let before = instances.len();
        instances.retain(|i| !i.hosts().any(|m| gone.iter().any(|g| g == m)));
        before - instances.len()
    }
}

/// After instances were left out (`all` holds every instance's dependencies from before): each
/// instance that stays waits for what a left-out one it depended on waited for, transitively, so
/// that leaving out a middle link (a skipped check between a container and a file) does not let
/// the file race the container; dependencies on what was left out are dropped.
pub(crate) fn reroute_dependencies(
    instances: &mut [Instance],
    all: &std::collections::HashMap<String, Vec<crate::model::Address>>,
) {
    use std::collections::HashSet;
    let kept: HashSet<String> = instances.iter().map(|i| i.address.to_string()).collect();
    for i in instances.iter_mut() {
        let mut out = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut todo: Vec<crate::model::Address> = std::mem::take(&mut i.depends_on);
        todo.reverse();
        while let Some(d) = todo.pop() {
            let key = d.to_string();
            if !seen.insert(key.clone()) {
                continue;
            }
            if kept.contains(&key) {
                out.push(d);
            } else if let Some(further) = all.get(&key) {
                todo.extend(further.iter().rev().cloned());
            }
        }
        i.depends_on = out;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::reroute_dependencies;
    use crate::model::{Address, Instance};

    fn addr(name: &str) -> Address {
        Address {
            module: "m".into(),
            kind: "check".into(),
            name: name.into(),
            host: Some("h".into()),
        }
    }

    fn inst(name: &str, deps: &[&str]) -> Instance {
        Instance {
            address: addr(name),
            members: Vec::new(),
            attrs: BTreeMap::new(),
            depends_on: deps.iter().map(|d| addr(d)).collect(),
            outputs: BTreeMap::new(),
            gate: None,
        }
    }

    /// file -> skipped check -> another skipped check -> container: the file waits for the
    /// container once both checks are left out, and for nothing that was left out.
    #[test]
    fn what_stays_waits_for_what_a_left_out_link_waited_for() {
        let all = [
            inst("container", &[]),
            inst("gone-1", &["gone-2"]),
            inst("gone-2", &["container", "gone-host"]),
            inst("gone-host", &[]),
            inst("file", &["gone-1", "container"]),
        ];
        let deps: HashMap<String, Vec<Address>> = all
            .iter()
            .map(|i| (i.address.to_string(), i.depends_on.clone()))
            .collect();
        let mut kept = vec![all[0].clone(), all[4].clone()];
        reroute_dependencies(&mut kept, &deps);
        assert_eq!(kept[1].depends_on, vec![addr("container")]);
        assert!(kept[0].depends_on.is_empty());
    }
}
