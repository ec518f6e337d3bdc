//! Host settings a provider declares (`container_runtime`): a host's own value wins over the
//! stack's `[defaults]`, which wins over the provider's default; unknown keys are refused.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use kz_engine::load::declare::Template;
use kz_engine::load::load_stack_with_env;
use kz_engine::model::{AttrValue, Value};
use kz_engine::provider::{Declared, Providers};

mod common;

/// A type whose one attribute is the host's `runtime` setting, `podman` unless set.
fn runs() -> common::Declares {
    common::Declares {
        kind: "runs",
        host_settings: &["runtime"],
        declare: |_| {
            Some(Declared {
                attrs: vec![(
                    "runtime".into(),
                    Template::Setting {
                        key: "runtime",
                        default: "podman",
                    },
                )],
                gate: None,
            })
        },
    }
}

fn stack(defaults: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        format!(
            "[stack]\nname = \"s\"\n{defaults}\n\
             [hosts.a]\ntransport = \"local\"\n\
             [hosts.b]\ntransport = \"local\"\nruntime = \"docker\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[[runs]]\nname = \"x\"\non = [\"a\", \"b\"]\n",
    )
    .unwrap();
    dir
}

fn runtimes(defaults: &str) -> Result<Vec<(String, String)>, String> {
    let dir = stack(defaults);
    let providers = Providers::new(vec![Arc::new(runs())]);
    let s = load_stack_with_env(dir.path(), &providers, &|_| None).map_err(|d| d.to_string())?;
    Ok(s.instances
        .iter()
        .map(|i| {
            let v = match &i.attrs["runtime"].value {
                AttrValue::Known(Value::Text(t)) => t.clone(),
                other => panic!("unexpected {other:?}"),
            };
            (i.address.host.clone().unwrap(), v)
        })
        .collect())
}

#[test]
fn a_host_value_wins_over_defaults_which_win_over_the_provider() {
    assert_eq!(
        runtimes("").unwrap(),
        [("a".into(), "podman".into()), ("b".into(), "docker".into())]
    );
    assert_eq!(
        runtimes("[defaults]\nruntime = \"crio\"\n").unwrap(),
        [("a".into(), "crio".into()), ("b".into(), "docker".into())]
    );
}

#[test]
fn an_unknown_default_is_refused_at_its_place() {
    let err = runtimes("[defaults]\nruntim = \"docker\"\n").unwrap_err();
    assert!(
        err.contains("stack.toml:4:1") && err.contains("unknown host setting `runtim`"),
        "{err}"
    );
    assert!(err.contains("expected one of `runtime`"), "{err}");
    let err = runtimes("[defaults]\nruntime = 3\n").unwrap_err();
    assert!(err.contains("`runtime` must be a string"), "{err}");
}
