//! `kz verify`: every health check, once, read-only; a report per module; exit 0 only when
//! every module passes.

use kz_engine::render::render_verify;
use kz_engine::verify::verify;

use super::{
    CmdResult, FAILED, OK, open_for_plan, parallelism, read_state, runtime_with, unless_interrupted,
};
use crate::cli::VerifyArgs;
use crate::output::Shell;

pub(super) async fn verify_cmd(shell: &Shell, args: VerifyArgs) -> CmdResult {
    let ws = open_for_plan(shell, &args.dir, args.lab)?;
    let state = read_state(&ws).await?;
    let (run_env, transports) = runtime_with(&ws);
    let mut report = unless_interrupted(
        &transports,
        verify(
            &ws.stack,
            state.as_ref(),
            &args.modules,
            parallelism(&ws, args.parallelism),
            &run_env,
        ),
    )
    .await?
    .map_err(|e| e.to_string())?;
    report.lab = args.lab;
    if args.json {
        shell.outln(&serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        shell.out(&render_verify(&report, &shell.style));
    }
    Ok(if report.passed { OK } else { FAILED })
}
