//! Uploads interrupted half-way, through the real `kz` binary, locally and against a real sshd
//! (tests/support/sshd.rs): the target keeps its old content, and what a killed upload leaves
//! behind is removed by the next run.
//!
//! The interruption is made deterministic by a `dd` shim first in the PATH of the upload's shell:
//! it marks that the upload started, then waits for the test's go before running the real `dd`.
//! Meanwhile kz has written at most a pipe's worth of a 2 MiB content, and the test kills it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::sshd::{KeyPair, Sshd, keygen, ssh_stack_toml};
use support::{TestStack, read};

/// A pid above Linux's largest `pid_max` (2^22): no process can have it.
const DEAD_PID: u32 = 4_194_305;

/// The new content: 8 MiB, far more than a pipe and an SSH channel window hold. Binary, so that
/// the plan shows its digest rather than a line diff.
fn big_content() -> Vec<u8> {
    (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A `dd` that, once armed, marks that it started and waits for the test's go before doing its
/// work.
struct DdShim {
    dir: tempfile::TempDir,
}

impl DdShim {
    fn new() -> DdShim {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let script = format!(
            "#!/bin/sh\nif [ -e {d}/armed ]; then\nrm -f {d}/armed\n: > {d}/started\ni=0\n\
             while [ ! -e {d}/go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\nfi\n\
             exec /usr/bin/dd \"$@\"\n"
        );
        let dd = dir.path().join("dd");
        std::fs::write(&dd, script).expect("write shim");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dd, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        DdShim { dir }
    }

    /// Makes the next `dd` wait for [`DdShim::go`].
    fn arm(&self) {
        std::fs::write(self.dir.path().join("armed"), "").expect("arm");
    }

    /// A PATH that finds the shim first.
    fn path_var(&self) -> String {
        format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.dir.path().display()
        )
    }

    #[track_caller]
    fn wait_started(&self, kz: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.dir.path().join("started").exists() {
            if let Ok(Some(st)) = kz.try_wait() {
                panic!("kz ended ({st}) before its upload started");
            }
            assert!(Instant::now() < deadline, "the upload did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn go(&self) {
        std::fs::write(self.dir.path().join("go"), "").expect("go");
    }
}

/// The `.kz-upload.*` files in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".kz-upload."))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[track_caller]
fn wait_no_leftovers(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !leftovers(dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the interrupted upload did not end: {:?}",
            leftovers(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn wait_exit(kz: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while kz.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = kz.kill();
            let _ = kz.wait();
            panic!("{what} did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Writes the module managing `path` (relative to the scratch root) with `files/content`.
fn file_module(s: &TestStack, on: &str, path: &str, content: &[u8]) {
    std::fs::create_dir_all(s.path().join("files")).expect("mkdir files");
    std::fs::write(s.path().join("files/content"), content).expect("write content");
    s.write(
        "01_files.toml",
        &format!(
            "[[file]]\nname = \"conf\"\non = [\"{on}\"]\npath = \"@ROOT@/{path}\"\nsource = \"files/content\"\n"
        ),
    );
}

fn spawn(s: &TestStack, args: &[&str], path_var: Option<&str>) -> Child {
    let mut c = s.command(args);
    if let Some(p) = path_var {
        c.env("PATH", p);
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kz")
}

/// Applies the old content, then starts applying the new one, kills kz with SIGKILL while its
/// upload has only started, lets the upload's shell go on with what it got, and checks that the
/// target still holds the old content and no temporary file is left.
fn kill_9_mid_upload(s: &TestStack, on: &str, shim: &DdShim) {
    let target = s.at("etc/app.conf");
    file_module(s, on, "etc/app.conf", b"old\n");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(read(&target), "old\n");

    let new = big_content();
    assert!(new.len() > 1024 * 1024);
    file_module(s, on, "etc/app.conf", &new);
    shim.arm();
    let mut kz = spawn(s, &["apply", "DIR", "--yes"], Some(&shim.path_var()));
    shim.wait_started(&mut kz);
    kz.kill().expect("kill -9 kz");
    let _ = kz.wait();
    shim.go();
    wait_no_leftovers(&s.at("etc"));
    let now = std::fs::read(&target).expect("read target");
    assert!(
        now == b"old\n" || now == new,
        "the target holds a mix: {} bytes, neither the old 4 nor the new {}",
        now.len(),
        new.len()
    );
    // kz was killed long before it could send everything: the new content cannot have arrived.
    assert_eq!(now, b"old\n", "the interrupted upload replaced the target");

    // The next run finishes the job.
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert!(
        std::fs::read(&target).expect("read") == new,
        "the next apply did not write the new content"
    );
    assert!(leftovers(&s.at("etc")).is_empty());
}

#[test]
fn kill_9_of_kz_mid_upload_keeps_the_old_content_locally() {
    let s = TestStack::new("upl");
    kill_9_mid_upload(&s, "local", &DdShim::new());
}

/// A client key, known_hosts and HOME of its own, and an sshd whose sessions find the shim first.
struct SshSetup {
    dir: tempfile::TempDir,
    key: KeyPair,
    sshd: Sshd,
}

impl SshSetup {
    fn new(shim: &DdShim) -> SshSetup {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = keygen(dir.path(), "id_test", "ed25519");
        let sshd = Sshd::start_with(&[&key.public], &format!("SetEnv PATH={}", shim.path_var()));
        std::fs::write(
            dir.path().join("known_hosts"),
            sshd.known_hosts_line() + "\n",
        )
        .expect("known_hosts");
        SshSetup { dir, key, sshd }
    }

    fn stack(&self) -> TestStack {
        let s = TestStack::new("upl").env("HOME", &self.dir.path().display().to_string());
        let known: PathBuf = self.dir.path().join("known_hosts");
        s.write(
            "stack.toml",
            &ssh_stack_toml("upl", &[("web", &self.sshd)], &self.key.private, &known, ""),
        );
        s
    }
}

#[test]
fn kill_9_of_kz_mid_upload_keeps_the_old_content_over_ssh() {
    let shim = DdShim::new();
    let setup = SshSetup::new(&shim);
    let s = setup.stack();
    kill_9_mid_upload(&s, "web", &shim);
}

#[test]
fn a_second_ctrl_c_leftover_is_removed_by_the_next_upload_but_a_live_one_is_kept() {
    let s = TestStack::new("upl");
    let shim = DdShim::new();
    let dir = s.at("etc");
    let target = dir.join("app.conf");
    file_module(&s, "local", "etc/app.conf", b"old\n");
    s.kz(&["apply", "DIR", "--yes"]).code(0);

    let new = big_content();
    file_module(&s, "local", "etc/app.conf", &new);
    shim.arm();
    let mut kz = spawn(&s, &["apply", "DIR", "--yes"], Some(&shim.path_var()));
    shim.wait_started(&mut kz);
    // Once stops starting changes, twice aborts the running ones: their processes are killed.
    signal(kz.id(), "INT");
    std::thread::sleep(Duration::from_millis(300));
    signal(kz.id(), "INT");
    wait_exit(&mut kz, "kz after two Ctrl-C");
    shim.go();
    assert_eq!(read(&target), "old\n");
    let left = leftovers(&dir);
    assert_eq!(left.len(), 1, "the killed upload left {left:?}");

    // An upload of a live process (this test's own pid) in the same directory must be kept.
    let live = format!(".kz-upload.{}.0123456789ab", std::process::id());
    std::fs::write(dir.join(&live), "in progress").expect("write");
    // And one of a process that is gone must go.
    let dead = format!(".kz-upload.{DEAD_PID}.ba9876543210");
    std::fs::write(dir.join(&dead), "partial").expect("write");

    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert!(
        std::fs::read(&target).expect("read") == new,
        "the next apply did not write the new content"
    );
    assert_eq!(
        leftovers(&dir),
        vec![live],
        "only the live upload's file stays"
    );
}

#[test]
fn temporaries_of_a_killed_state_write_are_removed_by_the_next_run() {
    let s = TestStack::new("upl");
    file_module(&s, "local", "etc/app.conf", b"old\n");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let kz_dir = s.path().join(".kz");
    let dead = [
        format!(".state.json.{DEAD_PID}.0123456789abcdef.tmp"),
        format!(".state.json.backup.{DEAD_PID}.fedcba9876543210.tmp"),
    ];
    for n in &dead {
        std::fs::write(kz_dir.join(n), "{\"partial\":").expect("write");
    }
    let live = format!(".state.json.{}.00112233aabbccdd.tmp", std::process::id());
    std::fs::write(kz_dir.join(&live), "{").expect("write");

    file_module(&s, "local", "etc/app.conf", b"new\n");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let mut tmp: Vec<String> = std::fs::read_dir(&kz_dir)
        .expect("ls .kz")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    tmp.sort();
    assert_eq!(tmp, vec![live], "temporaries of dead writers are left");
}
