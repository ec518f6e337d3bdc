//! The floor of the SSH benchmark (bench/ssh.sh): with the same SSH library as kz (russh), open one
//! connection per host, all at once, authenticate with one ed25519 key, run `true` and wait for its
//! exit status. Nothing else: no known_hosts check, no batching, no state. kz cannot reach its hosts
//! faster than this, so its plan and apply are measured against it.
//!
//! ```text
//! ssh_floor --key PATH [--user root] [--targets FILE] [--command CMD] HOST:PORT...
//! ```
//!
//! `--targets FILE` reads more `HOST:PORT` targets, one a line (blank lines and `#` comments
//! skipped). `--command` runs CMD instead of `true` (to price a command's own work on the hosts).
//! Exits 0 only when the command exited 0 on every host; prints the wall time of the whole run.

// An example is a command-line program: its report goes to stdout and its errors to stderr, which
// the workspace lints deny for library code.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate, load_secret_key};

/// Gives up on a host after this long (connect, handshake, authentication and the command).
const PER_HOST: Duration = Duration::from_secs(30);

/// Accepts any server key: this measures our own loopback servers, never a real host.
struct AcceptAny;

impl client::Handler for AcceptAny {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

struct Args {
    key: String,
    user: String,
    command: String,
    targets: Vec<(String, u16)>,
}

fn usage(problem: &str) -> String {
    let sep = if problem.is_empty() { "" } else { "\n" };
    format!(
        "{problem}{sep}usage: ssh_floor --key PATH [--user root] [--targets FILE] [--command CMD] HOST:PORT..."
    )
}

fn target(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| usage(&format!("`{s}` is not HOST:PORT")))?;
    let port = port
        .parse()
        .map_err(|_| usage(&format!("bad port in `{s}`")))?;
    Ok((host.to_string(), port))
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut key, mut user, mut targets) = (None, "root".to_string(), Vec::new());
    let mut command = "true".to_string();
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--key" => key = Some(value("--key")?),
            "--user" => user = value("--user")?,
            "--command" => command = value("--command")?,
            "--targets" => {
                let file = value("--targets")?;
                let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
                for line in text.lines().map(str::trim) {
                    if !line.is_empty() && !line.starts_with('#') {
                        targets.push(target(line)?);
                    }
                }
            }
            "-h" | "--help" => return Err(usage("")),
            _ => targets.push(target(&a)?),
        }
    }
    let key = key.ok_or_else(|| usage("--key is required"))?;
    if targets.is_empty() {
        return Err(usage("no HOST:PORT given"));
    }
    Ok(Args {
        key,
        user,
        command,
        targets,
    })
}

/// One host: connect, authenticate, run the command; its exit status.
async fn one(
    config: Arc<client::Config>,
    key: Arc<PrivateKey>,
    user: String,
    command: String,
    host: String,
    port: u16,
) -> Result<u32, String> {
    let mut handle: Handle<AcceptAny> = client::connect(config, (host.as_str(), port), AcceptAny)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, None))
        .await
        .map_err(|e| format!("auth: {e}"))?;
    if !auth.success() {
        return Err("auth: key refused".into());
    }
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| format!("exec: {e}"))?;
    let mut status = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    status.ok_or_else(|| "the channel closed without an exit status".into())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ssh_floor: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ssh_floor: tokio runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let key = match load_secret_key(&args.key, None) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            eprintln!("ssh_floor: cannot load {}: {e}", args.key);
            return std::process::ExitCode::from(2);
        }
    };
    let config = Arc::new(client::Config {
        nodelay: true,
        ..client::Config::default()
    });
    let total = args.targets.len();
    let failures = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (host, port) in args.targets {
            let (config, key) = (Arc::clone(&config), Arc::clone(&key));
            let (user, command) = (args.user.clone(), args.command.clone());
            tasks.spawn(async move {
                let label = format!("{host}:{port}");
                let r = tokio::time::timeout(PER_HOST, one(config, key, user, command, host, port))
                    .await;
                (label, r)
            });
        }
        let mut failures = 0usize;
        while let Some(joined) = tasks.join_next().await {
            let problem = match joined {
                Ok((_, Ok(Ok(0)))) => continue,
                Ok((label, Ok(Ok(status)))) => format!("{label}: the command exited {status}"),
                Ok((label, Ok(Err(e)))) => format!("{label}: {e}"),
                Ok((label, Err(_))) => format!("{label}: timed out after {PER_HOST:?}"),
                Err(e) => format!("task: {e}"),
            };
            eprintln!("ssh_floor: {problem}");
            failures += 1;
        }
        failures
    });
    let elapsed = started.elapsed();
    println!(
        "ssh_floor: {}/{total} hosts ran the command in {:.1} ms",
        total - failures,
        elapsed.as_secs_f64() * 1000.0
    );
    if failures == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
