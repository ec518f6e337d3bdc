//! How HAProxy runs on a host, as shell functions shared by the read and the apply: which mode
//! (`systemd`, `master`, `container:NAME`; `auto` chooses systemd when it runs the host), the
//! master's pid, its workers, how to validate, start and reload.
//!
//! A reload is confirmed by the workers: HAProxy's master re-executes itself on a reload and
//! forks new workers only once the new configuration loaded, so a worker that was not there
//! before proves the new file is the one serving. This reads `/proc` only: no `socat`, no
//! Python, nothing a HAProxy host may lack.

use kz_engine::provider::shell_quote;

/// How long a start or a reload may take to show a new worker.
pub const CONFIRM_SECS: u32 = 15;

/// The pid file and error log of a master kz starts itself (mode `master`), by resource name.
pub fn pid_file(name: &str) -> String {
    format!("/run/haproxy-kz-{name}.pid")
}
pub fn log_file(name: &str) -> String {
    format!("/var/log/haproxy-kz-{name}.log")
}

/// Shell that sets `p` (the live file), `mode` and defines `kz_master` (the master's pid, empty
/// when none runs), `kz_workers PID`, `kz_validate FILE`, `kz_start`, `kz_reload PID` and
/// `kz_errors` (HAProxy's last messages).
pub fn prelude(path: &str, reload: &str, name: &str) -> String {
    let tries = CONFIRM_SECS * 10;
    format!(
        r#"p={path}; mode={reload}; pf={pf}; lg={lg}
if [ "$mode" = auto ]; then if [ -d /run/systemd/system ]; then mode=systemd; else mode=master; fi; fi
case $mode in container:*) ct=${{mode#container:}}; rt=$(command -v podman || command -v docker || echo podman);; esac
kz_master() {{
  case $mode in
  systemd) m=$(systemctl show -p MainPID --value haproxy 2>/dev/null);;
  master) m=; [ -r "$pf" ] && read -r m < "$pf";;
  *) m=$("$rt" inspect -f '{{{{.State.Pid}}}}' "$ct" 2>/dev/null);;
  esac
  case $m in ''|0|*[!0-9]*) return 0;; esac
  kill -0 "$m" 2>/dev/null && echo "$m"
  return 0
}}
kz_workers() {{
  kz_m=$1
  for f in /proc/[0-9]*/stat; do
    read -r l < "$f" 2>/dev/null || continue
    set -- ${{l##*") "}}
    [ "$2" = "$kz_m" ] && {{ d=${{f%/stat}}; echo "${{d#/proc/}}"; }}
  done
  return 0
}}
kz_validate() {{
  case $mode in
  container:*) "$rt" exec -i "$ct" haproxy -c -f /dev/stdin < "$1" 2>&1;;
  *) haproxy -c -f "$1" 2>&1;;
  esac
}}
kz_start() {{
  mkdir -p /run/haproxy
  case $mode in
  systemd) systemctl start haproxy;;
  master) setsid -f haproxy -W -p "$pf" -f "$p" </dev/null >/dev/null 2>>"$lg";;
  *) "$rt" start "$ct" >/dev/null;;
  esac
}}
kz_reload() {{
  mkdir -p /run/haproxy
  case $mode in
  systemd) systemctl reload haproxy;;
  master) kill -USR2 "$1";;
  *) "$rt" kill -s HUP "$ct" >/dev/null;;
  esac
}}
# The digest of a file, recorded as `PATH.kz-serving` once HAProxy took it: a file swapped in
# but never reloaded (apply killed in between) then reads as not serving.
kz_digest() {{ cksum < "$1"; }}
kz_serving() {{ kz_digest "$p" > "$p.kz-serving" || rm -f -- "$p.kz-serving"; }}
kz_errors() {{
  case $mode in
  systemd) journalctl -u haproxy -n 8 --no-pager 2>/dev/null;;
  master) tail -c "+$((kz_log0+1))" "$lg" 2>/dev/null | grep -E 'ALERT|WARNING|failure' | tail -n 8;;
  *) "$rt" logs --tail 8 "$ct" 2>&1;;
  esac
}}
# Starts HAProxy, or reloads it, and waits until a worker that was not there before runs.
kz_serve() {{
  kz_log0=$(stat -c %s "$lg" 2>/dev/null || echo 0)
  m=$(kz_master)
  if [ -n "$m" ]; then before=" $(kz_workers "$m" | tr '\n' ' ')"; kz_reload "$m" || return 1
  else before=" "; kz_start || return 1; fi
  i=0
  while [ "$i" -lt {tries} ]; do
    m=$(kz_master)
    if [ -n "$m" ]; then
      for w in $(kz_workers "$m"); do case "$before" in *" $w "*) ;; *) echo "serving: master $m, new worker $w"; return 0;; esac; done
    fi
    # A master kz started says at once when the new configuration did not load.
    if [ "$mode" = master ] && tail -c "+$((kz_log0+1))" "$lg" 2>/dev/null | grep -q 'Loading failure'; then
      echo "HAProxy's master reported a loading failure" >&2; return 1
    fi
    sleep 0.1; i=$((i+1))
  done
  echo "no new HAProxy worker within {CONFIRM_SECS}s" >&2
  return 1
}}
"#,
        path = shell_quote(path),
        reload = shell_quote(reload),
        pf = shell_quote(&pid_file(name)),
        lg = shell_quote(&log_file(name)),
    )
}

/// The read: the mode, whether HAProxy runs, whether it was loaded with the live file (`serving
/// same`, `differs`, or `unknown` when kz never recorded it), whether a new file was left beside
/// the live one (`leftover yes|no`), and the live file.
pub fn probe(path: &str, reload: &str, name: &str) -> String {
    format!(
        "{}echo \"mode $mode\"\nif [ -n \"$(kz_master)\" ]; then echo running; else echo stopped; fi\n\
         if [ -f \"$p\" ] && [ -f \"$p.kz-serving\" ]; then\n\
         if [ \"$(kz_digest \"$p\")\" = \"$(cat -- \"$p.kz-serving\")\" ]; then echo 'serving same'; else echo 'serving differs'; fi\n\
         else echo 'serving unknown'; fi\n\
         if [ -e \"$p.kz-new\" ]; then echo 'leftover yes'; else echo 'leftover no'; fi\n\
         if [ -f \"$p\" ]; then echo present; cat -- \"$p\"; else echo absent; fi\n",
        prelude(path, reload, name)
    )
}

/// Puts a configuration in service. With `swap`, the new file waits beside the live one
/// (`PATH.kz-new`): it is validated (refused: removed, exit 3, HAProxy's lines on standard
/// error), the live file is kept as `PATH.kz-old`, the new one renamed over it, HAProxy reloaded
/// (or started) and the new worker awaited; if that fails, the previous file comes back, is
/// reloaded, and the script exits 5 with HAProxy's messages. Without `swap` (HAProxy is only
/// not running), the live file is validated and HAProxy started.
pub fn serve(path: &str, reload: &str, name: &str, swap: bool) -> String {
    let mut s = prelude(path, reload, name);
    if swap {
        s.push_str(
            r#"new="$p.kz-new"; old="$p.kz-old"
# The new file may hold a secret: whatever ends this script before the rename removes it.
trap 'rm -f -- "$new"' EXIT
if ! out=$(kz_validate "$new"); then printf '%s\n' "$out" >&2; exit 3; fi
had=0
if [ -f "$p" ]; then cp -p -- "$p" "$old" || exit 4; had=1; fi
mv -f -- "$new" "$p" || exit 4
trap - EXIT
if kz_serve; then kz_serving; exit 0; fi
echo "HAProxy did not take the new configuration:" >&2
kz_errors >&2
if [ "$had" = 1 ]; then
  mv -f -- "$old" "$p" && cp -p -- "$p" "$old"
  if kz_serve >/dev/null; then kz_serving; echo "the previous configuration was restored and serves again" >&2
  else echo "the previous configuration was restored but HAProxy did not take it either" >&2; fi
else
  rm -f -- "$p" "$p.kz-serving"; echo "the new file was removed (there was none before)" >&2
fi
exit 5
"#,
        );
    } else {
        s.push_str(
            r#"# A new file an interrupted apply left beside the live one goes: it may hold a secret.
rm -f -- "$p.kz-new"
if ! out=$(kz_validate "$p"); then printf '%s\n' "$out" >&2; exit 3; fi
if kz_serve; then kz_serving; exit 0; fi
echo "HAProxy did not start:" >&2
kz_errors >&2
exit 5
"#,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_and_the_swap_validates_before_renaming() {
        let s = serve("/etc/haproxy/it's.cfg", "master", "lb", true);
        assert!(s.starts_with(
            "p='/etc/haproxy/it'\\''s.cfg'; mode='master'; pf='/run/haproxy-kz-lb.pid'"
        ));
        let validate = s.find("kz_validate \"$new\"").expect("validates");
        let rename = s.find("mv -f -- \"$new\" \"$p\"").expect("renames");
        assert!(validate < rename);
        assert!(!serve("/x", "auto", "lb", false).contains("kz_validate \"$new\""));
    }

    #[test]
    fn the_new_file_is_removed_on_any_exit_before_the_rename_and_the_serving_file_recorded() {
        let s = serve("/x", "master", "lb", true);
        let trap = s.find("trap 'rm -f -- \"$new\"' EXIT").expect("a trap");
        let validate = s.find("kz_validate \"$new\"").expect("validates");
        let rename = s.find("mv -f -- \"$new\" \"$p\"").expect("renames");
        let cleared = s.find("trap - EXIT").expect("cleared");
        assert!(trap < validate && rename < cleared);
        assert!(s.contains("if kz_serve; then kz_serving; exit 0; fi"));
        let start = serve("/x", "master", "lb", false);
        assert!(start.contains("rm -f -- \"$p.kz-new\""));
        assert!(start.contains("if kz_serve; then kz_serving; exit 0; fi"));
    }

    /// Runs `script` with `sh`; its exit status and standard output.
    fn sh(script: &str) -> (i32, String) {
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .expect("sh runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn the_read_tells_a_file_not_serving_and_a_leftover_and_a_refused_file_leaves_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let p = dir.path().join("h.cfg");
        let p = p.to_str().expect("UTF-8");
        std::fs::write(p, "global\n").expect("written");
        let lines = |out: &str| out.lines().skip(2).take(2).collect::<Vec<_>>().join(",");
        let name = format!("kz-test-{}", std::process::id());
        let read = || sh(&probe(p, "master", &name)).1;
        assert_eq!(lines(&read()), "serving unknown,leftover no");
        sh(&format!("cksum < {p} > {p}.kz-serving"));
        assert_eq!(lines(&read()), "serving same,leftover no");
        std::fs::write(p, "global\n# changed\n").expect("written");
        std::fs::write(format!("{p}.kz-new"), "secret\n").expect("written");
        assert_eq!(lines(&read()), "serving differs,leftover yes");
        // Refused (or no haproxy here at all): the new file goes, the live one stays.
        let (code, _) = sh(&serve(p, "master", &name, true));
        assert_eq!(code, 3);
        assert!(!std::path::Path::new(&format!("{p}.kz-new")).exists());
        assert_eq!(
            std::fs::read_to_string(p).expect("kept"),
            "global\n# changed\n"
        );
    }
}
