//! File-system helpers for durable, atomic writes inside the `.kz` directory.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::StateError;

/// Mode of the `.kz` directory: the state may hold secrets' hashes and
/// infrastructure details that other users have no business reading.
const DIR_MODE: u32 = 0o700;

/// Mode of every file kz writes in `.kz`.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (not its parents) with mode 0700 if missing, and a
/// `.gitignore` ignoring everything in it so state never lands in git.
///
/// An existing directory keeps its mode and an existing `.gitignore` its
/// content: the user may have had reasons to change them.
pub fn ensure_kz_dir(dir: &Path) -> Result<(), StateError> {
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(StateError::io("create directory", dir)(e)),
    }
    let gitignore = dir.join(".gitignore");
    if !gitignore.exists() {
        atomic_write(&gitignore, b"*\n")?;
    }
    Ok(())
}

/// Removes the temporary files that [`atomic_write`] left in `dir` when its process was killed
/// (`kill -9` between the creation and the rename): `.NAME.PID.RANDOM.tmp` for one of `names`,
/// whose process `PID` is gone. A live process (another kz writing now) keeps its file, and
/// nothing is removed when `/proc` does not show this process itself (no way to tell). Failures
/// are ignored: a leftover is harmless, and the write that matters must not fail for it.
pub(crate) fn remove_stale_temporaries(dir: &Path, names: &[&str]) {
    let me = std::process::id();
    if !Path::new("/proc").join(me.to_string()).is_dir() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| temporary_pid(n, names)) else {
            continue;
        };
        if pid != me && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The pid in the name of a temporary file of [`atomic_write`] for one of `names`.
fn temporary_pid(file_name: &str, names: &[&str]) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (rest, random) = rest.rsplit_once('.')?;
    let (name, pid) = rest.rsplit_once('.')?;
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_hexdigit()) || !names.contains(&name)
    {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Replaces `target` with `contents` so that a crash leaves either the old
/// or the new file, never a mix: write a temporary file (mode 0600) next to
/// it, fsync it, rename it over `target`, then fsync the directory so the
/// rename itself is durable.
pub(crate) fn atomic_write(target: &Path, contents: &[u8]) -> Result<(), StateError> {
    write_file_atomically(target, contents, FILE_MODE)
}

/// The one way kz replaces a file it writes (state, saved plans, rescue files, stack.toml,
/// the lab's files): a temporary file next to it with `mode`, written and fsynced, renamed over
/// the target, the directory fsynced; on failure the temporary file is removed.
pub fn write_file_atomically(target: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Named after the target and this process, so that a later run can tell a leftover of a
    // killed writer (`remove_stale_temporaries`).
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        random_suffix()
    ));

    let result = write_synced(&tmp, contents, mode).and_then(|()| {
        fs::rename(&tmp, target).map_err(StateError::io("rename temporary file over", target))
    });
    if result.is_err() {
        // The temporary file is garbage either way; failing to remove it must
        // not hide the error that matters.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// Creates `path` exclusively with `mode`, writes `contents` and fsyncs.
fn write_synced(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(StateError::io("create temporary file", path))?;
    // The mode given to open is reduced by the umask; make it exact.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(StateError::io("set permissions of", path))?;
    file.write_all(contents)
        .map_err(StateError::io("write temporary file", path))?;
    file.sync_all().map_err(StateError::io("fsync", path))
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StateError::io("fsync directory", dir))
}

/// Random hex string making temporary names unique across threads and
/// processes. Uniqueness is also enforced by `create_new`, so a failing
/// random source only degrades to a fixed suffix.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => hex::encode(bytes),
        Err(_) => "0".to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_only_for_the_given_files() {
        let names = ["state.json", "state.json.backup", ".gitignore"];
        assert_eq!(
            temporary_pid(".state.json.42.0123456789abcdef.tmp", &names),
            Some(42)
        );
        assert_eq!(temporary_pid(".state.json.backup.7.0.tmp", &names), Some(7));
        assert_eq!(temporary_pid("..gitignore.9.ab.tmp", &names), Some(9));
        assert_eq!(temporary_pid(".other.json.42.ab.tmp", &names), None);
        assert_eq!(temporary_pid(".state.json.4x.ab.tmp", &names), None);
        assert_eq!(temporary_pid(".state.json.42.zz.tmp", &names), None);
        assert_eq!(temporary_pid("state.json", &names), None);
    }

    #[test]
    fn only_temporaries_of_dead_processes_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // No process can have a pid above Linux's largest pid_max (2^22).
        let dead = ".state.json.4194305.0123456789abcdef.tmp";
        let mine = format!(".state.json.{}.0123456789abcdef.tmp", std::process::id());
        let other = ".state.json.1.0123456789abcdef.tmp";
        let foreign = ".notes.4194305.00.tmp";
        for n in [dead, &mine, other, foreign, "state.json"] {
            fs::write(dir.join(n), "x").unwrap();
        }
        remove_stale_temporaries(dir, &["state.json"]);
        let mut left: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = vec![
            mine,
            other.to_owned(),
            foreign.to_owned(),
            "state.json".to_owned(),
        ];
        expected.sort();
        assert_eq!(left, expected);
    }
}
