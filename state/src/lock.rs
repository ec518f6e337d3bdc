//! The state lock: an flock(2) lock on `.kz/state.lock`.
//!
//! flock is used because the kernel releases it when its file is closed,
//! including when the holder dies (even by `kill -9`), so a lock cannot stay
//! stuck on a machine. The holder also writes a [`LockInfo`] into the file so
//! that a waiting process can say who it is waiting for. When the holder
//! cannot release it (e.g. it runs on another machine over a shared file
//! system), `force_unlock` unlinks the file, and every locker checks after
//! locking that the file it locked is still the one at the path.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::StateError;
use crate::fsutil::FILE_MODE;
use crate::model::now_rfc3339;
use crate::sys::{self, LockKind};

/// Interval between two attempts to take a busy lock.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Who holds a lock, as recorded in the lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    /// Process id of the holder.
    pub pid: u32,
    /// User running the holder: `$USER`, or `uid N` when unset.
    pub user: String,
    /// Host name of the machine running the holder.
    pub host: String,
    /// Command line of the holder, e.g. `kz apply stacks/prod`.
    pub command: String,
    /// RFC 3339 UTC time at which the holder took the lock.
    pub started: String,
}

impl LockInfo {
    /// Describes this process, running `command`, as of now.
    pub fn current(command: &str) -> LockInfo {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("uid {}", sys::uid()));
        LockInfo {
            pid: std::process::id(),
            user,
            host: sys::hostname().unwrap_or_else(|| "unknown-host".to_owned()),
            command: command.to_owned(),
            started: now_rfc3339(),
        }
    }
}

/// Who holds a state lock that is held.
#[derive(Debug, Clone, PartialEq)]
pub enum Holder {
    /// The holder recorded who it is.
    Recorded(LockInfo),
    /// Held, but the holder left no readable record (it may be between locking and writing it).
    Unrecorded,
}

impl Holder {
    /// The holder's record, if it left one.
    pub fn info(self) -> Option<LockInfo> {
        match self {
            Holder::Recorded(i) => Some(i),
            Holder::Unrecorded => None,
        }
    }
}

impl From<Option<LockInfo>> for Holder {
    fn from(info: Option<LockInfo>) -> Holder {
        info.map_or(Holder::Unrecorded, Holder::Recorded)
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Recorded(i) => i.fmt(f),
            Holder::Unrecorded => f.write_str("a process that left no record"),
        }
    }
}

impl fmt::Display for LockInfo {
    /// E.g. ``pid 4242 (root@install-01, `kz apply stacks/prod`, since 2026-11-27T15:00:00Z)``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} ({}@{}, `{}`, since {})",
            self.pid, self.user, self.host, self.command, self.started
        )
    }
}

/// A held state lock.
///
/// Dropping it empties the lock file (so nobody is named as holder any more)
/// and closes it, which releases the flock.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the lock now, reporting a failure to clear the holder
    /// information (the flock itself is released regardless).
    pub fn release(self) -> Result<(), StateError> {
        let result = self
            .file
            .set_len(0)
            .map_err(StateError::io("clear lock file", &self.path));
        // Drop truncates again, which is harmless, then closes the file.
        drop(self);
        result
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Truncate through the descriptor while still holding the flock: the
        // next holder has not written its information yet, and after a
        // force-unlock this only touches the orphaned inode, never the new
        // holder's file. A failure here only leaves stale information behind,
        // and drop has no way to report it.
        let _ = self.file.set_len(0);
    }
}

/// Takes the exclusive lock on `path`, polling every [`POLL_INTERVAL`] until
/// `timeout` has passed (a zero timeout tries once). The directory of `path`
/// must exist.
///
/// The file is reopened at every attempt rather than kept open across polls:
/// after a force-unlock, a waiter must move to the new file instead of waiting
/// on the orphaned one, whose stuck holder may never release it.
pub(crate) fn acquire(
    path: &Path,
    info: &LockInfo,
    timeout: Duration,
) -> Result<StateLock, StateError> {
    let deadline = Instant::now() + timeout;
    loop {
        let file = open_lock_file(path)?;
        match try_lock_file(file, path, info)? {
            Attempt::Acquired(lock) => return Ok(lock),
            // force_unlock removed the file between our open and our flock:
            // that lock protects nothing. It was dropped with the file; try
            // again at once on whatever is at the path now.
            Attempt::Stale => continue,
            Attempt::Busy => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(StateError::Locked {
                path: path.to_owned(),
                holder: read_info(path).map(Box::new),
            });
        }
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Outcome of one attempt to lock an opened lock file.
#[derive(Debug)]
enum Attempt {
    /// Locked, and the file is the one at the path.
    Acquired(StateLock),
    /// Another process holds the lock.
    Busy,
    /// Locked, but the file is no longer the one at the path.
    Stale,
}

/// Tries once to lock `file`, opened from `path`, and records `info` in it
/// when that succeeds and the file is still the one at `path`.
fn try_lock_file(file: File, path: &Path, info: &LockInfo) -> Result<Attempt, StateError> {
    if !sys::try_flock(&file, LockKind::Exclusive).map_err(StateError::io("lock", path))? {
        return Ok(Attempt::Busy);
    }
    if !is_current_file(&file, path)? {
        return Ok(Attempt::Stale);
    }
    let lock = StateLock {
        file,
        path: path.to_owned(),
    };
    write_info(&lock, info)?;
    Ok(Attempt::Acquired(lock))
}

/// Reports who holds the lock on `path`: `None` when nobody does.
///
/// The probe takes a shared lock, which conflicts with the holder's exclusive
/// lock but not with other probes, so concurrent probes do not report each
/// other as holders. A probe can still make a concurrent `lock` attempt fail
/// once; lockers poll, so that only costs them one interval.
pub(crate) fn holder(path: &Path) -> Result<Option<Holder>, StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::io("open lock file", path)(e)),
    };
    let free = sys::try_flock(&file, LockKind::Shared).map_err(StateError::io("lock", path))?;
    // Closing the file releases the probe's shared lock, if it was taken.
    drop(file);
    Ok(if free {
        None
    } else {
        Some(read_info(path).into())
    })
}

/// Removes the lock file so that the next locker creates and locks a fresh
/// one, and returns the information its holder recorded, if any.
pub(crate) fn force_unlock(path: &Path) -> Result<Option<LockInfo>, StateError> {
    let info = read_info(path);
    match fs::remove_file(path) {
        Ok(()) => Ok(info),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io("remove lock file", path)(e)),
    }
}

/// Opens the lock file for writing, creating it (mode 0600) if needed, without
/// truncating it: it may hold the current holder's information.
fn open_lock_file(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(StateError::io("open lock file", path))
}

/// Whether `file` is still the file found at `path` (same device and inode).
fn is_current_file(file: &File, path: &Path) -> Result<bool, StateError> {
    let ours = file.metadata().map_err(StateError::io("stat", path))?;
    match fs::metadata(path) {
        Ok(current) => Ok(current.dev() == ours.dev() && current.ino() == ours.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StateError::io("stat", path)(e)),
    }
}

/// Replaces the content of a held lock file with `info` as JSON.
fn write_info(lock: &StateLock, info: &LockInfo) -> Result<(), StateError> {
    let json = serde_json::to_vec(info)
        .map_err(|e| StateError::io("encode lock information for", &lock.path)(e.into()))?;
    lock.file
        .set_len(0)
        .and_then(|()| lock.file.write_all_at(&json, 0))
        .map_err(StateError::io("write lock information to", &lock.path))
}

/// Reads the holder information from the lock file at `path`, if there is
/// any and it parses: it is only informative, so any failure yields `None`.
fn read_info(path: &Path) -> Option<LockInfo> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_holder() {
        let info = LockInfo {
            pid: 4242,
            user: "root".into(),
            host: "install-01".into(),
            command: "kz apply stacks/prod".into(),
            started: "2026-11-27T15:00:00Z".into(),
        };
        assert_eq!(
            info.to_string(),
            "pid 4242 (root@install-01, `kz apply stacks/prod`, since 2026-11-27T15:00:00Z)"
        );
    }

    #[test]
    fn a_lock_on_a_removed_file_is_stale() {
        let tmp = tempfile::tempdir().expect("create temp dir");
        let path = tmp.path().join("state.lock");
        // A waiter opens the lock file, then force_unlock removes it before
        // the waiter gets the flock: the flock must not count.
        let opened = open_lock_file(&path).expect("open lock file");
        force_unlock(&path).expect("force unlock");
        let info = LockInfo::current("kz apply");
        let attempt = try_lock_file(opened, &path, &info).expect("try lock");
        assert!(matches!(attempt, Attempt::Stale), "{attempt:?}");
        // The same happens when another file replaced the removed one.
        let opened = open_lock_file(&path).expect("open lock file");
        force_unlock(&path).expect("force unlock");
        let _new = acquire(&path, &info, Duration::ZERO).expect("lock the new file");
        let attempt = try_lock_file(opened, &path, &info).expect("try lock");
        assert!(matches!(attempt, Attempt::Stale), "{attempt:?}");
    }

    #[test]
    fn current_describes_this_process() {
        let info = LockInfo::current("kz plan");
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.command, "kz plan");
        assert!(!info.user.is_empty());
        assert!(!info.host.is_empty());
        assert!(humantime::parse_rfc3339(&info.started).is_ok());
    }
}
