//! The stack model: what the user declared, resolved into instances (one resource on one host).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A loaded, validated stack: inventory, modules and every resource instance, in declaration order.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub description: Option<String>,
    pub dir: PathBuf,
    pub parallelism: Option<usize>,
    pub state: StateConfig,
    pub hosts: BTreeMap<String, Host>,
    pub modules: BTreeMap<String, Module>,
    pub instances: Vec<Instance>,
    /// SHA-256 over every file the stack was loaded from, so a saved plan can tell the stack changed.
    pub digest: String,
    /// Names of the secrets the stack uses (`${secret.NAME}`), sorted.
    pub secrets_used: Vec<String>,
    /// Secrets used by the stack whose environment variable is not set.
    pub secrets_missing: Vec<String>,
}

impl Stack {
    pub fn instance(&self, address: &str) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| i.address.to_string() == address)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackendKind {
    /// `DIR/.kz/state.json`.
    Local,
    /// `DIR/.kz/lab/state.json`: the lab's own state (`--lab`), never mixed with the real one.
    Lab,
    /// A PostgreSQL database shared by the team.
    Postgres {
        /// The variable holding a libpq URL; `None` means the standard `PG*` variables.
        url_env: Option<String>,
        schema: String,
        /// How long a failing state write is retried before the rescue file is written.
        retry: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: StateBackendKind,
}

/// How kz reaches a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportKind {
    /// The machine that runs kz.
    Local,
    Ssh,
    /// Not a machine: the pseudo-host of resources kz manages through an API (`hcloud` for
    /// Hetzner Cloud). Its resources are read by [`Provider::read`](crate::provider::Provider::read).
    Api,
}

/// SSH settings, from the stack's `[ssh]` table merged with the host's own `ssh` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    pub user: String,
    pub port: u16,
    pub identity: Vec<String>,
    pub known_hosts: Option<String>,
    pub jump: Option<String>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive: Duration,
    pub max_sessions: usize,
    pub accept_new_host_keys: bool,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            user: "root".into(),
            port: 22,
            identity: Vec::new(),
            known_hosts: None,
            jump: None,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(600),
            keepalive: Duration::from_secs(15),
            max_sessions: 4,
            accept_new_host_keys: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// The Hetzner Cloud server behind this host, when its name differs from the host's.
    pub hcloud_server: Option<String>,
    pub transport: TransportKind,
    pub ssh: SshSettings,
}

#[derive(Debug, Clone, Default)]
pub struct Module {
    pub name: String,
    pub description: Option<String>,
    pub depends_on: Vec<String>,
}

/// `MODULE.TYPE.NAME[HOST]`: the identity of one instance, in plans, state and `--target`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub module: String,
    pub kind: String,
    pub name: String,
    pub host: String,
}

impl Address {
    /// `MODULE.TYPE.NAME`, the resource this instance belongs to.
    pub fn resource(&self) -> String {
        format!("{}.{}.{}", self.module, self.kind, self.name)
    }

    /// Parses `MODULE.TYPE.NAME[HOST]`.
    pub fn parse(s: &str) -> Option<Address> {
        let (res, host) = s.strip_suffix(']')?.split_once('[')?;
        let mut parts = res.splitn(3, '.');
        let (module, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
        if [module, kind, name, host].iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(Address {
            module: module.into(),
            kind: kind.into(),
            name: name.into(),
            host: host.into(),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}[{}]",
            self.module, self.kind, self.name, self.host
        )
    }
}

/// A plain attribute value, as declared or as read from a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Text(String),
    Map(BTreeMap<String, String>),
    List(Vec<String>),
    /// Content that is not UTF-8 (a binary `source` file).
    Bytes(Vec<u8>),
    /// A large content recorded by its digest only, to keep the state small.
    Digest(ContentDigest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentDigest {
    pub sha256: String,
    pub size: u64,
}

impl ContentDigest {
    pub fn of(bytes: &[u8]) -> ContentDigest {
        ContentDigest {
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        }
    }
}

impl Value {
    /// The bytes of a content-like value (text or binary), if it holds them.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Text(s) => Some(s.as_bytes()),
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The same value in the form it is compared by: contents compare by digest when one side
    /// only has a digest.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Digest(a), Value::Digest(b)) => a == b,
            (Value::Digest(d), v) | (v, Value::Digest(d)) => {
                v.as_bytes().is_some_and(|b| ContentDigest::of(b) == *d)
            }
            (Value::Text(a), Value::Bytes(b)) | (Value::Bytes(b), Value::Text(a)) => {
                a.as_bytes() == b.as_slice()
            }
            (a, b) => a == b,
        }
    }
}

/// An attribute of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub value: AttrValue,
    /// It holds a secret: never shown, logged or stored in clear.
    pub sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Known(Value),
    /// It uses a secret whose variable is not set (plan works without secrets; apply refuses).
    Unknown,
    /// Only a keyed hash is known (a sensitive value read back from the state).
    Hashed(String),
}

impl Attr {
    pub fn plain(value: Value) -> Attr {
        Attr {
            value: AttrValue::Known(value),
            sensitive: false,
        }
    }

    pub fn known(&self) -> Option<&Value> {
        match &self.value {
            AttrValue::Known(v) => Some(v),
            _ => None,
        }
    }
}

pub type Attrs = BTreeMap<String, Attr>;

/// One resource on one host: what the providers act on.
#[derive(Debug, Clone)]
pub struct Instance {
    pub address: Address,
    pub attrs: Attrs,
    /// Instances this one waits for (direct `depends_on`, resolved); module order comes from barriers.
    pub depends_on: Vec<Address>,
}

impl Instance {
    pub fn kind(&self) -> &str {
        &self.address.kind
    }
    pub fn host(&self) -> &str {
        &self.address.host
    }
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }
    /// A known text attribute; `None` when absent, unknown or not text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.attrs.get(name)?.known()?.as_str()
    }
}
