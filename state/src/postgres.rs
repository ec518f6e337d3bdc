//! The PostgreSQL backend, for teams: the state of each stack is a row (jsonb document, serial,
//! lineage), every write is a compare-and-swap on the serial inside a transaction and keeps the
//! previous version in a history table, and the lock is a session advisory lock keyed by the stack,
//! so it dies with its holder's connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_postgres::{Client, Config, GenericClient};

use crate::backend::{Backend, HeldLock, HistoryEntry, check_import, summarize};
use crate::{LockInfo, State, StateError};

pub use crate::error::STALE_WRITE;

/// How to reach the database, and where in it the states live.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub config: Config,
    /// A validated SQL identifier (letters, digits, `_`).
    pub schema: String,
    pub stack: String,
    /// How long a failing write is retried before it gives up.
    pub retry_for: Duration,
}

pub use crate::config::valid_schema;

/// The connection settings from a libpq URL, or else from the standard `PG*` variables.
pub fn connection_config(
    url: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, String> {
    let mut cfg = match url {
        Some(u) => u
            .parse::<Config>()
            .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?,
        None => {
            let mut c = Config::new();
            c.host(env("PGHOST").unwrap_or_else(|| "localhost".into()));
            if let Some(p) = env("PGPORT") {
                c.port(p.parse().map_err(|_| format!("invalid PGPORT `{p}`"))?);
            }
            c.user(
                env("PGUSER")
                    .or_else(|| env("USER"))
                    .unwrap_or_else(|| "postgres".into()),
            );
            if let Some(p) = env("PGPASSWORD") {
                c.password(p);
            }
            c.dbname(env("PGDATABASE").unwrap_or_else(|| "postgres".into()));
            match env("PGSSLMODE").as_deref() {
                None | Some("prefer") => c.ssl_mode(tokio_postgres::config::SslMode::Prefer),
                Some("disable") => c.ssl_mode(tokio_postgres::config::SslMode::Disable),
                Some("require") => c.ssl_mode(tokio_postgres::config::SslMode::Require),
                Some(other) => return Err(format!("unsupported PGSSLMODE `{other}`")),
            };
            c
        }
    };
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    cfg.application_name("kz");
    Ok(cfg)
}

/// A 31-bit key from text: advisory locks take two int4 keys (schema, stack), so each stack has
/// its own lock instead of one fixed key shared by every state.
fn key(text: &str) -> i32 {
    let d = Sha256::digest(text.as_bytes());
    i32::from_be_bytes([d[0] & 0x7f, d[1], d[2], d[3]])
}

fn db(e: tokio_postgres::Error) -> StateError {
    let detail = e.as_db_error().map(|d| d.message().to_string());
    StateError::Database(detail.unwrap_or_else(|| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(": ");
            s.push_str(&c.to_string());
            src = c.source();
        }
        s
    }))
}

fn who(info: &LockInfo) -> String {
    format!("{}@{} ({})", info.user, info.host, info.command)
}

pub struct PgBackend {
    settings: PgSettings,
    /// The connection used for reads and writes, reopened after a failure.
    client: Mutex<Option<Client>>,
}

impl PgBackend {
    pub fn new(settings: PgSettings) -> PgBackend {
        PgBackend {
            settings,
            client: Mutex::new(None),
        }
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.settings.schema)
    }

    fn keys(&self) -> (i32, i32) {
        (
            key(&format!("kz-state:{}", self.settings.schema)),
            key(&self.settings.stack),
        )
    }

    fn pseudo_path(&self) -> PathBuf {
        PathBuf::from(self.describe())
    }

    async fn connect(&self) -> Result<Client, StateError> {
        let tls = make_tls()?;
        let (client, conn) = self.settings.config.connect(tls).await.map_err(db)?;
        tokio::spawn(async move {
            // The connection ends when its client is dropped or the server goes away.
            let _ = conn.await;
        });
        self.ensure_schema(&client).await?;
        Ok(client)
    }

    /// Creates the schema and tables on first use. Serialized by a transaction-level advisory lock,
    /// because concurrent `CREATE TABLE IF NOT EXISTS` can still collide.
    async fn ensure_schema(&self, client: &Client) -> Result<(), StateError> {
        let s = &self.settings.schema;
        let sql = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock({k}, 0);
             CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.states (
                 stack text PRIMARY KEY, lineage text NOT NULL, serial bigint NOT NULL,
                 kz_version text NOT NULL, document jsonb NOT NULL,
                 written_by text NOT NULL, written_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {s}.history (
                 stack text NOT NULL, lineage text NOT NULL, serial bigint NOT NULL,
                 kz_version text NOT NULL, document jsonb NOT NULL, summary text NOT NULL,
                 written_by text NOT NULL, written_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (stack, lineage, serial));
             CREATE TABLE IF NOT EXISTS {s}.locks (
                 stack text PRIMARY KEY, holder jsonb NOT NULL, backend_pid integer NOT NULL,
                 since timestamptz NOT NULL DEFAULT now());
             COMMIT;",
            k = self.keys().0,
        );
        client.batch_execute(&sql).await.map_err(db)
    }

    /// The shared data connection, opened (or reopened) on demand.
    async fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.connect().await?);
        }
        let Some(client) = guard.as_mut() else {
            return Err(StateError::Database("no connection".into()));
        };
        let r = f(client).await;
        if matches!(r, Err(StateError::Database(_))) {
            // Start afresh next time: the connection may be what failed.
            *guard = None;
        }
        r
    }

    fn parse(&self, doc: serde_json::Value) -> Result<State, StateError> {
        let bytes = serde_json::to_vec(&doc).map_err(|e| StateError::Database(e.to_string()))?;
        crate::local::parse_state(&self.pseudo_path(), &bytes)
    }

    /// One attempt at a compare-and-swap write.
    async fn try_write(&self, state: &State, who: &str) -> Result<u64, StateError> {
        let stack = self.settings.stack.clone();
        let states = self.table("states");
        let history = self.table("history");
        self.with_client(async |client| {
            let tx = client.transaction().await.map_err(db)?;
            let row = tx
                .query_opt(
                    &format!("SELECT serial, lineage, document FROM {states} WHERE stack = $1 FOR UPDATE"),
                    &[&stack],
                )
                .await
                .map_err(db)?;
            let previous = match &row {
                Some(r) => {
                    let serial: i64 = r.get(0);
                    let lineage: String = r.get(1);
                    if serial != i64::try_from(state.serial).unwrap_or(-1) || lineage != state.lineage {
                        return Err(StateError::Conflict(format!(
                            "{STALE_WRITE}: the database holds serial {serial} (lineage {lineage}) but this kz read serial {} (lineage {}); another kz wrote it since. Run kz plan again",
                            state.serial, state.lineage
                        )));
                    }
                    Some(self.parse(r.get(2))?)
                }
                None if state.serial != 0 => {
                    return Err(StateError::Conflict(format!(
                        "{STALE_WRITE}: the database holds no state for stack `{stack}` but this kz read serial {}; was it deleted? Push a copy with kz state push",
                        state.serial
                    )));
                }
                None => None,
            };
            let mut next = state.clone();
            next.serial = state.serial + 1;
            let summary = summarize(previous.as_ref(), &next);
            let doc = serde_json::to_value(&next).map_err(|e| StateError::Database(e.to_string()))?;
            let serial = i64::try_from(next.serial).map_err(|_| StateError::Database("serial overflow".into()))?;
            upsert(&tx, &states, &history, &stack, &next, serial, &doc, &summary, who).await?;
            tx.commit().await.map_err(db)?;
            Ok(next.serial)
        })
        .await
    }
}

#[allow(clippy::too_many_arguments)]
async fn upsert(
    tx: &impl GenericClient,
    states: &str,
    history: &str,
    stack: &str,
    st: &State,
    serial: i64,
    doc: &serde_json::Value,
    summary: &str,
    who: &str,
) -> Result<(), StateError> {
    tx.execute(
        &format!(
            "INSERT INTO {states} (stack, lineage, serial, kz_version, document, written_by, written_at)
             VALUES ($1, $2, $3, $4, $5, $6, now())
             ON CONFLICT (stack) DO UPDATE SET lineage = $2, serial = $3, kz_version = $4,
                 document = $5, written_by = $6, written_at = now()"
        ),
        &[&stack, &st.lineage, &serial, &st.kz_version, doc, &who],
    )
    .await
    .map_err(db)?;
    tx.execute(
        &format!(
            "INSERT INTO {history} (stack, lineage, serial, kz_version, document, summary, written_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
        ),
        &[&stack, &st.lineage, &serial, &st.kz_version, doc, &summary, &who],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// TLS for `sslmode=prefer|require`, with the web PKI roots, on rustls (no OpenSSL).
fn make_tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StateError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StateError::Database(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// How long releasing the lock may take before kz leaves it to the end of the session.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// A held advisory lock: the session holding it lives as long as this value. Releasing it (or
/// dropping it) unlocks explicitly and removes the holder row before returning: closing the
/// session alone frees the lock only once the server notices, and a kz started right after
/// would find it still held.
struct PgLock {
    client: Option<Client>,
    keys: (i32, i32),
    /// The `locks` table, qualified.
    locks: String,
    stack: String,
}

impl PgLock {
    async fn unlock(&self, client: &Client) -> Result<(), StateError> {
        let (k1, k2) = self.keys;
        // The row first, while this session still holds the lock: a next holder's row is its own.
        client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE stack = $1 AND backend_pid = pg_backend_pid()",
                    self.locks
                ),
                &[&self.stack],
            )
            .await
            .map_err(db)?;
        client
            .query_one("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2])
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Unlocks now and closes the session. On a multi-threaded runtime (kz's) this waits for the
    /// server, under [`RELEASE_TIMEOUT`]; elsewhere it can only start the unlock and let it finish
    /// in the background.
    fn release_now(&mut self) -> Result<(), StateError> {
        let Some(client) = self.client.take() else {
            return Ok(());
        };
        if client.is_closed() {
            // The session is gone, and its lock with it.
            return Ok(());
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let lock = PgLock {
            client: None,
            keys: self.keys,
            locks: self.locks.clone(),
            stack: self.stack.clone(),
        };
        let work = async move {
            let r = tokio::time::timeout(RELEASE_TIMEOUT, lock.unlock(&client)).await;
            drop(client);
            match r {
                Ok(r) => r,
                Err(_) => Err(StateError::Database(format!(
                    "releasing the lock took more than {}s; it ends with the session",
                    RELEASE_TIMEOUT.as_secs()
                ))),
            }
        };
        if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| rt.block_on(work))
        } else {
            drop(rt.spawn(work));
            Ok(())
        }
    }
}

impl HeldLock for PgLock {
    fn release(mut self: Box<Self>) -> Result<(), StateError> {
        self.release_now()
    }

    fn is_lost(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // A failure leaves the lock to the end of the session, as before: nothing to report.
        let _ = self.release_now();
    }
}

#[async_trait]
impl Backend for PgBackend {
    fn describe(&self) -> String {
        format!(
            "postgres {}.states[{}]",
            self.settings.schema, self.settings.stack
        )
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn read(&self) -> Result<Option<State>, StateError> {
        let states = self.table("states");
        let stack = self.settings.stack.clone();
        let row = self
            .with_client(async |c| {
                c.query_opt(
                    &format!("SELECT document FROM {states} WHERE stack = $1"),
                    &[&stack],
                )
                .await
                .map_err(db)
            })
            .await?;
        row.map(|r| self.parse(r.get(0))).transpose()
    }

    async fn write(&self, state: &mut State, who_: &LockInfo) -> Result<(), StateError> {
        let who = who(who_);
        let deadline = Instant::now() + self.settings.retry_for;
        let mut delay = Duration::from_millis(200);
        loop {
            match self.try_write(state, &who).await {
                Ok(serial) => {
                    state.serial = serial;
                    return Ok(());
                }
                Err(e @ (StateError::Conflict(_) | StateError::Corrupt { .. })) => return Err(e),
                Err(e) if Instant::now() + delay > deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn import(&self, state: &State, who_: &LockInfo) -> Result<(), StateError> {
        let who = who(who_);
        let (states, history, stack) = (
            self.table("states"),
            self.table("history"),
            self.settings.stack.clone(),
        );
        let where_ = self.describe();
        self.with_client(async |client| {
            let tx = client.transaction().await.map_err(db)?;
            let row = tx
                .query_opt(
                    &format!("SELECT document FROM {states} WHERE stack = $1 FOR UPDATE"),
                    &[&stack],
                )
                .await
                .map_err(db)?;
            if let Some(r) = row {
                check_import(&self.parse(r.get(0))?, state, &where_)?;
            }
            let doc =
                serde_json::to_value(state).map_err(|e| StateError::Database(e.to_string()))?;
            let serial = i64::try_from(state.serial)
                .map_err(|_| StateError::Database("serial overflow".into()))?;
            upsert(
                &tx, &states, &history, &stack, state, serial, &doc, "imported", &who,
            )
            .await?;
            tx.commit().await.map_err(db)
        })
        .await
    }

    async fn lock(
        &self,
        info: &LockInfo,
        timeout: Duration,
    ) -> Result<Box<dyn HeldLock>, StateError> {
        let client = self.connect().await?;
        let (k1, k2) = self.keys();
        let started = Instant::now();
        loop {
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&k1, &k2])
                .await
                .map_err(db)?
                .get(0);
            if got {
                let holder =
                    serde_json::to_value(info).map_err(|e| StateError::Database(e.to_string()))?;
                client
                    .execute(
                        &format!(
                            "INSERT INTO {} (stack, holder, backend_pid, since) VALUES ($1, $2, pg_backend_pid(), now())
                             ON CONFLICT (stack) DO UPDATE SET holder = $2, backend_pid = pg_backend_pid(), since = now()",
                            self.table("locks")
                        ),
                        &[&self.settings.stack, &holder],
                    )
                    .await
                    .map_err(db)?;
                return Ok(Box::new(PgLock {
                    client: Some(client),
                    keys: (k1, k2),
                    locks: self.table("locks"),
                    stack: self.settings.stack.clone(),
                }));
            }
            if started.elapsed() >= timeout {
                let holder = self
                    .lock_holder()
                    .await
                    .ok()
                    .flatten()
                    .and_then(crate::Holder::info)
                    .map(Box::new);
                return Err(StateError::LockedRemote {
                    where_: format!(
                        "postgres {}.locks[{}]",
                        self.settings.schema, self.settings.stack
                    ),
                    holder,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn relock(
        &self,
        info: &LockInfo,
        state: &State,
    ) -> Result<Box<dyn HeldLock>, StateError> {
        // A database that restarts comes back within the retry window; one held by another kz
        // meanwhile does not give the lock back.
        let deadline = Instant::now() + self.settings.retry_for;
        let mut delay = Duration::from_millis(200);
        let lock = loop {
            match self.lock(info, Duration::ZERO).await {
                Ok(l) => break l,
                Err(StateError::Database(_)) if Instant::now() + delay <= deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        };
        match self.read().await? {
            Some(db) if db.lineage == state.lineage && db.serial == state.serial => Ok(lock),
            None if state.serial == 0 => Ok(lock),
            Some(db) => Err(StateError::Conflict(format!(
                "the state lock was lost and the database moved on meanwhile (serial {} there, {} here): another kz wrote it",
                db.serial, state.serial
            ))),
            None => Err(StateError::Conflict(
                "the state lock was lost and the state is gone from the database".into(),
            )),
        }
    }

    async fn lock_holder(&self) -> Result<Option<crate::Holder>, StateError> {
        let (k1, k2) = self.keys();
        let locks = self.table("locks");
        let stack = self.settings.stack.clone();
        self.with_client(async |c| {
            let holder_pid = c
                .query_opt(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                     AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2",
                    &[&i64::from(k1), &i64::from(k2)],
                )
                .await
                .map_err(db)?;
            let Some(pid) = holder_pid.map(|r| r.get::<_, i32>(0)) else {
                return Ok(None);
            };
            let row = c
                .query_opt(
                    &format!("SELECT holder FROM {locks} WHERE stack = $1 AND backend_pid = $2"),
                    &[&stack, &pid],
                )
                .await
                .map_err(db)?;
            Ok(Some(
                row.and_then(|r| serde_json::from_value::<LockInfo>(r.get(0)).ok())
                    .into(),
            ))
        })
        .await
    }

    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        let holder = self.lock_holder().await?.and_then(crate::Holder::info);
        let (k1, k2) = self.keys();
        let locks = self.table("locks");
        let stack = self.settings.stack.clone();
        self.with_client(async |c| {
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2",
                &[&i64::from(k1), &i64::from(k2)],
            )
            .await
            .map_err(db)?;
            c.execute(&format!("DELETE FROM {locks} WHERE stack = $1"), &[&stack])
                .await
                .map_err(db)?;
            Ok(())
        })
        .await?;
        Ok(holder)
    }

    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let history = self.table("history");
        let stack = self.settings.stack.clone();
        let rows = self
            .with_client(async |c| {
                c.query(
                    &format!(
                        "SELECT serial, lineage, kz_version, written_by, to_char(written_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), summary
                         FROM {history} WHERE stack = $1 ORDER BY written_at, serial"
                    ),
                    &[&stack],
                )
                .await
                .map_err(db)
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| HistoryEntry {
                serial: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                lineage: r.get(1),
                kz_version: r.get(2),
                who: r.get(3),
                at: r.get(4),
                summary: r.get(5),
            })
            .collect())
    }

    async fn version(&self, serial: u64) -> Result<Option<State>, StateError> {
        let history = self.table("history");
        let stack = self.settings.stack.clone();
        let serial =
            i64::try_from(serial).map_err(|_| StateError::Database("serial overflow".into()))?;
        let row = self
            .with_client(async |c| {
                c.query_opt(
                    &format!(
                        "SELECT document FROM {history} WHERE stack = $1 AND serial = $2 ORDER BY written_at DESC LIMIT 1"
                    ),
                    &[&stack, &serial],
                )
                .await
                .map_err(db)
            })
            .await?;
        row.map(|r| self.parse(r.get(0))).transpose()
    }
}
