//! Links between declarations: which hosts `on` selects, and what `depends_on` names.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use super::resources::Decl;
use super::{Loader, loc, suggest};
use crate::diag::{Diagnostic, SourceFile};
use crate::model::{Address, Host, Instance};

impl Loader<'_> {
    pub(super) fn select_hosts<'h>(
        &mut self,
        file: &Arc<SourceFile>,
        on: &Spanned<toml::Value>,
        hosts: &'h BTreeMap<String, Host>,
    ) -> Vec<&'h Host> {
        let at = loc(file, on);
        match on.get_ref() {
            toml::Value::Array(names) => {
                let mut out: Vec<&Host> = Vec::new();
                for n in names {
                    let Some(n) = n.as_str() else {
                        self.error(Diagnostic::at(at, "`on` must list host names as strings"));
                        return Vec::new();
                    };
                    match hosts.get(n) {
                        Some(h) if out.iter().any(|o| o.name == h.name) => {
                            self.error(Diagnostic::at(
                                at,
                                format!("duplicate address: host `{n}` is listed twice in `on`"),
                            ));
                            return Vec::new();
                        }
                        Some(h) => out.push(h),
                        None => {
                            self.error(Diagnostic::at(
                                at,
                                format!("unknown host `{n}` in `on`{}", suggest(n, hosts.keys())),
                            ));
                            return Vec::new();
                        }
                    }
                }
                if out.is_empty() {
                    self.error(Diagnostic::at(
                        at,
                        "`on` selects no host: the list is empty",
                    ));
                }
                out
            }
            toml::Value::Table(labels) => {
                let mut wanted = Vec::new();
                for (k, v) in labels {
                    let Some(v) = v.as_str() else {
                        self.error(Diagnostic::at(
                            at,
                            format!("label `{k}` in `on` must be a string"),
                        ));
                        return Vec::new();
                    };
                    wanted.push((k, v));
                }
                let out: Vec<&Host> = hosts
                    .values()
                    .filter(|h| {
                        wanted
                            .iter()
                            .all(|(k, v)| h.labels.get(*k).map(String::as_str) == Some(*v))
                    })
                    .collect();
                if out.is_empty() {
                    let sel: Vec<String> = wanted
                        .iter()
                        .map(|(k, v)| format!("{k} = \"{v}\""))
                        .collect();
                    self.error(Diagnostic::at(
                        at,
                        format!(
                            "`on` selects no host: no host has labels {{ {} }}",
                            sel.join(", ")
                        ),
                    ));
                }
                out
            }
            _ => {
                self.error(Diagnostic::at(
                    at,
                    "`on` must be a list of host names (on = [\"redis-01\"]) or a table of labels (on = { role = \"redis\" })",
                ));
                Vec::new()
            }
        }
    }

    pub(super) fn resolve_depends_on(
        &mut self,
        decls: &[Decl],
        ranges: &[Range<usize>],
        instances: &mut [Instance],
    ) {
        // Which hosts each resource has an instance on (`None`: its one instance is on no host),
        // as a list (in order) and as a set: every lookup below is one hash of a host name, so
        // resolution is linear in the instances (issue 11, item 13).
        let mut by_resource: HashMap<String, Vec<Option<String>>> = HashMap::new();
        for (d, range) in decls.iter().zip(ranges) {
            if range.is_empty() {
                continue;
            }
            let resource = d.resource();
            by_resource.entry(resource).or_default().extend(
                instances[range.clone()]
                    .iter()
                    .map(|i| i.address.host.clone()),
            );
        }
        let on_host: HashMap<&str, HashSet<&str>> = by_resource
            .iter()
            .map(|(r, hosts)| {
                (
                    r.as_str(),
                    hosts.iter().flatten().map(String::as_str).collect(),
                )
            })
            .collect();
        let modules: BTreeSet<&str> = decls.iter().map(|d| d.module.as_str()).collect();
        for (d, range) in decls.iter().zip(ranges) {
            for dep in &d.depends_on {
                let Some((resource, host)) = self.parse_dep(d, dep, &modules, &by_resource) else {
                    continue;
                };
                let (module, rest) = resource.split_once('.').unwrap_or_default();
                let (kind, name) = rest.split_once('.').unwrap_or_default();
                let target_hosts = &by_resource[&resource];
                let target_on = &on_host[resource.as_str()];
                let address = |host: Option<String>| Address {
                    module: module.into(),
                    kind: kind.into(),
                    name: name.into(),
                    host,
                };
                for inst in &mut instances[range.clone()] {
                    // The instance on the same host when there is one, else every instance.
                    let same_host = inst
                        .address
                        .host
                        .as_deref()
                        .filter(|h| target_on.contains(h))
                        .map(String::from);
                    match (&host, same_host) {
                        (Some(h), _) => inst.depends_on.push(address(Some(h.clone()))),
                        (None, Some(h)) => inst.depends_on.push(address(Some(h))),
                        (None, None) => inst
                            .depends_on
                            .extend(target_hosts.iter().cloned().map(address)),
                    }
                }
            }
        }
    }

    /// Reads one `depends_on` entry: `MODULE.TYPE.NAME`, `MODULE.TYPE.NAME[HOST]` or `TYPE.NAME`
    /// (same module). Returns the resource key and the host, if one was named.
    pub(super) fn parse_dep(
        &mut self,
        d: &Decl,
        dep: &Spanned<String>,
        modules: &BTreeSet<&str>,
        by_resource: &HashMap<String, Vec<Option<String>>>,
    ) -> Option<(String, Option<String>)> {
        let text = dep.get_ref();
        let at = loc(&d.file, dep);
        let (res, host) = match text.strip_suffix(']').and_then(|t| t.split_once('[')) {
            Some((r, h)) => (r, Some(h.to_string())),
            None => (text.as_str(), None),
        };
        let parts: Vec<&str> = res.split('.').collect();
        let resource = match parts.as_slice() {
            [m, k, n] => format!("{m}.{k}.{n}"),
            [k, n] => format!("{}.{k}.{n}", d.module),
            _ => {
                self.error(Diagnostic::at(
                    at,
                    format!("invalid dependency `{text}`: expected MODULE.TYPE.NAME, MODULE.TYPE.NAME[HOST] or TYPE.NAME"),
                ));
                return None;
            }
        };
        let module = resource.split('.').next().unwrap_or_default();
        if !modules.contains(module) {
            let known: Vec<String> = modules.iter().map(|m| (*m).to_string()).collect();
            self.error(Diagnostic::at(
                at,
                format!(
                    "unknown module `{module}` in depends_on{}",
                    suggest(module, known.iter())
                ),
            ));
            return None;
        }
        let Some(hosts) = by_resource.get(&resource) else {
            let known: Vec<String> = by_resource.keys().cloned().collect();
            self.error(Diagnostic::at(
                at,
                format!(
                    "unknown resource `{resource}` in depends_on{}",
                    suggest(&resource, known.iter())
                ),
            ));
            return None;
        };
        if let Some(h) = &host
            && !hosts.iter().any(|o| o.as_deref() == Some(h.as_str()))
        {
            self.error(Diagnostic::at(
                at,
                format!("unknown address `{text}`: `{resource}` has no instance on host `{h}`"),
            ));
            return None;
        }
        Some((resource, host))
    }
}
