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
    /// The secrets the stack uses (`${secret.NAME}`), and their values when set.
    pub secrets: crate::secrets::Secrets,
    /// What a run under an overlay (the lab) left out of the stack.
    pub left_out: crate::overlay::LeftOut,
    /// The drills (`[[drill]]`), which plan and apply never touch.
    pub drills: Vec<crate::drill::Drill>,
    /// `[networks]`: named IPv4 ranges as this run sees them (under the lab, the lab's network).
    pub networks: BTreeMap<String, String>,
    /// `[lab]`: how `kz lab up` makes this stack's hosts.
    /// The resources applied one host at a time, as this run orders them.
    pub serial: Vec<SerialOrder>,
    pub lab: LabSettings,
}

/// A resource applied one host at a time (`serial`): its hosts in order, and the check each
/// waits for on the host before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialOrder {
    /// `MODULE.TYPE.NAME`.
    pub resource: String,
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_each: Option<String>,
}

/// The stack's `[lab]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabSettings {
    pub init: LabInit,
}

/// The first process of a lab host: sshd alone (the default, quick and small), or systemd, so
/// units, `systemctl` and Docker behave as on a real server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LabInit {
    #[default]
    Sshd,
    Systemd,
}

impl Stack {
    /// The modules in the order apply reaches them: each after the modules it depends on, ties by
    /// name (a cycle, refused by the loader, would end the list early).
    pub fn module_order(&self) -> Vec<String> {
        let mut done: Vec<String> = Vec::with_capacity(self.modules.len());
        while done.len() < self.modules.len() {
            let next = self.modules.values().find(|m| {
                !done.contains(&m.name)
                    && m.depends_on
                        .iter()
                        .all(|d| done.contains(d) || !self.modules.contains_key(d))
            });
            match next {
                Some(m) => done.push(m.name.clone()),
                None => break,
            }
        }
        done
    }

    pub fn instance(&self, address: &str) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| i.address.to_string() == address)
    }
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// What `[state]` asks for; a lab run (`--lab`) uses the lab's own file instead, whatever
    /// this says.
    pub backend: kz_state::BackendConfig,
}

/// How kz reaches a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportKind {
    /// The machine that runs kz.
    Local,
    Ssh,
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
    /// Host settings that belong to a provider (`hcloud_server`), by key: the providers declare
    /// which keys a host table may hold.
    pub settings: BTreeMap<String, String>,
    pub transport: TransportKind,
    pub ssh: SshSettings,
}

#[derive(Debug, Clone, Default)]
pub struct Module {
    pub name: String,
    pub description: Option<String>,
    pub depends_on: Vec<String>,
    /// `[module] lab = { skip = "REASON" }`: why the module is left out of lab runs.
    pub lab_skip: Option<String>,
}

/// `MODULE.TYPE.NAME[HOST]`: the identity of one instance, in plans, state and `--target`. An
/// instance on no single host (one spanning a group of hosts, or one behind an API) has no
/// `[HOST]`: `04_redis.sentinel.cache`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub module: String,
    pub kind: String,
    pub name: String,
    pub host: Option<String>,
}

impl Address {
    /// `MODULE.TYPE.NAME`, the resource this instance belongs to.
    pub fn resource(&self) -> String {
        format!("{}.{}.{}", self.module, self.kind, self.name)
    }

    /// Parses `MODULE.TYPE.NAME[HOST]` or `MODULE.TYPE.NAME`.
    pub fn parse(s: &str) -> Option<Address> {
        let (res, host) = match s.strip_suffix(']') {
            Some(t) => {
                let (res, host) = t.split_once('[')?;
                (res, Some(host))
            }
            None => (s, None),
        };
        let mut parts = res.splitn(3, '.');
        let (module, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
        if [module, kind, name]
            .iter()
            .any(|p| p.is_empty() || p.contains('['))
            || host.is_some_and(str::is_empty)
        {
            return None;
        }
        Some(Address {
            module: module.into(),
            kind: kind.into(),
            name: name.into(),
            host: host.map(String::from),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.module, self.kind, self.name)?;
        match &self.host {
            Some(h) => write!(f, "[{h}]"),
            None => Ok(()),
        }
    }
}

/// An attribute value, as declared or as read from a host. Lists and tables nest, so typed
/// configurations (backends with their servers, firewall rules) are data too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Text(String),
    /// A large content recorded by its digest only, to keep the state small. Before `Map`, so
    /// that a recorded digest reads back as one; only from a table, so that a list never does.
    Digest(#[serde(deserialize_with = "digest_from_table")] ContentDigest),
    Map(BTreeMap<String, Value>),
    List(Vec<Value>),
    /// Content that is not UTF-8 (a binary `source` file). Never recorded as such: the state
    /// keeps its digest, and plans show the digest.
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentDigest {
    pub sha256: String,
    pub size: u64,
}

/// Reads a digest from a table only (`{"sha256": ..., "size": ...}`), never from a list, which
/// serde would otherwise accept for a struct.
fn digest_from_table<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ContentDigest, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        sha256: String,
        size: u64,
    }
    struct TableOnly;
    impl<'de> serde::de::Visitor<'de> for TableOnly {
        type Value = ContentDigest;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table with sha256 and size")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            map: A,
        ) -> Result<ContentDigest, A::Error> {
            let r = Raw::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            Ok(ContentDigest {
                sha256: r.sha256,
                size: r.size,
            })
        }
    }
    d.deserialize_map(TableOnly)
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

    /// Every text inside the value, nested ones included.
    pub fn texts(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit_texts(&mut |t| out.push(t));
        out
    }

    fn visit_texts<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        match self {
            Value::Text(t) => f(t),
            Value::Map(m) => m.values().for_each(|v| v.visit_texts(f)),
            Value::List(l) => l.iter().for_each(|v| v.visit_texts(f)),
            _ => {}
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
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same_as(vb))
            }
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
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

/// One resource on one host, on a group of hosts, or behind an API: what the providers act on.
#[derive(Debug, Clone)]
pub struct Instance {
    pub address: Address,
    /// The hosts of an instance spanning a group of hosts; empty for one on a single host (its
    /// host is in its address) or behind an API. [`Instance::hosts`] gives the hosts of any.
    pub members: Vec<String>,
    pub attrs: Attrs,
    /// Instances this one waits for (direct `depends_on`, resolved); module order comes from barriers.
    pub depends_on: Vec<Address>,
    /// Values its provider computed when it was last applied (from the state).
    pub outputs: BTreeMap<String, Value>,
    /// It is a health check that gates what depends on it (see [`Gate`]).
    pub gate: Option<std::sync::Arc<Gate>>,
}

/// How a gate runs at apply time: again, fresh, after anything it depends on changed, until it
/// passes `successes` times in a row or its deadline passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Tries at most (the first included).
    pub tries: u32,
    /// The pause between two tries.
    pub interval: Duration,
    /// Consecutive passes required.
    pub successes: u32,
    /// No try starts after this much time.
    pub deadline: Duration,
    /// The host that runs it, when not the instance's own (`from`): its probe joins that
    /// host's read, and an unreachable `from` host fails it.
    pub from: Option<String>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            tries: 3,
            interval: Duration::from_secs(2),
            successes: 1,
            deadline: Duration::from_secs(60),
            from: None,
        }
    }
}

impl Instance {
    pub fn kind(&self) -> &str {
        &self.address.kind
    }
    /// The host of an instance that lives on one host.
    pub fn host(&self) -> Option<&str> {
        self.address.host.as_deref()
    }

    /// The hosts it is read and changed on: its own host, the group it spans, or none for a
    /// resource behind an API.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.address
            .host
            .as_deref()
            .into_iter()
            .chain(self.members.iter().map(String::as_str))
    }
    /// The host whose read holds its probe: a gate's `from` host, else its own host.
    pub fn read_host(&self) -> Option<&str> {
        self.gate
            .as_ref()
            .and_then(|g| g.from.as_deref())
            .or(self.address.host.as_deref())
    }
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }
    /// A known text attribute; `None` when absent, unknown or not text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.attrs.get(name)?.known()?.as_str()
    }
}
