//! Secrets on their way to hosts and back (issue 11): out of the process list, out of local
//! commands' environments, masked in every form output gives them; and what hosts send back read
//! with limits.

mod support;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use support::sshd::{KeyPair, Sshd, keygen, ssh_stack_toml};
use support::{TestStack, command_lines};

/// A stack holding a `check` and a `command` whose check both carry the secret `tok` and sleep
/// for `nap` seconds, so that the test can look at the process list while they run.
fn sleeping_checks(nap: &str) -> String {
    format!(
        r#"
[[check]]
name = "ready"
on = ["h"]
command = "sleep {nap}; test -n '${{secret.tok}}'"

[[command]]
name = "migrate"
on = ["h"]
run = "true"
check = "sleep {nap}; test -n '${{secret.tok}}'"
"#
    )
}

/// Reads every process's command line until `child` ends: whether `secret` was in one, and
/// whether `witness` was (proof that the test looked while the command ran).
fn watch_process_list(child: Child, secret: &str, witness: &str) -> (bool, bool, Output) {
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut leaked, mut seen) = (false, false);
    loop {
        for line in command_lines() {
            leaked |= line.contains(secret);
            seen |= line.contains(witness);
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (leaked, seen, child.wait_with_output().expect("output"))
}

fn local_stack(name: &str) -> TestStack {
    let s = TestStack::new(name);
    s.write(
        "stack.toml",
        &format!("[stack]\nname = \"{name}\"\n\n[hosts.h]\ntransport = \"local\"\n"),
    );
    s
}

#[test]
fn item5_checks_keep_their_secrets_out_of_the_local_process_list() {
    let secret = "ps-visible-5a1c9e";
    let s = local_stack("ps-local").env("KZ_SECRET_TOK", secret);
    s.write("01.toml", &sleeping_checks("0.731"));
    let child = s
        .command(&["plan", "DIR"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kz");
    let (leaked, seen, out) = watch_process_list(child, secret, "sleep 0.731");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen,
        "the checks were never seen running: the test proves nothing"
    );
    assert!(!leaked, "a check's secret is visible in the process list");
}

/// A client key and known_hosts trusting one test sshd.
struct SshClient {
    dir: tempfile::TempDir,
    key: KeyPair,
}

impl SshClient {
    fn new() -> SshClient {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = keygen(dir.path(), "id_test", "ed25519");
        SshClient { dir, key }
    }

    fn trust(&self, s: &Sshd) {
        std::fs::write(
            self.dir.path().join("known_hosts"),
            s.known_hosts_line() + "\n",
        )
        .expect("known_hosts");
    }

    fn stack_toml(&self, name: &str, s: &Sshd) -> String {
        ssh_stack_toml(
            name,
            &[("h", s)],
            &self.key.private,
            &self.dir.path().join("known_hosts"),
            "",
        )
    }
}

#[test]
fn item5_checks_keep_their_secrets_out_of_the_process_list_over_ssh() {
    let secret = "ps-visible-over-ssh-77e2";
    let client = SshClient::new();
    let server = Sshd::start(&[&client.key.public]);
    client.trust(&server);
    let s = TestStack::new("ps-ssh").env("KZ_SECRET_TOK", secret);
    s.write("stack.toml", &client.stack_toml("ps-ssh", &server));
    s.write("01.toml", &sleeping_checks("0.743"));
    let child = s
        .command(&["plan", "DIR"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kz");
    // The host is this machine: its processes are in this /proc too.
    let (leaked, seen, out) = watch_process_list(child, secret, "sleep 0.743");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen,
        "the checks were never seen running: the test proves nothing"
    );
    assert!(
        !leaked,
        "a check's secret is visible in the host's process list"
    );
}

/// A PEM-like key of 12 lines, each one secret material.
fn multi_line_key() -> String {
    let mut key = String::new();
    for i in 0..12 {
        key.push_str(&format!("K{i:02}-Zm9vYmFyYmF6cXV4LXNlY3JldC1saW5l\n"));
    }
    key
}

fn assert_no_key_line(text: &str, key: &str) {
    for line in key.lines() {
        assert!(
            !text.contains(line),
            "a line of the key is shown: {line}\n{text}"
        );
    }
}

#[test]
fn item6_every_line_of_a_multi_line_secret_is_masked() {
    let key = multi_line_key();
    let s = local_stack("pem").env("KZ_SECRET_KEY", &key);
    // A failed command shows the last ten lines of its error output: the key cut in two. A
    // timed-out one shows its script's first line: the key's first line.
    s.write(
        "01.toml",
        r#"
[[command]]
name = "install-key"
on = ["h"]
run = "printf '%s' '${secret.key}' >&2; exit 1"

[[command]]
name = "slow"
on = ["h"]
run = "echo '${secret.key}' >/dev/null; sleep 30"
timeout = "500ms"
"#,
    );
    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(1)
        .stdout_has("exit status 1")
        .stdout_has("timed out");
    assert_no_key_line(&format!("{}{}", r.stdout, r.stderr), &key);
}

#[test]
fn item7_local_commands_get_a_clean_environment() {
    let s = local_stack("env")
        .env("KZ_SECRET_TOK", "env-secret-value-3f9")
        .env("HCLOUD_TOKEN", "hcloud-token-value-81c")
        .env("KZ_STATE_PG", "postgres://u:pw-value-0d2@127.0.0.1/kz")
        .env("SOME_TOOL_PASSWORD", "other-value-5e7");
    s.write(
        "01.toml",
        r#"
[[command]]
name = "dump"
on = ["h"]
run = "cat /proc/$$/environ | tr '\\0' '\\n' > @ROOT@/environ; env > @ROOT@/env; true '${secret.tok}'"
"#,
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    for file in ["environ", "env"] {
        let env = support::read(&s.at(file));
        for value in [
            "env-secret-value-3f9",
            "hcloud-token-value-81c",
            "pw-value-0d2",
            "other-value-5e7",
        ] {
            assert!(
                !env.contains(value),
                "{value} in the command's {file}:\n{env}"
            );
        }
        assert!(env.contains("LC_ALL=C"), "{env}");
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    }
}

#[test]
fn item4_secrets_with_quotes_and_backslashes_are_masked_in_text_and_json_plans() {
    let secret = r#"pa"ss\w0rd-42"#;
    let s = local_stack("escapes").env("KZ_SECRET_TOK", secret);
    // The host holds the secret in a file the stack manages with other content: the plan shows
    // what it holds, escaped.
    std::fs::write(s.at("f"), format!("token={secret}")).expect("write");
    s.write(
        "01.toml",
        r#"
[[file]]
name = "f"
on = ["h"]
path = "@ROOT@/f"
content = "new"

[[command]]
name = "c"
on = ["h"]
run = "true '${secret.tok}'"
"#,
    );
    for args in [&["plan", "DIR"][..], &["plan", "DIR", "--json"][..]] {
        let r = s.kz(args);
        r.code(0).stdout_has("token=(sensitive)");
        assert!(!r.stdout.contains("w0rd-42"), "{}", r.stdout);
        assert!(!r.stderr.contains("w0rd-42"), "{}", r.stderr);
    }
}

#[test]
fn item10_a_fifo_at_a_managed_path_is_reported_not_read() {
    // One file (its own probe) and two (the batched read): neither may open the FIFO, which
    // would block until the command timeout.
    for count in [1, 2] {
        let s = local_stack("fifo");
        s.write(
            "stack.toml",
            "[stack]\nname = \"fifo\"\n\n[ssh]\ncommand_timeout = \"30s\"\n\n[hosts.h]\ntransport = \"local\"\n",
        );
        let fifo = s.at("pipe");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(st.success());
        let mut toml = String::from(
            "[[file]]\nname = \"pipe\"\non = [\"h\"]\npath = \"@ROOT@/pipe\"\ncontent = \"x\"\n",
        );
        if count == 2 {
            toml.push_str(
                "\n[[file]]\nname = \"plain\"\non = [\"h\"]\npath = \"@ROOT@/plain\"\ncontent = \"x\"\n",
            );
        }
        s.write("01.toml", &toml);
        let started = Instant::now();
        let r = s.kz(&["plan", "DIR"]);
        r.code(1)
            .stdout_has("the path is a FIFO: kz manages regular files");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the plan waited on the FIFO ({count} files)"
        );
    }
}

#[test]
fn item10_an_endless_device_at_a_managed_path_is_reported_not_read() {
    let s = local_stack("zero");
    std::os::unix::fs::symlink("/dev/zero", s.at("zero")).expect("symlink");
    s.write(
        "01.toml",
        "[[file]]\nname = \"zero\"\non = [\"h\"]\npath = \"@ROOT@/zero\"\ncontent = \"x\"\n\n\
         [[file]]\nname = \"null\"\non = [\"h\"]\npath = \"/dev/null\"\ncontent = \"x\"\n",
    );
    let started = Instant::now();
    s.kz(&["plan", "DIR"])
        .code(1)
        .stdout_has("the path is a device: kz manages regular files");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn item10_ssh_output_past_the_limit_is_counted_not_kept() {
    use kz_engine::model::{Host, SshSettings, TransportKind};
    use kz_engine::provider::{CommandSpec, Transport};
    let client = SshClient::new();
    let server = Sshd::start(&[&client.key.public]);
    client.trust(&server);
    let host = Host {
        name: "h".into(),
        address: server.address.clone(),
        labels: Default::default(),
        settings: Default::default(),
        transport: TransportKind::Ssh,
        ssh: SshSettings {
            user: "root".into(),
            port: server.port,
            identity: vec![client.key.private.display().to_string()],
            known_hosts: Some(client.dir.path().join("known_hosts").display().to_string()),
            ..SshSettings::default()
        },
    };
    let t = kz_providers::ssh::SshTransport::new(host, None).with_output_limits(4096, 1024);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt
        .block_on(t.run(CommandSpec {
            script: "head -c 1000000 /dev/zero; head -c 3000 /dev/zero | tr '\\0' e >&2".into(),
            stdin: None,
            timeout: Duration::from_secs(20),
            ..Default::default()
        }))
        .expect("run");
    assert_eq!(out.stdout.len(), 4096);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&"e".repeat(1024)), "{err}");
    assert!(
        err.contains("kz: 995904 bytes of standard output past the first 4 KiB were not kept"),
        "{err}"
    );
    assert!(err.contains("kz: 1976 bytes of error output"), "{err}");
    // A script with input of its own still travels on stdin, whole, its input after it.
    let out = rt
        .block_on(t.run(CommandSpec {
            script: "a='x\\y'\n  printf '%s|' \"$a\"; cat".into(),
            stdin: Some(b"payload".to_vec()),
            timeout: Duration::from_secs(20),
            ..Default::default()
        }))
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\\y|payload");
}
