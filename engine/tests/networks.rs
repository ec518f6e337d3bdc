//! `[networks]` and `${networks.NAME}`: the stack's own ranges in a normal run, the overlay's
//! network (the lab's subnet) under `--lab`, so one stack admits the lab's hosts there.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use kz_engine::load::{load_stack_with_env, load_stack_with_overlay};
use kz_engine::model::{AttrValue, SshSettings, Value};
use kz_engine::overlay::{HostOverlay, HostReach};
use kz_engine::provider::Providers;

mod common;

fn stack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        "[stack]\nname = \"s\"\n[networks]\nprivate = \"10.0.0.0/16\"\n\
         [hosts.db-01]\naddress = \"10.0.0.120\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[[note]]\nname = \"hba\"\non = [\"db-01\"]\n\
         text = \"host all all ${networks.private} from ${host.address}\"\n",
    )
    .unwrap();
    dir
}

fn text(s: &kz_engine::model::Stack) -> String {
    match &s.instances[0].attrs["text"].value {
        AttrValue::Known(Value::Text(t)) => t.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_network_is_the_stack_s_own_range_outside_the_lab() {
    let dir = stack();
    let providers = Providers::new(vec![Arc::new(common::note("note"))]);
    let s = load_stack_with_env(dir.path(), &providers, &|_| None).unwrap();
    assert_eq!(text(&s), "host all all 10.0.0.0/16 from 10.0.0.120");
    assert_eq!(s.networks["private"], "10.0.0.0/16");
}

#[test]
fn under_the_lab_every_network_is_the_lab_s_subnet() {
    let dir = stack();
    let providers = Providers::new(vec![Arc::new(common::note("note"))]);
    let overlay = HostOverlay {
        name: "the lab".into(),
        hosts: BTreeMap::from([(
            "db-01".to_string(),
            HostReach {
                address: "10.89.3.17".into(),
                ssh: SshSettings::default(),
            },
        )]),
        keep_api: false,
        api_hint: String::new(),
        skip_lab_modules: true,
        network: Some("10.89.3.0/24".into()),
    };
    let s = load_stack_with_overlay(dir.path(), &providers, &overlay).unwrap();
    assert_eq!(text(&s), "host all all 10.89.3.0/24 from 10.89.3.17");
    assert!(
        !text(&s).contains("10.0.0."),
        "no production address under the lab"
    );
}
