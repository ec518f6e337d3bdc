//! The batch framing, and reads that panic.

mod batch {
    use super::super::*;

    #[test]
    fn batch_round_trip_keeps_sections_apart() {
        let out = b"KZ-ab-BEGIN-0\nhello\nKZ-ab-END-0 0\nKZ-ab-BEGIN-1\n\nKZ-ab-END-1 3\n";
        let s = split_batch("ab", out, 3);
        assert_eq!(
            s[0].as_ref().map(|p| (p.stdout.clone(), p.status)),
            Some((b"hello".to_vec(), 0))
        );
        assert_eq!(
            s[1].as_ref().map(|p| (p.stdout.clone(), p.status)),
            Some((Vec::new(), 3))
        );
        assert!(s[2].is_none());
    }
}

mod panics {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use async_trait::async_trait;

    use crate::model::{Address, Attr, Host, Instance, SshSettings, Stack, TransportKind, Value};
    use crate::plan::{PlanOptions, Runtime, plan};
    use crate::provider::{
        Applied, ApplyCtx, CommandOutput, CommandSpec, Declaration, Declared, MemberOutputs,
        Observation, Provider, ProviderError, Providers, Transport, TransportError,
        TransportFactory,
    };

    /// A resource type whose probe is `true` and that exists whenever its host answers.
    struct Probe;

    #[async_trait]
    impl Provider for Probe {
        fn kind(&self) -> &'static str {
            "probe"
        }
        fn declare(&self, _: &mut Declaration<'_>) -> Option<Declared> {
            None
        }
        fn probe(&self, _: &Instance, _: &str) -> Option<String> {
            Some("true".into())
        }
        fn observe(&self, _: &Instance, _: &MemberOutputs) -> Result<Observation, String> {
            Ok(Observation {
                exists: true,
                attrs: BTreeMap::from([("v".to_string(), Value::Text("x".into()))]),
                note: None,
                ..Default::default()
            })
        }
        async fn create(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
            unreachable!()
        }
        async fn update(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
            unreachable!()
        }
        async fn delete(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
            unreachable!()
        }
    }

    /// `ok` answers, `refused` cannot be reached, `broken` panics while reading.
    struct Hosts;

    struct Fake(String);

    #[async_trait]
    impl Transport for Fake {
        fn host(&self) -> &str {
            &self.0
        }
        fn max_sessions(&self) -> usize {
            1
        }
        fn command_timeout(&self) -> std::time::Duration {
            std::time::Duration::from_secs(5)
        }
        async fn run(&self, cmd: CommandSpec) -> Result<CommandOutput, TransportError> {
            match self.0.as_str() {
                "broken" => panic!("deadline overflow"),
                "refused" => Err(TransportError::Connect("connection refused".into())),
                _ => {
                    // Answers the one probe (`true`) of the batch as a shell would: no output.
                    let nonce = cmd
                        .script
                        .split("'KZ-")
                        .nth(1)
                        .and_then(|r| r.split("-BEGIN-0'").next())
                        .expect("a batch of one probe");
                    Ok(CommandOutput {
                        stdout: format!("KZ-{nonce}-BEGIN-0\n\nKZ-{nonce}-END-0 0\n").into_bytes(),
                        stderr: Vec::new(),
                        status: 0,
                    })
                }
            }
        }
    }

    impl TransportFactory for Hosts {
        fn transport(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError> {
            Ok(Arc::new(Fake(host.name.clone())))
        }
    }

    fn stack() -> Stack {
        let names = ["broken", "ok", "refused"];
        let hosts = names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Host {
                        name: n.to_string(),
                        address: format!("{n}.invalid"),
                        labels: BTreeMap::new(),
                        settings: BTreeMap::new(),
                        transport: TransportKind::Ssh,
                        ssh: SshSettings::default(),
                    },
                )
            })
            .collect();
        let instances = names
            .iter()
            .map(|n| Instance {
                address: Address {
                    module: "m".into(),
                    kind: "probe".into(),
                    name: "p".into(),
                    host: Some(n.to_string()),
                },
                members: Vec::new(),
                attrs: BTreeMap::from([("v".to_string(), Attr::plain(Value::Text("x".into())))]),
                depends_on: Vec::new(),
                outputs: BTreeMap::new(),
                gate: None,
            })
            .collect();
        Stack {
            name: "s".into(),
            description: None,
            dir: ".".into(),
            parallelism: None,
            state: crate::model::StateConfig {
                backend: kz_state::BackendConfig::Local,
            },
            hosts,
            modules: BTreeMap::new(),
            instances,
            digest: String::new(),
            secrets: Default::default(),
            serial: Vec::new(),
            left_out: Default::default(),
            drills: Vec::new(),
            networks: BTreeMap::new(),
            lab: Default::default(),
        }
    }

    /// Issue 11, items 9 and 26: a read that panics fails its host with a message (before, the
    /// error named no host, so the host's instances were planned unread), and only hosts that
    /// answered count as read (before, "Read 3 hosts").
    #[tokio::test]
    async fn a_read_that_panics_fails_its_host_and_only_answers_count() {
        let runtime = Runtime {
            providers: Providers::new(vec![Arc::new(Probe)]),
            transports: Arc::new(Hosts),
        };
        let p = plan(&stack(), None, &PlanOptions::default(), &runtime)
            .await
            .expect("plan");
        let broken = p
            .errors
            .iter()
            .find(|e| e.host == "broken")
            .unwrap_or_else(|| panic!("no error for host broken: {:?}", p.errors));
        assert!(
            broken.message.contains("panicked") && broken.message.contains("deadline overflow"),
            "{}",
            broken.message
        );
        assert!(
            p.errors.iter().any(|e| e.host == "refused"),
            "{:?}",
            p.errors
        );
        assert!(
            p.errors.iter().all(|e| !e.host.is_empty()),
            "{:?}",
            p.errors
        );
        // Neither unread host's instance is planned; the one read is adopted.
        let planned: Vec<&str> = p.changes.iter().map(|c| c.address.as_str()).collect();
        assert_eq!(planned, ["m.probe.p[ok]"], "{:?}", p.changes);
        assert_eq!(p.read.hosts, 1, "{:?}", p.read);
        assert_eq!(p.read.round_trips, 3, "{:?}", p.read);
    }
}
