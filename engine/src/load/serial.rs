//! `serial`: the instances of one resource applied one host at a time (a Galera cluster, whose
//! nodes must not all restart together). The loader adds dependency edges between the instances,
//! so the graph and the gates do the rest: instance N+1 waits for instance N (`serial = true`) or
//! for the named check's instance on host N (`serial = { after_each = "check.NAME" }`), and a
//! failing check leaves the later hosts not attempted.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;
use toml::de::DeValue;

use super::Loader;
use super::resources::Decl;
use crate::diag::{Diagnostic, Location, SourceFile};
use crate::model::{Address, Instance, SerialOrder};
use crate::provider::Placement;

/// The key, read by the engine in every resource table.
pub(crate) const SERIAL_KEY: &str = "serial";

/// How a resource's instances follow one another.
#[derive(Debug, Clone)]
pub(crate) enum Serial {
    /// `serial = true`: each instance waits for the one before it.
    OneByOne,
    /// `serial = { after_each = "check.NAME" }`: each instance waits for that check's instance on
    /// the host before it.
    AfterEach(Spanned<String>),
}

const SHAPE: &str = "`serial` must be `true` (one host at a time) or `{ after_each = \"check.NAME\" }` (one host at a time, that check passing on each before the next)";

impl Loader<'_> {
    /// Reads a resource's `serial = ...`; `None` after an error.
    pub(super) fn serial(
        &mut self,
        src: &Arc<SourceFile>,
        kind: &str,
        placement: &Placement,
        v: Spanned<DeValue<'static>>,
    ) -> Option<Serial> {
        let span = v.span();
        let err = |msg: String| Diagnostic::at(Location::new(src, span.clone()), msg);
        match placement {
            Placement::EachHost => {}
            Placement::Api { service } => {
                self.error(err(format!(
                    "`serial` is for resources on hosts: `{kind}` lives behind {service}, on no host"
                )));
                return None;
            }
            Placement::Group => {
                self.error(err(format!(
                    "`serial` is for resources with one instance per host: `{kind}` has one instance for its whole group of hosts"
                )));
                return None;
            }
        }
        match v.into_inner() {
            DeValue::Boolean(true) => Some(Serial::OneByOne),
            DeValue::Boolean(false) => {
                self.error(err(
                    "`serial = false` is what leaving `serial` out means: remove the key".into(),
                ));
                None
            }
            DeValue::Table(t) => {
                for k in t.keys() {
                    if k.get_ref() != "after_each" {
                        self.error(Diagnostic::at(
                            Location::new(src, k.span()),
                            format!(
                                "unknown key `serial.{}`: expected `after_each`",
                                k.get_ref()
                            ),
                        ));
                        return None;
                    }
                }
                match t.get("after_each").map(|c| (c.span(), c.get_ref())) {
                    Some((at, DeValue::String(s))) => {
                        Some(Serial::AfterEach(Spanned::new(at, s.to_string())))
                    }
                    Some((at, _)) => {
                        self.error(Diagnostic::at(
                            Location::new(src, at),
                            "`serial.after_each` must be a string: the check to pass on each host before the next (\"check.NAME\")",
                        ));
                        None
                    }
                    None => {
                        self.error(err(SHAPE.into()));
                        None
                    }
                }
            }
            _ => {
                self.error(err(SHAPE.into()));
                None
            }
        }
    }

    /// Adds the edges of every `serial` resource: its instances follow one another in the order
    /// `on` selected their hosts (the order listed, or host name order for labels).
    pub(super) fn serial_edges(
        &mut self,
        decls: &[Decl],
        ranges: &[Range<usize>],
        instances: &mut [Instance],
    ) {
        let index: HashMap<String, usize> = decls
            .iter()
            .enumerate()
            .map(|(i, d)| (d.resource(), i))
            .collect();
        for (d, range) in decls.iter().zip(ranges) {
            let Some(serial) = &d.serial else { continue };
            let hosts: Vec<String> = instances[range.clone()]
                .iter()
                .filter_map(|i| i.address.host.clone())
                .collect();
            let before: Vec<Address> = match serial {
                Serial::OneByOne => instances[range.clone()]
                    .iter()
                    .map(|i| i.address.clone())
                    .collect(),
                Serial::AfterEach(check) => {
                    let Some(found) = self.after_each(d, check, &index, decls, ranges, instances)
                    else {
                        continue;
                    };
                    let mut out = Vec::new();
                    // The last host's check is waited for by nothing: it may be absent.
                    for h in &hosts[..hosts.len().saturating_sub(1)] {
                        match found.iter().find(|a| a.host.as_deref() == Some(h)) {
                            Some(a) => out.push(a.clone()),
                            None => {
                                self.error(Diagnostic::at(
                                    super::loc(&d.file, check),
                                    format!(
                                        "`{}` has no instance on host `{h}`: `serial` waits for it there before the next host",
                                        check.get_ref()
                                    ),
                                ));
                                break;
                            }
                        }
                    }
                    out
                }
            };
            // Each instance waits for the one before it too, not only for its check: a check
            // that does not depend on that instance would otherwise be read passing at apply
            // (nothing above it changed) and let the two run together; and a deletion (which
            // knows no checks) keeps the order, reversed.
            let own: Vec<Address> = instances[range.clone()]
                .iter()
                .map(|i| i.address.clone())
                .collect();
            for (k, inst) in instances[range.clone()].iter_mut().enumerate().skip(1) {
                for prev in [own.get(k - 1), before.get(k - 1)].into_iter().flatten() {
                    if !inst.depends_on.contains(prev) {
                        inst.depends_on.push(prev.clone());
                    }
                }
            }
        }
    }

    /// The instances of the check `after_each` names (`check.NAME` in the same module, or
    /// `MODULE.check.NAME`); `None` after an error.
    fn after_each(
        &mut self,
        d: &Decl,
        check: &Spanned<String>,
        index: &HashMap<String, usize>,
        decls: &[Decl],
        ranges: &[Range<usize>],
        instances: &[Instance],
    ) -> Option<Vec<Address>> {
        let text = check.get_ref();
        let at = super::loc(&d.file, check);
        let key = match text.split('.').collect::<Vec<_>>().as_slice() {
            [m, k, n] if !text.contains('[') => format!("{m}.{k}.{n}"),
            [k, n] if !text.contains('[') => format!("{}.{k}.{n}", d.module),
            _ => {
                self.error(Diagnostic::at(
                    at,
                    format!("invalid `serial.after_each` `{text}`: expected check.NAME or MODULE.check.NAME (the check, on each host)"),
                ));
                return None;
            }
        };
        let Some(&i) = index.get(&key) else {
            let known: Vec<String> = index
                .keys()
                .filter(|k| decls[index[*k]].declared.gate.is_some())
                .cloned()
                .collect();
            self.error(Diagnostic::at(
                at,
                format!(
                    "unknown check `{key}` in `serial.after_each`{}",
                    super::suggest(&key, known.iter())
                ),
            ));
            return None;
        };
        if decls[i].declared.gate.is_none() {
            self.error(Diagnostic::at(
                at,
                format!(
                    "`serial.after_each` names `{key}`, a {}: it must name a check, which passes or fails",
                    decls[i].kind
                ),
            ));
            return None;
        }
        Some(
            instances[ranges[i].clone()]
                .iter()
                .map(|i| i.address.clone())
                .collect(),
        )
    }
}

/// The resources applied one host at a time, with their hosts in order as this run keeps them
/// (a lab may leave some out), for the plan to show.
pub(super) fn orders(decls: &[Decl], instances: &[Instance]) -> Vec<SerialOrder> {
    decls
        .iter()
        .filter_map(|d| {
            let serial = d.serial.as_ref()?;
            let resource = d.resource();
            let hosts: Vec<String> = instances
                .iter()
                .filter(|i| i.address.resource() == resource)
                .filter_map(|i| i.address.host.clone())
                .collect();
            let after_each = match serial {
                Serial::OneByOne => None,
                Serial::AfterEach(c) if c.get_ref().matches('.').count() == 1 => {
                    Some(format!("{}.{}", d.module, c.get_ref()))
                }
                Serial::AfterEach(c) => Some(c.get_ref().clone()),
            };
            (hosts.len() > 1).then_some(SerialOrder {
                resource,
                hosts,
                after_each,
            })
        })
        .collect()
}
