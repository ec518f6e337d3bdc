//! The one read of a `system`: a shell snippet, run in the host's batched read, that prints one
//! section per part (framed by marker lines), and the parsing of what it printed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kz_engine::model::Instance;
use kz_engine::provider::shell_quote;

use super::{SSHD_DROP_IN, list};

/// Starts a section of the read; no file kz reads has such a line.
const MARK: &str = "@@kz-system@@";

/// Where `ufw`, `sshd`, `sysctl` and `swapoff` live, whatever PATH the login gave.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A shell test that is true inside a container (podman, docker, systemd-nspawn, LXC).
pub const IN_CONTAINER: &str = "{ [ -f /run/.containerenv ] || [ -f /.dockerenv ] || \
     grep -qa 'container=' /proc/1/environ 2>/dev/null; }";

/// The read of one `system` instance: only the parts it declares.
pub fn script(inst: &Instance) -> String {
    let mut s = format!(
        "{PATH}\nmark() {{ printf '%s %s\\n' '{MARK}' \"$1\"; }}\n\
         mark container; if {IN_CONTAINER}; then echo yes; else echo no; fi\n\
         mark ssh; echo \"${{SSH_CONNECTION:-}}\"\n"
    );
    if inst.attr("packages").is_some() {
        let names: Vec<String> = list(inst, "packages")
            .iter()
            .filter_map(|l| l.split(' ').next())
            .map(shell_quote)
            .collect();
        s.push_str(&format!(
            "mark packages; dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {} 2>/dev/null\n",
            names.join(" ")
        ));
    }
    if inst.attr("swap").is_some() {
        s.push_str(
            "mark swaps; tail -n +2 /proc/swaps 2>/dev/null\n\
             mark fstab; awk '$1 !~ /^#/ && $3 == \"swap\"' /etc/fstab 2>/dev/null\n",
        );
    }
    if inst.attr("ufw").is_some() {
        s.push_str(
            "mark ufw; if command -v ufw >/dev/null 2>&1; then echo installed; \
             cat /etc/ufw/ufw.conf /etc/default/ufw 2>/dev/null | \
             grep -E '^(ENABLED|DEFAULT_INPUT_POLICY|DEFAULT_OUTPUT_POLICY)='; fi\n\
             mark ufw4; grep '^### tuple' /etc/ufw/user.rules 2>/dev/null\n\
             mark ufw6; grep '^### tuple' /etc/ufw/user6.rules 2>/dev/null\n",
        );
    }
    if inst.attr("sshd").is_some() {
        s.push_str(&format!(
            "mark sshd; if [ -f {SSHD_DROP_IN} ]; then echo present; cat {SSHD_DROP_IN}; else echo absent; fi\n"
        ));
    }
    if inst.attr("dns").is_some() {
        s.push_str(&format!(
            "mark dns; if {}; then echo resolved; sed -n 's/^DNS=//p' {} 2>/dev/null; \
             elif {IN_CONTAINER} && grep -q ' /etc/resolv.conf ' /proc/self/mountinfo 2>/dev/null; then echo runtime; \
             else echo resolv.conf; sed -n 's/^nameserver[[:space:]]*//p' /etc/resolv.conf 2>/dev/null; fi\n",
            super::dns::RESOLVED_ACTIVE,
            super::dns::RESOLVED_DROP_IN
        ));
    }
    if inst.attr("sysctl").is_some() {
        let keys: Vec<String> = super::sysctl::keys(inst)
            .iter()
            .map(|k| shell_quote(k))
            .collect();
        s.push_str(&format!(
            "mark sysctl; for k in {}; do f=/proc/sys/$(printf %s \"$k\" | tr . /); \
             if [ -r \"$f\" ]; then w=ro; [ -w \"$f\" ] && w=rw; \
             printf '%s %s %s\\n' \"$k\" \"$w\" \"$(tr -s '\\t ' '  ' < \"$f\")\"; \
             else printf '%s missing\\n' \"$k\"; fi; done\n\
             mark sysctlboot; sha256sum < {} 2>/dev/null || echo missing\n",
            keys.join(" "),
            shell_quote(&super::sysctl::path(inst))
        ));
    }
    s.push_str("true\n");
    s
}

/// What the read found, by section.
#[derive(Debug, Default)]
pub struct Facts {
    pub container: bool,
    /// The address kz connects from and the port it connects to (`$SSH_CONNECTION`): through a
    /// jump host, the jump host's address.
    pub ssh: Option<(IpAddr, u16)>,
    sections: BTreeMap<String, String>,
}

impl Facts {
    pub fn parse(text: &str) -> Facts {
        let mut sections: BTreeMap<String, String> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix(MARK).map(str::trim) {
                current = Some(name.to_string());
                sections.entry(name.to_string()).or_default();
            } else if let Some(c) = &current {
                let s = sections.entry(c.clone()).or_default();
                s.push_str(line);
                s.push('\n');
            }
        }
        let container = sections.get("container").is_some_and(|s| s.trim() == "yes");
        // SSH_CONNECTION: client address, client port, server address, server port.
        let ssh = sections.get("ssh").and_then(|s| {
            let f: Vec<&str> = s.split_whitespace().collect();
            match f.as_slice() {
                [client, _, _, port] => Some((client.parse().ok()?, port.parse().ok()?)),
                _ => None,
            }
        });
        Facts {
            container,
            ssh,
            sections,
        }
    }

    /// A section's text ("" when it is missing).
    pub fn section(&self, name: &str) -> &str {
        self.sections.get(name).map_or("", String::as_str)
    }

    /// Whether the read printed the section at all (a cut read lacks the last ones).
    pub fn has(&self, name: &str) -> bool {
        self.sections.contains_key(name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_the_ssh_connection_are_read() {
        let text = format!(
            "{MARK} container\nyes\n{MARK} ssh\n10.89.0.1 40022 10.89.0.10 22\n{MARK} sshd\nabsent\n{MARK} sysctl\n"
        );
        let f = Facts::parse(&text);
        assert!(f.container);
        assert_eq!(f.ssh, Some(("10.89.0.1".parse().unwrap(), 22)));
        assert_eq!(f.section("sshd"), "absent\n");
        assert!(f.has("sysctl"));
        assert_eq!(f.section("sysctl"), "");
        assert!(!f.has("dns"));
        let local = Facts::parse(&format!("{MARK} container\nno\n{MARK} ssh\n\n"));
        assert!(!local.container);
        assert_eq!(local.ssh, None);
    }
}
