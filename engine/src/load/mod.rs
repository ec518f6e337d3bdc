//! Loading a stack directory: parse every TOML file with spans, validate, interpolate, and expand
//! resources into instances. Every problem becomes a [`Diagnostic`] naming `file:line:col`.

pub mod declare;
mod raw;
mod resources;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostic, Diagnostics, Location, SourceFile};
use crate::graph::DepGraph;
use crate::model::{Host, Module, SshSettings, Stack, StateConfig, TransportKind};
use crate::overlay::HostOverlay;
use crate::provider::Providers;
use crate::secrets::Secrets;
use crate::units::{DurationError, duration};
use serde::Deserialize;

/// Reads variables for `${env.*}` and `${secret.*}`; the real environment in production,
/// a map in tests.
pub type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Loads the stack in `dir` with the process environment.
pub fn load_stack(dir: &Path, providers: &Providers) -> Result<Stack, Diagnostics> {
    load_stack_with_env(dir, providers, &|k| std::env::var(k).ok())
}

pub fn load_stack_with_env(
    dir: &Path,
    providers: &Providers,
    env: EnvFn<'_>,
) -> Result<Stack, Diagnostics> {
    load(dir, providers, env, None)
}

/// Loads the stack in `dir` as an overlay reaches it (the lab): every `${host.address}` and
/// `${hosts.NAME.address}` is the overlay's, hosts it lacks are left out with their instances
/// (see [`Stack::left_out`]), and a value that needs a left-out host's address is an error.
pub fn load_stack_with_overlay(
    dir: &Path,
    providers: &Providers,
    overlay: &HostOverlay,
) -> Result<Stack, Diagnostics> {
    load(dir, providers, &|k| std::env::var(k).ok(), Some(overlay))
}

fn load(
    dir: &Path,
    providers: &Providers,
    env: EnvFn<'_>,
    overlay: Option<&HostOverlay>,
) -> Result<Stack, Diagnostics> {
    let mut loader = Loader {
        dir: dir.to_path_buf(),
        diags: Diagnostics::default(),
        digest: Sha256::new(),
        env,
        overlay,
        providers,
    };
    let stack = loader.load();
    match stack {
        Some(stack) if loader.diags.is_empty() => Ok(stack),
        _ => Err(loader.diags),
    }
}

/// The path of a stack file as shown to the user.
pub(crate) fn display_path(dir: &Path, file: &str) -> PathBuf {
    if dir == Path::new(".") || dir.as_os_str().is_empty() {
        PathBuf::from(file)
    } else {
        dir.join(file)
    }
}

pub(crate) struct Loader<'a> {
    dir: PathBuf,
    diags: Diagnostics,
    digest: Sha256,
    env: EnvFn<'a>,
    overlay: Option<&'a HostOverlay>,
    providers: &'a Providers,
}

/// A module file, read: its name, source, `[module]` table and resource tables.
type ParsedModule = (
    String,
    Arc<SourceFile>,
    Option<raw::ModuleTable>,
    DeTable<'static>,
);

pub(crate) fn loc<T>(file: &Arc<SourceFile>, s: &Spanned<T>) -> Location {
    Location::new(file, s.span())
}

impl Loader<'_> {
    /// Records an error once: a problem that does not depend on the host (an unknown reference in a
    /// resource selected on many hosts) is reported once, not once per host.
    fn error(&mut self, d: Diagnostic) {
        let same = |o: &Diagnostic| {
            o.message == d.message
                && o.notes == d.notes
                && match (&o.location, &d.location) {
                    (Some(a), Some(b)) => a.span == b.span && Arc::ptr_eq(&a.file, &b.file),
                    (None, None) => true,
                    _ => false,
                }
        };
        if !self.diags.0.iter().any(same) {
            self.diags.push(d);
        }
    }

    /// Reads a file of the stack and folds it into the stack digest.
    fn read_source(&mut self, name: &str) -> Option<Arc<SourceFile>> {
        let path = self.dir.join(name);
        let shown = display_path(&self.dir, name);
        match fs::read(&path) {
            Ok(bytes) => {
                self.digest.update(name.as_bytes());
                self.digest.update((bytes.len() as u64).to_le_bytes());
                self.digest.update(&bytes);
                match String::from_utf8(bytes) {
                    Ok(text) => Some(SourceFile::new(shown, text)),
                    Err(_) => {
                        self.error(Diagnostic::in_file(&shown, "not valid UTF-8"));
                        None
                    }
                }
            }
            Err(e) => {
                self.error(Diagnostic::in_file(&shown, format!("cannot read: {e}")));
                None
            }
        }
    }

    /// Parses a file into its TOML tables, spans kept; a syntax error becomes a diagnostic.
    fn parse_document(&mut self, file: &Arc<SourceFile>) -> Option<DeTable<'static>> {
        // The tables are handed around (to providers) apart from the text they were parsed from,
        // so they must not borrow it; a stack is loaded once or twice per run, so keeping a copy
        // of its text for the life of the process costs little and keeps this free of `unsafe`.
        let text: &'static str = Box::leak(file.text.clone().into_boxed_str());
        match DeTable::parse(text) {
            Ok(t) => Some(t.into_inner()),
            Err(e) => {
                self.toml_error(file, &e);
                None
            }
        }
    }

    /// Reads a table (a whole document or part of one) into `T`.
    fn parse_table<T: serde::de::DeserializeOwned>(
        &mut self,
        file: &Arc<SourceFile>,
        table: DeTable<'static>,
    ) -> Option<T> {
        let value = Spanned::new(0..file.text.len(), DeValue::Table(table));
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                self.toml_error(file, &e);
                None
            }
        }
    }

    fn toml_error(&mut self, file: &Arc<SourceFile>, e: &toml::de::Error) {
        let span = e.span();
        let found = span.clone().and_then(|s| file.text.get(s)).unwrap_or("");
        let message = friendly_message(e.message().trim(), found);
        let d = match span {
            Some(_) if message.starts_with("missing table [stack]") => {
                Diagnostic::in_file(&file.display, message)
            }
            Some(span) => Diagnostic::at(Location::new(file, span), message),
            None => Diagnostic::in_file(&file.display, message),
        };
        self.error(d);
    }

    fn load(&mut self) -> Option<Stack> {
        if !self.dir.is_dir() {
            self.error(Diagnostic::new(format!(
                "{}: not a directory (a stack is a directory holding stack.toml)",
                self.dir.display()
            )));
            return None;
        }
        if !self.dir.join("stack.toml").is_file() {
            let shown = if self.dir == Path::new(".") {
                "the current directory".to_string()
            } else {
                format!("`{}`", self.dir.display())
            };
            self.error(Diagnostic::new(format!(
                "no stack.toml in {shown} (a stack is a directory holding stack.toml)"
            )));
            return None;
        }
        let stack_src = self.read_source("stack.toml")?;
        let mut stack_doc = self.parse_document(&stack_src)?;
        let settings = self.host_settings(&stack_src, &mut stack_doc);
        let raw: raw::StackFile = match self.parse_table(&stack_src, stack_doc) {
            Some(r) => r,
            None => {
                self.name_host_settings();
                return None;
            }
        };

        let name = raw.stack.name.get_ref().clone();
        if !valid_name(&name) {
            self.error(Diagnostic::at(
                loc(&stack_src, &raw.stack.name),
                format!("invalid stack name `{name}`: use letters, digits, `-` and `_`"),
            ));
        }
        let parallelism = match &raw.stack.parallelism {
            Some(p) if *p.get_ref() < 1 || *p.get_ref() > 10_000 => {
                self.error(Diagnostic::at(
                    loc(&stack_src, p),
                    "parallelism must be between 1 and 10000",
                ));
                None
            }
            Some(p) => usize::try_from(*p.get_ref()).ok(),
            None => None,
        };
        let state = self.state_config(&stack_src, raw.state.as_ref());
        let hosts = self.hosts(&stack_src, &raw, settings);

        let module_files = self.module_files();
        let mut parsed = Vec::new();
        // Modules whose file could not be parsed: they exist, so naming them is no error.
        let mut broken = HashSet::new();
        for file_name in module_files {
            let module = file_name.trim_end_matches(".toml").to_string();
            let Some(src) = self.read_source(&file_name) else {
                continue;
            };
            if !valid_name(&module) {
                self.error(Diagnostic::in_file(
                    &src.display,
                    format!(
                        "invalid module name `{module}`: a module file is named MODULE.toml with \
                         letters, digits, `-` and `_` only"
                    ),
                ));
                continue;
            }
            match self.module_file(&src) {
                Some((m, resources)) => parsed.push((module, src, m, resources)),
                None => {
                    broken.insert(module);
                }
            }
        }

        let mut modules = BTreeMap::new();
        for (name, _, m, _) in &parsed {
            let (description, depends_on) = match m {
                Some(t) => (
                    t.description.clone(),
                    t.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
                ),
                None => (None, Vec::new()),
            };
            modules.insert(
                name.clone(),
                Module {
                    name: name.clone(),
                    description,
                    depends_on,
                },
            );
        }
        for (name, src, m, _) in &parsed {
            let Some(t) = m else { continue };
            let mut seen = HashSet::new();
            for dep in &t.depends_on {
                let d = dep.get_ref();
                if broken.contains(d) {
                    continue;
                }
                if !modules.contains_key(d) {
                    self.error(Diagnostic::at(
                        loc(src, dep),
                        format!(
                            "unknown module `{d}` in depends_on of module `{name}`{}",
                            suggest(d, modules.keys())
                        ),
                    ));
                } else if !seen.insert(d) {
                    self.error(Diagnostic::at(
                        loc(src, dep),
                        format!("module `{d}` is listed twice in depends_on"),
                    ));
                }
            }
        }

        if self.diags.is_empty() {
            self.module_cycles(&parsed);
        }

        let mut hosts = hosts?;
        let mut secrets_used = std::collections::BTreeSet::new();
        let mut instances = Vec::new();
        let mut decls = Vec::new();
        for (module, src, _, resources) in parsed.iter_mut() {
            let resources = std::mem::take(resources);
            decls.extend(self.declarations(module, src, resources, &hosts));
        }
        let gone = match self.overlay {
            Some(o) => o.apply_to_hosts(&mut hosts),
            None => Vec::new(),
        };
        if self.diags.is_empty() {
            instances = self.expand(&decls, &hosts, &mut secrets_used);
        }
        let left_out = self.leave_out(&mut hosts, &mut instances, &gone);
        if !self.diags.is_empty() {
            return None;
        }

        if let Err(cycle) = DepGraph::build(&instances, &modules) {
            // The graph walks in run order; read it as "depends on" instead, like the stack does.
            let mut members = cycle.members;
            members.reverse();
            let location = cycle_location(&decls, &members);
            let message = "dependency cycle".to_string();
            let d = match location {
                Some(l) => Diagnostic::at(l, message),
                None => Diagnostic::new(message),
            };
            self.error(d.note(format!(
                "cycle: {} (each depends on the next)",
                members.join(" -> ")
            )));
            return None;
        }

        let secrets = Secrets::read(secrets_used.into_iter().collect(), self.env);
        let digest = hex::encode(std::mem::take(&mut self.digest).finalize());
        Some(Stack {
            name,
            description: raw.stack.description.clone(),
            dir: self.dir.clone(),
            parallelism,
            state,
            hosts,
            modules,
            instances,
            digest,
            secrets,
            left_out,
        })
    }

    /// Under an overlay, drops the hosts it lacks and what is on them, and refuses a value that
    /// would carry a dropped host's address to a host that stays.
    fn leave_out(
        &mut self,
        hosts: &mut BTreeMap<String, Host>,
        instances: &mut Vec<crate::model::Instance>,
        gone: &[String],
    ) -> crate::overlay::LeftOut {
        let Some(overlay) = self.overlay else {
            return crate::overlay::LeftOut::default();
        };
        let dropped = overlay.filter_instances(instances, gone);
        for i in instances.iter() {
            if let Some(host) = i
                .attrs
                .values()
                .find_map(|a| a.known().and_then(crate::overlay::uses_missing_host))
            {
                self.error(Diagnostic::new(format!(
                    "{} uses the address of host `{host}`, which {} has no host for: make it with that host too (kz lab up {})",
                    i.address,
                    overlay.name,
                    self.dir.display()
                )));
            }
        }
        for h in gone {
            hosts.remove(h);
        }
        crate::overlay::LeftOut {
            hosts: gone.to_vec(),
            instances: dropped,
        }
    }

    /// Reads a module file: its `[module]` table, and the rest (resource tables) for the
    /// providers.
    fn module_file(
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

    /// A host table's "unknown field" error also names the keys providers add to host tables.
    fn name_host_settings(&mut self) {
        let keys: Vec<String> = self
            .providers
            .all()
            .flat_map(|p| p.host_settings().iter().map(|k| format!(", `{k}`")))
            .collect();
        for d in &mut self.diags.0 {
            if d.message.starts_with("unknown field `")
                && d.message
                    .ends_with("`address`, `labels`, `transport`, `ssh`")
            {
                d.message.push_str(&keys.concat());
            }
        }
    }

    /// Takes the provider settings (`hcloud_server`) out of each `[hosts.NAME]` table of the
    /// stack file, so that what remains is read with unknown keys refused.
    fn host_settings(
        &mut self,
        src: &Arc<SourceFile>,
        doc: &mut DeTable<'static>,
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let keys: Vec<&str> = self
            .providers
            .all()
            .flat_map(|p| p.host_settings().iter().copied())
            .collect();
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let Some(hosts) = doc.get_mut("hosts") else {
            return out;
        };
        let DeValue::Table(hosts) = hosts.get_mut() else {
            return out;
        };
        for (name, host) in hosts.iter_mut() {
            let DeValue::Table(table) = host.get_mut() else {
                continue;
            };
            for key in &keys {
                let Some(v) = table.remove(*key) else {
                    continue;
                };
                match v.get_ref().as_str() {
                    Some(text) => {
                        out.entry(name.get_ref().to_string())
                            .or_default()
                            .insert((*key).to_string(), text.to_string());
                    }
                    None => self.error(Diagnostic::at(
                        Location::new(src, v.span()),
                        format!("`{key}` must be a string"),
                    )),
                }
            }
        }
        out
    }

    /// Finds a cycle among `[module] depends_on` and reports it at the entry that closes it.
    fn module_cycles(&mut self, parsed: &[ParsedModule]) {
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

    /// A path from the stack: `~/` is the user's home, a relative path is relative to the stack.
    fn resolve_path(&self, p: &str) -> String {
        if let Some(rest) = p.strip_prefix("~/") {
            let home = (self.env)("HOME").unwrap_or_else(|| "/root".into());
            return format!("{}/{rest}", home.trim_end_matches('/'));
        }
        if p.starts_with('/') {
            p.to_string()
        } else {
            self.dir.join(p).display().to_string()
        }
    }

    fn state_config(
        &mut self,
        src: &Arc<SourceFile>,
        raw: Option<&raw::StateTable>,
    ) -> StateConfig {
        let Some(raw) = raw else {
            return StateConfig {
                backend: kz_state::BackendConfig::default(),
            };
        };
        let retry = raw
            .retry
            .as_ref()
            .and_then(|r| match duration(r.get_ref()) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.error(Diagnostic::at(loc(src, r), e.to_string()));
                    None
                }
            });
        fn text(v: &Option<Spanned<String>>) -> Option<&str> {
            v.as_ref().map(|v| v.get_ref().as_str())
        }
        let (backend, problems) = kz_state::config::parse(&kz_state::config::StateTable {
            backend: text(&raw.backend),
            url_env: text(&raw.url_env),
            schema: text(&raw.schema),
            retry,
        });
        for (key, message) in problems {
            let at = match key {
                kz_state::config::StateKey::Backend => &raw.backend,
                kz_state::config::StateKey::UrlEnv => &raw.url_env,
                kz_state::config::StateKey::Schema => &raw.schema,
                kz_state::config::StateKey::Retry => &raw.retry,
            };
            let d = match at {
                Some(v) => Diagnostic::at(loc(src, v), message),
                None => Diagnostic::in_file(&src.display, message),
            };
            self.error(d);
        }
        StateConfig { backend }
    }

    /// The module files of the stack: every `*.toml` but `stack.toml`, sorted by name.
    fn module_files(&mut self) -> Vec<String> {
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

    fn hosts(
        &mut self,
        src: &Arc<SourceFile>,
        raw: &raw::StackFile,
        mut settings: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Option<BTreeMap<String, Host>> {
        let defaults = self.ssh_settings(src, SshSettings::default(), raw.ssh.as_ref(), &raw.hosts);
        let mut hosts = BTreeMap::new();
        let before = self.diags.0.len();
        for (name, h) in &raw.hosts {
            let table = h.get_ref();
            if !valid_host_name(name) {
                self.error(Diagnostic::at(
                    loc(src, h),
                    format!("invalid host name `{name}`: use letters, digits, `-`, `_` and `.`"),
                ));
                continue;
            }
            let transport = match &table.transport {
                None => TransportKind::Ssh,
                Some(t) => match t.get_ref().as_str() {
                    "ssh" => TransportKind::Ssh,
                    "local" => TransportKind::Local,
                    other => {
                        self.error(Diagnostic::at(
                            loc(src, t),
                            format!("unknown transport `{other}`: expected \"ssh\" or \"local\""),
                        ));
                        continue;
                    }
                },
            };
            let address = match (&table.address, &transport) {
                (Some(a), _)
                    if a.get_ref().trim().is_empty()
                        || a.get_ref().contains(char::is_whitespace) =>
                {
                    self.error(Diagnostic::at(
                        loc(src, a),
                        format!("invalid address `{}`", a.get_ref()),
                    ));
                    continue;
                }
                (Some(a), _) => a.get_ref().clone(),
                (None, TransportKind::Local) => "127.0.0.1".to_string(),
                (None, TransportKind::Ssh) => {
                    self.error(Diagnostic::at(
                        loc(src, h),
                        format!(
                            "host `{name}` has no `address` (required unless transport = \"local\")"
                        ),
                    ));
                    continue;
                }
            };
            let mut ssh = self.ssh_settings(src, defaults.clone(), table.ssh.as_ref(), &raw.hosts);
            if ssh.jump.as_deref() == Some(name.as_str()) {
                let own = table.ssh.as_ref().and_then(|t| t.jump.as_ref());
                match own {
                    // The stack-wide `[ssh] jump` names the bastion itself, which is reached directly.
                    None => ssh.jump = None,
                    Some(j) => self.error(Diagnostic::at(
                        loc(src, j),
                        format!("host `{name}` cannot be its own jump host"),
                    )),
                }
            }
            hosts.insert(
                name.clone(),
                Host {
                    name: name.clone(),
                    address,
                    labels: table.labels.clone(),
                    settings: settings.remove(name).unwrap_or_default(),
                    transport,
                    ssh,
                },
            );
        }
        (self.diags.0.len() == before).then_some(hosts)
    }

    fn ssh_settings(
        &mut self,
        src: &Arc<SourceFile>,
        mut s: SshSettings,
        raw: Option<&raw::SshTable>,
        hosts: &BTreeMap<String, Spanned<raw::HostTable>>,
    ) -> SshSettings {
        let Some(raw) = raw else { return s };
        if let Some(u) = &raw.user {
            s.user = u.get_ref().clone();
        }
        if let Some(p) = &raw.port {
            match u16::try_from(*p.get_ref()) {
                Ok(port) if port > 0 => s.port = port,
                _ => self.error(Diagnostic::at(
                    loc(src, p),
                    "port must be between 1 and 65535",
                )),
            }
        }
        if let Some(id) = &raw.identity {
            match id.get_ref() {
                toml::Value::String(p) => s.identity = vec![self.resolve_path(p)],
                toml::Value::Array(a) if a.iter().all(toml::Value::is_str) => {
                    s.identity = a
                        .iter()
                        .filter_map(|v| v.as_str().map(|p| self.resolve_path(p)))
                        .collect();
                }
                _ => self.error(Diagnostic::at(
                    loc(src, id),
                    "identity must be a key file path or a list of them",
                )),
            }
        }
        if let Some(k) = &raw.known_hosts {
            s.known_hosts = Some(self.resolve_path(k.get_ref()));
        }
        if let Some(j) = &raw.jump {
            if hosts.contains_key(j.get_ref()) {
                s.jump = Some(j.get_ref().clone());
            } else {
                self.error(Diagnostic::at(
                    loc(src, j),
                    format!(
                        "unknown host `{}` as jump host{}",
                        j.get_ref(),
                        suggest(j.get_ref(), hosts.keys())
                    ),
                ));
            }
        }
        for (field, target) in [
            (&raw.connect_timeout, &mut s.connect_timeout),
            (&raw.command_timeout, &mut s.command_timeout),
            (&raw.keepalive, &mut s.keepalive),
        ] {
            if let Some(d) = field {
                match duration(d.get_ref()) {
                    Ok(v) if !v.is_zero() => *target = v,
                    Ok(_) => self.diags.push(Diagnostic::at(
                        loc(src, d),
                        DurationError::Invalid(d.get_ref().clone()).to_string(),
                    )),
                    Err(e) => self.diags.push(Diagnostic::at(loc(src, d), e.to_string())),
                }
            }
        }
        if let Some(m) = &raw.max_sessions {
            match usize::try_from(*m.get_ref()) {
                Ok(n) if (1..=64).contains(&n) => s.max_sessions = n,
                _ => self.error(Diagnostic::at(
                    loc(src, m),
                    "max_sessions must be between 1 and 64",
                )),
            }
        }
        if let Some(a) = raw.accept_new_host_keys {
            s.accept_new_host_keys = a;
        }
        s
    }
}

/// Rewrites serde's wording for people who write TOML, not Rust: no `i64` or `sequence`.
pub(crate) fn friendly_message(message: &str, found: &str) -> String {
    if message == "missing field `stack`" {
        return "missing table [stack] (every stack.toml needs [stack] with a name)".into();
    }
    if message == "duplicate key" {
        return format!("duplicate key `{}`", found.trim());
    }
    if message.contains(" as i128, expected i64") || message.contains(" as u128, expected i64") {
        return format!("integer {} is out of range", found.trim());
    }
    message
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected a list")
        .replace("expected a map", "expected a table")
        .replace("expected a borrowed string", "expected a string")
}

/// Where to point at a cycle of instances (each depending on the next): the `depends_on` entry of
/// the first member that names the next one, else the first member's declaration.
fn cycle_location(decls: &[resources::Decl], members: &[String]) -> Option<Location> {
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

/// Names of stacks, modules and resources: they appear in addresses, so no dots or brackets.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// ", did you mean `x`?" when a known name is close to the unknown one.
pub fn suggest<'a>(unknown: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .map(|k| (edit_distance(unknown, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
