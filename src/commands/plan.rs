//! `kz plan`: read the hosts, compare, show (or save) what would change.

use kz_engine::ops::write_plan_file;
use kz_engine::plan::{PlanOptions, plan};
use kz_engine::render::render_plan;

use super::{
    CHANGES, CmdResult, FAILED, OK, open_for_plan, parallelism, read_state, runtime_with,
    unless_interrupted,
};
use crate::cli::PlanArgs;
use crate::output::Shell;

pub(super) async fn plan_cmd(shell: &Shell, args: PlanArgs) -> CmdResult {
    let ws = open_for_plan(shell, &args.dir, args.lab)?;
    if args.out.is_some() {
        ws.require_secrets()
            .map_err(|e| e.replace("refusing to apply", "refusing to save a plan"))?;
    }
    let state = read_state(&ws).await?;
    let opts = PlanOptions {
        refresh: args.refresh,
        targets: args.targets,
        replace: args.replace,
        parallelism: parallelism(&ws, args.parallelism),
    };
    let (run_env, transports) = runtime_with(&ws);
    let mut p = unless_interrupted(
        &transports,
        plan(&ws.stack, state.as_ref(), &opts, &run_env),
    )
    .await?
    .map_err(|e| e.to_string())?;
    if let Some(out) = &args.out {
        let dir = std::fs::canonicalize(&ws.stack.dir).unwrap_or_else(|_| ws.stack.dir.clone());
        p.stack_dir = Some(dir.to_string_lossy().into_owned());
        p.secrets_digest = Some(ws.secrets_digest(&kz_engine::random_hex(16)));
        p.lab = args.lab;
        write_plan_file(out, &p)?;
    }
    if args.json {
        shell.outln(&serde_json::to_string_pretty(&p).map_err(|e| e.to_string())?);
    } else {
        shell.out(&render_plan(&p, &shell.style));
        if let Some(out) = &args.out {
            shell.outln(&format!(
                "\nSaved the plan to {}; apply it with: kz apply {}",
                out.display(),
                out.display()
            ));
        }
    }
    Ok(if !p.errors.is_empty() {
        FAILED
    } else if args.detailed_exitcode && p.has_changes() {
        CHANGES
    } else {
        OK
    })
}
