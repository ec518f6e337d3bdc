//! Which stack hosts a lab is made of.

use kz_engine::model::Stack;

/// The hosts a lab is made of: every machine of the inventory (not API pseudo-hosts), or those
/// asked for.
pub(super) fn select_hosts(
    stack: &Stack,
    wanted: &[String],
    module: Option<&str>,
) -> Result<Vec<String>, String> {
    let machines: Vec<&String> = stack.hosts.values().map(|h| &h.name).collect();
    if !wanted.is_empty() {
        for w in wanted {
            if !machines.contains(&w) {
                return Err(format!(
                    "unknown host `{w}` in --hosts: the stack has {}",
                    machines
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        return Ok(wanted.to_vec());
    }
    if let Some(m) = module {
        if !stack.modules.contains_key(m) {
            return Err(format!(
                "unknown module `{m}` in --module: the stack has {}",
                stack.modules.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut on: Vec<String> = stack
            .instances
            .iter()
            .filter(|i| i.address.module == m)
            .flat_map(|i| {
                i.hosts()
                    .chain(i.read_host())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        on.sort();
        on.dedup();
        if on.is_empty() {
            return Err(format!("module `{m}` has no resource on any host"));
        }
        return Ok(on);
    }
    Ok(machines.into_iter().cloned().collect())
}

/// The hosts only lab-skipped modules use (`lab = { skip = "..." }`): a lab with no --hosts or
/// --module leaves them out, since nothing would run there. A host is used by a module that has
/// an instance on it, runs a check from it (`from`), or names its address in a value (the lab
/// refuses a value that carries the address of a host it lacks). A module with instances on
/// every SSH host (fleet-wide, like a base OS module) does not count as a use, or no host would
/// ever be left out; a host no module uses stays.
pub(super) fn only_skipped(stack: &Stack) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut uses: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &stack.instances {
        let module = i.address.module.as_str();
        for h in i.hosts().chain(i.read_host()) {
            uses.entry(h).or_default().insert(module);
        }
        for h in stack.hosts.values() {
            if names_address(i, &h.address) {
                uses.entry(h.name.as_str()).or_default().insert(module);
            }
        }
    }
    let ssh: Vec<&str> = stack
        .hosts
        .values()
        .filter(|h| h.transport == kz_engine::model::TransportKind::Ssh)
        .map(|h| h.name.as_str())
        .collect();
    let fleet_wide = |m: &str| {
        !ssh.is_empty()
            && ssh
                .iter()
                .all(|h| uses.get(h).is_some_and(|ms| ms.contains(m)))
    };
    let skipped = |m: &str| stack.modules.get(m).is_some_and(|m| m.lab_skip.is_some());
    stack
        .hosts
        .keys()
        .filter(|h| {
            let own: Vec<&str> = uses
                .get(h.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|m| !fleet_wide(m))
                .collect();
            !own.is_empty() && own.iter().all(|m| skipped(m))
        })
        .cloned()
        .collect()
}

/// Whether a known value of `i` holds `address` as a whole word (`10.0.0.1` is not in
/// `10.0.0.10`).
fn names_address(i: &kz_engine::model::Instance, address: &str) -> bool {
    if address.is_empty() {
        return false;
    }
    let part = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    i.attrs
        .values()
        .filter_map(|a| a.known())
        .flat_map(|v| v.texts())
        .any(|text| {
            text.match_indices(address).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let after = text[at + address.len()..].chars().next();
                !before.is_some_and(part) && !after.is_some_and(part)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(files: &[(&str, &str)]) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write a stack file");
        }
        kz_engine::load::load_stack(dir.path(), &kz_providers::providers())
            .unwrap_or_else(|d| panic!("{d:?}"))
    }

    const HOSTS: &str = "[stack]\nname = \"s\"\n\n[hosts.local]\ntransport = \"local\"\n\
        [hosts.db-01]\naddress = \"10.0.0.1\"\nlabels = { role = \"db\", fleet = \"y\" }\n\
        [hosts.minio-01]\naddress = \"10.0.0.2\"\nlabels = { role = \"minio\", fleet = \"y\" }\n\
        [hosts.idle-01]\naddress = \"10.0.0.3\"\nlabels = { role = \"idle\", fleet = \"y\" }\n";

    fn command(module: &str, on: &str) -> String {
        format!("[[command]]\nname = \"{module}\"\non = {on}\nrun = \"true\"\n")
    }

    #[test]
    fn hosts_only_skipped_modules_use_are_left_out_fleet_wide_modules_aside() {
        let base = command("base", "{ fleet = \"y\" }");
        let db = command("db", "{ role = \"db\" }");
        let minio = format!(
            "[module]\nlab = {{ skip = \"no package\" }}\n{}",
            command("minio", "{ role = \"minio\" }")
        );
        let s = stack(&[
            ("stack.toml", HOSTS),
            ("02_base.toml", &base),
            ("03_db.toml", &db),
            ("06_minio.toml", &minio),
        ]);
        assert_eq!(only_skipped(&s), vec!["minio-01".to_string()]);

        // A host that a kept module uses too stays, even when a skipped module is there.
        let both = format!(
            "[module]\nlab = {{ skip = \"no package\" }}\n{}",
            command("minio", "{ role = \"minio\" }") + &command("x", "{ role = \"db\" }")
        );
        let s = stack(&[
            ("stack.toml", HOSTS),
            ("03_db.toml", &db),
            ("06_minio.toml", &both),
        ]);
        assert_eq!(only_skipped(&s), vec!["minio-01".to_string()]);

        // A host a kept module runs a check from, or whose address it names, stays; a longer
        // address that starts like it does not count.
        let from = "[[check]]\nname = \"from-minio\"\non = [\"db-01\"]\nfrom = \"minio-01\"\ncommand = \"true\"\n";
        let s = stack(&[
            ("stack.toml", HOSTS),
            ("03_db.toml", &format!("{db}{from}")),
            ("06_minio.toml", &minio),
        ]);
        assert!(only_skipped(&s).is_empty());
        let named = "[[file]]\nname = \"peers\"\non = [\"db-01\"]\npath = \"/etc/peers\"\ncontent = \"${hosts.minio-01.address}\\n\"\n";
        let s = stack(&[
            ("stack.toml", HOSTS),
            ("03_db.toml", &format!("{db}{named}")),
            ("06_minio.toml", &minio),
        ]);
        assert!(only_skipped(&s).is_empty());
        let longer = "[[file]]\nname = \"peers\"\non = [\"db-01\"]\npath = \"/etc/peers\"\ncontent = \"10.0.0.20 10.0.0.2x\\n\"\n";
        let s = stack(&[
            ("stack.toml", HOSTS),
            ("03_db.toml", &format!("{db}{longer}")),
            ("06_minio.toml", &minio),
        ]);
        assert_eq!(only_skipped(&s), vec!["minio-01".to_string()]);

        // With no skipped module, every host stays.
        let s = stack(&[("stack.toml", HOSTS), ("03_db.toml", &db)]);
        assert!(only_skipped(&s).is_empty());
    }

    /// stacks/prod: the lab leaves out the 13 hosts of MinIO, ProxySQL and K3s, and keeps
    /// install-01, from where module 10's checks look.
    #[test]
    fn the_production_stack_leaves_out_its_thirteen_unpackaged_hosts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/prod");
        let s = kz_engine::load::load_stack(&dir, &kz_providers::providers())
            .unwrap_or_else(|d| panic!("{d:?}"));
        let left = only_skipped(&s);
        assert_eq!(left.len(), 13, "{left:?}");
        assert!(
            left.iter().all(|h| ["k3s-", "minio-", "proxysql-"]
                .iter()
                .any(|p| h.starts_with(p))),
            "{left:?}"
        );
    }
}
