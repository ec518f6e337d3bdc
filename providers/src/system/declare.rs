//! The schema of `[[system]]`: each part is checked here and becomes one attribute of canonical
//! lines, so that plans compare and show each part on its own.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::Value;
use kz_engine::provider::{Declaration, Declared};

use super::ufw::{self, ACTIONS, POLICIES, Rule, Source};

/// A `[[system]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemDecl {
    packages: Option<Vec<Spanned<String>>>,
    absent_packages: Option<Vec<Spanned<String>>>,
    swap: Option<Spanned<String>>,
    ufw: Option<Spanned<UfwDecl>>,
    sshd: Option<BTreeMap<String, Spanned<toml::Value>>>,
    dns: Option<Spanned<Vec<Spanned<String>>>>,
    sysctl: Option<BTreeMap<String, Spanned<toml::Value>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UfwDecl {
    enabled: Option<bool>,
    incoming: Option<Spanned<String>>,
    outgoing: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDecl {
    action: Spanned<String>,
    port: Option<Spanned<toml::Value>>,
    proto: Option<Spanned<String>>,
    from: Option<Spanned<toml::Value>>,
}

/// A Debian package name: lower-case letters, digits, `+`, `-`, `.`, starting with a letter or
/// digit, at least two characters (Debian policy 5.6.1); an `:ARCH` suffix is allowed.
fn valid_package(s: &str) -> bool {
    let name = s.split_once(':').map_or(s, |(n, _)| n);
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && s.split_once(':')
            .is_none_or(|(_, a)| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// A sysctl key: dotted words of letters, digits, `_` and `-` (`net.ipv4.ip_forward`).
fn valid_sysctl_key(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// A value for a config line: a string or an integer, on one line.
fn scalar(decl: &mut Declaration<'_>, key: &str, v: &Spanned<toml::Value>) -> Option<String> {
    let s = match v.get_ref() {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(_) => {
            decl.error(
                v,
                format!("`{key}`: write \"yes\" or \"no\" (a string), not a boolean"),
            );
            return None;
        }
        _ => {
            decl.error(v, format!("`{key}`: expected a string or an integer"));
            return None;
        }
    };
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.is_empty() || s.contains(['\n', '\r', '#']) {
        decl.error(
            v,
            format!("`{key}`: the value must be one non-empty line without `#`"),
        );
        return None;
    }
    Some(words.join(" "))
}

fn text_list(lines: Vec<String>) -> Template {
    Template::Value(Value::List(lines.into_iter().map(Value::Text).collect()))
}

pub fn declare(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: SystemDecl = decl.parse()?;
    let mut attrs = Vec::new();
    if let Some(t) = packages(decl, &d) {
        attrs.push(("packages".to_string(), t));
    }
    if let Some(s) = &d.swap {
        if s.get_ref() != "off" {
            decl.error(
                s,
                format!("invalid swap `{}`: the only value is \"off\"", s.get_ref()),
            );
        }
        attrs.push(("swap".into(), Template::Value(Value::Text("off".into()))));
    }
    if let Some(u) = &d.ufw
        && let Some(t) = ufw_rules(decl, u)
    {
        attrs.push(("ufw".into(), t));
    }
    if let Some(m) = &d.sshd {
        let mut lines = Vec::new();
        for (k, v) in m {
            if !k.chars().all(|c| c.is_ascii_alphanumeric()) || k.is_empty() {
                decl.error(v, format!("invalid sshd setting `{k}`: expected a keyword such as `PasswordAuthentication`"));
            } else if ["match", "include"].contains(&k.to_lowercase().as_str()) {
                decl.error(
                    v,
                    format!("`{k}` is not supported in `sshd`: kz writes plain settings only"),
                );
            } else if let Some(s) = scalar(decl, k, v) {
                lines.push(format!("{k} {s}"));
            }
        }
        attrs.push(("sshd".into(), text_list(lines)));
    }
    if let Some(list) = &d.dns {
        let mut items = Vec::new();
        if list.get_ref().is_empty() || list.get_ref().len() > 3 {
            decl.error(
                list,
                "`dns` takes 1 to 3 resolver addresses (resolv.conf reads at most 3)",
            );
        }
        for a in list.get_ref() {
            if a.get_ref().contains("${") {
                items.push(Template::Text(a.clone()));
            } else if a.get_ref().parse::<std::net::IpAddr>().is_err() {
                decl.error(
                    a,
                    format!("invalid resolver `{}`: expected an IP address", a.get_ref()),
                );
            } else {
                items.push(Template::Value(Value::Text(a.get_ref().clone())));
            }
        }
        attrs.push(("dns".into(), Template::List(items)));
    }
    if let Some(m) = &d.sysctl {
        let mut lines = Vec::new();
        for (k, v) in m {
            if !valid_sysctl_key(k) {
                decl.error(v, format!("invalid sysctl key `{k}`: expected dotted words such as `net.ipv4.ip_forward`"));
            } else if let Some(s) = scalar(decl, k, v) {
                lines.push(format!("{k} = {s}"));
            }
        }
        attrs.push(("sysctl".into(), text_list(lines)));
    }
    if attrs.is_empty() && decl.ok() {
        let name = decl.name.to_string();
        decl.error_here(format!(
            "system `{name}` declares no part: give at least one of `packages`, `absent_packages`, `swap`, `ufw`, `sshd`, `dns`, `sysctl`"
        ));
    }
    decl.ok().then_some(Declared { attrs, gate: None })
}

/// `packages` and `absent_packages` as one list of `NAME present|absent` lines, by name.
fn packages(decl: &mut Declaration<'_>, d: &SystemDecl) -> Option<Template> {
    if d.packages.is_none() && d.absent_packages.is_none() {
        return None;
    }
    let mut wanted: BTreeMap<String, &'static str> = BTreeMap::new();
    for (list, state) in [(&d.packages, "present"), (&d.absent_packages, "absent")] {
        for p in list.iter().flatten() {
            let name = p.get_ref();
            if !valid_package(name) {
                decl.error(p, format!("invalid package name `{name}`: expected a Debian package name such as `openssh-server`"));
            } else if wanted
                .insert(name.clone(), state)
                .is_some_and(|s| s != state)
            {
                decl.error(
                    p,
                    format!("package `{name}` is in both `packages` and `absent_packages`"),
                );
            }
        }
    }
    Some(text_list(
        wanted
            .into_iter()
            .map(|(n, s)| format!("{n} {s}"))
            .collect(),
    ))
}

/// The UFW part: three header lines, then one line per rule and source, rules from IPv6
/// sources last (UFW keeps them in a table of its own).
fn ufw_rules(decl: &mut Declaration<'_>, u: &Spanned<UfwDecl>) -> Option<Template> {
    let u_ref = u.get_ref();
    let mut policy = |v: &Option<Spanned<String>>, default: &str, which: &str| match v {
        None => default.to_string(),
        Some(p) if POLICIES.contains(&p.get_ref().as_str()) => p.get_ref().clone(),
        Some(p) => {
            decl.error(
                p,
                format!(
                    "invalid {which} policy `{}`: expected \"allow\", \"deny\" or \"reject\"",
                    p.get_ref()
                ),
            );
            default.to_string()
        }
    };
    let incoming = policy(&u_ref.incoming, "deny", "incoming");
    let outgoing = policy(&u_ref.outgoing, "allow", "outgoing");
    let status = if u_ref.enabled.unwrap_or(true) {
        "enabled"
    } else {
        "disabled"
    };
    let mut items: Vec<Template> = [
        format!("status {status}"),
        format!("default incoming {incoming}"),
        format!("default outgoing {outgoing}"),
    ]
    .into_iter()
    .map(|l| Template::Value(Value::Text(l)))
    .collect();
    let mut v6 = Vec::new();
    for r in &u_ref.rules {
        for (line, is_v6) in rule_lines(decl, r)? {
            if is_v6 {
                v6.push(line);
            } else {
                items.push(line);
            }
        }
    }
    items.extend(v6);
    Some(Template::List(items))
}

/// A rule's action, ports and protocol, checked; its source is still to be resolved.
fn rule_base(decl: &mut Declaration<'_>, rd: &RuleDecl) -> Option<Rule> {
    let action = rd.action.get_ref();
    if !ACTIONS.contains(&action.as_str()) {
        decl.error(
            &rd.action,
            format!(
                "invalid action `{action}`: expected \"allow\", \"deny\", \"reject\" or \"limit\""
            ),
        );
        return None;
    }
    let proto = match &rd.proto {
        None => None,
        Some(p) if ["tcp", "udp"].contains(&p.get_ref().as_str()) => Some(p.get_ref().clone()),
        Some(p) => {
            let msg = format!(
                "invalid proto `{}`: expected \"tcp\" or \"udp\"",
                p.get_ref()
            );
            decl.error(p, msg);
            return None;
        }
    };
    let ports = match &rd.port {
        None => None,
        Some(p) => {
            let s = match p.get_ref() {
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::String(s) => s.clone(),
                _ => String::new(),
            };
            if let Err(e) = ufw::check_ports(&s) {
                decl.error(p, e);
                return None;
            }
            if (s.contains(':') || s.contains(',')) && proto.is_none() {
                let msg = format!("port `{s}` is a range or a list: UFW needs `proto` with it");
                decl.error(p, msg);
                return None;
            }
            Some(s)
        }
    };
    Some(Rule {
        action: action.clone(),
        ports,
        proto,
        from: None,
    })
}

/// Where a rule admits packets from, as declared.
enum From {
    Any,
    Net(Source),
    Hosts(Vec<String>),
}

/// Resolves `from`: `"any"`, an address or network, a host of the inventory, or labels (every
/// host that has them).
fn rule_from(decl: &mut Declaration<'_>, from: &Spanned<toml::Value>) -> Option<From> {
    let network = from.get_ref().as_str().and_then(|s| decl.network_ref(s));
    let network = match network {
        Some(Ok(range)) => Some(range),
        Some(Err(e)) => {
            decl.error(from, format!("`from`: {e}"));
            return None;
        }
        None => None,
    };
    match from.get_ref() {
        _ if network.is_some() => {
            let range = network.unwrap_or_default();
            match Source::parse(&range) {
                Ok(src) => Some(From::Net(src)),
                Err(e) => {
                    decl.error(from, format!("invalid `from`: {e}"));
                    None
                }
            }
        }
        toml::Value::String(s) if s == "any" => Some(From::Any),
        toml::Value::String(s)
            if s.starts_with(|c: char| c.is_ascii_digit()) || s.contains(':') =>
        {
            match Source::parse(s) {
                Ok(src) => Some(From::Net(src)),
                Err(e) => {
                    decl.error(from, format!("invalid `from`: {e}"));
                    None
                }
            }
        }
        toml::Value::String(s) if decl.hosts.contains_key(s) => Some(From::Hosts(vec![s.clone()])),
        toml::Value::String(s) => {
            decl.error(from, format!("`from`: unknown host `{s}` (expected \"any\", an address, a network, `${{networks.NAME}}`, a host of the inventory or a table of labels)"));
            None
        }
        toml::Value::Table(t) => {
            let want: Option<Vec<(String, String)>> = t
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect();
            let Some(want) = want.filter(|w| !w.is_empty()) else {
                decl.error(
                    from,
                    "`from`: a label selector is a table of string labels, e.g. { role = \"web\" }",
                );
                return None;
            };
            let hosts: Vec<String> = decl
                .hosts
                .values()
                .filter(|h| want.iter().all(|(k, v)| h.labels.get(k) == Some(v)))
                .map(|h| h.name.clone())
                .collect();
            if hosts.is_empty() {
                decl.error(from, "`from`: these labels match no host of the inventory");
                return None;
            }
            Some(From::Hosts(hosts))
        }
        _ => {
            decl.error(
                from,
                "`from`: expected \"any\", an address, a network, a host name or a table of labels",
            );
            None
        }
    }
}

/// The lines of one rule, each with whether its source is IPv6: one per source; a host or a
/// label selector gives one line per host, whose address is interpolated per run (the lab's
/// address under `--lab`).
fn rule_lines(decl: &mut Declaration<'_>, r: &Spanned<RuleDecl>) -> Option<Vec<(Template, bool)>> {
    let rd = r.get_ref();
    let base = rule_base(decl, rd)?;
    let from = match &rd.from {
        None => From::Any,
        Some(f) => rule_from(decl, f)?,
    };
    let fixed = |rule: Rule, v6: bool| Some(vec![(Template::Value(Value::Text(rule.line())), v6)]);
    match from {
        From::Any => fixed(base, false),
        From::Net(src) => {
            let v6 = src.addr.is_ipv6();
            fixed(
                Rule {
                    from: Some(src),
                    ..base
                },
                v6,
            )
        }
        From::Hosts(hosts) => {
            let span = rd.from.as_ref().map(Spanned::span).unwrap_or_default();
            let head = base.line();
            let head = head.trim_end_matches(" any");
            Some(
                hosts
                    .iter()
                    .map(|h| {
                        let v6 = decl.hosts.get(h).is_some_and(|h| h.address.contains(':'));
                        // The loader replaces `${hosts.NAME.address}` after the lab overlay.
                        let text = format!("{head} ${{hosts.{h}.address}}");
                        (Template::Text(Spanned::new(span.clone(), text)), v6)
                    })
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn package_names_follow_debian_policy() {
        for ok in ["curl", "openssh-server", "libc6:amd64", "g++", "python3.11"] {
            assert!(valid_package(ok), "{ok}");
        }
        for bad in ["", "a", "-x", "Curl", "a b", "x;y", "x:"] {
            assert!(!valid_package(bad), "{bad}");
        }
    }

    #[test]
    fn sysctl_keys_are_dotted_words() {
        assert!(valid_sysctl_key("net.ipv4.ip_forward"));
        assert!(valid_sysctl_key("net.ipv4.conf.eth-1.rp_filter"));
        for bad in ["", "a..b", ".a", "a/b", "a b", "$(x)"] {
            assert!(!valid_sysctl_key(bad), "{bad}");
        }
    }
}
