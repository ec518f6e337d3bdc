//! The HTTP layer under the `lb` provider: one request with its retries, its place in the rate
//! limit, and its error in the one form kz shows (`hcloud: CODE: MESSAGE (correlation id ID)`).
//!
//! It sends through the `reqwest::Client` held in the hcloud crate's `Configuration` (with the
//! crate's base path mapping, bearer token and user agent), and speaks in the crate's models. It
//! does not call the crate's generated functions: their errors keep the status and the body but
//! drop the response headers, and kz needs `X-Correlation-Id` in every error and the
//! `RateLimit-*` headers of every answer. See the module documentation of `hcloud` for the whole
//! reasoning.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hcloud::apis::configuration::Configuration;
use hcloud::models;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::limit::RateLimiter;

/// Where the API lives unless `KZ_HCLOUD_ENDPOINT` says otherwise; also the key of the crate's
/// base path mapping.
pub const DEFAULT_ENDPOINT: &str = "https://api.hetzner.cloud/v1";

/// Error codes of requests refused before anything was done, worth sending again as they are
/// (as hcloud-go retries them). `locked` is one too, but waited out longer: see [`Client`].
const RETRY_CODES: [&str; 2] = ["conflict", "rate_limit_exceeded"];

/// Error codes of a server that failed or gave up: the request may or may not have been carried
/// out. The API answers them with a 5xx status; some gateways answer 5xx without a JSON body.
const SERVER_CODES: [&str; 4] = ["server_error", "unavailable", "timeout", "bad_gateway"];

/// The longest pause between two tries of a request refused with `locked`: an action holds its
/// lock for seconds, so waiting far longer than that only wastes the deadline.
const LOCK_CAP: Duration = Duration::from_secs(5);

/// How failed requests are tried again: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The ceiling of the first wait; it doubles with every try.
    pub base: Duration,
    /// The ceiling no wait goes beyond.
    pub cap: Duration,
    /// How many times a request is sent at most.
    pub tries: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            tries: 5,
        }
    }
}

impl Retry {
    /// The ceiling of the wait after failed try number `attempt` (from 0): `base * 2^attempt`,
    /// at most `cap`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait after failed try number `attempt`: uniform in `[0, ceiling]` ("full jitter"),
    /// drawn from `random`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis();
        let ceiling = u64::try_from(ceiling).unwrap_or(u64::MAX);
        Duration::from_millis(random % ceiling.saturating_add(1))
    }
}

/// A random number for jitter, without a dependency: every `RandomState` has fresh keys.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Why a request failed, in the words kz shows. It never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The API answered with an error.
    Api {
        status: u16,
        code: String,
        message: String,
        correlation_id: Option<String>,
    },
    /// No answer: connection refused, reset, timed out. `sent` when the request may have reached
    /// the API (anything but a failed connect).
    Transport {
        request: String,
        detail: String,
        sent: bool,
    },
    /// An answer kz could not read.
    Decode { request: String, detail: String },
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Api { status, code, .. } if *status == 404 || code == "not_found")
    }

    /// The answer's error code (`http STATUS` for an answer without one), `None` without answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// `locked` (423): an action runs on the resource (or on a network it joins or leaves); the
    /// request was refused, and will pass once the action is done.
    pub fn is_locked(&self) -> bool {
        matches!(self, ApiError::Api { code, .. } if code == "locked")
    }

    /// Refused before anything was done, and worth sending again as it is: `conflict`,
    /// `rate_limit_exceeded`, or a request that never left (connection refused).
    fn retryable(&self) -> bool {
        match self {
            ApiError::Api { code, .. } => RETRY_CODES.contains(&code.as_str()),
            ApiError::Transport { sent, .. } => !sent,
            ApiError::Decode { .. } => false,
        }
    }

    /// The request may or may not have been carried out: a server error (5xx, `server_error`,
    /// `unavailable`, `timeout`, `bad_gateway`), or no answer to a request that went out. Sending
    /// it again is safe only when doing it twice is no harm (GET, PUT, DELETE); for a POST the
    /// caller must first read what the API holds ([`super::actions`] does).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            ApiError::Api { status, code, .. } => {
                *status >= 500 || SERVER_CODES.contains(&code.as_str())
            }
            ApiError::Transport { sent, .. } => *sent,
            ApiError::Decode { .. } => false,
        }
    }

    /// A failure that a later try may not meet: retryable, locked, or ambiguous.
    pub fn is_transient(&self) -> bool {
        self.retryable() || self.is_locked() || self.is_ambiguous()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Api {
                code,
                message,
                correlation_id,
                ..
            } => {
                write!(f, "hcloud: {code}: {message}")?;
                if let Some(id) = correlation_id {
                    write!(f, " (correlation id {id})")?;
                }
                Ok(())
            }
            ApiError::Transport {
                request, detail, ..
            } => write!(f, "hcloud: {request}: {detail}"),
            ApiError::Decode { request, detail } => {
                write!(f, "hcloud: unexpected answer to {request}: {detail}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// The error of an answer with an error status, from its JSON body (`{"error": {code, message}}`)
/// and its `X-Correlation-Id` header.
pub fn api_error(status: u16, body: &str, correlation_id: Option<String>) -> ApiError {
    let (code, message) = match serde_json::from_str::<models::ErrorResponse>(body) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            let text: String = body.trim().chars().take(200).collect();
            let message = if text.is_empty() || text.starts_with('<') {
                reason.to_string()
            } else {
                text
            };
            (format!("http {status}"), message)
        }
    };
    ApiError::Api {
        status,
        code,
        message,
        correlation_id,
    }
}

/// An error and its causes on one line (reqwest puts the interesting part in the causes).
fn chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// A list answer of the API: its items and the next page, if any.
pub trait Page: DeserializeOwned {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, Option<i64>);
}

/// `meta` of a list answer. The document makes it required, but a list that leaves it out (and
/// pages through the `Link` header alone) is still read.
#[derive(Debug, serde::Deserialize)]
pub struct ListMeta {
    pub pagination: Option<models::Pagination>,
}

/// The next page `meta` names, if it names one.
pub fn next_of(meta: Option<ListMeta>) -> Option<i64> {
    meta?.pagination?.next_page
}

#[derive(Debug, serde::Deserialize)]
pub struct LoadBalancers {
    load_balancers: Vec<models::LoadBalancer>,
    meta: Option<ListMeta>,
}

impl Page for LoadBalancers {
    type Item = models::LoadBalancer;
    fn into_parts(self) -> (Vec<models::LoadBalancer>, Option<i64>) {
        (self.load_balancers, next_of(self.meta))
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct Actions {
    actions: Vec<models::Action>,
    meta: Option<ListMeta>,
}

impl Page for Actions {
    type Item = models::Action;
    fn into_parts(self) -> (Vec<models::Action>, Option<i64>) {
        (self.actions, next_of(self.meta))
    }
}

/// The page the `Link` header (RFC 8288) names `rel="next"`:
/// `<https://api.hetzner.cloud/v1/servers?page=2&per_page=50>; rel="next", <...>; rel="last"`.
pub fn link_next(link: &str) -> Option<i64> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let next = params.split(';').any(|p| {
            p.trim()
                .strip_prefix("rel=")
                .is_some_and(|r| r.trim_matches('"').split(' ').any(|r| r == "next"))
        });
        if !next {
            return None;
        }
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let url = reqwest::Url::parse(url).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
    })
}

/// One API client: a token, a base URL, a retry policy and the project's rate limit.
///
/// How a failed request is tried again ([`Client::call`]):
/// - refused before anything was done (`conflict`, `rate_limit_exceeded`, no connection): sent
///   again, with backoff, up to [`Retry::tries`] times;
/// - `locked`: sent again with backoff (at most [`LOCK_CAP`] apart) until `lock_wait` has passed
///   since the first `locked`: the action deadline, as Hetzner's Terraform provider waits out
///   `locked` on attach, detach and remove-target;
/// - a server error or a lost answer: sent again up to [`Retry::tries`] times if the method is
///   idempotent (GET, PUT, DELETE); a POST is returned to its caller, which reads the API's state
///   before it sends anything again.
pub struct Client {
    config: Configuration,
    retry: Retry,
    limiter: Arc<RateLimiter>,
    lock_wait: Duration,
}

impl fmt::Debug for Client {
    // Spelled out so that the token in the configuration is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.config.get_default_base_path())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(
        http: reqwest::Client,
        token: String,
        endpoint: Option<&str>,
        retry: Retry,
        limiter: Arc<RateLimiter>,
    ) -> Client {
        let mut config = Configuration::new();
        config.client = http;
        config.bearer_access_token = Some(token);
        config.user_agent = Some(format!("kz/{} hcloud-rust/0.26", env!("CARGO_PKG_VERSION")));
        if let Some(e) = endpoint {
            config
                .base_path_mapping
                .insert(DEFAULT_ENDPOINT.into(), e.trim_end_matches('/').to_string());
        }
        Client {
            config,
            retry,
            limiter,
            lock_wait: Duration::from_secs(300),
        }
    }

    /// How long a request refused with `locked` is tried again (the action deadline).
    pub fn with_lock_wait(mut self, wait: Duration) -> Client {
        self.lock_wait = wait;
        self
    }

    /// How many times a request is sent at most (a `locked` one aside).
    pub fn tries(&self) -> u32 {
        self.retry.tries
    }

    /// The pause before try number `attempt + 2` (after `attempt + 1` failures).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retry.delay(attempt, random())
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ApiError> {
        let (body, _) = self.call(Method::GET, path, query, None).await?;
        decode(&format!("GET {path}"), &body)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let json = body.map(|b| encode(path, b)).transpose()?;
        let (answer, _) = self.call(Method::POST, path, &[], json).await?;
        decode(&format!("POST {path}"), &answer)
    }

    pub async fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<(), ApiError> {
        let json = encode(path, body)?;
        self.call(Method::PUT, path, &[], Some(json)).await?;
        Ok(())
    }

    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call(Method::DELETE, path, &[], None).await?;
        Ok(())
    }

    /// Every item of a list, page after page (50 a page, the most the API gives).
    pub async fn list_all<P: Page>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<P::Item>, ApiError> {
        let mut items = Vec::new();
        let mut page = 1i64;
        // A bound on pages, so that a server that always names a next page cannot keep kz here.
        for _ in 0..10_000 {
            let mut q = query.to_vec();
            q.push(("per_page", "50".into()));
            q.push(("page", page.to_string()));
            let (body, link) = self.call(Method::GET, path, &q, None).await?;
            let (mut got, next) = decode::<P>(&format!("GET {path}"), &body)?.into_parts();
            // `meta.pagination` first; the `Link` header when an answer has no `meta`.
            let next = next.or_else(|| link.as_deref().and_then(link_next));
            items.append(&mut got);
            match next {
                Some(n) if n > page => page = n,
                _ => return Ok(items),
            }
        }
        Err(ApiError::Decode {
            request: format!("GET {path}"),
            detail: "the pages do not end".into(),
        })
    }

    /// Sends one request, again while it fails in a way worth retrying; the body of the answer
    /// and its `Link` header.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(String, Option<String>), ApiError> {
        let request = format!("{method} {path}");
        let idempotent = matches!(method, Method::GET | Method::PUT | Method::DELETE);
        let mut attempt = 0;
        let mut locked: Option<(tokio::time::Instant, u32)> = None;
        loop {
            self.limiter.acquire().await;
            let error = match self.send_once(&method, path, query, body.clone()).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(api)) => api,
                Err(e) => ApiError::Transport {
                    request: request.clone(),
                    detail: chain(&e),
                    sent: !e.is_connect(),
                },
            };
            if error.is_locked() {
                // Tried until the deadline, the last time at the deadline itself.
                let now = tokio::time::Instant::now();
                let (since, n) = locked.get_or_insert((now, 0));
                let left = (*since + self.lock_wait).saturating_duration_since(now);
                if left.is_zero() {
                    return Err(error);
                }
                let pause = self.retry.delay(*n, random()).min(LOCK_CAP).min(left);
                *n += 1;
                tokio::time::sleep(pause).await;
                continue;
            }
            let again = error.retryable() || (idempotent && error.is_ambiguous());
            attempt += 1;
            if !again || attempt >= self.retry.tries {
                return Err(error);
            }
            tokio::time::sleep(self.retry.delay(attempt - 1, random())).await;
        }
    }

    /// One round trip: `Err` when no answer came, `Ok(Err)` for an answer with an error status.
    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Result<(String, Option<String>), ApiError>, reqwest::Error> {
        let url = format!("{}{path}", self.config.get_default_base_path());
        let mut req = self.config.client.request(method.clone(), url);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(ua) = &self.config.user_agent {
            req = req.header(reqwest::header::USER_AGENT, ua);
        }
        if let Some(token) = &self.config.bearer_access_token {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let resp = req.send().await?;
        self.limiter.observe(resp.headers());
        let status = resp.status();
        let correlation_id = resp
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let link = resp
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await?;
        if status.is_client_error() || status.is_server_error() {
            Ok(Err(api_error(status.as_u16(), &text, correlation_id)))
        } else {
            Ok(Ok((text, link)))
        }
    }
}

fn encode<B: Serialize>(path: &str, body: &B) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body).map_err(|e| ApiError::Decode {
        request: path.to_string(),
        detail: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(request: &str, body: &str) -> Result<T, ApiError> {
    serde_json::from_str(body).map_err(|e| ApiError::Decode {
        request: request.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_names_code_message_and_correlation_id() {
        let body = r#"{"error":{"code":"uniqueness_error","message":"name is already used","details":{}}}"#;
        let e = api_error(409, body, Some("a1b2c3".into()));
        assert_eq!(
            e.to_string(),
            "hcloud: uniqueness_error: name is already used (correlation id a1b2c3)"
        );
        assert!(!e.retryable());
        assert!(!e.is_not_found());
    }

    #[test]
    fn an_answer_that_is_not_json_still_reads_as_an_error() {
        let e = api_error(502, "<html>bad gateway</html>", None);
        assert_eq!(e.to_string(), "hcloud: http 502: Bad Gateway");
        assert!(e.is_ambiguous());
        let e = api_error(404, "", Some("x".into()));
        assert!(e.is_not_found());
    }

    fn coded(status: u16, code: &str) -> ApiError {
        api_error(
            status,
            &format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#),
            None,
        )
    }

    #[test]
    fn refusals_are_retried_and_server_errors_are_ambiguous() {
        for (status, code) in [(409, "conflict"), (429, "rate_limit_exceeded")] {
            let e = coded(status, code);
            assert!(e.retryable() && !e.is_ambiguous(), "{code}");
        }
        for (status, code) in [
            (500, "server_error"),
            (503, "unavailable"),
            (504, "timeout"),
            (502, "bad_gateway"),
        ] {
            let e = coded(status, code);
            assert!(e.is_ambiguous() && !e.retryable(), "{code}");
            assert!(e.is_transient());
        }
        assert!(api_error(503, "", None).is_ambiguous());
        let locked = coded(423, "locked");
        assert!(locked.is_locked() && !locked.is_ambiguous() && locked.is_transient());
        let protected = coded(423, "protected");
        assert!(!protected.is_locked() && !protected.is_transient());
        for (status, code) in [(422, "invalid_input"), (409, "uniqueness_error")] {
            assert!(!coded(status, code).is_transient(), "{code}");
        }
        let lost = ApiError::Transport {
            request: "POST /x".into(),
            detail: "connection closed".into(),
            sent: true,
        };
        assert!(lost.is_ambiguous() && !lost.retryable());
        let refused = ApiError::Transport {
            request: "POST /x".into(),
            detail: "connection refused".into(),
            sent: false,
        };
        assert!(refused.retryable() && !refused.is_ambiguous());
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let link = "<https://api.hetzner.cloud/v1/servers?page=1&per_page=50>; rel=\"prev\", \
                    <https://api.hetzner.cloud/v1/servers?name=x&page=3&per_page=50>; rel=\"next\", \
                    <https://api.hetzner.cloud/v1/servers?page=4&per_page=50>; rel=\"last\"";
        assert_eq!(link_next(link), Some(3));
        let last = "<https://api.hetzner.cloud/v1/servers?page=3&per_page=50>; rel=\"prev\"";
        assert_eq!(link_next(last), None);
        assert_eq!(link_next(""), None);
        assert_eq!(link_next("garbage; rel=next"), None);
        // Without `meta`, a list still reads, its next page from the header.
        let page: LoadBalancers = serde_json::from_str(r#"{"load_balancers": []}"#).expect("json");
        assert_eq!(page.into_parts().1, None);
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let r = Retry::default();
        assert_eq!(r.ceiling(0), Duration::from_secs(1));
        assert_eq!(r.ceiling(1), Duration::from_secs(2));
        assert_eq!(r.ceiling(5), Duration::from_secs(32));
        assert_eq!(r.ceiling(6), Duration::from_secs(60));
        assert_eq!(r.ceiling(40), Duration::from_secs(60));
        for attempt in 0..8 {
            for _ in 0..200 {
                let d = r.delay(attempt, random());
                assert!(d <= r.ceiling(attempt), "{d:?} at {attempt}");
            }
        }
        assert_eq!(r.delay(3, 0), Duration::ZERO);
        assert_eq!(r.delay(3, 8000), Duration::from_secs(8));
        let fast = Retry {
            base: Duration::from_millis(5),
            ..r
        };
        assert_eq!(fast.ceiling(2), Duration::from_millis(20));
    }

    #[test]
    fn the_endpoint_replaces_the_default_base_path() {
        let c = Client::new(
            reqwest::Client::new(),
            "secret-token".into(),
            Some("http://127.0.0.1:1234/v1/"),
            Retry::default(),
            Arc::new(RateLimiter::default()),
        );
        assert_eq!(c.config.get_default_base_path(), "http://127.0.0.1:1234/v1");
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
