//! A resource's `lab = { ... }`: how a lab run (`--lab`) takes it.

use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{COMMON_KEYS, LAB_KEY};
use crate::diag::{Diagnostic, Location, SourceFile};
use crate::load::Loader;
use crate::load::serial::SERIAL_KEY;

/// A resource's `lab = { ... }`: how a lab run (`--lab`) takes it.
pub(super) enum ResourceLab {
    /// `lab = { skip = "REASON" }`: the lab leaves it out, and says why.
    Skip(String),
    /// `lab = { address = "...", ... }`, for checks only: these keys replace the check's own in
    /// a lab run (where to look, when the production target has no lab counterpart).
    Override(DeTable<'static>),
}

impl Loader<'_> {
    /// A resource's `lab = { ... }`: `{ skip = "REASON" }`, or keys that replace its own in a
    /// lab run.
    pub(super) fn resource_lab(
        &mut self,
        src: &Arc<SourceFile>,
        v: Spanned<DeValue<'static>>,
    ) -> Option<ResourceLab> {
        let span = v.span();
        let DeValue::Table(t) = v.into_inner() else {
            self.error(Diagnostic::at(
                Location::new(src, span),
                "`lab` must be a table: `lab = { skip = \"why\" }`, or the check keys a lab run uses instead (`lab = { address = \"...\" }`)",
            ));
            return None;
        };
        if t.is_empty() {
            self.error(Diagnostic::at(
                Location::new(src, span),
                "`lab = {}` says nothing: give `skip = \"why\"`, or the check keys a lab run uses instead",
            ));
            return None;
        }
        if let Some(skip) = t.get("skip") {
            if t.len() > 1 {
                self.error(Diagnostic::at(
                    Location::new(src, span),
                    "`lab` gives `skip` and other keys: a resource left out of the lab needs nothing else there",
                ));
                return None;
            }
            let text = match skip.get_ref() {
                DeValue::String(s) => Spanned::new(skip.span(), s.to_string()),
                _ => {
                    self.error(Diagnostic::at(
                        Location::new(src, skip.span()),
                        "`lab.skip` must be a string: why the lab leaves this out",
                    ));
                    return None;
                }
            };
            return self.lab_skip_reason(src, &text).map(ResourceLab::Skip);
        }
        for k in t.keys() {
            let key: &str = k.get_ref();
            if COMMON_KEYS.contains(&key) || key == "kind" || key == LAB_KEY || key == SERIAL_KEY {
                self.error(Diagnostic::at(
                    Location::new(src, k.span()),
                    format!("`lab.{key}`: a lab run keeps the resource's `{key}` (it may change only where a check looks)"),
                ));
                return None;
            }
        }
        Some(ResourceLab::Override(t))
    }
}

/// The resource's own keys with the lab's in their place.
pub(super) fn with_overrides(own: &DeTable<'static>, over: &DeTable<'static>) -> DeTable<'static> {
    let mut t = own.clone();
    for (k, v) in over {
        t.insert(k.clone(), v.clone());
    }
    t
}
