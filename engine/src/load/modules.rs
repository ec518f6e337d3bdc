//! Module files: each read into its `[module]` table and its resource tables; module order
//! checked for cycles.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, ValueDeserializer};

use super::{Loader, ParsedModule, loc, raw, resources};
use crate::diag::{Diagnostic, Location, SourceFile};

impl Loader<'_> {
    /// Reads a module file: its `[module]` table, and the rest (resource tables) for the
    /// providers.
    pub(super) fn module_file(
        &mut self,
        src: &Arc<SourceFile>,
    ) -> Option<(Option<raw::ModuleTable>, DeTable<'static>)> {
        let mut doc = self.parse_document(src)?;
        let module = match doc.remove("module") {
            None => None,
            Some(v) => match raw::ModuleTable::deserialize(ValueDeserializer::from(v)) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.toml_error(src, &e);
                    return None;
                }
            },
        };
        Some((module, doc))
    }

    /// The module files of the stack: every `*.toml` but `stack.toml`, sorted by name.
    pub(super) fn module_files(&mut self) -> Vec<String> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                self.error(Diagnostic::new(format!(
                    "{}: cannot list: {e}",
                    self.dir.display()
                )));
                return Vec::new();
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            // A module file may be a symbolic link: follow it, like stack.toml.
            .filter(|e| fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".toml") && n != "stack.toml" && !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Finds a cycle among `[module] depends_on` and reports it at the entry that closes it.
    pub(super) fn module_cycles(&mut self, parsed: &[ParsedModule]) {
        let deps: BTreeMap<&str, Vec<&Spanned<String>>> = parsed
            .iter()
            .map(|(name, _, m, _)| {
                let d = m
                    .as_ref()
                    .map(|t| t.depends_on.iter().collect())
                    .unwrap_or_default();
                (name.as_str(), d)
            })
            .collect();
        let src_of = |name: &str| {
            parsed
                .iter()
                .find(|(n, _, _, _)| n == name)
                .map(|(_, s, _, _)| s)
        };
        // Depth-first search with the current path; the first back edge found is the cycle.
        fn visit<'a>(
            m: &'a str,
            deps: &BTreeMap<&'a str, Vec<&'a Spanned<String>>>,
            path: &mut Vec<&'a str>,
            done: &mut HashSet<&'a str>,
        ) -> Option<(Vec<&'a str>, &'a Spanned<String>)> {
            if done.contains(m) {
                return None;
            }
            path.push(m);
            for d in deps.get(m).into_iter().flatten() {
                let target = d.get_ref().as_str();
                if let Some(i) = path.iter().position(|p| *p == target) {
                    let mut cycle = path[i..].to_vec();
                    cycle.push(target);
                    return Some((cycle, d));
                }
                if let Some(found) = visit(target, deps, path, done) {
                    return Some(found);
                }
            }
            path.pop();
            done.insert(m);
            None
        }
        let mut done = HashSet::new();
        for m in deps.keys() {
            let mut path = Vec::new();
            let Some((cycle, entry)) = visit(m, &deps, &mut path, &mut done) else {
                continue;
            };
            // The entry that closes the cycle belongs to the module before the last.
            let owner = cycle[cycle.len() - 2];
            let Some(src) = src_of(owner) else { return };
            let d = if cycle.len() == 2 {
                Diagnostic::at(
                    loc(src, entry),
                    format!("module `{owner}` depends on itself"),
                )
            } else {
                // Start the note at the module whose entry is shown.
                let mut order: Vec<&str> = vec![owner];
                order.extend(&cycle[..cycle.len() - 1]);
                order.dedup();
                if order.first() != order.last() {
                    order.push(owner);
                }
                let names: Vec<String> = order.iter().map(|m| format!("module {m}")).collect();
                Diagnostic::at(loc(src, entry), "dependency cycle between modules").note(format!(
                    "cycle: {} (each depends on the next)",
                    names.join(" -> ")
                ))
            };
            self.error(d);
            return;
        }
    }
}

/// Where to point at a cycle of instances (each depending on the next): the `depends_on` entry of
/// the first member that names the next one, else the first member's declaration.
pub(super) fn cycle_location(decls: &[resources::Decl], members: &[String]) -> Option<Location> {
    let decl_of = |addr: &crate::model::Address| {
        decls.iter().find(|d| {
            d.module == addr.module && d.kind == addr.kind && d.name.get_ref() == &addr.name
        })
    };
    let addrs: Vec<Option<crate::model::Address>> = members
        .iter()
        .map(|m| crate::model::Address::parse(m))
        .collect();
    for pair in addrs.windows(2) {
        let (Some(a), Some(b)) = (&pair[0], &pair[1]) else {
            continue;
        };
        let Some(d) = decl_of(a) else { continue };
        for entry in &d.depends_on {
            let text = entry.get_ref();
            let res = text.split('[').next().unwrap_or_default();
            let full = if res.matches('.').count() == 1 {
                format!("{}.{res}", d.module)
            } else {
                res.to_string()
            };
            if full == b.resource() {
                return Some(loc(&d.file, entry));
            }
        }
    }
    let first = addrs.iter().flatten().next()?;
    decl_of(first).map(|d| Location::new(&d.file, d.span.clone()))
}
