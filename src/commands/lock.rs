//! `kz force-unlock`: break a state lock whose holder is gone.

use std::path::Path;

use super::{CmdResult, OK, open};
use crate::output::Shell;

pub(super) async fn force_unlock(shell: &Shell, dir: &Path) -> CmdResult {
    let ws = open(shell, dir)?;
    let Some(holder) = ws.backend.lock_holder().await? else {
        shell.outln("The state is not locked.");
        return Ok(OK);
    };
    ws.backend.force_unlock().await?;
    let who = holder.to_string();
    shell.outln(&format!(
        "Broke the lock held by {who}. If that process is still running, stop it: it no longer excludes others."
    ));
    Ok(OK)
}
