//! `[[system]]` end to end, on lab hosts (podman containers running sshd): the base of two hosts
//! applied and converged, parts a container cannot change reported as not applicable, a UFW rule
//! set that would cut SSH refused before anything is sent, and an sshd setting that would lock kz
//! out rolled back. Needs root, podman, runc and debootstrap, like tests/lab.rs; skips without.

#![allow(clippy::unwrap_used)]
// The test says why it skips.
#![allow(clippy::print_stderr)]

mod support;

use support::{TestStack, lab};

const STACK: &str = r#"[stack]
name = "NAME"

[ssh]
user = "root"
connect_timeout = "5s"
command_timeout = "120s"

[hosts.web-01]
address = "192.0.2.31"
labels = { role = "web" }

[hosts.web-02]
address = "192.0.2.32"
labels = { role = "web" }
"#;

/// Module 2 of the issue: packages, UFW with SSH kept open, an sshd drop-in, resolvers, sysctl
/// (and swap). Nothing here needs the network: the packages present are in the lab image, the
/// one to remove is removed from the disk. `EXTRA_RULE` and `EXTRA_SSHD` are replaced by tests.
const MODULE: &str = r#"[[system]]
name = "base"
on = { role = "web" }
packages = ["ufw", "openssh-server"]
absent_packages = ["redis-sentinel"]
swap = "off"
dns = ["RESOLVER", "127.0.0.1"]
sysctl = { "vm.swappiness" = 10, "net.core.somaxconn" = "1024" }
sshd = { PasswordAuthentication = "no", X11Forwarding = "no", MaxAuthTries = 4 EXTRA_SSHD}

[system.ufw]
incoming = "deny"
rules = [
  EXTRA_RULE
  { action = "allow", port = 22, proto = "tcp" },
  { action = "allow", port = 6379, proto = "tcp", from = { role = "web" } },
  { action = "deny", from = "192.0.2.0/24" },
]

[[file]]
name = "motd"
on = { role = "web" }
path = "/etc/motd"
content = "${host.name}: base by kz\n"
"#;

fn module(resolver: &str, rule: &str, sshd: &str) -> String {
    MODULE
        .replace("RESOLVER", resolver)
        .replace("EXTRA_RULE", rule)
        .replace("EXTRA_SSHD", sshd)
}

#[test]
fn two_lab_hosts_get_their_base_and_kz_never_locks_itself_out() {
    if !lab::possible() {
        return;
    }
    let name = format!("kzsys{}", std::process::id());
    let s = TestStack::new(&name);
    s.write("stack.toml", &STACK.replace("NAME", &name));
    let _guard = lab::Guard(&s);
    s.kz(&["lab", "up", "DIR"]).code(0).stdout_has("running");

    // The lab's own resolver stays first, so the hosts keep resolving.
    let resolver = lab::on_host(
        &name,
        "web-01",
        "sed -n 's/^nameserver //p' /etc/resolv.conf",
    );
    let resolver = resolver.lines().next().unwrap().trim().to_string();
    s.write("02_base.toml", &module(&resolver, "", ""));

    // One round trip per host reads the system and the file together; the parts a container
    // cannot change are listed, in text and in JSON, and are no change.
    let plan = s.kz(&["plan", "DIR", "--lab", "--json"]);
    plan.code(0);
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["read"]["hosts"], 2);
    assert_eq!(json["read"]["round_trips"], 2, "{}", plan.stdout);
    let na = json["not_applicable"].as_array().unwrap();
    assert!(
        na.iter()
            .any(|n| n["attribute"] == "swap" && n["address"] == "02_base.system.base[web-01]"),
        "{na:?}"
    );
    s.kz(&["plan", "DIR", "--lab"])
        .code(0)
        .stdout_has("02_base.system.base[web-02]  swap: not applicable here (inside a container)")
        .stdout_has("dns: not applicable here (inside a container: the container runtime owns /etc/resolv.conf)")
        .stdout_has("+ allow 22/tcp from any")
        .stdout_has("+ redis-sentinel absent");

    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied, 0 failed, 0 not attempted.");
    for host in ["web-01", "web-02"] {
        let status = lab::on_host(&name, host, "ufw status");
        assert!(status.contains("Status: active"), "{status}");
        assert!(status.contains("6379/tcp"), "{status}");
        let dropin = lab::on_host(&name, host, "cat /etc/ssh/sshd_config.d/10-kz.conf");
        assert!(dropin.contains("MaxAuthTries 4"), "{dropin}");
        let sentinel = lab::on_host(
            &name,
            host,
            "dpkg-query -W -f='${db:Status-Status}' redis-sentinel",
        );
        assert_ne!(sentinel, "installed");
        // The container runtime owns a lab host's resolv.conf: the lab's resolver stays.
        let resolv = lab::on_host(&name, host, "cat /etc/resolv.conf");
        assert!(!resolv.contains("nameserver 127.0.0.1"), "{resolv}");
    }
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0)
        .stdout_has("No changes.");

    // A rule that blocks SSH from kz's address, before the rule that allows it: the plan fails
    // on both hosts, and apply sends nothing, not even the sshd change beside it.
    let before = lab::on_host(&name, "web-01", "cat /etc/ufw/user.rules");
    s.write(
        "02_base.toml",
        &module(
            &resolver,
            r#"{ action = "deny", port = 22, proto = "tcp", from = "10.0.0.0/8" },"#,
            r#", LoginGraceTime = 30"#,
        ),
    );
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(1)
        .stdout_has("ufw: refused on web-01: the rule `deny 22/tcp from 10.0.0.0/8` would block SSH (port 22/tcp) from ")
        .stdout_has("ufw: refused on web-02");
    assert_eq!(
        lab::on_host(&name, "web-01", "cat /etc/ufw/user.rules"),
        before
    );
    let dropin = lab::on_host(&name, "web-01", "cat /etc/ssh/sshd_config.d/10-kz.conf");
    assert!(!dropin.contains("LoginGraceTime"), "{dropin}");

    // An sshd setting that lets root in no more: sshd -t accepts it, the new login fails, the
    // previous drop-in comes back, and kz still gets in.
    s.write(
        "02_base.toml",
        &module(&resolver, "", r#", AllowUsers = "nobody""#),
    );
    s.kz(&[
        "apply",
        "DIR",
        "--lab",
        "--yes",
        "--target",
        "02_base.system.base[web-01]",
    ])
    .code(1)
    .stdout_has("sshd: the new settings would lock kz out (a new login failed: auth:")
    .stdout_has("the previous drop-in was restored and sshd reloaded; kz gets in again");
    let dropin = lab::on_host(&name, "web-01", "cat /etc/ssh/sshd_config.d/10-kz.conf");
    assert!(dropin.contains("MaxAuthTries 4"), "{dropin}");
    assert!(!dropin.contains("AllowUsers"), "{dropin}");

    // A setting sshd itself refuses never reaches a reload.
    s.write(
        "02_base.toml",
        &module(&resolver, "", r#", NoSuchOption = "yes""#),
    );
    s.kz(&[
        "apply",
        "DIR",
        "--lab",
        "--yes",
        "--target",
        "02_base.system.base[web-01]",
    ])
    .code(1)
    .stdout_has("sshd -t: sshd refused the settings");
    let dropin = lab::on_host(&name, "web-01", "cat /etc/ssh/sshd_config.d/10-kz.conf");
    assert!(!dropin.contains("NoSuchOption"), "{dropin}");

    // Back to module 2: nothing to do, and kz got in all along.
    s.write("02_base.toml", &module(&resolver, "", ""));
    s.kz(&["plan", "DIR", "--lab", "--detailed-exitcode"])
        .code(0);

    // Another apt holds the dpkg lock (as unattended upgrades would) for a few seconds: the
    // removal waits for it instead of failing.
    let mut holder = std::process::Command::new("podman")
        .args([
            "exec",
            &format!("kzlab-{name}-web-01"),
            "python3",
            "-c",
            "import fcntl, time; f = open('/var/lib/dpkg/lock-frontend', 'w'); \
             fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(6)",
        ])
        .env("CONTAINERS_CONF", "/var/cache/kz-lab/containers.conf")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let t = std::time::Instant::now();
    s.write(
        "02_base.toml",
        &module(&resolver, "", "")
            .replace(r#"["redis-sentinel"]"#, r#"["redis-sentinel", "haproxy"]"#),
    );
    s.kz(&[
        "apply",
        "DIR",
        "--lab",
        "--yes",
        "--target",
        "02_base.system.base[web-01]",
    ])
    .code(0)
    .stdout_has("Apply: 1 applied, 0 failed, 0 not attempted.");
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(4),
        "the removal cannot have waited for the lock ({:?})",
        t.elapsed()
    );
    let _ = holder.wait();
    let haproxy = lab::on_host(
        &name,
        "web-01",
        "dpkg-query -W -f='${db:Status-Status}' haproxy",
    );
    assert_ne!(haproxy, "installed");
}
