//! The `lb` resource: Hetzner Cloud load balancers, through the Hetzner Cloud API.
//!
//! # How the API is reached
//!
//! The `hcloud` crate (0.26, rustls) gives the models of every request and answer and the
//! `Configuration` (reqwest client, base path mapping, bearer token, user agent). Its generated
//! call functions are not used: they turn an error answer into a status and a body and drop the
//! headers, and there is no hook to get them back (the client is a plain `reqwest::Client`, not a
//! middleware stack). kz needs the headers of every answer: `X-Correlation-Id` for its error
//! messages (`hcloud: CODE: MESSAGE (correlation id ID)`) and `RateLimit-*` to pace itself. So
//! [`client`] sends each request itself through the configuration's client, with the crate's
//! models as bodies and answers, and adds what the crate lacks:
//!
//! - retries ([`client::Client`]): requests refused before anything was done (`conflict`,
//!   `rate_limit_exceeded`, no connection) and, for GET, PUT and DELETE, server errors (5xx) and
//!   lost answers, with exponential backoff from 1 s, doubling, capped at 60 s, full jitter,
//!   5 tries. `locked` is tried again (at most 5 s apart) until the action deadline. A POST
//!   whose outcome is unknown (5xx, lost answer) is not sent again blindly: [`actions`] reads the
//!   load balancer once no action runs on it and counts a change it shows as made, else sends
//!   it again, with backoff, until the action deadline.
//!   `KZ_HCLOUD_RETRY_BASE_MS` sets the first ceiling (tests make it small);
//! - the rate limit ([`limit`]): requests are spaced once fewer than 10 remain;
//! - waiting for actions ([`actions`]): polled every 500 ms, at most 5 minutes each.
//!
//! `KZ_HCLOUD_ENDPOINT` replaces `https://api.hetzner.cloud/v1` (tests point it at a local fake).
//! It must be `https://`, or plain `http://` to this machine only (a loopback address:
//! `127.0.0.0/8`, `::1`, or `localhost`), since the token goes with every request; any other
//! endpoint fails every operation before its first request ([`check_endpoint`]).
//!
//! # The token
//!
//! It is read from the variable the instance's `token_env` names (`HCLOUD_TOKEN` by default) just
//! before the first request of an operation, held only by that operation's client, sent only as
//! the `Authorization` header, and never put in an error, a log or the state.
//!
//! # Modules
//!
//! [`spec`] maps instances and API objects to kz's terms, [`diff`] plans the actions of an update,
//! [`actions`] runs them, [`lookup`] finds things by name.

pub mod actions;
pub mod client;
pub mod declare;
pub mod diff;
pub mod limit;
pub mod lookup;
pub mod service;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use hcloud::models;

use kz_engine::model::Instance;
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, Placement, Provider,
    ProviderError,
};

use actions::Waiting;
use client::{Client, Retry};
use diff::{Resolved, plan, server_ids};
use limit::RateLimiter;
use spec::{Current, Desired, Place, Targets, observe, service_to_api, token_env};

/// How the provider reaches the API.
#[derive(Clone)]
pub struct Settings {
    /// The API's base URL, instead of `https://api.hetzner.cloud/v1`.
    pub endpoint: Option<String>,
    pub retry: Retry,
    pub waiting: Waiting,
    /// The deadline of one HTTP request.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Variables looked up before the process environment (so that a test can hand over a token
    /// without changing the environment of its process).
    pub vars: BTreeMap<String, String>,
    /// A lab run (`--lab`): every operation is refused, before any request, unless the endpoint
    /// is a stand-in on this machine ([`is_stand_in`]), so a lab never changes real cloud
    /// resources, whatever its state or plan says.
    pub stand_in_only: bool,
}

impl fmt::Debug for Settings {
    // Spelled out so that the values of `vars` (tokens) are never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("retry", &self.retry)
            .field("waiting", &self.waiting)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("stand_in_only", &self.stand_in_only)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            endpoint: None,
            retry: Retry::default(),
            waiting: Waiting::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            vars: BTreeMap::new(),
            stand_in_only: false,
        }
    }
}

impl Settings {
    /// The defaults, with `KZ_HCLOUD_ENDPOINT` and `KZ_HCLOUD_RETRY_BASE_MS` applied.
    pub fn from_env() -> Settings {
        let mut s = Settings {
            endpoint: std::env::var("KZ_HCLOUD_ENDPOINT")
                .ok()
                .filter(|e| !e.trim().is_empty()),
            ..Settings::default()
        };
        if let Some(ms) = std::env::var("KZ_HCLOUD_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            s.retry.base = Duration::from_millis(ms);
        }
        s
    }
}

/// Whether the API may be reached at `endpoint`: over https, or over plain http to this machine
/// only (a loopback address, or `localhost`), so that the token never travels in clear. The
/// error names `KZ_HCLOUD_ENDPOINT`, where the endpoint comes from.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    const VAR: &str = "KZ_HCLOUD_ENDPOINT";
    let url = reqwest::Url::parse(endpoint.trim())
        .map_err(|e| format!("hcloud: {VAR} is not a URL ({e}); expected https://HOST/PATH"))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(format!(
            "hcloud: {VAR} uses plain http to {host}, which would send the API token in clear: \
             use https (plain http is accepted only for 127.0.0.0/8, ::1 and localhost)"
        )),
        scheme => Err(format!(
            "hcloud: {VAR} should be an https:// URL (plain http only to this machine), \
             not {scheme}://{host}"
        )),
    }
}

/// Whether `endpoint` is a stand-in of the API on this machine: an http(s) URL whose host is a
/// loopback address or `localhost` (parsed as a URL, so `http://127.0.0.1:1@api.example/` is not).
pub fn is_stand_in(endpoint: &str) -> bool {
    reqwest::Url::parse(endpoint.trim()).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(is_loopback)
    })
}

/// Whether `KZ_HCLOUD_ENDPOINT` names a stand-in of the API on this machine ([`is_stand_in`]).
pub fn stand_in_from_env() -> bool {
    std::env::var("KZ_HCLOUD_ENDPOINT").is_ok_and(|e| is_stand_in(&e))
}

/// A loopback address, or `localhost`, as a URL spells its host (an IPv6 address in brackets).
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `lb` provider.
pub struct LbProvider {
    settings: Settings,
    http: OnceLock<Result<reqwest::Client, String>>,
    /// One rate limit per project, known by the variable holding its token.
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
}

impl fmt::Debug for LbProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LbProvider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LbProvider {
    pub fn new(settings: Settings) -> LbProvider {
        LbProvider {
            settings,
            http: OnceLock::new(),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_env() -> LbProvider {
        LbProvider::new(Settings::from_env())
    }

    /// The provider of a lab run: as [`LbProvider::from_env`], but it reaches a stand-in on
    /// this machine only.
    pub fn for_lab() -> LbProvider {
        LbProvider::new(Settings {
            stand_in_only: true,
            ..Settings::from_env()
        })
    }

    /// The token, or the error every operation fails with before any request when it is unset.
    fn token(&self, env: &str) -> Result<String, String> {
        let token = match self.settings.vars.get(env) {
            Some(v) => Some(v.clone()),
            None => std::env::var(env).ok(),
        };
        token
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_string())
            .ok_or_else(|| {
                format!("hcloud: no API token: set {env} (the variable named by token_env)")
            })
    }

    /// A client for the project whose token `env` holds; an error, before any request, when the
    /// endpoint is not safe for the token or the token is unset.
    fn client(&self, env: &str) -> Result<Client, String> {
        if self.settings.stand_in_only
            && !self.settings.endpoint.as_deref().is_some_and(is_stand_in)
        {
            return Err(
                "hcloud: refusing to reach the Hetzner API from a lab run: a lab reaches \
                 only a stand-in on this machine (KZ_HCLOUD_ENDPOINT, a loopback URL)"
                    .into(),
            );
        }
        if let Some(e) = &self.settings.endpoint {
            check_endpoint(e)?;
        }
        let token = self.token(env)?;
        let http = self
            .http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(self.settings.request_timeout)
                    .connect_timeout(self.settings.connect_timeout)
                    .build()
                    .map_err(|e| format!("hcloud: cannot set up the HTTP client: {e}"))
            })
            .clone()?;
        let limiter = match self.limiters.lock() {
            Ok(mut m) => Arc::clone(m.entry(env.to_string()).or_default()),
            Err(_) => Arc::new(RateLimiter::default()),
        };
        Ok(Client::new(
            http,
            token,
            self.settings.endpoint.as_deref(),
            self.settings.retry,
            limiter,
        )
        .with_lock_wait(self.settings.waiting.deadline))
    }

    /// Reads the instances of one project (one token).
    async fn read_project(
        &self,
        c: &Client,
        insts: &[&Instance],
    ) -> Result<Vec<Result<Observation, String>>, String> {
        let all = lookup::load_balancers(c).await.map_err(|e| e.to_string())?;
        let by_name: HashMap<&str, &models::LoadBalancer> =
            all.iter().map(|lb| (lb.name.as_str(), lb)).collect();
        let found: Vec<(&Instance, Option<&models::LoadBalancer>)> = insts
            .iter()
            .map(|i| (*i, by_name.get(i.address.name.as_str()).copied()))
            .collect();
        let need_networks = found
            .iter()
            .any(|(_, lb)| lb.is_some_and(|lb| !lb.private_net.is_empty()));
        // Server targets are shown by name wherever targets are observed.
        let need_servers = found.iter().any(|(i, lb)| {
            (i.attrs.contains_key("targets") || i.attrs.contains_key("target_label"))
                && lb.is_some_and(|lb| lb.targets.iter().any(|t| t.server.is_some()))
        });
        let networks = if need_networks {
            lookup::network_names(c).await.map_err(|e| e.to_string())?
        } else {
            HashMap::new()
        };
        let servers: HashMap<i64, String> = if need_servers {
            let all = lookup::servers(c).await.map_err(|e| e.to_string())?;
            all.into_iter().map(|s| (s.id, s.name)).collect()
        } else {
            HashMap::new()
        };
        Ok(found
            .into_iter()
            .map(|(inst, lb)| {
                Ok(match lb {
                    None => Observation::default(),
                    Some(lb) => observe(inst, &Current::from_api(lb, &networks, &servers)),
                })
            })
            .collect())
    }

    async fn create_lb(&self, c: &Client, d: &Desired) -> Result<(), ProviderError> {
        let fail = |e: String| ProviderError::new("create", e);
        let network = match &d.network {
            None => None,
            Some(n) => Some(
                lookup::network_id(c, n)
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .ok_or_else(|| fail(format!("no network named {n} in the project")))?,
            ),
        };
        let mut servers = HashMap::new();
        let mut targets = Vec::new();
        match &d.targets {
            Targets::Servers(names) if !names.is_empty() => {
                let all = lookup::servers(c).await.map_err(|e| fail(e.to_string()))?;
                servers = all.into_iter().map(|s| (s.name, s.id)).collect();
                for id in server_ids(names, &servers).map_err(fail)? {
                    targets.push(actions::server_target(id, d.use_private_ip));
                }
            }
            Targets::Label(sel) => targets.push(actions::label_target(sel, d.use_private_ip)),
            _ => {}
        }
        // The create call can attach a network but not choose the IP in it. With an IP declared,
        // the load balancer is made without network and targets (and, for as long, with its
        // public interface, which a load balancer without network needs); the plan of an update
        // then attaches it at its IP, turns the public interface off if so declared, and adds
        // the targets, which may use the private network.
        let later = d.ip.is_some() && network.is_some();
        // A private load balancer made public for a while gets its services only once its public
        // interface is off (by the plan below), so that nothing ever listens publicly.
        let services = if later && !d.public_interface {
            Vec::new()
        } else {
            d.services
                .iter()
                .map(service_to_api)
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?
        };
        let mut req = models::CreateLoadBalancerRequest::new(d.lb_type.clone(), d.name.clone());
        match &d.place {
            Place::Location(l) => req.location = Some(l.clone()),
            Place::NetworkZone(z) => req.network_zone = Some(z.clone()),
        }
        req.algorithm = Some(Box::new(spec::algorithm_of(&d.algorithm).map_err(fail)?));
        req.labels = d.labels.clone().map(|l| l.into_iter().collect());
        req.network = if later { None } else { network };
        req.public_interface = Some(d.public_interface || later);
        req.services = Some(services);
        req.targets = (!later && !targets.is_empty()).then_some(targets);
        let made = actions::create(c, &req, self.settings.waiting)
            .await
            .map_err(fail)?;
        if later {
            let current = Current::from_api(&made, &HashMap::new(), &HashMap::new());
            let resolved = Resolved { network, servers };
            let ops = plan(d, &current, &resolved).map_err(fail)?;
            self.perform_all(c, current.id, &ops).await?;
        }
        Ok(())
    }

    /// Brings the load balancer to `d`. Every declared attribute is compared with what the API
    /// holds, so the plan's list of changed attributes is not needed; undeclared ones are left
    /// alone (see [`diff`]).
    async fn update_lb(&self, c: &Client, d: &Desired) -> Result<(), ProviderError> {
        let fail = |e: String| ProviderError::new("update", e);
        let lb = lookup::load_balancer(c, &d.name)
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("load balancer {} no longer exists", d.name)))?;
        let network = match &d.network {
            None => None,
            Some(n) => lookup::network_id(c, n)
                .await
                .map_err(|e| fail(e.to_string()))?,
        };
        let mut names = HashMap::new();
        let mut ids = HashMap::new();
        let has_servers = lb.targets.iter().any(|t| t.server.is_some());
        if matches!(&d.targets, Targets::Servers(n) if !n.is_empty() || has_servers) {
            for s in lookup::servers(c).await.map_err(|e| fail(e.to_string()))? {
                names.insert(s.id, s.name.clone());
                ids.insert(s.name, s.id);
            }
        }
        let current = Current::from_api(&lb, &HashMap::new(), &names);
        let resolved = Resolved {
            network,
            servers: ids,
        };
        let ops = plan(d, &current, &resolved).map_err(fail)?;
        self.perform_all(c, current.id, &ops).await
    }

    /// Runs the actions in order, each waited for; the first failure stops the rest and is
    /// reported under the action's name.
    async fn perform_all(
        &self,
        c: &Client,
        id: i64,
        ops: &[diff::Op],
    ) -> Result<(), ProviderError> {
        for op in ops {
            actions::perform(c, id, op, self.settings.waiting)
                .await
                .map_err(|e| ProviderError::new(op.step(), e))?;
        }
        Ok(())
    }

    async fn delete_lb(&self, inst: &Instance) -> Result<(), ProviderError> {
        let fail = |e: String| ProviderError::new("delete", e);
        let name = &inst.address.name;
        let c = self.client(token_env(inst)).map_err(fail)?;
        let Some(lb) = lookup::load_balancer(&c, name)
            .await
            .map_err(|e| fail(e.to_string()))?
        else {
            return Ok(());
        };
        if lb.protection.delete {
            return Err(fail(format!(
                "load balancer {name} has delete protection: kz will not delete or replace it; \
                 turn protection off in the Hetzner console first"
            )));
        }
        match c.delete(&format!("/load_balancers/{}", lb.id)).await {
            Err(e) if !e.is_not_found() => Err(fail(e.to_string())),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Provider for LbProvider {
    fn kind(&self) -> &'static str {
        "lb"
    }

    fn placement(&self) -> Placement {
        Placement::Api {
            service: "Hetzner Cloud",
        }
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare::declare_lb(decl)
    }

    fn host_settings(&self) -> &'static [&'static str] {
        &[declare::SERVER_SETTING]
    }

    fn secret_values(&self, insts: &[&Instance]) -> Vec<String> {
        let mut vars: Vec<&str> = insts.iter().map(|i| token_env(i)).collect();
        vars.sort_unstable();
        vars.dedup();
        vars.into_iter()
            .filter_map(|v| self.token(v).ok())
            .collect()
    }

    fn probe(&self, _inst: &Instance, _host: &str) -> Option<String> {
        None
    }

    fn observe(&self, _inst: &Instance, _out: &MemberOutputs) -> Result<Observation, String> {
        Err("a load balancer is read through the Hetzner Cloud API, not on a host".into())
    }

    fn force_new(&self) -> &'static [&'static str] {
        &["location", "network_zone"]
    }

    async fn read(&self, insts: &[Instance]) -> Option<Vec<Result<Observation, String>>> {
        // Every instance gets its own result; one left unfilled is an error, never "absent".
        let mut out: Vec<Option<Result<Observation, String>>> = vec![None; insts.len()];
        // One client, one listing, per project; nearly always there is one.
        let mut projects: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (n, i) in insts.iter().enumerate() {
            projects.entry(token_env(i)).or_default().push(n);
        }
        for (env, members) in projects {
            let group: Vec<&Instance> = members.iter().map(|n| &insts[*n]).collect();
            let result = match self.client(env) {
                Ok(c) => self.read_project(&c, &group).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(obs) => {
                    for (n, o) in members.into_iter().zip(obs) {
                        out[n] = Some(o);
                    }
                }
                Err(e) => {
                    for n in members {
                        out[n] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Some(
            out.into_iter()
                .zip(insts)
                .map(|(o, i)| {
                    o.unwrap_or_else(|| {
                        Err(format!(
                            "hcloud: load balancer {} was not read",
                            i.address.name
                        ))
                    })
                })
                .collect(),
        )
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        let inst = cx.instance();
        let fail = |e: String| ProviderError::new("create", e);
        let c = self.client(token_env(inst)).map_err(fail)?;
        let d = Desired::from_instance(inst).map_err(fail)?;
        cx.progress(format!("creating load balancer {}", d.name));
        self.create_lb(&c, &d).await?;
        Ok(Applied::default())
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        let inst = cx.instance();
        let fail = |e: String| ProviderError::new("update", e);
        let c = self.client(token_env(inst)).map_err(fail)?;
        let d = Desired::from_instance(inst).map_err(fail)?;
        self.update_lb(&c, &d).await?;
        Ok(Applied::default())
    }

    async fn delete(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        self.delete_lb(cx.instance()).await?;
        Ok(Applied::default())
    }
}
