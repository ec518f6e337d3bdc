//! Loading a stack directory: parse every TOML file with spans, validate, interpolate, and expand
//! resources into instances. Every problem becomes a [`Diagnostic`] naming `file:line:col`.

pub mod declare;
mod drills;
mod inventory;
mod inventory_file;
mod links;
mod modules;
mod names;
mod raw;
mod resources;
mod serial;
mod state;

pub use names::suggest;
pub(crate) use names::{friendly_message, valid_name};

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostic, Diagnostics, Location, SourceFile};
use crate::graph::DepGraph;
use crate::model::{Host, Module, Stack};
use crate::model::{LabInit, LabSettings};
use crate::overlay::HostOverlay;
use crate::provider::Providers;
use crate::secrets::Secrets;

/// Reads variables for `${env.*}` and `${secret.*}`; the real environment in production,
/// a map in tests.
pub type VarLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Loads the stack in `dir` with the process environment.
pub fn load_stack(dir: &Path, providers: &Providers) -> Result<Stack, Diagnostics> {
    load_stack_with_env(dir, providers, &|k| std::env::var(k).ok())
}

pub fn load_stack_with_env(
    dir: &Path,
    providers: &Providers,
    env: VarLookup<'_>,
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
    env: VarLookup<'_>,
    overlay: Option<&HostOverlay>,
) -> Result<Stack, Diagnostics> {
    let mut loader = Loader {
        dir: dir.to_path_buf(),
        diags: Diagnostics::default(),
        digest: Sha256::new(),
        env,
        overlay,
        providers,
        host_defaults: BTreeMap::new(),
        networks: BTreeMap::new(),
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
    env: VarLookup<'a>,
    overlay: Option<&'a HostOverlay>,
    providers: &'a Providers,
    /// The stack's `[defaults]` of host settings, for hosts with no table of their own (hosts of
    /// an inventory file).
    host_defaults: BTreeMap<String, String>,
    /// `[networks]`, as this run sees them (the overlay's network under the lab).
    networks: BTreeMap<String, String>,
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
        let stack_src = self.stack_source()?;
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
        let parallelism = self.parallelism(&stack_src, &raw);
        self.networks = self.networks(&stack_src, &raw);
        let lab = self.lab_settings(&stack_src, &raw);
        let state = self.state_config(&stack_src, raw.state.as_ref());
        let hosts = self.hosts(&stack_src, &raw, settings);
        let (mut parsed, broken) = self.read_modules();
        let modules = self.module_table(&parsed, &broken);
        if self.diags.is_empty() {
            self.module_cycles(&parsed);
        }

        let mut hosts = hosts?;
        let mut secrets_used = std::collections::HashMap::new();
        let mut instances = Vec::new();
        let mut decls = Vec::new();
        let drill_tables = drills::take_tables(&mut parsed);
        for (module, src, _, resources) in parsed.iter_mut() {
            let resources = std::mem::take(resources);
            decls.extend(self.declarations(module, src, resources, &hosts));
        }
        let drills = self.drills(drill_tables, &decls, &hosts);
        let gone = match self.overlay {
            Some(o) => o.apply_to_hosts(&mut hosts),
            None => Vec::new(),
        };
        if self.diags.is_empty() {
            instances = self.expand(&decls, &hosts, &mut secrets_used);
        }
        let left_out = self.leave_out(&mut hosts, &mut instances, &gone, &modules, &decls);
        if !self.diags.is_empty() {
            return None;
        }
        self.instance_cycles(&instances, &modules, &decls)?;
        // The secrets of the instances this run keeps: a lab run needs none of what it skips.
        let used: std::collections::BTreeSet<String> = instances
            .iter()
            .filter_map(|i| secrets_used.get(&i.address.to_string()))
            .flatten()
            .cloned()
            .collect();
        // Every declared secret is masked in output all the same.
        let declared: std::collections::BTreeSet<&String> =
            secrets_used.values().flatten().collect();
        let declared: Vec<String> = declared.into_iter().cloned().collect();
        let secrets = Secrets::read_with_declared(used.into_iter().collect(), &declared, self.env);
        let digest = hex::encode(std::mem::take(&mut self.digest).finalize());
        let serial = serial::orders(&decls, &instances);
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
            drills,
            networks: std::mem::take(&mut self.networks),
            serial,
            lab,
        })
    }

    /// `[networks]`: each value an IPv4 range (`10.0.0.0/16`); under an overlay with a network
    /// of its own (the lab), every range is that network.
    fn networks(
        &mut self,
        src: &Arc<SourceFile>,
        raw: &raw::StackFile,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, range) in &raw.networks {
            if !valid_name(name) {
                self.error(Diagnostic::at(
                    loc(src, range),
                    format!("invalid network name `{name}`: use letters, digits, `-` and `_`"),
                ));
                continue;
            }
            let text = range.get_ref();
            let canonical = crate::lab::Cidr::parse(text).filter(|c| c.is_network_address());
            if canonical.is_none() {
                self.error(Diagnostic::at(
                    loc(src, range),
                    format!(
                        "network `{name}` = `{text}` is not an IPv4 range: write it as \
                         ADDRESS/BITS with the host bits zero, such as `10.0.0.0/16`"
                    ),
                ));
                continue;
            }
            let seen = match self.overlay.and_then(|o| o.network.as_ref()) {
                Some(lab) => lab.clone(),
                None => text.clone(),
            };
            out.insert(name.clone(), seen);
        }
        out
    }

    /// `[lab] init = "sshd" | "systemd"`.
    fn lab_settings(&mut self, src: &Arc<SourceFile>, raw: &raw::StackFile) -> LabSettings {
        let Some(init) = raw.lab.as_ref().and_then(|l| l.init.as_ref()) else {
            return LabSettings::default();
        };
        let init = match init.get_ref().as_str() {
            "sshd" => LabInit::Sshd,
            "systemd" => LabInit::Systemd,
            other => {
                self.error(Diagnostic::at(
                    loc(src, init),
                    format!("unknown lab init `{other}`: expected \"sshd\" or \"systemd\""),
                ));
                LabInit::Sshd
            }
        };
        LabSettings { init }
    }

    /// `stack.toml`, read, or an error saying what a stack is.
    fn stack_source(&mut self) -> Option<Arc<SourceFile>> {
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
        self.read_source("stack.toml")
    }

    fn parallelism(&mut self, src: &Arc<SourceFile>, raw: &raw::StackFile) -> Option<usize> {
        match &raw.stack.parallelism {
            Some(p) if *p.get_ref() < 1 || *p.get_ref() > 10_000 => {
                self.error(Diagnostic::at(
                    loc(src, p),
                    "parallelism must be between 1 and 10000",
                ));
                None
            }
            Some(p) => usize::try_from(*p.get_ref()).ok(),
            None => None,
        }
    }

    /// Every module file, parsed; and the modules whose file could not be (they exist, so naming
    /// them in `depends_on` is no error).
    fn read_modules(&mut self) -> (Vec<ParsedModule>, HashSet<String>) {
        let mut parsed = Vec::new();
        let mut broken = HashSet::new();
        for file_name in self.module_files() {
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
        (parsed, broken)
    }

    /// The modules and their order, with `depends_on` checked.
    fn module_table(
        &mut self,
        parsed: &[ParsedModule],
        broken: &HashSet<String>,
    ) -> BTreeMap<String, Module> {
        let mut modules = BTreeMap::new();
        for (name, src, m, _) in parsed {
            let (description, depends_on, lab_skip) = match m {
                Some(t) => (
                    t.description.clone(),
                    t.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
                    t.lab
                        .as_ref()
                        .and_then(|l| self.lab_skip_reason(src, &l.skip)),
                ),
                None => (None, Vec::new(), None),
            };
            modules.insert(
                name.clone(),
                Module {
                    name: name.clone(),
                    description,
                    depends_on,
                    lab_skip,
                },
            );
        }
        for (name, src, m, _) in parsed {
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
        modules
    }

    /// Refuses a cycle among instances, pointing at the `depends_on` entry that closes it.
    fn instance_cycles(
        &mut self,
        instances: &[crate::model::Instance],
        modules: &BTreeMap<String, Module>,
        decls: &[resources::Decl],
    ) -> Option<()> {
        let Err(cycle) = DepGraph::build(instances, modules) else {
            return Some(());
        };
        // The graph walks in run order; read it as "depends on" instead, like the stack does.
        let mut members = cycle.members;
        members.reverse();
        let message = "dependency cycle".to_string();
        let d = match modules::cycle_location(decls, &members) {
            Some(l) => Diagnostic::at(l, message),
            None => Diagnostic::new(message),
        };
        self.error(d.note(format!(
            "cycle: {} (each depends on the next)",
            members.join(" -> ")
        )));
        None
    }

    /// Under an overlay, drops the hosts it lacks and what is on them (and, in the lab, the
    /// modules skipped there), and refuses a value that would carry a dropped host's address to
    /// a host that stays.
    fn leave_out(
        &mut self,
        hosts: &mut BTreeMap<String, Host>,
        instances: &mut Vec<crate::model::Instance>,
        gone: &[String],
        modules: &BTreeMap<String, Module>,
        decls: &[resources::Decl],
    ) -> crate::overlay::LeftOut {
        let Some(overlay) = self.overlay else {
            return crate::overlay::LeftOut::default();
        };
        let deps_before: std::collections::HashMap<String, Vec<crate::model::Address>> = instances
            .iter()
            .map(|i| (i.address.to_string(), i.depends_on.clone()))
            .collect();
        let skipped = overlay.skip_modules(instances, modules);
        // A lab never changes real cloud resources: without a stand-in of an API on this
        // machine, what lives behind it stays out of the run (and its state records alone).
        let api_kinds: Vec<(String, String)> = if overlay.keep_api {
            Vec::new()
        } else {
            let mut kinds: Vec<(String, String)> = self
                .providers
                .kinds()
                .filter_map(|k| match self.providers.get(k)?.placement() {
                    crate::provider::Placement::Api { service } => {
                        Some((k.to_string(), api_reason(service, &overlay.api_hint)))
                    }
                    _ => None,
                })
                .collect();
            kinds.sort();
            kinds
        };
        let skips: Vec<(String, String)> = decls
            .iter()
            .filter_map(|d| {
                let own = d.lab_skip.clone().filter(|_| overlay.skip_lab_modules);
                let api = || {
                    api_kinds
                        .iter()
                        .find(|(k, _)| *k == d.kind)
                        .map(|(_, why)| why.clone())
                };
                Some((d.resource(), own.or_else(api)?))
            })
            .collect();
        let skipped_resources = overlay.skip_resources(instances, &skips);
        let dropped = overlay.filter_instances(instances, gone);
        crate::overlay::reroute_dependencies(instances, &deps_before);
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
            under_overlay: true,
            hosts: gone.to_vec(),
            instances: dropped,
            modules: skipped,
            resources: skipped_resources,
            api_kinds,
        }
    }

    /// The reason of `lab = { skip = "..." }`, refused when empty: the reason is what plan,
    /// apply and verify show in place of the module.
    fn lab_skip_reason(&mut self, src: &Arc<SourceFile>, skip: &Spanned<String>) -> Option<String> {
        let reason = skip.get_ref().trim();
        if reason.is_empty() || reason.contains('\n') {
            self.error(Diagnostic::at(
                loc(src, skip),
                "lab.skip must say, on one line, why the lab leaves this out (`no Debian package of MinIO`)",
            ));
            return None;
        }
        Some(reason.to_string())
    }
}

/// Why a run under an overlay leaves out what lives behind `service`'s API: it reaches an API
/// only through a stand-in on this machine (the binary decides whether there is one).
fn api_reason(service: &str, hint: &str) -> String {
    let mut why = format!(
        "it lives behind the {service} API, which a lab run reaches only through a stand-in on this machine"
    );
    if !hint.is_empty() {
        why.push_str(&format!(" ({hint})"));
    }
    why
}
