//! The `haproxy` resource: a typed HAProxy configuration, one instance per host. Declared as
//! data (`declare.rs`), rendered into one text (`render.rs`) with ready-made health checks
//! (`checks.rs`), read with the host's batched read (the live file and whether HAProxy runs),
//! and put in service safely (`service.rs`): validated beside the live file, swapped, reloaded,
//! confirmed by a new worker, and rolled back when HAProxy does not take it.

mod checks;
mod declare;
mod render;
mod service;

use std::collections::BTreeMap;

use async_trait::async_trait;

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{
    Applied, ApplyCtx, CommandSpec, Declaration, Declared, MemberOutputs, Observation, Provider,
    ProviderError, Transport, UploadOptions,
};

#[derive(Debug)]
pub struct HaproxyProvider;

fn path(inst: &Instance) -> Result<&str, ProviderError> {
    inst.text("path")
        .ok_or_else(|| ProviderError::new("haproxy", "no known `path`"))
}

fn reload(inst: &Instance) -> &str {
    inst.text("reload").unwrap_or("auto")
}

/// Why the live file, though as declared, needs an apply: HAProxy runs without having loaded it
/// (an apply stopped between the rename and the reload), or a new file was left beside it.
/// These lines go before the observed file, so that the plan shows `config` changing and the
/// apply puts the declared file in service again (a swap also consumes the leftover).
fn stale_lines(running: bool, serving: &str, leftover: bool) -> Vec<&'static str> {
    let mut lines = Vec::new();
    if running && serving == "differs" {
        lines.push("# kz: HAProxy was not reloaded with this file (an apply was interrupted)");
    }
    if leftover {
        lines.push("# kz: an interrupted apply left PATH.kz-new beside this file");
    }
    lines
}

/// What the read printed: `mode M`, `running`/`stopped`, `serving same|differs|unknown`,
/// `leftover yes|no`, `present` and the file, or `absent`.
fn observe_haproxy(out: &[u8]) -> Result<Observation, String> {
    let mut rest = out;
    let mut line = || -> Result<String, String> {
        let nl = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("the read of HAProxy was cut short")?;
        let l = String::from_utf8_lossy(&rest[..nl]).into_owned();
        rest = &rest[nl + 1..];
        Ok(l)
    };
    let mode = line()?;
    let mode = mode
        .strip_prefix("mode ")
        .ok_or_else(|| format!("unexpected answer `{mode}`"))?
        .to_string();
    let running = match line()?.as_str() {
        "running" => true,
        "stopped" => false,
        other => return Err(format!("unexpected answer `{other}`")),
    };
    let serving = line()?;
    let serving = serving
        .strip_prefix("serving ")
        .ok_or_else(|| format!("unexpected answer `{serving}`"))?
        .to_string();
    let leftover = match line()?.as_str() {
        "leftover yes" => true,
        "leftover no" => false,
        other => return Err(format!("unexpected answer `{other}`")),
    };
    let present = match line()?.as_str() {
        "present" => true,
        "absent" => false,
        other => return Err(format!("unexpected answer `{other}`")),
    };
    let mut attrs = BTreeMap::new();
    attrs.insert("running".to_string(), Value::Bool(running));
    let stale = stale_lines(running, &serving, leftover);
    if present {
        let text = String::from_utf8(rest.to_vec())
            .map_err(|_| "the configuration is not UTF-8".to_string())?;
        let marks: String = stale.iter().map(|l| format!("{l}\n")).collect();
        attrs.insert("config".to_string(), Value::Text(format!("{marks}{text}")));
    }
    Ok(Observation {
        exists: present,
        attrs,
        note: (!present).then(|| format!("no configuration file (HAProxy run by {mode})")),
        live: (present && !stale.is_empty()).then(|| {
            stale
                .iter()
                .map(|l| l.trim_start_matches("# kz: "))
                .collect::<Vec<_>>()
                .join("; ")
        }),
        ..Default::default()
    })
}

/// HAProxy's own lines out of a failed script's error output: the alerts name the file and line.
fn haproxy_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let alerts: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("[ALERT]") && !l.contains("Fatal errors found"))
        .collect();
    if alerts.is_empty() {
        crate::tail(stderr, 10)
    } else {
        alerts.join("\n")
    }
}

/// Runs the script that puts the configuration in service and turns its exit into an error.
async fn serve(t: &dyn Transport, inst: &Instance, swap: bool) -> Result<(), ProviderError> {
    let p = path(inst)?;
    let script = service::serve(p, reload(inst), &inst.address.name, swap);
    let timeout = t.command_timeout().max(std::time::Duration::from_secs(
        u64::from(service::CONFIRM_SECS) * 3,
    ));
    let out = t
        .run(CommandSpec {
            script,
            timeout,
            ..Default::default()
        })
        .await
        .map_err(|e| ProviderError::transport("reload", e))?;
    match out.status {
        0 => Ok(()),
        3 => Err(ProviderError::new(
            "validate",
            format!(
                "HAProxy refused the configuration (haproxy -c); {}:\n{}",
                if swap {
                    "the live file is untouched and nothing was reloaded"
                } else {
                    "HAProxy was not started"
                },
                haproxy_lines(&out.stderr)
            ),
        )),
        5 => Err(ProviderError::new("reload", crate::tail(&out.stderr, 16))),
        n => Err(ProviderError::new(
            "swap",
            format!("exit status {n}: {}", crate::tail(&out.stderr, 5)),
        )),
    }
}

async fn put_in_service(cx: &ApplyCtx) -> Result<Applied, ProviderError> {
    let inst = cx.instance();
    let t = cx.own_transport().await?;
    let t: &dyn Transport = &*t;
    let p = path(inst)?;
    let swap = cx.changed().is_empty() || cx.changed().iter().any(|c| c == "config");
    if swap {
        let attr = inst.attr("config");
        let text = attr
            .and_then(|a| a.known())
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ProviderError::new(
                    "upload",
                    "the configuration is not known (is a secret unset?)",
                )
            })?;
        let sensitive = attr.is_some_and(|a| a.sensitive);
        // A configuration holding a secret (a check's password) is readable by root and
        // HAProxy's group only; a container's HAProxy reads it through its mount, as root.
        let in_container = reload(inst).starts_with("container:");
        let group = (sensitive && !in_container).then(|| "haproxy".to_string());
        let opts = UploadOptions {
            mode: Some(match (sensitive, in_container) {
                (false, _) => 0o644,
                (true, false) => 0o640,
                (true, true) => 0o600,
            }),
            owner: group.as_ref().map(|_| "root".to_string()),
            group,
            timeout: t.command_timeout(),
            public: !inst.attr("path").is_some_and(|a| a.sensitive),
        };
        cx.progress("uploading beside the live file");
        t.upload(&format!("{p}.kz-new"), text.as_bytes().to_vec(), &opts)
            .await
            .map_err(|e| ProviderError::transport("upload", e))?;
        cx.progress("validating, swapping and reloading");
    } else {
        cx.progress("starting HAProxy");
    }
    serve(t, inst, swap).await?;
    Ok(Applied::default())
}

#[async_trait]
impl Provider for HaproxyProvider {
    fn kind(&self) -> &'static str {
        "haproxy"
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare::declare(decl)
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        Some(service::probe(
            inst.text("path")?,
            reload(inst),
            &inst.address.name,
        ))
    }

    fn observe(&self, _inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        if out.status != 0 {
            return Err(format!("cannot read HAProxy (exit {})", out.status));
        }
        observe_haproxy(&out.stdout)
    }

    fn force_new(&self) -> &'static [&'static str] {
        &["path"]
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        put_in_service(cx).await
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        if !cx.changed().iter().any(|c| c == "config" || c == "running") {
            // Only the recorded reload mode differs: nothing on the host to change.
            return Ok(Applied::default());
        }
        put_in_service(cx).await
    }

    /// Removing a `[[haproxy]]` forgets it: stopping a load balancer is not a side effect
    /// anyone wants from deleting a few lines of a stack.
    async fn delete(&self, _cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied {
            note: Some("forgotten: the host keeps HAProxy running with its configuration".into()),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_gives_the_file_and_whether_haproxy_runs() {
        let o = observe_haproxy(
            b"mode master\nstopped\nserving differs\nleftover no\npresent\nglobal\n",
        )
        .expect("parses");
        assert!(o.exists);
        assert_eq!(o.attrs["running"], Value::Bool(false));
        assert_eq!(o.attrs["config"], Value::Text("global\n".into()));
        assert_eq!(o.live, None);
        let o = observe_haproxy(b"mode systemd\nrunning\nserving unknown\nleftover no\nabsent\n")
            .expect("parses");
        assert!(!o.exists);
        assert!(o.note.expect("note").contains("systemd"));
        assert!(observe_haproxy(b"mode master\n").is_err());
        assert!(observe_haproxy(b"mode master\nrunning\npresent\nglobal\n").is_err());
    }

    #[test]
    fn a_file_haproxy_was_not_reloaded_with_or_a_leftover_is_a_change() {
        let read = |serving: &str, leftover: &str| {
            let out = format!(
                "mode master\nrunning\nserving {serving}\nleftover {leftover}\npresent\nglobal\n"
            );
            observe_haproxy(out.as_bytes()).expect("parses")
        };
        for serving in ["same", "unknown"] {
            let o = read(serving, "no");
            assert_eq!(o.attrs["config"], Value::Text("global\n".into()));
            assert_eq!(o.live, None);
        }
        let o = read("differs", "no");
        let Value::Text(config) = &o.attrs["config"] else {
            panic!("{o:?}")
        };
        assert!(
            config.starts_with("# kz: HAProxy was not reloaded"),
            "{config}"
        );
        assert!(config.ends_with("\nglobal\n"));
        assert!(
            o.live
                .expect("live")
                .starts_with("HAProxy was not reloaded")
        );
        let o = read("same", "yes");
        assert!(o.live.expect("live").contains("kz-new"));
        assert_ne!(o.attrs["config"], Value::Text("global\n".into()));
    }

    #[test]
    fn haproxy_alerts_are_the_message() {
        let err = b"[NOTICE]   (21) : haproxy version is 2.6.12\n\
            [ALERT]    (21) : config : parsing [/x.cfg:22] : unknown keyword 'bogus' in 'backend' section\n\
            [ALERT]    (21) : config : Fatal errors found in configuration.\n";
        assert_eq!(
            haproxy_lines(err),
            "[ALERT]    (21) : config : parsing [/x.cfg:22] : unknown keyword 'bogus' in 'backend' section"
        );
    }
}
