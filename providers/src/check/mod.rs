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

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, Provider, ProviderError,
};
use kz_engine::verify::ELAPSED_ATTR;

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

/// The name of the timer's variables and of the line that ends a probe's output.
const TIMER: &str = "KZ_CHECK_T";

/// The probe's output without its timer line, and how long it ran, in milliseconds.
fn split_timer(text: &str) -> (&str, Option<i64>) {
    let Some(at) = text.rfind(&format!("\n{TIMER} ")) else {
        return (text, None);
    };
    let mut f = text[at..].split_whitespace().skip(1);
    let ns = |s: Option<&str>| s.and_then(|v| v.parse::<i64>().ok());
    let ms = match (ns(f.next()), ns(f.next())) {
        (Some(a), Some(b)) if b >= a => Some((b - a) / 1_000_000),
        _ => None,
    };
    (&text[..at], ms)
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
        // Timed on the host, so that `kz verify` says how long each check took, not its
        // host's whole read; where `date` has no nanoseconds the line is ignored.
        Some(format!(
            "{TIMER}0=$(date +%s%N 2>/dev/null)\n{}\n{TIMER}1=$(date +%s%N 2>/dev/null); printf '\\n{TIMER} %s %s\\n' \"${TIMER}0\" \"${TIMER}1\"",
            probe::probe(Kind::of(inst), inst)?
        ))
    }

    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (text, elapsed_ms) = split_timer(&text);
        let (passes, note) = observe::judge(Kind::of(inst), inst, text)?;
        let mut attrs = std::collections::BTreeMap::new();
        if let Some(ms) = elapsed_ms {
            attrs.insert(ELAPSED_ATTR.to_string(), Value::Int(ms));
        }
        Ok(Observation {
            exists: passes,
            note: (!note.is_empty()).then_some(note),
            attrs,
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
