//! `${...}` interpolation in string attributes.
//!
//! References: `${host.name}`, `${host.address}`, `${host.labels.KEY}`, `${hosts.NAME.address}`,
//! `${networks.NAME}`, `${env.NAME}` and `${secret.NAME}` (from `KZ_SECRET_NAME`). `$${` writes a literal `${`.

use std::collections::BTreeMap;

use crate::model::Host;

/// What an interpolation can refer to.
pub struct Scope<'a> {
    /// The host of the instance; `None` for one on no single host (a group, an API).
    pub host: Option<&'a Host>,
    pub hosts: &'a BTreeMap<String, Host>,
    /// `[networks]` of the stack, as the run sees them.
    pub networks: &'a BTreeMap<String, String>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The result of interpolating one string.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Interpolated {
    /// The text, or `None` when a secret it uses is not set.
    pub text: Option<String>,
    /// Names of the secrets it uses.
    pub secrets: Vec<String>,
}

/// An error at a byte offset of the input string.
#[derive(Debug, PartialEq, Eq)]
pub struct InterpError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
}

/// The environment variable that holds secret `name`.
pub fn secret_var(name: &str) -> String {
    format!("KZ_SECRET_{}", name.to_uppercase())
}

pub fn interpolate(input: &str, scope: &Scope<'_>) -> Result<Interpolated, InterpError> {
    let mut out = String::with_capacity(input.len());
    let mut secrets = Vec::new();
    let mut unknown = false;
    let mut rest = input;
    let mut pos = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            pos += i + 3;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            pos += i + 1;
            continue;
        }
        let start = pos + i;
        let Some(end) = after.find('}') else {
            return Err(InterpError {
                offset: start,
                len: 2,
                message: "unterminated `${`: expected `}` (write `$${` for a literal `${`)".into(),
            });
        };
        let expr = &after[2..end];
        let err = |message: String| InterpError {
            offset: start,
            len: end + 1,
            message,
        };
        match resolve(expr.trim(), scope).map_err(err)? {
            Resolved::Text(t) => out.push_str(&t),
            Resolved::Secret(name, value) => {
                match value {
                    Some(v) => out.push_str(&v),
                    None => unknown = true,
                }
                if !secrets.contains(&name) {
                    secrets.push(name);
                }
            }
        }
        rest = &after[end + 1..];
        pos = start + end + 1;
    }
    out.push_str(rest);
    Ok(Interpolated {
        text: (!unknown).then_some(out),
        secrets,
    })
}

enum Resolved {
    Text(String),
    Secret(String, Option<String>),
}

fn resolve(expr: &str, scope: &Scope<'_>) -> Result<Resolved, String> {
    let parts: Vec<&str> = expr.split('.').collect();
    let unknown = || {
        format!(
            "unknown reference `${{{expr}}}`: expected host.name, host.address, host.labels.KEY, \
             hosts.NAME.address, networks.NAME, env.NAME or secret.NAME"
        )
    };
    let host = match (parts.as_slice(), scope.host) {
        (["host", ..], None) => {
            return Err(format!(
                "`${{{expr}}}` has no meaning here: this resource is on no single host (use hosts.NAME.address)"
            ));
        }
        (_, Some(h)) => Some(h),
        (_, None) => None,
    };
    match (parts.as_slice(), host) {
        (["host", "name"], Some(host)) => Ok(Resolved::Text(host.name.clone())),
        (["host", "address"], Some(host)) => Ok(Resolved::Text(host.address.clone())),
        (["host", "labels", key], Some(host)) => host
            .labels
            .get(*key)
            .map(|v| Resolved::Text(v.clone()))
            .ok_or_else(|| {
                format!(
                    "host `{}` has no label `{key}` (in `${{{expr}}}`)",
                    host.name
                )
            }),
        (["hosts", name, "address"], _) => scope
            .hosts
            .get(*name)
            .map(|h| Resolved::Text(h.address.clone()))
            .ok_or_else(|| format!("unknown host `{name}` in `${{{expr}}}`")),
        (["hosts", name, "name"], _) if scope.hosts.contains_key(*name) => {
            Ok(Resolved::Text((*name).to_string()))
        }
        (["networks", name], _) => scope
            .networks
            .get(*name)
            .map(|n| Resolved::Text(n.clone()))
            .ok_or_else(|| {
                let known: Vec<&str> = scope.networks.keys().map(String::as_str).collect();
                if known.is_empty() {
                    format!("unknown network `{name}` in `${{{expr}}}`: stack.toml has no [networks]")
                } else {
                    format!(
                        "unknown network `{name}` in `${{{expr}}}`: [networks] in stack.toml has {}",
                        known.join(", ")
                    )
                }
            }),
        (["env", name], _) if valid_var(name) => (scope.env)(name)
            .map(Resolved::Text)
            .ok_or_else(|| format!("environment variable `{name}` is not set (in `${{{expr}}}`)")),
        (["secret", name], _) if valid_var(name) => Ok(Resolved::Secret(
            (*name).to_string(),
            (scope.env)(&secret_var(name)),
        )),
        _ => Err(unknown()),
    }
}

fn valid_var(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SshSettings, TransportKind};

    fn host(name: &str, address: &str) -> Host {
        Host {
            name: name.into(),
            address: address.into(),
            labels: BTreeMap::from([("role".to_string(), "redis".to_string())]),
            settings: BTreeMap::new(),
            transport: TransportKind::Ssh,
            ssh: SshSettings::default(),
        }
    }

    fn run(input: &str) -> Result<Interpolated, InterpError> {
        let h = host("redis-01", "10.0.0.123");
        let hosts = BTreeMap::from([("redis-02".to_string(), host("redis-02", "10.0.0.124"))]);
        let env = |k: &str| match k {
            "HOME" => Some("/root".to_string()),
            "KZ_SECRET_REDIS_PASSWORD" => Some("s3cret".to_string()),
            _ => None,
        };
        let networks = BTreeMap::from([("private".to_string(), "10.0.0.0/16".to_string())]);
        interpolate(
            input,
            &Scope {
                host: Some(&h),
                hosts: &hosts,
                networks: &networks,
                env: &env,
            },
        )
    }

    #[test]
    fn resolves_every_reference_kind() {
        let r = run("${host.name} ${host.address} ${host.labels.role} ${hosts.redis-02.address} ${env.HOME} ${networks.private}")
            .expect("valid");
        assert_eq!(
            r.text.as_deref(),
            Some("redis-01 10.0.0.123 redis 10.0.0.124 /root 10.0.0.0/16")
        );
        assert!(r.secrets.is_empty());
    }

    #[test]
    fn secrets_are_reported_and_unknown_when_unset() {
        let r = run("requirepass ${secret.redis_password}").expect("valid");
        assert_eq!(r.text.as_deref(), Some("requirepass s3cret"));
        assert_eq!(r.secrets, vec!["redis_password".to_string()]);
        let r = run("${secret.other}").expect("valid");
        assert_eq!(r.text, None);
    }

    #[test]
    fn escapes_and_plain_dollars_are_kept() {
        let r = run("cost $5, $${not.a.ref}, $HOME").expect("valid");
        assert_eq!(r.text.as_deref(), Some("cost $5, ${not.a.ref}, $HOME"));
    }

    #[test]
    fn errors_point_at_the_reference() {
        let e = run("a ${host.nope} b").expect_err("unknown");
        assert_eq!((e.offset, e.len), (2, 12));
        assert!(e.message.contains("unknown reference `${host.nope}`"));
        let e = run("x ${host.name").expect_err("unterminated");
        assert_eq!(e.offset, 2);
        let e = run("${networks.public}").expect_err("unknown network");
        assert!(
            e.message.contains("[networks] in stack.toml has private"),
            "{}",
            e.message
        );
        let e = run("${env.KZ_SURELY_UNSET}").expect_err("unset env");
        assert!(e.message.contains("KZ_SURELY_UNSET"));
    }
}
