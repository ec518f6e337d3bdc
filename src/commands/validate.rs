//! `kz validate` and `kz graph`: the stack alone, no state, no host.

use std::path::Path;

use super::{CmdResult, OK, count, load};
use crate::output::Shell;

pub(super) fn validate(shell: &Shell, dir: &Path) -> CmdResult {
    let s = load(shell, dir)?;
    // Drills are named only when there are some, so existing output stays as it was.
    let drills = if s.drills.is_empty() {
        String::new()
    } else {
        format!(", {}", count(s.drills.len(), "drill"))
    };
    shell.outln(&format!(
        "Stack `{}` is valid: {}, {}, {}{drills}.",
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
