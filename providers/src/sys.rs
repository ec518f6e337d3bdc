//! The one system call the safe standard library lacks here: signalling a process group.

/// Sends SIGKILL to every process of the group `pgid`, so a timed-out command leaves no child behind.
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: kill(2) has no memory effects; a stale group id only yields ESRCH.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}
