//! The contract: drive the fake through every operation it implements and every error it can
//! give, and validate every response body against the schema the OpenAPI document declares for
//! that operation and status (`4xx`/`5xx` ranges included). Also checks the headers every
//! response must carry, and that the validator does catch a broken body.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kz_test_hcloud::{ERROR_CODES, FakeHcloud, RATE_LIMIT, ROUTES, spec::spec, status_of};
use serde_json::{Value, json};

use common::{Resp, request};

/// The fake plus a record of what the contract drove.
struct Contract {
    api: FakeHcloud,
    /// (method, template) answered with a 2xx.
    covered: Mutex<BTreeSet<(String, String)>>,
    /// Error codes seen.
    codes: Mutex<BTreeSet<String>>,
    checked: Mutex<usize>,
}

impl Contract {
    fn new() -> Contract {
        Contract {
            api: FakeHcloud::start(),
            covered: Mutex::new(BTreeSet::new()),
            codes: Mutex::new(BTreeSet::new()),
            checked: Mutex::new(0),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let text = body.map(|b| b.to_string());
        self.raw(Some(self.api.token()), method, path, text.as_deref())
    }

    /// Sends, then checks headers and the body against the document.
    fn raw(&self, token: Option<&str>, method: &str, path: &str, body: Option<&str>) -> Resp {
        let resp = request(&self.api.url(), token, method, path, body);
        check_headers(&resp, method, path);
        let bare = path.split('?').next().unwrap();
        match spec()
            .match_path(bare)
            .filter(|t| spec().operation(method, t).is_some())
        {
            Some(template) => {
                if let Err(errors) =
                    spec().validate_response(method, template, resp.status, resp.body.as_ref())
                {
                    panic!(
                        "{method} {path} -> {}: the body does not match the document:\n  {}\nbody: {}",
                        resp.status,
                        errors.join("\n  "),
                        resp.text
                    );
                }
                if (200..300).contains(&resp.status) {
                    self.covered
                        .lock()
                        .unwrap()
                        .insert((method.to_owned(), template.to_owned()));
                }
            }
            // An operation the document does not know can only be an error, in the generic shape.
            None => {
                assert!(
                    resp.status >= 400,
                    "{method} {path} answered {}",
                    resp.status
                );
                spec()
                    .validate_schema("error_response", resp.json())
                    .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            }
        }
        if let Some(code) = resp.error_code() {
            assert_eq!(
                Some(resp.status),
                status_of(code),
                "{method} {path}: code {code} with status {}",
                resp.status
            );
            self.codes.lock().unwrap().insert(code.to_owned());
        }
        *self.checked.lock().unwrap() += 1;
        resp
    }

    /// A call that must succeed; a load balancer it creates is waited for (it is locked until
    /// its create action is done).
    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let resp = self.call(method, path, body);
        assert!(
            (200..300).contains(&resp.status),
            "{method} {path} -> {}: {}",
            resp.status,
            resp.text
        );
        let body = resp.body.unwrap_or(Value::Null);
        if method == "POST"
            && path == "/load_balancers"
            && let Some(action) = body["action"]["id"].as_i64()
        {
            self.wait(action);
        }
        body
    }

    fn err(&self, method: &str, path: &str, body: Option<Value>, code: &str) -> Resp {
        let resp = self.call(method, path, body);
        assert_eq!(
            resp.error_code(),
            Some(code),
            "{method} {path} -> {}: {}",
            resp.status,
            resp.text
        );
        resp
    }

    /// Polls an action until it is no longer running.
    fn wait(&self, action_id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let a = self.ok("GET", &format!("/actions/{action_id}"), None)["action"].clone();
            if a["status"] != "running" {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "action {action_id} never finished"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a load balancer action, waits for it, and returns the finished action.
    fn act(&self, lb: i64, name: &str, body: Option<Value>) -> Value {
        let resp = self.ok(
            "POST",
            &format!("/load_balancers/{lb}/actions/{name}"),
            body,
        );
        assert_eq!(resp["action"]["status"], "running");
        let done = self.wait(resp["action"]["id"].as_i64().unwrap());
        assert_eq!(done["status"], "success", "{name}: {done}");
        done
    }

    fn act_err(&self, lb: i64, name: &str, body: Option<Value>, code: &str) -> Resp {
        self.err(
            "POST",
            &format!("/load_balancers/{lb}/actions/{name}"),
            body,
            code,
        )
    }
}

fn check_headers(resp: &Resp, method: &str, path: &str) {
    let what = format!("{method} {path} -> {}", resp.status);
    let id = resp.header("x-correlation-id").unwrap_or_default();
    assert!(!id.is_empty(), "{what}: no X-Correlation-Id");
    assert_eq!(
        resp.header("ratelimit-limit"),
        Some(RATE_LIMIT.to_string().as_str()),
        "{what}"
    );
    let remaining: i64 = resp
        .header("ratelimit-remaining")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no RateLimit-Remaining"));
    assert!((0..=RATE_LIMIT).contains(&remaining), "{what}");
    let reset: u64 = resp
        .header("ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no RateLimit-Reset"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        reset + 1 >= now && reset <= now + 3601,
        "{what}: reset {reset}"
    );
    if resp.body.is_some() {
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{what}"
        );
    }
}

fn service(listen: i64, dest: i64, protocol: &str) -> Value {
    let mut s = json!({
        "protocol": protocol,
        "listen_port": listen,
        "destination_port": dest,
        "proxyprotocol": false,
        "health_check": {
            "protocol": "tcp",
            "port": dest,
            "interval": 15,
            "timeout": 10,
            "retries": 3,
        },
    });
    if protocol == "http" {
        s["health_check"] = json!({
            "protocol": "http",
            "port": dest,
            "interval": 10,
            "timeout": 5,
            "retries": 2,
            "http": {"domain": null, "path": "/healthz", "status_codes": ["2??"]},
        });
        s["http"] = json!({"sticky_sessions": true});
    }
    s
}

fn id_of(v: &Value, key: &str) -> i64 {
    v[key]["id"].as_i64().unwrap()
}

#[test]
fn every_operation_and_error_matches_the_document() {
    let c = Contract::new();
    c.api.seed_keybuzz();
    // A network with room for exactly one address (10.9.0.2), and a server outside any network.
    let tiny = c.api.add_network("tiny", "10.9.0.0/30");
    c.api.add_server("lonely", &[("role", "lonely")], None);
    c.api.set_action_delay(Duration::from_millis(50));

    // --- Catalogue, networks, servers -----------------------------------------------------
    c.ok("GET", "/locations", None);
    c.ok("GET", "/locations?name=fsn1", None);
    c.ok("GET", "/locations/1", None);
    c.ok("GET", "/load_balancer_types", None);
    c.ok("GET", "/load_balancer_types/1", None);
    let nets = c.ok("GET", "/networks?name=keybuzz-private", None);
    let net = nets["networks"][0]["id"].as_i64().unwrap();
    c.ok("GET", "/networks", None);
    c.ok("GET", &format!("/networks/{net}"), None);
    c.ok("GET", "/servers?per_page=5&page=2&sort=name:desc", None);
    let haproxy = c.ok("GET", "/servers?label_selector=role%3Dhaproxy", None);
    assert_eq!(haproxy["servers"].as_array().unwrap().len(), 2);
    let haproxy_01 = haproxy["servers"][0]["id"].as_i64().unwrap();
    let haproxy_02 = haproxy["servers"][1]["id"].as_i64().unwrap();
    c.ok("GET", &format!("/servers/{haproxy_01}"), None);
    let lonely = c.ok("GET", "/servers?name=lonely", None)["servers"][0].clone();
    let lonely_id = lonely["id"].as_i64().unwrap();
    let lonely_ipv4 = lonely["public_net"]["ipv4"]["ip"]
        .as_str()
        .unwrap()
        .to_owned();

    // --- Create, with everything ----------------------------------------------------------
    // Not through `ok`, which would wait for the create action.
    let created = c.call(
        "POST",
        "/load_balancers",
        Some(json!({
            "name": "lb-haproxy",
            "load_balancer_type": "lb11",
            "location": "fsn1",
            "algorithm": {"type": "least_connections"},
            "labels": {"managed-by": "kz", "stack": "keybuzz"},
            "network": net,
            "public_interface": true,
            "services": [service(5432, 5432, "tcp"), service(80, 8080, "http")],
            "targets": [
                {"type": "server", "server": {"id": haproxy_01}, "use_private_ip": true},
                {"type": "label_selector", "label_selector": {"selector": "role=k3s-worker"},
                 "use_private_ip": true},
            ],
        })),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json().clone();
    let lb = id_of(&created, "load_balancer");
    let create_action = id_of(&created, "action");
    assert_eq!(created["action"]["status"], "running");
    // A load balancer is locked while an action runs on it.
    c.act_err(
        lb,
        "add_service",
        Some(service(6379, 6379, "tcp")),
        "locked",
    );
    assert_eq!(c.wait(create_action)["status"], "success");
    c.ok(
        "GET",
        &format!("/load_balancers/actions/{create_action}"),
        None,
    );
    c.ok(
        "GET",
        &format!("/load_balancers/{lb}/actions/{create_action}"),
        None,
    );
    c.ok("GET", &format!("/actions?id={create_action}"), None);

    // By zone only, no network: the one to test public-only rules on.
    let public_only = id_of(
        &c.ok(
            "POST",
            "/load_balancers",
            Some(json!({"name": "lb-public", "load_balancer_type": "lb11", "network_zone": "eu-central"})),
        ),
        "load_balancer",
    );

    c.ok("GET", "/load_balancers", None);
    c.ok("GET", "/load_balancers?name=lb-haproxy", None);
    c.ok(
        "GET",
        "/load_balancers?label_selector=managed-by%3Dkz",
        None,
    );
    c.ok("GET", &format!("/load_balancers/{lb}"), None);
    c.ok(
        "PUT",
        &format!("/load_balancers/{lb}"),
        Some(json!({"name": "lb-haproxy", "labels": {"managed-by": "kz"}})),
    );

    // --- Every action, successful -----------------------------------------------------------
    c.act(lb, "add_service", Some(service(6033, 6033, "tcp")));
    c.act(
        lb,
        "update_service",
        Some(json!({"listen_port": 6033, "destination_port": 6034,
                    "health_check": {"interval": 5}})),
    );
    c.act(lb, "delete_service", Some(json!({"listen_port": 6033})));
    c.act(
        lb,
        "add_target",
        Some(json!({"type": "server", "server": {"id": haproxy_02}, "use_private_ip": true})),
    );
    c.act(
        lb,
        "remove_target",
        Some(json!({"type": "server", "server": {"id": haproxy_02}})),
    );
    c.act(
        public_only,
        "add_target",
        Some(json!({"type": "ip", "ip": {"ip": "203.0.113.7"}})),
    );
    c.act(lb, "change_algorithm", Some(json!({"type": "round_robin"})));
    c.act(
        lb,
        "change_type",
        Some(json!({"load_balancer_type": "lb21"})),
    );
    c.act(lb, "disable_public_interface", None);
    c.act(lb, "enable_public_interface", None);
    c.act(lb, "detach_from_network", Some(json!({"network": net})));
    c.act(
        lb,
        "attach_to_network",
        Some(json!({"network": net, "ip": "10.0.0.250"})),
    );
    c.act(lb, "change_protection", Some(json!({"delete": true})));
    c.ok("GET", &format!("/load_balancers/{lb}/actions"), None);
    c.ok(
        "GET",
        "/load_balancers/actions?status=success&sort=id:desc&per_page=3",
        None,
    );

    // A failed action: the action body carries its error.
    c.api
        .fail_next_action("action_failed", "the fake was told to fail");
    let failed = c.ok(
        "POST",
        &format!("/load_balancers/{lb}/actions/add_service"),
        Some(service(7000, 7000, "tcp")),
    );
    let failed = c.wait(id_of(&failed, "action"));
    assert_eq!(failed["status"], "error");
    assert_eq!(failed["error"]["code"], "action_failed");

    // --- Operation-specific errors ----------------------------------------------------------
    c.act_err(
        lb,
        "add_service",
        Some(service(80, 81, "tcp")),
        "source_port_already_used",
    );
    c.act_err(
        lb,
        "add_target",
        Some(json!({"type": "server", "server": {"id": haproxy_01}, "use_private_ip": true})),
        "target_already_defined",
    );
    c.act_err(
        lb,
        "add_target",
        Some(json!({"type": "server", "server": {"id": lonely_id}, "use_private_ip": true})),
        "server_not_attached_to_network",
    );
    c.act_err(
        public_only,
        "add_target",
        Some(json!({"type": "server", "server": {"id": haproxy_01}, "use_private_ip": true})),
        "load_balancer_not_attached_to_network",
    );
    c.act_err(
        public_only,
        "disable_public_interface",
        None,
        "load_balancer_not_attached_to_network",
    );
    c.act_err(
        public_only,
        "detach_from_network",
        Some(json!({"network": net})),
        "load_balancer_not_attached_to_network",
    );
    c.act_err(
        lb,
        "attach_to_network",
        Some(json!({"network": net})),
        "load_balancer_already_attached",
    );
    c.act_err(
        public_only,
        "attach_to_network",
        Some(json!({"network": net, "ip": "10.0.0.11"})),
        "ip_not_available",
    );
    c.act(
        public_only,
        "attach_to_network",
        Some(json!({"network": tiny})),
    );
    c.act_err(
        public_only,
        "disable_public_interface",
        None,
        "targets_without_use_private_ip",
    );
    let third = id_of(
        &c.ok(
            "POST",
            "/load_balancers",
            Some(
                json!({"name": "lb-third", "load_balancer_type": "lb11", "location": "nbg1",
                        "public_interface": false}),
            ),
        ),
        "load_balancer",
    );
    c.act_err(
        third,
        "attach_to_network",
        Some(json!({"network": tiny})),
        "no_subnet_available",
    );
    c.act_err(
        third,
        "add_target",
        Some(json!({"type": "server", "server": {"id": haproxy_01}})),
        "load_balancer_public_interface_disabled",
    );
    c.act_err(
        public_only,
        "add_target",
        Some(json!({"type": "ip", "ip": {"ip": lonely_ipv4}})),
        "cloud_resource_ip_not_allowed",
    );
    for port in 1..=5 {
        c.act(third, "add_service", Some(service(port, port, "tcp")));
    }
    c.act_err(
        third,
        "add_service",
        Some(service(6, 6, "tcp")),
        "resource_limit_exceeded",
    );
    c.act(
        third,
        "change_type",
        Some(json!({"load_balancer_type": "lb21"})),
    );
    c.act(third, "add_service", Some(service(6, 6, "tcp")));
    c.act_err(
        third,
        "change_type",
        Some(json!({"load_balancer_type": "lb11"})),
        "invalid_load_balancer_type",
    );

    // --- Input errors -----------------------------------------------------------------------
    let bad_json = c.raw(
        Some(c.api.token()),
        "POST",
        "/load_balancers",
        Some("{\"name\": "),
    );
    assert_eq!(bad_json.error_code(), Some("json_error"));
    let missing = c.err(
        "POST",
        "/load_balancers",
        Some(json!({"load_balancer_type": "lb11", "location": "fsn1"})),
        "invalid_input",
    );
    assert_eq!(
        missing.json()["error"]["details"]["fields"][0]["name"],
        "name"
    );
    let wrong_type = c.err(
        "POST",
        "/load_balancers",
        Some(json!({"name": 5, "load_balancer_type": "lb11", "location": "fsn1"})),
        "invalid_input",
    );
    assert_eq!(
        wrong_type.json()["error"]["details"]["fields"][0]["name"],
        "name"
    );
    for body in [
        json!({"name": "x", "load_balancer_type": "lb99", "location": "fsn1"}),
        json!({"name": "x", "load_balancer_type": "lb11", "location": "mars1"}),
        json!({"name": "x", "load_balancer_type": "lb11"}),
        json!({"name": "x", "load_balancer_type": "lb11", "location": "fsn1", "network": 1}),
        json!({"name": "x", "load_balancer_type": "lb11", "location": "fsn1",
               "labels": {"bad": "not ok!"}}),
    ] {
        c.err("POST", "/load_balancers", Some(body), "invalid_input");
    }
    c.err(
        "POST",
        "/load_balancers",
        Some(json!({"name": "lb-public", "load_balancer_type": "lb11", "location": "fsn1"})),
        "uniqueness_error",
    );
    c.err(
        "PUT",
        &format!("/load_balancers/{lb}"),
        Some(json!({"name": "lb-public"})),
        "uniqueness_error",
    );
    c.act_err(
        lb,
        "add_target",
        Some(json!({"type": "server", "server": {"id": 1}})),
        "invalid_input",
    );
    c.act_err(
        lb,
        "add_target",
        Some(json!({"type": "server"})),
        "invalid_input",
    );
    c.act_err(
        lb,
        "add_target",
        Some(json!({"server": {"id": 1}})),
        "invalid_input",
    );
    c.act_err(
        lb,
        "remove_target",
        Some(json!({"type": "ip", "ip": {"ip": "203.0.113.99"}})),
        "invalid_input",
    );
    c.act_err(
        lb,
        "update_service",
        Some(json!({"listen_port": 9999})),
        "invalid_input",
    );
    c.act_err(
        lb,
        "delete_service",
        Some(json!({"listen_port": 9999})),
        "invalid_input",
    );
    c.act_err(
        lb,
        "change_algorithm",
        Some(json!({"type": "random"})),
        "invalid_input",
    );
    c.act_err(
        lb,
        "change_type",
        Some(json!({"load_balancer_type": "lb99"})),
        "invalid_input",
    );
    c.act_err(
        public_only,
        "attach_to_network",
        Some(json!({"network": 42})),
        "invalid_input",
    );
    c.err("GET", "/servers?per_page=0", None, "invalid_input");
    c.err(
        "GET",
        "/servers?label_selector=role+in+(a",
        None,
        "invalid_input",
    );
    c.err("GET", "/servers?sort=color", None, "invalid_input");
    c.err("GET", "/actions", None, "invalid_input");

    // --- Not found, not allowed, not authorized, protected, rate limited -------------------
    c.err("GET", "/load_balancers/999", None, "not_found");
    c.err("GET", "/load_balancers/abc", None, "not_found");
    c.err("GET", "/servers/999", None, "not_found");
    c.err("GET", "/networks/999", None, "not_found");
    c.err("GET", "/actions/999", None, "not_found");
    c.err("GET", "/locations/999", None, "not_found");
    c.err("GET", "/load_balancer_types/999", None, "not_found");
    c.err("GET", "/load_balancers/actions/999", None, "not_found");
    c.err(
        "GET",
        &format!("/load_balancers/{public_only}/actions/{create_action}"),
        None,
        "not_found",
    );
    c.act_err(999, "add_service", Some(service(1, 1, "tcp")), "not_found");
    c.err("GET", "/no_such_thing", None, "not_found");
    c.err(
        "DELETE",
        &format!("/servers/{lonely_id}"),
        None,
        "method_not_allowed",
    );
    c.err("PATCH", "/load_balancers", None, "method_not_allowed");
    let outside = request(
        &c.api.url().replace("/v1", "/v2"),
        Some(c.api.token()),
        "GET",
        "/servers",
        None,
    );
    assert_eq!(outside.error_code(), Some("not_found"));
    let anonymous = c.raw(None, "GET", "/load_balancers", None);
    assert_eq!(anonymous.error_code(), Some("unauthorized"));
    let wrong = c.raw(Some("nope"), "GET", "/load_balancers", None);
    assert_eq!(wrong.error_code(), Some("unauthorized"));
    c.err(
        "DELETE",
        &format!("/load_balancers/{lb}"),
        None,
        "protected",
    );
    c.api.rate_limit_next(1);
    c.err("GET", "/load_balancers", None, "rate_limit_exceeded");

    // --- Delete -----------------------------------------------------------------------------
    c.act(lb, "change_protection", Some(json!({"delete": false})));
    let gone = c.call("DELETE", &format!("/load_balancers/{lb}"), None);
    assert_eq!(gone.status, 204);
    assert!(gone.body.is_none());
    c.err("GET", &format!("/load_balancers/{lb}"), None, "not_found");

    // --- Injected errors: every code the server knows, in the document's error shape ----------
    let seen = c.codes.lock().unwrap().clone();
    for (code, _) in ERROR_CODES.iter().filter(|(code, _)| !seen.contains(*code)) {
        c.api.fail_next_requests(1, code);
        c.err("GET", "/servers", None, code);
    }

    // --- Coverage ---------------------------------------------------------------------------
    let covered = c.covered.lock().unwrap().clone();
    for (method, template) in ROUTES {
        assert!(
            spec().operation(method, template).is_some(),
            "{method} {template} is not in the document"
        );
        assert!(
            covered.contains(&((*method).to_owned(), (*template).to_owned())),
            "{method} {template} was never driven to success"
        );
    }
    let codes = c.codes.lock().unwrap().clone();
    for (code, _) in ERROR_CODES {
        assert!(codes.contains(*code), "error {code} never produced");
    }
    // Every request the contract sent is in the log, and none went unchecked.
    assert_eq!(c.api.requests().len(), *c.checked.lock().unwrap() + 1);
}

/// The validator is worth something only if it fails broken bodies.
#[test]
fn the_validator_catches_broken_bodies() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let resp = request(
        &api.url(),
        Some(api.token()),
        "POST",
        "/load_balancers",
        Some(
            &json!({"name": "lb", "load_balancer_type": "lb11", "location": "fsn1",
                    "services": [service(80, 80, "http")]})
            .to_string(),
        ),
    );
    let good = resp.json().clone();
    let s = spec();
    let template = "/load_balancers";
    assert_eq!(
        s.validate_response("POST", template, 201, Some(&good)),
        Ok(())
    );

    let broken = |f: &dyn Fn(&mut Value)| {
        let mut body = good.clone();
        f(&mut body);
        s.validate_response("POST", template, 201, Some(&body))
    };
    // A required field missing.
    let errors = broken(&|b| {
        b["load_balancer"]
            .as_object_mut()
            .unwrap()
            .remove("services");
    })
    .unwrap_err();
    assert!(errors.iter().any(|e| e.contains("services")), "{errors:?}");
    // A wrong type.
    assert!(broken(&|b| b["load_balancer"]["id"] = json!("20001")).is_err());
    // null where the document does not allow it (`nullable` only where declared).
    assert!(broken(&|b| b["load_balancer"]["name"] = Value::Null).is_err());
    // ... and allowed where it is declared nullable.
    assert!(broken(&|b| b["load_balancer"]["ingoing_traffic"] = Value::Null).is_ok());
    // An enum value the document does not list.
    assert!(broken(&|b| b["action"]["status"] = json!("done")).is_err());
    // A malformed date-time.
    assert!(broken(&|b| b["action"]["started"] = json!("yesterday")).is_err());
    // An extra field where the document says additionalProperties: false.
    assert!(
        broken(&|b| b["load_balancer"]["services"][0]["health_check"]["color"] = json!("red"))
            .is_err()
    );
    // A body where the document declares none, and none where it declares one.
    assert!(
        s.validate_response("DELETE", "/load_balancers/{id}", 204, Some(&json!({})))
            .is_err()
    );
    assert!(s.validate_response("GET", "/servers", 200, None).is_err());
    // Error bodies: the shape of the 4xx response.
    assert!(
        s.validate_response(
            "GET",
            "/servers",
            404,
            Some(&json!({"error": {"code": "not_found"}}))
        )
        .is_err()
    );
    assert!(
        s.validate_response(
            "GET",
            "/servers",
            404,
            Some(&json!({"error": {"code": "not_found", "message": "x", "details": {}}}))
        )
        .is_ok()
    );
}
