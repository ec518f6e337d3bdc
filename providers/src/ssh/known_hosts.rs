//! Host key verification against an OpenSSH known_hosts file. kz never accepts a key silently:
//! unknown keys are refused unless the stack opts in, changed keys are always refused.

use std::path::{Path, PathBuf};

use russh::keys::{HashAlg, PublicKey};

/// What a known_hosts file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Known,
    Unknown,
    /// Another key of the same type is recorded for this host, at this line (1-based).
    Changed {
        line: usize,
    },
}

/// The name a host goes by in known_hosts: `addr`, or `[addr]:port` off port 22.
pub fn host_pattern(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// `SHA256:...`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The user's known_hosts when the stack names none.
pub fn default_path() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
        .join(".ssh/known_hosts")
}

/// Any key recorded for the host that is not this one means the host changed, whatever the
/// algorithm: a server that suddenly offers another type of key is treated as a changed key, not
/// as a new one (that would let an attacker downgrade past the recorded key).
pub fn check(path: &Path, address: &str, port: u16, key: &PublicKey) -> Result<Verdict, String> {
    let recorded = russh::keys::known_hosts::known_host_keys_path(address, port, path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if recorded.iter().any(|(_, k)| k == key) {
        return Ok(Verdict::Known);
    }
    match recorded.first() {
        None => Ok(Verdict::Unknown),
        Some((line, _)) => Ok(Verdict::Changed {
            line: real_line(path, *line),
        }),
    }
}

/// russh counts only the lines that are not comments; this maps its count back to a file line.
fn real_line(path: &Path, counted: usize) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else {
        return counted;
    };
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        if !line.starts_with('#') {
            n += 1;
            if n == counted {
                return i + 1;
            }
        }
    }
    counted
}

/// Appends the host's key to the file (creating it and its directory, mode 0600).
pub fn learn(path: &Path, address: &str, port: u16, key: &PublicKey) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    russh::keys::known_hosts::learn_known_hosts_path(address, port, key, path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC0LnSiYAqX+7XEcqbBpJk3bW22D1YOo8+3Xiggx9zXS";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH+ZnTV+Nxi3WMT/LMX34nL/X+tSKjhBg2NPNj3IfaCZ";

    fn key(s: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(s.split(' ').nth(1).expect("base64")).expect("key")
    }

    #[test]
    fn known_unknown_and_changed_with_the_real_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        std::fs::write(
            &path,
            format!("# a comment\n\n[127.0.1.5]:2222 {KEY_A}\n# another\n10.0.0.123 {KEY_A}\n"),
        )
        .expect("write");
        assert_eq!(
            check(&path, "127.0.1.5", 2222, &key(KEY_A)),
            Ok(Verdict::Known)
        );
        assert_eq!(
            check(&path, "127.0.1.6", 2222, &key(KEY_A)),
            Ok(Verdict::Unknown)
        );
        assert_eq!(
            check(&path, "10.0.0.123", 22, &key(KEY_B)),
            Ok(Verdict::Changed { line: 5 })
        );
        learn(&path, "127.0.1.6", 2222, &key(KEY_B)).expect("learn");
        assert_eq!(
            check(&path, "127.0.1.6", 2222, &key(KEY_B)),
            Ok(Verdict::Known)
        );
        assert!(fingerprint(&key(KEY_A)).starts_with("SHA256:"));
        assert_eq!(host_pattern("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(host_pattern("10.0.0.1", 2222), "[10.0.0.1]:2222");
    }

    #[test]
    fn a_missing_file_knows_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            check(&dir.path().join("none"), "h", 22, &key(KEY_A)),
            Ok(Verdict::Unknown)
        );
    }
}
