//! A stateful stand-in for the Hetzner Cloud API, for kz's tests: the parts a load balancer
//! provider needs (load balancers and their actions, networks, servers), with the real API's
//! shapes, error codes, pagination, rate-limit headers and actions.
//!
//! It is held to the API's OpenAPI document (`openapi/openapi.json`): request bodies are checked
//! against it at run time, and `tests/contract.rs` checks every response it can give against it.
//!
//! ```no_run
//! let api = kz_test_hcloud::FakeHcloud::start();
//! api.add_network("keybuzz-private", "10.0.0.0/16");
//! api.add_server("haproxy-01", &[("role", "haproxy")], Some(("keybuzz-private", "10.0.0.11")));
//! // point the client at api.url() with api.token()
//! ```
//!
//! Actions: every change answers with an action in status `running` (progress 0). It turns
//! `success` (progress 100, `finished` set) once its delay has passed, 300 ms unless
//! [`FakeHcloud::set_action_delay`] says otherwise; the status is worked out from the clock when
//! the action is read, so no timer runs. The change itself is visible at once. An action armed by
//! [`FakeHcloud::fail_next_action`] turns `error` instead, and its change is never made.
//!
//! As in the real API, a running action locks what it concerns: another change to that load
//! balancer (an action or its deletion) is refused with `locked` (423) until it is done, and
//! `attach_to_network` / `detach_from_network` lock the network as well, so two load balancers
//! joining one network at once get one success and one `locked`.
//!
//! Faults beyond plain errors: [`FakeHcloud::fail_one_request_in`] (a steady share of 500s and
//! 503s), [`FakeHcloud::lose_answers`] (a request processed whose answer never arrives: a gateway
//! 504 or a closed connection). New targets report health `unknown` until their first "check"
//! ([`FakeHcloud::set_health_delay`]). List answers carry the `Link` header beside
//! `meta.pagination`.

mod catalog;
mod errors;
mod http;
mod labels;
mod load_balancers;
mod pagination;
mod routes;
pub mod spec;
mod state;
mod util;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use errors::{ApiError, ERROR_CODES, FieldError, status_of};
pub use http::{Loss, RATE_LIMIT, RequestLog};
pub use pagination::{DEFAULT_PER_PAGE, MAX_PER_PAGE};
pub use routes::ROUTES;
pub use state::{DEFAULT_ACTION_DELAY, DEFAULT_HEALTH_DELAY};

use http::{ServerThread, Shared};
use state::{Network, Server, Target};
use util::Cidr;

/// The fake API, serving on 127.0.0.1 until dropped.
pub struct FakeHcloud {
    shared: Arc<Shared>,
    server: ServerThread,
}

impl FakeHcloud {
    /// Starts a server on a free port of 127.0.0.1, with an empty world and a fresh random token.
    ///
    /// Panics if it cannot bind or start its thread: there is no test to run without it.
    pub fn start() -> FakeHcloud {
        // Compile the document's schemas now (once per process), not inside the first request
        // that carries a body, where it would look like a slow server to a client with a timeout.
        spec::spec();
        let shared = Arc::new(Shared::new(util::random_hex(32)));
        let server = ServerThread::start(shared.clone())
            .unwrap_or_else(|e| panic!("kz-test-hcloud: cannot start the server: {e}"));
        FakeHcloud { shared, server }
    }

    /// The base URL, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.server.addr)
    }

    /// The one bearer token this instance accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    // --- Seeding ---------------------------------------------------------------------------

    /// A network with one `cloud` subnet covering all of `ip_range`, in `eu-central`.
    /// Panics on a malformed range.
    pub fn add_network(&self, name: &str, ip_range: &str) -> i64 {
        let cidr = Cidr::parse(ip_range)
            .unwrap_or_else(|| panic!("kz-test-hcloud: bad network range {ip_range:?}"));
        let mut inner = self.shared.lock();
        let id = inner.world.network_id();
        inner.world.networks.insert(
            id,
            Network {
                id,
                name: name.to_owned(),
                cidr,
                labels: Default::default(),
                created: SystemTime::now(),
            },
        );
        id
    }

    /// A running server in fsn1 with a public IPv4 and IPv6, attached to the named network with
    /// the given private IP if `private_ip` is set. Panics if that network does not exist or the
    /// IP is not a free address of it.
    pub fn add_server(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        private_ip: Option<(&str, &str)>,
    ) -> i64 {
        let mut inner = self.shared.lock();
        let world = &mut inner.world;
        let private_net = match private_ip {
            None => Vec::new(),
            Some((network_name, ip)) => {
                let network = world.network_by_name(network_name).unwrap_or_else(|| {
                    panic!("kz-test-hcloud: add_server({name}): no network {network_name:?}")
                });
                let ip: Ipv4Addr = ip
                    .parse()
                    .ok()
                    .filter(|ip| network.cidr.is_host(*ip))
                    .unwrap_or_else(|| {
                        panic!("kz-test-hcloud: add_server({name}): {ip} is not a host address of {network_name}")
                    });
                if world.used_ips(network.id).contains(&ip) {
                    panic!("kz-test-hcloud: add_server({name}): {ip} is already used");
                }
                vec![(network.id, ip)]
            }
        };
        let (ipv4, ipv6_net) = world.public_ips();
        let id = world.server_id();
        world.servers.insert(
            id,
            Server {
                id,
                name: name.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                created: SystemTime::now(),
                location: &catalog::LOCATIONS[0],
                ipv4,
                ipv6_net,
                private_net,
            },
        );
        id
    }

    /// `n` servers named `PREFIX-001` .. `PREFIX-n`, without labels or networks.
    pub fn add_servers(&self, prefix: &str, n: usize) {
        for i in 1..=n {
            self.add_server(&format!("{prefix}-{i:03}"), &[], None);
        }
    }

    /// Seeds the KeyBuzz layout: network `keybuzz-private` 10.0.0.0/16 and its servers
    /// haproxy-01/02 (10.0.0.11/12, role=haproxy), proxysql-01/02 (10.0.0.21/22,
    /// role=proxysql), k3s-master-01..03 (10.0.0.100-102, role=k3s-master) and
    /// k3s-worker-01..05 (10.0.0.110-114, role=k3s-worker).
    pub fn seed_keybuzz(&self) {
        const NET: &str = "keybuzz-private";
        self.add_network(NET, "10.0.0.0/16");
        let mut servers: Vec<(String, &str, String)> = vec![
            ("haproxy-01".into(), "haproxy", "10.0.0.11".into()),
            ("haproxy-02".into(), "haproxy", "10.0.0.12".into()),
            ("proxysql-01".into(), "proxysql", "10.0.0.21".into()),
            ("proxysql-02".into(), "proxysql", "10.0.0.22".into()),
        ];
        for i in 0..3 {
            servers.push((
                format!("k3s-master-{:02}", i + 1),
                "k3s-master",
                format!("10.0.0.{}", 100 + i),
            ));
        }
        for i in 0..5 {
            servers.push((
                format!("k3s-worker-{:02}", i + 1),
                "k3s-worker",
                format!("10.0.0.{}", 110 + i),
            ));
        }
        for (name, role, ip) in &servers {
            self.add_server(name, &[("role", role)], Some((NET, ip)));
        }
    }

    // --- Drift behind kz's back ------------------------------------------------------------

    /// Removes the server target `server_name` from the load balancer `lb_name`, without an
    /// action, as a change made elsewhere would. No-op if it is not a target; panics if either
    /// does not exist.
    pub fn remove_lb_target(&self, lb_name: &str, server_name: &str) {
        let mut inner = self.shared.lock();
        let world = &mut inner.world;
        let server = world
            .server_by_name(server_name)
            .map(|s| s.id)
            .unwrap_or_else(|| panic!("kz-test-hcloud: no server {server_name:?}"));
        let lb = world
            .lb_by_name_mut(lb_name)
            .unwrap_or_else(|| panic!("kz-test-hcloud: no load balancer {lb_name:?}"));
        lb.targets
            .retain(|t| !matches!(t, Target::Server { id, .. } if *id == server));
    }

    /// Sets the health check interval of the service on `listen_port`. Panics if there is no
    /// such load balancer or service.
    pub fn set_lb_health_check_interval(
        &self,
        lb_name: &str,
        listen_port: i64,
        interval_secs: i64,
    ) {
        let mut inner = self.shared.lock();
        let lb = inner
            .world
            .lb_by_name_mut(lb_name)
            .unwrap_or_else(|| panic!("kz-test-hcloud: no load balancer {lb_name:?}"));
        let service = lb.service_mut(listen_port).unwrap_or_else(|| {
            panic!("kz-test-hcloud: {lb_name} has no service on port {listen_port}")
        });
        service["health_check"]["interval"] = serde_json::json!(interval_secs);
    }

    /// Turns delete protection on or off. Panics if there is no such load balancer.
    pub fn set_lb_delete_protection(&self, lb_name: &str, on: bool) {
        let mut inner = self.shared.lock();
        let lb = inner
            .world
            .lb_by_name_mut(lb_name)
            .unwrap_or_else(|| panic!("kz-test-hcloud: no load balancer {lb_name:?}"));
        lb.delete_protected = on;
    }

    // --- Faults ----------------------------------------------------------------------------

    /// The next action created ends in status `error` with this error, and its change is not
    /// made. (A failed `create_load_balancer` leaves no load balancer behind, though the 201
    /// response still shows the one that would have been made.)
    pub fn fail_next_action(&self, code: &str, message: &str) {
        self.shared.lock().world.fail_next_action = Some((code.to_owned(), message.to_owned()));
    }

    /// The next `n` requests get 429 `rate_limit_exceeded` (with `RateLimit-Remaining: 0`),
    /// whatever the bucket holds.
    pub fn rate_limit_next(&self, n: usize) {
        self.shared.lock().rate_limit_next = n;
    }

    /// What `RateLimit-Remaining` holds from now on. Each request takes one, one comes back per
    /// second up to 3600, and at 0 requests get 429, as with the real API.
    pub fn set_rate_limit_remaining(&self, remaining: i64) {
        self.shared.lock().bucket.set(remaining);
    }

    /// The next `n` requests (after the rate limit and authentication) fail with `code`, one of
    /// [`ERROR_CODES`] (e.g. `conflict`, `timeout`, `server_error` for retry tests), with its
    /// status. Panics on an unknown code.
    pub fn fail_next_requests(&self, n: usize, code: &str) {
        if status_of(code).is_none() {
            panic!("kz-test-hcloud: unknown error code {code:?}");
        }
        self.shared.lock().fail_next_requests = (n > 0).then(|| (n, code.to_owned()));
    }

    /// The next `n` requests with this method whose path contains `path` fail with `code` (one of
    /// [`ERROR_CODES`]) before they are processed, e.g. `("GET", "/v1/actions/", 2, "unavailable")`
    /// for action polls. Panics on an unknown code.
    pub fn fail_next_matching(&self, method: &str, path: &str, n: usize, code: &str) {
        if status_of(code).is_none() {
            panic!("kz-test-hcloud: unknown error code {code:?}");
        }
        if n > 0 {
            self.shared.lock().fail_matching.push((
                method.to_owned(),
                path.to_owned(),
                n,
                code.to_owned(),
            ));
        }
    }

    /// Every `n`th request from now on (after the rate limit and authentication) fails with the
    /// next of `codes` in turn, before it is processed: a steady share of failures, the same on
    /// every run (`n = 10`, `["server_error", "unavailable"]`: 10 % of requests answered 500 or
    /// 503). `n = 0` or no codes stops it. Panics on an unknown code.
    pub fn fail_one_request_in(&self, n: usize, codes: &[&str]) {
        for code in codes {
            if status_of(code).is_none() {
                panic!("kz-test-hcloud: unknown error code {code:?}");
            }
        }
        self.shared.lock().fail_every = (n > 0 && !codes.is_empty())
            .then(|| (n, codes.iter().map(|c| (*c).to_owned()).collect(), 0));
    }

    /// The next `n` requests with this method whose path contains `path` are processed as usual,
    /// and their answer is lost on the way back: the client gets a 504 `timeout`
    /// ([`Loss::GatewayTimeout`]) or a closed connection ([`Loss::Disconnect`]) instead. The log
    /// marks them `answer_lost`.
    pub fn lose_answers(&self, method: &str, path: &str, n: usize, loss: Loss) {
        if n > 0 {
            self.shared.lock().lose_answers.push(http::LostAnswers {
                method: method.to_owned(),
                path: path.to_owned(),
                count: n,
                loss,
            });
        }
    }

    /// How long a new target reports health `unknown` on a service before turning `healthy`
    /// (default [`DEFAULT_HEALTH_DELAY`]).
    pub fn set_health_delay(&self, delay: Duration) {
        self.shared.lock().world.health_delay = delay;
    }

    /// How long new actions stay `running` (default [`DEFAULT_ACTION_DELAY`]). Zero makes them
    /// finished at their first read, though the response that creates one still shows it running.
    pub fn set_action_delay(&self, delay: Duration) {
        self.shared.lock().world.action_delay = delay;
    }

    // --- Inspection ------------------------------------------------------------------------

    /// The load balancer as `GET /load_balancers/{id}` would return it.
    pub fn load_balancer(&self, name: &str) -> Option<serde_json::Value> {
        let inner = self.shared.lock();
        inner
            .world
            .lb_by_name(name)
            .map(|lb| inner.world.lb_json(lb))
    }

    /// Names of all load balancers, by id.
    pub fn load_balancer_names(&self) -> Vec<String> {
        let inner = self.shared.lock();
        inner
            .world
            .load_balancers
            .values()
            .map(|lb| lb.name.clone())
            .collect()
    }

    /// The server as `GET /servers/{id}` would return it.
    pub fn server(&self, name: &str) -> Option<serde_json::Value> {
        let inner = self.shared.lock();
        inner
            .world
            .server_by_name(name)
            .map(|s| inner.world.server_json(s))
    }

    /// The network as `GET /networks/{id}` would return it.
    pub fn network(&self, name: &str) -> Option<serde_json::Value> {
        let inner = self.shared.lock();
        inner
            .world
            .network_by_name(name)
            .map(|n| inner.world.network_json(n))
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().log.clone()
    }
}
