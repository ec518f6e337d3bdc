//! Resource declarations: per-type validation, host selection (`on`), interpolation, and
//! resolution of `depends_on`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use sha2::Digest;
use toml::Spanned;

use super::raw::{CommandDecl, FileDecl, ModuleFile};
use super::{Loader, loc, suggest, valid_name};
use crate::diag::{Diagnostic, Location, SourceFile};
use crate::interp::{Scope, interpolate};
use crate::model::{Address, Attr, AttrValue, Attrs, Host, Instance, Value};
use crate::units::{format_mode, parse_duration, parse_mode};

/// One `[[TYPE]]` table of a module file, reduced to what every resource type shares.
pub(crate) struct Decl<'a> {
    pub module: String,
    pub kind: &'static str,
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
    pub name: &'a Spanned<String>,
    /// The hosts it is on; `None` for a resource that lives behind an API (its pseudo-host).
    pub on: Option<&'a Spanned<toml::Value>>,
    pub depends_on: &'a [Spanned<String>],
    pub attrs: Vec<(&'static str, DeclAttr<'a>)>,
}

pub(crate) enum DeclAttr<'a> {
    /// A string, interpolated per host.
    Text(&'a Spanned<String>),
    /// A string, interpolated per host, that must then be an absolute path.
    Path(&'a Spanned<String>),
    /// A table of scalars whose string values are interpolated per host.
    Map(&'a Spanned<BTreeMap<String, toml::Value>>),
    /// A value already final (normalized mode, content read from `source`).
    Fixed(Value),
}

fn optional<'a>(
    attrs: &mut Vec<(&'static str, DeclAttr<'a>)>,
    name: &'static str,
    v: Option<&'a Spanned<String>>,
) {
    if let Some(v) = v {
        attrs.push((name, DeclAttr::Text(v)));
    }
}

impl Loader<'_> {
    pub(crate) fn declarations<'a>(
        &mut self,
        module: &str,
        src: &Arc<SourceFile>,
        m: &'a ModuleFile,
        hosts: &BTreeMap<String, Host>,
    ) -> Vec<Decl<'a>> {
        let mut out = Vec::new();
        for f in &m.file {
            if let Some(d) = self.file_decl(module, src, f) {
                out.push(d);
            }
        }
        for c in &m.command {
            if let Some(d) = self.command_decl(module, src, c) {
                out.push(d);
            }
        }
        for l in &m.lb {
            if let Some(d) = self.lb_decl(module, src, l, hosts) {
                out.push(d);
            }
        }
        out
    }

    fn file_decl<'a>(
        &mut self,
        module: &str,
        src: &Arc<SourceFile>,
        f: &'a Spanned<FileDecl>,
    ) -> Option<Decl<'a>> {
        let d = f.get_ref();
        let mut attrs = vec![("path", DeclAttr::Path(&d.path))];
        let absent = match &d.ensure {
            None => false,
            Some(e) => match e.get_ref().as_str() {
                "present" => false,
                "absent" => true,
                other => {
                    self.error(Diagnostic::at(
                        loc(src, e),
                        format!("invalid ensure `{other}`: expected \"present\" or \"absent\""),
                    ));
                    return None;
                }
            },
        };
        // `present` is the default and stays implicit, so plans only mention `ensure` when it matters.
        if absent {
            attrs.push(("ensure", DeclAttr::Fixed(Value::Text("absent".into()))));
        }
        match (&d.content, &d.source, absent) {
            (Some(_), Some(s), _) => {
                self.error(Diagnostic::at(
                    loc(src, s),
                    "`content` and `source` are exclusive: give one of them",
                ));
                return None;
            }
            (Some(c), None, true) | (None, Some(c), true) => {
                self.error(Diagnostic::at(
                    loc(src, c),
                    "a file with ensure = \"absent\" takes no `content` or `source`",
                ));
                return None;
            }
            (None, None, false) => {
                self.error(Diagnostic::at(
                    Location::new(src, f.span()),
                    format!("file `{}` needs `content` or `source`", d.name.get_ref()),
                ));
                return None;
            }
            (Some(c), None, false) => attrs.push(("content", DeclAttr::Text(c))),
            (None, Some(s), false) => {
                let path = super::display_path(&self.dir, s.get_ref());
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        self.digest.update(s.get_ref().as_bytes());
                        self.digest.update(&bytes);
                        let v = match String::from_utf8(bytes) {
                            Ok(t) => Value::Text(t),
                            Err(e) => Value::Bytes(e.into_bytes()),
                        };
                        attrs.push(("content", DeclAttr::Fixed(v)));
                    }
                    Err(e) => {
                        self.error(Diagnostic::at(
                            loc(src, s),
                            format!("cannot read source `{}`: {e}", path.display()),
                        ));
                        return None;
                    }
                }
            }
            (None, None, true) => {}
        }
        if let Some(m) = &d.mode {
            match parse_mode(m.get_ref()) {
                Some(mode) if !absent => {
                    attrs.push(("mode", DeclAttr::Fixed(Value::Text(format_mode(mode)))));
                }
                Some(_) => {}
                None => {
                    self.error(Diagnostic::at(
                        loc(src, m),
                        format!(
                            "invalid mode `{}`: expected an octal string such as \"0644\"",
                            m.get_ref()
                        ),
                    ));
                    return None;
                }
            }
        }
        for (name, v) in [("owner", &d.owner), ("group", &d.group)] {
            if let Some(v) = v {
                let s = v.get_ref();
                if s.is_empty()
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    self.error(Diagnostic::at(
                        loc(src, v),
                        format!("invalid {name} `{s}`: expected a user or group name or number"),
                    ));
                    return None;
                }
                if !absent {
                    attrs.push((name, DeclAttr::Fixed(Value::Text(s.clone()))));
                }
            }
        }
        Some(Decl {
            module: module.into(),
            kind: "file",
            file: Arc::clone(src),
            span: f.span(),
            name: &d.name,
            on: Some(&d.on),
            depends_on: &d.depends_on,
            attrs,
        })
    }

    fn command_decl<'a>(
        &mut self,
        module: &str,
        src: &Arc<SourceFile>,
        c: &'a Spanned<CommandDecl>,
    ) -> Option<Decl<'a>> {
        let d = c.get_ref();
        let mut attrs = vec![("run", DeclAttr::Text(&d.run))];
        optional(&mut attrs, "check", d.check.as_ref());
        optional(&mut attrs, "destroy", d.destroy.as_ref());
        if let Some(t) = &d.triggers {
            attrs.push(("triggers", DeclAttr::Map(t)));
        }
        if let Some(t) = &d.timeout {
            match parse_duration(t.get_ref()) {
                Some(v) if !v.is_zero() => attrs.push((
                    "timeout",
                    DeclAttr::Fixed(Value::Text(crate::units::format_duration(v))),
                )),
                _ => {
                    self.error(Diagnostic::at(
                        loc(src, t),
                        format!(
                            "invalid duration `{}`: expected a number and a unit, e.g. 500ms, 30s, 10m, 1h",
                            t.get_ref()
                        ),
                    ));
                    return None;
                }
            }
        }
        Some(Decl {
            module: module.into(),
            kind: "command",
            file: Arc::clone(src),
            span: c.span(),
            name: &d.name,
            on: Some(&d.on),
            depends_on: &d.depends_on,
            attrs,
        })
    }

    /// Expands declarations into instances, one per selected host, and resolves `depends_on`.
    pub(crate) fn expand(
        &mut self,
        decls: &[Decl<'_>],
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
                    loc(&d.file, d.name),
                    format!("invalid resource name `{name}`: use letters, digits, `-` and `_`"),
                ));
                ranges.push(start..start);
                continue;
            }
            let key = format!("{}.{}.{}", d.module, d.kind, name);
            if let Some(first) = first_seen.get(&key) {
                self.error(
                    Diagnostic::at(
                        loc(&d.file, d.name),
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
            first_seen.insert(key, loc(&d.file, d.name));
            // A load balancer's name is its identity in Hetzner Cloud: two declarations of one
            // name, in any modules, would manage the same object and undo each other.
            if d.on.is_none() {
                let api_key = format!("{}:{name}", d.kind);
                if let Some(first) = first_seen.get(&api_key) {
                    self.error(
                        Diagnostic::at(
                            loc(&d.file, d.name),
                            format!("duplicate address: {} `{name}` is declared twice (names are unique in Hetzner Cloud)", d.kind),
                        )
                        .note(format!("first declared at {first}")),
                    );
                    ranges.push(start..start);
                    continue;
                }
                first_seen.insert(api_key, loc(&d.file, d.name));
            }
            for host in self.select_hosts(d, hosts) {
                let mut attrs = Attrs::new();
                let mut ok = true;
                for (attr_name, a) in &d.attrs {
                    match self.attr(d, a, host, hosts, secrets_used) {
                        Some(v) => {
                            attrs.insert((*attr_name).to_string(), v);
                        }
                        None => ok = false,
                    }
                }
                if ok {
                    instances.push(Instance {
                        address: Address {
                            module: d.module.clone(),
                            kind: d.kind.into(),
                            name: name.clone(),
                            host: host.name.clone(),
                        },
                        attrs,
                        depends_on: Vec::new(),
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

    fn select_hosts<'h>(
        &mut self,
        d: &Decl<'_>,
        hosts: &'h BTreeMap<String, Host>,
    ) -> Vec<&'h Host> {
        let Some(on) = d.on else {
            return hosts.get(super::lb::HCLOUD_HOST).into_iter().collect();
        };
        let at = loc(&d.file, on);
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

    fn attr(
        &mut self,
        d: &Decl<'_>,
        a: &DeclAttr<'_>,
        host: &Host,
        hosts: &BTreeMap<String, Host>,
        secrets_used: &mut BTreeSet<String>,
    ) -> Option<Attr> {
        let scope = Scope {
            host,
            hosts,
            env: self.env,
        };
        match a {
            DeclAttr::Fixed(v) => Some(Attr::plain(v.clone())),
            DeclAttr::Text(s) | DeclAttr::Path(s) => {
                let r = match interpolate(s.get_ref(), &scope) {
                    Ok(r) => r,
                    Err(e) => {
                        self.interp_error(&d.file, s, e);
                        return None;
                    }
                };
                secrets_used.extend(r.secrets.iter().cloned());
                // Interpolated values (environment variables included) are part of what a saved
                // plan was made from; secrets are checked apart, by their own digest.
                if r.secrets.is_empty()
                    && let Some(t) = &r.text
                {
                    self.digest.update(t.as_bytes());
                }
                if let (DeclAttr::Path(_), Some(p)) = (a, &r.text)
                    && (!p.starts_with('/') || p.contains('\0') || p.ends_with('/'))
                {
                    self.error(Diagnostic::at(
                        loc(&d.file, *s),
                        format!("path must be an absolute file path, got `{p}`"),
                    ));
                    return None;
                }
                Some(Attr {
                    sensitive: !r.secrets.is_empty(),
                    value: r
                        .text
                        .map_or(AttrValue::Unknown, |t| AttrValue::Known(Value::Text(t))),
                })
            }
            DeclAttr::Map(m) => {
                let mut out = BTreeMap::new();
                let mut sensitive = false;
                let mut unknown = false;
                for (k, v) in m.get_ref() {
                    let text = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Float(f) => f.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        _ => {
                            self.error(Diagnostic::at(
                                loc(&d.file, *m),
                                format!("value of `{k}` must be a string, number or boolean"),
                            ));
                            return None;
                        }
                    };
                    match interpolate(&text, &scope) {
                        Ok(r) => {
                            sensitive |= !r.secrets.is_empty();
                            secrets_used.extend(r.secrets);
                            match r.text {
                                Some(t) => {
                                    out.insert(k.clone(), t);
                                }
                                None => unknown = true,
                            }
                        }
                        Err(e) => {
                            self.error(Diagnostic::at(loc(&d.file, *m), e.message));
                            return None;
                        }
                    }
                }
                Some(Attr {
                    sensitive,
                    value: if unknown {
                        AttrValue::Unknown
                    } else {
                        AttrValue::Known(Value::Map(out))
                    },
                })
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
        decls: &[Decl<'_>],
        ranges: &[Range<usize>],
        instances: &mut [Instance],
    ) {
        // Which hosts each resource has an instance on.
        let mut by_resource: HashMap<String, Vec<String>> = HashMap::new();
        let mut modules: BTreeSet<&str> = BTreeSet::new();
        for i in instances.iter() {
            by_resource
                .entry(i.address.resource())
                .or_default()
                .push(i.address.host.clone());
        }
        for d in decls {
            modules.insert(&d.module);
        }
        for (d, range) in decls.iter().zip(ranges) {
            for dep in d.depends_on {
                let Some((resource, host)) = self.parse_dep(d, dep, &modules, &by_resource) else {
                    continue;
                };
                let (module, rest) = resource.split_once('.').unwrap_or_default();
                let (kind, name) = rest.split_once('.').unwrap_or_default();
                let target_hosts = &by_resource[&resource];
                for inst in &mut instances[range.clone()] {
                    let chosen: Vec<&String> = match &host {
                        Some(h) => vec![h],
                        None if target_hosts.contains(&inst.address.host) => {
                            vec![&inst.address.host]
                        }
                        None => target_hosts.iter().collect(),
                    };
                    for h in chosen {
                        inst.depends_on.push(Address {
                            module: module.into(),
                            kind: kind.into(),
                            name: name.into(),
                            host: h.clone(),
                        });
                    }
                }
            }
        }
    }

    /// Reads one `depends_on` entry: `MODULE.TYPE.NAME`, `MODULE.TYPE.NAME[HOST]` or `TYPE.NAME`
    /// (same module). Returns the resource key and the host, if one was named.
    fn parse_dep(
        &mut self,
        d: &Decl<'_>,
        dep: &Spanned<String>,
        modules: &BTreeSet<&str>,
        by_resource: &HashMap<String, Vec<String>>,
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
            && !hosts.contains(h)
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
