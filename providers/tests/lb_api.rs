//! The `lb` provider against the fake Hetzner Cloud API (`kz-test-hcloud`): instances made by
//! hand, `read`/`create`/`update`/`delete` called directly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kz_engine::model::{Address, Attr, Instance, Value};
use kz_engine::provider::{ApplyCtx, Provider};
use kz_providers::hcloud::actions::Waiting;
use kz_providers::hcloud::client::Retry;
use kz_providers::hcloud::{LbProvider, Settings};
use kz_test_hcloud::FakeHcloud;

const NET: &str = "keybuzz-private";
const WEB: &str = "tcp 80 -> 8080, health tcp:8080 every 15s timeout 10s retries 3";
const SQL: &str = "tcp 6033 -> 6033, health tcp:6033 every 5s timeout 3s retries 2";
const API: &str =
    "http 8000 -> 8000, health http:8000 every 10s timeout 5s retries 2 path /healthz domain x.io";

/// The context of a change of `inst`, reaching no host (a load balancer needs none).
fn cx(inst: &Instance) -> ApplyCtx {
    ApplyCtx::detached(inst.clone(), Vec::new())
}

/// The context of an update of `inst` whose `changed` attributes differ.
fn cx_with(inst: &Instance, changed: &[String]) -> ApplyCtx {
    ApplyCtx::detached(inst.clone(), changed.to_vec())
}

fn provider(api: &FakeHcloud) -> LbProvider {
    LbProvider::new(Settings {
        endpoint: Some(api.url()),
        retry: Retry {
            base: Duration::from_millis(5),
            ..Retry::default()
        },
        waiting: Waiting {
            poll: Duration::from_millis(20),
            deadline: Duration::from_secs(10),
        },
        vars: [("HCLOUD_TOKEN".to_string(), api.token().to_string())].into(),
        ..Settings::default()
    })
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::Text(s.to_string())).collect())
}

fn lb(name: &str, attrs: &[(&str, Value)]) -> Instance {
    let mut all: BTreeMap<String, Attr> = [
        ("type", text("lb11")),
        ("location", text("fsn1")),
        ("algorithm", text("round_robin")),
        ("public_interface", Value::Bool(true)),
        ("services", list(&[WEB])),
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
            name: name.into(),
            host: None,
        },
        members: Vec::new(),
        attrs: all,
        depends_on: Vec::new(),
        outputs: Default::default(),
        gate: None,
    }
}

/// The private load balancer in front of the HAProxy servers.
fn internal() -> Instance {
    lb(
        "lb-internal",
        &[
            ("public_interface", Value::Bool(false)),
            ("network", text(NET)),
            ("targets", list(&["haproxy-01", "haproxy-02"])),
            ("use_private_ip", Value::Bool(true)),
            ("services", list(&[WEB, SQL])),
            (
                "labels",
                Value::Map([("app".to_string(), Value::Text("keybuzz".to_string()))].into()),
            ),
        ],
    )
}

/// The attributes that differ between the instance and what `read` sees, with both values.
async fn drift(p: &LbProvider, inst: &Instance) -> Vec<(String, Option<Value>, Value)> {
    let got = p
        .read(std::slice::from_ref(inst))
        .await
        .expect("an API read");
    let obs = got
        .into_iter()
        .next()
        .expect("one observation")
        .expect("read");
    assert!(obs.exists, "{} should exist", inst.address.name);
    inst.attrs
        .iter()
        .filter_map(|(k, a)| {
            let want = a.known()?.clone();
            let seen = obs.attrs.get(k).cloned();
            (seen.as_ref() != Some(&want)).then(|| (k.clone(), seen, want))
        })
        .collect()
}

fn posts(api: &FakeHcloud) -> Vec<String> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect()
}

#[tokio::test]
async fn a_created_load_balancer_reads_back_as_declared_from_one_call() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let p = provider(&api);
    let inst = internal();
    let absent = p.read(std::slice::from_ref(&inst)).await.expect("read");
    assert_eq!(absent[0].as_ref().map(|o| o.exists), Ok(false));

    p.create(&cx(&inst)).await.expect("create");
    assert_eq!(posts(&api), vec!["/v1/load_balancers"]);
    assert_eq!(drift(&p, &inst).await, vec![]);
    let json = api.load_balancer("lb-internal").expect("made");
    assert_eq!(json["public_net"]["enabled"], false);
    assert_eq!(json["private_net"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_declared_ip_is_attached_after_the_create_call() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let p = provider(&api);
    let mut inst = internal();
    inst.attrs
        .insert("ip".into(), Attr::plain(text("10.0.0.250")));
    p.create(&cx(&inst)).await.expect("create");
    assert_eq!(drift(&p, &inst).await, vec![]);
    let steps: Vec<String> = posts(&api)
        .into_iter()
        .map(|p| p.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        steps,
        vec![
            "load_balancers",
            "attach_to_network",
            "disable_public_interface",
            "add_target",
            "add_target",
            "add_service",
            "add_service"
        ]
    );
    // Made public for a while (it needs a network to go private), it had no service then.
    let create = api
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/v1/load_balancers")
        .expect("the create call");
    let body: serde_json::Value = serde_json::from_str(&create.body).expect("json");
    assert_eq!(body["public_interface"], true);
    assert_eq!(body["services"], serde_json::json!([]));
}

#[tokio::test]
async fn changes_behind_kz_back_show_and_an_update_undoes_them() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.set_action_delay(Duration::ZERO);
    let p = provider(&api);
    let inst = internal();
    p.create(&cx(&inst)).await.expect("create");
    api.remove_lb_target("lb-internal", "haproxy-02");
    api.set_lb_health_check_interval("lb-internal", 6033, 30);
    let d = drift(&p, &inst).await;
    let names: Vec<&str> = d.iter().map(|(k, ..)| k.as_str()).collect();
    assert_eq!(names, vec!["services", "targets"]);
    assert_eq!(d[1].1, Some(list(&["haproxy-01"])));

    p.update(&cx_with(&inst, &["services".into(), "targets".into()]))
        .await
        .expect("update");
    assert_eq!(drift(&p, &inst).await, vec![]);
}

#[tokio::test]
async fn an_update_applies_each_kind_of_change() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.set_action_delay(Duration::from_millis(30));
    let p = provider(&api);
    p.create(&cx(&internal())).await.expect("create");
    let next = lb(
        "lb-internal",
        &[
            ("type", text("lb21")),
            ("algorithm", text("least_connections")),
            ("public_interface", Value::Bool(true)),
            ("network", text(NET)),
            ("target_label", text("role=proxysql")),
            ("use_private_ip", Value::Bool(true)),
            ("services", list(&[SQL, API])),
            ("labels", Value::Map(BTreeMap::new())),
        ],
    );
    let changed: Vec<String> = [
        "type",
        "algorithm",
        "public_interface",
        "target_label",
        "services",
        "labels",
    ]
    .map(String::from)
    .to_vec();
    p.update(&cx_with(&next, &changed)).await.expect("update");
    assert_eq!(drift(&p, &next).await, vec![]);
}

#[tokio::test]
async fn a_failed_action_is_reported_with_its_code() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let p = provider(&api);
    p.create(&cx(&internal())).await.expect("create");
    api.fail_next_action("target_already_defined", "the target is already defined");
    let mut next = internal();
    next.attrs.insert(
        "targets".into(),
        Attr::plain(list(&["haproxy-01", "haproxy-02", "proxysql-01"])),
    );
    let e = p
        .update(&cx_with(&next, &["targets".into()]))
        .await
        .expect_err("the action fails");
    assert_eq!(e.step, "add_target");
    assert_eq!(
        e.message,
        "hcloud: action add_target failed: target_already_defined: the target is already defined"
    );
}

#[tokio::test]
async fn api_errors_name_code_message_and_correlation_id() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let p = provider(&api);
    let bad = lb("lb-x", &[("type", text("lb99"))]);
    let e = p.create(&cx(&bad)).await.expect_err("no such type");
    assert_eq!(e.step, "create");
    assert!(e.message.starts_with("hcloud: "), "{}", e.message);
    assert!(e.message.contains(" (correlation id "), "{}", e.message);

    let lost = lb("lb-x", &[("network", text("nowhere"))]);
    let e = p.create(&cx(&lost)).await.expect_err("no network");
    assert_eq!(e.message, "no network named nowhere in the project");
    let ghosts = lb("lb-x", &[("targets", list(&["ghost-1"]))]);
    let e = p.create(&cx(&ghosts)).await.expect_err("no server");
    assert!(e.message.contains("ghost-1"), "{}", e.message);
}

#[tokio::test]
async fn retry_worthy_failures_are_retried_then_reported() {
    let api = FakeHcloud::start();
    let p = provider(&api);
    let inst = lb("lb-web", &[]);
    api.fail_next_requests(3, "conflict");
    let got = p.read(std::slice::from_ref(&inst)).await.expect("read");
    assert_eq!(got[0].as_ref().map(|o| o.exists), Ok(false));

    api.rate_limit_next(2);
    p.create(&cx(&inst)).await.expect("create after 429s");

    api.fail_next_requests(5, "conflict");
    let got = p.read(std::slice::from_ref(&inst)).await.expect("read");
    let e = got[0].clone().expect_err("five conflicts");
    assert!(e.starts_with("hcloud: conflict: "), "{e}");
    assert!(e.contains("(correlation id "), "{e}");
}

#[tokio::test]
async fn delete_protection_is_refused_and_a_gone_load_balancer_is_fine() {
    let api = FakeHcloud::start();
    let p = provider(&api);
    let inst = lb("lb-internal", &[]);
    p.create(&cx(&inst)).await.expect("create");
    api.set_lb_delete_protection("lb-internal", true);
    let e = p.delete(&cx(&inst)).await.expect_err("protected");
    assert_eq!(e.step, "delete");
    assert_eq!(
        e.message,
        "load balancer lb-internal has delete protection: kz will not delete or replace it; \
         turn protection off in the Hetzner console first"
    );
    api.set_lb_delete_protection("lb-internal", false);
    p.delete(&cx(&inst)).await.expect("delete");
    assert!(api.load_balancer("lb-internal").is_none());
    p.delete(&cx(&inst)).await.expect("already gone");
}

#[tokio::test]
async fn without_a_token_no_request_is_made() {
    let api = FakeHcloud::start();
    let p = LbProvider::new(Settings {
        endpoint: Some(api.url()),
        ..Settings::default()
    });
    let mut inst = lb("lb-web", &[]);
    inst.attrs.insert(
        "token_env".into(),
        Attr::plain(text("KZ_TEST_NO_SUCH_TOKEN")),
    );
    let want = "hcloud: no API token: set KZ_TEST_NO_SUCH_TOKEN (the variable named by token_env)";
    let got = p.read(std::slice::from_ref(&inst)).await.expect("read");
    assert_eq!(got[0], Err(want.to_string()));
    let e = p.create(&cx(&inst)).await.expect_err("no token");
    assert_eq!(e.message, want);
    let e = p.update(&cx_with(&inst, &[])).await.expect_err("no token");
    assert_eq!(e.message, want);
    let e = p.delete(&cx(&inst)).await.expect_err("no token");
    assert_eq!(e.message, want);
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn many_servers_and_load_balancers_are_read_page_by_page() {
    let api = FakeHcloud::start();
    api.add_servers("web", 120);
    api.set_action_delay(Duration::ZERO);
    let p = provider(&api);
    let targets = ["web-001", "web-060", "web-120"];
    let mut insts = Vec::new();
    for n in 0..3 {
        let inst = lb(&format!("lb-{n}"), &[("targets", list(&targets))]);
        p.create(&cx(&inst)).await.expect("create");
        insts.push(inst);
    }
    let before = api.requests().len();
    let got = p.read(&insts).await.expect("read");
    for o in &got {
        let o = o.as_ref().expect("observed");
        assert_eq!(o.attrs.get("targets"), Some(&list(&targets)));
    }
    let reads: Vec<String> = api.requests()[before..]
        .iter()
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    // One listing of load balancers, three pages of servers.
    assert_eq!(reads.len(), 4, "{reads:?}");
    assert!(reads.iter().all(|r| r.contains("per_page=50")), "{reads:?}");
}

#[tokio::test]
async fn a_low_rate_limit_spaces_requests() {
    let api = FakeHcloud::start();
    let p = provider(&api);
    let inst = lb("lb-web", &[]);
    api.set_rate_limit_remaining(3);
    let start = Instant::now();
    for _ in 0..2 {
        p.read(std::slice::from_ref(&inst)).await.expect("read");
    }
    // The first answer says few remain: the second request waits about a refill (1 s).
    assert!(start.elapsed() >= Duration::from_millis(800));
    assert!(api.requests().iter().all(|r| r.status != 429));
}

#[tokio::test]
async fn a_new_private_ip_moves_a_private_load_balancer_with_its_targets() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.set_action_delay(Duration::ZERO);
    let p = provider(&api);
    let mut inst = internal();
    inst.attrs
        .insert("ip".into(), Attr::plain(text("10.0.0.250")));
    p.create(&cx(&inst)).await.expect("create");
    inst.attrs
        .insert("ip".into(), Attr::plain(text("10.0.0.251")));
    let d = drift(&p, &inst).await;
    assert_eq!(
        d,
        vec![(
            "ip".to_string(),
            Some(text("10.0.0.250")),
            text("10.0.0.251")
        )]
    );
    let before = posts(&api).len();
    p.update(&cx_with(&inst, &["ip".into()]))
        .await
        .expect("update");
    assert_eq!(drift(&p, &inst).await, vec![]);
    let steps: Vec<String> = posts(&api)[before..]
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        steps,
        vec![
            // Public for a while (a load balancer needs a network or its public interface), so
            // without services for as long: nothing listens publicly.
            "delete_service",
            "delete_service",
            "enable_public_interface",
            "remove_target",
            "remove_target",
            "detach_from_network",
            "attach_to_network",
            "disable_public_interface",
            "add_target",
            "add_target",
            "add_service",
            "add_service"
        ]
    );
}

/// The names of the actions posted since request number `since`.
fn steps_since(api: &FakeHcloud, since: usize) -> Vec<String> {
    posts(api)[since..]
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_smaller_type_is_taken_once_what_it_cannot_hold_is_gone() {
    let api = FakeHcloud::start();
    api.set_action_delay(Duration::ZERO);
    let p = provider(&api);
    let lines: Vec<String> = (1001..=1006)
        .map(|n| format!("tcp {n} -> {n}, health tcp:{n} every 15s timeout 10s retries 3"))
        .collect();
    let six: Vec<&str> = lines.iter().map(String::as_str).collect();
    let big = lb(
        "lb-web",
        &[("type", text("lb21")), ("services", list(&six))],
    );
    p.create(&cx(&big)).await.expect("create");

    // lb11 holds at most five services: the sixth goes before the type changes.
    let small = lb(
        "lb-web",
        &[("type", text("lb11")), ("services", list(&six[..5]))],
    );
    let before = posts(&api).len();
    p.update(&cx_with(&small, &["type".into(), "services".into()]))
        .await
        .expect("downgrade");
    assert_eq!(drift(&p, &small).await, vec![]);
    assert_eq!(
        steps_since(&api, before),
        vec!["delete_service", "change_type"]
    );

    // And back: the type grows before the sixth service comes.
    let before = posts(&api).len();
    p.update(&cx_with(&big, &["type".into(), "services".into()]))
        .await
        .expect("upgrade");
    assert_eq!(drift(&p, &big).await, vec![]);
    assert_eq!(
        steps_since(&api, before),
        vec!["change_type", "add_service"]
    );
}

/// Adds a target to `lb_name` through the API, as someone else would behind kz's back.
async fn add_target_elsewhere(api: &FakeHcloud, lb_name: &str, target: &str) {
    let id = api.load_balancer(lb_name).expect("the load balancer")["id"]
        .as_i64()
        .expect("an id");
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/load_balancers/{id}/actions/add_target",
            api.url()
        ))
        .bearer_auth(api.token())
        .header("Content-Type", "application/json")
        .body(target.to_string())
        .send()
        .await
        .expect("an answer");
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    assert!(status.is_success(), "add_target: {status}: {body}");
}

fn target_count(api: &FakeHcloud, lb_name: &str) -> usize {
    api.load_balancer(lb_name).expect("the load balancer")["targets"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn targets_added_elsewhere_show_in_declared_targets_and_an_update_removes_them() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.set_action_delay(Duration::ZERO);
    let p = provider(&api);
    let inst = internal();
    p.create(&cx(&inst)).await.expect("create");
    add_target_elsewhere(
        &api,
        "lb-internal",
        r#"{"type": "label_selector", "label_selector": {"selector": "role=proxysql"}, "use_private_ip": true}"#,
    )
    .await;
    let d = drift(&p, &inst).await;
    assert_eq!(
        d,
        vec![(
            "targets".to_string(),
            Some(list(&["haproxy-01", "haproxy-02", "label:role=proxysql"])),
            list(&["haproxy-01", "haproxy-02"])
        )]
    );
    let before = posts(&api).len();
    p.update(&cx_with(&inst, &["targets".into()]))
        .await
        .expect("update");
    assert_eq!(steps_since(&api, before), vec!["remove_target"]);
    assert_eq!(drift(&p, &inst).await, vec![]);
    assert_eq!(target_count(&api, "lb-internal"), 2);

    // An IP target, on a public load balancer.
    let web = lb("lb-web", &[("targets", list(&["haproxy-01"]))]);
    p.create(&cx(&web)).await.expect("create");
    add_target_elsewhere(
        &api,
        "lb-web",
        r#"{"type": "ip", "ip": {"ip": "203.0.113.9"}}"#,
    )
    .await;
    let d = drift(&p, &web).await;
    assert_eq!(
        d,
        vec![(
            "targets".to_string(),
            Some(list(&["haproxy-01", "ip:203.0.113.9"])),
            list(&["haproxy-01"])
        )]
    );
    p.update(&cx_with(&web, &["targets".into()]))
        .await
        .expect("update");
    assert_eq!(drift(&p, &web).await, vec![]);
    assert_eq!(target_count(&api, "lb-web"), 1);
}

#[tokio::test]
async fn targets_added_elsewhere_show_against_a_target_label_and_an_update_removes_them() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.set_action_delay(Duration::ZERO);
    let p = provider(&api);
    let inst = lb("lb-web", &[("target_label", text("role=haproxy"))]);
    p.create(&cx(&inst)).await.expect("create");
    assert_eq!(drift(&p, &inst).await, vec![]);
    let proxysql = api.server("proxysql-01").expect("seeded")["id"]
        .as_i64()
        .expect("an id");
    add_target_elsewhere(
        &api,
        "lb-web",
        &format!(
            r#"{{"type": "server", "server": {{"id": {proxysql}}}, "use_private_ip": false}}"#
        ),
    )
    .await;
    add_target_elsewhere(
        &api,
        "lb-web",
        r#"{"type": "label_selector", "label_selector": {"selector": "role=evil"}}"#,
    )
    .await;
    let d = drift(&p, &inst).await;
    assert_eq!(
        d,
        vec![(
            "target_label".to_string(),
            Some(text(
                "label:role=evil, label:role=haproxy, server:proxysql-01"
            )),
            text("role=haproxy")
        )]
    );
    p.update(&cx_with(&inst, &["target_label".into()]))
        .await
        .expect("update");
    assert_eq!(drift(&p, &inst).await, vec![]);
    assert_eq!(target_count(&api, "lb-web"), 1);
}

#[tokio::test]
async fn an_endpoint_in_clear_text_to_another_host_is_refused_before_any_request() {
    let p = LbProvider::new(Settings {
        endpoint: Some("http://api.hetzner.cloud/v1".into()),
        vars: [("HCLOUD_TOKEN".to_string(), "s3cr3t".to_string())].into(),
        ..Settings::default()
    });
    let insts = [lb("lb-a", &[]), lb("lb-b", &[])];
    let got = p.read(&insts).await.expect("read");
    assert_eq!(got.len(), 2);
    for r in got {
        let e = r.expect_err("refused");
        assert!(e.contains("KZ_HCLOUD_ENDPOINT"), "{e}");
    }
    let e = p.create(&cx(&insts[0])).await.expect_err("refused");
    assert!(e.message.contains("KZ_HCLOUD_ENDPOINT"), "{}", e.message);
}

/// A provider whose actions may run for `deadline` at most.
fn provider_with_deadline(api: &FakeHcloud, deadline: Duration) -> LbProvider {
    LbProvider::new(Settings {
        endpoint: Some(api.url()),
        retry: Retry {
            base: Duration::from_millis(5),
            ..Retry::default()
        },
        waiting: Waiting {
            poll: Duration::from_millis(20),
            deadline,
        },
        vars: [("HCLOUD_TOKEN".to_string(), api.token().to_string())].into(),
        ..Settings::default()
    })
}

#[tokio::test]
async fn a_lock_is_waited_out_within_the_action_deadline_and_no_longer() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.set_action_delay(Duration::ZERO);
    let short = provider_with_deadline(&api, Duration::from_millis(600));
    let mut inst = lb("lb-web", &[]);
    short.create(&cx(&inst)).await.expect("create");

    // An action that outlives the deadline holds the load balancer: the next change waits for
    // the lock as long as the deadline allows, then fails with the API's words and its step.
    api.set_action_delay(Duration::from_secs(4));
    inst.attrs
        .insert("algorithm".into(), Attr::plain(text("least_connections")));
    let e = short
        .update(&cx_with(&inst, &["algorithm".into()]))
        .await
        .expect_err("still running");
    assert!(e.to_string().contains("still running"), "{e}");
    inst.attrs.insert("type".into(), Attr::plain(text("lb21")));
    let start = Instant::now();
    let e = short
        .update(&cx_with(&inst, &["type".into()]))
        .await
        .expect_err("locked");
    let text = e.to_string();
    assert!(text.starts_with("change_type: hcloud: locked: "), "{text}");
    assert!(text.contains("(correlation id "), "{text}");
    assert!(!text.contains(api.token()));
    assert!(start.elapsed() >= Duration::from_millis(500), "waited");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "not past the deadline"
    );
    let locked = api.requests().iter().filter(|r| r.status == 423).count();
    assert!(locked >= 2, "tried again while locked: {locked}");

    // With a deadline longer than the action, the same change goes through.
    let patient = provider_with_deadline(&api, Duration::from_secs(10));
    api.set_action_delay(Duration::ZERO);
    patient
        .update(&cx_with(&inst, &["type".into()]))
        .await
        .expect("the lock was waited out");
    assert_eq!(
        api.load_balancer("lb-web").expect("lb")["load_balancer_type"]["name"],
        "lb21"
    );
}
