//! Issue 11, item 9: a provider that panics while applying fails its own change, by address and
//! with the panic's message; what depends on it is not attempted; nothing vanishes.

mod support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use kz_engine::apply::{ApplyOptions, Interrupt, apply};
use kz_engine::load::load_stack_with_env;
use kz_engine::model::Instance;
use kz_engine::plan::{PlanOptions, Runtime, plan};
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, Provider, ProviderError,
    Providers,
};
use kz_providers::Transports;
use kz_state::State;
use support::TestStack;
use support::memory::Memory;

/// `[[boom]]`: never exists, and panics when created.
struct Boom;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoomDecl {}

#[async_trait]
impl Provider for Boom {
    fn kind(&self) -> &'static str {
        "boom"
    }
    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        decl.parse::<BoomDecl>()?;
        Some(Declared::default())
    }
    fn probe(&self, _: &Instance, _: &str) -> Option<String> {
        Some("true".into())
    }
    fn observe(&self, _: &Instance, _: &MemberOutputs) -> Result<Observation, String> {
        Ok(Observation::default())
    }
    async fn create(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
        panic!("deadline overflow in a provider");
    }
    async fn update(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
        unreachable!()
    }
    async fn delete(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
        unreachable!()
    }
}

#[test]
fn a_change_that_panics_fails_by_address_and_blocks_its_dependents() {
    let st = TestStack::new("panics");
    st.write(
        "10_app.toml",
        r#"
[[boom]]
name = "b"
on = ["local"]

[[file]]
name = "after"
on = ["local"]
path = "@ROOT@/after"
content = "x\n"
depends_on = ["boom.b"]
"#,
    );
    let providers = Providers::new(vec![
        Arc::new(Boom) as Arc<dyn Provider>,
        Arc::new(kz_providers::file::FileProvider),
    ]);
    let stack = load_stack_with_env(st.path(), &providers, &|k| std::env::var(k).ok())
        .expect("stack loads");
    let runtime = Runtime {
        providers,
        transports: Arc::new(Transports::new(stack.hosts.clone())),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let p = plan(&stack, None, &PlanOptions::default(), &runtime)
            .await
            .expect("plan");
        assert_eq!(p.changes.len(), 2, "{:?}", p.changes);
        let mut state = State::new("test");
        let (tx, _rx) = mpsc::unbounded_channel();
        let (_cancel, cancel_rx) = watch::channel(Interrupt::None);
        let report = apply(
            &stack,
            &p,
            &mut state,
            &mut Memory(Arc::new(Mutex::new(None))),
            &ApplyOptions { parallelism: 2 },
            &runtime,
            tx,
            cancel_rx,
        )
        .await;
        assert!(!report.success(), "{report:?}");
        let (address, message) = report.failed.first().expect("a failure");
        assert_eq!(address, "10_app.boom.b[local]", "{report:?}");
        assert!(
            message.contains("panicked") && message.contains("deadline overflow in a provider"),
            "{message}"
        );
        assert_eq!(report.failed.len(), 1, "{report:?}");
        let blocked: Vec<&str> = report
            .not_attempted
            .iter()
            .map(|(a, _)| a.as_str())
            .collect();
        assert_eq!(blocked, ["10_app.file.after[local]"], "{report:?}");
        assert!(
            report.not_attempted[0]
                .1
                .contains("10_app.boom.b[local] failed"),
            "{report:?}"
        );
        assert!(!st.at("after").exists());
    });
}
