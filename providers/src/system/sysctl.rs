//! The sysctl part of `system`: each key set now (`sysctl -w`) and at boot (a file under
//! /etc/sysctl.d/). A key the kernel refuses is an error naming it; a key a container cannot
//! write (its /proc/sys is read-only) is not applicable there.

use std::collections::BTreeMap;

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{ProviderError, Transport, UploadOptions, shell_quote};

use super::list;
use super::probe::{Facts, IN_CONTAINER, PATH};

/// The declared `key = value` lines, by key.
fn wanted(inst: &Instance) -> BTreeMap<String, String> {
    list(inst, "sysctl")
        .iter()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The declared keys.
pub fn keys(inst: &Instance) -> Vec<String> {
    wanted(inst).into_keys().collect()
}

/// kz's file under /etc/sysctl.d/, named after the resource.
pub fn path(inst: &Instance) -> String {
    format!("/etc/sysctl.d/90-kz-{}.conf", inst.address.name)
}

/// The observed lines, and the keys this host cannot change (read-only inside a container),
/// which are reported as they are declared.
/// Keys a container has its own copy of (its network and IPC namespaces). Any other key, even
/// writable in a privileged container, is the kernel of the machine running it: a lab host must
/// never change it.
pub fn namespaced(key: &str) -> bool {
    ["net.", "kernel.shm", "kernel.msg", "fs.mqueue."]
        .iter()
        .any(|p| key.starts_with(p))
        || key == "kernel.sem"
}

/// The shell pattern of [`namespaced`] keys, for `case`.
const NAMESPACED_CASE: &str = "net.*|kernel.shm*|kernel.msg*|fs.mqueue.*|kernel.sem";

/// What the kernel holds for each declared key, and the keys a container cannot change, each with
/// why.
pub fn observe(inst: &Instance, facts: &Facts) -> (Value, Vec<(String, &'static str)>) {
    let read: BTreeMap<&str, (&str, &str)> = facts
        .section("sysctl")
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            Some((f.next()?, (f.next()?, f.next().unwrap_or(""))))
        })
        .collect();
    let mut lines = Vec::new();
    let mut fixed = Vec::new();
    for (k, want) in wanted(inst) {
        let now = match read.get(k.as_str()) {
            Some(("ro", _)) if facts.container => {
                fixed.push((k.clone(), "read-only"));
                want.clone()
            }
            Some(_) if facts.container && !namespaced(&k) => {
                fixed.push((
                    k.clone(),
                    "not namespaced: it belongs to the machine's kernel",
                ));
                want.clone()
            }
            Some(("ro" | "rw", v)) => v.split_whitespace().collect::<Vec<_>>().join(" "),
            _ => "(no such key)".to_string(),
        };
        lines.push(Value::Text(format!("{k} = {now}")));
    }
    if let Some(l) = boot_drift(inst, facts) {
        lines.push(Value::Text(l));
    }
    (Value::List(lines), fixed)
}

/// The boot file's content: every declared key.
fn boot_file(inst: &Instance) -> String {
    let mut content = String::from("# Written by kz: changes made here are overwritten.\n");
    for (k, v) in &wanted(inst) {
        content.push_str(&format!("{k} = {v}\n"));
    }
    content
}

/// A line saying the boot file is missing or not kz's, or `None` when it holds what apply writes:
/// values set now but lost at the next boot are drift too.
fn boot_drift(inst: &Instance, facts: &Facts) -> Option<String> {
    use sha2::{Digest, Sha256};
    let want = hex::encode(Sha256::digest(boot_file(inst).as_bytes()));
    let seen = facts
        .section("sysctlboot")
        .split_whitespace()
        .next()
        .unwrap_or("missing");
    if seen == want {
        return None;
    }
    let what = if seen == "missing" {
        "missing"
    } else {
        "not as declared"
    };
    Some(format!("(at boot: {} {what})", path(inst)))
}

pub async fn apply(inst: &Instance, t: &dyn Transport) -> Result<(), ProviderError> {
    let want = wanted(inst);
    let pairs: Vec<String> = want
        .iter()
        .map(|(k, v)| shell_quote(&format!("{k}={v}")))
        .collect();
    // Every key is tried, and each refusal named with the kernel's reason; the boot file is
    // written only once all of them took.
    let script = format!(
        "{PATH}\nfail=0\nfor kv in {}; do k=${{kv%%=*}}; f=/proc/sys/$(printf %s \"$k\" | tr . /)\n\
         if {IN_CONTAINER}; then [ -e \"$f\" ] && ! [ -w \"$f\" ] && continue\n\
         case $k in {NAMESPACED_CASE}) ;; *) continue ;; esac; fi\n\
         if ! err=$(sysctl -q -w \"$kv\" 2>&1 >/dev/null); then echo \"kz-refused $k: $err\" >&2; fail=1; fi\n\
         done\nexit $fail\n",
        pairs.join(" ")
    );
    let out = t
        .run(kz_engine::provider::CommandSpec {
            script,
            timeout: t.command_timeout(),
            ..Default::default()
        })
        .await
        .map_err(|e| ProviderError::transport("sysctl", e))?;
    if out.status != 0 {
        let err = String::from_utf8_lossy(&out.stderr);
        let refused: Vec<String> = err
            .lines()
            .filter_map(|l| l.strip_prefix("kz-refused "))
            .map(String::from)
            .collect();
        let msg = if refused.is_empty() {
            format!(
                "exit status {}: {}",
                out.status,
                crate::tail(&out.stderr, 5)
            )
        } else {
            format!("the kernel refused {}", refused.join("; "))
        };
        return Err(ProviderError::new("sysctl", msg));
    }
    let content = boot_file(inst);
    let opts = UploadOptions {
        mode: Some(0o644),
        timeout: t.command_timeout(),
        public: true,
        ..Default::default()
    };
    t.upload(&path(inst), content.into_bytes(), &opts)
        .await
        .map_err(|e| ProviderError::transport("sysctl", e))?;
    Ok(())
}
