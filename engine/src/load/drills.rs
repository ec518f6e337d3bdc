//! `[[drill]]` tables: taken out of each module file before its resources go to the providers
//! (a drill is no resource: plan and apply never see it), then checked against the declared
//! checks and hosts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::{Loader, ParsedModule, loc, resources::Decl, suggest, valid_name};
use crate::diag::{Diagnostic, SourceFile};
use crate::drill::{Drill, Expectation, Fault, FaultKind, Measure};
use crate::model::Host;
use crate::provider::shell_quote;

/// The key of drill tables in a module file.
const DRILL_KEY: &str = "drill";

/// The `drill` value of each module file, taken out of its resource tables.
pub(super) type DrillTables = Vec<(String, Arc<SourceFile>, Spanned<DeValue<'static>>)>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    name: Spanned<String>,
    description: Option<String>,
    #[serde(default)]
    steady: Vec<Spanned<String>>,
    steady_within: Option<Spanned<String>>,
    fault: Spanned<RawFault>,
    #[serde(default)]
    expect: Vec<RawExpect>,
    restore_within: Option<Spanned<String>>,
    #[serde(default)]
    measure: Vec<RawMeasure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: Spanned<String>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    command: Option<Spanned<String>>,
    undo: Option<Spanned<String>>,
    container: Option<Spanned<String>>,
    runtime: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

fn hint(key: &str) -> &'static str {
    match key {
        "command" => "the script run on each of its hosts",
        "container" => "the name of the container on each of its hosts",
        _ => "the systemd unit stopped on each of its hosts",
    }
}

/// The script of a container fault and its undo: `kill` (the container's processes get SIGKILL,
/// as in a crash) or `stop`, then `start`.
fn container_commands(kind: FaultKind, runtime: &str, name: &str) -> (String, String) {
    let q = shell_quote(name);
    let fault = match kind {
        FaultKind::KillContainer => format!("{runtime} kill {q}"),
        _ => format!("{runtime} stop -t 10 {q}"),
    };
    (fault, format!("{runtime} start {q}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    check: Spanned<String>,
    within: Spanned<String>,
    hold: Option<Spanned<String>>,
}

/// The longest an expectation may be held: a drill keeps its fault in place meanwhile.
const MAX_HOLD: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeasure {
    name: Spanned<String>,
    on: Spanned<String>,
    command: Spanned<String>,
}

/// Takes the `drill` tables out of every parsed module.
pub(super) fn take_tables(parsed: &mut [ParsedModule]) -> DrillTables {
    parsed
        .iter_mut()
        .filter_map(|(module, src, _, tables)| {
            let v = tables.remove(DRILL_KEY)?;
            Some((module.clone(), Arc::clone(src), v))
        })
        .collect()
}

impl Loader<'_> {
    /// Every drill of the stack, checked; problems become diagnostics.
    pub(super) fn drills(
        &mut self,
        tables: DrillTables,
        decls: &[Decl],
        hosts: &BTreeMap<String, Host>,
    ) -> Vec<Drill> {
        let mut out: Vec<Drill> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (module, src, value) in tables {
            let DeValue::Array(items) = value.get_ref() else {
                self.error(Diagnostic::at(
                    loc(&src, &value),
                    "`drill` must be a list of tables: write each one as [[drill]]",
                ));
                continue;
            };
            for item in items.clone() {
                let raw = match RawDrill::deserialize(ValueDeserializer::from(item)) {
                    Ok(r) => r,
                    Err(e) => {
                        self.toml_error(&src, &e);
                        continue;
                    }
                };
                if !seen.insert(raw.name.get_ref().clone()) {
                    let name = raw.name.get_ref();
                    self.error(Diagnostic::at(
                        loc(&src, &raw.name),
                        format!("drill `{name}` is declared twice: drill names are unique in a stack (kz drill DIR {name})"),
                    ));
                    continue;
                }
                let Some(d) = self.drill(&module, &src, raw, decls, hosts) else {
                    continue;
                };
                out.push(d);
            }
        }
        out
    }

    fn drill(
        &mut self,
        module: &str,
        src: &Arc<SourceFile>,
        raw: RawDrill,
        decls: &[Decl],
        hosts: &BTreeMap<String, Host>,
    ) -> Option<Drill> {
        let before = self.diags.0.len();
        let name = raw.name.get_ref().clone();
        if !valid_name(&name) {
            self.error(Diagnostic::at(
                loc(src, &raw.name),
                format!("invalid drill name `{name}`: use letters, digits, `-` and `_`"),
            ));
        }
        let mut steady = Vec::new();
        for s in &raw.steady {
            steady.extend(self.check_ref(module, src, s, decls, "steady", &name));
        }
        if raw.expect.is_empty() {
            self.error(Diagnostic::at(
                loc(src, &raw.name),
                format!("drill `{name}` expects nothing: add `expect = [{{ check = \"check.NAME\", within = \"30s\" }}]`"),
            ));
        }
        let mut expect = Vec::new();
        for e in &raw.expect {
            let check = self.check_ref(module, src, &e.check, decls, "expect", &name);
            let within = self.duration(src, &e.within);
            let hold = match &e.hold {
                Some(h) => match self.duration(src, h) {
                    Some(d) if d <= MAX_HOLD => Some(d),
                    Some(_) => {
                        self.error(Diagnostic::at(
                            loc(src, h),
                            "`hold` is at most 1h: the fault stays in place while the check is held",
                        ));
                        None
                    }
                    None => None,
                },
                None => Some(Duration::ZERO),
            };
            if let (Some(check), Some(within), Some(hold)) = (check, within, hold) {
                expect.push(Expectation {
                    check,
                    within,
                    hold,
                });
            }
        }
        let fault = self.fault(src, &raw.fault, hosts);
        let mut measure = Vec::new();
        for m in &raw.measure {
            if self.host_ref(src, &m.on, hosts) {
                measure.push(Measure {
                    name: m.name.get_ref().clone(),
                    host: m.on.get_ref().clone(),
                    command: m.command.get_ref().clone(),
                });
            }
        }
        let steady_within = self.duration_or(src, raw.steady_within.as_ref(), 10);
        let restore_within = self.duration_or(src, raw.restore_within.as_ref(), 60);
        if self.diags.0.len() > before {
            return None;
        }
        Some(Drill {
            module: module.to_string(),
            name,
            description: raw.description,
            steady,
            steady_within: steady_within?,
            fault: fault?,
            expect,
            restore_within: restore_within?,
            measure,
        })
    }

    fn fault(
        &mut self,
        src: &Arc<SourceFile>,
        raw: &Spanned<RawFault>,
        hosts: &BTreeMap<String, Host>,
    ) -> Option<Fault> {
        let f = raw.get_ref();
        let Some(kind) = FaultKind::parse(f.kind.get_ref()) else {
            self.error(Diagnostic::at(
                loc(src, &f.kind),
                format!(
                    "unknown fault kind `{}`: expected one of {}",
                    f.kind.get_ref(),
                    FaultKind::NAMES.join(", ")
                ),
            ));
            return None;
        };
        if f.hosts.is_empty() {
            self.error(Diagnostic::at(
                loc(src, raw),
                "the fault names no host: add `hosts = [\"HOST\", ...]`",
            ));
        }
        let known = f.hosts.iter().all(|h| self.host_ref(src, h, hosts));
        let (command, undo) = self.fault_commands(src, raw, kind)?;
        let timeout = self.duration_or(src, f.timeout.as_ref(), 30)?;
        known.then(|| Fault {
            kind,
            hosts: f.hosts.iter().map(|h| h.get_ref().clone()).collect(),
            command,
            undo,
            timeout,
        })
    }

    /// The fault's script and its undo: as written for `command`, made by kz for containers and
    /// services, none for host-level faults. A key of another kind is an error.
    fn fault_commands(
        &mut self,
        src: &Arc<SourceFile>,
        raw: &Spanned<RawFault>,
        kind: FaultKind,
    ) -> Option<(Option<String>, Option<String>)> {
        let f = raw.get_ref();
        let allowed: &[&str] = match kind {
            FaultKind::Command => &["command", "undo"],
            FaultKind::KillContainer | FaultKind::StopContainer => &["container", "runtime"],
            FaultKind::StopService => &["service"],
            _ => &[],
        };
        let keys = [
            ("command", &f.command),
            ("undo", &f.undo),
            ("container", &f.container),
            ("runtime", &f.runtime),
            ("service", &f.service),
        ];
        let mut ok = true;
        for (key, value) in keys {
            if let Some(v) = value
                && !allowed.contains(&key)
            {
                ok = false;
                let what = match kind {
                    k if k.is_host_level() => "kz undoes it itself".to_string(),
                    _ => {
                        let keys: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
                        format!("it takes {}", keys.join(", "))
                    }
                };
                self.error(Diagnostic::at(
                    loc(src, v),
                    format!("a `{}` fault takes no `{key}`: {what}", kind.name()),
                ));
            }
        }
        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|c| c.get_ref().clone());
        let need = |this: &mut Self, key: &str, v: &Option<Spanned<String>>| {
            if v.is_none() {
                this.error(Diagnostic::at(
                    loc(src, raw),
                    format!("a `{}` fault needs `{key}`, {}", kind.name(), hint(key)),
                ));
            }
            text(v)
        };
        let out = match kind {
            FaultKind::Command => (need(self, "command", &f.command), text(&f.undo)),
            FaultKind::KillContainer | FaultKind::StopContainer => {
                let name = need(self, "container", &f.container);
                let runtime = text(&f.runtime).unwrap_or_else(|| "podman".into());
                if runtime != "podman" && runtime != "docker" {
                    ok = false;
                    if let Some(r) = &f.runtime {
                        self.error(Diagnostic::at(
                            loc(src, r),
                            format!(
                                "unknown container runtime `{runtime}`: expected podman or docker"
                            ),
                        ));
                    }
                }
                let (c, u) = container_commands(kind, &runtime, name.as_deref().unwrap_or(""));
                (name.map(|_| c), Some(u))
            }
            FaultKind::StopService => {
                let name = need(self, "service", &f.service);
                let q = shell_quote(name.as_deref().unwrap_or(""));
                (
                    name.map(|_| format!("systemctl stop {q}")),
                    Some(format!("systemctl start {q}")),
                )
            }
            _ => (None, None),
        };
        let complete = kind.is_host_level() || out.0.is_some();
        (ok && complete).then_some(out)
    }

    /// `TYPE.NAME` (in the drill's module) or `MODULE.TYPE.NAME`: a declared check.
    fn check_ref(
        &mut self,
        module: &str,
        src: &Arc<SourceFile>,
        r: &Spanned<String>,
        decls: &[Decl],
        key: &str,
        drill: &str,
    ) -> Option<String> {
        let text = r.get_ref();
        let full = match text.matches('.').count() {
            1 => format!("{module}.{text}"),
            _ => text.clone(),
        };
        let found = decls.iter().find(|d| d.resource() == full);
        match found {
            Some(d) if d.declared.gate.is_some() => Some(full),
            Some(_) => {
                self.error(Diagnostic::at(
                    loc(src, r),
                    format!("`{text}` in {key} of drill `{drill}` is not a check: a drill observes checks (`[[check]]`)"),
                ));
                None
            }
            None => {
                let checks: Vec<String> = decls
                    .iter()
                    .filter(|d| d.declared.gate.is_some())
                    .map(|d| {
                        if d.module == module {
                            format!("{}.{}", d.kind, d.name.get_ref())
                        } else {
                            d.resource()
                        }
                    })
                    .collect();
                self.error(Diagnostic::at(
                    loc(src, r),
                    format!(
                        "unknown check `{text}` in {key} of drill `{drill}` (write `check.NAME` or `MODULE.check.NAME`){}",
                        suggest(text, checks.iter())
                    ),
                ));
                None
            }
        }
    }

    fn host_ref(
        &mut self,
        src: &Arc<SourceFile>,
        h: &Spanned<String>,
        hosts: &BTreeMap<String, Host>,
    ) -> bool {
        if hosts.contains_key(h.get_ref()) {
            return true;
        }
        self.error(Diagnostic::at(
            loc(src, h),
            format!(
                "unknown host `{}`{}",
                h.get_ref(),
                suggest(h.get_ref(), hosts.keys())
            ),
        ));
        false
    }

    fn duration(&mut self, src: &Arc<SourceFile>, d: &Spanned<String>) -> Option<Duration> {
        match crate::units::duration(d.get_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(Diagnostic::at(loc(src, d), e.to_string()));
                None
            }
        }
    }

    fn duration_or(
        &mut self,
        src: &Arc<SourceFile>,
        d: Option<&Spanned<String>>,
        default_secs: u64,
    ) -> Option<Duration> {
        match d {
            Some(d) => self.duration(src, d),
            None => Some(Duration::from_secs(default_secs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_faults_kill_or_stop_and_start_the_container_quoted() {
        assert_eq!(
            container_commands(FaultKind::KillContainer, "podman", "redis"),
            (
                "podman kill 'redis'".to_string(),
                "podman start 'redis'".to_string()
            )
        );
        assert_eq!(
            container_commands(FaultKind::StopContainer, "docker", "a b"),
            (
                "docker stop -t 10 'a b'".to_string(),
                "docker start 'a b'".to_string()
            )
        );
    }
}
