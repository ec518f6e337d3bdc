//! The provider contract, held by a resource type defined here: one instance spanning three SSH
//! hosts (real sshd on loopback), read with one probe per member placed in each member's batched
//! read, and written on one of them through the apply context.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use toml::Spanned;

use kz_engine::apply::{ApplyOptions, Event, Interrupt, apply};
use kz_engine::load::declare::Template;
use kz_engine::load::load_stack_with_env;
use kz_engine::model::{Instance, Value};
use kz_engine::plan::{Action, PlanOptions, Runtime, plan};
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, Placement, Provider,
    ProviderError, Providers, UploadOptions, shell_quote,
};
use kz_providers::Transports;
use kz_state::State;
use support::TestStack;
use support::memory::Memory;
use support::sshd::{KeyPair, Sshd, keygen, ssh_stack_toml};

/// `[[replica]]`: a file that lives on every member as `PATH.HOST`, written on the primary only.
/// It exists when the primary holds it; every member's copy is observed.
#[derive(Default)]
struct Replica {
    /// How many member outputs the last `observe` saw.
    seen: AtomicUsize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaDecl {
    path: Spanned<String>,
    content: Spanned<String>,
    primary: Spanned<String>,
}

fn member_path(inst: &Instance, host: &str) -> String {
    format!("{}.{host}", inst.text("path").unwrap_or_default())
}

#[async_trait]
impl Provider for Replica {
    fn kind(&self) -> &'static str {
        "replica"
    }

    fn placement(&self) -> Placement {
        Placement::Group
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        let d: ReplicaDecl = decl.parse()?;
        if !decl.hosts.contains_key(d.primary.get_ref()) {
            decl.error(&d.primary, "unknown host");
            return None;
        }
        Some(Declared {
            attrs: vec![
                ("path".into(), Template::Path(d.path)),
                ("content".into(), Template::Text(d.content)),
                ("primary".into(), Template::Text(d.primary)),
            ],
            gate: None,
        })
    }

    fn probe(&self, inst: &Instance, host: &str) -> Option<String> {
        let p = shell_quote(&member_path(inst, host));
        Some(format!(
            "if [ -f {p} ]; then echo present; cat {p}; else echo absent; fi"
        ))
    }

    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        self.seen.store(out.outputs.len(), Ordering::SeqCst);
        let primary = inst.text("primary").ok_or("no primary")?;
        let o = out.on(primary).ok_or("the primary was not read")?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
        let exists = head == "present";
        let mut attrs = BTreeMap::new();
        if exists {
            attrs.insert("content".into(), Value::Text(body.to_string()));
        }
        Ok(Observation {
            exists,
            attrs,
            note: None,
            ..Default::default()
        })
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        let inst = cx.instance();
        let primary = inst.text("primary").unwrap_or_default().to_string();
        cx.progress(format!("writing on {primary}"));
        let t = cx.transport(&primary).await?;
        let content = inst.text("content").unwrap_or_default().as_bytes().to_vec();
        t.upload(
            &member_path(inst, &primary),
            content,
            &UploadOptions {
                timeout: Duration::from_secs(10),
                ..UploadOptions::default()
            },
        )
        .await
        .map_err(|e| ProviderError::transport("upload", e).on(&primary))?;
        Ok(Applied {
            outputs: BTreeMap::from([("written_on".to_string(), Value::Text(primary))]),
            note: None,
        })
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        self.create(cx).await
    }

    async fn delete(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }
}

struct World {
    servers: Vec<Sshd>,
    stack_dir: TestStack,
    replica: Arc<Replica>,
    providers: Providers,
    home: tempfile::TempDir,
}

fn world(servers: Vec<Sshd>, key: &KeyPair, home: tempfile::TempDir) -> World {
    let known = home.path().join("known_hosts");
    let lines: Vec<String> = servers.iter().map(Sshd::known_hosts_line).collect();
    std::fs::write(&known, lines.join("\n") + "\n").expect("known_hosts");
    let names = ["db-01", "db-02", "db-03"];
    let hosts: Vec<(&str, &Sshd)> = names.iter().copied().zip(servers.iter()).collect();
    let st = TestStack::new("contract");
    st.write(
        "stack.toml",
        &ssh_stack_toml(
            "contract",
            &hosts,
            &key.private,
            &known,
            "connect_timeout = \"2s\"",
        ),
    );
    st.write(
        "01_data.toml",
        r#"
[[file]]
name = "motd"
on = { role = "app" }
path = "@ROOT@/motd.${host.name}"
content = "hello\n"

[[replica]]
name = "data"
on = { role = "app" }
path = "@ROOT@/data"
content = "v1\n"
primary = "db-02"
depends_on = ["file.motd"]
"#,
    );
    let replica = Arc::new(Replica::default());
    let mut list: Vec<Arc<dyn Provider>> = vec![
        Arc::new(kz_providers::file::FileProvider),
        Arc::clone(&replica) as Arc<dyn Provider>,
    ];
    list.push(Arc::new(kz_providers::command::CommandProvider));
    World {
        servers,
        stack_dir: st,
        replica,
        providers: Providers::new(list),
        home,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn three_hosts() -> World {
    let home = tempfile::tempdir().expect("home");
    let key = keygen(home.path(), "id_test", "ed25519");
    let servers = (0..3).map(|_| Sshd::start(&[&key.public])).collect();
    world(servers, &key, home)
}

#[test]
fn a_group_instance_is_read_in_each_members_round_trip_and_written_on_one() {
    let w = three_hosts();
    let home = w.home.path().display().to_string();
    let env = move |k: &str| match k {
        "HOME" => Some(home.clone()),
        _ => std::env::var(k).ok(),
    };
    let stack = load_stack_with_env(w.stack_dir.path(), &w.providers, &env).expect("stack loads");
    let group = stack
        .instance("01_data.replica.data")
        .expect("one instance for the group, with no [HOST]");
    assert_eq!(group.members, vec!["db-01", "db-02", "db-03"]);
    let runtime = Runtime {
        providers: w.providers.clone(),
        transports: Arc::new(Transports::new(stack.hosts.clone())),
    };
    rt().block_on(async {
        let p = plan(&stack, None, &PlanOptions::default(), &runtime)
            .await
            .expect("plan");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        // Three files and one group, read on three hosts: one round trip each.
        assert_eq!(p.read.hosts, 3);
        assert_eq!(p.read.round_trips, 3);
        assert_eq!(
            w.replica.seen.load(Ordering::SeqCst),
            3,
            "every member observed"
        );
        let c = p
            .changes
            .iter()
            .find(|c| c.address == "01_data.replica.data")
            .expect("the group's change");
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.host, None);
        assert_eq!(c.members, vec!["db-01", "db-02", "db-03"]);

        let mut state = State::new("test");
        let saved = Arc::new(Mutex::new(None));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_cancel, cancel_rx) = watch::channel(Interrupt::None);
        let report = apply(
            &stack,
            &p,
            &mut state,
            &mut Memory(Arc::clone(&saved)),
            &ApplyOptions { parallelism: 4 },
            &runtime,
            tx,
            cancel_rx,
        )
        .await;
        assert!(report.success(), "{report:?}");
        let mut progress = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let Event::Progress { address, message } = e {
                progress.push(format!("{address}: {message}"));
            }
        }
        assert_eq!(progress, vec!["01_data.replica.data: writing on db-02"]);
        // Written on the primary only.
        let root = w.stack_dir.root();
        assert_eq!(
            std::fs::read_to_string(format!("{root}/data.db-02")).expect("primary's copy"),
            "v1\n"
        );
        assert!(!std::path::Path::new(&format!("{root}/data.db-01")).exists());
        // Recorded with its members and what the provider computed.
        let r = &state.resources["01_data.replica.data"];
        assert_eq!(r.host, "");
        assert_eq!(r.members, vec!["db-01", "db-02", "db-03"]);
        assert!(r.outputs.contains_key("written_on"));

        let again = plan(&stack, Some(&state), &PlanOptions::default(), &runtime)
            .await
            .expect("plan");
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert_eq!(again.read.round_trips, 3);
    });
}

#[test]
fn an_unreachable_member_makes_the_group_unknown_naming_the_host() {
    let home = tempfile::tempdir().expect("home");
    let key = keygen(home.path(), "id_test", "ed25519");
    let mut servers: Vec<Sshd> = (0..3).map(|_| Sshd::start(&[&key.public])).collect();
    let w = world(std::mem::take(&mut servers), &key, home);
    let home = w.home.path().display().to_string();
    let env = move |k: &str| match k {
        "HOME" => Some(home.clone()),
        _ => std::env::var(k).ok(),
    };
    let stack = load_stack_with_env(w.stack_dir.path(), &w.providers, &env).expect("stack loads");
    // db-03 goes away: nothing listens at its address any more.
    let mut world = w;
    drop(world.servers.pop().expect("db-03"));
    let runtime = Runtime {
        providers: world.providers.clone(),
        transports: Arc::new(Transports::new(stack.hosts.clone())),
    };
    rt().block_on(async {
        let p = plan(&stack, None, &PlanOptions::default(), &runtime)
            .await
            .expect("plan");
        let group_error = p
            .errors
            .iter()
            .find(|e| e.address.as_deref() == Some("01_data.replica.data"))
            .expect("the group is unknown, not absent");
        assert_eq!(group_error.host, "db-03");
        assert!(
            group_error.message.contains("db-03"),
            "{}",
            group_error.message
        );
        assert!(
            !p.changes
                .iter()
                .any(|c| c.address == "01_data.replica.data"),
            "an unknown group is not planned as created"
        );
        // The reachable members are still read, one round trip each.
        assert!(
            p.changes
                .iter()
                .any(|c| c.address == "01_data.file.motd[db-01]")
        );
        assert_eq!(p.read.round_trips, 3);
    });
}
