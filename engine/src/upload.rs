//! The atomic upload: one shell script, fed the content on its standard input, that replaces a
//! file on a host so that the file holds either its old or its new content, never a mix, even when
//! kz is killed, gets a second Ctrl-C or loses its SSH session in the middle.
//!
//! The script is told how many bytes to expect. The sender follows the content with an end line,
//! `kz-end:` and a random token the script also knows (not a digest of the content: the script
//! may travel in the process list, and a digest of a short secret could be brute-forced). The script copies exactly that many bytes into a new
//! temporary file in the target's directory (`dd` with a byte count), then reads the end line
//! itself: an input cut short leaves `dd` with fewer bytes and the end line missing, so the script
//! removes its temporary file and fails instead of renaming a partial file over the target. Only
//! the complete content followed by the expected end line is renamed into place.
//!
//! The temporary file is removed on every failure and on HUP, INT, TERM and PIPE (a dropped SSH
//! session closes the input, or the shell gets SIGHUP or SIGPIPE). A SIGKILL (a second Ctrl-C, a
//! deadline) leaves it behind: its name, `.kz-upload.PID.RANDOM`, carries the pid of the shell that
//! wrote it, and the next upload into the same directory removes the ones whose process is gone
//! (a live process, hence a concurrent upload, keeps its file).
//!
//! Processes are few, because over SSH on a busy host each one counts (bench/README.md): `dd` and
//! `mv` always, `mkdir`, `chmod`, `chown` only when needed, and `rm` only when leftovers are found.

use crate::provider::{CommandSpec, UploadOptions, shell_quote};

/// Prefix of the temporary files of uploads, in the target's directory.
pub const TEMP_PREFIX: &str = ".kz-upload.";

/// The line that follows the content on the script's input: `kz-end:` and the upload's token.
pub fn end_line(token: &str) -> String {
    format!("kz-end:{token}\n")
}

/// The command that writes `bytes` to `path` atomically in one round trip: the script of
/// [`upload_script`] with the content and its end line on standard input.
pub fn upload_command(path: &str, mut bytes: Vec<u8>, opts: &UploadOptions) -> CommandSpec {
    let token = crate::random_hex(16);
    let len = bytes.len() as u64;
    bytes.extend_from_slice(end_line(&token).as_bytes());
    CommandSpec {
        script: upload_script(path, len, &token, opts),
        stdin: Some(bytes),
        timeout: opts.timeout,
        // The script holds the path, mode, owner and sizes: public unless the path or owner
        // uses a secret.
        public_script: opts.public,
    }
}

/// The shell script that writes the `len` bytes of its standard input to `path` atomically, once
/// the end line carrying `token` has followed them: a new temporary file in the same
/// directory, created exclusively with the right mode, written and flushed to disk by `dd`, owner
/// set, then renamed over the target. Without a mode or an owner, an existing file keeps its own,
/// and a new one gets 0644.
pub fn upload_script(path: &str, len: u64, token: &str, opts: &UploadOptions) -> String {
    let p = shell_quote(path);
    let rand = crate::random_hex(6);
    let mut s =
        format!("set -e\np={p}\nd=${{p%/*}}\nd=${{d:-/}}\n[ -d \"$d\" ] || mkdir -p -- \"$d\"\n");
    // Leftovers of killed uploads: their pid is in their name, and that process is gone (or a
    // zombie: killed, not yet reaped). Only when /proc shows this shell itself, so that a missing
    // /proc never makes a live upload look dead. Globbing, `read` and `case` are builtins: no
    // process unless there is something to remove.
    s.push_str(&format!(
        "if [ -d /proc/$$ ]; then\nset --\nfor f in \"$d\"/{TEMP_PREFIX}*; do\n\
         q=${{f##*/{TEMP_PREFIX}}}\nq=${{q%%.*}}\n\
         case $q in ''|*[!0-9]*) continue ;; esac\n\
         if [ -d /proc/$q ]; then\nz=\n{{ read -r z < /proc/$q/stat; }} 2>/dev/null || :\n\
         case $z in *\") Z \"*) ;; *) continue ;; esac\nfi\n\
         set -- \"$@\" \"$f\"\ndone\n\
         [ $# -eq 0 ] || rm -f -- \"$@\" 2>/dev/null || :\nfi\n"
    ));
    // The temporary file goes on any exit but the rename, and a signal is an exit. `set -C`
    // makes the shell create it exclusively (O_EXCL).
    s.push_str(&format!(
        "t=\"$d/{TEMP_PREFIX}$$.{rand}\"\ntrap 'rm -f -- \"$t\"' EXIT\n\
         trap 'exit 1' HUP INT TERM PIPE\nset -C\n"
    ));
    // The mode comes from the umask when it has no execute or special bits, else from chmod.
    let chmod_after = match opts.mode {
        Some(m) if m & !0o666 == 0 => {
            s.push_str(&format!("umask {:03o}\n", 0o777 & !m));
            None
        }
        Some(m) => {
            s.push_str("umask 077\n");
            Some(format!("chmod {m:04o} -- \"$t\"\n"))
        }
        None => {
            s.push_str("umask 022\n");
            Some("if [ -e \"$p\" ]; then chmod --reference=\"$p\" -- \"$t\"; fi\n".to_string())
        }
    };
    // Exactly `len` bytes (fewer only if the input ends early), then the end line, read by the
    // shell itself (`read` takes one byte at a time from a pipe, so it never reads past it).
    s.push_str(&format!(
        "dd bs=64K iflag=fullblock,count_bytes count={len} conv=fsync status=none > \"$t\"\n\
         e=\nIFS= read -r e || :\n\
         if [ \"$e\" != kz-end:{token} ]; then\n\
         echo \"the input ended before its {len} bytes and their end line: nothing was written\" >&2\n\
         exit 1\nfi\n"
    ));
    if let Some(c) = chmod_after {
        s.push_str(&c);
    }
    match (&opts.owner, &opts.group) {
        (None, None) => {
            s.push_str("if [ -e \"$p\" ]; then chown --reference=\"$p\" -- \"$t\"; fi\n")
        }
        (owner, group) => {
            // What is not given is kept: start from the existing file's owner and group.
            s.push_str("if [ -e \"$p\" ]; then chown --reference=\"$p\" -- \"$t\"; fi\n");
            let spec = format!(
                "{}:{}",
                owner.as_deref().unwrap_or(""),
                group.as_deref().unwrap_or("")
            );
            s.push_str(&format!(
                "chown -- {} \"$t\"\n",
                shell_quote(spec.trim_end_matches(':'))
            ));
        }
    }
    s.push_str("mv -f -- \"$t\" \"$p\"\ntrap - EXIT\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_the_content_then_its_end_line() {
        let c = upload_command("/etc/x", b"hello".to_vec(), &UploadOptions::default());
        let stdin = c.stdin.expect("stdin");
        let end = String::from_utf8(stdin[5..].to_vec()).expect("text");
        assert_eq!(&stdin[..5], b"hello");
        let token = end
            .strip_prefix("kz-end:")
            .and_then(|t| t.strip_suffix('\n'))
            .expect("an end line");
        assert_eq!(token.len(), 32);
        assert!(c.script.contains("count=5 "), "{}", c.script);
        assert!(
            c.script.contains(&format!("kz-end:{token}")),
            "{}",
            c.script
        );
        assert!(!c.public_script, "not public unless the caller says so");
    }

    #[test]
    fn the_temporary_file_carries_the_pid_and_is_cleaned_on_signals() {
        let s = upload_script("/etc/x", 0, "00", &UploadOptions::default());
        assert!(s.contains("t=\"$d/.kz-upload.$$."), "{s}");
        assert!(s.contains("trap 'exit 1' HUP INT TERM PIPE"), "{s}");
        // The rename comes after the end-line check.
        let check = s.find("read -r e").expect("check");
        let mv = s.find("mv -f").expect("mv");
        assert!(check < mv);
    }
}
