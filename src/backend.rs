//! The state backend a stack asks for: chosen here, by the binary, so the engine stays free of
//! database clients.

use std::sync::Arc;

use kz_engine::model::{Stack, StateBackendKind};
use kz_state::postgres::{PgBackend, PgSettings};
use kz_state::{Backend, LocalBackend};

/// The backend a stack's `[state]` table asks for. Opening it connects to nothing yet.
pub fn open_backend(stack: &Stack, kind: &StateBackendKind) -> Result<Arc<dyn Backend>, String> {
    match kind {
        StateBackendKind::Local => Ok(Arc::new(LocalBackend::new(&stack.dir))),
        StateBackendKind::Lab => Ok(Arc::new(LocalBackend::in_dir(&kz_engine::lab::lab_dir(
            &stack.dir,
        )))),
        StateBackendKind::Postgres {
            url_env,
            schema,
            retry,
        } => {
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
