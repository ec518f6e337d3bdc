//! Resource declarations: each `[[TYPE]]` table goes to its provider (see [`super::declare`]);
//! then host selection (`on`), interpolation per host, and resolution of `depends_on`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::declare::{Declaration, Declared, Template};
use super::serial::{SERIAL_KEY, Serial};
use super::{Loader, loc, suggest, valid_name};
use crate::diag::{Diagnostic, Location, SourceFile};
use crate::interp::{Scope, interpolate};
use crate::model::{Address, Attr, AttrValue, Attrs, Host, Instance, Value};
use crate::provider::Placement;
use lab::{ResourceLab, with_overrides};

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
    /// `lab = { skip = "REASON" }`: why a lab run leaves this resource out.
    pub lab_skip: Option<String>,
    /// The lab's variant of a check (`lab = { address = ... }`) when this run is not a lab run:
    /// interpolated too, only to find its mistakes (a misspelt host) on every run.
    pub lab_variant: Option<Declared>,
    /// `serial = ...`: its instances one host at a time (see [`super::serial`]).
    pub serial: Option<Serial>,
}

impl Decl {
    /// `MODULE.TYPE.NAME`, as its instances' `Address::resource` says it.
    pub fn resource(&self) -> String {
        format!("{}.{}.{}", self.module, self.kind, self.name.get_ref())
    }
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

pub(super) const COMMON_KEYS: [&str; 3] = ["name", "on", "depends_on"];

/// The key of a resource's lab behaviour, read by the engine too.
pub(super) const LAB_KEY: &str = "lab";

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
        let (mut lab, mut serial) = (None, None);
        for (k, v) in table {
            if k.get_ref() == LAB_KEY {
                lab = Some(v);
            } else if k.get_ref() == SERIAL_KEY {
                serial = Some(v);
            } else if COMMON_KEYS.contains(&k.get_ref().as_ref()) {
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
        let serial = match serial {
            Some(v) => Some(self.serial(src, kind, &placement, v)?),
            None => None,
        };
        let lab = match lab {
            Some(v) => Some(self.resource_lab(src, v)?),
            None => None,
        };
        let lab_table = match &lab {
            Some(ResourceLab::Override(over)) => Some(with_overrides(&rest, over)),
            _ => None,
        };
        let name = common.name.get_ref();
        let declared = self.declare_with(src, module, name, &span, provider, rest, hosts)?;
        let mut lab_skip = None;
        let mut lab_variant = None;
        let declared = match (lab, lab_table) {
            (Some(ResourceLab::Skip(reason)), _) => {
                lab_skip = Some(reason);
                declared
            }
            (Some(ResourceLab::Override(over)), Some(table)) => {
                if declared.gate.is_none() {
                    let at = over.values().next().map_or(span.clone(), Spanned::span);
                    self.error(Diagnostic::at(
                        Location::new(src, at),
                        format!(
                            "`lab` can change only where a check looks: a {kind} is built in the lab as in production (leave it out there with `lab = {{ skip = \"why\" }}`)"
                        ),
                    ));
                    return None;
                }
                // The lab's variant is declared (and so checked) on every run, so a mistake in
                // it is found by `kz validate`, not on the first lab run.
                let in_lab = self.declare_with(src, module, name, &span, provider, table, hosts)?;
                if self.overlay.is_some_and(|o| o.skip_lab_modules) {
                    in_lab
                } else {
                    lab_variant = Some(in_lab);
                    declared
                }
            }
            _ => declared,
        };
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
            lab_skip,
            lab_variant,
            serial,
        })
    }

    /// Hands one table to its provider; `None` after an error.
    #[allow(clippy::too_many_arguments)]
    fn declare_with(
        &mut self,
        src: &Arc<SourceFile>,
        module: &str,
        name: &str,
        span: &Range<usize>,
        provider: &dyn crate::provider::Provider,
        table: DeTable<'static>,
        hosts: &BTreeMap<String, Host>,
    ) -> Option<Declared> {
        let placement = provider.placement();
        let mut decl = Declaration {
            module,
            name,
            hosts,
            networks: &self.networks,
            stack_dir: &self.dir,
            file: src,
            span: span.clone(),
            table: Some(table),
            common: match placement {
                Placement::Api { .. } => &["name", "depends_on", LAB_KEY],
                Placement::Group => &["name", "on", "depends_on", LAB_KEY],
                Placement::EachHost => &["name", "on", "depends_on", LAB_KEY, SERIAL_KEY],
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
        declared.filter(|_| ok)
    }

    /// Expands declarations into instances (one per selected host, one per group, or one behind
    /// an API) and resolves `depends_on`. `secrets_used` gets the secrets each instance uses, by
    /// its address, so that a run that leaves some out (the lab) needs only the others'.
    pub(crate) fn expand(
        &mut self,
        decls: &[Decl],
        hosts: &BTreeMap<String, Host>,
        secrets_used: &mut HashMap<String, BTreeSet<String>>,
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
                Placement::EachHost => selected.iter().map(|h| (Some(*h), Vec::new())).collect(),
                Placement::Group if selected.is_empty() => Vec::new(),
                Placement::Group => vec![(None, selected.iter().map(|h| h.name.clone()).collect())],
                Placement::Api { .. } => vec![(None, Vec::new())],
            };
            // One gate, shared by every instance of the resource.
            let gate = d.declared.gate.clone().map(Arc::new);
            for (host, members) in placed {
                if let Some(lab) = &d.lab_variant {
                    // Errors only: the values are the lab's, and this run is not in the lab.
                    let mut unused = BTreeSet::new();
                    self.instance_attrs(d, &lab.attrs, host, &members, hosts, &mut unused);
                }
                let own = &d.declared.attrs;
                let mut secrets = BTreeSet::new();
                if let Some(attrs) =
                    self.instance_attrs(d, own, host, &members, hosts, &mut secrets)
                {
                    let address = Address {
                        module: d.module.clone(),
                        kind: d.kind.clone(),
                        name: name.clone(),
                        host: host.map(|h| h.name.clone()),
                    };
                    secrets_used.insert(address.to_string(), secrets);
                    instances.push(Instance {
                        address,
                        members,
                        attrs,
                        depends_on: Vec::new(),
                        outputs: BTreeMap::new(),
                        gate: gate.clone(),
                    });
                }
            }
            ranges.push(start..instances.len());
        }
        if self.diags.is_empty() {
            self.resolve_depends_on(decls, &ranges, &mut instances);
            self.serial_edges(decls, &ranges, &mut instances);
        }
        instances
    }

    fn instance_attrs(
        &mut self,
        d: &Decl,
        declared: &[(String, Template)],
        host: Option<&Host>,
        members: &[String],
        hosts: &BTreeMap<String, Host>,
        secrets_used: &mut BTreeSet<String>,
    ) -> Option<Attrs> {
        let mut attrs = Attrs::new();
        let mut ok = true;
        for (attr_name, t) in declared {
            let mut sensitive = false;
            let at = At { host, members };
            match self.template(d, t, at, hosts, secrets_used, &mut sensitive) {
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
        at: At<'_>,
        hosts: &BTreeMap<String, Host>,
        secrets_used: &mut BTreeSet<String>,
        sensitive: &mut bool,
    ) -> Option<Option<Value>> {
        let host = at.host;
        match t {
            Template::PerMember(inner) => {
                let mut out = BTreeMap::new();
                let mut unknown = false;
                for m in at.members {
                    let on = At {
                        host: hosts.get(m),
                        members: at.members,
                    };
                    match self.template(d, inner, on, hosts, secrets_used, sensitive)? {
                        Some(v) => {
                            out.insert(m.clone(), v);
                        }
                        None => unknown = true,
                    }
                }
                Some((!unknown).then_some(Value::Map(out)))
            }
            Template::Value(v) => Some(Some(v.clone())),
            Template::Setting { key, default } => {
                let v = host
                    .and_then(|h| h.settings.get(*key))
                    .map_or(*default, String::as_str);
                self.digest.update(v.as_bytes());
                Some(Some(Value::Text(v.to_string())))
            }
            Template::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut unknown = false;
                for item in items {
                    match self.template(d, item, at, hosts, secrets_used, sensitive)? {
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
                    match self.template(d, item, at, hosts, secrets_used, sensitive)? {
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
                    networks: &self.networks,
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
}

/// Where a template is interpolated: on one host, or on none (a group's instance, with its
/// members).
#[derive(Clone, Copy)]
struct At<'a> {
    host: Option<&'a Host>,
    members: &'a [String],
}

impl Loader<'_> {
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
}

mod lab;
#[cfg(test)]
mod tests;
