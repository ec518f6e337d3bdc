//! Unit tests of the pure parts: instances and API objects in kz's terms, update plans, errors.

use std::collections::{BTreeMap, HashMap};

use super::service::Service;
use hcloud::models;
use kz_engine::model::{Address, Attr, Instance, Value};

use super::actions::action_failed;
use super::diff::{Op, Resolved, plan};
use super::spec::{
    AttachedNet, Current, Desired, LabelTarget, ServerTarget, Targets, observe, service_from_api,
    service_to_api,
};
use super::{LbProvider, Settings, check_endpoint, is_stand_in};

const WEB: &str = "tcp 80 -> 8080, health tcp:8080 every 15s timeout 10s retries 3";
const TLS: &str = "tcp 443 -> 8443, proxyprotocol, health tcp:8443 every 15s timeout 10s retries 3";
const API: &str =
    "http 8000 -> 8000, health http:8000 every 10s timeout 5s retries 2 path /healthz domain x.io";

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::Text(s.to_string())).collect())
}

fn instance(attrs: &[(&str, Value)]) -> Instance {
    let mut all: BTreeMap<String, Attr> = [
        ("type", text("lb11")),
        ("location", text("nbg1")),
        ("algorithm", text("round_robin")),
        ("public_interface", Value::Bool(true)),
        ("services", list(&[WEB, TLS])),
        ("token_env", text("HCLOUD_TOKEN")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Attr::plain(v)))
    .collect();
    for (k, v) in attrs {
        all.insert(k.to_string(), Attr::plain(v.clone()));
    }
    Instance {
        address: Address {
            module: "edge".into(),
            kind: "lb".into(),
            name: "lb-web".into(),
            host: None,
        },
        members: Vec::new(),
        attrs: all,
        depends_on: Vec::new(),
        outputs: Default::default(),
        gate: None,
    }
}

fn services(lines: &[&str]) -> Vec<Service> {
    lines
        .iter()
        .map(|l| l.parse().expect("a service line"))
        .collect()
}

/// A load balancer that matches `instance(&[])`.
fn current() -> Current {
    Current {
        id: 7,
        lb_type: "lb11".into(),
        location: "nbg1".into(),
        network_zone: "eu-central".into(),
        algorithm: "round_robin".into(),
        public_interface: true,
        networks: Vec::new(),
        server_targets: Vec::new(),
        label_targets: Vec::new(),
        ip_targets: Vec::new(),
        services: services(&[WEB, TLS]),
        labels: BTreeMap::new(),
        delete_protection: false,
    }
}

fn desired(attrs: &[(&str, Value)]) -> Desired {
    Desired::from_instance(&instance(attrs)).expect("a valid instance")
}

fn servers(names: &[(&str, i64)]) -> HashMap<String, i64> {
    names.iter().map(|(n, i)| (n.to_string(), *i)).collect()
}

fn target(id: i64, name: &str, private: bool) -> ServerTarget {
    ServerTarget {
        id,
        name: Some(name.into()),
        use_private_ip: private,
    }
}

#[test]
fn an_instance_reads_as_its_desired_state() {
    let d = desired(&[
        ("targets", list(&["web-2", "web-1"])),
        ("use_private_ip", Value::Bool(true)),
        ("network", text("private")),
        ("ip", text("10.0.0.5")),
    ]);
    assert_eq!(d.name, "lb-web");
    assert_eq!(
        d.targets,
        Targets::Servers(vec!["web-1".into(), "web-2".into()])
    );
    assert!(d.use_private_ip);
    assert_eq!(d.services[0].listen_port, 80);
    let both = instance(&[("network_zone", text("eu-central"))]);
    assert!(Desired::from_instance(&both).is_err());
}

#[test]
fn services_go_to_the_api_and_back_as_the_same_line() {
    for line in [WEB, TLS, API] {
        let s: Service = line.parse().expect("a service line");
        let api = service_to_api(&s).expect("valid for the API");
        assert_eq!(service_from_api(&api).to_string(), line);
    }
    let mut half: Service = WEB.parse().expect("a service line");
    half.health.interval = std::time::Duration::from_millis(1500);
    assert!(
        service_to_api(&half)
            .expect_err("not whole seconds")
            .contains("whole seconds")
    );
}

#[test]
fn an_http_check_of_the_api_names_its_path() {
    let mut check = models::LoadBalancerServiceHealthCheck::new(
        15,
        80,
        models::load_balancer_service_health_check::Protocol::Http,
        3,
        10,
    );
    check.http = Some(Box::new(models::LoadBalancerServiceHealthCheckHttp::new(
        None,
        "/".into(),
    )));
    let s = models::LoadBalancerService::new(
        80,
        check,
        80,
        models::load_balancer_service::Protocol::Http,
        false,
    );
    assert_eq!(
        service_from_api(&s).to_string(),
        "http 80 -> 80, health http:80 every 15s timeout 10s retries 3 path /"
    );
}

#[test]
fn an_unchanged_load_balancer_observes_as_declared() {
    let inst = instance(&[
        ("targets", list(&["web-1", "web-2"])),
        ("use_private_ip", Value::Bool(true)),
        ("network", text("private")),
        ("ip", text("10.0.0.5")),
        (
            "labels",
            Value::Map([("app".to_string(), Value::Text("web".to_string()))].into()),
        ),
    ]);
    let mut c = current();
    c.server_targets = vec![target(2, "web-2", true), target(1, "web-1", true)];
    c.networks = vec![AttachedNet {
        id: 3,
        name: Some("private".into()),
        ip: Some("10.0.0.5".into()),
    }];
    c.labels = [("app".to_string(), "web".to_string())].into();
    let obs = observe(&inst, &c);
    assert!(obs.exists);
    for (k, a) in &inst.attrs {
        assert_eq!(obs.attrs.get(k), a.known(), "{k}");
    }
    assert_eq!(obs.attrs.len(), inst.attrs.len());
}

#[test]
fn an_observation_reports_only_what_is_declared_and_the_network() {
    let inst = instance(&[("network_zone", text("eu-central"))]);
    let mut inst = inst;
    inst.attrs.remove("location");
    let mut c = current();
    c.networks = vec![AttachedNet {
        id: 3,
        name: Some("other".into()),
        ip: Some("10.0.0.9".into()),
    }];
    c.label_targets = vec![LabelTarget {
        selector: "role=x".into(),
        use_private_ip: false,
    }];
    let obs = observe(&inst, &c);
    assert_eq!(obs.attrs.get("network_zone"), Some(&text("eu-central")));
    assert_eq!(obs.attrs.get("network"), Some(&text("other")));
    assert!(!obs.attrs.contains_key("location"));
    assert!(!obs.attrs.contains_key("ip"));
    assert!(!obs.attrs.contains_key("target_label"));
    assert!(!obs.attrs.contains_key("labels"));
}

#[test]
fn a_declared_target_label_that_is_missing_shows_as_empty() {
    let inst = instance(&[
        ("target_label", text("role=haproxy")),
        ("use_private_ip", Value::Bool(false)),
    ]);
    let obs = observe(&inst, &current());
    assert_eq!(obs.attrs.get("target_label"), Some(&text("")));
    assert_eq!(obs.attrs.get("use_private_ip"), Some(&Value::Bool(false)));
}

#[test]
fn an_unchanged_load_balancer_needs_no_action() {
    let ops = plan(&desired(&[]), &current(), &Resolved::default()).expect("a plan");
    assert_eq!(ops, Vec::new());
}

#[test]
fn services_are_diffed_by_listen_port() {
    let changed_tls = TLS.replace("retries 3", "retries 5");
    let d = desired(&[("services", list(&[&changed_tls, API]))]);
    let ops = plan(&d, &current(), &Resolved::default()).expect("a plan");
    assert_eq!(
        ops,
        vec![
            Op::DeleteService(80),
            Op::UpdateService(changed_tls.parse().expect("line")),
            Op::AddService(API.parse().expect("line")),
        ]
    );
}

#[test]
fn server_targets_are_diffed_by_name() {
    let d = desired(&[
        ("targets", list(&["web-1", "web-3"])),
        ("use_private_ip", Value::Bool(false)),
    ]);
    let mut c = current();
    c.server_targets = vec![target(1, "web-1", false), target(2, "web-2", false)];
    let r = Resolved {
        network: None,
        servers: servers(&[("web-1", 1), ("web-2", 2), ("web-3", 3)]),
    };
    let ops = plan(&d, &c, &r).expect("a plan");
    assert_eq!(
        ops,
        vec![
            Op::RemoveServerTarget {
                id: 2,
                name: "web-2".into()
            },
            Op::AddServerTarget {
                id: 3,
                name: "web-3".into(),
                use_private_ip: false
            },
        ]
    );
}

#[test]
fn a_missing_server_is_named() {
    let d = desired(&[("targets", list(&["web-1", "web-9", "web-8"]))]);
    let r = Resolved {
        network: None,
        servers: servers(&[("web-1", 1)]),
    };
    let e = plan(&d, &current(), &r).expect_err("servers are missing");
    assert!(e.contains("web-8, web-9"), "{e}");
}

#[test]
fn a_change_of_use_private_ip_adds_the_targets_again() {
    let d = desired(&[
        ("targets", list(&["web-1"])),
        ("use_private_ip", Value::Bool(true)),
    ]);
    let mut c = current();
    c.server_targets = vec![target(1, "web-1", false)];
    let r = Resolved {
        network: None,
        servers: servers(&[("web-1", 1)]),
    };
    let ops = plan(&d, &c, &r).expect("a plan");
    assert_eq!(
        ops,
        vec![
            Op::RemoveServerTarget {
                id: 1,
                name: "web-1".into()
            },
            Op::AddServerTarget {
                id: 1,
                name: "web-1".into(),
                use_private_ip: true
            },
        ]
    );
}

#[test]
fn a_label_target_is_swapped_and_server_targets_go() {
    let d = desired(&[
        ("target_label", text("role=new")),
        ("use_private_ip", Value::Bool(false)),
    ]);
    let mut c = current();
    c.label_targets = vec![LabelTarget {
        selector: "role=old".into(),
        use_private_ip: false,
    }];
    c.server_targets = vec![target(1, "web-1", false)];
    let ops = plan(&d, &c, &Resolved::default()).expect("a plan");
    assert_eq!(
        ops,
        vec![
            Op::RemoveServerTarget {
                id: 1,
                name: "web-1".into()
            },
            Op::RemoveLabelTarget("role=old".into()),
            Op::AddLabelTarget {
                selector: "role=new".into(),
                use_private_ip: false
            },
        ]
    );
}

#[test]
fn moving_a_private_load_balancer_to_another_network_keeps_it_reachable() {
    let d = desired(&[
        ("public_interface", Value::Bool(false)),
        ("network", text("new")),
        ("ip", text("10.1.0.5")),
        ("targets", list(&["web-1"])),
        ("use_private_ip", Value::Bool(true)),
    ]);
    let mut c = current();
    c.public_interface = false;
    c.networks = vec![AttachedNet {
        id: 3,
        name: Some("old".into()),
        ip: Some("10.0.0.5".into()),
    }];
    c.server_targets = vec![target(1, "web-1", true)];
    let r = Resolved {
        network: Some(4),
        servers: servers(&[("web-1", 1)]),
    };
    let ops = plan(&d, &c, &r).expect("a plan");
    let steps: Vec<&str> = ops.iter().map(Op::step).collect();
    assert_eq!(
        steps,
        vec![
            // Public only for the move: no service while it is (issue 11, item 19).
            "delete_service",
            "delete_service",
            "enable_public_interface",
            "remove_target",
            "detach_from_network",
            "attach_to_network",
            "disable_public_interface",
            "add_target",
            "add_service",
            "add_service",
        ]
    );
    assert!(ops.contains(&Op::AttachToNetwork {
        id: 4,
        ip: Some("10.1.0.5".into())
    }));
}

#[test]
fn a_new_ip_in_the_same_network_attaches_again() {
    let d = desired(&[("network", text("net")), ("ip", text("10.0.0.6"))]);
    let mut c = current();
    c.networks = vec![AttachedNet {
        id: 3,
        name: Some("net".into()),
        ip: Some("10.0.0.5".into()),
    }];
    let r = Resolved {
        network: Some(3),
        servers: HashMap::new(),
    };
    let ops = plan(&d, &c, &r).expect("a plan");
    assert_eq!(
        ops,
        vec![
            Op::DetachFromNetwork { id: 3 },
            Op::AttachToNetwork {
                id: 3,
                ip: Some("10.0.0.6".into())
            },
        ]
    );
    let absent = Resolved::default();
    let e = plan(&d, &c, &absent).expect_err("no such network");
    assert_eq!(e, "no network named net in the project");
}

#[test]
fn type_algorithm_and_labels_come_after_the_public_interface_is_on() {
    let d = desired(&[
        ("type", text("lb21")),
        ("algorithm", text("least_connections")),
        (
            "labels",
            Value::Map([("a".to_string(), Value::Text("b".to_string()))].into()),
        ),
        ("public_interface", Value::Bool(true)),
    ]);
    let mut c = current();
    c.public_interface = false;
    let ops = plan(&d, &c, &Resolved::default()).expect("a plan");
    assert_eq!(
        ops,
        vec![
            Op::EnablePublicInterface,
            Op::ChangeType("lb21".into()),
            Op::ChangeAlgorithm("least_connections".into()),
            Op::SetLabels([("a".to_string(), "b".to_string())].into()),
        ]
    );
}

#[test]
fn what_is_not_declared_is_left_alone() {
    let mut c = current();
    c.labels = [("x".to_string(), "y".to_string())].into();
    c.server_targets = vec![target(1, "web-1", false)];
    c.label_targets = vec![label("role=x", false)];
    c.ip_targets = vec!["203.0.113.9".into()];
    c.networks = vec![AttachedNet {
        id: 3,
        name: Some("net".into()),
        ip: None,
    }];
    let d = desired(&[]);
    assert_eq!(plan(&d, &c, &Resolved::default()).expect("a plan"), vec![]);
}

fn label(selector: &str, private: bool) -> LabelTarget {
    LabelTarget {
        selector: selector.into(),
        use_private_ip: private,
    }
}

#[test]
fn a_smaller_type_comes_after_what_goes_and_before_what_comes() {
    // lb21 with six services and two targets, to lb11 (at most five services): the type can
    // change only once the sixth service is gone.
    const SIX: [&str; 6] = [
        "tcp 1001 -> 1001, health tcp:1001 every 15s timeout 10s retries 3",
        "tcp 1002 -> 1002, health tcp:1002 every 15s timeout 10s retries 3",
        "tcp 1003 -> 1003, health tcp:1003 every 15s timeout 10s retries 3",
        "tcp 1004 -> 1004, health tcp:1004 every 15s timeout 10s retries 3",
        "tcp 1005 -> 1005, health tcp:1005 every 15s timeout 10s retries 3",
        "tcp 1006 -> 1006, health tcp:1006 every 15s timeout 10s retries 3",
    ];
    let changed_five = SIX[4].replace("retries 3", "retries 5");
    let d = desired(&[
        ("type", text("lb11")),
        ("algorithm", text("least_connections")),
        (
            "services",
            list(&[SIX[0], SIX[1], SIX[2], SIX[3], &changed_five]),
        ),
        ("targets", list(&["web-1", "web-3"])),
        ("use_private_ip", Value::Bool(false)),
    ]);
    let mut c = current();
    c.lb_type = "lb21".into();
    c.services = services(&SIX);
    c.server_targets = vec![target(1, "web-1", false), target(2, "web-2", false)];
    let r = Resolved {
        network: None,
        servers: servers(&[("web-1", 1), ("web-2", 2), ("web-3", 3)]),
    };
    let ops = plan(&d, &c, &r).expect("a plan");
    assert_eq!(
        ops,
        vec![
            Op::RemoveServerTarget {
                id: 2,
                name: "web-2".into()
            },
            Op::DeleteService(1006),
            Op::ChangeType("lb11".into()),
            Op::ChangeAlgorithm("least_connections".into()),
            Op::AddServerTarget {
                id: 3,
                name: "web-3".into(),
                use_private_ip: false
            },
            Op::UpdateService(changed_five.parse().expect("line")),
        ]
    );
}

#[test]
fn a_larger_type_comes_before_what_is_added() {
    let d = desired(&[("type", text("lb21")), ("services", list(&[WEB, TLS, API]))]);
    let ops = plan(&d, &current(), &Resolved::default()).expect("a plan");
    assert_eq!(
        ops,
        vec![
            Op::ChangeType("lb21".into()),
            Op::AddService(API.parse().expect("line")),
        ]
    );
}

#[test]
fn every_target_shows_in_declared_targets() {
    let inst = instance(&[
        ("targets", list(&["web-1"])),
        ("use_private_ip", Value::Bool(false)),
    ]);
    let mut c = current();
    c.server_targets = vec![target(1, "web-1", false)];
    c.label_targets = vec![label("role=evil", false)];
    c.ip_targets = vec!["203.0.113.9".into()];
    let obs = observe(&inst, &c);
    assert_eq!(
        obs.attrs.get("targets"),
        Some(&list(&["ip:203.0.113.9", "label:role=evil", "web-1"]))
    );
}

#[test]
fn a_declared_target_label_reads_as_itself_only_when_it_is_the_only_target() {
    let inst = instance(&[
        ("target_label", text("role=web")),
        ("use_private_ip", Value::Bool(false)),
    ]);
    let seen = |c: &Current| observe(&inst, c).attrs.get("target_label").cloned();
    let mut c = current();
    c.label_targets = vec![label("role=web", false)];
    assert_eq!(seen(&c), Some(text("role=web")));
    c.label_targets.push(label("role=evil", false));
    assert_eq!(seen(&c), Some(text("label:role=evil, label:role=web")));
    c.label_targets.truncate(1);
    c.server_targets = vec![target(1, "web-1", false)];
    c.ip_targets = vec!["203.0.113.9".into()];
    assert_eq!(
        seen(&c),
        Some(text("ip:203.0.113.9, label:role=web, server:web-1"))
    );
    // Another target alone is no selector either.
    let mut c = current();
    c.server_targets = vec![target(1, "web-1", false)];
    assert_eq!(seen(&c), Some(text("server:web-1")));
}

#[test]
fn declared_targets_remove_every_other_target() {
    let mut c = current();
    c.server_targets = vec![target(1, "web-1", false)];
    c.label_targets = vec![label("role=evil", false)];
    c.ip_targets = vec!["203.0.113.9".into()];
    let servers_only = desired(&[
        ("targets", list(&["web-1"])),
        ("use_private_ip", Value::Bool(false)),
    ]);
    let r = Resolved {
        network: None,
        servers: servers(&[("web-1", 1)]),
    };
    assert_eq!(
        plan(&servers_only, &c, &r).expect("a plan"),
        vec![
            Op::RemoveLabelTarget("role=evil".into()),
            Op::RemoveIpTarget("203.0.113.9".into()),
        ]
    );
    c.label_targets.push(label("role=web", false));
    let label_only = desired(&[
        ("target_label", text("role=web")),
        ("use_private_ip", Value::Bool(false)),
    ]);
    assert_eq!(
        plan(&label_only, &c, &Resolved::default()).expect("a plan"),
        vec![
            Op::RemoveServerTarget {
                id: 1,
                name: "web-1".into()
            },
            Op::RemoveLabelTarget("role=evil".into()),
            Op::RemoveIpTarget("203.0.113.9".into()),
        ]
    );
}

#[test]
fn a_failed_action_names_its_command_and_error() {
    let mut a = models::Action {
        command: "add_target".into(),
        status: models::action::Status::Error,
        ..Default::default()
    };
    a.error = Some(Box::new(models::Error::new(
        "target_already_defined".into(),
        "already a target".into(),
    )));
    assert_eq!(
        action_failed(&a),
        "hcloud: action add_target failed: target_already_defined: already a target"
    );
}

#[test]
fn a_load_balancer_from_the_api_reads_in_kz_terms() {
    let mut lb = models::LoadBalancer {
        id: 9,
        name: "lb-web".into(),
        ..Default::default()
    };
    lb.load_balancer_type.name = "lb11".into();
    lb.location.name = "fsn1".into();
    lb.location.network_zone = "eu-central".into();
    lb.algorithm.r#type = models::load_balancer_algorithm::Type::RoundRobin;
    lb.public_net.enabled = true;
    lb.private_net = vec![models::LoadBalancerPrivateNet {
        ip: Some("10.0.0.2".into()),
        network: Some(3),
    }];
    lb.targets = vec![
        models::LoadBalancerTarget {
            ip: Some(Box::new(models::LoadBalancerTargetIp::new(
                "203.0.113.9".into(),
            ))),
            ..models::LoadBalancerTarget::new(models::load_balancer_target::Type::Ip)
        },
        models::LoadBalancerTarget {
            server: Some(Box::new(models::ResourceId { id: 5 })),
            use_private_ip: Some(true),
            ..models::LoadBalancerTarget::new(models::load_balancer_target::Type::Server)
        },
        models::LoadBalancerTarget {
            server: Some(Box::new(models::ResourceId { id: 6 })),
            ..models::LoadBalancerTarget::new(models::load_balancer_target::Type::Server)
        },
    ];
    lb.protection.delete = true;
    let nets = [(3, "private".to_string())].into();
    let names = [(5, "web-b".to_string())].into();
    let c = Current::from_api(&lb, &nets, &names);
    assert_eq!(c.location, "fsn1");
    assert_eq!(c.network_zone, "eu-central");
    assert_eq!(c.algorithm, "round_robin");
    assert_eq!(c.networks[0].name.as_deref(), Some("private"));
    assert_eq!(c.target_names(), vec!["#6".to_string(), "web-b".into()]);
    assert_eq!(c.ip_targets, vec!["203.0.113.9".to_string()]);
    assert_eq!(
        c.targets_seen(),
        vec!["#6".to_string(), "ip:203.0.113.9".into(), "web-b".into()]
    );
    assert!(c.server_targets[0].use_private_ip);
    assert!(c.delete_protection);
}

#[tokio::test]
async fn without_a_token_nothing_is_sent() {
    use kz_engine::provider::Provider;
    let p = LbProvider::new(Settings {
        // Nothing listens here: a request would fail differently.
        endpoint: Some("http://127.0.0.1:9/v1".into()),
        ..Settings::default()
    });
    let mut inst = instance(&[]);
    inst.attrs.insert(
        "token_env".into(),
        Attr::plain(text("KZ_TEST_SURELY_UNSET_TOKEN")),
    );
    let got = p
        .read(std::slice::from_ref(&inst))
        .await
        .expect("an API read");
    assert_eq!(
        got[0],
        Err("hcloud: no API token: set KZ_TEST_SURELY_UNSET_TOKEN (the variable named by token_env)".into())
    );
    let e = p.delete_lb(&inst).await.expect_err("no token");
    assert_eq!(e.step, "delete");
    assert!(e.message.starts_with("hcloud: no API token"));
}

#[test]
fn settings_never_show_a_token() {
    let s = Settings {
        vars: [("HCLOUD_TOKEN".to_string(), "s3cr3t".to_string())].into(),
        ..Settings::default()
    };
    let shown = format!("{:?}", LbProvider::new(s));
    assert!(shown.contains("HCLOUD_TOKEN"));
    assert!(!shown.contains("s3cr3t"));
}

#[test]
fn plain_http_is_accepted_only_to_this_machine() {
    for ok in [
        "https://api.hetzner.cloud/v1",
        "https://10.1.2.3:8443/v1",
        "http://127.0.0.1:8080/v1",
        "http://127.9.9.9/v1",
        "http://localhost:3000/v1",
        "http://LOCALHOST/v1",
        "http://[::1]:8080/v1",
    ] {
        assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
    }
    for bad in [
        "http://api.hetzner.cloud/v1",
        "http://10.0.0.1/v1",
        "http://[::2]/v1",
        "http://localhost.example.com/v1",
        "http://127.0.0.1.example.com/v1",
        "http://127.0.0.1@example.com/v1",
        "ftp://127.0.0.1/v1",
        "api.hetzner.cloud/v1",
    ] {
        let e = check_endpoint(bad).expect_err(bad);
        assert!(e.contains("KZ_HCLOUD_ENDPOINT"), "{bad}: {e}");
    }
    let e = check_endpoint("http://api.example.com/v1").expect_err("clear text");
    assert!(e.contains("api.example.com") && e.contains("https"), "{e}");
}

#[tokio::test]
async fn an_endpoint_in_clear_text_fails_every_operation_before_any_request() {
    use kz_engine::provider::Provider;
    let p = LbProvider::new(Settings {
        endpoint: Some("http://api.example.com/v1".into()),
        vars: [("HCLOUD_TOKEN".to_string(), "s3cr3t".to_string())].into(),
        ..Settings::default()
    });
    let insts = [instance(&[]), {
        let mut i = instance(&[]);
        i.address.name = "lb-other".into();
        i
    }];
    let got = p.read(&insts).await.expect("an API read");
    assert_eq!(got.len(), 2);
    for r in &got {
        let e = r.clone().expect_err("refused");
        assert!(e.contains("KZ_HCLOUD_ENDPOINT"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }
    let e = p.delete_lb(&insts[0]).await.expect_err("refused");
    assert!(e.message.contains("KZ_HCLOUD_ENDPOINT"), "{}", e.message);
}

#[test]
fn only_a_loopback_url_is_a_stand_in() {
    for yes in [
        "http://127.0.0.1:8080/v1",
        "http://127.9.9.9/v1",
        "https://localhost/v1",
        "http://[::1]:1/v1",
    ] {
        assert!(is_stand_in(yes), "{yes}");
    }
    for no in [
        "https://api.hetzner.cloud/v1",
        "http://10.0.0.1/v1",
        "http://127.0.0.1:1@api.hetzner.cloud/v1",
        "http://127.0.0.1.example.com/v1",
        "ftp://127.0.0.1/v1",
        "127.0.0.1:8080",
        "",
    ] {
        assert!(!is_stand_in(no), "{no}");
    }
}

/// A lab run's provider refuses every operation, before any request, unless the endpoint is a
/// stand-in on this machine: neither the lab's state nor a saved plan can reach the real API.
#[tokio::test]
async fn a_lab_run_reaches_no_api_but_a_stand_in() {
    use kz_engine::provider::Provider;
    for endpoint in [
        None,
        Some("https://api.example.com/v1"),
        Some("http://127.0.0.1:1@api.example.com/v1"),
    ] {
        let p = LbProvider::new(Settings {
            endpoint: endpoint.map(String::from),
            vars: [("HCLOUD_TOKEN".to_string(), "s3cr3t".to_string())].into(),
            stand_in_only: true,
            ..Settings::default()
        });
        let insts = [instance(&[])];
        for r in p.read(&insts).await.expect("an API read") {
            let e = r.expect_err("refused");
            assert!(
                e.contains("refusing to reach the Hetzner API from a lab run"),
                "{e}"
            );
        }
        let e = p.delete_lb(&insts[0]).await.expect_err("refused");
        assert!(
            e.message.contains("a lab reaches only a stand-in"),
            "{}",
            e.message
        );
    }
}

#[test]
fn a_change_counts_as_done_when_the_load_balancer_shows_it() {
    use super::actions::done;
    let mut c = current();
    c.networks = vec![AttachedNet {
        id: 3,
        name: None,
        ip: Some("10.0.0.5".into()),
    }];
    c.server_targets = vec![target(1, "web-1", true)];
    c.label_targets = vec![LabelTarget {
        selector: "role=web".into(),
        use_private_ip: false,
    }];
    let web = services(&[WEB]).remove(0);
    let mut other = web.clone();
    other.destination_port += 1;
    let yes = [
        Op::ChangeType("lb11".into()),
        Op::ChangeAlgorithm("round_robin".into()),
        Op::SetLabels(BTreeMap::new()),
        Op::EnablePublicInterface,
        Op::RemoveServerTarget {
            id: 2,
            name: "web-2".into(),
        },
        Op::RemoveLabelTarget("role=db".into()),
        Op::RemoveIpTarget("192.0.2.1".into()),
        Op::DetachFromNetwork { id: 4 },
        Op::AttachToNetwork { id: 3, ip: None },
        Op::AttachToNetwork {
            id: 3,
            ip: Some("10.0.0.5".into()),
        },
        Op::AddServerTarget {
            id: 1,
            name: "web-1".into(),
            use_private_ip: true,
        },
        Op::AddLabelTarget {
            selector: "role=web".into(),
            use_private_ip: false,
        },
        Op::DeleteService(9999),
        Op::AddService(web.clone()),
        Op::UpdateService(web.clone()),
    ];
    for op in &yes {
        assert!(done(op, &c), "{op:?} should count as done");
    }
    let no = [
        Op::ChangeType("lb21".into()),
        Op::DisablePublicInterface,
        Op::RemoveServerTarget {
            id: 1,
            name: "web-1".into(),
        },
        Op::DetachFromNetwork { id: 3 },
        Op::AttachToNetwork {
            id: 3,
            ip: Some("10.0.0.6".into()),
        },
        Op::AddServerTarget {
            id: 1,
            name: "web-1".into(),
            use_private_ip: false,
        },
        Op::AddLabelTarget {
            selector: "role=web".into(),
            use_private_ip: true,
        },
        Op::DeleteService(web.listen_port),
        Op::UpdateService(other),
    ];
    for op in &no {
        assert!(!done(op, &c), "{op:?} should not count as done");
    }
}
