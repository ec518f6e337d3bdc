//! Where a stack's state lives, as its `[state]` table says. The engine reads the table (and
//! points errors at its keys); what the keys mean is decided here, next to the backends.

use std::time::Duration;

/// The backend a stack asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackendConfig {
    /// `DIR/.kz/state.json`.
    #[default]
    Local,
    /// A PostgreSQL database shared by the team.
    Postgres {
        /// The variable holding a libpq URL; `None` means the standard `PG*` variables.
        url_env: Option<String>,
        schema: String,
        /// How long a failing state write is retried before the rescue file is written.
        retry: Duration,
    },
}

/// The keys of a `[state]` table, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateTable<'a> {
    pub backend: Option<&'a str>,
    pub url_env: Option<&'a str>,
    pub schema: Option<&'a str>,
    pub retry: Option<Duration>,
}

/// A key of `[state]` a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKey {
    Backend,
    UrlEnv,
    Schema,
    Retry,
}

/// The default time a failing write to a database is retried.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(30);

/// The backend a `[state]` table asks for, and the problems found, each with its key.
pub fn parse(t: &StateTable<'_>) -> (BackendConfig, Vec<(StateKey, String)>) {
    let mut problems = Vec::new();
    let postgres = match t.backend {
        None | Some("local") => false,
        Some("postgres") => true,
        Some(other) => {
            problems.push((
                StateKey::Backend,
                format!("unknown state backend `{other}`: expected \"local\" or \"postgres\""),
            ));
            false
        }
    };
    if !postgres {
        for (key, name, given) in [
            (StateKey::UrlEnv, "url_env", t.url_env.is_some()),
            (StateKey::Schema, "schema", t.schema.is_some()),
            (StateKey::Retry, "retry", t.retry.is_some()),
        ] {
            if given {
                problems.push((key, format!("`{name}` is for backend = \"postgres\"")));
            }
        }
        return (BackendConfig::Local, problems);
    }
    let url_env = t.url_env.and_then(|name| {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            problems.push((
                StateKey::UrlEnv,
                format!(
                    "invalid url_env `{name}`: the name of an environment variable, e.g. \"KZ_STATE_PG\""
                ),
            ));
        }
        ok.then(|| name.to_string())
    });
    let schema = match t.schema {
        None => "kz".to_string(),
        Some(s) if valid_schema(s) => s.to_string(),
        Some(s) => {
            problems.push((
                StateKey::Schema,
                format!(
                    "invalid schema `{s}`: lower-case letters, digits and `_`, starting with a letter"
                ),
            ));
            "kz".to_string()
        }
    };
    let config = BackendConfig::Postgres {
        url_env,
        schema,
        retry: t.retry.unwrap_or(DEFAULT_RETRY),
    };
    (config, problems)
}

/// A PostgreSQL schema name kz accepts: lower-case letters, digits and `_`, starting with a
/// letter or `_`, at most 63 bytes, so it never needs quoting.
pub fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}
