//! The HTTP side: one thread with its own tokio runtime serving HTTP/1.1 on 127.0.0.1, and what
//! happens to every request before and after its operation runs: rate limiting, injected
//! faults, authentication, the response headers, the request log.

use std::convert::Infallible;
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
                        async move { Ok::<_, Infallible>(respond(&shared, req).await) }
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

async fn respond(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
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
    inner.log.push(RequestLog {
        method,
        path,
        query,
        status,
        authorized,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
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
    let payload = match json {
        Some(v) => {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    builder
        .body(Full::new(payload))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
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
