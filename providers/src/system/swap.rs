//! The swap part of `system`: swap off now (`/proc/swaps` empty) and at boot (no active swap
//! line in `/etc/fstab`). A container cannot change it: not applicable there.

use std::time::Duration;

use kz_engine::model::Value;
use kz_engine::provider::{ProviderError, Transport};

use super::probe::{Facts, IN_CONTAINER, PATH};
use super::run_checked;

/// `off`, or `on` with what is still active.
pub fn observe(facts: &Facts) -> Value {
    let active = facts
        .section("swaps")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let fstab = facts
        .section("fstab")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    if active == 0 && fstab == 0 {
        Value::Text("off".into())
    } else {
        Value::Text(format!("on ({active} active, {fstab} in /etc/fstab)"))
    }
}

pub async fn apply(t: &dyn Transport) -> Result<(), ProviderError> {
    // The fstab is rewritten beside itself and renamed over, its swap lines commented out (kept,
    // so that undoing it by hand is easy); a failure half-way leaves no temporary file (the trap).
    let script = format!(
        "{PATH}\nif {IN_CONTAINER}; then exit 0; fi\nset -e\n\
         trap 'rm -f /etc/.fstab.kz' EXIT\nswapoff -a\n\
         if awk '$1 !~ /^#/ && $3 == \"swap\" {{ found = 1 }} END {{ exit !found }}' /etc/fstab; then\n\
         cp -p /etc/fstab /etc/.fstab.kz\n\
         awk '$1 !~ /^#/ && $3 == \"swap\" {{ print \"# swap off by kz: \" $0; next }} {{ print }}' /etc/fstab > /etc/.fstab.kz\n\
         mv /etc/.fstab.kz /etc/fstab\nfi\n"
    );
    run_checked(
        t,
        "swap",
        script,
        Duration::from_secs(120).max(t.command_timeout()),
    )
    .await?;
    Ok(())
}
