//! The `ssh` transport, on russh: one connection per host per run, reused for every probe and
//! change, channels multiplexed on it; verified host keys; deadlines on everything.

mod connect;
pub mod known_hosts;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::ChannelMsg;
use russh::client::Handle;
use russh::keys::PublicKey;
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, Semaphore};

use kz_engine::model::Host;
use kz_engine::provider::{CommandOutput, CommandSpec, Transport, TransportError, shell_quote};

use connect::{Client, after, handshake};

/// How many handshakes may run at once through one jump host: OpenSSH's `MaxStartups 10:30:100`
/// starts dropping unauthenticated connections past 10.
const JUMP_HANDSHAKES: usize = 8;

/// Extra time the local deadline gives a command after its remote `timeout` should have fired, so
/// the remote side kills it (and frees its session slot) before kz gives up on the channel.
const REMOTE_GRACE: Duration = Duration::from_secs(10);

pub struct SshTransport {
    host: Host,
    jump: Option<Arc<SshTransport>>,
    conn: OnceCell<Result<Arc<Handle<Client>>, TransportError>>,
    sessions: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    connections: AtomicUsize,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("host", &self.host.name)
            .finish()
    }
}

fn known_hosts_path(host: &Host) -> PathBuf {
    host.ssh
        .known_hosts
        .as_ref()
        .map_or_else(known_hosts::default_path, PathBuf::from)
}

/// A short form of a script for error messages: its first line.
fn short(script: &str) -> String {
    let first = script.lines().next().unwrap_or("");
    let cut = &first[..first.floor_char_boundary(80)];
    if cut.len() < script.len() {
        format!("{cut}...")
    } else {
        cut.to_string()
    }
}

impl SshTransport {
    pub fn new(host: Host, jump: Option<Arc<SshTransport>>) -> SshTransport {
        SshTransport {
            sessions: Arc::new(Semaphore::new(host.ssh.max_sessions.max(1))),
            handshakes: Arc::new(Semaphore::new(JUMP_HANDSHAKES)),
            host,
            jump,
            conn: OnceCell::new(),
            connections: AtomicUsize::new(0),
        }
    }

    fn client(&self, capture: Option<Arc<Mutex<Option<PublicKey>>>>) -> Client {
        Client {
            address: self.host.address.clone(),
            port: self.host.ssh.port,
            known_hosts: known_hosts_path(&self.host),
            accept_new: self.host.ssh.accept_new_host_keys,
            problem: Arc::new(Mutex::new(None)),
            capture,
        }
    }

    /// The shared connection, opened on first use. A failure is remembered: every later command on
    /// this host fails at once with the same error instead of waiting out another deadline.
    async fn connection(&self) -> Result<Arc<Handle<Client>>, TransportError> {
        self.conn
            .get_or_init(|| async {
                let limit = self.host.ssh.connect_timeout;
                match tokio::time::timeout(limit, self.open(None)).await {
                    Ok(r) => r.map(Arc::new),
                    Err(_) => Err(TransportError::Connect(format!(
                        "timed out after {}",
                        after(limit)
                    ))),
                }
            })
            .await
            .clone()
    }

    /// Opens a connection: TCP or a tunnel through the jump host, then the handshake.
    async fn open(
        &self,
        capture: Option<Arc<Mutex<Option<PublicKey>>>>,
    ) -> Result<Handle<Client>, TransportError> {
        let s = &self.host.ssh;
        let client = self.client(capture);
        self.connections.fetch_add(1, Ordering::Relaxed);
        match &self.jump {
            None => {
                let tcp = TcpStream::connect((self.host.address.as_str(), s.port))
                    .await
                    .map_err(|e| TransportError::Connect(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                handshake(tcp, s, client, &self.host.name).await
            }
            Some(jump) => {
                // Boxed: a jump host may itself sit behind a jump host.
                let via = Box::pin(jump.connection()).await.map_err(|e| {
                    TransportError::Connect(format!("through jump host {}: {e}", jump.host.name))
                })?;
                let _permit = jump.handshakes.acquire().await;
                let channel = via
                    .channel_open_direct_tcpip(
                        self.host.address.clone(),
                        u32::from(s.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| {
                        TransportError::Connect(format!(
                            "through jump host {}: cannot open a tunnel: {e}",
                            jump.host.name
                        ))
                    })?;
                handshake(channel.into_stream(), s, client, &self.host.name).await
            }
        }
    }

    /// Connects only to read the host's key, for `kz trust`.
    pub async fn fetch_host_key(&self) -> Result<PublicKey, TransportError> {
        let slot = Arc::new(Mutex::new(None));
        let limit = self.host.ssh.connect_timeout;
        let attempt = tokio::time::timeout(limit, self.open(Some(Arc::clone(&slot)))).await;
        if let Ok(Some(key)) = slot.lock().map(|mut s| s.take()) {
            return Ok(key);
        }
        match attempt {
            Err(_) => Err(TransportError::Connect(format!(
                "timed out after {}",
                after(limit)
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(TransportError::HostKey(
                "the server sent no host key".into(),
            )),
        }
    }

    /// Where this host's key is checked and recorded.
    pub fn known_hosts(&self) -> PathBuf {
        known_hosts_path(&self.host)
    }

    pub fn host_settings(&self) -> &Host {
        &self.host
    }

    /// Runs one command on the open connection.
    async fn exec(
        &self,
        handle: &Handle<Client>,
        cmd: CommandSpec,
    ) -> Result<CommandOutput, TransportError> {
        let secs = cmd.timeout.as_secs().max(1);
        // Non-interactive, no rc files, C locale; `timeout` kills the whole process group on the
        // host, which frees the session slot (closing the channel alone would not).
        let wrapped = format!(
            "LC_ALL=C exec timeout -k 5 {secs} sh -c {}",
            shell_quote(&cmd.script)
        );
        let started = Instant::now();
        let work = async {
            let channel = handle
                .channel_open_session()
                .await
                .map_err(|e| TransportError::Io(format!("cannot open a channel: {e}")))?;
            channel
                .exec(true, wrapped.into_bytes())
                .await
                .map_err(|e| TransportError::Io(format!("exec: {e}")))?;
            let (mut reader, writer) = channel.split();
            let stdin = cmd.stdin;
            let feed = async move {
                if let Some(bytes) = stdin {
                    writer
                        .data(&bytes[..])
                        .await
                        .map_err(|e| TransportError::Io(format!("stdin: {e}")))?;
                }
                writer
                    .eof()
                    .await
                    .map_err(|e| TransportError::Io(format!("stdin: {e}")))?;
                Ok::<_, TransportError>(writer)
            };
            let read = async {
                let mut out = CommandOutput {
                    status: -1,
                    ..CommandOutput::default()
                };
                let mut got_status = false;
                while let Some(msg) = reader.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            out.stderr.extend_from_slice(&data)
                        }
                        ChannelMsg::ExitStatus { exit_status } => {
                            out.status = i32::try_from(exit_status).unwrap_or(-1);
                            got_status = true;
                        }
                        ChannelMsg::ExitSignal { .. } => got_status = true,
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                }
                (out, got_status)
            };
            let (fed, (out, got_status)) = tokio::join!(feed, read);
            let writer = fed?;
            let _ = writer.close().await;
            if !got_status {
                return Err(TransportError::Io(
                    "the connection closed before the command ended".into(),
                ));
            }
            Ok(out)
        };
        match tokio::time::timeout(cmd.timeout + REMOTE_GRACE, work).await {
            Ok(Ok(out)) if out.status == 124 && started.elapsed() >= cmd.timeout => {
                Err(TransportError::Timeout {
                    after: cmd.timeout,
                    command: short(&cmd.script),
                })
            }
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                after: cmd.timeout,
                command: short(&cmd.script),
            }),
        }
    }
}

#[async_trait]
impl Transport for SshTransport {
    fn host(&self) -> &str {
        &self.host.name
    }

    fn max_sessions(&self) -> usize {
        self.host.ssh.max_sessions
    }

    fn command_timeout(&self) -> Duration {
        self.host.ssh.command_timeout
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    async fn run(&self, cmd: CommandSpec) -> Result<CommandOutput, TransportError> {
        let handle = self.connection().await?;
        let _slot = self
            .sessions
            .acquire()
            .await
            .map_err(|_| TransportError::Io("session limit closed".into()))?;
        self.exec(&handle, cmd).await
    }
}
