//! The sshd part of `system`: settings in a drop-in under /etc/ssh/sshd_config.d/, validated by
//! `sshd -t`, sshd reloaded, then a brand-new login must succeed, else the previous drop-in comes
//! back (the "magic rollback" of deploy-rs): a setting never locks kz out for good.

use std::time::{Duration, Instant};

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{ApplyCtx, ProviderError, Transport, TransportError, UploadOptions};

use super::probe::{Facts, PATH};
use super::{SSHD_DROP_IN, list, run_checked};

/// How long sshd may take to listen again after a reload before a refused connection counts as
/// a lockout.
const RELISTEN: Duration = Duration::from_secs(15);

/// The settings the drop-in holds, one `Keyword value` line each (comments and blank lines
/// left out), or none when it is absent.
pub fn observe(facts: &Facts) -> Value {
    let text = facts.section("sshd");
    let mut lines = text.lines();
    if lines.next() != Some("present") {
        return Value::List(Vec::new());
    }
    Value::List(
        lines
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| Value::Text(l.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect(),
    )
}

fn content(inst: &Instance) -> Vec<u8> {
    let mut s = String::from(
        "# Written by kz (resource system): changes made here are overwritten.\n\
         # sshd keeps the first value it reads: this file sorts before the others.\n",
    );
    for l in list(inst, "sshd") {
        s.push_str(&l);
        s.push('\n');
    }
    s.into_bytes()
}

/// Puts back what the drop-in held before (or removes it), then reloads sshd.
async fn restore(t: &dyn Transport, previous: &Option<Vec<u8>>) -> Result<(), ProviderError> {
    match previous {
        Some(bytes) => t
            .upload(SSHD_DROP_IN, bytes.clone(), &upload_options(t))
            .await
            .map_err(|e| ProviderError::transport("sshd restore", e))?,
        None => {
            run_checked(
                t,
                "sshd restore",
                format!("rm -f {SSHD_DROP_IN}"),
                t.command_timeout(),
            )
            .await?;
        }
    }
    Ok(())
}

fn upload_options(t: &dyn Transport) -> UploadOptions {
    UploadOptions {
        mode: Some(0o644),
        timeout: t.command_timeout(),
        public: true,
        ..Default::default()
    }
}

/// Makes sshd read its configuration again: systemd's reload, or SIGHUP to the listener (a lab
/// host runs `sshd -D` as its first process). sshd re-executes itself on SIGHUP; the second's
/// pause lets it do so before anyone connects, so the next login meets the new settings.
async fn reload(t: &dyn Transport) -> Result<(), ProviderError> {
    let script = format!(
        "{PATH}\nif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then\n\
         systemctl reload ssh 2>/dev/null || systemctl reload sshd || exit 1\n\
         else\npid=$(cat /run/sshd.pid 2>/dev/null)\n\
         [ -n \"$pid\" ] || {{ echo 'cannot find the pid of sshd (/run/sshd.pid)' >&2; exit 1; }}\n\
         kill -HUP \"$pid\" || exit 1\nfi\nsleep 1\n"
    );
    run_checked(t, "sshd reload", script, t.command_timeout()).await?;
    Ok(())
}

/// A new login, retried while sshd is not listening yet; any other failure is final.
async fn prove_login(t: &dyn Transport) -> Result<(), TransportError> {
    let deadline = Instant::now() + RELISTEN;
    loop {
        match t.verify_new_login().await {
            Err(TransportError::Connect(e)) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

pub async fn apply(cx: &ApplyCtx, t: &dyn Transport) -> Result<(), ProviderError> {
    let inst = cx.instance();
    let read = run_checked(
        t,
        "sshd",
        format!(
            "if [ -f {SSHD_DROP_IN} ]; then echo present; cat {SSHD_DROP_IN}; else echo absent; fi"
        ),
        t.command_timeout(),
    )
    .await?;
    let previous = read
        .strip_prefix(b"present\n".as_slice())
        .map(<[u8]>::to_vec);
    t.upload(SSHD_DROP_IN, content(inst), &upload_options(t))
        .await
        .map_err(|e| ProviderError::transport("sshd", e))?;
    let check = t
        .run(kz_engine::provider::CommandSpec {
            script: format!("{PATH}\nmkdir -p /run/sshd\nsshd -t"),
            timeout: t.command_timeout(),
            ..Default::default()
        })
        .await
        .map_err(|e| ProviderError::transport("sshd -t", e))?;
    if check.status != 0 {
        restore(t, &previous).await?;
        return Err(ProviderError::new(
            "sshd -t",
            format!(
                "sshd refused the settings (the previous drop-in is back): {}",
                crate::tail(&check.stderr, 5)
            ),
        ));
    }
    if let Err(e) = reload(t).await {
        // The new drop-in must not wait on disk for the next restart, untested: put the previous
        // one back (sshd may have taken the new one before failing, so reload once more).
        restore(t, &previous).await?;
        let _ = reload(t).await;
        return Err(ProviderError::new(
            "sshd reload",
            format!("{e}; the previous drop-in is back"),
        ));
    }
    cx.progress("sshd: reloaded; proving a new login");
    let Err(e) = prove_login(t).await else {
        return Ok(());
    };
    restore(t, &previous).await?;
    reload(t).await?;
    let back = match prove_login(t).await {
        Ok(()) => {
            "the previous drop-in was restored and sshd reloaded; kz gets in again".to_string()
        }
        Err(e2) => format!(
            "the previous drop-in was restored and sshd reloaded, but a new login still fails: {e2}"
        ),
    };
    Err(ProviderError::new(
        "sshd",
        format!("the new settings would lock kz out (a new login failed: {e}); {back}"),
    ))
}
