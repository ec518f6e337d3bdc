//! The `system` resource: the base of a host, one instance per host, whose parts (packages,
//! swap, UFW, sshd, resolvers, sysctl) are its attributes: each is read in the host's one batched
//! read, compared, shown and applied on its own. Parts a container cannot change are reported as
//! not applicable there.

mod declare;
mod dns;
mod packages;
mod probe;
mod sshd;
mod swap;
mod sysctl;
pub mod ufw;

use std::time::Duration;

use async_trait::async_trait;

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{
    Applied, ApplyCtx, CommandSpec, Declaration, Declared, MemberOutputs, Observation, Provider,
    ProviderError, Transport,
};

use probe::Facts;

/// kz's sshd drop-in: sshd keeps the first value it reads, and this name sorts early.
pub const SSHD_DROP_IN: &str = "/etc/ssh/sshd_config.d/10-kz.conf";

/// The parts, in the order apply changes them: packages first (they may bring `ufw`), sshd
/// after the firewall that must let its new logins in.
const PARTS: &[&str] = &["packages", "swap", "ufw", "sshd", "dns", "sysctl"];

#[derive(Debug)]
pub struct SystemProvider;

/// A list attribute's text items.
pub(crate) fn list(inst: &Instance, attr: &str) -> Vec<String> {
    match inst.attr(attr).and_then(|a| a.known()) {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs a script that must succeed; returns its standard output.
pub(crate) async fn run_checked(
    t: &dyn Transport,
    step: &str,
    script: String,
    timeout: Duration,
) -> Result<Vec<u8>, ProviderError> {
    let out = t
        .run(CommandSpec {
            script,
            timeout,
            ..Default::default()
        })
        .await
        .map_err(|e| ProviderError::transport(step, e))?;
    if out.status == 0 {
        return Ok(out.stdout);
    }
    let said = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        crate::tail(&out.stderr, 5)
    } else {
        crate::tail(&out.stdout, 5)
    };
    Err(ProviderError::new(
        step,
        format!("exit status {}: {said}", out.status),
    ))
}

/// The reason a container gives for every part it cannot change.
const IN_A_CONTAINER: &str = "inside a container";

fn observe_system(inst: &Instance, facts: &Facts) -> Result<Observation, String> {
    if !facts.has("container") {
        return Err("the read of the system was cut short".into());
    }
    let mut obs = Observation {
        exists: true,
        ..Default::default()
    };
    let host = inst.host().unwrap_or("?");
    if inst.attr("packages").is_some() {
        obs.attrs
            .insert("packages".into(), packages::observe(inst, facts));
    }
    if inst.attr("swap").is_some() {
        if facts.container {
            obs.not_applicable
                .insert("swap".into(), IN_A_CONTAINER.into());
        } else {
            obs.attrs.insert("swap".into(), swap::observe(facts));
        }
    }
    if inst.attr("ufw").is_some() {
        let seen = if facts.section("ufw").starts_with("installed") {
            ufw::observed_lines(
                facts.section("ufw"),
                facts.section("ufw4"),
                facts.section("ufw6"),
            )
        } else {
            vec!["not installed".to_string()]
        };
        obs.attrs.insert(
            "ufw".into(),
            Value::List(seen.into_iter().map(Value::Text).collect()),
        );
        // A host's address interpolated into a rule must be an IP address for UFW.
        for l in list(inst, "ufw").iter().skip(3) {
            ufw::Rule::parse(l).map_err(|e| format!("ufw: {e}"))?;
        }
        // Refused before anything is sent: the plan fails on this host, and apply sends nothing
        // for an instance it could not read.
        if let Some((client, port)) = facts.ssh
            && let Some(why) = ufw::lockout(&list(inst, "ufw"), client, port)
        {
            return Err(format!(
                "ufw: refused on {host}: {why}; allow {port}/tcp from {client} (or a network that holds it) before any rule that blocks it"
            ));
        }
    }
    if inst.attr("sshd").is_some() {
        obs.attrs.insert("sshd".into(), sshd::observe(facts));
    }
    if inst.attr("dns").is_some() {
        // A container's resolv.conf is the runtime's (a bind mount it rewrites): a lab host keeps
        // the lab's resolver, so it never sends a query to the resolvers production declares.
        if facts.section("dns").lines().next() == Some("runtime") {
            obs.not_applicable.insert(
                "dns".into(),
                format!("{IN_A_CONTAINER}: the container runtime owns /etc/resolv.conf"),
            );
        } else {
            obs.attrs.insert("dns".into(), dns::observe(facts));
        }
    }
    if inst.attr("sysctl").is_some() {
        let (seen, fixed) = sysctl::observe(inst, facts);
        let all = sysctl::keys(inst).len();
        if !fixed.is_empty() && fixed.len() == all {
            let keys: Vec<String> = fixed
                .iter()
                .map(|(k, why)| format!("{k} ({why})"))
                .collect();
            obs.not_applicable.insert(
                "sysctl".into(),
                format!("{IN_A_CONTAINER}: {}", keys.join(", ")),
            );
        } else {
            for (k, why) in fixed {
                obs.not_applicable
                    .insert(format!("sysctl {k}"), format!("{IN_A_CONTAINER}, {why}"));
            }
            obs.attrs.insert("sysctl".into(), seen);
        }
    }
    Ok(obs)
}

impl SystemProvider {
    /// Applies the named parts, in [`PARTS`] order.
    async fn apply_parts(&self, cx: &ApplyCtx, parts: &[String]) -> Result<Applied, ProviderError> {
        let inst = cx.instance();
        let t = cx.own_transport().await?;
        let t: &dyn Transport = &*t;
        for part in PARTS.iter().filter(|p| parts.iter().any(|c| c == *p)) {
            if inst.attr(part).is_none() {
                continue;
            }
            match *part {
                "packages" => packages::apply(cx, t).await?,
                "swap" => swap::apply(t).await?,
                "ufw" => ufw_apply::apply(cx, t).await?,
                "sshd" => sshd::apply(cx, t).await?,
                "dns" => dns::apply(inst, t).await?,
                "sysctl" => sysctl::apply(inst, t).await?,
                _ => {}
            }
        }
        Ok(Applied::default())
    }
}

mod ufw_apply;

#[async_trait]
impl Provider for SystemProvider {
    fn kind(&self) -> &'static str {
        "system"
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare::declare(decl)
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        Some(probe::script(inst))
    }

    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        if out.status != 0 {
            return Err(format!("cannot read the system (exit {})", out.status));
        }
        observe_system(inst, &Facts::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        // A system exists as soon as its host answers, so this runs only without a read
        // (`--refresh=false` and no state): the change names every part the plan could apply.
        if cx.changed().is_empty() {
            let all: Vec<String> = PARTS.iter().map(ToString::to_string).collect();
            return self.apply_parts(cx, &all).await;
        }
        self.apply_parts(cx, cx.changed()).await
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        self.apply_parts(cx, cx.changed()).await
    }

    async fn delete(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        // Undoing a host's base (uninstalling, opening the firewall) is never what removing the
        // resource means: kz stops managing it and leaves the host as it is.
        Ok(Applied {
            note: Some("forgotten: the host keeps its packages, firewall and settings".into()),
            ..Default::default()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use kz_engine::model::{Address, Attr};

    use super::*;

    fn inst(attrs: &[(&str, &[&str])]) -> Instance {
        Instance {
            address: Address {
                module: "m".into(),
                kind: "system".into(),
                name: "base".into(),
                host: Some("web-01".into()),
            },
            members: Vec::new(),
            attrs: attrs
                .iter()
                .map(|(k, v)| {
                    let items = v.iter().map(|s| Value::Text((*s).into())).collect();
                    ((*k).to_string(), Attr::plain(Value::List(items)))
                })
                .collect(),
            depends_on: Vec::new(),
            outputs: BTreeMap::new(),
            gate: None,
        }
    }

    fn texts(v: &Value) -> Vec<String> {
        match v {
            Value::List(l) => l.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            other => vec![other.as_str().unwrap().to_string()],
        }
    }

    const M: &str = "@@kz-system@@";

    #[test]
    fn each_part_is_read_back_as_declared_lines() {
        let i = inst(&[
            (
                "packages",
                &["curl present", "telnet absent", "ufw present"],
            ),
            ("sshd", &["PasswordAuthentication no"]),
            ("dns", &["10.0.0.2"]),
            ("sysctl", &["net.ipv4.ip_forward = 1", "vm.nope = 1"]),
        ]);
        let out = format!(
            "{M} container\nno\n{M} ssh\n\n{M} packages\ncurl installed\ntelnet config-files\nufw installed\n\
             {M} sshd\npresent\n# kz\nPasswordAuthentication   no\n\n\
             {M} dns\nresolv.conf\n10.0.0.2\n10.0.0.3\n\
             {M} sysctl\nnet.ipv4.ip_forward rw 0\nvm.nope missing\n"
        );
        let o = observe_system(&i, &Facts::parse(&out)).unwrap();
        assert_eq!(
            texts(&o.attrs["packages"]),
            ["curl present", "telnet absent", "ufw present"]
        );
        assert_eq!(texts(&o.attrs["sshd"]), ["PasswordAuthentication no"]);
        assert_eq!(texts(&o.attrs["dns"]), ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(
            texts(&o.attrs["sysctl"]),
            [
                "net.ipv4.ip_forward = 0",
                "vm.nope = (no such key)",
                "(at boot: /etc/sysctl.d/90-kz-base.conf missing)"
            ]
        );
        assert!(o.not_applicable.is_empty());
    }

    #[test]
    fn a_privileged_container_never_changes_the_machine_kernel() {
        let i = inst(&[(
            "sysctl",
            &["net.core.somaxconn = 1024", "vm.overcommit_memory = 1"],
        )]);
        let out = format!(
            "{M} container\nyes\n{M} ssh\n\n\
             {M} sysctl\nnet.core.somaxconn rw 4096\nvm.overcommit_memory rw 0\n"
        );
        let o = observe_system(&i, &Facts::parse(&out)).unwrap();
        assert!(o.not_applicable["sysctl vm.overcommit_memory"].contains("not namespaced"));
        assert_eq!(
            texts(&o.attrs["sysctl"]),
            [
                "net.core.somaxconn = 4096",
                "vm.overcommit_memory = 1",
                "(at boot: /etc/sysctl.d/90-kz-base.conf missing)"
            ]
        );
    }

    #[test]
    fn a_boot_file_as_apply_writes_it_is_no_drift() {
        use sha2::{Digest, Sha256};
        let i = inst(&[("sysctl", &["net.core.somaxconn = 1024"])]);
        let file =
            "# Written by kz: changes made here are overwritten.\nnet.core.somaxconn = 1024\n";
        let sum = hex::encode(Sha256::digest(file.as_bytes()));
        let out = format!(
            "{M} container\nno\n{M} ssh\n\n{M} sysctl\nnet.core.somaxconn rw 1024\n\
             {M} sysctlboot\n{sum}  -\n"
        );
        let o = observe_system(&i, &Facts::parse(&out)).unwrap();
        assert_eq!(texts(&o.attrs["sysctl"]), ["net.core.somaxconn = 1024"]);
        let edited = out.replace(&sum, &"0".repeat(64));
        let o = observe_system(&i, &Facts::parse(&edited)).unwrap();
        assert_eq!(
            texts(&o.attrs["sysctl"]),
            [
                "net.core.somaxconn = 1024",
                "(at boot: /etc/sysctl.d/90-kz-base.conf not as declared)"
            ]
        );
    }

    #[test]
    fn a_container_runtime_owns_resolv_conf() {
        let mut i = inst(&[]);
        i.attrs.insert(
            "dns".into(),
            Attr::plain(Value::List(vec![Value::Text("1.1.1.1".into())])),
        );
        let out = format!("{M} container\nyes\n{M} ssh\n\n{M} dns\nruntime\n");
        let o = observe_system(&i, &Facts::parse(&out)).unwrap();
        assert!(o.not_applicable["dns"].contains("owns /etc/resolv.conf"));
        assert!(!o.attrs.contains_key("dns"));
    }

    #[test]
    fn a_container_makes_swap_and_read_only_keys_not_applicable() {
        let mut i = inst(&[("sysctl", &["net.ipv4.ip_forward = 1", "vm.swappiness = 10"])]);
        i.attrs
            .insert("swap".into(), Attr::plain(Value::Text("off".into())));
        let out = format!(
            "{M} container\nyes\n{M} ssh\n\n{M} swaps\n{M} fstab\n\
             {M} sysctl\nnet.ipv4.ip_forward rw 0\nvm.swappiness ro 60\n"
        );
        let o = observe_system(&i, &Facts::parse(&out)).unwrap();
        assert!(o.not_applicable.contains_key("swap"));
        assert!(!o.attrs.contains_key("swap"));
        assert!(o.not_applicable.contains_key("sysctl vm.swappiness"));
        assert_eq!(
            texts(&o.attrs["sysctl"]),
            [
                "net.ipv4.ip_forward = 0",
                "vm.swappiness = 10",
                "(at boot: /etc/sysctl.d/90-kz-base.conf missing)"
            ]
        );
        let all_ro = format!(
            "{M} container\nyes\n{M} ssh\n\n{M} sysctl\nnet.ipv4.ip_forward ro 0\nvm.swappiness ro 60\n"
        );
        let o = observe_system(&i, &Facts::parse(&all_ro)).unwrap();
        assert!(o.not_applicable["sysctl"].contains("vm.swappiness"));
        assert!(!o.attrs.contains_key("sysctl"));
    }

    #[test]
    fn swap_on_a_machine_is_read_from_proc_and_fstab() {
        let mut i = inst(&[]);
        i.attrs
            .insert("swap".into(), Attr::plain(Value::Text("off".into())));
        let out = format!(
            "{M} container\nno\n{M} ssh\n\n{M} swaps\n/swap.img file 100 0 -2\n{M} fstab\n/swap.img none swap sw 0 0\n"
        );
        let o = observe_system(&i, &Facts::parse(&out)).unwrap();
        assert_eq!(texts(&o.attrs["swap"]), ["on (1 active, 1 in /etc/fstab)"]);
    }

    #[test]
    fn a_rule_set_that_cuts_ssh_makes_the_read_fail() {
        let i = inst(&[(
            "ufw",
            &[
                "status enabled",
                "default incoming deny",
                "default outgoing allow",
            ],
        )]);
        let out = format!(
            "{M} container\nno\n{M} ssh\n10.0.0.9 51000 10.0.0.11 2222\n{M} ufw\ninstalled\nENABLED=no\n{M} ufw4\n{M} ufw6\n"
        );
        let e = observe_system(&i, &Facts::parse(&out)).unwrap_err();
        assert!(e.contains("refused on web-01"), "{e}");
        assert!(e.contains("port 2222/tcp"), "{e}");
        assert!(e.contains("10.0.0.9"), "{e}");
    }
}
