//! The interface every state backend offers, so that commands work the same on a local file and
//! on a team database.

use std::time::Duration;

use async_trait::async_trait;

use crate::{LockInfo, State, StateError};

/// One stored version of a state, for `kz state history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub serial: u64,
    pub lineage: String,
    pub kz_version: String,
    /// Who wrote it: user@host and the command.
    pub who: String,
    pub at: String,
    /// Resources added, changed and removed compared with the version before.
    pub summary: String,
}

/// A held state lock; dropping it releases the lock.
pub trait HeldLock: Send + Sync {
    /// Releases the lock now, reporting a failure to clear the holder record.
    fn release(self: Box<Self>) -> Result<(), StateError>;

    /// Whether the lock was lost behind the holder's back (its database session ended): others
    /// may hold it now.
    fn is_lost(&self) -> bool {
        false
    }
}

impl HeldLock for crate::StateLock {
    fn release(self: Box<Self>) -> Result<(), StateError> {
        crate::StateLock::release(*self)
    }
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// Where the state lives, for messages: a file path or `postgres schema.states[stack]`.
    fn describe(&self) -> String;

    /// Whether writes go over a network (and may need the rescue file when it fails).
    fn is_remote(&self) -> bool {
        false
    }

    async fn read(&self) -> Result<Option<State>, StateError>;

    /// Writes `state` as the next serial. Refused when the stored state moved on since `state`
    /// was read (another writer): a stale writer never overwrites.
    async fn write(&self, state: &mut State, who: &LockInfo) -> Result<(), StateError>;

    /// Stores `state` exactly as it is (same lineage and serial), for migrations. Refused when the
    /// backend already holds a state of another lineage or a later serial.
    async fn import(&self, state: &State, who: &LockInfo) -> Result<(), StateError>;

    async fn lock(
        &self,
        info: &LockInfo,
        timeout: Duration,
    ) -> Result<Box<dyn HeldLock>, StateError>;

    /// Who holds the lock; `None` when it is free.
    async fn lock_holder(&self) -> Result<Option<crate::Holder>, StateError>;

    /// Breaks a lock whose holder cannot release it; returns the holder's record.
    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError>;

    /// Takes the lock again after it was lost, only if nobody wrote since `state` was saved;
    /// otherwise another kz may be at work and this one must stop.
    async fn relock(
        &self,
        info: &LockInfo,
        state: &State,
    ) -> Result<Box<dyn HeldLock>, StateError> {
        let _ = (info, state);
        Err(StateError::Unsupported(format!(
            "{} cannot lose its lock",
            self.describe()
        )))
    }

    /// Every stored version, oldest first.
    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        Err(StateError::Unsupported(format!(
            "{} keeps no history (only state.json.backup); the postgres backend does",
            self.describe()
        )))
    }

    /// One stored version.
    async fn version(&self, serial: u64) -> Result<Option<State>, StateError> {
        let _ = serial;
        Err(StateError::Unsupported(format!(
            "{} keeps no history",
            self.describe()
        )))
    }
}

#[async_trait]
impl Backend for crate::LocalBackend {
    fn describe(&self) -> String {
        self.state_path().display().to_string()
    }

    async fn read(&self) -> Result<Option<State>, StateError> {
        crate::LocalBackend::read(self)
    }

    async fn write(&self, state: &mut State, _who: &LockInfo) -> Result<(), StateError> {
        crate::LocalBackend::write(self, state)
    }

    async fn import(&self, state: &State, _who: &LockInfo) -> Result<(), StateError> {
        if let Some(existing) = crate::LocalBackend::read(self)? {
            check_import(&existing, state, &self.describe())?;
        }
        // The local backend increments on write: hand it the serial before.
        let mut copy = state.clone();
        copy.serial = state.serial.saturating_sub(1);
        crate::LocalBackend::write(self, &mut copy)
    }

    async fn lock(
        &self,
        info: &LockInfo,
        timeout: Duration,
    ) -> Result<Box<dyn HeldLock>, StateError> {
        Ok(Box::new(crate::LocalBackend::lock(self, info, timeout)?))
    }

    async fn lock_holder(&self) -> Result<Option<crate::Holder>, StateError> {
        crate::LocalBackend::lock_holder(self)
    }

    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        crate::LocalBackend::force_unlock(self)
    }
}

/// An import may only fill an empty backend or catch up a state of the same lineage.
pub(crate) fn check_import(
    existing: &State,
    incoming: &State,
    where_: &str,
) -> Result<(), StateError> {
    if existing.lineage != incoming.lineage {
        return Err(StateError::Conflict(format!(
            "{where_} already holds another state (lineage {}, serial {}); refusing to overwrite it",
            existing.lineage, existing.serial
        )));
    }
    if existing.serial > incoming.serial {
        return Err(StateError::Conflict(format!(
            "{where_} holds a later serial ({}) than the one being copied ({})",
            existing.serial, incoming.serial
        )));
    }
    Ok(())
}

/// What changed between two versions, in a few words: `+2 ~1 -0`.
pub fn summarize(before: Option<&State>, after: &State) -> String {
    let empty = std::collections::BTreeMap::new();
    let old = before.map_or(&empty, |s| &s.resources);
    let added = after
        .resources
        .keys()
        .filter(|k| !old.contains_key(*k))
        .count();
    let removed = old
        .keys()
        .filter(|k| !after.resources.contains_key(*k))
        .count();
    let changed = after
        .resources
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .count();
    format!("+{added} ~{changed} -{removed}")
}
