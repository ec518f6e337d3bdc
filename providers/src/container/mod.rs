//! The `container` resource: a container run by docker or podman on a host, over the host's
//! transport. `declare.rs` is its schema, `read.rs` the batched read (one `ps`, one `inspect`
//! per runtime and host), `fields.rs` the comparison of each declared field with `inspect`,
//! `normal.rs` the normal forms, `run.rs` the changes, `wait.rs` the wait for a healthy start.

mod declare;
mod fields;
mod normal;
mod read;
mod run;
mod wait;

pub(crate) use declare::{RUNTIMES, runtime_setting};

use async_trait::async_trait;

use kz_engine::model::Instance;
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, ProbeOutput, Provider,
    ProviderError,
};

#[derive(Debug)]
pub struct ContainerProvider;

/// The attributes a container cannot change once created: a change replaces it. They make the
/// spec hash stamped on the container (label `io.kz.spec`).
pub(crate) const CREATE_ONLY: [&str; 14] = [
    "image",
    "runtime",
    "command",
    "entrypoint",
    "env",
    "ports",
    "volumes",
    "network",
    "labels",
    "user",
    "cap_add",
    "cap_drop",
    "health",
    "stop_timeout",
];

/// The container's name on the host: the resource's name.
pub(crate) fn container_name(inst: &Instance) -> &str {
    &inst.address.name
}

/// The runtime the container runs under; an unknown one is refused at load time, so any other
/// value read back (from an old state) falls back to podman's name only for reading.
pub(crate) fn runtime_of(inst: &Instance) -> &'static str {
    match inst.text("runtime") {
        Some("docker") => "docker",
        _ => "podman",
    }
}

/// Refuses a runtime kz does not drive, which a host setting may name (the resource's own key is
/// checked at load time).
pub(crate) fn check_runtime(inst: &Instance) -> Result<(), String> {
    match inst.text("runtime") {
        Some(r) if !RUNTIMES.contains(&r) => Err(format!(
            "unknown container runtime `{r}` (host setting container_runtime): expected \"podman\" or \"docker\""
        )),
        _ => Ok(()),
    }
}

#[async_trait]
impl Provider for ContainerProvider {
    fn kind(&self) -> &'static str {
        "container"
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare::declare_container(decl)
    }

    fn host_settings(&self) -> &'static [&'static str] {
        &["container_runtime"]
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        Some(read::probe_batch(&[inst]))
    }

    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        read::observe_batch(&[inst], out)
            .pop()
            .unwrap_or_else(|| Err("no observation".into()))
    }

    fn probe_batch(&self, insts: &[&Instance]) -> Option<String> {
        Some(read::probe_batch(insts))
    }

    fn observe_batch(
        &self,
        insts: &[&Instance],
        out: &ProbeOutput,
    ) -> Vec<Result<Observation, String>> {
        read::observe_batch(insts, out)
    }

    fn force_new(&self) -> &'static [&'static str] {
        &CREATE_ONLY
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        run::create(cx).await
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        run::update(cx).await
    }

    async fn delete(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        run::delete(cx).await
    }
}
