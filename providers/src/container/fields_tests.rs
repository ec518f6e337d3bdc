//! The comparison on recorded `inspect` JSON of both runtimes.

use super::*;

fn desired_list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::Text((*s).into())).collect())
}

#[test]
fn ports_of_docker_and_podman_match_short_forms() {
    let c: Json = serde_json::json!({"HostConfig": {"PortBindings": {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
        "5432/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5432"}]}}});
    let want = desired_list(&["5432", "8080:80"]);
    assert_eq!(field("ports", &c, &want), Some(want.clone()));
    let other = desired_list(&["5432"]);
    assert_ne!(field("ports", &c, &other), Some(other));
}

#[test]
fn env_and_labels_compare_declared_keys_only() {
    let c: Json = serde_json::json!({"Config": {
        "Env": ["PATH=/bin", "MODE=a", "container=podman"],
        "Labels": {"io.kz.spec": "x", "app": "web", "maintainer": "someone"}}});
    let mut env = BTreeMap::new();
    env.insert("MODE".to_string(), Value::Text("a".into()));
    let want = Value::Map(env.clone());
    assert_eq!(field("env", &c, &want), Some(want.clone()));
    env.insert("MODE".to_string(), Value::Text("b".into()));
    let changed = Value::Map(env);
    assert_eq!(field("env", &c, &changed), Some(want));
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), Value::Text("web".into()));
    let l = Value::Map(labels);
    assert_eq!(field("labels", &c, &l), Some(l.clone()));
}

#[test]
fn restart_network_and_defaults_normalize() {
    let docker: Json = serde_json::json!({
        "Config": {"Image": "localhost/x:1", "Cmd": ["sleep", "1"], "Entrypoint": null},
        "HostConfig": {"NetworkMode": "default", "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
                       "Memory": 268435456, "NanoCpus": 500000000, "CapAdd": ["NET_ADMIN"]},
        "NetworkSettings": {"Networks": {"bridge": {}}}});
    let podman: Json = serde_json::json!({
        "Config": {"Image": "localhost/x:1", "Cmd": ["sleep", "1"], "Entrypoint": ""},
        "HostConfig": {"NetworkMode": "bridge", "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
                       "Memory": 0, "NanoCpus": 0, "CapAdd": ["CAP_NET_ADMIN"], "CapDrop": ["CAP_MKNOD"]},
        "NetworkSettings": {"Networks": {"podman": {}}}});
    let t = |s: &str| Value::Text(s.into());
    assert_eq!(field("restart", &docker, &t("no")), Some(t("no")));
    assert_eq!(
        field("restart", &podman, &t("on-failure:3")),
        Some(t("on-failure:3"))
    );
    assert_eq!(
        field("restart", &podman, &t("always")),
        Some(t("on-failure:3"))
    );
    assert_eq!(field("network", &docker, &t("default")), Some(t("default")));
    assert_eq!(field("network", &podman, &t("default")), Some(t("default")));
    assert_eq!(field("memory", &docker, &t("256m")), Some(t("256m")));
    assert_eq!(field("memory", &podman, &t("256m")), Some(t("none")));
    assert_eq!(field("cpus", &docker, &t("0.5")), Some(t("0.5")));
    assert_eq!(
        field("image", &docker, &t("localhost/x:1")),
        Some(t("localhost/x:1"))
    );
    let caps = desired_list(&["NET_ADMIN"]);
    assert_eq!(field("cap_add", &docker, &caps), Some(caps.clone()));
    assert_eq!(field("cap_add", &podman, &caps), Some(caps.clone()));
    let cmd = desired_list(&["sleep", "1"]);
    assert_eq!(field("command", &podman, &cmd), Some(cmd));
}

#[test]
fn health_defaults_fill_in() {
    let c: Json = serde_json::json!({"Config": {"Healthcheck": {
        "Test": ["CMD-SHELL", "test -f /tmp/ready"], "Interval": 1000000000, "Retries": 0}}});
    let mut m = BTreeMap::new();
    m.insert(
        "command".to_string(),
        Value::Text("test -f /tmp/ready".into()),
    );
    m.insert("interval".into(), Value::Text("1s".into()));
    m.insert("timeout".into(), Value::Text("30s".into()));
    m.insert("start_period".into(), Value::Text("0s".into()));
    m.insert("retries".into(), Value::Int(3));
    let want = Value::Map(m);
    assert_eq!(field("health", &c, &want), Some(want));
}
