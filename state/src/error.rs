//! Errors of the state crate.

use std::path::PathBuf;

use crate::lock::LockInfo;

/// Everything that can go wrong while reading, writing or locking a state.
///
/// Each variant names the file involved, so that the message alone tells the
/// user where to look. The underlying I/O error of [`StateError::Io`] is
/// exposed through `source()` rather than repeated in the message, so print
/// the whole chain (e.g. anyhow's `{:#}`) to show it.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another process holds the state lock and did not release it in time.
    #[error("state is locked by {} (lock file {})", describe_holder(.holder.as_deref()), .path.display())]
    Locked {
        /// Path of the lock file.
        path: PathBuf,
        /// What the holder recorded in the lock file, if it could be read.
        /// Boxed to keep `StateError`, and every `Result` carrying it, small.
        holder: Option<Box<LockInfo>>,
    },

    /// An I/O operation on `path` failed; `op` says which one.
    #[error("failed to {op} {}", .path.display())]
    Io {
        /// Short description of the operation, e.g. "read state file".
        op: &'static str,
        /// The file or directory the operation was about.
        path: PathBuf,
        /// The error reported by the operating system.
        #[source]
        source: std::io::Error,
    },

    /// The state file exists but cannot be understood.
    #[error("invalid state file {}: {message}", .path.display())]
    Corrupt {
        /// Path of the state file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The state database holds a newer serial or another lineage than the writer expected.
    #[error("{0}")]
    Conflict(String),

    /// The state database could not be reached or answered with an error.
    #[error("state database: {0}")]
    Database(String),

    /// The state database lock is held by another kz.
    #[error("state is locked by {} ({where_})", describe_holder(.holder.as_deref()))]
    LockedRemote {
        /// Where the lock lives, e.g. `postgres kz.locks[keybuzz]`.
        where_: String,
        holder: Option<Box<LockInfo>>,
    },

    /// The backend cannot do this.
    #[error("{0}")]
    Unsupported(String),
}

impl StateError {
    /// Builds a closure that wraps an `io::Error` with the operation and path,
    /// for use with `map_err`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.into();
        move |source| StateError::Io { op, path, source }
    }
}

/// Names the holder of a lock, falling back to a vague description when the
/// holder has not (yet) written its information into the lock file.
fn describe_holder(holder: Option<&LockInfo>) -> String {
    match holder {
        Some(info) => info.to_string(),
        None => "another process".to_owned(),
    }
}

/// How the message of a write refused by the compare-and-swap starts (another kz wrote the state
/// since this one read it): the database was there all along, unlike a write that failed.
pub const STALE_WRITE: &str = "stale state";
