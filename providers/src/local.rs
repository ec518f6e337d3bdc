//! The `local` transport: commands run on the machine that runs kz, through `sh`, the script on its
//! standard input, in a clean environment.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use kz_engine::model::Host;
use kz_engine::provider::{CommandOutput, CommandSpec, Transport, TransportError, script_summary};

use crate::sys::kill_group;
use crate::{Capped, STDERR_LIMIT, STDOUT_LIMIT, kept_output, shell_input};

#[derive(Debug)]
pub struct LocalTransport {
    host: String,
    command_timeout: Duration,
    max_sessions: usize,
    /// How much standard output and error output a command may leave in memory.
    output_limits: (usize, usize),
}

impl LocalTransport {
    pub fn new(host: &Host) -> LocalTransport {
        LocalTransport {
            host: host.name.clone(),
            command_timeout: host.ssh.command_timeout,
            // Local commands are cheap to start; the machine's cores are the real limit.
            max_sessions: 16,
            output_limits: (STDOUT_LIMIT, STDERR_LIMIT),
        }
    }

    /// The same transport with other limits on the output kept in memory.
    #[must_use]
    pub fn with_output_limits(mut self, stdout: usize, stderr: usize) -> LocalTransport {
        self.output_limits = (stdout, stderr);
        self
    }
}

/// What a local command keeps of kz's environment (besides `LC_ALL=C`, which kz sets): what a
/// login over SSH would give it, and no more.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ"];

/// The search path when kz itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reads a pipe to its end, keeping what the limit allows and counting the rest.
async fn read_capped(pipe: Option<&mut (impl AsyncRead + Unpin)>, limit: usize) -> Capped {
    let mut kept = Capped::new(limit);
    if let Some(p) = pipe {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match p.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => kept.push(&buf[..n]),
            }
        }
    }
    kept
}

/// Kills the command's whole process group if it is dropped before the command ended
/// (timeout, or an apply aborted by a second Ctrl-C).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            kill_group(pid);
        }
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn host(&self) -> &str {
        &self.host
    }

    fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    async fn run(&self, mut cmd: CommandSpec) -> Result<CommandOutput, TransportError> {
        // The script travels on stdin unless it is public, keeping secrets out of `ps`.
        let (args, input) = shell_input(&cmd.script, cmd.stdin.take(), cmd.public_script);
        let mut command = Command::new("sh");
        command.args(args).env_clear();
        // A clean environment: kz's own (`KZ_SECRET_*`, API tokens, database URLs) would be
        // readable in `/proc/PID/environ` by every process of the command.
        for (k, v) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| KEPT_ENV.contains(&k)) {
                command.env(k, v);
            }
        }
        if std::env::var_os("PATH").is_none() {
            command.env("PATH", DEFAULT_PATH);
        }
        let mut child = command
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Io(format!("cannot start sh: {e}")))?;
        let mut guard = GroupGuard(child.id());
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (out_limit, err_limit) = self.output_limits;
        let work = async move {
            let feed = async move {
                if let Some(mut pipe) = stdin {
                    let bytes = input;
                    // A command that does not read its input is not an error.
                    let _ = pipe.write_all(&bytes).await;
                    let _ = pipe.shutdown().await;
                }
            };
            let read_out = read_capped(stdout.as_mut(), out_limit);
            let read_err = read_capped(stderr.as_mut(), err_limit);
            let ((), out, err, status) = tokio::join!(feed, read_out, read_err, child.wait());
            (out, err, status)
        };
        match tokio::time::timeout(cmd.timeout, work).await {
            Ok((stdout, stderr, status)) => {
                guard.0 = None;
                let status = status.map_err(|e| TransportError::Io(format!("wait: {e}")))?;
                let (stdout, stderr) = kept_output(stdout, stderr);
                Ok(CommandOutput {
                    stdout,
                    stderr,
                    status: status.code().unwrap_or(-1),
                })
            }
            Err(_) => {
                drop(guard);
                Err(TransportError::Timeout {
                    after: cmd.timeout,
                    command: script_summary(&cmd.script),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kz_engine::model::{SshSettings, TransportKind};
    use kz_engine::provider::UploadOptions;
    use std::collections::BTreeMap;

    fn local() -> LocalTransport {
        LocalTransport::new(&Host {
            name: "local".into(),
            address: "127.0.0.1".into(),
            labels: BTreeMap::new(),
            settings: Default::default(),
            transport: TransportKind::Local,
            ssh: SshSettings::default(),
        })
    }

    fn spec(script: &str, stdin: Option<&[u8]>, timeout: Duration) -> CommandSpec {
        CommandSpec {
            script: script.into(),
            stdin: stdin.map(<[u8]>::to_vec),
            timeout,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn runs_with_stdin_and_separates_streams() {
        let out = local()
            .run(spec(
                "cat; echo err >&2; exit 3",
                Some(b"in\xff"),
                Duration::from_secs(5),
            ))
            .await
            .expect("runs");
        assert_eq!(out.stdout, b"in\xff");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status, 3);
    }

    #[tokio::test]
    async fn a_script_with_input_arrives_whole_and_its_input_after_it() {
        // Backslashes, leading blanks, quotes, a last line without a newline: all kept.
        let script = "a='x\\y'\n  b=\"$a z\"\nprintf '%s|' \"$b\"; cat; printf '|%s' \"$0\"";
        let out = local()
            .run(spec(script, Some(b"payload\nmore"), Duration::from_secs(5)))
            .await
            .expect("runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "x\\y z|payload\nmore|sh"
        );
        assert_eq!(out.status, 0, "{}", String::from_utf8_lossy(&out.stderr));
        let empty = local()
            .run(spec("", Some(b"x"), Duration::from_secs(5)))
            .await
            .expect("runs");
        assert_eq!(empty.status, 0);
    }

    #[tokio::test]
    async fn a_public_script_goes_as_an_argument_and_a_secret_one_never() {
        // `$0` is `sh` either way; the command line shows the script only when it is public.
        let script = "tr -d '\\n' < /proc/$$/cmdline; printf '|'; cat";
        for public in [true, false] {
            let mut cmd = spec(script, Some(b"input"), Duration::from_secs(5));
            cmd.public_script = public;
            let out = local().run(cmd).await.expect("runs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(text.ends_with("|input"), "{text}");
            assert_eq!(text.contains("cmdline"), public, "{text}");
        }
    }

    #[tokio::test]
    async fn output_past_the_limit_is_counted_not_kept() {
        let out = local()
            .with_output_limits(1000, 100)
            .run(spec(
                "head -c 5000 /dev/zero; head -c 300 /dev/zero | tr '\\0' e >&2",
                None,
                Duration::from_secs(5),
            ))
            .await
            .expect("runs");
        assert_eq!(out.stdout.len(), 1000);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&"e".repeat(100)), "{err}");
        assert!(
            err.contains("kz: 4000 bytes of standard output past the first 0 KiB were not kept"),
            "{err}"
        );
        assert!(err.contains("kz: 200 bytes of error output"), "{err}");
    }

    #[tokio::test]
    async fn an_owner_that_looks_like_an_option_is_not_read_as_one() {
        // `chown --help` prints its help and exits 0: the upload would "succeed", unowned.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let opts = UploadOptions {
            owner: Some("--help".into()),
            timeout: Duration::from_secs(5),
            ..UploadOptions::default()
        };
        let err = local()
            .upload(path.to_str().expect("utf8"), b"x".to_vec(), &opts)
            .await
            .expect_err("`--help` is no user");
        assert!(err.to_string().contains("invalid user"), "{err}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("survived");
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let err = local()
            .run(spec(&script, None, Duration::from_millis(200)))
            .await
            .expect_err("times out");
        assert!(
            err.to_string().starts_with("command timed out after 200ms"),
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !marker.exists(),
            "a child of the timed-out command kept running"
        );
    }

    #[tokio::test]
    async fn upload_is_atomic_with_mode_and_literal_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub dir/it's $(x); `y`\nz");
        let p = path.to_str().expect("utf8");
        let opts = UploadOptions {
            mode: Some(0o640),
            timeout: Duration::from_secs(5),
            ..UploadOptions::default()
        };
        local()
            .upload(p, b"hello".to_vec(), &opts)
            .await
            .expect("upload");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".kz-upload"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[tokio::test]
    async fn upload_removes_leftovers_of_dead_and_zombie_uploads_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A zombie: a child that exited and is not reaped yet.
        let mut zombie = std::process::Command::new("true").spawn().expect("spawn");
        let zpid = zombie.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{zpid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
        {
            assert!(std::time::Instant::now() < deadline, "no zombie");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let live = format!(".kz-upload.{}.0123456789ab", std::process::id());
        let names = [
            live.clone(),
            format!(".kz-upload.{zpid}.0123456789ab"),
            // Above Linux's largest pid_max (2^22): no process has it.
            ".kz-upload.4194305.0123456789ab".to_string(),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), "partial").expect("write");
        }
        let p = dir.path().join("f");
        let opts = UploadOptions {
            timeout: Duration::from_secs(5),
            ..UploadOptions::default()
        };
        local()
            .upload(p.to_str().expect("utf8"), b"new".to_vec(), &opts)
            .await
            .expect("upload");
        let _ = zombie.wait();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![live, "f".to_string()]);
    }

    #[tokio::test]
    async fn an_upload_whose_input_ends_early_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, "old").expect("write");
        let opts = UploadOptions {
            timeout: Duration::from_secs(5),
            ..UploadOptions::default()
        };
        let mut cmd = kz_engine::upload::upload_command(
            p.to_str().expect("utf8"),
            vec![b'x'; 100_000],
            &opts,
        );
        // The input cut short, as by a killed kz or a dropped session.
        if let Some(input) = cmd.stdin.as_mut() {
            input.truncate(70_000);
        }
        let out = local().run(cmd).await.expect("run");
        assert_ne!(out.status, 0);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("ended before its 100000 bytes"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }
}
