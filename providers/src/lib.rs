//! # kz-providers
//!
//! Transports (how kz reaches a host: [`local`], [`ssh`]) and resource providers ([`file`],
//! [`command`]). They do the I/O the engine decides on, and never print: they return data and errors.

pub mod check;
pub mod command;
pub mod container;
pub mod file;
pub mod haproxy;
pub mod hcloud;
pub mod image;
pub mod local;
pub mod sentinel;
pub mod ssh;
#[allow(unsafe_code)]
mod sys;
pub mod system;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kz_engine::model::{Host, TransportKind};
use kz_engine::provider::{Provider, Providers, Transport, TransportError, TransportFactory};

/// Every provider of this build.
pub fn providers() -> Providers {
    providers_with(hcloud::LbProvider::from_env())
}

/// Every provider, for a lab run (`--lab`): the ones behind an API reach only a stand-in on this
/// machine, whatever the lab's state or a saved plan asks of them.
pub fn lab_providers() -> Providers {
    providers_with(hcloud::LbProvider::for_lab())
}

fn providers_with(lb: hcloud::LbProvider) -> Providers {
    let list: Vec<Arc<dyn Provider>> = vec![
        Arc::new(file::FileProvider),
        Arc::new(command::CommandProvider),
        Arc::new(check::CheckProvider),
        Arc::new(container::ContainerProvider),
        Arc::new(image::ImageProvider),
        Arc::new(lb),
        Arc::new(system::SystemProvider),
        Arc::new(haproxy::HaproxyProvider),
        Arc::new(sentinel::SentinelProvider),
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

    /// Waits, boundedly, for every SSH transport's clean-ups (the kills of aborted commands on
    /// their hosts): after an interrupt, nothing kz started may go on running.
    pub async fn finish_all(&self) {
        let all: Vec<Arc<ssh::SshTransport>> = self
            .ssh
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for t in all {
            t.finish().await;
        }
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

/// How a transport hands a script to `sh`: on standard input, not as an argument, so that whatever
/// secrets it holds stay out of the process list (`ps`, `/proc/PID/cmdline`), on the host as on
/// this machine; only a script marked public (`CommandSpec::public_script`, passed as `public`) with input of its own
/// goes as an argument. Returns the arguments of `sh` (no secret in them) and the bytes to feed it.
///
/// Without input of its own, the script is all there is (`sh -s`), inside `{ } </dev/null` so
/// that its commands still read nothing. With input, a fixed bootstrap (`sh -c` [`BOOTSTRAP`])
/// first reads the script, framed by its line count, with the `read` builtin (which never reads
/// past a newline), then runs it with `eval`: what remains on standard input is the script's
/// input. One shell, one round trip, either way.
pub(crate) fn shell_input(
    script: &str,
    stdin: Option<Vec<u8>>,
    public: bool,
) -> (Vec<String>, Vec<u8>) {
    match stdin {
        None => (
            vec!["-s".into()],
            format!("{{ {script}\n}} </dev/null\n").into_bytes(),
        ),
        // A script that holds no secret goes as an argument: reading it first would cost a
        // `read` per byte.
        Some(payload) if public => (vec!["-c".into(), script.to_string()], payload),
        Some(payload) => {
            let mut text = script.to_string();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            let lines = text.bytes().filter(|b| *b == b'\n').count();
            let mut input = format!("{lines}\n{text}").into_bytes();
            input.extend_from_slice(&payload);
            (vec!["-c".into(), BOOTSTRAP.into()], input)
        }
    }
}

/// Reads a script of `N` lines from standard input (`N` on the first line) and runs it; the rest of
/// standard input is left to the script. It holds no secret: it is the only text on the command line.
pub(crate) const BOOTSTRAP: &str = "IFS= read -r kz_n || exit 125; kz_s=; \
     while [ \"$kz_n\" -gt 0 ]; do IFS= read -r kz_l || exit 125; kz_s=\"$kz_s$kz_l\n\"; \
     kz_n=$((kz_n-1)); done; unset kz_n kz_l; eval \"$kz_s\"";

/// The most standard output a command may leave in memory; the rest is counted, not kept. A
/// plan reads every small file of a host in one command, so this is large, but finite: a host
/// that sends without end must not exhaust this machine's memory.
pub(crate) const STDOUT_LIMIT: usize = 128 << 20;

/// The most error output a command may leave in memory: messages only need its last lines.
pub(crate) const STDERR_LIMIT: usize = 1 << 20;

/// A command's output, kept up to a limit; what comes past it is counted.
#[derive(Debug, Default)]
pub(crate) struct Capped {
    pub bytes: Vec<u8>,
    limit: usize,
    dropped: u64,
}

impl Capped {
    pub fn new(limit: usize) -> Capped {
        Capped {
            bytes: Vec::new(),
            limit,
            dropped: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        let keep = data.len().min(room);
        self.bytes.extend_from_slice(&data[..keep]);
        self.dropped += (data.len() - keep) as u64;
    }
}

/// Standard output and error as kept, with a last line on standard error telling what was
/// dropped past the limits (a batched read then reports its missing sections with that line).
pub(crate) fn kept_output(stdout: Capped, stderr: Capped) -> (Vec<u8>, Vec<u8>) {
    let notes: Vec<String> = [("standard output", &stdout), ("error output", &stderr)]
        .iter()
        .filter(|(_, c)| c.dropped > 0)
        .map(|(name, c)| {
            format!(
                "kz: {} bytes of {name} past the first {} KiB were not kept\n",
                c.dropped,
                c.limit >> 10
            )
        })
        .collect();
    let mut err = stderr.bytes;
    if !notes.is_empty() && !err.is_empty() && !err.ends_with(b"\n") {
        err.push(b'\n');
    }
    for n in notes {
        err.extend_from_slice(n.as_bytes());
    }
    (stdout.bytes, err)
}

/// A command line that runs `script` in a shell of its own (so its syntax cannot break the
/// script around it), the script on that shell's standard input as a here-document, never as an
/// argument: a check holding a secret must not show in `ps`. Its commands read nothing
/// (`</dev/null`). `redirect` goes right after `sh` (`>/dev/null 2>&1`); the text ends with the
/// here-document's closing line.
pub(crate) fn own_shell(script: &str, redirect: &str) -> String {
    // A delimiter that is no line of the script, so the here-document ends where kz says.
    let mut delim = String::from("KZ_EOF");
    while script.lines().any(|l| l == delim) {
        delim.push('_');
    }
    format!("sh{redirect} <<'{delim}'\n{{ {script}\n}} </dev/null\n{delim}\n")
}

/// The last lines of a command's error output, for error messages.
pub(crate) fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
