//! The scripts that create, update and remove a container. Every value goes through
//! `shell_quote`; secret values go only into the env file, which travels on standard input into
//! a 0600 file that the same script removes, whatever happens.

use std::time::Duration;

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{Applied, ApplyCtx, CommandSpec, ProviderError, Transport, shell_quote};
use kz_engine::units::parse_duration;

use super::fields::spec_hash;
use super::{container_name, normal, runtime_of, wait};

/// How long pulling and starting may take: a pull of a large image is slow.
const CREATE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn known<'a>(inst: &'a Instance, k: &str) -> Option<&'a Value> {
    inst.attr(k).and_then(|a| a.known())
}

fn texts(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::List(l)) => l.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The stop timeout in whole seconds (runtimes' default: 10).
pub(super) fn stop_secs(inst: &Instance) -> u64 {
    inst.text("stop_timeout")
        .and_then(parse_duration)
        .map_or(10, |d| d.as_secs())
}

/// The env file: `KEY=VALUE` lines, read verbatim by both runtimes.
fn env_file(inst: &Instance) -> Result<Option<Vec<u8>>, ProviderError> {
    let Some(a) = inst.attr("env") else {
        return Ok(None);
    };
    let Some(Value::Map(m)) = a.known() else {
        return Err(ProviderError::new(
            "env",
            "env is not known (is a secret unset?)",
        ));
    };
    let mut out = String::new();
    for (k, v) in m {
        let v = v.as_str().unwrap_or("");
        if v.contains('\n') {
            return Err(ProviderError::new(
                "env",
                format!("the value of `{k}` holds a newline, which an env file cannot carry"),
            ));
        }
        out.push_str(&format!("{k}={v}\n"));
    }
    Ok((!m.is_empty()).then(|| out.into_bytes()))
}

/// The options of `RUNTIME run`, quoted, with values interpolated per host checked now.
fn run_args(inst: &Instance, with_env: bool) -> Result<Vec<String>, ProviderError> {
    let bad = |k: &str, e: String| ProviderError::new(k, e);
    let q = |s: &str| shell_quote(s);
    let name = container_name(inst);
    let spec = spec_hash(inst)
        .ok_or_else(|| bad("run", "a value is not known (is a secret unset?)".into()))?;
    let mut a = vec![
        "-d".to_string(),
        "--name".into(),
        q(name),
        "--label".into(),
        "io.kz.managed=1".into(),
        "--label".into(),
        q(&format!("io.kz.spec={spec}")),
    ];
    if with_env {
        a.push("--env-file \"$kz_env\"".into());
    }
    if let Some(Value::Map(m)) = known(inst, "labels") {
        for (k, v) in m {
            a.push(format!(
                "--label {}",
                q(&format!("{k}={}", v.as_str().unwrap_or("")))
            ));
        }
    }
    for p in texts(known(inst, "ports")) {
        let n = normal::port(p).map_err(|e| bad("ports", format!("invalid port `{p}`: {e}")))?;
        a.push(format!("-p {}", q(&n)));
    }
    for v in texts(known(inst, "volumes")) {
        let n =
            normal::volume(v).map_err(|e| bad("volumes", format!("invalid volume `{v}`: {e}")))?;
        a.push(format!("-v {}", q(&n)));
    }
    for (key, flag) in [
        ("network", "--network"),
        ("restart", "--restart"),
        ("user", "--user"),
        ("entrypoint", "--entrypoint"),
        ("cpus", "--cpus"),
    ] {
        if let Some(v) = inst.text(key) {
            a.push(format!("{flag} {}", q(v)));
        }
    }
    if let Some(m) = inst.text("memory") {
        let b = normal::memory(m).map_err(|e| bad("memory", e))?;
        a.push(format!("--memory {b}"));
    }
    for c in texts(known(inst, "cap_add")) {
        a.push(format!("--cap-add {}", q(c)));
    }
    for c in texts(known(inst, "cap_drop")) {
        a.push(format!("--cap-drop {}", q(c)));
    }
    if let Some(Value::Map(h)) = known(inst, "health") {
        let get = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("");
        a.push(format!("--health-cmd {}", q(get("command"))));
        for k in ["interval", "timeout", "start_period"] {
            a.push(format!("--health-{} {}", k.replace('_', "-"), q(get(k))));
        }
        if let Some(Value::Int(r)) = h.get("retries") {
            a.push(format!("--health-retries {r}"));
        }
    }
    if inst.attr("stop_timeout").is_some() {
        a.push(format!("--stop-timeout {}", stop_secs(inst)));
    }
    let image = inst
        .text("image")
        .ok_or_else(|| bad("image", "image is not known".into()))?;
    if image.starts_with('-') || image.chars().any(char::is_whitespace) {
        return Err(bad("image", format!("invalid image `{image}`")));
    }
    a.push(q(image));
    a.extend(texts(known(inst, "command")).into_iter().map(q));
    Ok(a)
}

/// Pulls as `pull` says: `missing` (default) only when the host lacks the image.
fn pull_script(rt: &str, inst: &Instance) -> String {
    let image = shell_quote(inst.text("image").unwrap_or(""));
    let has = format!("{rt} image inspect -- {image} >/dev/null 2>&1");
    match inst.text("pull").unwrap_or("missing") {
        "always" => format!("{rt} pull -- {image} >/dev/null || exit 3\n"),
        "never" => format!(
            "if ! {has}; then echo \"image \"{image}\" is not on the host and pull = never\" >&2; exit 3; fi\n"
        ),
        _ => format!("if ! {has}; then {rt} pull -- {image} >/dev/null || exit 3; fi\n"),
    }
}

/// The creation script: env file (from standard input), host directories, pull, run.
fn create_script(inst: &Instance, with_env: bool) -> Result<String, ProviderError> {
    let rt = shell_quote(runtime_of(inst));
    let mut s = format!(
        "command -v {rt} >/dev/null 2>&1 || {{ echo \"runtime \"{rt}\" not found on the host\" >&2; exit 127; }}\n"
    );
    if with_env {
        s.push_str(
            "umask 077\nkz_env=$(mktemp) || exit 1\ntrap 'rm -f \"$kz_env\"' EXIT\n\
             trap 'exit 130' INT TERM HUP\ncat > \"$kz_env\" || exit 1\n",
        );
    }
    for v in texts(known(inst, "volumes")) {
        if let Ok(n) = normal::volume(v) {
            let host = n.split(':').next().unwrap_or("");
            s.push_str(&format!("mkdir -p -- {} || exit 1\n", shell_quote(host)));
        }
    }
    s.push_str(&pull_script(&rt, inst));
    // A stopped container of that name (the plan saw it not running) makes way.
    s.push_str(&format!(
        "{rt} rm -f -- {} >/dev/null 2>&1\n",
        shell_quote(container_name(inst))
    ));
    s.push_str(&format!(
        "{rt} run {}\n",
        run_args(inst, with_env)?.join(" ")
    ));
    Ok(s)
}

async fn run(
    t: &dyn Transport,
    step: &str,
    script: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<String, ProviderError> {
    let out = t
        .run(CommandSpec {
            script,
            stdin,
            timeout,
            public_script: false,
        })
        .await
        .map_err(|e| ProviderError::transport(step, e))?;
    if out.status == 0 {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(ProviderError::new(
            step,
            format!(
                "exit status {}: {}",
                out.status,
                crate::tail(&out.stderr, 5)
            ),
        ))
    }
}

/// Creates and starts the container, then waits until it runs (and is healthy).
pub(super) async fn create(cx: &ApplyCtx) -> Result<Applied, ProviderError> {
    let inst = cx.instance();
    super::check_runtime(inst).map_err(|e| ProviderError::new("runtime", e))?;
    let env = env_file(inst)?;
    let script = create_script(inst, env.is_some())?;
    let t = cx.own_transport().await?;
    cx.progress(format!("starting container {}", container_name(inst)));
    let timeout = CREATE_TIMEOUT.max(t.command_timeout());
    let id = run(&*t, "run", script, env, timeout).await?;
    let image_id = match wait::until_ready(cx, &*t).await {
        Ok(image) => image,
        Err(mut e) => {
            // A container that never became ready is not the one declared: left running, the next
            // plan would find it matching and adopt it. Its log tail is already in the error.
            let rm = format!(
                "{} rm -f -- {} >/dev/null 2>&1",
                shell_quote(runtime_of(inst)),
                shell_quote(container_name(inst))
            );
            let removed = run(&*t, "rm", rm, None, t.command_timeout()).await.is_ok();
            e.message.push_str(if removed {
                "\n(the container was removed: the next plan creates it again)"
            } else {
                "\n(the container could not be removed: remove it before applying again)"
            });
            return Err(e);
        }
    };
    let mut outputs = std::collections::BTreeMap::new();
    let id = id.lines().last().unwrap_or("").to_string();
    outputs.insert("container_id".into(), Value::Text(id));
    outputs.insert("image_id".into(), Value::Text(image_id));
    Ok(Applied {
        outputs,
        note: None,
    })
}

/// Stops (within its stop timeout) and removes the container; volumes and host directories stay.
pub(super) async fn delete(cx: &ApplyCtx) -> Result<Applied, ProviderError> {
    let inst = cx.instance();
    let rt = shell_quote(runtime_of(inst));
    let n = shell_quote(container_name(inst));
    let secs = stop_secs(inst);
    let script = format!(
        "command -v {rt} >/dev/null 2>&1 || exit 0\n\
         if {rt} container inspect -- {n} >/dev/null 2>&1; then\n\
         {rt} stop -t {secs} -- {n} >/dev/null 2>&1\n{rt} rm -f -- {n} >/dev/null || exit 1\nfi\n"
    );
    let t = cx.own_transport().await?;
    cx.progress(format!("stopping container {}", container_name(inst)));
    let timeout = t.command_timeout() + Duration::from_secs(secs + 30);
    run(&*t, "remove", script, None, timeout).await?;
    Ok(Applied::default())
}

/// The attributes a runtime can change in place.
const UPDATABLE: [&str; 3] = ["restart", "memory", "cpus"];

/// Changes the restart policy and limits in place with `docker update`. Podman 4 cannot change
/// a restart policy in place, and its `update` of limits is not shown by `inspect` (so the next
/// plan would see drift): there the container is recreated, and the report says so.
pub(super) async fn update(cx: &ApplyCtx) -> Result<Applied, ProviderError> {
    let inst = cx.instance();
    let changed: Vec<&str> = cx
        .changed()
        .iter()
        .map(String::as_str)
        .filter(|c| UPDATABLE.contains(c))
        .collect();
    if changed.is_empty() {
        return Ok(Applied {
            outputs: inst.outputs.clone(),
            note: None,
        });
    }
    if runtime_of(inst) != "docker" {
        delete(cx).await?;
        let mut applied = create(cx).await?;
        applied.note = Some(format!(
            "recreated: {} cannot change {} in place",
            runtime_of(inst),
            changed.join(", ")
        ));
        return Ok(applied);
    }
    let mut args = Vec::new();
    if let Some(r) = inst.text("restart") {
        args.push(format!("--restart {}", shell_quote(r)));
    }
    if let Some(m) = inst.text("memory") {
        let b = normal::memory(m).map_err(|e| ProviderError::new("memory", e))?;
        // Docker refuses a memory limit above the swap limit it set at creation (twice the memory).
        args.push(format!(
            "--memory {b} --memory-swap {}",
            b.saturating_mul(2)
        ));
    }
    if let Some(c) = inst.text("cpus") {
        args.push(format!("--cpus {}", shell_quote(c)));
    }
    let script = format!(
        "docker update {} -- {} >/dev/null\n",
        args.join(" "),
        shell_quote(container_name(inst))
    );
    let t = cx.own_transport().await?;
    run(&*t, "update", script, None, t.command_timeout()).await?;
    Ok(Applied {
        outputs: inst.outputs.clone(),
        note: None,
    })
}
