//! `kz state ...`: inspect and repair the state, view its history, move it between backends.

use std::path::Path;

use kz_engine::ops::Workspace;

use crate::backend::{StateChoice, open_backend};
use kz_state::BackendConfig;
use kz_state::{LockInfo, State};

use super::{CmdResult, Failure, OK, confirmed, lock, open};
use crate::cli::{BackendChoice, StateCommand};
use crate::output::Shell;

pub(super) async fn run(shell: &Shell, cmd: StateCommand, command_line: &str) -> CmdResult {
    match cmd {
        StateCommand::List { dir } => list(shell, &dir).await,
        StateCommand::Show { dir, address } => show(shell, &dir, &address).await,
        StateCommand::Rm {
            dir,
            addresses,
            lock: l,
        } => rm(shell, &dir, &addresses, l.lock_timeout, command_line).await,
        StateCommand::History { dir } => history(shell, &dir).await,
        StateCommand::Rollback {
            dir,
            serial,
            yes,
            lock: l,
        } => rollback(shell, &dir, serial, yes, l.lock_timeout, command_line).await,
        StateCommand::Migrate {
            dir,
            to,
            url_env,
            schema,
            lock: l,
        } => {
            migrate(
                shell,
                &dir,
                to,
                url_env,
                schema,
                l.lock_timeout,
                command_line,
            )
            .await
        }
        StateCommand::Push {
            dir,
            file,
            force,
            lock: l,
        } => push(shell, &dir, &file, force, l.lock_timeout, command_line).await,
    }
}

/// The state, which must exist.
async fn existing(ws: &Workspace) -> Result<State, Failure> {
    ws.backend
        .read()
        .await?
        .ok_or_else(|| format!("this stack has no state yet ({})", ws.backend.describe()).into())
}

async fn list(shell: &Shell, dir: &Path) -> CmdResult {
    let ws = open(shell, dir)?;
    match ws.backend.read().await {
        Ok(Some(s)) => {
            for addr in s.resources.keys() {
                shell.outln(&shell.style.safe(addr));
            }
            Ok(OK)
        }
        Ok(None) => Ok(OK),
        Err(e) => Err(e.into()),
    }
}

async fn show(shell: &Shell, dir: &Path, address: &str) -> CmdResult {
    let ws = open(shell, dir)?;
    let state = match ws.backend.read().await {
        Ok(s) => s,
        Err(e) => return Err(e.into()),
    };
    let Some(r) = state.as_ref().and_then(|s| s.resources.get(address)) else {
        shell.error(&format!(
            "`{address}` is not in the state (see kz state list)"
        ));
        return Err(Failure::Shown);
    };
    shell.outln(&shell.style.bold(&shell.style.safe(address)));
    shell.outln(&format!("  host:       {}", r.host));
    shell.outln(&format!("  created_at: {}", r.created_at));
    shell.outln(&format!("  updated_at: {}", r.updated_at));
    if !r.depends_on.is_empty() {
        shell.outln(&format!("  depends_on: {}", r.depends_on.join(", ")));
    }
    for (k, a) in &r.attributes {
        let shown = kz_engine::plan::shown(&kz_engine::record::read_attr(a));
        let text = match shown {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        shell.outln(&format!("  {k} = {}", shell.style.safe(&text)));
    }
    Ok(OK)
}

async fn rm(
    shell: &Shell,
    dir: &Path,
    addresses: &[String],
    timeout: std::time::Duration,
    command_line: &str,
) -> CmdResult {
    let ws = open(shell, dir)?;
    let guard = lock(shell, &ws, command_line, timeout).await?;
    let mut state = existing(&ws).await?;
    for a in addresses {
        if state.resources.remove(a).is_none() {
            shell.error(&format!("`{a}` is not in the state; nothing was removed"));
            return Err(Failure::Shown);
        }
    }
    if let Err(e) = ws
        .backend
        .write(&mut state, &LockInfo::current(command_line))
        .await
    {
        return Err(e.into());
    }
    drop(guard);
    for a in addresses {
        shell.outln(&format!(
            "Removed {a} from the state (the host was not touched)."
        ));
    }
    Ok(OK)
}

async fn history(shell: &Shell, dir: &Path) -> CmdResult {
    let ws = open(shell, dir)?;
    let entries = match ws.backend.history().await {
        Ok(h) => h,
        Err(e) => return Err(e.into()),
    };
    if entries.is_empty() {
        shell.outln("No stored version yet.");
        return Ok(OK);
    }
    shell.outln(&format!(
        "{:>6}  {:<20}  {:<12}  {}",
        "serial", "written at (UTC)", "changes", "by"
    ));
    for e in &entries {
        shell.outln(&format!(
            "{:>6}  {:<20}  {:<12}  {}",
            e.serial,
            e.at,
            e.summary,
            shell.style.safe(&e.who)
        ));
    }
    Ok(OK)
}

async fn rollback(
    shell: &Shell,
    dir: &Path,
    serial: u64,
    yes: bool,
    timeout: std::time::Duration,
    command_line: &str,
) -> CmdResult {
    let ws = open(shell, dir)?;
    let _guard = lock(shell, &ws, command_line, timeout).await?;
    let current = existing(&ws).await?;
    let mut old = match ws.backend.version(serial).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            shell.error(&format!(
                "no stored version with serial {serial} (see kz state history)"
            ));
            return Err(Failure::Shown);
        }
        Err(e) => return Err(e.into()),
    };
    if old.lineage != current.lineage {
        shell.error(&format!(
            "version {serial} belongs to another lineage ({}) than the current state ({})",
            old.lineage, current.lineage
        ));
        return Err(Failure::Shown);
    }
    let summary = kz_state::summarize(Some(&current), &old);
    confirmed(
        shell,
        yes,
        &format!(
            "Restore serial {serial} over the current serial {} ({summary} resources)? The hosts are not touched.",
            current.serial
        ),
    )?;
    // Written as the next serial, so history keeps the version it replaces.
    old.serial = current.serial;
    if let Err(e) = ws
        .backend
        .write(&mut old, &LockInfo::current(command_line))
        .await
    {
        return Err(e.into());
    }
    shell.outln(&format!(
        "Restored serial {serial} as serial {}. Run kz plan to see what the hosts need.",
        old.serial
    ));
    Ok(OK)
}

#[allow(clippy::too_many_arguments)]
async fn migrate(
    shell: &Shell,
    dir: &Path,
    to: BackendChoice,
    url_env: Option<String>,
    schema: Option<String>,
    timeout: std::time::Duration,
    command_line: &str,
) -> CmdResult {
    let ws = open(shell, dir)?;
    let target_kind = match to {
        BackendChoice::Local => BackendConfig::Local,
        BackendChoice::Postgres => {
            let schema = schema.clone().unwrap_or_else(|| "kz".into());
            if !kz_state::config::valid_schema(&schema) {
                shell.error(&format!(
                    "invalid schema `{schema}`: lower-case letters, digits and `_`"
                ));
                return Err(Failure::Shown);
            }
            BackendConfig::Postgres {
                url_env: url_env.clone(),
                schema,
                retry: kz_state::config::DEFAULT_RETRY,
            }
        }
    };
    if std::mem::discriminant(&target_kind) == std::mem::discriminant(&ws.stack.state.backend) {
        shell.error(&format!(
            "the state is already on this backend ({})",
            ws.backend.describe()
        ));
        return Err(Failure::Shown);
    }
    let target = match open_backend(&ws.stack, &StateChoice::Configured(target_kind.clone())) {
        Ok(b) => b,
        Err(e) => {
            shell.error(&e);
            return Err(Failure::Shown);
        }
    };
    let who = LockInfo::current(command_line);
    let _source_lock = lock(shell, &ws, command_line, timeout).await?;
    let _target_lock = match target.lock(&who, timeout).await {
        Ok(l) => l,
        Err(e) => return Err(e.into()),
    };
    let state = existing(&ws).await?;
    if let Err(e) = target.import(&state, &who).await {
        return Err(e.into());
    }
    // Verified: the copy reads back identical, same lineage and serial.
    match target.read().await {
        Ok(Some(copy)) if copy == state => {}
        Ok(_) => {
            shell.error(&format!(
                "the copy in {} does not read back identical; stack.toml was not changed",
                target.describe()
            ));
            return Err(Failure::Shown);
        }
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = switch_stack_toml(&ws.stack.dir.join("stack.toml"), &target_kind) {
        shell.error(&format!(
            "the state was copied to {} but stack.toml could not be updated: {e}",
            target.describe()
        ));
        return Err(Failure::Shown);
    }
    shell.outln(&format!(
        "Copied the state (lineage {}, serial {}) from {} to {}, verified it, and switched stack.toml to it.\nThe old copy was left in place; commit stack.toml.",
        state.lineage,
        state.serial,
        ws.backend.describe(),
        target.describe()
    ));
    Ok(OK)
}

/// Rewrites the `[state]` table of stack.toml, keeping the rest of the file (comments included).
fn switch_stack_toml(path: &Path, kind: &BackendConfig) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| e.to_string())?;
    if !doc.contains_table("state") {
        doc["state"] = toml_edit::table();
    }
    let Some(state) = doc["state"].as_table_mut() else {
        return Err("[state] is not a table".into());
    };
    for k in ["url_env", "schema", "retry"] {
        state.remove(k);
    }
    match kind {
        BackendConfig::Local => {
            state["backend"] = toml_edit::value("local");
        }
        BackendConfig::Postgres {
            url_env, schema, ..
        } => {
            state["backend"] = toml_edit::value("postgres");
            if let Some(u) = url_env {
                state["url_env"] = toml_edit::value(u.as_str());
            }
            if schema != "kz" {
                state["schema"] = toml_edit::value(schema.as_str());
            }
        }
    }
    kz_engine::ops::write_text_atomically(path, &doc.to_string())
}

async fn push(
    shell: &Shell,
    dir: &Path,
    file: &Path,
    force: bool,
    timeout: std::time::Duration,
    command_line: &str,
) -> CmdResult {
    let ws = open(shell, dir)?;
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            shell.error(&format!("cannot read {}: {e}", file.display()));
            return Err(Failure::Shown);
        }
    };
    let mut pushed: State = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            shell.error(&format!("{} is not a kz state: {e}", file.display()));
            return Err(Failure::Shown);
        }
    };
    let _guard = lock(shell, &ws, command_line, timeout).await?;
    let current = match ws.backend.read().await {
        Ok(c) => c,
        Err(e) => return Err(e.into()),
    };
    if let Some(c) = &current {
        if c.lineage != pushed.lineage {
            shell.error(&format!(
                "{} holds another lineage ({}) than {} ({}); refusing to replace it",
                ws.backend.describe(),
                c.lineage,
                file.display(),
                pushed.lineage
            ));
            return Err(Failure::Shown);
        }
        if c.serial != pushed.serial {
            if !force {
                shell.error(&format!(
                    "{} moved on since {} was written (serial {} there, {} in the file); check kz state history, then push with --force",
                    ws.backend.describe(),
                    file.display(),
                    c.serial,
                    pushed.serial
                ));
                return Err(Failure::Shown);
            }
            pushed.serial = c.serial;
        }
    } else {
        pushed.serial = 0;
    }
    if let Err(e) = ws
        .backend
        .write(&mut pushed, &LockInfo::current(command_line))
        .await
    {
        return Err(e.into());
    }
    if file == ws.rescue_path().as_path()
        || file.canonicalize().ok() == ws.rescue_path().canonicalize().ok()
    {
        let _ = std::fs::remove_file(file);
    }
    shell.outln(&format!(
        "Pushed {} to {} as serial {}.",
        file.display(),
        ws.backend.describe(),
        pushed.serial
    ));
    Ok(OK)
}
