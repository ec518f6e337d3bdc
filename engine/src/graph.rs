//! The dependency graph: instances plus two barrier nodes per module, so that
//! `module.depends_on` costs O(instances + modules) edges instead of N x M.
//!
//! Edges point from a dependency to its dependent: a node may start once all its predecessors are done.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use petgraph::Direction;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::{Address, Instance, Module};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An index into the instance slice the graph was built from.
    Instance(usize),
    /// Done when every module this module depends on is done.
    ModuleStart(String),
    /// Done when every instance of the module is done.
    ModuleDone(String),
}

#[derive(Debug)]
pub struct DepGraph {
    pub graph: DiGraph<Node, ()>,
    pub instance_nodes: Vec<NodeIndex>,
}

/// A dependency cycle, as the addresses (or `module NAME`) along it, first repeated at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub members: Vec<String>,
}

/// Module dependencies by module name, as declared or as recorded in state.
pub fn module_deps(modules: &BTreeMap<String, Module>) -> BTreeMap<String, Vec<String>> {
    modules
        .iter()
        .map(|(k, m)| (k.clone(), m.depends_on.clone()))
        .collect()
}

impl DepGraph {
    pub fn build(
        instances: &[Instance],
        modules: &BTreeMap<String, Module>,
    ) -> Result<DepGraph, Cycle> {
        Self::build_with(instances, &module_deps(modules))
    }

    pub fn build_with(
        instances: &[Instance],
        module_deps: &BTreeMap<String, Vec<String>>,
    ) -> Result<DepGraph, Cycle> {
        let mut graph = DiGraph::with_capacity(instances.len() + 2 * module_deps.len(), 0);
        let mut barriers: HashMap<&str, (NodeIndex, NodeIndex)> = HashMap::new();
        let add_module = |graph: &mut DiGraph<Node, ()>, name: &str| -> (NodeIndex, NodeIndex) {
            let start = graph.add_node(Node::ModuleStart(name.to_string()));
            let done = graph.add_node(Node::ModuleDone(name.to_string()));
            graph.add_edge(start, done, ());
            (start, done)
        };
        for name in module_deps.keys() {
            let b = add_module(&mut graph, name);
            barriers.insert(name, b);
        }
        for inst in instances {
            if !barriers.contains_key(inst.address.module.as_str()) {
                let b = add_module(&mut graph, &inst.address.module);
                barriers.insert(&inst.address.module, b);
            }
        }
        for (name, deps) in module_deps {
            let (start, _) = barriers[name.as_str()];
            for dep in deps {
                if let Some((_, done)) = barriers.get(dep.as_str()) {
                    graph.add_edge(*done, start, ());
                }
            }
        }
        let mut by_address: HashMap<&Address, NodeIndex> = HashMap::with_capacity(instances.len());
        let mut instance_nodes = Vec::with_capacity(instances.len());
        for (i, inst) in instances.iter().enumerate() {
            let n = graph.add_node(Node::Instance(i));
            let (start, done) = barriers[inst.address.module.as_str()];
            graph.add_edge(start, n, ());
            graph.add_edge(n, done, ());
            by_address.insert(&inst.address, n);
            instance_nodes.push(n);
        }
        for (i, inst) in instances.iter().enumerate() {
            let mut seen = HashSet::new();
            for dep in &inst.depends_on {
                if let Some(d) = by_address.get(dep)
                    && seen.insert(*d)
                {
                    graph.add_edge(*d, instance_nodes[i], ());
                }
            }
        }
        let g = DepGraph {
            graph,
            instance_nodes,
        };
        match toposort(&g.graph, None) {
            Ok(_) => Ok(g),
            Err(c) => Err(g.cycle_through(c.node_id(), instances)),
        }
    }

    fn label(&self, n: NodeIndex, instances: &[Instance]) -> String {
        match &self.graph[n] {
            Node::Instance(i) => instances[*i].address.to_string(),
            Node::ModuleStart(m) | Node::ModuleDone(m) => format!("module {m}"),
        }
    }

    /// Finds a cycle through the strongly connected component of `start` and names its members.
    fn cycle_through(&self, start: NodeIndex, instances: &[Instance]) -> Cycle {
        let scc = tarjan_scc(&self.graph)
            .into_iter()
            .find(|c| c.contains(&start))
            .unwrap_or_else(|| vec![start]);
        let in_scc: HashSet<NodeIndex> = scc.iter().copied().collect();
        // Walk successors inside the component until a node repeats: that loop is a cycle.
        let mut path = vec![start];
        let mut pos: HashMap<NodeIndex, usize> = HashMap::from([(start, 0)]);
        let mut cur = start;
        while let Some(next) = self
            .graph
            .neighbors_directed(cur, Direction::Outgoing)
            .find(|n| in_scc.contains(n))
        {
            if let Some(&p) = pos.get(&next) {
                path.drain(..p);
                path.push(next);
                break;
            }
            pos.insert(next, path.len());
            path.push(next);
            cur = next;
        }
        let mut members: Vec<String> = Vec::new();
        for n in path {
            let l = self.label(n, instances);
            // A module's start and done barriers read as one step.
            if !(l.starts_with("module ") && members.last() == Some(&l)) {
                members.push(l);
            }
        }
        // Rotate so the cycle starts at an instance when it has one: easier to read.
        if let Some(i) = members.iter().position(|m| !m.starts_with("module ")) {
            members.pop();
            members.rotate_left(i);
            members.push(members[0].clone());
        }
        Cycle { members }
    }
}

/// Graphviz DOT of a stack: one cluster per module, instances as nodes, module order as dashed
/// edges between clusters (`ltail`/`lhead`, which Graphviz honours only with `compound=true`).
pub fn to_dot(instances: &[Instance], modules: &BTreeMap<String, Module>) -> String {
    let mut out = String::from(
        "digraph kz {\n  rankdir=LR;\n  compound=true;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    let mut by_module: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for m in modules.keys() {
        by_module.entry(m).or_default();
    }
    for i in instances {
        by_module.entry(&i.address.module).or_default().push(i);
    }
    for (m, insts) in &by_module {
        let _ = writeln!(out, "  subgraph \"cluster_{m}\" {{\n    label=\"{m}\";");
        let _ = writeln!(out, "    \"module:{m}\" [shape=point, style=invis];");
        for i in insts {
            let _ = writeln!(out, "    \"{}\";", i.address);
        }
        out.push_str("  }\n");
    }
    for i in instances {
        for d in &i.depends_on {
            let _ = writeln!(out, "  \"{d}\" -> \"{}\";", i.address);
        }
    }
    for (name, m) in modules {
        for d in &m.depends_on {
            let _ = writeln!(
                out,
                "  \"module:{d}\" -> \"module:{name}\" [ltail=\"cluster_{d}\", lhead=\"cluster_{name}\", style=dashed];"
            );
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_edges_end_at_the_clusters() {
        let modules = BTreeMap::from([
            ("10_a".to_string(), Module::default()),
            (
                "20_b".to_string(),
                Module {
                    depends_on: vec!["10_a".into()],
                    ..Module::default()
                },
            ),
        ]);
        let dot = to_dot(&[], &modules);
        assert!(dot.contains("lhead=\"cluster_20_b\""), "{dot}");
        // Without it, Graphviz ignores ltail/lhead and the edge ends in empty space.
        assert!(dot.contains("  compound=true;\n"), "{dot}");
    }
}
