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
            .flat_map(|i| i.hosts().map(String::from).collect::<Vec<_>>())
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
/// --module leaves them out, since nothing would run there. A module with instances on every
/// SSH host (fleet-wide, like a base OS module) does not count as a use, or no host would ever
/// be left out; a host no module uses stays.
pub(super) fn only_skipped(stack: &Stack) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut uses: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &stack.instances {
        for h in i.hosts() {
            uses.entry(h).or_default().insert(i.address.module.as_str());
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

        // With no skipped module, every host stays.
        let s = stack(&[("stack.toml", HOSTS), ("03_db.toml", &db)]);
        assert!(only_skipped(&s).is_empty());
    }
}
