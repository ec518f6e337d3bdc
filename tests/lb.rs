//! `[[lb]]` end to end: the `kz` binary against the Hetzner API stand-in (`tests/hcloud`), which
//! its contract test holds to Hetzner's OpenAPI document. Every request goes to 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use kz_test_hcloud::FakeHcloud;
use support::{Run, TestStack, read};

/// The KeyBuzz world: network keybuzz-private and the servers behind the four load balancers.
fn keybuzz_api() -> FakeHcloud {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api
}

/// The stack of `tests/stacks/keybuzz-lb` (KeyBuzz's module 10), pointed at `api`.
fn keybuzz_stack(api: &FakeHcloud) -> TestStack {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/keybuzz-lb");
    let s = TestStack::new("keybuzz-lb")
        .env("KZ_HCLOUD_ENDPOINT", &api.url())
        .env("HCLOUD_TOKEN", api.token())
        .env("KZ_HCLOUD_RETRY_BASE_MS", "20");
    for f in ["stack.toml", "10_lb.toml"] {
        s.write(f, &read(&src.join(f)));
    }
    s
}

fn services(lb: &serde_json::Value) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = lb["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["listen_port"].as_i64().unwrap(),
                s["health_check"]["interval"].as_i64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn target_ids(lb: &serde_json::Value) -> Vec<i64> {
    let mut v: Vec<i64> = lb["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["server"]["id"].as_i64())
        .collect();
    v.sort();
    v
}

fn server_id(api: &FakeHcloud, name: &str) -> i64 {
    api.server(name).unwrap()["id"].as_i64().unwrap()
}

#[track_caller]
fn no_changes(s: &TestStack) -> Run {
    let r = s.kz(&["plan", "DIR", "--detailed-exitcode"]);
    r.code(0).stdout_has("No changes.");
    r
}

#[test]
fn the_four_keybuzz_load_balancers_are_created_then_the_plan_is_empty() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);

    let plan = s.kz(&["plan", "DIR"]);
    plan.code(0)
        .stdout_has("Plan: 4 to create, 0 to update, 0 to replace, 0 to delete, 0 to adopt.");
    insta::assert_snapshot!("lb_create_plan", plan.stdout);

    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied, 0 failed, 0 not attempted.");
    let mut names = api.load_balancer_names();
    names.sort();
    assert_eq!(
        names,
        ["lb-internal", "lb-mariadb", "lb-public-1", "lb-public-2"]
    );

    let internal = api.load_balancer("lb-internal").unwrap();
    assert_eq!(internal["public_net"]["enabled"], false);
    assert_eq!(internal["private_net"][0]["ip"], "10.0.0.10");
    assert_eq!(internal["load_balancer_type"]["name"], "lb11");
    assert_eq!(internal["location"]["name"], "nbg1");
    assert_eq!(internal["labels"]["stack"], "keybuzz");
    assert_eq!(
        services(&internal),
        [(5432, 15), (5672, 15), (6379, 15), (6432, 15)]
    );
    let mut haproxy = vec![server_id(&api, "haproxy-01"), server_id(&api, "haproxy-02")];
    haproxy.sort();
    assert_eq!(target_ids(&internal), haproxy);
    assert!(
        internal["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["use_private_ip"] == true)
    );
    let public = api.load_balancer("lb-public-2").unwrap();
    assert_eq!(public["public_net"]["enabled"], true);
    assert_eq!(public["location"]["name"], "fsn1");
    assert_eq!(target_ids(&public).len(), 8);
    assert_eq!(
        public["services"][0]["health_check"]["http"]["path"],
        "/healthz"
    );

    no_changes(&s);
    // The token never reaches the output or the state.
    let state = read(&s.path().join(".kz/state.json"));
    assert!(!state.contains(api.token()));
}

#[test]
fn drift_made_behind_kz_s_back_shows_in_the_plan_and_apply_repairs_it() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"]).code(0);

    api.remove_lb_target("lb-internal", "haproxy-02");
    api.set_lb_health_check_interval("lb-internal", 5432, 30);
    let plan = s.kz(&["plan", "DIR", "--detailed-exitcode"]);
    plan.code(2)
        .stdout_has("10_lb.lb.lb-internal will be updated in place")
        .stdout_has("+ haproxy-02")
        .stdout_has("- tcp 5432 -> 5432, health tcp:5432 every 30s timeout 10s retries 3")
        .stdout_has("+ tcp 5432 -> 5432, health tcp:5432 every 15s timeout 10s retries 3");
    insta::assert_snapshot!("lb_drift_plan", plan.stdout);

    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 1 applied, 0 failed, 0 not attempted.");
    let internal = api.load_balancer("lb-internal").unwrap();
    assert_eq!(target_ids(&internal).len(), 2);
    assert_eq!(services(&internal)[0], (5432, 15));
    no_changes(&s);
}

#[test]
fn a_change_in_the_stack_is_made_through_actions() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"]).code(0);

    let lb = read(&s.path().join("10_lb.toml"))
        .replacen(
            "public_interface = false",
            "public_interface = false\nalgorithm = \"least_connections\"",
            1,
        )
        .replacen(
            "listen_port = 6379\n",
            "listen_port = 6380\ndestination_port = 6379\n",
            1,
        );
    s.write("10_lb.toml", &lb);
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("algorithm:")
        .stdout_has("+ tcp 6380 -> 6379");
    let internal = api.load_balancer("lb-internal").unwrap();
    assert_eq!(internal["algorithm"]["type"], "least_connections");
    assert_eq!(
        services(&internal),
        [(5432, 15), (5672, 15), (6380, 15), (6432, 15)]
    );
    let actions: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/actions/"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert!(
        actions.contains(&"change_algorithm".to_string()),
        "{actions:?}"
    );
    assert!(actions.contains(&"add_service".to_string()), "{actions:?}");
    assert!(
        actions.contains(&"delete_service".to_string()),
        "{actions:?}"
    );
    no_changes(&s);
}

#[test]
fn rate_limited_requests_are_retried_until_they_pass() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    api.rate_limit_next(2);
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied");
    let log = api.requests();
    assert_eq!(log.iter().filter(|r| r.status == 429).count(), 2);
    assert_eq!(api.load_balancer_names().len(), 4);
}

#[test]
fn an_action_that_fails_fails_its_load_balancer_with_the_api_s_words() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"]).code(0);

    let lb = read(&s.path().join("10_lb.toml")).replacen(
        "public_interface = false",
        "public_interface = false\nalgorithm = \"least_connections\"",
        1,
    );
    s.write("10_lb.toml", &lb);
    api.fail_next_action("action_failed", "the load balancer is being migrated");
    s.kz(&["apply", "DIR", "--yes"])
        .code(1)
        .stdout_has("10_lb.lb.lb-internal")
        .stdout_has("action_failed: the load balancer is being migrated");
    // The failed action changed nothing, so the next plan still wants the change.
    let internal = api.load_balancer("lb-internal").unwrap();
    assert_eq!(internal["algorithm"]["type"], "round_robin");
    s.kz(&["plan", "DIR", "--detailed-exitcode"]).code(2);
}

#[test]
fn without_a_token_the_plan_names_the_variable_before_any_request() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api).env("HCLOUD_TOKEN", "");
    let mut c = s.command(&["plan", "DIR"]);
    c.env_remove("HCLOUD_TOKEN");
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("HCLOUD_TOKEN"), "{out}");
    assert!(api.requests().is_empty(), "no request without a token");
    // Validation and a plan from the state need no token.
    let mut c = s.command(&["validate", "DIR"]);
    c.env_remove("HCLOUD_TOKEN");
    assert!(c.output().unwrap().status.success());
    let mut c = s.command(&["plan", "DIR", "--refresh=false"]);
    c.env_remove("HCLOUD_TOKEN");
    assert!(c.output().unwrap().status.success());
    assert!(api.requests().is_empty());
}

#[test]
fn a_load_balancer_with_delete_protection_is_not_deleted() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    api.set_lb_delete_protection("lb-mariadb", true);

    let text = read(&s.path().join("10_lb.toml"));
    let start = text.find("# 10.0.0.20").unwrap();
    let end = text.find("# 10.0.0.5 and").unwrap();
    s.write("10_lb.toml", &format!("{}{}", &text[..start], &text[end..]));
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("10_lb.lb.lb-mariadb will be deleted");
    s.kz(&["apply", "DIR", "--yes"])
        .code(1)
        .stdout_has("delete protection");
    assert!(api.load_balancer("lb-mariadb").is_some());
    assert!(
        !api.requests().iter().any(|r| r.method == "DELETE"),
        "no DELETE was sent"
    );
}

#[test]
fn targets_are_found_among_120_servers_listed_across_pages() {
    let api = FakeHcloud::start();
    api.add_servers("web", 120);
    let last = "web-120".to_string();
    let s = TestStack::new("many")
        .env("KZ_HCLOUD_ENDPOINT", &api.url())
        .env("HCLOUD_TOKEN", api.token())
        .env("KZ_HCLOUD_RETRY_BASE_MS", "20");
    s.write(
        "stack.toml",
        &format!("[stack]\nname = \"many\"\n\n[hosts.{last}]\naddress = \"192.0.2.1\"\n"),
    );
    s.write(
        "10_lb.toml",
        &format!(
            "[[lb]]\nname = \"lb-web\"\ntype = \"lb11\"\nnetwork_zone = \"eu-central\"\ntargets = [\"{last}\"]\n\n[[lb.service]]\nprotocol = \"http\"\nlisten_port = 80\n"
        ),
    );
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let lb = api.load_balancer("lb-web").unwrap();
    assert_eq!(target_ids(&lb), [server_id(&api, &last)]);
    let server_lists: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/servers")
        .collect();
    for r in &server_lists {
        assert!(
            !r.query.contains("per_page=") || r.query.contains("per_page=50"),
            "pages of at most 50: {}",
            r.query
        );
    }
    no_changes(&s);
}

#[test]
fn a_plan_of_the_four_load_balancers_costs_a_few_list_calls() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    let before = api.requests().len();
    no_changes(&s);
    let plan: Vec<String> = api.requests()[before..]
        .iter()
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    // One listing each of load balancers, networks and servers, whatever the number of LBs.
    assert!(plan.iter().all(|r| r.starts_with("GET ")), "{plan:#?}");
    assert!(plan.len() <= 3, "{plan:#?}");
}

#[test]
fn removing_every_load_balancer_from_the_stack_deletes_them() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    // No [[lb]] left: the `hcloud` pseudo-host is no longer declared, yet the deletions need it.
    s.remove("10_lb.toml");
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied, 0 failed, 0 not attempted.");
    assert!(api.load_balancer_names().is_empty());
}

#[test]
fn a_load_balancer_found_in_another_location_is_replaced_even_without_a_record() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    // The state is lost (or the LB was made by hand): what exists is compared, not the record.
    std::fs::remove_file(s.path().join(".kz/state.json")).unwrap();
    let lb = read(&s.path().join("10_lb.toml")).replacen(
        "location = \"fsn1\"",
        "location = \"hel1\"",
        1,
    );
    s.write("10_lb.toml", &lb);
    s.kz(&["plan", "DIR"])
        .code(0)
        .stdout_has("10_lb.lb.lb-public-2 will be replaced (`location` cannot change in place)")
        .stdout_has("Plan: 0 to create, 0 to update, 1 to replace, 0 to delete, 3 to adopt.");
}

/// The `POST` requests kz sent for the load balancer `name` (its create and its actions), in
/// order, as `(action, body, status)`; `create` for the create.
fn posts_for(api: &FakeHcloud, name: &str) -> Vec<(String, serde_json::Value, u16)> {
    let id = api.load_balancer(name).unwrap()["id"].as_i64().unwrap();
    let prefix = format!("/v1/load_balancers/{id}/actions/");
    api.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .filter_map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            if r.path == "/v1/load_balancers" && body["name"] == name {
                Some(("create".to_string(), body, r.status))
            } else {
                r.path
                    .strip_prefix(&prefix)
                    .map(|a| (a.to_string(), body, r.status))
            }
        })
        .collect()
}

// Issue 11, item 16: the four KeyBuzz load balancers join keybuzz-private at once; each attach
// locks the network, and the others are refused with `locked` until it is done.
#[test]
fn four_load_balancers_attaching_to_one_network_at_once_wait_for_its_lock() {
    let api = keybuzz_api();
    // Long enough that the four attaches surely overlap.
    api.set_action_delay(std::time::Duration::from_millis(1000));
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied, 0 failed, 0 not attempted.");
    let locked = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/attach_to_network") && r.status == 423)
        .count();
    assert!(locked > 0, "the attaches overlapped and met the lock");
    for name in ["lb-internal", "lb-mariadb", "lb-public-1", "lb-public-2"] {
        let lb = api.load_balancer(name).unwrap();
        assert_eq!(lb["private_net"].as_array().unwrap().len(), 1, "{name}");
    }
    no_changes(&s);
}

// Issue 11, item 17: with one request in ten answered 500 or 503 (action polls included), every
// apply and plan still goes through.
#[test]
fn one_request_in_ten_answered_500_or_503_does_not_fail_the_apply() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    api.fail_one_request_in(10, &["server_error", "unavailable"]);
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied, 0 failed, 0 not attempted.");
    let log = api.requests();
    assert!(log.iter().any(|r| r.status == 500));
    assert!(log.iter().any(|r| r.status == 503));
    let mut names = api.load_balancer_names();
    names.sort();
    assert_eq!(
        names,
        ["lb-internal", "lb-mariadb", "lb-public-1", "lb-public-2"]
    );
    let internal = api.load_balancer("lb-internal").unwrap();
    assert_eq!(services(&internal).len(), 4);
    assert_eq!(target_ids(&internal).len(), 2);
    no_changes(&s);
    no_changes(&s);

    // One 503 after another on the poll of an action that succeeds: the change is made and
    // counted as made.
    api.fail_one_request_in(0, &[]);
    let before = api.requests().len();
    api.fail_next_matching("GET", "/v1/actions/", 3, "unavailable");
    let lb = read(&s.path().join("10_lb.toml")).replacen(
        "public_interface = false",
        "public_interface = false\nalgorithm = \"least_connections\"",
        1,
    );
    s.write("10_lb.toml", &lb);
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 1 applied, 0 failed, 0 not attempted.");
    let polls_refused = api.requests()[before..]
        .iter()
        .filter(|r| r.path.starts_with("/v1/actions/") && r.status == 503)
        .count();
    assert_eq!(polls_refused, 3);
    no_changes(&s);
}

// Issue 11, item 18: a create processed whose answer was lost (504), an action whose answer was
// lost twice, and one whose connection closed: kz reads what the API holds and counts what is
// already done as done, instead of failing on `uniqueness_error`, `locked` or
// `target_already_defined`.
#[test]
fn requests_processed_whose_answers_were_lost_are_not_made_twice() {
    use kz_test_hcloud::Loss;
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    api.lose_answers("POST", "/v1/load_balancers", 1, Loss::GatewayTimeout);
    api.lose_answers("POST", "/actions/add_target", 2, Loss::GatewayTimeout);
    api.lose_answers("POST", "/actions/attach_to_network", 1, Loss::Disconnect);
    api.lose_answers("POST", "/actions/add_service", 1, Loss::Disconnect);
    s.kz(&["apply", "DIR", "--yes"])
        .code(0)
        .stdout_has("Apply: 4 applied, 0 failed, 0 not attempted.");
    let lost = api.requests().iter().filter(|r| r.answer_lost).count();
    assert_eq!(lost, 5);
    let mut names = api.load_balancer_names();
    names.sort();
    assert_eq!(
        names,
        ["lb-internal", "lb-mariadb", "lb-public-1", "lb-public-2"]
    );
    no_changes(&s);
}

// Issue 11, item 19: a private load balancer made through the create-then-attach path (its IP is
// declared) has its public interface on for a while; its services come only once it is off.
#[test]
fn a_private_load_balancer_never_has_a_service_while_its_public_interface_is_on() {
    let api = keybuzz_api();
    let s = keybuzz_stack(&api);
    s.kz(&["apply", "DIR", "--yes"]).code(0);
    for name in ["lb-internal", "lb-mariadb"] {
        let mut public = true;
        let mut services = 0;
        for (action, body, status) in posts_for(&api, name) {
            if status >= 300 {
                // Refused (`locked`, waited out): it changed nothing.
                continue;
            }
            match action.as_str() {
                "create" => {
                    public = body["public_interface"] != false;
                    services = body["services"].as_array().map_or(0, Vec::len);
                }
                "disable_public_interface" => public = false,
                "enable_public_interface" => public = true,
                "add_service" => services += 1,
                _ => {}
            }
            assert!(
                !(public && services > 0),
                "{name}: {services} service(s) while the public interface is on, at {action}"
            );
        }
        let lb = api.load_balancer(name).unwrap();
        assert_eq!(lb["public_net"]["enabled"], false);
        assert!(!lb["services"].as_array().unwrap().is_empty());
    }
    no_changes(&s);
}

/// A lab run with no stand-in of the API on this machine leaves alone the load balancers its
/// state recorded (made on a stand-in earlier): no delete is planned, even once the stack no
/// longer declares them, `kz destroy --lab` does not touch them, and a warning names each. The
/// lab here is written by hand: nothing in these runs reaches a host.
#[test]
fn a_lab_without_a_stand_in_leaves_its_recorded_load_balancers_alone() {
    let api = FakeHcloud::start();
    let name = format!("kzlbnostandin{}", std::process::id());
    let s = TestStack::new(&name)
        .env("KZ_HCLOUD_ENDPOINT", &api.url())
        .env("HCLOUD_TOKEN", api.token())
        .env("KZ_HCLOUD_RETRY_BASE_MS", "20");
    s.write(
        "10_lb.toml",
        "[[lb]]\nname = \"lb-lab\"\ntype = \"lb11\"\nlocation = \"nbg1\"\n",
    );
    s.write(
        ".kz/lab/lab.json",
        &format!(
            r#"{{"stack": "{name}", "network": "kzlab-{name}", "subnet": "10.89.250.0/24",
  "hosts": {{"local": {{"container": "kzlab-{name}-local", "address": "10.89.250.10"}}}}}}"#
        ),
    );
    // With the stand-in, the lab makes the load balancer there.
    s.kz(&["apply", "DIR", "--lab", "--yes"])
        .code(0)
        .stdout_has("10_lb.lb.lb-lab: created");
    assert!(api.load_balancer("lb-lab").is_some());

    // Without it (no endpoint, no token: were anything to call the API, it would fail first),
    // the lab leaves the load balancer out, and what its state records of it alone.
    let without = ["KZ_HCLOUD_ENDPOINT", "HCLOUD_TOKEN"];
    s.kz_without(&without, &["plan", "DIR", "--lab"])
        .code(0)
        .stdout_has("10_lb.lb.lb-lab: skipped in the lab: it lives behind the Hetzner Cloud API")
        .stdout_has("No changes.");
    s.write("10_lb.toml", "");
    let p = s.kz_without(&without, &["plan", "DIR", "--lab"]);
    p.code(0)
        .stdout_has("10_lb.lb.lb-lab is left alone: it lives behind the Hetzner Cloud API")
        .stdout_has("No changes.");
    assert!(!p.stdout.contains("- 10_lb.lb.lb-lab"), "{}", p.stdout);
    s.kz_without(&without, &["destroy", "DIR", "--lab", "--yes"])
        .stdout_has("10_lb.lb.lb-lab is left alone");
    assert!(api.load_balancer("lb-lab").is_some());
    assert!(
        api.requests().iter().all(|r| r.method != "DELETE"),
        "a DELETE reached the API"
    );
}
