//! The packages part of `system`: Debian packages present or absent, read with one
//! `dpkg-query`, changed with `apt-get` (non-interactive, waiting for the dpkg lock within a
//! deadline, `apt-get update` only when an install needs it and the lists are old).

use std::collections::BTreeSet;
use std::time::Duration;

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{ApplyCtx, ProviderError, Transport, shell_quote};

use super::probe::{Facts, PATH};
use super::{list, run_checked};

/// Package lists younger than this are fresh enough to install from without `apt-get update`.
const LISTS_FRESH_MINUTES: u32 = 360;

/// What the host has of the declared packages, as `NAME present|absent` lines.
pub fn observe(inst: &Instance, facts: &Facts) -> Value {
    let installed: BTreeSet<&str> = facts
        .section("packages")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(name, _)| name)
        .collect();
    Value::List(
        list(inst, "packages")
            .iter()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, _)| {
                let bare = name.split(':').next().unwrap_or(name);
                let state = if installed.contains(bare) {
                    "present"
                } else {
                    "absent"
                };
                Value::Text(format!("{name} {state}"))
            })
            .collect(),
    )
}

/// The script that installs what is missing and removes what must be absent. The dpkg lock (held
/// by unattended upgrades, say) is waited for, up to `lock_wait`, by apt itself.
fn script(present: &[String], absent: &[String], lock_wait: Duration) -> String {
    let q = |v: &[String]| {
        v.iter()
            .map(|p| shell_quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // A configuration file kz (or an operator) wrote before its package arrived, such as
    // /etc/default/haproxy, would make dpkg ask which to keep and fail on the closed stdin:
    // keep the file on the host, as Ansible's apt module does by default.
    let lock = format!(
        "-o DPkg::Lock::Timeout={} -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold",
        lock_wait.as_secs().max(1)
    );
    format!(
        "{PATH}\nexport DEBIAN_FRONTEND=noninteractive\n\
         has() {{ dpkg-query -W -f='${{db:Status-Status}}\\n' \"$1\" 2>/dev/null | grep -qx installed; }}\n\
         missing=; for p in {present}; do has \"$p\" || missing=\"$missing $p\"; done\n\
         extra=; for p in {absent}; do has \"$p\" && extra=\"$extra $p\"; done\n\
         apt() {{ apt-get -y -q {lock} \"$@\" </dev/null; }}\n\
         if [ -n \"$missing\" ]; then\n\
           # A package an earlier run left half-configured is finished first (`apt-get -f install`, which waits for the dpkg lock too).\n\
           if [ -n \"$(dpkg --audit 2>/dev/null)\" ]; then apt install -f >&2 || exit 1; fi\n\
           if ! find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -{LISTS_FRESH_MINUTES} 2>/dev/null | grep -q .; then\n\
             echo 'kz: apt-get update (package lists are old)'; apt update >&2 || exit 1\n\
           fi\n\
           # Lists may name versions the mirror no longer has: update once and try again.\n\
           apt install --no-install-recommends $missing || {{ apt update >&2 && apt install --no-install-recommends $missing; }} || exit 1\n\
         fi\n\
         if [ -n \"$extra\" ]; then apt remove $extra || exit 1; fi\n",
        present = if present.is_empty() {
            String::new()
        } else {
            q(present)
        },
        absent = if absent.is_empty() {
            String::new()
        } else {
            q(absent)
        },
    )
}

pub async fn apply(cx: &ApplyCtx, t: &dyn Transport) -> Result<(), ProviderError> {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for l in list(cx.instance(), "packages") {
        match l.split_once(' ') {
            Some((n, "absent")) => absent.push(n.to_string()),
            Some((n, _)) => present.push(n.to_string()),
            None => {}
        }
    }
    cx.progress(format!(
        "packages: {} present, {} absent",
        present.len(),
        absent.len()
    ));
    // Half of the command's deadline for the lock, the rest for the work.
    let timeout = t.command_timeout();
    run_checked(
        t,
        "packages",
        script(&present, &absent, timeout / 2),
        timeout,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_script_waits_for_the_lock_and_updates_only_to_install() {
        let s = script(
            &["curl".into()],
            &["telnet".into()],
            Duration::from_secs(300),
        );
        assert!(s.contains("-o DPkg::Lock::Timeout=300"));
        assert!(s.contains("for p in 'curl'; do"));
        assert!(s.contains("for p in 'telnet'; do"));
        let update = s.find("apt update").unwrap();
        assert!(
            update > s.find("if [ -n \"$missing\" ]").unwrap(),
            "update only when installing"
        );
        assert!(s.contains("DEBIAN_FRONTEND=noninteractive"));
    }
}
