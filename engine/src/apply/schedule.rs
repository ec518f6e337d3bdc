//! The dependency bookkeeping of one graph run.

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::graph::Node;

/// The dependency bookkeeping of one graph run: how many predecessors each node still waits for,
/// what failure blocks it, and which nodes are ready.
pub(super) struct Schedule<'g> {
    graph: &'g DiGraph<Node, ()>,
    /// The direction in which "done" propagates: to dependents, or (in reverse) to dependencies.
    after: Direction,
    remaining: Vec<usize>,
    pub(super) blocked_by: Vec<Option<String>>,
    /// Something this node depends on (directly or not) changed in this run: its gate runs.
    pub(super) changed_above: Vec<bool>,
    pub(super) ready: Vec<NodeIndex>,
}

impl<'g> Schedule<'g> {
    pub(super) fn new(graph: &'g DiGraph<Node, ()>, reverse: bool) -> Schedule<'g> {
        let (before, after) = if reverse {
            (Direction::Outgoing, Direction::Incoming)
        } else {
            (Direction::Incoming, Direction::Outgoing)
        };
        let remaining: Vec<usize> = graph
            .node_indices()
            .map(|n| graph.neighbors_directed(n, before).count())
            .collect();
        let ready = graph
            .node_indices()
            .filter(|n| remaining[n.index()] == 0)
            .collect();
        Schedule {
            graph,
            after,
            remaining,
            blocked_by: vec![None; graph.node_count()],
            changed_above: vec![false; graph.node_count()],
            ready,
        }
    }

    /// Records that `n` changed something, for the gates below it.
    pub(super) fn changed(&mut self, n: NodeIndex) {
        self.changed_above[n.index()] = true;
    }

    /// Marks `n` done; its followers inherit `blocked` (the failure that stops them), if any, and
    /// whether anything at or above `n` changed.
    pub(super) fn settle(&mut self, n: NodeIndex, blocked: Option<String>) {
        let changed = self.changed_above[n.index()];
        for s in self.graph.neighbors_directed(n, self.after) {
            let i = s.index();
            self.changed_above[i] |= changed;
            if blocked.is_some() && self.blocked_by[i].is_none() {
                self.blocked_by[i].clone_from(&blocked);
            }
            self.remaining[i] -= 1;
            if self.remaining[i] == 0 {
                self.ready.push(s);
            }
        }
    }
}
