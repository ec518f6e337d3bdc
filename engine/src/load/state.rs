//! `[state]`: read here, pointing errors at its keys; what it means is kz-state's `config`.

use std::sync::Arc;

use toml::Spanned;

use super::{Loader, loc, raw};
use crate::diag::{Diagnostic, SourceFile};
use crate::model::StateConfig;
use crate::units::duration;

impl Loader<'_> {
    pub(super) fn state_config(
        &mut self,
        src: &Arc<SourceFile>,
        raw: Option<&raw::StateTable>,
    ) -> StateConfig {
        let Some(raw) = raw else {
            return StateConfig {
                backend: kz_state::BackendConfig::default(),
            };
        };
        let retry = raw
            .retry
            .as_ref()
            .and_then(|r| match duration(r.get_ref()) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.error(Diagnostic::at(loc(src, r), e.to_string()));
                    None
                }
            });
        fn text(v: &Option<Spanned<String>>) -> Option<&str> {
            v.as_ref().map(|v| v.get_ref().as_str())
        }
        let (backend, problems) = kz_state::config::parse(&kz_state::config::StateTable {
            backend: text(&raw.backend),
            url_env: text(&raw.url_env),
            schema: text(&raw.schema),
            retry,
        });
        for (key, message) in problems {
            let at = match key {
                kz_state::config::StateKey::Backend => &raw.backend,
                kz_state::config::StateKey::UrlEnv => &raw.url_env,
                kz_state::config::StateKey::Schema => &raw.schema,
                kz_state::config::StateKey::Retry => &raw.retry,
            };
            let d = match at {
                Some(v) => Diagnostic::at(loc(src, v), message),
                None => Diagnostic::in_file(&src.display, message),
            };
            self.error(d);
        }
        StateConfig { backend }
    }
}
