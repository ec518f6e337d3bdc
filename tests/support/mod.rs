//! A small harness that runs the real `kz` binary on stacks written into temp directories.
//! Every stack gets its own scratch root for the files it manages, so tests never collide.

#![allow(dead_code)]

pub mod lab;
pub mod memory;
pub mod pg;
pub mod redis;
pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn kz_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kz")
}

/// A stack directory plus a scratch directory (`root`) that its resources write into.
pub struct TestStack {
    pub dir: tempfile::TempDir,
    pub root: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

/// The result of one `kz` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(
            self.code, expected,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl TestStack {
    /// A stack named `name` with one local host, `local`.
    pub fn new(name: &str) -> TestStack {
        let s = TestStack {
            dir: tempfile::tempdir().expect("stack dir"),
            root: tempfile::tempdir().expect("root dir"),
            envs: Vec::new(),
        };
        s.write(
            "stack.toml",
            &format!(
                "[stack]\nname = \"{name}\"\n\n[hosts.local]\ntransport = \"local\"\nlabels = {{ role = \"app\" }}\n"
            ),
        );
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The scratch root, as text for TOML.
    pub fn root(&self) -> String {
        self.root.path().display().to_string()
    }

    /// A path inside the scratch root.
    pub fn at(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Writes a stack file; `@ROOT@` stands for the scratch root.
    pub fn write(&self, name: &str, text: &str) {
        let text = text.replace("@ROOT@", &self.root());
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write stack file");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove stack file");
    }

    pub fn env(mut self, k: &str, v: &str) -> TestStack {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// A `kz` command on this stack: `DIR` in `args` stands for the stack directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let dir = self.path().display().to_string();
        let mut c = Command::new(kz_bin());
        if !args.contains(&"--color") {
            c.arg("--color").arg("never");
        }
        c.args(
            args.iter()
                .map(|a| if *a == "DIR" { dir.as_str() } else { a }),
        );
        c.env("LANG", "C.UTF-8")
            .env_remove("LC_ALL")
            .env_remove("NO_COLOR");
        // Tests bring their own keys and agents: nothing of the developer's may leak in.
        c.env_remove("SSH_AUTH_SOCK");
        for (k, _) in std::env::vars() {
            if k.starts_with("KZ_SECRET_") {
                c.env_remove(k);
            }
        }
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    pub fn kz(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run kz"))
    }

    /// Like [`TestStack::kz`], without the given environment variables (a secret unset for one
    /// run).
    pub fn kz_without(&self, vars: &[&str], args: &[&str]) -> Run {
        let mut c = self.command(args);
        for v in vars {
            c.env_remove(v);
        }
        Run::from(c.output().expect("run kz"))
    }

    /// Like [`TestStack::kz`], but kz is killed and the test fails when it runs longer than
    /// `limit`: for inputs that used to hang.
    pub fn kz_within(&self, limit: std::time::Duration, args: &[&str]) -> Run {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kz");
        // The pipes are drained while kz runs: a long output (an apply of a big stack) would
        // fill them and block kz on its writes, which this loop would take for a hang.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for kz") {
                break status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kz {} ran longer than {limit:?}", args.join(" "));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        Run::from(Output {
            status,
            stdout: out.join().expect("stdout reader"),
            stderr: err.join().expect("stderr reader"),
        })
    }

    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path().join(".kz/state.json")).expect("state file");
        serde_json::from_str(&text).expect("state is valid JSON")
    }

    pub fn state_addresses(&self) -> Vec<String> {
        self.state()["resources"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Every process's command line, arguments joined by spaces.
pub fn command_lines() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .collect()
}

/// Polls `done` every 200 ms until it holds, failing the test after `within`.
pub fn wait_until(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
