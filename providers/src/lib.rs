//! # kz-providers
//!
//! Transports (how kz reaches a host: [`local`], [`ssh`]) and resource providers ([`file`],
//! [`command`]). They do the I/O the engine decides on, and never print: they return data and errors.

pub mod check;
pub mod command;
pub mod file;
pub mod hcloud;
pub mod local;
pub mod ssh;
#[allow(unsafe_code)]
mod sys;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kz_engine::model::{Host, TransportKind};
use kz_engine::provider::{Provider, Providers, Transport, TransportError, TransportFactory};

/// Every provider of this build.
pub fn providers() -> Providers {
    let list: Vec<Arc<dyn Provider>> = vec![
        Arc::new(file::FileProvider),
        Arc::new(command::CommandProvider),
        Arc::new(check::CheckProvider),
        Arc::new(hcloud::LbProvider::from_env()),
    ];
    Providers::new(list)
}

/// Makes the transport each host asks for, once per run: every caller gets the same transport,
/// hence the same SSH connection, for a host (and jump hosts are shared by the hosts behind them).
#[derive(Debug, Default)]
pub struct Transports {
    hosts: BTreeMap<String, Host>,
    ssh: Mutex<HashMap<String, Arc<ssh::SshTransport>>>,
}

impl Transports {
    pub fn new(hosts: BTreeMap<String, Host>) -> Transports {
        Transports {
            hosts,
            ssh: Mutex::new(HashMap::new()),
        }
    }

    /// The SSH transport of a host, with its jump host's, made once.
    pub fn ssh(&self, host: &Host) -> Result<Arc<ssh::SshTransport>, TransportError> {
        self.ssh_at_depth(host, 0)
    }

    fn ssh_at_depth(
        &self,
        host: &Host,
        depth: usize,
    ) -> Result<Arc<ssh::SshTransport>, TransportError> {
        if let Some(t) = self
            .ssh
            .lock()
            .ok()
            .and_then(|m| m.get(&host.name).cloned())
        {
            return Ok(t);
        }
        if depth > 8 {
            return Err(TransportError::Connect(
                "jump hosts chain too deep (a loop?)".into(),
            ));
        }
        let jump = match &host.ssh.jump {
            None => None,
            Some(j) => {
                let jh = self.hosts.get(j).ok_or_else(|| {
                    TransportError::Connect(format!("jump host `{j}` is not in the inventory"))
                })?;
                // A jump host that is this very machine means connecting directly.
                if jh.transport == TransportKind::Local {
                    None
                } else {
                    Some(self.ssh_at_depth(jh, depth + 1)?)
                }
            }
        };
        let t = Arc::new(ssh::SshTransport::new(host.clone(), jump));
        if let Ok(mut m) = self.ssh.lock() {
            return Ok(Arc::clone(m.entry(host.name.clone()).or_insert(t)));
        }
        Ok(t)
    }
}

impl TransportFactory for Transports {
    fn transport(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError> {
        match host.transport {
            TransportKind::Local => Ok(Arc::new(local::LocalTransport::new(host))),
            TransportKind::Ssh => Ok(self.ssh(host)?),
        }
    }
}

/// The last lines of a command's error output, for error messages.
pub(crate) fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
