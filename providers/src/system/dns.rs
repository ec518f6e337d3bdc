//! The resolvers part of `system`: systemd-resolved's global DNS (a drop-in, then a restart) when
//! it runs, else the `nameserver` lines of /etc/resolv.conf (other lines kept).

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{ProviderError, Transport, shell_quote};

use super::probe::{Facts, PATH};
use super::{list, run_checked};

/// True when systemd-resolved is the host's resolver.
pub const RESOLVED_ACTIVE: &str = "{ [ -d /run/systemd/system ] && \
     systemctl is-active --quiet systemd-resolved 2>/dev/null; }";

/// kz's drop-in for systemd-resolved.
pub const RESOLVED_DROP_IN: &str = "/etc/systemd/resolved.conf.d/90-kz.conf";

/// The resolvers in use, in order.
pub fn observe(facts: &Facts) -> Value {
    let mut lines = facts.section("dns").lines();
    let _source = lines.next();
    Value::List(
        lines
            .flat_map(str::split_whitespace)
            .map(|a| Value::Text(a.to_string()))
            .collect(),
    )
}

pub async fn apply(inst: &Instance, t: &dyn Transport) -> Result<(), ProviderError> {
    let addrs: Vec<String> = list(inst, "dns").iter().map(|a| shell_quote(a)).collect();
    let addrs = addrs.join(" ");
    let dir = RESOLVED_DROP_IN.rsplit_once('/').map_or("/", |(d, _)| d);
    // In a container /etc/resolv.conf is often a bind mount, which a rename cannot replace: the
    // file is then written in place; elsewhere it is renamed over, so a reader never sees half.
    // A write that fails half-way leaves no temporary file behind (the trap).
    let script = format!(
        "{PATH}\nset -e\n\
         trap 'rm -f {RESOLVED_DROP_IN}.kz /etc/.resolv.conf.kz' EXIT\n\
         if {RESOLVED_ACTIVE}; then\n\
         mkdir -p {dir}\n\
         printf '# Written by kz.\\n[Resolve]\\nDNS=%s\\n' \"$(echo {addrs})\" > {RESOLVED_DROP_IN}.kz\n\
         mv {RESOLVED_DROP_IN}.kz {RESOLVED_DROP_IN}\n\
         systemctl restart systemd-resolved\n\
         else\n\
         {{ grep -v '^[[:space:]]*nameserver' /etc/resolv.conf 2>/dev/null || true; printf 'nameserver %s\\n' {addrs}; }} > /etc/.resolv.conf.kz\n\
         if grep -q ' /etc/resolv.conf ' /proc/self/mountinfo 2>/dev/null; then\n\
         cat /etc/.resolv.conf.kz > /etc/resolv.conf; rm -f /etc/.resolv.conf.kz\n\
         else chmod 0644 /etc/.resolv.conf.kz; mv -f /etc/.resolv.conf.kz /etc/resolv.conf; fi\n\
         fi\n"
    );
    run_checked(t, "dns", script, t.command_timeout()).await?;
    Ok(())
}
