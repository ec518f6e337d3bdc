//! The state backend a stack asks for: chosen here, by the binary, so the engine stays free of
//! database clients.

use std::sync::Arc;

use kz_engine::model::Stack;
use kz_state::postgres::{PgBackend, PgSettings};
use kz_state::{Backend, BackendConfig, LocalBackend};

/// Which state a run reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChoice {
    /// The backend `[state]` names (or one a command names, for `kz state migrate`).
    Configured(BackendConfig),
    /// `DIR/.kz/lab/state.json`: the lab's own state (`--lab`), never mixed with the real one.
    Lab,
}

/// Opens a backend. Opening connects to nothing yet.
pub fn open_backend(stack: &Stack, choice: &StateChoice) -> Result<Arc<dyn Backend>, String> {
    match choice {
        StateChoice::Lab => Ok(Arc::new(LocalBackend::in_dir(&kz_engine::lab::lab_dir(
            &stack.dir,
        )))),
        StateChoice::Configured(BackendConfig::Local) => {
            Ok(Arc::new(LocalBackend::new(&stack.dir)))
        }
        StateChoice::Configured(BackendConfig::Postgres {
            url_env,
            schema,
            retry,
        }) => {
            let url = match url_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    format!("the state backend needs ${var} (a PostgreSQL URL such as postgresql://kz@db:5432/kz), which is not set")
                })?),
                None => None,
            };
            let config =
                kz_state::postgres::connection_config(url.as_deref(), &|k| std::env::var(k).ok())?;
            Ok(Arc::new(PgBackend::new(PgSettings {
                config,
                schema: schema.clone(),
                stack: stack.name.clone(),
                retry_for: *retry,
            })))
        }
    }
}
