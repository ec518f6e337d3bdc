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
        obs.attrs.insert("dns".into(), dns::observe(facts));
    }
    if inst.attr("sysctl").is_some() {
        let (seen, fixed) = sysctl::observe(inst, facts);
        let all = sysctl::keys(inst).len();
        if !fixed.is_empty() && fixed.len() == all {
            obs.not_applicable.insert(
                "sysctl".into(),
                format!("{IN_A_CONTAINER}, read-only: {}", fixed.join(", ")),
            );
        } else {
            for k in fixed {
                obs.not_applicable.insert(
                    format!("sysctl {k}"),
                    format!("{IN_A_CONTAINER}, read-only"),
                );
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
