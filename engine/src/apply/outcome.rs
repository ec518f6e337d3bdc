//! How a job ends up in the report and the state: applied, failed, not attempted, interrupted.

use std::time::Duration;

use super::jobs::{Job, Unreadable};
use super::{Ctx, Event, Interrupt};
use crate::plan::Action;
use crate::provider::{Applied, ProviderError};
use crate::record::record_instance;

impl Ctx<'_> {
    /// Settles a job that must not run: its dependency failed, it could not be read, or an
    /// interrupt came. Returns what its dependents are blocked by, or `None` when it may run.
    pub(super) fn settle_early(
        &mut self,
        job: &Job,
        blocked_by: &Option<String>,
    ) -> Option<String> {
        if let Some(because) = blocked_by {
            self.not_attempted(
                &job.address,
                format!("not attempted because {because} failed"),
            );
            return Some(because.clone());
        }
        if let Some(Unreadable {
            message,
            host_unreachable,
        }) = job.unreadable.clone()
        {
            self.report
                .failed
                .push((job.address.clone(), message.clone()));
            if host_unreachable && let Some(h) = job.instance.read_host() {
                self.report.unreachable_hosts.insert(h.to_string());
            }
            let _ = self.events.send(Event::Unreadable {
                address: job.address.clone(),
                error: message,
            });
            return Some(job.address.clone());
        }
        if *self.cancel.borrow() != Interrupt::None {
            return Some(self.interrupted(job));
        }
        if self.report.lock_lost.is_some() {
            self.not_attempted(
                &job.address,
                "not attempted: the state lock was lost".into(),
            );
            return Some(format!("{} (state lock lost)", job.address));
        }
        None
    }

    /// Records a job an interrupt kept from starting; returns what its dependents are blocked by.
    pub(super) fn interrupted(&mut self, job: &Job) -> String {
        self.report.interrupted = true;
        self.not_attempted(&job.address, "not attempted: interrupted".into());
        format!("{} (interrupted)", job.address)
    }

    pub(super) fn not_attempted(&mut self, address: &str, because: String) {
        let _ = self.events.send(Event::NotAttempted {
            address: address.to_string(),
            because: because.clone(),
        });
        self.report
            .not_attempted
            .push((address.to_string(), because));
    }

    /// Records the outcome of a job in the report and, when it succeeded, in the state.
    pub(super) fn finish(
        &mut self,
        job: &Job,
        elapsed: Duration,
        result: Result<Applied, ProviderError>,
    ) {
        let mut note = None;
        let error = match result {
            Ok(applied) => {
                note.clone_from(&applied.note);
                if job.action == Action::Verify {
                    self.report.verified.push(job.address.clone());
                } else if job.action == Action::Delete {
                    self.state.resources.remove(&job.address);
                } else {
                    let prev = self.state.resources.get(&job.address).cloned();
                    let rec = record_instance(self.state, &job.instance, &applied, prev.as_ref());
                    self.state.resources.insert(job.address.clone(), rec);
                }
                if job.action != Action::Verify {
                    self.report.applied.push(job.address.clone());
                }
                None
            }
            Err(e) => {
                let host = e
                    .host
                    .clone()
                    .or_else(|| job.instance.host().map(String::from));
                if e.unreachable
                    && let Some(h) = &host
                {
                    self.report.unreachable_hosts.insert(h.clone());
                }
                let msg = match &host {
                    Some(h) => format!("{}: {e}", self.hosts.label(h)),
                    None => e.to_string(),
                };
                self.report.failed.push((job.address.clone(), msg.clone()));
                Some(msg)
            }
        };
        let _ = self.events.send(Event::Finished {
            address: job.address.clone(),
            action: job.action,
            elapsed,
            error,
            note,
        });
    }
}
