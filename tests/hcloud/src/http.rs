//! The HTTP side: one thread with its own tokio runtime serving HTTP/1.1 on 127.0.0.1, and what
//! happens to every request before and after its operation runs: rate limiting, injected
//! faults, authentication, the response headers, the request log.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::errors::ApiError;
use crate::routes;
use crate::state::World;
use crate::util::{random_hex, unix_secs};

/// What the real API allows per hour and project.
pub const RATE_LIMIT: i64 = 3600;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    pub method: String,
    /// As received, with the `/v1` prefix.
    pub path: String,
    /// The raw query string, `""` when there is none.
    pub query: String,
    pub status: u16,
    /// Whether it carried the right bearer token.
    pub authorized: bool,
    /// The raw request body (UTF-8, lossy).
    pub body: String,
    /// Processed, but its answer was lost on the way back (see `FakeHcloud::lose_answers`):
    /// `status` is what the operation answered, the client got something else.
    pub answer_lost: bool,
}

/// How an answer is lost after its request was processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// A gateway gives up waiting: 504 `timeout`.
    GatewayTimeout,
    /// The connection closes before any answer.
    Disconnect,
}

/// Answers to lose: the next `count` requests with this method whose path contains `path`.
#[derive(Debug, Clone)]
pub struct LostAnswers {
    pub method: String,
    pub path: String,
    pub count: usize,
    pub loss: Loss,
}

/// The rate limit bucket: `remaining` refills by one per second up to the limit, as the
/// documentation describes it.
pub struct Bucket {
    pub remaining: i64,
    refilled: Instant,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            remaining: RATE_LIMIT,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let secs = self.refilled.elapsed().as_secs();
        if secs > 0 {
            self.remaining = (self.remaining + secs as i64).min(RATE_LIMIT);
            self.refilled += std::time::Duration::from_secs(secs);
        }
    }

    /// Sets what `RateLimit-Remaining` reports from now on.
    pub fn set(&mut self, remaining: i64) {
        self.remaining = remaining.clamp(0, RATE_LIMIT);
        self.refilled = Instant::now();
    }
}

/// Everything behind the one lock.
pub struct Inner {
    pub world: World,
    pub bucket: Bucket,
    /// Requests still to be refused with 429 whatever the bucket says.
    pub rate_limit_next: usize,
    /// Requests still to be refused with this error code.
    pub fail_next_requests: Option<(usize, String)>,
    /// `(n, codes, count)`: every `n`th request fails with the next of `codes` in turn.
    pub fail_every: Option<(usize, Vec<String>, usize)>,
    pub lose_answers: Vec<LostAnswers>,
    /// `(method, path part, count, code)`: the next `count` matching requests fail with `code`.
    pub fail_matching: Vec<(String, String, usize, String)>,
    pub log: Vec<RequestLog>,
}

pub struct Shared {
    pub token: String,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(token: String) -> Shared {
        Shared {
            token,
            inner: Mutex::new(Inner {
                world: World::new(),
                bucket: Bucket::new(),
                rate_limit_next: 0,
                fail_next_requests: None,
                fail_every: None,
                lose_answers: Vec::new(),
                fail_matching: Vec::new(),
                log: Vec::new(),
            }),
        }
    }

    /// The state; a panic in another holder does not make it unusable (tests inspect it after).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running server thread.
pub struct ServerThread {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Binds 127.0.0.1:0 here, so the port is known on return, and serves on a new thread.
    pub fn start(shared: Arc<Shared>) -> std::io::Result<ServerThread> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("kz-test-hcloud:{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, shared, rx)))?;
        Ok(ServerThread {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The runtime went down with the thread, and with it every open connection.
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            // `None`: the answer is lost; an error makes hyper close the
                            // connection without one.
                            respond(&shared, req).await.ok_or(Disconnected)
                        }
                    });
                    // A client hanging up mid-request is its business.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// The error that closes a connection whose answer is lost.
#[derive(Debug)]
struct Disconnected;

impl std::fmt::Display for Disconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer lost on purpose")
    }
}

impl std::error::Error for Disconnected {}

async fn respond(shared: &Shared, req: Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let method = req.method().as_str().to_owned();
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token);
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };

    let mut inner = shared.lock();
    inner.bucket.refill();
    // Order as in the real API: the rate limit counts every request, authenticated or not.
    let limited = if inner.rate_limit_next > 0 {
        inner.rate_limit_next -= 1;
        true
    } else if inner.bucket.remaining <= 0 {
        true
    } else {
        inner.bucket.remaining -= 1;
        false
    };
    let result: Result<(u16, Option<Value>), ApiError> = if limited {
        Err(ApiError::new(
            "rate_limit_exceeded",
            "limit of 3600 requests per hour reached",
        ))
    } else if !authorized {
        Err(ApiError::new("unauthorized", "unable to authenticate"))
    } else if let Some(code) = take_injected_failure(&mut inner) {
        Err(ApiError::new(&code, format!("injected failure: {code}")))
    } else if let Some(code) = take_matching_failure(&mut inner, &method, &path) {
        Err(ApiError::new(&code, format!("injected failure: {code}")))
    } else if let Some(code) = take_periodic_failure(&mut inner) {
        Err(ApiError::new(&code, format!("injected failure: {code}")))
    } else {
        match path.strip_prefix("/v1") {
            Some(rest) if rest.starts_with('/') => {
                routes::handle(&mut inner.world, &method, rest, &query, &body)
            }
            _ => Err(ApiError::new(
                "not_found",
                format!("no such endpoint: {path}"),
            )),
        }
    };
    let (status, json) = match result {
        Ok((status, json)) => (status, json),
        Err(e) => (e.status, Some(e.body())),
    };
    let loss = if limited || !authorized {
        None
    } else {
        take_lost_answer(&mut inner, &method, &path)
    };
    let link = json
        .as_ref()
        .and_then(|v| link_header(&host, &path, &query, v));
    inner.log.push(RequestLog {
        method,
        path,
        query,
        status,
        authorized,
        body: String::from_utf8_lossy(&body).into_owned(),
        answer_lost: loss.is_some(),
    });
    let (status, json) = match loss {
        None => (status, json),
        Some(Loss::Disconnect) => return None,
        Some(Loss::GatewayTimeout) => {
            let e = ApiError::new("timeout", "the gateway timed out waiting for an answer");
            (e.status, Some(e.body()))
        }
    };
    let remaining = if status == 429 {
        0
    } else {
        inner.bucket.remaining
    };
    drop(inner);

    let reset = unix_secs(SystemTime::now()) + (RATE_LIMIT - remaining).max(0) as u64;
    let mut builder = Response::builder()
        .status(status)
        .header("x-correlation-id", random_hex(8))
        .header("ratelimit-limit", RATE_LIMIT.to_string())
        .header("ratelimit-remaining", remaining.to_string())
        .header("ratelimit-reset", reset.to_string());
    if let Some(link) = link {
        builder = builder.header(hyper::header::LINK, link);
    }
    let payload = match json {
        Some(v) => {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    Some(
        builder
            .body(Full::new(payload))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
    )
}

/// The `Link` header of a list answer, as the API sends it beside `meta.pagination`: the URLs of
/// the `prev`, `next` and `last` pages (RFC 8288), the request's other parameters kept.
fn link_header(host: &str, path: &str, query: &str, body: &Value) -> Option<String> {
    let p = body.get("meta")?.get("pagination")?;
    let per_page = p["per_page"].as_i64()?;
    let others: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("page=") && !kv.starts_with("per_page="))
        .collect();
    let url = |page: i64| {
        let mut q = others.clone();
        let page = format!("page={page}");
        let per = format!("per_page={per_page}");
        q.push(&page);
        q.push(&per);
        format!("<http://{host}{path}?{}>", q.join("&"))
    };
    let links: Vec<String> = [
        ("prev", p["previous_page"].as_i64()),
        ("next", p["next_page"].as_i64()),
        ("last", p["last_page"].as_i64()),
    ]
    .into_iter()
    .filter_map(|(rel, page)| page.map(|n| format!("{}; rel=\"{rel}\"", url(n))))
    .collect();
    (!links.is_empty()).then(|| links.join(", "))
}

fn take_periodic_failure(inner: &mut Inner) -> Option<String> {
    let (n, codes, count) = inner.fail_every.as_mut()?;
    *count += 1;
    if *count % *n != 0 || codes.is_empty() {
        return None;
    }
    let which = (*count / *n - 1) % codes.len();
    Some(codes[which].clone())
}

fn take_matching_failure(inner: &mut Inner, method: &str, path: &str) -> Option<String> {
    let at = inner
        .fail_matching
        .iter()
        .position(|(m, p, _, _)| m == method && path.contains(p.as_str()))?;
    let entry = &mut inner.fail_matching[at];
    let code = entry.3.clone();
    entry.2 -= 1;
    if entry.2 == 0 {
        inner.fail_matching.remove(at);
    }
    Some(code)
}

fn take_lost_answer(inner: &mut Inner, method: &str, path: &str) -> Option<Loss> {
    let at = inner
        .lose_answers
        .iter()
        .position(|l| l.method == method && path.contains(&l.path))?;
    let l = &mut inner.lose_answers[at];
    let loss = l.loss;
    l.count -= 1;
    if l.count == 0 {
        inner.lose_answers.remove(at);
    }
    Some(loss)
}

fn take_injected_failure(inner: &mut Inner) -> Option<String> {
    let (n, code) = inner.fail_next_requests.as_mut()?;
    let code = code.clone();
    *n -= 1;
    if *n == 0 {
        inner.fail_next_requests = None;
    }
    Some(code)
}
