//! The SSH transport against real OpenSSH servers on loopback (Debian's openssh-server).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kz_engine::model::{Host, SshSettings, TransportKind};
use kz_engine::provider::{CommandSpec, Transport, UploadOptions};
use kz_providers::Transports;
use support::sshd::{Agent, KeyPair, Sshd, keygen, ssh_stack_toml};
use support::{TestStack, read};

/// A client key, a known_hosts file and a HOME of their own.
struct Client {
    dir: tempfile::TempDir,
    key: KeyPair,
}

impl Client {
    fn new() -> Client {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = keygen(dir.path(), "id_test", "ed25519");
        Client { dir, key }
    }
    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }
    fn trust(&self, servers: &[&Sshd]) {
        let lines: Vec<String> = servers.iter().map(|s| s.known_hosts_line()).collect();
        std::fs::write(self.known_hosts(), lines.join("\n") + "\n").expect("known_hosts");
    }
    fn settings(&self, s: &Sshd) -> SshSettings {
        SshSettings {
            user: "root".into(),
            port: s.port,
            identity: vec![self.key.private.display().to_string()],
            known_hosts: Some(self.known_hosts().display().to_string()),
            connect_timeout: Duration::from_secs(3),
            ..SshSettings::default()
        }
    }
    fn host(&self, name: &str, s: &Sshd) -> Host {
        Host {
            name: name.into(),
            address: s.address.clone(),
            labels: BTreeMap::new(),
            settings: Default::default(),
            transport: TransportKind::Ssh,
            ssh: self.settings(s),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn transport(host: Host) -> Arc<dyn Transport> {
    let t = Transports::new(BTreeMap::from([(host.name.clone(), host.clone())]));
    use kz_engine::provider::TransportFactory;
    t.transport(&host).expect("transport")
}

fn spec(script: &str, stdin: Option<Vec<u8>>, timeout: Duration) -> CommandSpec {
    CommandSpec {
        script: script.into(),
        stdin,
        timeout,
        ..Default::default()
    }
}

#[test]
fn exec_returns_stdout_stderr_status_and_takes_stdin() {
    let c = Client::new();
    let s = Sshd::start(&[&c.key.public]);
    c.trust(&[&s]);
    let t = transport(c.host("h1", &s));
    runtime().block_on(async {
        let out = t
            .run(spec(
                "cat; echo to-err >&2; echo $LC_ALL; exit 7",
                Some(b"in\x00put\n".to_vec()),
                Duration::from_secs(10),
            ))
            .await
            .expect("run");
        assert_eq!(out.stdout, b"in\x00put\nC\n");
        assert_eq!(out.stderr, b"to-err\n");
        assert_eq!(out.status, 7);
        // The same connection serves many commands, several at once.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..12 {
            let t = Arc::clone(&t);
            set.spawn(async move {
                t.run(spec(&format!("echo {i}"), None, Duration::from_secs(10)))
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.expect("join").expect("run").status, 0);
        }
        assert_eq!(t.connections(), 1, "one connection per host per run");
    });
}

#[test]
fn a_20_mb_upload_arrives_whole_atomically_with_its_mode() {
    let c = Client::new();
    let s = Sshd::start(&[&c.key.public]);
    c.trust(&[&s]);
    let t = transport(c.host("h1", &s));
    let target = tempfile::tempdir().expect("tempdir");
    let path = target.path().join("big.bin");
    let bytes: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let opts = UploadOptions {
        mode: Some(0o600),
        timeout: Duration::from_secs(60),
        ..UploadOptions::default()
    };
    runtime()
        .block_on(t.upload(path.to_str().expect("utf8"), bytes.clone(), &opts))
        .expect("upload");
    assert!(
        std::fs::read(&path).expect("read") == bytes,
        "content differs"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let leftovers = std::fs::read_dir(target.path()).expect("ls").count();
    assert_eq!(leftovers, 1, "a temporary file was left behind");
}

#[test]
fn a_timed_out_command_is_killed_on_the_host_and_frees_its_session() {
    let c = Client::new();
    // OpenSSH's default: 10 sessions per connection. Leaked slots would exhaust it.
    let s = Sshd::start_with(&[&c.key.public], "MaxSessions 10");
    c.trust(&[&s]);
    let mut host = c.host("h1", &s);
    host.ssh.max_sessions = 4;
    let t = transport(host);
    // A sleep of a duration no other process uses, to find it in the process list.
    let tag = format!("60.{}", std::process::id());
    runtime().block_on(async {
        let started = Instant::now();
        let err = t
            .run(spec(&format!("sleep {tag}"), None, Duration::from_secs(1)))
            .await
            .expect_err("times out");
        assert!(
            err.to_string()
                .starts_with("command timed out after 1s: sleep 60"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(8));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ps = std::process::Command::new("pgrep")
            .args(["-f", &format!("^sleep {tag}")])
            .output()
            .expect("pgrep");
        assert!(
            ps.stdout.is_empty(),
            "the remote process survived its timeout"
        );
        // Twenty more timeouts, four at a time: the connection stays usable.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let t = Arc::clone(&t);
            set.spawn(async move { t.run(spec("sleep 30", None, Duration::from_secs(1))).await });
        }
        while let Some(r) = set.join_next().await {
            assert!(r.expect("join").is_err());
        }
        let out = t
            .run(spec("echo alive", None, Duration::from_secs(10)))
            .await
            .expect("still usable");
        assert_eq!(out.stdout, b"alive\n");
        assert_eq!(t.connections(), 1);
    });
}

fn kz_stack(c: &Client, servers: &[(&str, &Sshd)], extra_ssh: &str) -> TestStack {
    let st = TestStack::new("ssh").env("HOME", &c.dir.path().display().to_string());
    st.write(
        "stack.toml",
        &ssh_stack_toml("ssh", servers, &c.key.private, &c.known_hosts(), extra_ssh),
    );
    st.write(
        "01_files.toml",
        r#"
[[file]]
name = "motd"
on = { role = "app" }
path = "@ROOT@/${host.name}/motd"
content = "managed on ${host.name} at ${host.address}\n"
mode = "0640"

[[file]]
name = "conf"
on = { role = "app" }
path = "@ROOT@/${host.name}/app.conf"
content = "x = 1\n"
depends_on = ["file.motd"]
"#,
    );
    st
}

#[test]
fn files_apply_over_ssh_and_replan_as_no_op_in_one_round_trip_per_host() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    let b = Sshd::start(&[&c.key.public]);
    c.trust(&[&a, &b]);
    let st = kz_stack(&c, &[("web-01", &a), ("web-02", &b)], "");
    st.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied, 0 failed");
    assert_eq!(
        read(&st.at("web-02/motd")),
        format!("managed on web-02 at {}\n", b.address)
    );
    let r = st.kz(&["plan", "DIR", "--json", "--detailed-exitcode"]);
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["read"]["hosts"], 2);
    assert_eq!(v["read"]["round_trips"], 2);
    assert_eq!(v["read"]["connections"], 2);
    std::fs::write(st.at("web-01/app.conf"), "x = 2\n").expect("drift");
    st.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(2)
        .stdout_has("~ 01_files.file.conf[web-01] will be updated in place")
        .stdout_has("-x = 2");
}

#[test]
fn values_with_quotes_and_shell_syntax_arrive_literally() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    c.trust(&[&a]);
    let st = kz_stack(&c, &[("web-01", &a)], "");
    st.write(
        "01_files.toml",
        r#"
[[file]]
name = "nasty"
on = ["web-01"]
path = "@ROOT@/it's \"$(touch @ROOT@/pwned)\"; `id`;\nx"
content = "'$(touch @ROOT@/pwned2)'; \"quoted\" `id` \\ $HOME\n"
"#,
    );
    st.kz(&["apply", "DIR", "--yes"]).code(0);
    let path = st.at("it's \"$(touch X/pwned)\"; `id`;\nx"
        .replace('X', &st.root())
        .trim_start_matches(&format!("{}/", st.root())));
    assert_eq!(
        read(&path),
        format!(
            "'$(touch {}/pwned2)'; \"quoted\" `id` \\ $HOME\n",
            st.root()
        )
    );
    assert!(
        !st.at("pwned").exists() && !st.at("pwned2").exists(),
        "shell injection"
    );
    st.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
}

#[test]
fn an_unknown_host_key_is_refused_with_its_fingerprint_and_kz_trust_records_it() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    let st = kz_stack(&c, &[("web-01", &a)], "");
    let r = st.kz(&["plan", "DIR"]);
    r.code(1)
        .stdout_has(&format!(
            "web-01 ({}): host key unknown: [{}]:{} presents ssh-ed25519 key SHA256:",
            a.address, a.address, a.port
        ))
        .stdout_has("kz trust STACK_DIR web-01");
    assert!(!c.known_hosts().exists(), "a key was accepted silently");
    // Without a terminal or --yes, trust refuses.
    st.kz(&["trust", "DIR", "web-01"])
        .code(1)
        .stdout_has("presents this ssh-ed25519 key:")
        .stderr_has("refusing to go on without --yes");
    let r = st.kz(&["trust", "DIR", "web-01", "--yes"]);
    r.code(0).stdout_has("Trusted: recorded");
    let expected_fp = std::process::Command::new("ssh-keygen")
        .args(["-l", "-f"])
        .arg(a.dir.path().join("host_key.pub"))
        .output()
        .expect("ssh-keygen -l");
    let fp = String::from_utf8_lossy(&expected_fp.stdout)
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    assert!(
        r.stdout.contains(&fp),
        "fingerprint {fp} not shown:\n{}",
        r.stdout
    );
    st.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("Plan: 2 to create");
    st.kz(&["trust", "DIR", "web-01", "--yes"])
        .code(0)
        .stdout_has("already trusted");
}

#[test]
fn accept_new_host_keys_records_unknown_keys() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    let st = kz_stack(&c, &[("web-01", &a)], "accept_new_host_keys = true");
    st.kz(&["plan", "DIR"]).code(0);
    assert!(
        read(&c.known_hosts()).contains(
            &a.host_key
                .public
                .split(' ')
                .nth(1)
                .unwrap_or("?")
                .to_string()
        )
    );
}

#[test]
fn a_changed_host_key_is_refused_naming_the_file_and_line() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    let other = keygen(c.dir.path(), "other_host", "ed25519");
    let other_key: Vec<&str> = other.public.split(' ').collect();
    std::fs::write(
        c.known_hosts(),
        format!(
            "# header\n[{}]:{} {} {}\n",
            a.address, a.port, other_key[0], other_key[1]
        ),
    )
    .expect("known_hosts");
    let st = kz_stack(&c, &[("web-01", &a)], "accept_new_host_keys = true");
    st.kz(&["plan", "DIR"]).code(1).stdout_has(&format!(
        "host key changed ({}:2)",
        c.known_hosts().display()
    ));
    st.kz(&["trust", "DIR", "web-01", "--yes"])
        .code(1)
        .stderr_has("records a DIFFERENT key");
}

#[test]
fn a_key_the_host_does_not_accept_is_refused() {
    let c = Client::new();
    let stranger = keygen(c.dir.path(), "stranger", "ed25519");
    let a = Sshd::start(&[&stranger.public]);
    c.trust(&[&a]);
    let st = kz_stack(&c, &[("web-01", &a)], "");
    st.kz(&["plan", "DIR"]).code(1).stdout_has(&format!(
        "web-01 ({}): auth: no key accepted for root (tried {})",
        a.address,
        c.key.private.display()
    ));
}

#[test]
fn rsa_keys_authenticate_with_rsa_sha2() {
    let c = Client::new();
    let rsa = keygen(c.dir.path(), "id_rsa_test", "rsa");
    let a = Sshd::start(&[&rsa.public]);
    c.trust(&[&a]);
    let mut host = c.host("h1", &a);
    host.ssh.identity = vec![rsa.private.display().to_string()];
    let out = runtime()
        .block_on(transport(host).run(spec("echo ok", None, Duration::from_secs(10))))
        .expect("rsa auth");
    assert_eq!(out.stdout, b"ok\n");
}

#[test]
fn the_ssh_agent_authenticates_when_no_key_file_is_given() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    c.trust(&[&a]);
    let agent = Agent::start(c.dir.path(), &[&c.key.private]);
    let sock = agent.sock.clone();
    let st = TestStack::new("agent")
        .env("HOME", &c.dir.path().display().to_string())
        .env("SSH_AUTH_SOCK", &sock.display().to_string());
    st.write(
        "stack.toml",
        &format!(
            "[stack]\nname = \"agent\"\n\n[ssh]\nknown_hosts = \"{}\"\n\n[hosts.web-01]\naddress = \"{}\"\nlabels = {{ role = \"app\" }}\nssh = {{ port = {} }}\n",
            c.known_hosts().display(),
            a.address,
            a.port
        ),
    );
    st.write(
        "01.toml",
        "[[file]]\nname = \"f\"\non = [\"web-01\"]\npath = \"@ROOT@/via-agent\"\ncontent = \"agent\\n\"\n",
    );
    // The harness drops SSH_AUTH_SOCK unless a test sets it: set after, so it wins.
    let out = st
        .command(&["apply", "DIR", "--yes"])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .expect("kz");
    drop(agent);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(read(&st.at("via-agent")), "agent\n");
}

#[test]
fn hosts_behind_a_jump_host_are_reached_through_it() {
    let c = Client::new();
    let bastion = Sshd::start(&[&c.key.public]);
    let inner = Sshd::start(&[&c.key.public]);
    c.trust(&[&bastion, &inner]);
    let st = TestStack::new("jump").env("HOME", &c.dir.path().display().to_string());
    st.write(
        "stack.toml",
        &format!(
            "[stack]\nname = \"jump\"\n\n[ssh]\nidentity = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"3s\"\njump = \"install-01\"\n\n\
             [hosts.install-01]\naddress = \"{}\"\nssh = {{ port = {} }}\n\n\
             [hosts.db-01]\naddress = \"{}\"\nlabels = {{ role = \"app\" }}\nssh = {{ port = {} }}\n",
            c.key.private.display(),
            c.known_hosts().display(),
            bastion.address,
            bastion.port,
            inner.address,
            inner.port
        ),
    );
    st.write(
        "01.toml",
        "[[file]]\nname = \"f\"\non = [\"db-01\"]\npath = \"@ROOT@/through-jump\"\ncontent = \"jumped\\n\"\n",
    );
    let r = st.kz(&["plan", "DIR", "--json"]);
    r.code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        v["read"]["connections"], 1,
        "db-01 opened one connection (the jump's is shared)"
    );
    st.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(read(&st.at("through-jump")), "jumped\n");
    // With the bastion frozen, db-01 cannot be reached: proof the path goes through it.
    bastion.freeze();
    let started = Instant::now();
    st.kz(&["plan", "DIR"])
        .code(1)
        .stdout_has("db-01 (")
        .stdout_has("connect: ");
    assert!(started.elapsed() < Duration::from_secs(10));
    bastion.thaw();
}

#[test]
fn a_frozen_host_fails_within_its_connect_timeout_while_the_others_apply() {
    let c = Client::new();
    let servers: Vec<Sshd> = (0..4).map(|_| Sshd::start(&[&c.key.public])).collect();
    let refs: Vec<&Sshd> = servers.iter().collect();
    c.trust(&refs);
    let names = ["app-01", "app-02", "app-03", "app-04"];
    let pairs: Vec<(&str, &Sshd)> = names.iter().copied().zip(refs.iter().copied()).collect();
    let st = kz_stack(&c, &pairs, "connect_timeout = \"2s\"");
    // Freeze app-03 after the plan read it, so that its failure happens during the apply.
    servers[2].freeze();
    let started = Instant::now();
    let r = st.kz(&["apply", "DIR", "--yes"]);
    let elapsed = started.elapsed();
    r.code(1)
        .stdout_has(&format!(
            "app-03 ({}): connect: timed out after 2s",
            servers[2].address
        ))
        .stdout_has("Apply: 6 applied, 1 failed, 1 not attempted.")
        .stdout_has("Unreachable hosts: app-03");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    for n in ["app-01", "app-02", "app-04"] {
        assert!(
            st.at(&format!("{n}/app.conf")).exists(),
            "{n} was not applied"
        );
    }
    servers[2].thaw();
    st.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 2 applied");
}

#[test]
fn a_second_ctrl_c_kills_the_command_on_the_host() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    c.trust(&[&a]);
    let st = kz_stack(&c, &[("web-01", &a)], "");
    let tag = format!("28.{}", std::process::id());
    st.write(
        "01_files.toml",
        &format!("[[command]]\nname = \"long\"\non = [\"web-01\"]\nrun = \"sleep {tag}; touch @ROOT@/survived\"\n"),
    );
    let child = st
        .command(&["apply", "DIR", "--yes"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &format!("^sleep {tag}")])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    };
    while !running() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..2 {
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !running(),
        "the command kept running on the host after the abort"
    );
}

#[test]
fn a_failing_upload_fails_at_once_instead_of_waiting_for_its_deadline() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    c.trust(&[&a]);
    let st = kz_stack(&c, &[("web-01", &a)], "command_timeout = \"30s\"");
    std::fs::write(st.at("blocker"), "a file, not a directory").expect("write");
    std::fs::create_dir_all(st.path().join("files")).expect("mkdir");
    std::fs::write(st.path().join("files/big.bin"), vec![7u8; 8 * 1024 * 1024]).expect("write");
    st.write(
        "01_files.toml",
        "[[file]]\nname = \"big\"\non = [\"web-01\"]\npath = \"@ROOT@/blocker/sub/big.bin\"\nsource = \"files/big.bin\"\n",
    );
    let started = Instant::now();
    st.kz(&["apply", "DIR", "--yes"])
        .code(1)
        .stdout_has("Not a directory");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_host_key_of_another_type_counts_as_changed() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    let rsa = keygen(c.dir.path(), "old_rsa_host", "rsa");
    let parts: Vec<&str> = rsa.public.split(' ').collect();
    std::fs::write(
        c.known_hosts(),
        format!("[{}]:{} {} {}\n", a.address, a.port, parts[0], parts[1]),
    )
    .expect("known_hosts");
    let st = kz_stack(&c, &[("web-01", &a)], "accept_new_host_keys = true");
    st.kz(&["plan", "DIR"]).code(1).stdout_has(&format!(
        "host key changed ({}:1)",
        c.known_hosts().display()
    ));
    assert_eq!(
        read(&c.known_hosts()).lines().count(),
        1,
        "the new key was added"
    );
}

#[test]
fn an_encrypted_default_key_gives_way_to_the_agent() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    c.trust(&[&a]);
    // ~/.ssh/id_ed25519 is another key, protected by a passphrase kz does not have.
    let ssh_dir = c.dir.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).expect("mkdir");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(ssh_dir.join("id_ed25519"))
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let agent = Agent::start(c.dir.path(), &[&c.key.private]);
    let sock = agent.sock.clone();
    let stack = TestStack::new("agent2").env("HOME", &c.dir.path().display().to_string());
    stack.write(
        "stack.toml",
        &format!(
            "[stack]\nname = \"agent2\"\n\n[ssh]\nknown_hosts = \"{}\"\n\n[hosts.web-01]\naddress = \"{}\"\nssh = {{ port = {} }}\n",
            c.known_hosts().display(),
            a.address,
            a.port
        ),
    );
    let out = stack
        .command(&["plan", "DIR"])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .expect("kz");
    drop(agent);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_local_jump_host_means_a_direct_connection() {
    let c = Client::new();
    let a = Sshd::start(&[&c.key.public]);
    c.trust(&[&a]);
    let st = TestStack::new("localjump").env("HOME", &c.dir.path().display().to_string());
    st.write(
        "stack.toml",
        &format!(
            "[stack]\nname = \"localjump\"\n\n[ssh]\nidentity = \"{}\"\nknown_hosts = \"{}\"\njump = \"install-01\"\n\n\
             [hosts.install-01]\ntransport = \"local\"\n\n[hosts.db-01]\naddress = \"{}\"\nlabels = {{ role = \"app\" }}\nssh = {{ port = {} }}\n",
            c.key.private.display(),
            c.known_hosts().display(),
            a.address,
            a.port
        ),
    );
    st.write(
        "01.toml",
        "[[file]]\nname = \"f\"\non = [\"db-01\"]\npath = \"@ROOT@/direct\"\ncontent = \"ok\\n\"\n",
    );
    st.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(read(&st.at("direct")), "ok\n");
}
