//! The two traits through which the engine reaches the world. The engine decides; implementations
//! of these traits (in the `kz-providers` crate) do the I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Host, Instance, Value};

pub use crate::apply::context::{ApplyCtx, HostSession};
pub use crate::load::declare::{Declaration, Declared};

/// A command to run on a host: a POSIX shell script, run non-interactively with `LC_ALL=C`.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    pub script: String,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// The script holds nothing secret (kz made it from values that use no secret), so it may
    /// travel as an argument of `sh`, in the process list: a command with input of its own then
    /// needs no bootstrap to read the script first. Otherwise scripts travel on standard input.
    pub public_script: bool,
}

/// What a command left behind. Output is kept as bytes; rendering makes it safe to show.
#[derive(Debug, Clone, Default)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit status; `-1` when the process was ended by a signal.
    pub status: i32,
}

/// Why a transport could not do what was asked; the message names the stage.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("auth: {0}")]
    Auth(String),
    #[error("{0}")]
    HostKey(String),
    #[error("command timed out after {}: {command}", crate::units::format_duration(*after))]
    Timeout { after: Duration, command: String },
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Options for an atomic upload.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub timeout: Duration,
    /// The path, owner and group use no secret: the upload's script may travel as an argument
    /// (see [`CommandSpec::public_script`]).
    pub public: bool,
}

/// Quotes a value for a POSIX shell, so that a value taken from TOML arrives literally.
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// How a script appears in error messages: its first line, whole. Never cut inside a line: a
/// secret cut in half could not be masked by the output layer.
pub fn script_summary(script: &str) -> String {
    let first = script.lines().next().unwrap_or("");
    if script.lines().nth(1).is_some() {
        format!("{first} ...")
    } else {
        first.to_string()
    }
}

/// How kz runs commands and writes files on one host.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The inventory name of the host, for error messages.
    fn host(&self) -> &str;

    /// How many commands may run on this host at once.
    fn max_sessions(&self) -> usize;

    /// The deadline of a command that sets none of its own.
    fn command_timeout(&self) -> Duration;

    /// How many connections this transport opened (for the read statistics of a plan).
    fn connections(&self) -> usize {
        0
    }

    /// Waits, boundedly, for clean-ups still under way (the kill of an aborted remote command).
    async fn finish(&self) {}

    /// Proves that a brand-new login still works, without disturbing the connection in use: for
    /// SSH, a new connection (same address, jump host, user, keys and known hosts, under
    /// `connect_timeout`) that authenticates, runs `true` and closes. Changes to how the host lets
    /// kz in (sshd settings) call it before they are kept. Transports with no login say yes.
    async fn verify_new_login(&self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Runs a command under its deadline. A non-zero exit is not an error here: the caller reads `status`.
    async fn run(&self, cmd: CommandSpec) -> Result<CommandOutput, TransportError>;

    /// Writes `bytes` to `path` atomically, in one round trip.
    async fn upload(
        &self,
        path: &str,
        bytes: Vec<u8>,
        opts: &UploadOptions,
    ) -> Result<(), TransportError> {
        let out = self
            .run(crate::upload::upload_command(path, bytes, opts))
            .await?;
        if out.status == 0 {
            Ok(())
        } else {
            Err(TransportError::Io(format!(
                "upload to {path} failed (exit {}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// Makes the transport of each host; supplied by the binary so the engine stays free of I/O.
pub trait TransportFactory: Send + Sync {
    fn transport(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError>;
}

/// What a provider read of an instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// It exists (for a gate: it passes).
    pub exists: bool,
    /// The observed values of the attributes the provider can read back; attributes not listed here
    /// are compared against the state instead.
    pub attrs: BTreeMap<String, Value>,
    /// Why it is absent (or failing), in a few words (e.g. "check failed (exit 1)").
    pub note: Option<String>,
    /// Parts this host cannot change (swap inside a container), by attribute name, with the
    /// reason: such an attribute is taken as in sync, so it is neither a change nor a failure,
    /// and plans list it. A key that is no attribute (`sysctl vm.swappiness`, a part of one) is
    /// only listed: the provider reports that part as in sync itself.
    pub not_applicable: BTreeMap<String, String>,
    /// What the instance is live, in a few words, shown by plans even when nothing changes
    /// ("master redis-02, 2 of 2 replicas in sync, 3 sentinels agree"): facts a desired value
    /// cannot hold, because they may change without anything being wrong.
    pub live: Option<String>,
}

/// The output of one probe, cut out of the host's batched read.
#[derive(Debug, Clone)]
pub struct ProbeOutput {
    pub stdout: Vec<u8>,
    pub status: i32,
}

/// What the probes of one instance printed: one output per member host, in member order.
#[derive(Debug, Clone, Default)]
pub struct MemberOutputs {
    pub outputs: Vec<(String, ProbeOutput)>,
}

impl MemberOutputs {
    /// The output of one probe, for an instance on one host.
    pub fn single(out: ProbeOutput, host: &str) -> MemberOutputs {
        MemberOutputs {
            outputs: vec![(host.to_string(), out)],
        }
    }

    /// What the probe printed on `host`.
    pub fn on(&self, host: &str) -> Option<&ProbeOutput> {
        self.outputs.iter().find(|(h, _)| h == host).map(|(_, o)| o)
    }

    /// The first (for an instance on one host, the only) output.
    pub fn first(&self) -> Option<&ProbeOutput> {
        self.outputs.first().map(|(_, o)| o)
    }
}

/// A failed step of a provider, named so that errors read `host: step: message`.
#[derive(Debug, Clone)]
pub struct ProviderError {
    pub step: String,
    pub message: String,
    /// The host could not be reached at all (connect, auth or host key): the summary lists it.
    pub unreachable: bool,
    /// The host the step failed on, when it is not the instance's own (a member of a group).
    pub host: Option<String>,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An unreachable host's error already names its stage (connect, auth, host key).
        if self.unreachable || self.step.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.step, self.message)
        }
    }
}

impl std::error::Error for ProviderError {}

impl ProviderError {
    pub fn new(step: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError {
            step: step.into(),
            message: message.into(),
            unreachable: false,
            host: None,
        }
    }

    /// A transport failure during `step`, keeping whether the host was unreachable.
    pub fn transport(step: impl Into<String>, e: TransportError) -> Self {
        let unreachable = matches!(
            e,
            TransportError::Connect(_) | TransportError::Auth(_) | TransportError::HostKey(_)
        );
        ProviderError {
            step: step.into(),
            message: e.to_string(),
            unreachable,
            host: None,
        }
    }

    /// The same error, on `host`.
    pub fn on(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }
}

/// Where the instances of a resource type live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// One instance on each host `on` selects (`file`, `command`): `MODULE.TYPE.NAME[HOST]`.
    EachHost,
    /// One instance spanning the hosts `on` selects, its members (a replication group):
    /// `MODULE.TYPE.NAME`, read with one probe per member, in each member's batch.
    Group,
    /// One instance behind an API, on no host; `service` names the API in plans
    /// ("Hetzner Cloud"). Read by [`Provider::read`]; its name is unique per type in the stack.
    Api { service: &'static str },
}

/// What a change applied: values computed on the way (a container id), which the state records
/// with the instance and later plans and changes find in [`Instance::outputs`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub outputs: BTreeMap<String, Value>,
    /// What happened, when the action's name would say more than was done ("forgotten: ..."
    /// for a deletion that touched nothing).
    pub note: Option<String>,
}

/// One resource type (`file`, `command`, ...): its schema, how to read it and how to change it.
///
/// This trait and [`ApplyCtx`] are the boundary for provider authors: a provider reads through
/// probes the engine batches per host (or through [`Provider::read`] for an API), and changes
/// through the context, which hands out transports, carries progress and interruption.
#[async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Where its instances live.
    fn placement(&self) -> Placement {
        Placement::EachHost
    }

    /// Parses and validates one `[[TYPE]]` table of a module file (everything but `name`, `on`
    /// and `depends_on`, which the engine reads).
    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared>;

    /// Host-table keys this provider reads (`hcloud_server`): the loader accepts them in
    /// `[hosts.NAME]` and keeps them in [`Host::settings`].
    fn host_settings(&self) -> &'static [&'static str] {
        &[]
    }

    /// A shell snippet, run on member `host`, whose standard output `observe` reads; `None` when
    /// nothing can be read there. The engine joins the probes of every instance of a host into
    /// one round trip.
    fn probe(&self, inst: &Instance, host: &str) -> Option<String>;

    /// What the instance is, from its probes' outputs (one per member that has a probe).
    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String>;

    /// One snippet that reads several instances of this provider on one host at once, cheaper
    /// than their probes one by one; `None` to use `probe` for each. Only for
    /// [`Placement::EachHost`].
    fn probe_batch(&self, _insts: &[&Instance]) -> Option<String> {
        None
    }

    /// The observations of `probe_batch`'s instances, in the same order.
    fn observe_batch(
        &self,
        insts: &[&Instance],
        _out: &ProbeOutput,
    ) -> Vec<Result<Observation, String>> {
        insts
            .iter()
            .map(|_| Err("this provider has no batched read".to_string()))
            .collect()
    }

    /// Attributes whose change replaces the instance instead of updating it in place.
    fn force_new(&self) -> &'static [&'static str] {
        &[]
    }

    /// Values that may be shown and masked as secrets: API tokens the provider reads from the
    /// environment for these instances.
    fn secret_values(&self, _insts: &[&Instance]) -> Vec<String> {
        Vec::new()
    }

    /// Reads instances that live behind an API ([`Placement::Api`]). The engine calls it once per
    /// provider and plan with every selected instance, so a provider can list what it needs once;
    /// results come in the same order. `None`: no API read.
    async fn read(&self, _insts: &[Instance]) -> Option<Vec<Result<Observation, String>>> {
        None
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError>;

    /// Brings an existing instance in line; [`ApplyCtx::changed`] names the attributes that differ.
    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError>;

    /// Removes it. The instance comes from the stack when it is still declared, else from the state.
    async fn delete(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError>;
}

/// The providers known to this build of kz, by resource type.
#[derive(Clone, Default)]
pub struct Providers {
    by_kind: BTreeMap<&'static str, Arc<dyn Provider>>,
}

impl Providers {
    pub fn new(list: Vec<Arc<dyn Provider>>) -> Providers {
        Providers {
            by_kind: list.into_iter().map(|p| (p.kind(), p)).collect(),
        }
    }
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Provider>> {
        self.by_kind.get(kind)
    }
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.by_kind.values()
    }
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_kind.keys().copied()
    }
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_kind.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_values_literal() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $(x); `y`"), "'it'\\''s $(x); `y`'");
    }
}
