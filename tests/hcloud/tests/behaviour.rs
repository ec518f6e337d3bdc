//! What the fake does, beyond the shapes: pagination, rate limiting, actions, failed actions,
//! protection, authentication, drift helpers, the request log.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use kz_test_hcloud::FakeHcloud;
use serde_json::{Value, json};

use common::{Resp, request};

fn get(api: &FakeHcloud, path: &str) -> Resp {
    request(&api.url(), Some(api.token()), "GET", path, None)
}

fn post(api: &FakeHcloud, path: &str, body: Value) -> Resp {
    request(
        &api.url(),
        Some(api.token()),
        "POST",
        path,
        Some(&body.to_string()),
    )
}

fn tcp_service(port: i64) -> Value {
    json!({
        "protocol": "tcp", "listen_port": port, "destination_port": port, "proxyprotocol": false,
        "health_check": {"protocol": "tcp", "port": port, "interval": 15, "timeout": 10, "retries": 3},
    })
}

/// Creates `name` in the KeyBuzz network with one service and the haproxy servers as targets,
/// and waits for the create action (the load balancer is locked while it runs).
fn create_lb(api: &FakeHcloud, name: &str) -> (i64, i64) {
    let ids = start_lb(api, name);
    wait_action(api, ids.1);
    ids
}

/// [`create_lb`] without waiting: the load balancer and its running create action.
fn start_lb(api: &FakeHcloud, name: &str) -> (i64, i64) {
    let net = get(api, "/networks?name=keybuzz-private").json()["networks"][0]["id"].clone();
    let resp = post(
        api,
        "/load_balancers",
        json!({
            "name": name, "load_balancer_type": "lb11", "location": "fsn1", "network": net,
            "services": [tcp_service(5432)],
            "targets": [{"type": "label_selector", "label_selector": {"selector": "role=haproxy"},
                         "use_private_ip": true}],
        }),
    );
    assert_eq!(resp.status, 201, "{}", resp.text);
    let body = resp.json();
    (
        body["load_balancer"]["id"].as_i64().unwrap(),
        body["action"]["id"].as_i64().unwrap(),
    )
}

fn wait_action(api: &FakeHcloud, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let action = get(api, &format!("/actions/{id}")).json()["action"].clone();
        if action["status"] != "running" {
            return action;
        }
        assert!(Instant::now() < deadline, "action {id} still running");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn pagination_walks_120_servers_in_pages_of_50() {
    let api = FakeHcloud::start();
    api.add_servers("node", 120);
    let mut names = Vec::new();
    let expected = [
        (50, Value::Null, json!(2)),
        (50, json!(1), json!(3)),
        (20, json!(2), Value::Null),
    ];
    for (page, (count, previous, next)) in (1..=3).zip(expected) {
        let resp = get(&api, &format!("/servers?page={page}&per_page=50"));
        let body = resp.json();
        let servers = body["servers"].as_array().unwrap();
        assert_eq!(servers.len(), count, "page {page}");
        let p = &body["meta"]["pagination"];
        assert_eq!(p["page"], json!(page));
        assert_eq!(p["per_page"], json!(50));
        assert_eq!(p["previous_page"], previous, "page {page}");
        assert_eq!(p["next_page"], next, "page {page}");
        assert_eq!(p["last_page"], json!(3));
        assert_eq!(p["total_entries"], json!(120));
        names.extend(
            servers
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_owned()),
        );
    }
    let expected: Vec<String> = (1..=120).map(|i| format!("node-{i:03}")).collect();
    assert_eq!(names, expected);

    // Default page size, and the maximum.
    let default = get(&api, "/servers");
    assert_eq!(default.json()["servers"].as_array().unwrap().len(), 25);
    assert_eq!(default.json()["meta"]["pagination"]["per_page"], json!(25));
    let clamped = get(&api, "/servers?per_page=500");
    assert_eq!(clamped.json()["servers"].as_array().unwrap().len(), 50);
    assert_eq!(clamped.json()["meta"]["pagination"]["per_page"], json!(50));
    // Past the end: an empty page, not an error.
    let beyond = get(&api, "/servers?page=9&per_page=50");
    assert_eq!(beyond.status, 200);
    assert!(beyond.json()["servers"].as_array().unwrap().is_empty());
    assert_eq!(
        beyond.json()["meta"]["pagination"]["next_page"],
        Value::Null
    );
}

#[test]
fn filters_by_name_and_label_selector() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let by_name = get(&api, "/servers?name=proxysql-02");
    assert_eq!(by_name.json()["servers"][0]["name"], "proxysql-02");
    assert_eq!(by_name.json()["servers"].as_array().unwrap().len(), 1);
    let workers = get(
        &api,
        "/servers?label_selector=role%3Dk3s-worker&per_page=50",
    );
    assert_eq!(workers.json()["servers"].as_array().unwrap().len(), 5);
    let with_role = get(&api, "/servers?label_selector=role");
    assert_eq!(
        with_role.json()["meta"]["pagination"]["total_entries"],
        json!(12)
    );
    let not_workers = get(&api, "/servers?label_selector=role!%3Dk3s-worker");
    assert_eq!(
        not_workers.json()["meta"]["pagination"]["total_entries"],
        json!(7)
    );
    let set = get(&api, "/servers?label_selector=role+in+(haproxy,proxysql)");
    assert_eq!(set.json()["meta"]["pagination"]["total_entries"], json!(4));
    let none = get(&api, "/servers?name=nope");
    assert!(none.json()["servers"].as_array().unwrap().is_empty());
    // Seeded private addresses are what the network reports.
    let proxysql = &by_name.json()["servers"][0];
    assert_eq!(proxysql["private_net"][0]["ip"], "10.0.0.22");
    let net = get(&api, "/networks?name=keybuzz-private");
    let net = &net.json()["networks"][0];
    assert_eq!(net["ip_range"], "10.0.0.0/16");
    assert_eq!(net["subnets"][0]["network_zone"], "eu-central");
    assert_eq!(net["servers"].as_array().unwrap().len(), 12);
}

#[test]
fn rate_limit_mode_and_headers() {
    let api = FakeHcloud::start();
    api.rate_limit_next(2);
    for _ in 0..2 {
        let resp = get(&api, "/servers");
        assert_eq!(resp.status, 429);
        assert_eq!(resp.error_code(), Some("rate_limit_exceeded"));
        assert_eq!(resp.header("ratelimit-remaining"), Some("0"));
        assert_eq!(resp.header("ratelimit-limit"), Some("3600"));
    }
    assert_eq!(get(&api, "/servers").status, 200);

    // The bucket: each request takes one.
    api.set_rate_limit_remaining(5);
    let resp = get(&api, "/servers");
    assert_eq!(resp.header("ratelimit-remaining"), Some("4"));
    let reset: u64 = resp.header("ratelimit-reset").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(reset >= now + 3590, "reset {reset} vs now {now}");
    // Empty: 429 until it refills (one per second).
    api.set_rate_limit_remaining(0);
    let refused = get(&api, "/servers");
    assert_eq!(refused.status, 429);
    // Rate limiting comes before authentication, as in the API.
    let anonymous = request(&api.url(), None, "GET", "/servers", None);
    assert_eq!(anonymous.status, 429);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&api, "/servers").status, 200);
}

#[test]
fn an_action_runs_then_succeeds() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let started = Instant::now();
    let (lb, action) = start_lb(&api, "lb-db");
    let first = get(&api, &format!("/actions/{action}")).json()["action"].clone();
    assert_eq!(first["status"], "running");
    assert_eq!(first["progress"], json!(0));
    assert_eq!(first["finished"], Value::Null);
    assert_eq!(first["command"], "create_load_balancer");
    assert_eq!(
        first["resources"][0],
        json!({"id": lb, "type": "load_balancer"})
    );
    let done = wait_action(&api, action);
    assert!(started.elapsed() >= kz_test_hcloud::DEFAULT_ACTION_DELAY);
    assert_eq!(done["status"], "success");
    assert_eq!(done["progress"], json!(100));
    assert!(done["finished"].is_string());
    assert_eq!(done["error"], Value::Null);
    // The same action through the load balancer paths.
    let via_lbs = get(&api, &format!("/load_balancers/actions/{action}"));
    assert_eq!(via_lbs.json()["action"]["id"], json!(action));
    let via_lb = get(&api, &format!("/load_balancers/{lb}/actions/{action}"));
    assert_eq!(via_lb.json()["action"]["status"], "success");

    // The load balancer as created: a private address, the first free one of the network.
    let created = api.load_balancer("lb-db").unwrap();
    assert_eq!(created["private_net"][0]["ip"], "10.0.0.2");
    assert_eq!(created["public_net"]["enabled"], json!(true));
    assert!(created["public_net"]["ipv4"]["ip"].is_string());
    assert_eq!(created["services"][0]["listen_port"], json!(5432));
    let selected = created["targets"][0]["targets"].as_array().unwrap();
    assert_eq!(selected.len(), 2, "the two haproxy servers");
    assert_eq!(api.load_balancer_names(), vec!["lb-db".to_owned()]);
    // Servers point back at the load balancer that targets them.
    assert_eq!(
        api.server("haproxy-01").unwrap()["load_balancers"],
        json!([lb])
    );
    assert_eq!(
        api.server("proxysql-01").unwrap()["load_balancers"],
        json!([])
    );
}

#[test]
fn a_failed_action_changes_nothing() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let (lb, _) = create_lb(&api, "lb-db");
    let before = api.load_balancer("lb-db").unwrap();

    api.fail_next_action("action_failed", "Action failed");
    let resp = post(
        &api,
        &format!("/load_balancers/{lb}/actions/add_service"),
        tcp_service(6033),
    );
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["action"]["status"], "running");
    let action = wait_action(&api, resp.json()["action"]["id"].as_i64().unwrap());
    assert_eq!(action["status"], "error");
    assert_eq!(
        action["error"],
        json!({"code": "action_failed", "message": "Action failed"})
    );
    assert_eq!(api.load_balancer("lb-db").unwrap(), before);

    // Only the next one fails.
    let resp = post(
        &api,
        &format!("/load_balancers/{lb}/actions/add_service"),
        tcp_service(6033),
    );
    let action = wait_action(&api, resp.json()["action"]["id"].as_i64().unwrap());
    assert_eq!(action["status"], "success");
    assert_eq!(
        api.load_balancer("lb-db").unwrap()["services"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A failed create leaves no load balancer.
    api.fail_next_action("action_failed", "no capacity");
    let resp = post(
        &api,
        "/load_balancers",
        json!({"name": "lb-x", "load_balancer_type": "lb11", "location": "fsn1"}),
    );
    assert_eq!(resp.status, 201);
    let action = wait_action(&api, resp.json()["action"]["id"].as_i64().unwrap());
    assert_eq!(action["status"], "error");
    assert_eq!(api.load_balancer_names(), vec!["lb-db".to_owned()]);
}

#[test]
fn a_protected_load_balancer_is_not_deleted() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let (lb, _) = create_lb(&api, "lb-db");
    api.set_lb_delete_protection("lb-db", true);
    assert_eq!(
        api.load_balancer("lb-db").unwrap()["protection"]["delete"],
        json!(true)
    );
    let refused = request(
        &api.url(),
        Some(api.token()),
        "DELETE",
        &format!("/load_balancers/{lb}"),
        None,
    );
    assert_eq!(refused.status, 423);
    assert_eq!(refused.error_code(), Some("protected"));
    assert!(api.load_balancer("lb-db").is_some());

    api.set_lb_delete_protection("lb-db", false);
    let deleted = request(
        &api.url(),
        Some(api.token()),
        "DELETE",
        &format!("/load_balancers/{lb}"),
        None,
    );
    assert_eq!(deleted.status, 204);
    assert!(api.load_balancer_names().is_empty());
}

#[test]
fn requests_without_the_token_are_refused_and_logged() {
    let api = FakeHcloud::start();
    let anonymous = request(&api.url(), None, "GET", "/load_balancers", None);
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.error_code(), Some("unauthorized"));
    let wrong = request(
        &api.url(),
        Some("0123"),
        "GET",
        "/load_balancers?page=1",
        None,
    );
    assert_eq!(wrong.status, 401);
    let fine = get(&api, "/load_balancers");
    assert_eq!(fine.status, 200);
    assert_eq!(api.token().len(), 64);
    assert_ne!(api.token(), FakeHcloud::start().token());

    let log = api.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/v1/load_balancers");
    assert_eq!(log[0].status, 401);
    assert!(!log[0].authorized);
    assert_eq!(log[1].query, "page=1");
    assert!(log[2].authorized);
    assert_eq!(log[2].status, 200);
}

#[test]
fn drift_helpers_change_the_world_behind_the_clients_back() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    let (lb, _) = create_lb(&api, "lb-db");
    let haproxy_01 = api.server("haproxy-01").unwrap()["id"].as_i64().unwrap();
    let resp = post(
        &api,
        &format!("/load_balancers/{lb}/actions/add_target"),
        json!({"type": "server", "server": {"id": haproxy_01}, "use_private_ip": true}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(
        api.load_balancer("lb-db").unwrap()["targets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    api.remove_lb_target("lb-db", "haproxy-01");
    api.set_lb_health_check_interval("lb-db", 5432, 3);
    let seen = get(&api, &format!("/load_balancers/{lb}"));
    let seen = &seen.json()["load_balancer"];
    assert_eq!(seen["targets"].as_array().unwrap().len(), 1);
    assert_eq!(seen["targets"][0]["type"], "label_selector");
    assert_eq!(seen["services"][0]["health_check"]["interval"], json!(3));
}

#[test]
fn injected_request_failures_have_their_status() {
    let api = FakeHcloud::start();
    api.fail_next_requests(2, "conflict");
    for _ in 0..2 {
        let resp = get(&api, "/servers");
        assert_eq!(resp.status, 409);
        assert_eq!(resp.error_code(), Some("conflict"));
    }
    assert_eq!(get(&api, "/servers").status, 200);
    api.fail_next_requests(1, "timeout");
    assert_eq!(get(&api, "/servers").status, 504);
}

#[test]
fn the_server_stops_when_dropped() {
    let api = FakeHcloud::start();
    let addr = api.url()["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    drop(api);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

// --- What the real API does that a naive stand-in would not (issue 11, item 20) ---------------

#[test]
fn a_running_action_locks_its_load_balancer_and_an_attach_locks_the_network() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.set_action_delay(Duration::from_millis(400));
    let net = get(&api, "/networks?name=keybuzz-private").json()["networks"][0]["id"].clone();
    let mut lbs = Vec::new();
    for name in ["lb-a", "lb-b"] {
        let resp = post(
            &api,
            "/load_balancers",
            json!({"name": name, "load_balancer_type": "lb11", "location": "fsn1"}),
        );
        assert_eq!(resp.status, 201, "{}", resp.text);
        lbs.push(resp.json()["load_balancer"]["id"].as_i64().unwrap());
        // While it is being created, nothing else may touch it.
        let locked = post(
            &api,
            &format!("/load_balancers/{}/actions/add_service", lbs[lbs.len() - 1]),
            tcp_service(80),
        );
        assert_eq!(locked.status, 423, "{}", locked.text);
        assert_eq!(locked.error_code(), Some("locked"));
        let locked = request(
            &api.url(),
            Some(api.token()),
            "DELETE",
            &format!("/load_balancers/{}", lbs[lbs.len() - 1]),
            None,
        );
        assert_eq!(locked.error_code(), Some("locked"));
    }
    std::thread::sleep(Duration::from_millis(450));
    // Two load balancers join one network at once: the second finds it locked.
    let first = post(
        &api,
        &format!("/load_balancers/{}/actions/attach_to_network", lbs[0]),
        json!({"network": net}),
    );
    assert_eq!(first.status, 201, "{}", first.text);
    let second = post(
        &api,
        &format!("/load_balancers/{}/actions/attach_to_network", lbs[1]),
        json!({"network": net}),
    );
    assert_eq!(second.error_code(), Some("locked"), "{}", second.text);
    // Another load balancer's own actions are not held up by it.
    let other = post(
        &api,
        &format!("/load_balancers/{}/actions/add_service", lbs[1]),
        tcp_service(80),
    );
    assert_eq!(other.status, 201, "{}", other.text);
    wait_action(&api, first.json()["action"]["id"].as_i64().unwrap());
    wait_action(&api, other.json()["action"]["id"].as_i64().unwrap());
    let again = post(
        &api,
        &format!("/load_balancers/{}/actions/attach_to_network", lbs[1]),
        json!({"network": net}),
    );
    assert_eq!(again.status, 201, "{}", again.text);
}

#[test]
fn a_request_whose_answer_is_lost_was_still_processed() {
    let api = FakeHcloud::start();
    api.lose_answers(
        "POST",
        "/load_balancers",
        1,
        kz_test_hcloud::Loss::GatewayTimeout,
    );
    let body = json!({"name": "lb-a", "load_balancer_type": "lb11", "location": "fsn1"});
    let lost = post(&api, "/load_balancers", body.clone());
    assert_eq!(lost.status, 504);
    assert_eq!(lost.error_code(), Some("timeout"));
    assert!(api.load_balancer("lb-a").is_some(), "made all the same");
    // Sent again, it meets what the first one made.
    let again = post(&api, "/load_balancers", body);
    assert_eq!(again.error_code(), Some("uniqueness_error"));
    let log = api.requests();
    assert!(log[0].answer_lost && log[0].status == 201, "{:?}", log[0]);
    assert!(!log[1].answer_lost);

    // A closed connection instead of an answer.
    api.lose_answers(
        "PUT",
        "/load_balancers/",
        1,
        kz_test_hcloud::Loss::Disconnect,
    );
    let id = api.load_balancer("lb-a").unwrap()["id"].as_i64().unwrap();
    let addr = api.url()["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let body = json!({"labels": {"a": "b"}}).to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "PUT /v1/load_balancers/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        api.token(),
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(
        raw.is_empty(),
        "no answer at all: {}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(api.load_balancer("lb-a").unwrap()["labels"]["a"], "b");
}

#[test]
fn one_request_in_ten_fails_with_500_or_503() {
    let api = FakeHcloud::start();
    api.fail_one_request_in(10, &["server_error", "unavailable"]);
    let statuses: Vec<u16> = (0..40).map(|_| get(&api, "/servers").status).collect();
    let failed: Vec<(usize, u16)> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s != 200)
        .map(|(i, s)| (i, *s))
        .collect();
    assert_eq!(failed, [(9, 500), (19, 503), (29, 500), (39, 503)]);
    api.fail_one_request_in(0, &[]);
    assert!((0..20).all(|_| get(&api, "/servers").status == 200));

    // Only requests that match, as many as asked.
    api.fail_next_matching("GET", "/v1/networks", 2, "unavailable");
    assert_eq!(get(&api, "/servers").status, 200);
    assert_eq!(get(&api, "/networks").status, 503);
    assert_eq!(get(&api, "/networks?name=x").status, 503);
    assert_eq!(get(&api, "/networks").status, 200);
}

#[test]
fn a_new_target_is_unknown_until_its_first_health_check() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.set_health_delay(Duration::from_secs(2));
    let (lb, _) = create_lb(&api, "lb-a");
    let health = |api: &FakeHcloud| {
        get(api, &format!("/load_balancers/{lb}")).json()["load_balancer"]["targets"][0]["targets"]
            [0]["health_status"][0]["status"]
            .clone()
    };
    assert_eq!(health(&api), "unknown");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(health(&api), "healthy");
    // A new service starts unknown for every target.
    let added = post(
        &api,
        &format!("/load_balancers/{lb}/actions/add_service"),
        tcp_service(6432),
    );
    assert_eq!(added.status, 201, "{}", added.text);
    let seen = get(&api, &format!("/load_balancers/{lb}")).json()["load_balancer"].clone();
    let statuses = &seen["targets"][0]["targets"][0]["health_status"];
    assert_eq!(statuses[0]["status"], "healthy", "{statuses}");
    assert_eq!(statuses[1]["status"], "unknown", "{statuses}");
}

#[test]
fn list_answers_carry_the_link_header() {
    let api = FakeHcloud::start();
    api.add_servers("web", 120);
    let resp = get(&api, "/servers?per_page=50&page=2&sort=name");
    let link = resp.header("link").unwrap().to_owned();
    let host = api.url()["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let url = |page: u32| format!("<http://{host}/v1/servers?sort=name&page={page}&per_page=50>");
    assert_eq!(
        link,
        format!(
            "{}; rel=\"prev\", {}; rel=\"next\", {}; rel=\"last\"",
            url(1),
            url(3),
            url(3)
        )
    );
    let last = get(&api, "/servers?per_page=50&page=3");
    let link = last.header("link").unwrap();
    assert!(!link.contains("rel=\"next\""), "{link}");
    assert!(get(&api, "/servers/10001").header("link").is_none());
}
