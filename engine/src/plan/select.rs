//! Which instances a plan covers: all, or the `--target`s and everything they depend on.

use std::collections::HashSet;

use petgraph::Direction;

use super::PlanInputError;
use crate::graph::{DepGraph, Node};
use crate::model::Stack;

/// Whether a `--target` value names this instance (by address, resource or module).
pub fn matches_target(target: &str, address: &str, resource: &str, module: &str) -> bool {
    target == address || target == resource || target == module
}

/// The instances a plan covers: all, or the targets plus everything they depend on.
pub fn select(
    stack: &Stack,
    graph: &DepGraph,
    targets: &[String],
) -> Result<Vec<bool>, PlanInputError> {
    if targets.is_empty() {
        return Ok(vec![true; stack.instances.len()]);
    }
    let mut selected = vec![false; stack.instances.len()];
    let mut stack_nodes = Vec::new();
    for t in targets {
        let mut hit = false;
        for (i, inst) in stack.instances.iter().enumerate() {
            let a = &inst.address;
            if matches_target(t, &a.to_string(), &a.resource(), &a.module) {
                stack_nodes.push(graph.instance_nodes[i]);
                hit = true;
            }
        }
        if !hit && !stack.modules.contains_key(t) {
            stack_nodes.clear();
            return Err(PlanInputError::UnknownTarget(t.clone()));
        }
    }
    // Walk dependencies backwards from the targets.
    let mut seen: HashSet<_> = stack_nodes.iter().copied().collect();
    while let Some(n) = stack_nodes.pop() {
        if let Node::Instance(i) = graph.graph[n] {
            selected[i] = true;
        }
        for p in graph.graph.neighbors_directed(n, Direction::Incoming) {
            if seen.insert(p) {
                stack_nodes.push(p);
            }
        }
    }
    Ok(selected)
}

/// The recorded instances the stack no longer declares, within the `--target`s: they are deleted.
pub(super) fn deleted_in_scope<'s>(
    stack: &Stack,
    state: Option<&'s kz_state::State>,
    targets: &[String],
) -> Vec<(&'s String, &'s kz_state::ResourceState)> {
    let Some(s) = state else {
        return Vec::new();
    };
    let declared: HashSet<String> = stack
        .instances
        .iter()
        .map(|i| i.address.to_string())
        .collect();
    s.resources
        .iter()
        .filter(|(a, _)| !declared.contains(*a))
        .filter(|(a, r)| {
            targets.is_empty()
                || targets.iter().any(|t| {
                    matches_target(
                        t,
                        a,
                        &format!("{}.{}.{}", r.module, r.kind, r.name),
                        &r.module,
                    )
                })
        })
        .collect()
}
