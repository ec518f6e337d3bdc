//! `serial`: the loader chains the instances of a resource host after host, through a check
//! when `after_each` names one, and a lab run that leaves a host out keeps the others in order.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use kz_engine::load::{load_stack_with_env, load_stack_with_overlay};
use kz_engine::model::{SshSettings, Stack};
use kz_engine::overlay::{HostOverlay, HostReach};
use kz_engine::provider::Providers;

mod common;

fn providers() -> Providers {
    Providers::new(vec![
        Arc::new(common::note("note")),
        Arc::new(common::note_check("check")),
    ])
}

/// A stack of three hosts (declared out of name order) with `m.toml` as given.
fn stack(module: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = String::new();
    for (i, h) in ["maria-02", "maria-03", "maria-01"].iter().enumerate() {
        hosts += &format!(
            "[hosts.{h}]\naddress = \"10.0.0.{}\"\nlabels = {{ role = \"maria\" }}\n",
            i + 1
        );
    }
    std::fs::write(
        dir.path().join("stack.toml"),
        format!("[stack]\nname = \"s\"\n{hosts}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("m.toml"), module).unwrap();
    dir
}

/// Each instance of `m.TYPE.NAME`, by host, with what it depends on.
fn deps(s: &Stack, kind: &str, name: &str) -> Vec<(String, Vec<String>)> {
    s.instances
        .iter()
        .filter(|i| i.address.kind == kind && i.address.name == name)
        .map(|i| {
            (
                i.address.host.clone().unwrap(),
                i.depends_on.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

fn pairs(want: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    want.iter()
        .map(|(h, d)| (h.to_string(), d.iter().map(ToString::to_string).collect()))
        .collect()
}

#[test]
fn serial_true_chains_the_instances_in_host_name_order() {
    let dir = stack(
        "[[note]]\nname = \"galera\"\non = { role = \"maria\" }\nserial = true\ntext = \"x\"\n",
    );
    let s = load_stack_with_env(dir.path(), &providers(), &|_| None).unwrap();
    assert_eq!(
        deps(&s, "note", "galera"),
        pairs(&[
            ("maria-01", &[]),
            ("maria-02", &["m.note.galera[maria-01]"]),
            ("maria-03", &["m.note.galera[maria-02]"]),
        ])
    );
}

#[test]
fn a_listed_on_gives_its_own_order() {
    let dir = stack(
        "[[note]]\nname = \"galera\"\non = [\"maria-03\", \"maria-01\", \"maria-02\"]\nserial = true\ntext = \"x\"\n",
    );
    let s = load_stack_with_env(dir.path(), &providers(), &|_| None).unwrap();
    assert_eq!(
        deps(&s, "note", "galera"),
        pairs(&[
            ("maria-03", &[]),
            ("maria-01", &["m.note.galera[maria-03]"]),
            ("maria-02", &["m.note.galera[maria-01]"]),
        ])
    );
}

const AFTER_EACH: &str = r#"
[[note]]
name = "galera"
on = { role = "maria" }
serial = { after_each = "check.synced" }
text = "x"

[[check]]
name = "synced"
on = { role = "maria" }
depends_on = ["note.galera"]
text = "y"
"#;

/// The check depends on the resource on its own host, the next host on the check: no cycle.
#[test]
fn after_each_waits_for_the_check_on_the_host_before() {
    let dir = stack(AFTER_EACH);
    let s = load_stack_with_env(dir.path(), &providers(), &|_| None).unwrap();
    assert_eq!(
        deps(&s, "note", "galera"),
        pairs(&[
            ("maria-01", &[]),
            (
                "maria-02",
                &["m.note.galera[maria-01]", "m.check.synced[maria-01]"]
            ),
            (
                "maria-03",
                &["m.note.galera[maria-02]", "m.check.synced[maria-02]"]
            ),
        ])
    );
    assert_eq!(
        deps(&s, "check", "synced")[1],
        ("maria-02".into(), vec!["m.note.galera[maria-02]".into()])
    );
}

/// The lab leaves `maria-02` out: `maria-03` then waits for the check on `maria-01`, through the
/// chain the left-out host was on.
#[test]
fn a_host_left_out_of_the_lab_keeps_the_others_in_order() {
    let dir = stack(AFTER_EACH);
    let reach = |a: &str| HostReach {
        address: a.into(),
        ssh: SshSettings::default(),
    };
    let overlay = HostOverlay {
        name: "the lab".into(),
        hosts: BTreeMap::from([
            ("maria-01".to_string(), reach("10.89.3.11")),
            ("maria-03".to_string(), reach("10.89.3.13")),
        ]),
        keep_api: false,
        api_hint: String::new(),
        skip_lab_modules: true,
        network: None,
    };
    let s = load_stack_with_overlay(dir.path(), &providers(), &overlay).unwrap();
    assert_eq!(
        deps(&s, "note", "galera"),
        pairs(&[
            ("maria-01", &[]),
            (
                "maria-03",
                &["m.note.galera[maria-01]", "m.check.synced[maria-01]"],
            ),
        ])
    );
}

/// A check that waits for the resource on every host closes a cycle with `serial`: refused.
#[test]
fn a_cycle_through_the_check_is_refused() {
    let module = AFTER_EACH.replace("\"note.galera\"", "\"note.galera[maria-03]\"");
    let dir = stack(&module);
    let err = load_stack_with_env(dir.path(), &providers(), &|_| None).unwrap_err();
    let text = format!("{err:?}");
    assert!(text.contains("dependency cycle"), "{text}");
}
