//! `kz destroy`: delete everything the state records (or what the targets name).

use kz_engine::ops::destroy_plan;
use kz_engine::render::render_plan;

use super::apply::{Applying, execute};
use super::{CmdResult, OK, confirmed, lock, open_for_plan, parallelism, read_state, runtime};
use crate::cli::DestroyArgs;
use crate::output::Shell;

pub(super) async fn destroy_cmd(shell: &Shell, args: DestroyArgs, command_line: &str) -> CmdResult {
    // Unlike apply, destroy needs no secret up front: only a `destroy` command that uses one
    // does, and it fails naming it.
    let ws = open_for_plan(shell, &args.dir, args.lab)?;
    let guard = lock(shell, &ws, command_line, args.lock.lock_timeout).await?;
    let Some(state) = read_state(&ws).await? else {
        shell.outln("Nothing to destroy: this stack has no state.");
        return Ok(OK);
    };
    let a = Applying {
        ws,
        lock: guard,
        state,
        existed: true,
    };
    let p = destroy_plan(&a.ws, &a.state, &args.targets);
    shell.out(&render_plan(&p, &shell.style));
    if !p.has_changes() {
        return Ok(OK);
    }
    confirmed(
        shell,
        args.yes,
        "\nDestroy these resources? They are deleted from the hosts.",
    )?;
    let par = parallelism(&a.ws, args.parallelism);
    let run_env = runtime(&a.ws);
    Ok(execute(shell, a, &run_env, &p, par, command_line, "Destroy").await)
}
