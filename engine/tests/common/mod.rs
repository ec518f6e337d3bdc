//! A provider for the loader's tests: it declares what a function makes of each table, and its
//! reads and writes do nothing, since these tests only load stacks.

// Each test file uses what it needs of this module.
#![allow(dead_code)]

use async_trait::async_trait;
use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::{Gate, Instance};
use kz_engine::provider::{
    Applied, ApplyCtx, Declaration, Declared, MemberOutputs, Observation, Provider, ProviderError,
};

/// A resource type `kind` declared by `declare`, with the host settings it reads.
pub struct Declares {
    pub kind: &'static str,
    pub host_settings: &'static [&'static str],
    pub declare: fn(&mut Declaration<'_>) -> Option<Declared>,
}

#[async_trait]
impl Provider for Declares {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn host_settings(&self) -> &'static [&'static str] {
        self.host_settings
    }
    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        (self.declare)(decl)
    }
    fn probe(&self, _: &Instance, _: &str) -> Option<String> {
        None
    }
    fn observe(&self, _: &Instance, _: &MemberOutputs) -> Result<Observation, String> {
        Ok(Observation::default())
    }
    async fn create(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }
    async fn update(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }
    async fn delete(&self, _: &ApplyCtx) -> Result<Applied, ProviderError> {
        Ok(Applied::default())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteTable {
    text: Spanned<String>,
}

fn declare_note(decl: &mut Declaration<'_>, gate: bool) -> Option<Declared> {
    let t: NoteTable = decl.parse()?;
    Some(Declared {
        attrs: vec![("text".into(), Template::Text(t.text))],
        gate: gate.then(Gate::default),
    })
}

/// `[[KIND]]` with one text attribute, `text`, interpolated on each host.
pub fn note(kind: &'static str) -> Declares {
    Declares {
        kind,
        host_settings: &[],
        declare: |d| declare_note(d, false),
    }
}

/// As [`note`], but a check: a gate for what depends on it.
pub fn note_check(kind: &'static str) -> Declares {
    Declares {
        kind,
        host_settings: &[],
        declare: |d| declare_note(d, true),
    }
}
