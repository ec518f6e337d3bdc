//! The boundary between the loader and the providers: each `[[TYPE]]` table of a module file is
//! handed to the provider of `TYPE` as a [`Declaration`], which the provider parses with serde
//! (spans kept, so its errors name `file:line:col`) and turns into a [`Declared`]: the attributes
//! as [`Template`]s, interpolated per host by the loader.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostic, Location, SourceFile};
use crate::model::{Gate, Host, Value};

/// The largest file `source` may name: contents are held in memory and compared whole.
pub const SOURCE_LIMIT: u64 = 64 * 1024 * 1024;

/// One `[[TYPE]]` table, without the keys the engine reads (`name`, `on`, `depends_on`).
pub struct Declaration<'a> {
    pub module: &'a str,
    pub name: &'a str,
    /// The inventory, for resources that refer to hosts (load balancer targets).
    pub hosts: &'a BTreeMap<String, Host>,
    /// `[networks]` as the run sees them (the lab's network under `--lab`).
    pub networks: &'a BTreeMap<String, String>,
    pub(crate) stack_dir: &'a Path,
    pub(crate) file: &'a Arc<SourceFile>,
    pub(crate) span: Range<usize>,
    pub(crate) table: Option<DeTable<'a>>,
    /// The keys the engine took out of the table, named in "unknown field" errors.
    pub(crate) common: &'static [&'static str],
    pub(crate) diags: Vec<Diagnostic>,
    /// Files read through `source`, with their contents, folded into the stack digest.
    pub(crate) sources: Vec<(String, Vec<u8>)>,
}

/// What a provider made of a declaration.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// The attributes, by name, as templates interpolated on each host.
    pub attrs: Vec<(String, Template)>,
    /// It is a health check that gates what depends on it.
    pub gate: Option<Gate>,
}

/// An attribute as declared, before interpolation.
#[derive(Debug, Clone)]
pub enum Template {
    /// A string, interpolated per host.
    Text(Spanned<String>),
    /// A string, interpolated per host, that must then be an absolute file path.
    Path(Spanned<String>),
    /// A final value (a normalized mode, a content read from `source`).
    Value(Value),
    List(Vec<Template>),
    Map(BTreeMap<String, Template>),
    /// A host setting the provider declared (`container_runtime`), as text: the host's own value,
    /// else the stack's `[defaults]`, else `default`.
    Setting {
        key: &'static str,
        default: &'static str,
    },
    /// For an instance on a group of hosts: a map from each member host to the template
    /// interpolated on that member (its `${host.*}`), so that a provider learns its members'
    /// addresses as the run sees them (after a lab overlay) without naming them in the stack.
    PerMember(Box<Template>),
}

impl<'a> Declaration<'a> {
    /// Parses the table into the provider's own type (use `#[serde(deny_unknown_fields)]` and
    /// `Spanned` fields). A mistake becomes a diagnostic at its place; `None` then.
    pub fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        let table = self.table.take().unwrap_or_default();
        // The keys of the resource's own table: an unknown one there may have meant a key the
        // engine reads (`name`, `on`, `depends_on`); one in a nested table may not.
        let top: Vec<String> = table.keys().map(|k| k.get_ref().to_string()).collect();
        let value = Spanned::new(self.span.clone(), DeValue::Table(table));
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| self.span.clone());
                let found = self.file.text.get(span.clone()).unwrap_or("");
                let mut message = super::friendly_message(e.message().trim(), found);
                let unknown = message
                    .strip_prefix("unknown field `")
                    .and_then(|m| m.split('`').next())
                    .map(str::to_string);
                if unknown.is_some_and(|k| top.contains(&k))
                    && let Some(at) = message.find("expected one of ")
                {
                    let keys: Vec<String> =
                        self.common.iter().map(|k| format!("`{k}`, ")).collect();
                    message.insert_str(at + "expected one of ".len(), &keys.concat());
                }
                self.diags
                    .push(Diagnostic::at(Location::new(self.file, span), message));
                None
            }
        }
    }

    /// An error at a place of the declaration.
    /// A value that is exactly `${networks.NAME}`, resolved: for attributes a provider reads
    /// when declaring (a firewall rule's source), not per host. `None` for any other text.
    pub fn network_ref(&self, text: &str) -> Option<Result<String, String>> {
        let name = text.strip_prefix("${networks.")?.strip_suffix('}')?.trim();
        Some(self.networks.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.networks.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("unknown network `{name}` in `{text}`: stack.toml has no [networks]")
            } else {
                format!(
                    "unknown network `{name}` in `{text}`: [networks] in stack.toml has {}",
                    known.join(", ")
                )
            }
        }))
    }

    pub fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.error_span(at.span(), message);
    }

    /// An error at a byte range of the module file.
    pub fn error_span(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::at(Location::new(self.file, span), message));
    }

    /// An error about the whole table.
    pub fn error_here(&mut self, message: impl Into<String>) {
        self.error_span(self.span.clone(), message);
    }

    /// Whether no error was reported so far.
    pub fn ok(&self) -> bool {
        self.diags.is_empty()
    }

    /// The stack directory, for a provider that reads a directory of it (a build context): it
    /// lists the directory itself and reads each file through [`Declaration::read_source`].
    pub fn stack_dir(&self) -> &Path {
        self.stack_dir
    }

    /// Reads a file named by the stack (`source = "files/x.conf"`), relative to the stack
    /// directory. Only a regular file inside the stack directory (after resolving links) and no
    /// larger than [`SOURCE_LIMIT`] is read: `source` cannot reach `/etc/shadow`, nor hang on a
    /// FIFO, nor fill memory from `/dev/zero`.
    pub fn read_source(&mut self, at: &Spanned<String>) -> Option<Vec<u8>> {
        let rel = at.get_ref();
        let shown = super::display_path(self.stack_dir, rel);
        match read_confined(self.stack_dir, rel) {
            Ok(bytes) => {
                self.sources.push((rel.clone(), bytes.clone()));
                Some(bytes)
            }
            Err(e) => {
                self.error(at, format!("cannot read source `{}`: {e}", shown.display()));
                None
            }
        }
    }
}

/// Reads `rel` inside `dir`, refusing what lies outside it, what is not a regular file, and what
/// is too large.
pub(super) fn read_confined(dir: &Path, rel: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let root = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the stack directory: {e}"))?;
    let path = root.join(rel).canonicalize().map_err(|e| e.to_string())?;
    if !path.starts_with(&root) {
        return Err("it lies outside the stack directory".into());
    }
    let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > SOURCE_LIMIT {
        return Err(format!(
            "{} bytes, over the limit of {SOURCE_LIMIT} bytes",
            meta.len()
        ));
    }
    let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // The file may grow between the check and the read: never read past the limit.
    f.by_ref()
        .take(SOURCE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > SOURCE_LIMIT {
        return Err(format!("over the limit of {SOURCE_LIMIT} bytes"));
    }
    Ok(bytes)
}
