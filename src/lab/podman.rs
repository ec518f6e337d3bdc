//! Podman, driven through its command line: the lab's only way to make and break hosts.
//!
//! Every call runs under a deadline and with kz's own containers.conf (`CONTAINERS_CONF`), so the
//! lab works on a machine whose podman defaults fail (crun, default ulimits; see
//! ../shared/notes/lab.md) without editing the machine's configuration.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What kz's containers.conf holds: runc, and no ulimits forced on containers.
pub const CONTAINERS_CONF: &str =
    "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n";

/// The default deadline of one podman call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Podman {
    conf: PathBuf,
}

impl Podman {
    /// A driver whose calls use the containers.conf at `conf`, written there if missing.
    pub fn new(conf: &Path) -> Result<Podman, String> {
        if std::fs::read_to_string(conf).ok().as_deref() != Some(CONTAINERS_CONF) {
            if let Some(dir) = conf.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            kz_engine::ops::write_text_atomically(conf, CONTAINERS_CONF)?;
        }
        Ok(Podman {
            conf: conf.to_path_buf(),
        })
    }

    /// Runs `podman ARGS` and returns its standard output, trimmed; an error carries its stderr.
    pub async fn run(&self, args: &[&str]) -> Result<String, String> {
        self.run_with(args, None, CALL_TIMEOUT).await
    }

    /// Like `run`, feeding `stdin` and waiting at most `timeout`.
    pub async fn run_with(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, String> {
        let mut cmd = Command::new("podman");
        cmd.args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = format!("podman {}", args.join(" "));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{shown}: cannot start podman: {e}"))?;
        let input = stdin.map(<[u8]>::to_vec);
        let mut pipe = child.stdin.take();
        let work = async move {
            if let (Some(bytes), Some(mut p)) = (input, pipe.take()) {
                // A failed write shows as podman's own error below.
                let _ = p.write_all(&bytes).await;
                drop(p);
            }
            child.wait_with_output().await
        };
        let out = match tokio::time::timeout(timeout, work).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(format!("{shown}: {e}")),
            Err(_) => {
                return Err(format!(
                    "{shown}: no answer after {}",
                    kz_engine::units::format_duration(timeout)
                ));
            }
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "{shown}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Whether `podman ARGS` succeeds (for `exists` queries).
    pub async fn succeeds(&self, args: &[&str]) -> bool {
        self.run(args).await.is_ok()
    }
}
