//! `kz validate` and `kz graph`: the stack alone, no state, no host.

use std::path::Path;

use super::{CmdResult, OK, count, load};
use crate::output::Shell;

pub(super) fn validate(shell: &Shell, dir: &Path) -> CmdResult {
    let s = load(shell, dir)?;
    shell.outln(&format!(
        "Stack `{}` is valid: {}, {}, {}.",
        s.name,
        count(s.hosts.len(), "host"),
        count(s.modules.len(), "module"),
        count(s.instances.len(), "resource instance"),
    ));
    Ok(OK)
}

pub(super) fn graph(shell: &Shell, dir: &Path) -> CmdResult {
    let stack = load(shell, dir)?;
    shell.out(&kz_engine::graph::to_dot(&stack.instances, &stack.modules));
    Ok(OK)
}
