//! The two traits through which the engine reaches the world. The engine decides; implementations
//! of these traits (in the `kz-providers` crate) do the I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Host, Instance, Value};

/// A command to run on a host: a POSIX shell script, run non-interactively with `LC_ALL=C`.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub script: String,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
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

/// What a provider read of an instance on its host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub exists: bool,
    /// The observed values of the attributes the provider can read back; attributes not listed here
    /// are compared against the state instead.
    pub attrs: BTreeMap<String, Value>,
    /// Why it is absent, in a few words (e.g. "check failed (exit 1)").
    pub note: Option<String>,
}

/// The output of one probe, cut out of the host's batched read.
#[derive(Debug, Clone)]
pub struct ProbeOutput {
    pub stdout: Vec<u8>,
    pub status: i32,
}

/// A failed step of a provider, named so that errors read `host: step: message`.
#[derive(Debug, Clone)]
pub struct ProviderError {
    pub step: String,
    pub message: String,
    /// The host could not be reached at all (connect, auth or host key): the summary lists it.
    pub unreachable: bool,
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
        }
    }
}

/// One resource type (`file`, `command`, ...): how to read it and how to change it.
#[async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> &'static str;

    /// A shell snippet whose standard output `observe` reads; `None` when nothing can be read.
    /// The engine joins the probes of every instance of a host into one round trip.
    fn probe(&self, inst: &Instance) -> Option<String>;

    fn observe(&self, inst: &Instance, out: &ProbeOutput) -> Result<Observation, String>;

    /// One snippet that reads several instances of this provider on one host at once, cheaper
    /// than their probes one by one; `None` to use `probe` for each.
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

    /// Reads instances that live behind an API rather than on a host (their host is a
    /// [`TransportKind::Api`](crate::model::TransportKind::Api) pseudo-host, and `probe` is `None`).
    /// The engine calls it once per provider and plan with every selected instance, so a provider
    /// can list what it needs once; results come in the same order. `None`: no API read.
    async fn read(&self, _insts: &[Instance]) -> Option<Vec<Result<Observation, String>>> {
        None
    }

    async fn create(&self, inst: &Instance, t: &dyn Transport) -> Result<(), ProviderError>;

    /// Brings an existing instance in line; `changed` names the attributes that differ.
    async fn update(
        &self,
        inst: &Instance,
        changed: &[String],
        t: &dyn Transport,
    ) -> Result<(), ProviderError>;

    /// Removes it. `inst` comes from the stack when it is still declared, else from the state.
    async fn delete(&self, inst: &Instance, t: &dyn Transport) -> Result<(), ProviderError>;
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
