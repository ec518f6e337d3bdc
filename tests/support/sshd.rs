//! Real OpenSSH servers for tests: each `Sshd` is an `sshd -D` on its own loopback address and port,
//! with its own host key, accepting the test client keys. Stopped (killed) on drop.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// A key pair made with ssh-keygen.
pub struct KeyPair {
    pub private: PathBuf,
    pub public: String,
}

pub fn keygen(dir: &Path, name: &str, kind: &str) -> KeyPair {
    let private = dir.join(name);
    let mut args = vec!["-q", "-t", kind, "-N", "", "-C", name, "-f"];
    let p = private.to_str().expect("utf8 path");
    args.push(p);
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    let st = Command::new("ssh-keygen")
        .args(&args)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(st.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("pub key");
    KeyPair {
        private,
        public: public.trim().to_string(),
    }
}

/// A fresh loopback address for each server, so each looks like a host of its own.
pub fn next_address() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed) + std::process::id() % 200 * 50;
    format!("127.0.{}.{}", 100 + (n / 250) % 150, 1 + n % 250)
}

fn free_port(address: &str) -> u16 {
    TcpListener::bind((address, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Sshd {
    pub address: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub host_key: KeyPair,
    child: Child,
}

impl Sshd {
    /// Starts a server that accepts the given public keys for root.
    pub fn start(authorized: &[&str]) -> Sshd {
        Self::start_with(authorized, "")
    }

    /// Starts a server with extra `sshd_config` lines (they come first, so they win: sshd keeps the
    /// first value of a keyword).
    pub fn start_with(authorized: &[&str], extra_config: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (apt-get install openssh-server); .ci/run does"
        );
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let host_key = keygen(dir.path(), "host_key", "ed25519");
        let auth = dir.path().join("authorized_keys");
        std::fs::write(&auth, authorized.join("\n") + "\n").expect("authorized_keys");
        let address = next_address();
        let port = free_port(&address);
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "{extra_config}\nListenAddress {address}:{port}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n\
                 PidFile {}\nAllowTcpForwarding yes\nLogLevel ERROR\nMaxStartups 200\nMaxSessions 20\n",
                host_key.private.display(),
                auth.display(),
                dir.path().join("sshd.pid").display(),
            ),
        )
        .expect("sshd_config");
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((address.as_str(), port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("sshd on {address}:{port} exited ({status}): {err}");
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not start on {address}:{port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Keep draining sshd's log so it can never block on a full pipe.
        if let Some(mut e) = child.stderr.take() {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut e, &mut std::io::sink());
            });
        }
        Sshd {
            address,
            port,
            dir,
            host_key,
            child,
        }
    }

    /// The known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        let mut parts = self.host_key.public.split(' ');
        let (kind, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        format!("[{}]:{} {kind} {key}", self.address, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes every process of this server (SIGSTOP): TCP still connects, nothing answers.
    pub fn freeze(&self) {
        signal(self.child.id(), "STOP");
    }

    pub fn thaw(&self) {
        signal(self.child.id(), "CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

impl Drop for Sshd {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stack's stack.toml for SSH hosts, one `[hosts.NAME]` per server, with the given key and
/// known_hosts file.
pub fn ssh_stack_toml(
    name: &str,
    hosts: &[(&str, &Sshd)],
    key: &Path,
    known_hosts: &Path,
    extra_ssh: &str,
) -> String {
    let mut t = format!(
        "[stack]\nname = \"{name}\"\n\n[ssh]\nuser = \"root\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\n{extra_ssh}\n",
        key.display(),
        known_hosts.display()
    );
    for (h, s) in hosts {
        t.push_str(&format!(
            "\n[hosts.{h}]\naddress = \"{}\"\nlabels = {{ role = \"app\" }}\nssh = {{ port = {} }}\n",
            s.address, s.port
        ));
    }
    t
}

/// An ssh-agent of its own, on a socket in `dir`, holding the given keys; stopped on drop.
pub struct Agent {
    pub sock: PathBuf,
    child: Child,
}

impl Agent {
    pub fn start(dir: &Path, keys: &[&Path]) -> Agent {
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) is needed");
        let agent = Agent { sock, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !agent.sock.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        for key in keys {
            // The socket can exist a moment before the agent accepts on it: retry, boundedly.
            let mut tries = 0;
            loop {
                let added = Command::new("ssh-add")
                    .arg(key)
                    .env("SSH_AUTH_SOCK", &agent.sock)
                    .output()
                    .expect("ssh-add");
                if added.status.success() {
                    break;
                }
                tries += 1;
                assert!(
                    tries < 100,
                    "ssh-add {}: {}",
                    key.display(),
                    String::from_utf8_lossy(&added.stderr)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
