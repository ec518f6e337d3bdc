//! `kz trust`: show a host's key and record it after confirmation.

use std::path::Path;

use super::{CmdResult, OK, confirmed, open};
use crate::output::Shell;

/// `kz trust`: show the key a host presents and record it after confirmation. A key that differs
/// from the recorded one is never replaced here: the user removes the old line knowingly.
pub(super) async fn trust(shell: &Shell, dir: &Path, host_name: &str, yes: bool) -> CmdResult {
    use kz_providers::ssh::known_hosts::{Verdict, check, fingerprint, host_pattern, learn};
    let ws = open(shell, dir)?;
    let host = ws
        .stack
        .hosts
        .get(host_name)
        .ok_or_else(|| format!("unknown host `{host_name}` (see stack.toml)"))?;
    if host.transport != kz_engine::model::TransportKind::Ssh {
        return Err(format!(
            "host `{host_name}` is reached without SSH: it has no host key to trust"
        )
        .into());
    }
    let at = |e: &dyn std::fmt::Display| format!("{} ({}): {e}", host.name, host.address);
    let transports = kz_providers::Transports::new(ws.stack.hosts.clone());
    let t = transports.ssh(host).map_err(|e| at(&e))?;
    let key = t.fetch_host_key().await.map_err(|e| at(&e))?;
    let path = t.known_hosts();
    let pattern = host_pattern(&host.address, host.ssh.port);
    let fp = fingerprint(&key);
    shell.outln(&format!(
        "{} ({pattern}) presents this {} key:\n  {fp}",
        host.name,
        key.algorithm().as_str()
    ));
    match check(&path, &host.address, host.ssh.port, &key)? {
        Verdict::Known => {
            shell.outln(&format!("It is already trusted in {}.", path.display()));
            Ok(OK)
        }
        Verdict::Changed { line } => Err(format!(
            "{}:{line} records a DIFFERENT key for {pattern}. If the host was rebuilt, delete that line and run kz trust again; otherwise this may be an attack.",
            path.display()
        )
        .into()),
        Verdict::Unknown => {
            confirmed(shell, yes, &format!("\nRecord it in {}?", path.display()))?;
            learn(&path, &host.address, host.ssh.port, &key)?;
            shell.outln(&format!(
                "Trusted: recorded {pattern} in {}.",
                path.display()
            ));
            Ok(OK)
        }
    }
}
