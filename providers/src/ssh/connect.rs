//! Opening one authenticated SSH connection: TCP (or a tunnel through a jump host), banner, key
//! exchange, host key check and authentication, all under one deadline.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::Error as SshError;
use russh::client::{self, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate, load_secret_key};
use tokio::io::{AsyncRead, AsyncWrite};

use kz_engine::model::SshSettings;
use kz_engine::provider::TransportError;

use super::known_hosts::{self, Verdict};

/// What the host key check decided, kept for the error message (russh only sees a yes or no).
#[derive(Debug, Clone)]
pub enum KeyProblem {
    Unknown { key: Box<PublicKey> },
    Changed { line: usize },
    Unreadable(String),
    Certificate,
}

/// The russh client handler: verifies the server's key against known_hosts.
pub struct Client {
    pub address: String,
    pub port: u16,
    pub known_hosts: PathBuf,
    pub accept_new: bool,
    pub problem: Arc<Mutex<Option<KeyProblem>>>,
    /// When set, the key is recorded here and the connection refused (for `kz trust`).
    pub capture: Option<Arc<Mutex<Option<PublicKey>>>>,
}

impl Client {
    fn refuse(&self, p: KeyProblem) -> Result<bool, SshError> {
        if let Ok(mut slot) = self.problem.lock() {
            *slot = Some(p);
        }
        Ok(false)
    }
}

impl client::Handler for Client {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return self.refuse(KeyProblem::Certificate);
        };
        if let Some(c) = &self.capture {
            if let Ok(mut slot) = c.lock() {
                *slot = Some(key.clone());
            }
            return Ok(false);
        }
        match known_hosts::check(&self.known_hosts, &self.address, self.port, key) {
            Ok(Verdict::Known) => Ok(true),
            Ok(Verdict::Unknown) if self.accept_new => {
                match known_hosts::learn(&self.known_hosts, &self.address, self.port, key) {
                    Ok(()) => Ok(true),
                    Err(e) => self.refuse(KeyProblem::Unreadable(e)),
                }
            }
            Ok(Verdict::Unknown) => self.refuse(KeyProblem::Unknown {
                key: Box::new(key.clone()),
            }),
            Ok(Verdict::Changed { line }) => self.refuse(KeyProblem::Changed { line }),
            Err(e) => self.refuse(KeyProblem::Unreadable(e)),
        }
    }
}

/// The client configuration kz uses everywhere: TCP_NODELAY (a small exec costs ~2 ms instead of
/// ~46 ms with Nagle), and keepalives so a dead peer is noticed.
pub fn config(s: &SshSettings) -> Arc<client::Config> {
    Arc::new(client::Config {
        nodelay: true,
        keepalive_interval: Some(s.keepalive),
        keepalive_max: 3,
        inactivity_timeout: None,
        ..client::Config::default()
    })
}

/// Turns a handshake failure into the error users read, using what the handler recorded.
pub fn handshake_error(
    e: &SshError,
    problem: &Arc<Mutex<Option<KeyProblem>>>,
    host: &str,
    address: &str,
    port: u16,
    known: &Path,
) -> TransportError {
    let recorded = problem.lock().ok().and_then(|mut p| p.take());
    let pattern = known_hosts::host_pattern(address, port);
    // A lab's keys are recorded by `kz lab up`; `kz trust` would reach the real host instead.
    let in_lab = known.ends_with(".kz/lab/known_hosts");
    match recorded {
        Some(KeyProblem::Unknown { key }) => TransportError::HostKey(format!(
            "host key unknown: {pattern} presents {} key {}, which {} does not list; {}",
            key.algorithm().as_str(),
            known_hosts::fingerprint(&key),
            known.display(),
            if in_lab {
                "run `kz lab up STACK_DIR` again to record the lab's keys".to_string()
            } else {
                format!(
                    "check it, then run `kz trust STACK_DIR {host}` (or set accept_new_host_keys = true)"
                )
            }
        )),
        Some(KeyProblem::Changed { line }) => TransportError::HostKey(format!(
            "host key changed ({}:{line}): {pattern} presents a different key than the one recorded there; {}",
            known.display(),
            if in_lab {
                "the lab host was made again outside kz: run `kz lab down STACK_DIR`, then `kz lab up STACK_DIR`".to_string()
            } else {
                format!(
                    "this may be an attack. If the change is expected, delete that line and run `kz trust STACK_DIR {host}`"
                )
            }
        )),
        Some(KeyProblem::Unreadable(msg)) => {
            TransportError::HostKey(format!("host key check failed: {msg}"))
        }
        Some(KeyProblem::Certificate) => TransportError::HostKey(
            "host certificates are not supported; list the host's plain key in known_hosts".into(),
        ),
        None => TransportError::Connect(e.to_string()),
    }
}

/// Runs the SSH handshake over `stream` and authenticates.
pub async fn handshake<S>(
    stream: S,
    s: &SshSettings,
    handler: Client,
    host: &str,
) -> Result<Handle<Client>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let problem = Arc::clone(&handler.problem);
    let (address, port, known) = (
        handler.address.clone(),
        handler.port,
        handler.known_hosts.clone(),
    );
    let mut handle = client::connect_stream(config(s), stream, handler)
        .await
        .map_err(|e| handshake_error(&e, &problem, host, &address, port, &known))?;
    authenticate(&mut handle, s).await?;
    Ok(handle)
}

/// Tries the configured key files, then the ssh-agent (`SSH_AUTH_SOCK`); without configured keys,
/// the usual `~/.ssh/id_*` files.
async fn authenticate(handle: &mut Handle<Client>, s: &SshSettings) -> Result<(), TransportError> {
    let mut tried = Vec::new();
    let mut files: Vec<PathBuf> = s.identity.iter().map(PathBuf::from).collect();
    // The usual ~/.ssh keys are only tried; one that cannot be loaded (say, encrypted, its
    // passphrase in the agent) is skipped. A key the stack names must load.
    let defaults = files.is_empty();
    if defaults {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        files = ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|f| home.join(".ssh").join(f))
            .filter(|p| p.exists())
            .collect();
    }
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|e| TransportError::Auth(e.to_string()))?
        .flatten();
    for f in &files {
        let key = match load_secret_key(f, None) {
            Ok(k) => k,
            Err(e) if defaults => {
                tried.push(format!("{} (not loadable: {e})", f.display()));
                continue;
            }
            Err(e) => {
                return Err(TransportError::Auth(format!(
                    "cannot load key {}: {e} (an encrypted key belongs in ssh-agent)",
                    f.display()
                )));
            }
        };
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
        let r = handle
            .authenticate_publickey(&s.user, key)
            .await
            .map_err(|e| TransportError::Auth(e.to_string()))?;
        if r.success() {
            return Ok(());
        }
        tried.push(f.display().to_string());
    }
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match AgentClient::connect_env().await {
            Ok(mut agent) => {
                let ids = agent
                    .request_identities()
                    .await
                    .map_err(|e| TransportError::Auth(format!("ssh-agent: {e}")))?;
                for id in ids {
                    let AgentIdentity::PublicKey { key, .. } = &id else {
                        continue;
                    };
                    let hash = if key.algorithm().is_rsa() {
                        rsa_hash
                    } else {
                        None
                    };
                    let r = handle
                        .authenticate_publickey_with(&s.user, key.clone(), hash, &mut agent)
                        .await
                        .map_err(|e| TransportError::Auth(format!("ssh-agent: {e}")))?;
                    if r.success() {
                        return Ok(());
                    }
                    tried.push(format!("agent key {}", known_hosts::fingerprint(key)));
                }
            }
            Err(e) => tried.push(format!("ssh-agent unreachable ({e})")),
        }
    }
    Err(TransportError::Auth(format!(
        "no key accepted for {}{}",
        s.user,
        if tried.is_empty() {
            " (no key file configured or found, and no ssh-agent)".to_string()
        } else {
            format!(" (tried {})", tried.join(", "))
        }
    )))
}

/// Formats a deadline the way errors print it.
pub fn after(d: Duration) -> String {
    kz_engine::units::format_duration(d)
}
