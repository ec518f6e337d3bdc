//! # kz-providers
//!
//! Transports (how kz reaches a host: [`local`], next `ssh`) and resource providers ([`file`],
//! [`command`]). They do the I/O the engine decides on, and never print: they return data and errors.

pub mod command;
pub mod file;
pub mod local;
#[allow(unsafe_code)]
mod sys;

use std::sync::Arc;

use kz_engine::model::{Host, TransportKind};
use kz_engine::provider::{Provider, Providers, Transport, TransportError, TransportFactory};

/// Every provider of this build.
pub fn providers() -> Providers {
    let list: Vec<Arc<dyn Provider>> = vec![
        Arc::new(file::FileProvider),
        Arc::new(command::CommandProvider),
    ];
    Providers::new(list)
}

/// Makes the transport each host asks for.
#[derive(Debug, Default)]
pub struct Transports;

impl TransportFactory for Transports {
    fn transport(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError> {
        match host.transport {
            TransportKind::Local => Ok(Arc::new(local::LocalTransport::new(host))),
            TransportKind::Ssh => Err(TransportError::Unsupported(format!(
                "{} ({}): the ssh transport is not available in this build yet; use transport = \"local\" or plan with --refresh=false",
                host.name, host.address
            ))),
        }
    }
}

/// The last lines of a command's error output, for error messages.
pub(crate) fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
