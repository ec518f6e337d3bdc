//! Thin safe wrappers around the few libc calls this crate needs.
//!
//! The lock relies on flock(2) semantics specifically (a lock belongs to an
//! open file description, is released when it is closed, and is dropped by
//! the kernel when the process dies), so it calls flock directly instead of
//! going through an abstraction whose mapping could change.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Kind of flock(2) lock to request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LockKind {
    Exclusive,
    Shared,
}

/// Tries once, without blocking, to take an flock(2) lock on `file`.
///
/// Returns `Ok(true)` when the lock was taken and `Ok(false)` when another
/// open file description holds a conflicting lock.
pub(crate) fn try_flock(file: &File, kind: LockKind) -> io::Result<bool> {
    let op = match kind {
        LockKind::Exclusive => libc::LOCK_EX,
        LockKind::Shared => libc::LOCK_SH,
    } | libc::LOCK_NB;
    loop {
        // SAFETY: the descriptor is owned by `file`, which outlives the call;
        // flock takes no pointers.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Real user id of this process.
pub(crate) fn uid() -> u32 {
    // SAFETY: getuid takes no arguments and cannot fail.
    unsafe { libc::getuid() }
}

/// Host name of this machine, or `None` if it cannot be read.
pub(crate) fn hostname() -> Option<String> {
    // HOST_NAME_MAX is 64 on Linux; leave ample room for other systems.
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which is writable and
    // lives across the call; gethostname writes at most `len` bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<libc::c_char>(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves termination unspecified on truncation, so never read past
    // the buffer.
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    (!name.is_empty()).then_some(name)
}
