//! The lab overlay: how `--lab` points a stack at its disposable lab hosts instead of the real ones.
//!
//! `kz lab up DIR` writes `DIR/.kz/lab/lab.json` (this [`LabOverlay`]), the lab's SSH key and its
//! own known_hosts. With `--lab`, every host of the stack is reached over SSH at its lab address,
//! as root with the lab key, verified against the lab's known_hosts, and the state is the lab's
//! own file: lab state never mixes with the real one. Before anything connects, every address is
//! checked to lie inside the lab network, so a lab run cannot reach a production server.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{SshSettings, Stack};
use crate::overlay::{HostOverlay, HostReach};

/// `DIR/.kz/lab`.
pub fn lab_dir(stack_dir: &Path) -> PathBuf {
    stack_dir.join(".kz").join("lab")
}

/// What `kz lab up` made, as `lab.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabOverlay {
    /// The stack the lab was made for.
    pub stack: String,
    /// The podman network of the lab, and its IPv4 subnet (`10.89.3.0/24`).
    pub network: String,
    pub subnet: String,
    /// Lab hosts by stack host name.
    pub hosts: BTreeMap<String, LabHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabHost {
    /// The podman container.
    pub container: String,
    pub address: String,
}

impl LabOverlay {
    pub fn path(stack_dir: &Path) -> PathBuf {
        lab_dir(stack_dir).join("lab.json")
    }
    pub fn key_path(stack_dir: &Path) -> PathBuf {
        lab_dir(stack_dir).join("id_ed25519")
    }
    pub fn known_hosts_path(stack_dir: &Path) -> PathBuf {
        lab_dir(stack_dir).join("known_hosts")
    }

    /// The overlay of the stack in `stack_dir`, or an error saying how to make one.
    pub fn load(stack_dir: &Path) -> Result<LabOverlay, String> {
        let path = LabOverlay::path(stack_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "no lab for this stack: run `kz lab up {}` first",
                    stack_dir.display()
                ));
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: {e} (remove the lab with `kz lab down {}` and make it again)",
                path.display(),
                stack_dir.display()
            )
        })
    }

    /// The overlay a lab run loads the stack of `stack_dir` with: each lab host's address, as
    /// root over SSH with the lab's key, verified against the lab's known_hosts. Refused when the
    /// lab network is not a private range or a host lies outside it, so a lab run cannot reach a
    /// production server.
    pub fn host_overlay(&self, stack_dir: &Path) -> Result<HostOverlay, String> {
        if !lab_subnet_ok(&self.subnet) {
            return Err(format!(
                "refusing to use the lab: its network {} (in {}) is not a private range of /16 to /30",
                self.subnet,
                LabOverlay::path(stack_dir).display()
            ));
        }
        let key = LabOverlay::key_path(stack_dir);
        let known_hosts = LabOverlay::known_hosts_path(stack_dir);
        let mut hosts = BTreeMap::new();
        for (name, lab) in &self.hosts {
            if !in_subnet(&lab.address, &self.subnet) {
                return Err(format!(
                    "refusing to use the lab: host `{name}` would be reached at {}, outside the lab network {}",
                    lab.address, self.subnet
                ));
            }
            let ssh = SshSettings {
                user: "root".into(),
                port: 22,
                identity: vec![key.display().to_string()],
                known_hosts: Some(known_hosts.display().to_string()),
                jump: None,
                accept_new_host_keys: false,
                ..SshSettings::default()
            };
            hosts.insert(
                name.clone(),
                HostReach {
                    address: lab.address.clone(),
                    ssh,
                },
            );
        }
        Ok(HostOverlay {
            name: "the lab".into(),
            hosts,
            keep_api: false,
            api_hint: String::new(),
            // Software the lab cannot install (no Debian package) is declared skipped there.
            skip_lab_modules: true,
            network: Some(self.subnet.clone()),
        })
    }

    /// Refuses a lab made for another stack, and a check that would look at an address outside
    /// the lab (a load balancer's 10.0.0.10 written in the stack): host addresses are the lab's,
    /// but a check's own `address` or `url` is the stack's, and a lab run must reach nothing else.
    pub fn check_stack(&self, stack: &Stack) -> Result<(), String> {
        if stack.name != self.stack {
            return Err(format!(
                "the lab in {} was made for stack `{}`, not `{}`",
                lab_dir(&stack.dir).display(),
                self.stack,
                stack.name
            ));
        }
        for inst in stack.instances.iter().filter(|i| i.gate.is_some()) {
            let targets = [inst.text("address"), inst.text("url").and_then(url_host)];
            for target in targets.into_iter().flatten() {
                if !self.inside(target) {
                    return Err(format!(
                        "refusing to use the lab: {} would reach {target}, outside the lab network {} \
                         (tell it where to look in the lab with `lab = {{ address = \"...\" }}`, \
                         or leave it out there with `lab = {{ skip = \"why\" }}`)",
                        inst.address, self.subnet
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a lab run may reach `host`: this machine's loopback, or a lab host.
    fn inside(&self, host: &str) -> bool {
        host == "localhost"
            || host
                .parse::<Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback() || in_subnet(host, &self.subnet))
    }
}

/// The host of a URL (`http://10.0.0.5:8080/x` -> `10.0.0.5`), brackets kept off an IPv6 one.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    authority.split(':').next()
}

/// An IPv4 range such as `10.89.3.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: Ipv4Addr,
    bits: u32,
}

impl Cidr {
    pub fn parse(cidr: &str) -> Option<Cidr> {
        let (net, bits) = cidr.split_once('/')?;
        // u32's parser takes a leading `+`: `10.0.0.0/+16` is no range to pass on to UFW.
        if !bits.bytes().all(|b| b.is_ascii_digit()) || bits.is_empty() {
            return None;
        }
        let (net, bits) = (net.parse().ok()?, bits.parse().ok()?);
        (bits <= 32).then_some(Cidr { net, bits })
    }

    fn mask(self) -> u32 {
        if self.bits == 0 {
            0
        } else {
            u32::MAX << (32 - self.bits)
        }
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.net) & self.mask()
    }

    /// Whether it is written with its host bits zero (`10.0.0.0/16`, not `10.0.0.7/16`).
    pub fn is_network_address(self) -> bool {
        u32::from(self.net) & !self.mask() == 0
    }

    /// How many addresses it holds.
    pub fn size(self) -> u64 {
        1u64 << (32 - self.bits)
    }

    /// The address `offset` places after the start of the range.
    pub fn nth(self, offset: u64) -> Option<Ipv4Addr> {
        let offset = u32::try_from(offset).ok()?;
        (u64::from(offset) < self.size())
            .then(|| Ipv4Addr::from((u32::from(self.net) & self.mask()) + offset))
    }
}

/// Whether `cidr` can be a lab network: a private IPv4 range (RFC 1918) no wider than a /16, so a
/// hand-edited `lab.json` cannot widen the lab to the world.
fn lab_subnet_ok(cidr: &str) -> bool {
    let Some(c) = Cidr::parse(cidr) else {
        return false;
    };
    (16..=30).contains(&c.bits)
        && ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
            .iter()
            .filter_map(|p| Cidr::parse(p))
            .any(|private| private.contains(c.net))
}

/// Whether an IPv4 `address` is a host of `cidr` (`10.89.3.0/24`): inside it, and neither its
/// network address, its gateway (the first host, the machine itself) nor its broadcast address.
pub fn in_subnet(address: &str, cidr: &str) -> bool {
    let (Ok(addr), Some(c)) = (address.parse::<Ipv4Addr>(), Cidr::parse(cidr)) else {
        return false;
    };
    if !c.contains(addr) {
        return false;
    }
    if c.bits >= 31 {
        return true;
    }
    let host = u32::from(addr) & !c.mask();
    host > 1 && host != !c.mask()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_s_host_is_found() {
        assert_eq!(url_host("http://10.0.0.5/"), Some("10.0.0.5"));
        assert_eq!(url_host("https://u@10.0.0.6:8443/x?y"), Some("10.0.0.6"));
        assert_eq!(url_host("http://[::1]:80/"), Some("::1"));
        assert_eq!(url_host("localhost:8008"), Some("localhost"));
    }

    #[test]
    fn only_addresses_inside_the_lab_subnet_pass() {
        assert!(in_subnet("10.89.3.17", "10.89.3.0/24"));
        // Not the network, the gateway (this machine) or the broadcast address.
        assert!(!in_subnet("10.89.3.0", "10.89.3.0/24"));
        assert!(!in_subnet("10.89.3.1", "10.89.3.0/24"));
        assert!(!in_subnet("10.89.3.255", "10.89.3.0/24"));
        assert!(lab_subnet_ok("10.89.3.0/24"));
        assert!(!lab_subnet_ok("0.0.0.0/0"));
        assert!(!lab_subnet_ok("10.0.0.0/8"));
        assert!(!lab_subnet_ok("91.98.128.0/24"));
        let c = Cidr::parse("10.89.3.0/24").expect("a valid range");
        assert_eq!(c.size(), 256);
        assert_eq!(c.nth(10), Some(Ipv4Addr::new(10, 89, 3, 10)));
        assert_eq!(c.nth(256), None);
        assert!(!in_subnet("10.0.0.10", "10.89.3.0/24"));
        assert!(!in_subnet("91.98.128.153", "10.89.3.0/24"));
        assert!(!in_subnet("lab-host", "10.89.3.0/24"));
        assert!(!in_subnet("10.89.3.17", "10.89.3.0"));
        assert!(in_subnet("10.89.200.1", "10.89.0.0/16"));
    }
}
