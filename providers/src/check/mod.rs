//! The `check` resource: a health check that is also a gate. It changes nothing: a plan reads it
//! like everything else (its probe joins the batched read of the host it runs on: its own, or
//! `from`) and shows whether it passes; an apply runs it again after anything it depends on
//! changed, retrying until its deadline, and what depends on it (its module's dependents too)
//! waits until it passes. `kz verify` runs every check once and reports.
//!
//! `declare.rs` is the schema, `probe.rs` each kind's snippet, `observe.rs` each kind's verdict.

mod declare;
mod observe;
mod probe;
#[cfg(test)]
mod tests;

use async_trait::async_trait;

use kz_engine::model::Instance;
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, Provider, ProviderError,
};

#[derive(Debug)]
pub struct CheckProvider;

/// What a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Command,
    Tcp,
    Http,
    RedisRole,
    SentinelQuorum,
    Patroni,
    Postgres,
    RabbitmqCluster,
    Galera,
    Minio,
    K3sNodes,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Command,
        Kind::Tcp,
        Kind::Http,
        Kind::RedisRole,
        Kind::SentinelQuorum,
        Kind::Patroni,
        Kind::Postgres,
        Kind::RabbitmqCluster,
        Kind::Galera,
        Kind::Minio,
        Kind::K3sNodes,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Tcp => "tcp",
            Kind::Http => "http",
            Kind::RedisRole => "redis_role",
            Kind::SentinelQuorum => "sentinel_quorum",
            Kind::Patroni => "patroni",
            Kind::Postgres => "postgres",
            Kind::RabbitmqCluster => "rabbitmq_cluster",
            Kind::Galera => "galera",
            Kind::Minio => "minio",
            Kind::K3sNodes => "k3s_nodes",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The kind of a declared instance (`command` for one declared before kinds existed).
    fn of(inst: &Instance) -> Kind {
        inst.text("kind")
            .and_then(Kind::parse)
            .unwrap_or(Kind::Command)
    }
}

#[async_trait]
impl Provider for CheckProvider {
    fn kind(&self) -> &'static str {
        "check"
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare::declare_check(decl)
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        probe::probe(Kind::of(inst), inst)
    }

    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (passes, note) = observe::judge(Kind::of(inst), inst, &text)?;
        Ok(Observation {
            exists: passes,
            note: (!note.is_empty()).then_some(note),
            ..Default::default()
        })
    }

    /// A check is never created: the engine runs it as a gate.
    async fn create(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }

    async fn update(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }

    async fn delete(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }
}
