//! The local-file backend: state in `STACK_DIR/.kz/state.json`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fsutil::{atomic_write, ensure_kz_dir, remove_stale_temporaries};
use crate::lock::{self, LockInfo, StateLock};
use crate::model::{State, unsupported_version};
use crate::{FORMAT_VERSION, StateError};

/// Name of the directory, inside the stack directory, holding kz's files.
const KZ_DIR: &str = ".kz";
const STATE_FILE: &str = "state.json";
const BACKUP_FILE: &str = "state.json.backup";
const LOCK_FILE: &str = "state.lock";
/// The files written through temporary files, whose leftovers a later run removes.
const WRITTEN: [&str; 3] = [STATE_FILE, BACKUP_FILE, ".gitignore"];

/// Stores the state of one stack in files under `STACK_DIR/.kz`.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    dir: PathBuf,
}

impl LocalBackend {
    /// A backend for the stack in `stack_dir`. Does no I/O: the `.kz`
    /// directory is created by the first write or lock.
    pub fn new(stack_dir: &Path) -> LocalBackend {
        LocalBackend {
            dir: stack_dir.join(KZ_DIR),
        }
    }

    /// A backend keeping its files in `dir` itself (a lab's state, in `STACK_DIR/.kz/lab`).
    pub fn in_dir(dir: &Path) -> LocalBackend {
        LocalBackend {
            dir: dir.to_path_buf(),
        }
    }

    /// The `.kz` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `STACK_DIR/.kz/state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// `STACK_DIR/.kz/state.json.backup`: the state before the last write.
    pub fn backup_path(&self) -> PathBuf {
        self.dir.join(BACKUP_FILE)
    }

    /// `STACK_DIR/.kz/state.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// Reads the state, or `None` when no state file exists yet.
    ///
    /// A file that is not valid JSON, has an unknown `format_version`, or
    /// breaks the state's invariants is reported as
    /// [`StateError::Corrupt`].
    pub fn read(&self) -> Result<Option<State>, StateError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => parse_state(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::io("read state file", path)(e)),
        }
    }

    /// Writes `state`, incrementing its serial first (setting `kz_version`
    /// is the caller's job). The caller should hold the lock.
    ///
    /// Creates `.kz` (mode 0700, with a `.gitignore` of `*`) if needed, then
    /// copies the current state file to `state.json.backup` and replaces the
    /// state file, both atomically and durably (temporary file of mode 0600,
    /// fsync, rename, fsync of the directory). If the backup cannot be made
    /// the state file is left untouched and the error returned, so that a
    /// write never loses the previous version silently.
    ///
    /// On error, `state.serial` is restored to its previous value.
    pub fn write(&self, state: &mut State) -> Result<(), StateError> {
        let previous = state.serial;
        state.serial = previous.saturating_add(1);
        let result = self.write_serialized(state);
        if result.is_err() {
            state.serial = previous;
        }
        result
    }

    fn write_serialized(&self, state: &State) -> Result<(), StateError> {
        let path = self.state_path();
        let mut json = serde_json::to_vec_pretty(state)
            .map_err(|e| StateError::io("encode state for", &path)(e.into()))?;
        json.push(b'\n');

        ensure_kz_dir(&self.dir)?;
        // A writer killed between its temporary file and the rename left it behind.
        remove_stale_temporaries(&self.dir, &WRITTEN);
        match fs::read(&path) {
            Ok(current) => atomic_write(&self.backup_path(), &current)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StateError::io("read state file", path)(e)),
        }
        atomic_write(&path, &json)
    }

    /// Takes the exclusive state lock, waiting up to `timeout` for another
    /// holder to release it (a zero timeout tries once), and records `info`
    /// in the lock file. Creates `.kz` if needed.
    ///
    /// Fails with [`StateError::Locked`], naming the holder when known, if
    /// the lock is still held after `timeout`.
    pub fn lock(&self, info: &LockInfo, timeout: Duration) -> Result<StateLock, StateError> {
        ensure_kz_dir(&self.dir)?;
        lock::acquire(&self.lock_path(), info, timeout)
    }

    /// Who holds the lock now: `None` when nobody does; a holder without a
    /// record when the lock is held but
    /// its holder's information is missing or unreadable (e.g. it has just
    /// taken the lock and not written it yet). Does not create anything.
    pub fn lock_holder(&self) -> Result<Option<crate::Holder>, StateError> {
        lock::holder(&self.lock_path())
    }

    /// Breaks a lock whose holder cannot release it (e.g. a process on
    /// another machine over a shared file system) by removing the lock file,
    /// so the next kz locks a fresh file. Returns the holder information that
    /// was recorded, if any.
    ///
    /// Only use it when the holder is known to be gone or stuck: the holder
    /// keeps running unaware and could still write the state.
    pub fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        lock::force_unlock(&self.lock_path())
    }
}

/// Parses and checks the content of a state file.
pub(crate) fn parse_state(path: &Path, bytes: &[u8]) -> Result<State, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_owned(),
        message,
    };
    // Look at the version before the full structure, so that a state from
    // another format version is reported as such rather than as whatever
    // field happens to differ first.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    match value.get("format_version") {
        Some(v) if v.as_u64() == Some(u64::from(FORMAT_VERSION)) => {}
        Some(v) => {
            return Err(corrupt(match v.as_u64() {
                Some(n) => unsupported_version(n),
                None => format!("format_version must be a number, found {v}"),
            }));
        }
        None => return Err(corrupt("missing format_version".to_owned())),
    }
    let state: State = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    state.check().map_err(corrupt)?;
    Ok(state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::thread;
    use std::time::Instant;

    use super::*;
    use crate::model::{AttrState, ModuleState, ResourceState, now_rfc3339};

    fn sample_state() -> State {
        let mut state = State::new("0.1.0");
        let secret = state.hash_secret(b"s3cret");
        let now = now_rfc3339();
        state.resources.insert(
            "04_redis.file.conf[redis-01]".to_owned(),
            ResourceState {
                module: "04_redis".to_owned(),
                kind: "file".to_owned(),
                name: "conf".to_owned(),
                host: "redis-01".to_owned(),
                members: Vec::new(),
                outputs: BTreeMap::new(),
                attributes: BTreeMap::from([
                    (
                        "path".to_owned(),
                        AttrState::Value(serde_json::json!("/etc/redis/redis.conf")),
                    ),
                    ("content".to_owned(), AttrState::SensitiveHash(secret)),
                ]),
                depends_on: vec!["04_redis.package.redis[redis-01]".to_owned()],
                created_at: now.clone(),
                updated_at: now,
            },
        );
        state.modules.insert(
            "04_redis".to_owned(),
            ModuleState {
                depends_on: vec!["01_base".to_owned()],
            },
        );
        state
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn read_without_state_is_none_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        assert_eq!(backend.read().unwrap(), None);
        assert!(!backend.dir().exists());
        assert_eq!(backend.state_path(), tmp.path().join(".kz/state.json"));
    }

    #[test]
    fn write_then_read_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let mut state = sample_state();
        backend.write(&mut state).unwrap();
        assert_eq!(backend.read().unwrap(), Some(state));
    }

    #[test]
    fn each_write_increments_the_serial() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let mut state = State::new("0.1.0");
        for expected in 1..=3 {
            backend.write(&mut state).unwrap();
            assert_eq!(state.serial, expected);
            assert_eq!(backend.read().unwrap().unwrap().serial, expected);
        }
    }

    #[test]
    fn files_are_private_and_gitignored() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let mut state = State::new("0.1.0");
        backend.write(&mut state).unwrap();
        backend.write(&mut state).unwrap();
        assert_eq!(mode(backend.dir()), 0o700);
        assert_eq!(mode(&backend.state_path()), 0o600);
        assert_eq!(mode(&backend.backup_path()), 0o600);
        let gitignore = fs::read_to_string(backend.dir().join(".gitignore")).unwrap();
        assert_eq!(gitignore.trim(), "*");
        // Only the expected files remain: no temporary file is left behind.
        let mut names: Vec<_> = fs::read_dir(backend.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".gitignore", "state.json", "state.json.backup"]);
    }

    #[test]
    fn existing_gitignore_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        fs::create_dir(backend.dir()).unwrap();
        fs::write(backend.dir().join(".gitignore"), "custom\n").unwrap();
        backend.write(&mut State::new("0.1.0")).unwrap();
        let gitignore = fs::read_to_string(backend.dir().join(".gitignore")).unwrap();
        assert_eq!(gitignore, "custom\n");
    }

    #[test]
    fn backup_holds_the_previous_version() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let mut state = sample_state();
        backend.write(&mut state).unwrap();
        assert!(!backend.backup_path().exists());
        let first = state.clone();
        state.resources.clear();
        backend.write(&mut state).unwrap();
        let backup = fs::read(backend.backup_path()).unwrap();
        let backup = parse_state(&backend.backup_path(), &backup).unwrap();
        assert_eq!(backup, first);
        assert_eq!(backend.read().unwrap(), Some(state));
    }

    #[test]
    fn write_fails_cleanly_without_the_stack_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(&tmp.path().join("missing"));
        let mut state = State::new("0.1.0");
        let err = backend.write(&mut state).unwrap_err();
        assert!(matches!(err, StateError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing/.kz"), "{err}");
        assert_eq!(state.serial, 0);
    }

    #[test]
    fn garbage_json_is_corrupt_and_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        fs::create_dir(backend.dir()).unwrap();
        fs::write(backend.state_path(), "{ this is not json").unwrap();
        let err = backend.read().unwrap_err();
        assert!(matches!(&err, StateError::Corrupt { path, .. } if *path == backend.state_path()));
        assert!(
            err.to_string()
                .contains(&backend.state_path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn unknown_format_version_is_corrupt_with_a_clear_message() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let mut value = serde_json::to_value(State::new("0.1.0")).unwrap();
        value["format_version"] = serde_json::json!(99);
        fs::create_dir(backend.dir()).unwrap();
        fs::write(backend.state_path(), value.to_string()).unwrap();
        let err = backend.read().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }));
        let message = err.to_string();
        assert!(
            message.contains("format_version 99 is not supported"),
            "{message}"
        );
        assert!(message.contains("state.json"), "{message}");
    }

    #[test]
    fn wrong_structure_or_bad_key_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        fs::create_dir(backend.dir()).unwrap();
        let cases = [
            serde_json::json!([1, 2]),
            serde_json::json!({"format_version": "1"}),
            serde_json::json!({"format_version": 1, "lineage": 3}),
            {
                let mut v = serde_json::to_value(State::new("0.1.0")).unwrap();
                v["hash_key"] = serde_json::json!("abc");
                v
            },
        ];
        for case in cases {
            fs::write(backend.state_path(), case.to_string()).unwrap();
            let err = backend.read().unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "{case}: {err:?}");
        }
    }

    #[test]
    fn second_lock_fails_and_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = LocalBackend::new(tmp.path());
        let second = LocalBackend::new(tmp.path());
        let _lock = first
            .lock(&LockInfo::current("kz apply"), Duration::ZERO)
            .unwrap();
        let err = second
            .lock(&LockInfo::current("kz plan"), Duration::ZERO)
            .unwrap_err();
        match &err {
            StateError::Locked { path, holder } => {
                assert_eq!(*path, first.lock_path());
                let holder = holder.as_ref().unwrap();
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.command, "kz apply");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("state is locked by pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("state.lock"), "{message}");
    }

    #[test]
    fn dropping_the_lock_releases_it() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let info = LockInfo::current("kz apply");
        let lock = backend.lock(&info, Duration::ZERO).unwrap();
        assert_eq!(
            backend.lock_holder().unwrap(),
            Some(crate::Holder::Recorded(info.clone()))
        );
        drop(lock);
        assert_eq!(backend.lock_holder().unwrap(), None);
        assert_eq!(fs::read(backend.lock_path()).unwrap(), b"");
        let lock = backend.lock(&info, Duration::ZERO).unwrap();
        lock.release().unwrap();
        backend.lock(&info, Duration::ZERO).unwrap();
    }

    #[test]
    fn lock_waits_for_the_holder_within_the_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let lock = backend
            .lock(&LockInfo::current("kz apply"), Duration::ZERO)
            .unwrap();
        let start = Instant::now();
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            drop(lock);
        });
        let waiter = LocalBackend::new(tmp.path());
        let info = LockInfo::current("kz plan");
        let lock = waiter.lock(&info, Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(150));
        releaser.join().unwrap();
        assert_eq!(
            waiter.lock_holder().unwrap(),
            Some(crate::Holder::Recorded(info))
        );
        drop(lock);
    }

    #[test]
    fn lock_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let _lock = backend
            .lock(&LockInfo::current("kz apply"), Duration::ZERO)
            .unwrap();
        let start = Instant::now();
        let err = backend
            .lock(&LockInfo::current("kz plan"), Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }));
        assert!(start.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn force_unlock_lets_a_new_lock_in_while_the_old_one_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let old = backend
            .lock(&LockInfo::current("kz apply"), Duration::ZERO)
            .unwrap();
        let broken = backend.force_unlock().unwrap().unwrap();
        assert_eq!(broken.pid, std::process::id());
        assert_eq!(broken.command, "kz apply");
        let info = LockInfo::current("kz plan");
        let new = backend.lock(&info, Duration::ZERO).unwrap();
        // The old lock's drop only touches its orphaned file.
        drop(old);
        assert_eq!(
            backend.lock_holder().unwrap(),
            Some(crate::Holder::Recorded(info))
        );
        drop(new);
        assert_eq!(backend.force_unlock().unwrap(), None);
        assert_eq!(backend.force_unlock().unwrap(), None);
    }

    #[test]
    fn a_waiter_moves_to_the_new_file_after_a_force_unlock() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let old = backend
            .lock(&LockInfo::current("kz apply"), Duration::ZERO)
            .unwrap();
        // The waiter polls the lock held by `old`.
        let waiter_dir = tmp.path().to_owned();
        let waiter = thread::spawn(move || {
            LocalBackend::new(&waiter_dir)
                .lock(&LockInfo::current("kz waiter"), Duration::from_secs(10))
        });
        thread::sleep(Duration::from_millis(200));
        backend.force_unlock().unwrap();
        // The waiter gets the new file even though the old holder is alive;
        // the old lock's release must not disturb it.
        let lock = waiter.join().unwrap().unwrap();
        drop(old);
        let err = backend
            .lock(&LockInfo::current("kz plan"), Duration::ZERO)
            .unwrap_err();
        match err {
            StateError::Locked { holder, .. } => {
                assert_eq!(holder.unwrap().command, "kz waiter");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(lock);
    }

    #[test]
    fn lock_holder_is_none_when_free() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        assert_eq!(backend.lock_holder().unwrap(), None);
        assert!(!backend.dir().exists());
        drop(
            backend
                .lock(&LockInfo::current("kz apply"), Duration::ZERO)
                .unwrap(),
        );
        assert_eq!(backend.lock_holder().unwrap(), None);
    }

    #[test]
    fn lock_holder_without_info_is_some_none() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let lock = backend
            .lock(&LockInfo::current("kz apply"), Duration::ZERO)
            .unwrap();
        fs::write(backend.lock_path(), "garbage").unwrap();
        assert_eq!(
            backend.lock_holder().unwrap(),
            Some(crate::Holder::Unrecorded)
        );
        drop(lock);
    }

    #[test]
    fn lock_creates_the_private_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path());
        let _lock = backend
            .lock(&LockInfo::current("kz apply"), Duration::ZERO)
            .unwrap();
        assert_eq!(mode(backend.dir()), 0o700);
        assert_eq!(mode(&backend.lock_path()), 0o600);
        assert!(backend.dir().join(".gitignore").exists());
    }
}
