//! What a provider changes an instance through: [`ApplyCtx`]. It hands out the transport of any
//! host of the stack behind that host's session limit, carries progress to the output layer, and
//! tells whether the user asked to abort.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::{Event, Interrupt};
use crate::model::{Host, Instance};
use crate::provider::{ProviderError, Transport, TransportFactory};

/// A host's transport and the semaphore of its sessions.
type OpenHost = (Arc<dyn Transport>, Arc<Semaphore>);

/// The transports of one run, made once per host, each with its session limit.
pub struct HostPool {
    hosts: BTreeMap<String, Host>,
    factory: Arc<dyn TransportFactory>,
    open: Mutex<HashMap<String, OpenHost>>,
}

impl HostPool {
    pub fn new(hosts: BTreeMap<String, Host>, factory: Arc<dyn TransportFactory>) -> HostPool {
        HostPool {
            hosts,
            factory,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// `name (address)`, how messages show a host.
    pub fn label(&self, host: &str) -> String {
        self.hosts.get(host).map_or_else(
            || host.to_string(),
            |h| format!("{} ({})", h.name, h.address),
        )
    }

    /// The transport of `host` and its session limit, made on first use.
    pub fn get(&self, host: &str) -> Result<OpenHost, ProviderError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| ProviderError::new("transport", "the transport table is poisoned"))?;
        if let Some(t) = open.get(host) {
            return Ok(t.clone());
        }
        let h = self.hosts.get(host).ok_or_else(|| {
            ProviderError::new(
                "transport",
                format!("host `{host}` is not in the inventory"),
            )
            .on(host)
        })?;
        let t = self
            .factory
            .transport(h)
            .map_err(|e| ProviderError::transport("connect", e).on(host))?;
        let sem = Arc::new(Semaphore::new(t.max_sessions().max(1)));
        open.insert(host.to_string(), (Arc::clone(&t), Arc::clone(&sem)));
        Ok((t, sem))
    }

    /// Every transport opened, to wait for their clean-ups at the end of a run.
    pub fn opened(&self) -> Vec<Arc<dyn Transport>> {
        self.open
            .lock()
            .map(|m| m.values().map(|(t, _)| Arc::clone(t)).collect())
            .unwrap_or_default()
    }
}

/// A host's transport, held together with one of its sessions: dropping it frees the session.
pub struct HostSession {
    transport: Arc<dyn Transport>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Deref for HostSession {
    type Target = dyn Transport;
    fn deref(&self) -> &Self::Target {
        self.transport.as_ref()
    }
}

/// One change of one instance, as its provider sees it.
pub struct ApplyCtx {
    instance: Instance,
    changed: Vec<String>,
    hosts: Arc<HostPool>,
    /// The host whose session the engine already holds for this change (an instance on one
    /// host): handing it out again must not wait for a second session.
    held: Option<String>,
    events: mpsc::UnboundedSender<Event>,
    interrupt: watch::Receiver<Interrupt>,
}

impl ApplyCtx {
    pub(crate) fn new(
        instance: Instance,
        changed: Vec<String>,
        hosts: Arc<HostPool>,
        held: Option<String>,
        events: mpsc::UnboundedSender<Event>,
        interrupt: watch::Receiver<Interrupt>,
    ) -> ApplyCtx {
        ApplyCtx {
            instance,
            changed,
            hosts,
            held,
            events,
            interrupt,
        }
    }

    /// A context reaching no host, whose progress goes nowhere: for providers behind an API,
    /// driven by tests or tools outside an apply.
    pub fn detached(instance: Instance, changed: Vec<String>) -> ApplyCtx {
        struct NoHosts;
        impl TransportFactory for NoHosts {
            fn transport(
                &self,
                host: &Host,
            ) -> Result<Arc<dyn Transport>, crate::provider::TransportError> {
                Err(crate::provider::TransportError::Unsupported(format!(
                    "no transport to {} here",
                    host.name
                )))
            }
        }
        let (events, _) = mpsc::unbounded_channel();
        let (_, interrupt) = watch::channel(Interrupt::None);
        ApplyCtx::new(
            instance,
            changed,
            Arc::new(HostPool::new(BTreeMap::new(), Arc::new(NoHosts))),
            None,
            events,
            interrupt,
        )
    }

    /// The same change, acting on another instance (the old one a replacement removes).
    pub(crate) fn with_instance(&self, instance: Instance) -> ApplyCtx {
        ApplyCtx {
            instance,
            changed: self.changed.clone(),
            hosts: Arc::clone(&self.hosts),
            held: self.held.clone(),
            events: self.events.clone(),
            interrupt: self.interrupt.clone(),
        }
    }

    /// The instance to change: from the stack, or from the state when it is being removed.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The attributes that differ (for an update).
    pub fn changed(&self) -> &[String] {
        &self.changed
    }

    /// The transport of `host`, once one of its sessions is free. Errors name the host.
    pub async fn transport(&self, host: &str) -> Result<HostSession, ProviderError> {
        let (transport, sessions) = self.hosts.get(host)?;
        if self.held.as_deref() == Some(host) {
            return Ok(HostSession {
                transport,
                _permit: None,
            });
        }
        let permit = sessions.acquire_owned().await.map_err(|_| {
            ProviderError::new("transport", "the session limit was closed").on(host)
        })?;
        Ok(HostSession {
            transport,
            _permit: Some(permit),
        })
    }

    /// The transport of the instance's own host.
    pub async fn own_transport(&self) -> Result<HostSession, ProviderError> {
        let host = self.instance.host().ok_or_else(|| {
            ProviderError::new(
                "transport",
                format!("{} is on no single host", self.instance.address),
            )
        })?;
        self.transport(host).await
    }

    /// `name (address)` of a host, for messages.
    pub fn host_label(&self, host: &str) -> String {
        self.hosts.label(host)
    }

    /// Tells the user how a long change is going ("waiting for the container to be healthy").
    pub fn progress(&self, message: impl Into<String>) {
        let _ = self.events.send(Event::Progress {
            address: self.instance.address.to_string(),
            message: message.into(),
        });
    }

    /// Whether the user asked to abort what runs (a second interrupt): a long wait should stop.
    pub fn aborted(&self) -> bool {
        *self.interrupt.borrow() == Interrupt::Abort
    }

    /// Whether any interrupt arrived: what only waits and changes nothing (a health check's
    /// retries) stops at the first one, since there is no change to finish.
    pub fn interrupted(&self) -> bool {
        *self.interrupt.borrow() != Interrupt::None
    }

    /// Sleeps for `d`, or less when an interrupt arrives meanwhile.
    pub async fn sleep_unless_interrupted(&self, d: std::time::Duration) {
        let mut rx = self.interrupt.clone();
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        tokio::select! {
            () = &mut sleep => {}
            changed = rx.changed() => {
                // With no sender left no interrupt can come: sleep the whole interval.
                if changed.is_err() {
                    sleep.await;
                }
            }
        }
    }
}
