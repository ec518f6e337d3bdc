//! The inventory: `[hosts.NAME]` tables with their SSH settings, and the keys providers add to
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Loader, loc, raw, suggest};
use crate::diag::{Diagnostic, Location, SourceFile};
use crate::model::{Host, SshSettings, TransportKind};
use crate::units::{DurationError, duration};

impl Loader<'_> {
    pub(super) fn hosts(
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
        if let Some(inv) = &raw.inventory {
            self.add_file_hosts(src, inv, raw, &defaults, &mut hosts);
        }
        (self.diags.0.len() == before).then_some(hosts)
    }

    /// The hosts of `[inventory]`'s file, with the stack's SSH settings and host-setting defaults;
    /// a host also in a `[hosts.NAME]` table is an error at both places.
    fn add_file_hosts(
        &mut self,
        src: &Arc<SourceFile>,
        inv: &Spanned<raw::InventoryTable>,
        raw: &raw::StackFile,
        defaults: &SshSettings,
        hosts: &mut BTreeMap<String, Host>,
    ) {
        let Some(file) = self.inventory_file(src, inv) else {
            return;
        };
        for h in file.hosts {
            if let Some(table) = raw.hosts.get(&h.name) {
                self.error(
                    Diagnostic::at(
                        Location::new(&file.source, h.span.clone()),
                        format!(
                            "host `{}` is both in this file and in stack.toml: keep one",
                            h.name
                        ),
                    )
                    .note(format!(
                        "stack.toml:{}: its [hosts.{}] table",
                        src.line_col(table.span().start).0,
                        h.name
                    )),
                );
                continue;
            }
            hosts.insert(
                h.name.clone(),
                Host {
                    name: h.name,
                    address: h.address,
                    labels: h.labels,
                    settings: self.host_defaults.clone(),
                    transport: TransportKind::Ssh,
                    ssh: defaults.clone(),
                },
            );
        }
    }

    pub(super) fn ssh_settings(
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

    /// A path from the stack: `~/` is the user's home, a relative path is relative to the stack.
    pub(super) fn resolve_path(&self, p: &str) -> String {
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

    /// Takes the provider settings (`hcloud_server`) out of each `[hosts.NAME]` table of the
    /// stack file, so that what remains is read with unknown keys refused.
    pub(super) fn host_settings(
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
        let defaults = self.setting_defaults(src, doc, &keys);
        self.host_defaults = defaults.clone();
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
            if !defaults.is_empty() {
                out.insert(name.get_ref().to_string(), defaults.clone());
            }
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

    /// The stack-wide `[defaults]` of provider host settings (`container_runtime = "docker"`),
    /// taken out of the stack file: every host starts from them and may override each one in its
    /// own table.
    fn setting_defaults(
        &mut self,
        src: &Arc<SourceFile>,
        doc: &mut DeTable<'static>,
        keys: &[&str],
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(table) = doc.remove("defaults") else {
            return out;
        };
        let DeValue::Table(table) = table.get_ref() else {
            self.error(Diagnostic::at(
                Location::new(src, table.span()),
                "`defaults` must be a table of host settings",
            ));
            return out;
        };
        for (k, v) in table {
            let key = k.get_ref();
            if !keys.contains(&key.as_ref()) {
                let known: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
                self.error(Diagnostic::at(
                    Location::new(src, k.span()),
                    format!(
                        "unknown host setting `{key}` in [defaults]: expected one of {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
                continue;
            }
            match v.get_ref().as_str() {
                Some(text) => {
                    out.insert(key.to_string(), text.to_string());
                }
                None => self.error(Diagnostic::at(
                    Location::new(src, v.span()),
                    format!("`{key}` must be a string"),
                )),
            }
        }
        out
    }

    /// A host table's "unknown field" error also names the keys providers add to host tables.
    pub(super) fn name_host_settings(&mut self) {
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
}

pub(super) fn valid_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}
