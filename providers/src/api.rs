//! The transport of the API pseudo-host (`hcloud`): its resources are reached by their provider
//! through an API client, so there is nothing to run a command on.

use std::time::Duration;

use async_trait::async_trait;
use kz_engine::provider::{CommandOutput, CommandSpec, Transport, TransportError};

#[derive(Debug)]
pub struct ApiTransport {
    host: String,
}

impl ApiTransport {
    pub fn new(host: &str) -> ApiTransport {
        ApiTransport { host: host.into() }
    }
}

#[async_trait]
impl Transport for ApiTransport {
    fn host(&self) -> &str {
        &self.host
    }

    /// API calls of several resources may run at once; the provider's client paces them.
    fn max_sessions(&self) -> usize {
        4
    }

    fn command_timeout(&self) -> Duration {
        Duration::from_secs(600)
    }

    async fn run(&self, _cmd: CommandSpec) -> Result<CommandOutput, TransportError> {
        Err(TransportError::Unsupported(format!(
            "{} is an API, not a host: it runs no commands",
            self.host
        )))
    }
}
