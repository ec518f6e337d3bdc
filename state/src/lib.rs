//! State model and local-file backend of kz.
//!
//! The state records, per resource instance, the attributes kz last applied,
//! so that a plan can be computed against what kz believes it manages. It
//! lives in `STACK_DIR/.kz/state.json`, written atomically by
//! [`LocalBackend::write`] and guarded by an flock(2)-based lock taken with
//! [`LocalBackend::lock`].

mod backend;
pub mod config;
mod error;
mod fsutil;
mod local;
mod lock;
mod model;
#[cfg(feature = "postgres")]
pub mod postgres;
// The only module allowed to use `unsafe`: thin wrappers around libc calls
// that the standard library does not expose with the semantics we need.
#[allow(unsafe_code)]
mod sys;

pub use backend::{Backend, HeldLock, HistoryEntry, summarize};
pub use config::BackendConfig;
pub use error::{STALE_WRITE, StateError};
pub use fsutil::ensure_kz_dir;
pub use fsutil::write_file_atomically;
pub use local::LocalBackend;
pub use lock::{Holder, LockInfo, StateLock};
pub use model::{AttrState, ModuleState, ResourceState, State, now_rfc3339};

/// Version of the on-disk state format this crate reads and writes.
///
/// A state file with any other `format_version` is rejected as
/// [`StateError::Corrupt`] rather than guessed at, because misreading a state
/// could make kz destroy or recreate resources.
pub const FORMAT_VERSION: u32 = 1;
