//! Resource declarations: each `[[TYPE]]` table goes to its provider (see [`super::declare`]);
//! then host selection (`on`), interpolation per host, and resolution of `depends_on`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::declare::{Declaration, Declared, Template};
use super::{Loader, loc, suggest, valid_name};
use crate::diag::{Diagnostic, Location, SourceFile};
use crate::interp::{Scope, interpolate};
use crate::model::{Address, Attr, AttrValue, Attrs, Host, Instance, Value};
use crate::provider::Placement;

/// One `[[TYPE]]` table of a module file: what every resource type shares, and what its
/// provider made of the rest.
pub(crate) struct Decl {
    pub module: String,
    pub kind: String,
    pub placement: Placement,
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
    pub name: Spanned<String>,
    /// The hosts it is on; `None` for a resource behind an API.
    pub on: Option<Spanned<toml::Value>>,
    pub depends_on: Vec<Spanned<String>>,
    pub declared: Declared,
}

/// The keys the engine reads in every resource table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: Spanned<String>,
    on: Option<Spanned<toml::Value>>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
}

const COMMON_KEYS: [&str; 3] = ["name", "on", "depends_on"];

impl Loader<'_> {
    /// The resource declarations of one module file: every top-level key but `module` is a
    /// resource type, whose tables go to its provider.
    pub(crate) fn declarations(
        &mut self,
        module: &str,
        src: &Arc<SourceFile>,
        table: DeTable<'static>,
        hosts: &BTreeMap<String, Host>,
    ) -> Vec<Decl> {
        let mut out = Vec::new();
        for (key, value) in table {
            let kind = key.get_ref().to_string();
            if kind == "module" {
                continue;
            }
            let Some(provider) = self.providers.get(&kind).cloned() else {
                let mut kinds: Vec<String> = self
                    .providers
                    .kinds()
                    .map(|k| format!("`[[{k}]]`"))
                    .collect();
                kinds.sort();
                let known: Vec<String> = self.providers.kinds().map(String::from).collect();
                self.error(Diagnostic::at(
                    Location::new(src, key.span()),
                    format!(
                        "unknown resource type `{kind}`: expected {} (or `[module]`){}",
                        kinds.join(", "),
                        suggest(&kind, known.iter())
                    ),
                ));
                continue;
            };
            let DeValue::Array(items) = value.get_ref() else {
                self.error(Diagnostic::at(
                    Location::new(src, value.span()),
                    format!("`{kind}` must be a list of tables: write each one as [[{kind}]]"),
                ));
                continue;
            };
            for item in items.clone() {
                if let Some(d) =
                    self.declaration(module, src, &kind, provider.as_ref(), item, hosts)
                {
                    out.push(d);
                }
            }
        }
        out
    }

    fn declaration(
        &mut self,
        module: &str,
        src: &Arc<SourceFile>,
        kind: &str,
        provider: &dyn crate::provider::Provider,
        item: Spanned<DeValue<'static>>,
        hosts: &BTreeMap<String, Host>,
    ) -> Option<Decl> {
        let span = item.span();
        let DeValue::Table(table) = item.into_inner() else {
            self.error(Diagnostic::at(
                Location::new(src, span),
                format!("each `{kind}` must be a table: write it as [[{kind}]]"),
            ));
            return None;
        };
        let (mut common, mut rest) = (DeTable::new(), DeTable::new());
        for (k, v) in table {
            if COMMON_KEYS.contains(&k.get_ref().as_ref()) {
                common.insert(k, v);
            } else {
                rest.insert(k, v);
            }
        }
        let common = Spanned::new(span.clone(), DeValue::Table(common));
        let common = match Common::deserialize(ValueDeserializer::from(common)) {
            Ok(c) => c,
            Err(e) => {
                let at = e.span().unwrap_or(span.clone());
                let found = src.text.get(at.clone()).unwrap_or("");
                self.error(Diagnostic::at(
                    Location::new(src, at),
                    super::friendly_message(e.message().trim(), found),
                ));
                return None;
            }
        };
        let placement = provider.placement();
        match (&placement, &common.on) {
            (Placement::Api { service }, Some(on)) => {
                self.error(Diagnostic::at(
                    loc(src, on),
                    format!("`on` is not for `{kind}`: it lives behind {service}, on no host"),
                ));
                return None;
            }
            (Placement::EachHost | Placement::Group, None) => {
                self.error(Diagnostic::at(
                    Location::new(src, span),
                    format!(
                        "{kind} `{}` needs `on`: a list of hosts (on = [\"web-01\"]) or labels (on = {{ role = \"web\" }})",
                        common.name.get_ref()
                    ),
                ));
                return None;
            }
            _ => {}
        }
        let mut decl = Declaration {
            module,
            name: common.name.get_ref(),
            hosts,
            stack_dir: &self.dir,
            file: src,
            span: span.clone(),
            table: Some(rest),
            common: match placement {
                Placement::Api { .. } => &["name", "depends_on"],
                _ => &COMMON_KEYS,
            },
            diags: Vec::new(),
            sources: Vec::new(),
        };
        let declared = provider.declare(&mut decl);
        let Declaration { diags, sources, .. } = decl;
        for (name, bytes) in sources {
            self.digest.update(name.as_bytes());
            self.digest.update((bytes.len() as u64).to_le_bytes());
            self.digest.update(&bytes);
        }
        let ok = diags.is_empty();
        for d in diags {
            self.error(d);
        }
        let declared = declared.filter(|_| ok)?;
        Some(Decl {
            module: module.into(),
            kind: kind.into(),
            placement,
            file: Arc::clone(src),
            span,
            name: common.name,
            on: common.on,
            depends_on: common.depends_on,
            declared,
        })
    }

    /// Expands declarations into instances (one per selected host, one per group, or one behind
    /// an API) and resolves `depends_on`.
    pub(crate) fn expand(
        &mut self,
        decls: &[Decl],
        hosts: &BTreeMap<String, Host>,
        secrets_used: &mut BTreeSet<String>,
    ) -> Vec<Instance> {
        let mut first_seen: HashMap<String, Location> = HashMap::new();
        let mut instances = Vec::new();
        // Per declaration, the range of its instances, for depends_on resolution below.
        let mut ranges = Vec::with_capacity(decls.len());
        for d in decls {
            let start = instances.len();
            let name = d.name.get_ref();
            if !valid_name(name) {
                self.error(Diagnostic::at(
                    loc(&d.file, &d.name),
                    format!("invalid resource name `{name}`: use letters, digits, `-` and `_`"),
                ));
                ranges.push(start..start);
                continue;
            }
            let key = format!("{}.{}.{}", d.module, d.kind, name);
            if let Some(first) = first_seen.get(&key) {
                self.error(
                    Diagnostic::at(
                        loc(&d.file, &d.name),
                        format!(
                            "duplicate address: {} `{name}` is declared twice in module `{}`",
                            d.kind, d.module
                        ),
                    )
                    .note(format!("first declared at {first}")),
                );
                ranges.push(start..start);
                continue;
            }
            first_seen.insert(key, loc(&d.file, &d.name));
            // A resource behind an API is known there by its name: two declarations of one name,
            // in any modules, would manage the same object and undo each other.
            if let Placement::Api { service } = d.placement {
                let api_key = format!("{}:{name}", d.kind);
                if let Some(first) = first_seen.get(&api_key) {
                    self.error(
                        Diagnostic::at(
                            loc(&d.file, &d.name),
                            format!("duplicate address: {} `{name}` is declared twice (names are unique in {service})", d.kind),
                        )
                        .note(format!("first declared at {first}")),
                    );
                    ranges.push(start..start);
                    continue;
                }
                first_seen.insert(api_key, loc(&d.file, &d.name));
            }
            let selected = match &d.on {
                Some(on) => self.select_hosts(&d.file, on, hosts),
                None => Vec::new(),
            };
            let placed: Vec<(Option<&Host>, Vec<String>)> = match d.placement {
                Placement::EachHost => selected
                    .iter()
                    .map(|h| (Some(*h), vec![h.name.clone()]))
                    .collect(),
                Placement::Group if selected.is_empty() => Vec::new(),
                Placement::Group => vec![(None, selected.iter().map(|h| h.name.clone()).collect())],
                Placement::Api { .. } => vec![(None, Vec::new())],
            };
            for (host, members) in placed {
                if let Some(attrs) = self.instance_attrs(d, host, hosts, secrets_used) {
                    instances.push(Instance {
                        address: Address {
                            module: d.module.clone(),
                            kind: d.kind.clone(),
                            name: name.clone(),
                            host: host.map(|h| h.name.clone()),
                        },
                        members,
                        attrs,
                        depends_on: Vec::new(),
                        outputs: BTreeMap::new(),
                        gate: d.declared.gate.clone(),
                    });
                }
            }
            ranges.push(start..instances.len());
        }
        if self.diags.is_empty() {
            self.resolve_depends_on(decls, &ranges, &mut instances);
        }
        instances
    }

    fn instance_attrs(
        &mut self,
        d: &Decl,
        host: Option<&Host>,
        hosts: &BTreeMap<String, Host>,
        secrets_used: &mut BTreeSet<String>,
    ) -> Option<Attrs> {
        let mut attrs = Attrs::new();
        let mut ok = true;
        for (attr_name, t) in &d.declared.attrs {
            let mut sensitive = false;
            match self.template(d, t, host, hosts, secrets_used, &mut sensitive) {
                Some(value) => {
                    attrs.insert(
                        attr_name.clone(),
                        Attr {
                            value: value.map_or(AttrValue::Unknown, AttrValue::Known),
                            sensitive,
                        },
                    );
                }
                None => ok = false,
            }
        }
        ok.then_some(attrs)
    }

    /// Interpolates a template on one host: `Some(None)` when a secret it uses is not set,
    /// `None` after an error.
    #[allow(clippy::option_option)]
    fn template(
        &mut self,
        d: &Decl,
        t: &Template,
        host: Option<&Host>,
        hosts: &BTreeMap<String, Host>,
        secrets_used: &mut BTreeSet<String>,
        sensitive: &mut bool,
    ) -> Option<Option<Value>> {
        match t {
            Template::Value(v) => Some(Some(v.clone())),
            Template::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut unknown = false;
                for item in items {
                    match self.template(d, item, host, hosts, secrets_used, sensitive)? {
                        Some(v) => out.push(v),
                        None => unknown = true,
                    }
                }
                Some((!unknown).then_some(Value::List(out)))
            }
            Template::Map(m) => {
                let mut out = BTreeMap::new();
                let mut unknown = false;
                for (k, item) in m {
                    match self.template(d, item, host, hosts, secrets_used, sensitive)? {
                        Some(v) => {
                            out.insert(k.clone(), v);
                        }
                        None => unknown = true,
                    }
                }
                Some((!unknown).then_some(Value::Map(out)))
            }
            Template::Text(s) | Template::Path(s) => {
                let scope = Scope {
                    host,
                    hosts,
                    env: self.env,
                };
                let r = match interpolate(s.get_ref(), &scope) {
                    Ok(r) => r,
                    Err(e) => {
                        self.interp_error(&d.file, s, e);
                        return None;
                    }
                };
                secrets_used.extend(r.secrets.iter().cloned());
                *sensitive |= !r.secrets.is_empty();
                // Interpolated values (environment variables included) are part of what a saved
                // plan was made from; secrets are checked apart, by their own digest.
                if r.secrets.is_empty()
                    && let Some(t) = &r.text
                {
                    self.digest.update(t.as_bytes());
                }
                if let (Template::Path(_), Some(p)) = (t, &r.text)
                    && (!p.starts_with('/') || p.contains('\0') || p.ends_with('/'))
                {
                    self.error(Diagnostic::at(
                        loc(&d.file, s),
                        format!("path must be an absolute file path, got `{p}`"),
                    ));
                    return None;
                }
                Some(r.text.map(Value::Text))
            }
        }
    }

    fn select_hosts<'h>(
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

    /// Points an interpolation error at the `${...}` in the source when it can be found there.
    fn interp_error(
        &mut self,
        file: &Arc<SourceFile>,
        s: &Spanned<String>,
        e: crate::interp::InterpError,
    ) {
        let span = s.span();
        let needle = s.get_ref().get(e.offset..e.offset + e.len).unwrap_or("");
        let at = file
            .text
            .get(span.clone())
            .and_then(|raw| raw.find(needle))
            .filter(|_| !needle.is_empty())
            .map_or(span.clone(), |i| {
                span.start + i..span.start + i + needle.len()
            });
        self.error(Diagnostic::at(Location::new(file, at), e.message));
    }

    fn resolve_depends_on(
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
            let resource = format!("{}.{}.{}", d.module, d.kind, d.name.get_ref());
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
    fn parse_dep(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diagnostics;
    use crate::provider::Providers;

    fn decl(file: &Arc<SourceFile>, name: &str, deps: &[&str]) -> Decl {
        Decl {
            module: "m".into(),
            kind: "file".into(),
            placement: Placement::EachHost,
            file: Arc::clone(file),
            span: 0..0,
            name: Spanned::new(0..0, name.into()),
            on: None,
            depends_on: deps
                .iter()
                .map(|d| Spanned::new(0..0, d.to_string()))
                .collect(),
            declared: Declared::default(),
        }
    }

    fn instance(name: &str, host: String) -> Instance {
        Instance {
            address: Address {
                module: "m".into(),
                kind: "file".into(),
                name: name.into(),
                host: Some(host.clone()),
            },
            members: vec![host],
            attrs: Attrs::new(),
            depends_on: Vec::new(),
            outputs: BTreeMap::new(),
            gate: None,
        }
    }

    /// Issue 11, item 13: resolving `depends_on` is linear in the instances. Before 6dc598a each
    /// dependent instance searched the list of its dependency's hosts: 20,000 hosts cost
    /// 20,000 x 20,000 / 2 string comparisons per dependency. Timed against copying the
    /// instances (linear, similar allocations, same machine load), best of three: linear
    /// resolution costs a few copies, the old search hundreds.
    #[test]
    fn depends_on_resolution_is_linear() {
        const HOSTS: usize = 20_000;
        let file = SourceFile::new("m.toml".into(), String::new());
        let decls = vec![
            decl(&file, "base", &[]),
            decl(&file, "app", &["file.base", "m.file.base[h00001]"]),
        ];
        let mut instances = Vec::with_capacity(2 * HOSTS);
        let mut ranges = Vec::new();
        for d in &decls {
            let start = instances.len();
            for h in 1..=HOSTS {
                instances.push(instance(d.name.get_ref(), format!("h{h:05}")));
            }
            ranges.push(start..instances.len());
        }
        let providers = Providers::default();
        let env = |_: &str| None;
        let mut loader = Loader {
            dir: ".".into(),
            diags: Diagnostics::default(),
            digest: sha2::Sha256::new(),
            env: &env,
            overlay: None,
            providers: &providers,
        };
        let (mut copy, mut resolve) = (std::time::Duration::MAX, std::time::Duration::MAX);
        let mut resolved = Vec::new();
        for _ in 0..3 {
            let started = std::time::Instant::now();
            resolved = instances.clone();
            copy = copy.min(started.elapsed());
            let started = std::time::Instant::now();
            loader.resolve_depends_on(&decls, &ranges, &mut resolved);
            resolve = resolve.min(started.elapsed());
        }
        assert!(loader.diags.is_empty());
        // Every app instance waits for the base on its own host, and for the one named.
        let deps: Vec<String> = resolved[HOSTS + 41]
            .depends_on
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(deps, ["m.file.base[h00042]", "m.file.base[h00001]"]);
        assert!(
            resolve < copy * 20,
            "resolving depends_on of {HOSTS} hosts took {resolve:?}, copying the instances {copy:?}"
        );
    }
}
