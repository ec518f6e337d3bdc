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
    #[serde(default)]
    pub hosts: BTreeMap<String, Spanned<HostTable>>,
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
    pub hcloud_server: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleFile {
    pub module: Option<ModuleTable>,
    #[serde(default)]
    pub file: Vec<Spanned<FileDecl>>,
    #[serde(default)]
    pub command: Vec<Spanned<CommandDecl>>,
    #[serde(default)]
    pub lb: Vec<Spanned<LbDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleTable {
    pub description: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDecl {
    pub name: Spanned<String>,
    pub on: Spanned<toml::Value>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    pub path: Spanned<String>,
    pub content: Option<Spanned<String>>,
    pub source: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub ensure: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandDecl {
    pub name: Spanned<String>,
    pub on: Spanned<toml::Value>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    pub run: Spanned<String>,
    pub check: Option<Spanned<String>>,
    pub destroy: Option<Spanned<String>>,
    pub triggers: Option<Spanned<BTreeMap<String, toml::Value>>>,
    pub timeout: Option<Spanned<String>>,
}

/// A Hetzner Cloud load balancer (`[[lb]]`); it lives on no host of the inventory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbDecl {
    pub name: Spanned<String>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    #[serde(rename = "type")]
    pub lb_type: Spanned<String>,
    pub location: Option<Spanned<String>>,
    pub network_zone: Option<Spanned<String>>,
    pub algorithm: Option<Spanned<String>>,
    pub public_interface: Option<bool>,
    pub network: Option<Spanned<String>>,
    pub ip: Option<Spanned<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub targets: Option<Spanned<Vec<Spanned<String>>>>,
    pub target_label: Option<Spanned<String>>,
    pub use_private_ip: Option<bool>,
    pub token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub service: Vec<Spanned<LbServiceDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbServiceDecl {
    pub protocol: Spanned<String>,
    pub listen_port: Spanned<i64>,
    pub destination_port: Option<Spanned<i64>>,
    #[serde(default)]
    pub proxyprotocol: bool,
    pub health_check: Option<Spanned<LbHealthCheckDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbHealthCheckDecl {
    pub protocol: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub domain: Option<Spanned<String>>,
}
