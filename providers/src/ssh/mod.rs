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
use kz_engine::provider::{
    CommandOutput, CommandSpec, Transport, TransportError, script_summary, shell_quote,
};

use crate::{Capped, STDERR_LIMIT, STDOUT_LIMIT, kept_output, shell_input};
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
    /// Kills of aborted commands still on their way to the host.
    cleanups: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// How much standard output and error output a command may leave in memory.
    output_limits: (usize, usize),
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

impl SshTransport {
    pub fn new(host: Host, jump: Option<Arc<SshTransport>>) -> SshTransport {
        SshTransport {
            sessions: Arc::new(Semaphore::new(host.ssh.max_sessions.max(1))),
            handshakes: Arc::new(Semaphore::new(JUMP_HANDSHAKES)),
            host,
            jump,
            conn: OnceCell::new(),
            connections: AtomicUsize::new(0),
            cleanups: Arc::new(Mutex::new(Vec::new())),
            output_limits: (STDOUT_LIMIT, STDERR_LIMIT),
        }
    }

    /// The same transport with other limits on the output kept in memory.
    #[must_use]
    pub fn with_output_limits(mut self, stdout: usize, stderr: usize) -> SshTransport {
        self.output_limits = (stdout, stderr);
        self
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
        handle: &Arc<Handle<Client>>,
        mut cmd: CommandSpec,
    ) -> Result<CommandOutput, TransportError> {
        let secs = cmd.timeout.as_millis().div_ceil(1000).max(1);
        // Non-interactive, no rc files, C locale; `timeout` kills the whole process group on the
        // host, which frees the session slot (closing the channel alone would not). The shell
        // first reports its pid, which `timeout` inherits through `exec` and makes its process
        // group: an abort kills that group. The script travels on stdin unless it is public (see
        // `shell_input`), keeping whatever secrets it holds out of the host's process list.
        let (args, stdin) = shell_input(&cmd.script, cmd.stdin.take(), cmd.public_script);
        let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        let wrapped = format!(
            "printf 'kz-pid:%s\\n' \"$$\" >&2; LC_ALL=C exec timeout -k 5 {secs} sh {}",
            args.join(" ")
        );
        let (out_limit, err_limit) = self.output_limits;
        let started = Instant::now();
        let pid = Arc::new(Mutex::new(None::<u32>));
        let mut guard = AbortGuard {
            pid: Arc::clone(&pid),
            handle: Arc::clone(handle),
            cleanups: Arc::clone(&self.cleanups),
            finished: false,
        };
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
            // Feeding stdin races the output: a command that exits without reading all its input
            // must not leave kz waiting for window space that never comes.
            let mut feed = Box::pin(async {
                let _ = writer.data(&stdin[..]).await;
                let _ = writer.eof().await;
            });
            let read = async {
                let mut out = CommandOutput {
                    status: -1,
                    ..CommandOutput::default()
                };
                // Kept up to the limits; the rest is counted.
                let mut kept_out = Capped::new(out_limit);
                let mut kept_err = Capped::new(err_limit);
                let mut got_status = false;
                let mut pid_seen = false;
                while let Some(msg) = reader.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => kept_out.push(&data),
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            if pid_seen {
                                kept_err.push(&data);
                                continue;
                            }
                            // The pid line comes first, and short: it is taken out before the
                            // limit applies.
                            let mut head = std::mem::take(&mut kept_err.bytes);
                            head.extend_from_slice(&data);
                            if let Some(nl) = head.iter().position(|b| *b == b'\n') {
                                pid_seen = true;
                                let line = String::from_utf8_lossy(&head[..nl]).into_owned();
                                if let Some(p) = line.strip_prefix("kz-pid:") {
                                    if let Ok(mut slot) = pid.lock() {
                                        *slot = p.trim().parse().ok();
                                    }
                                    head.drain(..=nl);
                                }
                            }
                            kept_err.push(&head);
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
                (out.stdout, out.stderr) = kept_output(kept_out, kept_err);
                (out, got_status)
            };
            tokio::pin!(read);
            let mut fed = false;
            let (out, got_status) = loop {
                tokio::select! {
                    () = &mut feed, if !fed => fed = true,
                    r = &mut read => break r,
                }
            };
            drop(feed);
            let _ = writer.close().await;
            if !got_status {
                return Err(TransportError::Io(
                    "the connection closed before the command ended".into(),
                ));
            }
            Ok(out)
        };
        let result = tokio::time::timeout(cmd.timeout + REMOTE_GRACE, work).await;
        let timed_out = || TransportError::Timeout {
            after: cmd.timeout,
            command: script_summary(&cmd.script),
        };
        match result {
            // 124: `timeout` ended it; 137: killed after the grace of `-k`.
            Ok(Ok(out)) if matches!(out.status, 124 | 137) && started.elapsed() >= cmd.timeout => {
                guard.finished = true;
                Err(timed_out())
            }
            Ok(r) => {
                guard.finished = true;
                r
            }
            // The host did not end it in time: the guard kills its process group.
            Err(_) => Err(timed_out()),
        }
    }

    /// Waits (boundedly) for the kills of aborted commands to reach their hosts.
    async fn wait_cleanups(&self) {
        let pending: Vec<tokio::task::JoinHandle<()>> = match self.cleanups.lock() {
            Ok(mut c) => c.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for h in pending {
            let _ = tokio::time::timeout(Duration::from_secs(6), h).await;
        }
    }
}

/// Kills a command's process group on its host when its future is dropped before the command
/// ended: a second Ctrl-C, or a local deadline the host did not honour.
struct AbortGuard {
    pid: Arc<Mutex<Option<u32>>>,
    handle: Arc<Handle<Client>>,
    cleanups: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    finished: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(pid) = self.pid.lock().ok().and_then(|p| *p) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let handle = Arc::clone(&self.handle);
        let task = rt.spawn(async move {
            let kill = async {
                let ch = handle.channel_open_session().await.ok()?;
                ch.exec(true, format!("kill -KILL -- -{pid} {pid} 2>/dev/null"))
                    .await
                    .ok()?;
                let mut ch = ch;
                while let Some(msg) = ch.wait().await {
                    if matches!(msg, ChannelMsg::Close) {
                        break;
                    }
                }
                Some(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), kill).await;
        });
        if let Ok(mut c) = self.cleanups.lock() {
            c.push(task);
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

    async fn finish(&self) {
        self.wait_cleanups().await;
    }

    async fn verify_new_login(&self) -> Result<(), TransportError> {
        // A connection of its own, never cached: the shared one was authenticated before the
        // change and proves nothing about the next login.
        let limit = self.host.ssh.connect_timeout;
        let handle = match tokio::time::timeout(limit, self.open(None)).await {
            Ok(r) => Arc::new(r?),
            Err(_) => {
                return Err(TransportError::Connect(format!(
                    "timed out after {}",
                    after(limit)
                )));
            }
        };
        let out = self
            .exec(
                &handle,
                CommandSpec {
                    script: "true".into(),
                    timeout: limit,
                    public_script: true,
                    ..Default::default()
                },
            )
            .await;
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        match out {
            Ok(o) if o.status == 0 => Ok(()),
            Ok(o) => Err(TransportError::Io(format!(
                "a new login ran `true` but it exited {}",
                o.status
            ))),
            Err(e) => Err(e),
        }
    }
}
