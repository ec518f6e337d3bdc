//! `[[container]]` through the binary, on this machine's podman (local transport) and on a docker
//! daemon the test starts (SSH transport to the test sshd): drift, replacement, in-place update,
//! health waits, secrets, and the one round trip of a plan. Skipped without root and the tools.

#[path = "support/containers.rs"]
mod containers;
mod support;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use containers::{Cleanup, Dockerd, IMAGE, inspect, sh};
use support::sshd::{Sshd, keygen, ssh_stack_toml};
use support::{TestStack, command_lines};

/// A name no other run uses.
fn unique(base: &str) -> String {
    format!("kzct{}-{base}", std::process::id())
}

/// Reads every process's command line until `child` ends: whether `secret` was in one.
fn watch(child: Child, secret: &str) -> (bool, Output) {
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut leaked = false;
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        leaked |= command_lines().iter().any(|l| l.contains(secret));
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    (leaked, child.wait_with_output().expect("output"))
}

fn container_toml(name: &str, runtime: &str, mode: &str, restart: &str) -> String {
    format!(
        r#"[[container]]
name = "{name}"
on = {{ role = "app" }}
image = "{IMAGE}"
runtime = "{runtime}"
network = "host"
command = ["sh", "-c", "echo kz-log-marker; touch /tmp/ready; exec sleep 3600"]
env = {{ MODE = "{mode}", TOKEN = "${{secret.tok}}" }}
restart = "{restart}"
labels = {{ app = "kz-test" }}
health = {{ command = "test -f /tmp/ready", interval = "1s", retries = 2 }}
stop_timeout = "1s"
start_timeout = "30s"
volumes = ["@ROOT@/data:/data"]
"#
    )
}

/// The secret of a running container is nowhere but in its env: not in kz's output, not in its
/// create command, not in the state, not in a leftover env file; its outputs are recorded.
fn assert_secret_kept(s: &TestStack, name: &str, secret: &str, output: &str) {
    assert!(!output.contains(secret));
    assert_eq!(
        inspect("podman", name, "{{.State.Health.Status}}"),
        "healthy"
    );
    assert!(!inspect("podman", name, "{{.Config.CreateCommand}}").contains(secret));
    assert!(!support::read(&s.path().join(".kz/state.json")).contains(secret));
    let leftovers = sh(&format!(
        "grep -rl {secret} /tmp --include='tmp.*' 2>/dev/null"
    ));
    assert!(leftovers.stdout.is_empty(), "an env file was left behind");
    let id = inspect("podman", name, "{{.Id}}");
    let state = s.state();
    let outputs = &state["resources"][format!("01_app.container.{name}[local]")]["outputs"];
    assert_eq!(
        outputs["container_id"]["value"]
            .as_str()
            .or(outputs["container_id"].as_str()),
        Some(id.as_str()),
        "{outputs}"
    );
}

#[test]
fn podman_container_lifecycle_without_noise_or_leaks() {
    if !containers::podman_possible() {
        return;
    }
    containers::setup_podman();
    let secret = "ct-secret-4f1d0b77";
    let name = unique("web");
    let _cleanup = Cleanup {
        runtime: "podman",
        names: vec![name.clone()],
    };
    let s = TestStack::new("ct").env("KZ_SECRET_TOK", secret);
    s.write("01_app.toml", &container_toml(&name, "podman", "one", "no"));

    let child = s
        .command(&["apply", "DIR", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kz");
    let (leaked, out) = watch(child, secret);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!leaked, "the secret showed in the process list");
    assert_secret_kept(&s, &name, secret, &format!("{stdout}{stderr}"));
    let id = inspect("podman", &name, "{{.Id}}");

    // A second plan sees no change; a saved plan holds no secret.
    let plan_file = s.path().join("saved.plan");
    let p = s.kz(&[
        "plan",
        "DIR",
        "--detailed-exitcode",
        "--out",
        plan_file.to_str().expect("utf-8"),
    ]);
    p.code(0);
    assert!(!p.stdout.contains(secret));
    assert!(
        !String::from_utf8_lossy(&std::fs::read(&plan_file).expect("plan file")).contains(secret)
    );

    // A restart policy changes without a replacement in the plan (podman 4 recreates it).
    s.write(
        "01_app.toml",
        &container_toml(&name, "podman", "one", "always"),
    );
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("restart")
        .stdout_has("updated in place");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(
        inspect("podman", &name, "{{.HostConfig.RestartPolicy.Name}}"),
        "always"
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);

    // An env change replaces it.
    s.write(
        "01_app.toml",
        &container_toml(&name, "podman", "two", "always"),
    );
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("replaced")
        .stdout_has("env");
    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(0);
    assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    assert_ne!(inspect("podman", &name, "{{.Id}}"), id);
    assert!(inspect("podman", &name, "{{.Config.Env}}").contains("MODE=two"));
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);

    // Stopped by hand: planned for creation, and started again.
    sh(&format!("podman stop -t 0 {name}"));
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(2)
        .stdout_has("container is exited");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(inspect("podman", &name, "{{.State.Status}}"), "running");

    // Removed by hand: planned for creation.
    sh(&format!("podman rm -f -t 0 {name}"));
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(2)
        .stdout_has("created");

    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["destroy", "DIR", "--yes"]).code(0);
    assert_eq!(
        inspect("podman", &name, "{{.Id}}"),
        "",
        "destroy removes the container"
    );
    assert!(s.at("data").is_dir(), "host directories are kept");
}

#[test]
fn a_container_that_never_becomes_healthy_fails_in_time_with_its_log() {
    if !containers::podman_possible() {
        return;
    }
    containers::setup_podman();
    let name = unique("sick");
    let _cleanup = Cleanup {
        runtime: "podman",
        names: vec![name.clone()],
    };
    let s = TestStack::new("ct-sick");
    s.write(
        "01_app.toml",
        &format!(
            r#"[[container]]
name = "{name}"
on = {{ role = "app" }}
image = "{IMAGE}"
network = "host"
command = ["sh", "-c", "echo kz-log-marker-sick; exec sleep 3600"]
health = {{ command = "test -f /never", interval = "1s", retries = 1 }}
stop_timeout = "1s"
start_timeout = "4s"
"#
        ),
    );
    let start = Instant::now();
    let r = s.kz_within(Duration::from_secs(90), &["apply", "DIR", "--yes"]);
    r.code(1);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("not ready within 4s"), "{all}");
    assert!(
        all.contains("kz-log-marker-sick"),
        "the log tail is missing: {all}"
    );
    assert!(start.elapsed() < Duration::from_secs(60));
    // The failed container is gone, so the next plan creates it again rather than adopting it.
    assert!(all.contains("the container was removed"), "{all}");
    s.kz(&["plan", "DIR"]).code(0).stdout_has("will be created");
}

#[test]
fn a_plan_of_a_system_ten_containers_and_twenty_files_is_one_round_trip() {
    if !containers::podman_possible() {
        return;
    }
    containers::setup_podman();
    let names: Vec<String> = (0..10).map(|i| unique(&format!("many{i}"))).collect();
    let _cleanup = Cleanup {
        runtime: "podman",
        names: names.clone(),
    };
    let s = TestStack::new("ct-many");
    let mut toml = String::new();
    for n in &names {
        toml.push_str(&format!(
            "[[container]]\nname = \"{n}\"\non = {{ role = \"app\" }}\nimage = \"{IMAGE}\"\nnetwork = \"host\"\n\
             command = [\"sleep\", \"3600\"]\nstop_timeout = \"1s\"\nrestart = \"no\"\n\n"
        ));
    }
    for i in 0..20 {
        toml.push_str(&format!("[[file]]\nname = \"f{i}\"\non = {{ role = \"app\" }}\npath = \"@ROOT@/f{i}\"\ncontent = \"x\"\n\n"));
    }
    // A system whose parts already hold here (adopted, never changed): read in the same trip.
    toml.push_str(
        "[[system]]\nname = \"base\"\non = { role = \"app\" }\npackages = [\"procps\"]\n\n",
    );
    s.write("01_app.toml", &toml);
    let round_trips = |expect_changes: bool| {
        let r = s.kz(&["plan", "DIR", "--json"]);
        r.code(0);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
        assert_eq!(
            v["changes"].as_array().is_some_and(|c| !c.is_empty()),
            expect_changes,
            "{}",
            r.stdout
        );
        v["read"]["round_trips"].as_u64()
    };
    assert_eq!(round_trips(true), Some(1));
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(round_trips(false), Some(1));
    s.kz(&["destroy", "DIR", "--yes"]).code(0);
}

#[test]
fn docker_over_ssh_updates_in_place_and_sees_no_noise() {
    if !containers::docker_possible() {
        return;
    }
    let _dockerd = Dockerd::start();
    let name = unique("dweb");
    let _cleanup = Cleanup {
        runtime: "docker",
        names: vec![name.clone()],
    };
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keygen(keys.path(), "id_test", "ed25519");
    let server = Sshd::start(&[&key.public]);
    let known = keys.path().join("known_hosts");
    std::fs::write(&known, server.known_hosts_line() + "\n").expect("known_hosts");
    let secret = "ct-docker-secret-9a7e";
    let s = TestStack::new("ct-docker").env("KZ_SECRET_TOK", secret);
    s.write(
        "stack.toml",
        &ssh_stack_toml("ct-docker", &[("h", &server)], &key.private, &known, ""),
    );
    let toml = |restart: &str, memory: &str| {
        container_toml(&name, "docker", "one", restart).replace(
            "[[container]]",
            &format!("[[container]]\nmemory = \"{memory}\""),
        )
    };
    s.write("01_app.toml", &toml("no", "64m"));
    // The host is this machine: both sides' processes are in this /proc.
    let child = s
        .command(&["apply", "DIR", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kz");
    let (leaked, out) = watch(child, secret);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!leaked, "the secret showed in the process list");
    assert!(!all.contains(secret));
    assert!(!inspect("docker", &name, "{{.Config.Env}}").is_empty());
    assert_eq!(
        inspect("docker", &name, "{{.State.Health.Status}}"),
        "healthy"
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);

    let id = inspect("docker", &name, "{{.Id}}");
    s.write("01_app.toml", &toml("unless-stopped", "128m"));
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("updated in place");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert_eq!(
        inspect("docker", &name, "{{.Id}}"),
        id,
        "updated in place, not replaced"
    );
    assert_eq!(
        inspect("docker", &name, "{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);

    sh(&format!("docker rm -f {name}"));
    s.kz(&["plan", "DIR", "--detailed-exitcode"])
        .code(2)
        .stdout_has("created");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["destroy", "DIR", "--yes"]).code(0);
    assert_eq!(inspect("docker", &name, "{{.Id}}"), "");
}

#[test]
fn an_image_built_from_the_stack_is_rebuilt_and_its_container_replaced() {
    if !containers::podman_possible() {
        return;
    }
    containers::setup_podman();
    let name = unique("built");
    let tag = format!("localhost/{}:1", unique("img"));
    let _cleanup = Cleanup {
        runtime: "podman",
        names: vec![name.clone()],
    };
    let s = TestStack::new("ct-image");
    // The runtime comes from the stack's [defaults]; a host may override it.
    s.write(
        "stack.toml",
        "[stack]\nname = \"ct-image\"\n\n[defaults]\ncontainer_runtime = \"podman\"\n\n\
         [hosts.local]\ntransport = \"local\"\nlabels = { role = \"app\" }\n",
    );
    s.write(
        "ctx/Containerfile",
        &format!("FROM {IMAGE}\nRUN echo built > /built\nCOPY hello.txt /hello.txt\n"),
    );
    s.write("ctx/hello.txt", "one\n");
    s.write(
        "01_app.toml",
        &format!(
            r#"[[image]]
name = "app"
on = {{ role = "app" }}
tag = "{tag}"
context = "ctx"

[[container]]
name = "{name}"
on = {{ role = "app" }}
depends_on = ["image.app"]
image = "{tag}"
pull = "never"
network = "host"
command = ["sh", "-c", "cat /hello.txt /built; exec sleep 3600"]
stop_timeout = "1s"
"#
        ),
    );
    let r = s.kz(&["apply", "DIR", "--yes"]);
    r.code(0);
    assert!(
        sh(&format!("podman logs {name}"))
            .stdout
            .starts_with(b"one\nbuilt\n")
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);

    // A change in the context rebuilds the image; the tag then names another image than the
    // container's, which the next plan says, and replaces it.
    s.write("ctx/hello.txt", "two\n");
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("image.app[local] will be updated");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("tag now names another image")
        .stdout_has("replaced");
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    assert!(
        sh(&format!("podman logs {name}"))
            .stdout
            .starts_with(b"two\n")
    );
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(0);
    s.kz(&["destroy", "DIR", "--yes"]).code(0);
    assert!(!sh(&format!("podman image exists {tag}")).status.success());

    s.write(
        "stack.toml",
        "[stack]\nname = \"ct-image\"\n\n[hosts.local]\ntransport = \"local\"\n\
         labels = { role = \"app\" }\ncontainer_runtime = \"rkt\"\n",
    );
    s.kz(&["plan", "DIR"])
        .code(1)
        .stdout_has("unknown container runtime `rkt`");
}
