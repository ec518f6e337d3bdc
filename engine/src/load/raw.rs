//! The TOML shapes of stack files, exactly as written. Unknown keys are rejected everywhere.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    pub stack: StackTable,
    pub state: Option<StateTable>,
    pub ssh: Option<SshTable>,
    pub inventory: Option<Spanned<InventoryTable>>,
    #[serde(default)]
    pub hosts: BTreeMap<String, Spanned<HostTable>>,
    /// `[networks]`: named IPv4 ranges (`private = "10.0.0.0/16"`), for `${networks.NAME}`.
    #[serde(default)]
    pub networks: BTreeMap<String, Spanned<String>>,
    pub lab: Option<LabTable>,
}

/// `[lab]`: how `kz lab up` makes the stack's hosts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabTable {
    pub init: Option<Spanned<String>>,
}

/// `[inventory]`: more hosts, read from a TSV or CSV file with a header line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryTable {
    pub file: Spanned<String>,
    pub format: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackTable {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub parallelism: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateTable {
    pub backend: Option<Spanned<String>>,
    pub url_env: Option<Spanned<String>>,
    pub schema: Option<Spanned<String>>,
    pub retry: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTable {
    pub user: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub identity: Option<Spanned<toml::Value>>,
    pub known_hosts: Option<Spanned<String>>,
    pub jump: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub command_timeout: Option<Spanned<String>>,
    pub keepalive: Option<Spanned<String>>,
    pub max_sessions: Option<Spanned<i64>>,
    pub accept_new_host_keys: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTable {
    pub address: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub transport: Option<Spanned<String>>,
    pub ssh: Option<SshTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleTable {
    pub description: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// `lab = { skip = "REASON" }`: the module is left out of lab runs (`--lab`).
    pub lab: Option<ModuleLab>,
}

/// `[module] lab`: how the module behaves in the lab.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleLab {
    /// Why the module cannot run in the lab (`no Debian package of MinIO`): its instances are
    /// left out of lab runs, and plan, apply, verify and drill show this reason.
    pub skip: Spanned<String>,
}
