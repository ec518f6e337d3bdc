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
pub(crate) fn ensure_kz_dir(dir: &Path) -> Result<(), StateError> {
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

/// Replaces `target` with `contents` so that a crash leaves either the old
/// or the new file, never a mix: write a temporary file (mode 0600) next to
/// it, fsync it, rename it over `target`, then fsync the directory so the
/// rename itself is durable.
pub(crate) fn atomic_write(target: &Path, contents: &[u8]) -> Result<(), StateError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        random_suffix()
    ));

    let result = write_synced(&tmp, contents).and_then(|()| {
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

/// Creates `path` exclusively with mode 0600, writes `contents` and fsyncs.
fn write_synced(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(StateError::io("create temporary file", path))?;
    // The mode given to open is reduced by the umask; make it exact.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
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
