//! The UFW part of `system`: the rule set as canonical lines, read back from UFW's own files,
//! checked against locking kz out, and applied with `ufw` commands.
//!
//! A rule is one line, `ACTION PORTS from SOURCE` (`allow 22/tcp from any`,
//! `deny any from 192.0.2.5`, `allow 8000:8100/udp from 10.0.0.0/8`), after three header lines:
//! `status enabled|disabled`, `default incoming POLICY`, `default outgoing POLICY`. Plans compare
//! these lines with what `/etc/ufw/user.rules` (and `user6.rules`) hold.

use std::net::IpAddr;

/// What a rule does with a packet it matches.
pub const ACTIONS: &[&str] = &["allow", "deny", "reject", "limit"];

/// Default policies, as `ufw default` takes them.
pub const POLICIES: &[&str] = &["allow", "deny", "reject"];

/// One rule: the action, the ports (`None`: every port), the protocol (`None`: any), the source
/// (`None`: anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: String,
    pub ports: Option<String>,
    pub proto: Option<String>,
    pub from: Option<Source>,
}

/// An address or a network a rule admits packets from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Source {
    /// Parses `10.0.0.0/8`, `192.0.2.5` or `fd00::/8`; host bits must be zero, as UFW stores
    /// networks by their first address.
    pub fn parse(s: &str) -> Result<Source, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        let src = Source { addr, prefix };
        if src.network() != addr {
            return Err(format!(
                "`{s}` has host bits set: write the network, `{}/{prefix}`",
                src.network()
            ));
        }
        Ok(src)
    }

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn mask(&self) -> u128 {
        let (_, max) = Self::bits(self.addr);
        let host = u32::from(max - self.prefix);
        let all = if max == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all.checked_shr(host)
            .map_or(0, |m| m.checked_shl(host).unwrap_or(0))
            & all
    }

    fn network(&self) -> IpAddr {
        let (b, _) = Self::bits(self.addr);
        let n = b & self.mask();
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(n)),
        }
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (b, _) = Self::bits(ip);
        let (n, _) = Self::bits(self.addr);
        b & self.mask() == n & self.mask()
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Checks a port spec: `22`, `8000:8100` or `22,80,443`, ports 1 to 65535.
pub fn check_ports(s: &str) -> Result<(), String> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    for part in s.split(',') {
        let ok = match part.split_once(':') {
            Some((a, b)) => matches!((port(a), port(b)), (Some(a), Some(b)) if a < b),
            None => port(part).is_some(),
        };
        if !ok {
            return Err(format!(
                "invalid port `{s}`: expected a port (22), a range (8000:8100) or a list (80,443) of ports 1 to 65535"
            ));
        }
    }
    Ok(())
}

impl Rule {
    /// The canonical line of the rule.
    pub fn line(&self) -> String {
        let ports = match (&self.ports, &self.proto) {
            (None, None) => "any".to_string(),
            (None, Some(p)) => format!("any/{p}"),
            (Some(ports), None) => ports.clone(),
            (Some(ports), Some(p)) => format!("{ports}/{p}"),
        };
        let from = self
            .from
            .as_ref()
            .map_or_else(|| "any".to_string(), ToString::to_string);
        format!("{} {ports} from {from}", self.action)
    }

    /// Parses a canonical line (as declared, interpolated, or read back).
    pub fn parse(line: &str) -> Result<Rule, String> {
        let bad = || format!("not a UFW rule kz understands: `{line}`");
        let f: Vec<&str> = line.split_whitespace().collect();
        let [action, ports, "from", from] = f.as_slice() else {
            return Err(bad());
        };
        if !ACTIONS.contains(action) {
            return Err(bad());
        }
        let (ports, proto) = match ports.split_once('/') {
            Some((p, proto)) => (p, Some(proto.to_string())),
            None => (*ports, None),
        };
        let ports = (ports != "any").then(|| ports.to_string());
        if let Some(p) = &ports {
            check_ports(p)?;
        }
        let from = match *from {
            "any" => None,
            s => Some(Source::parse(s)?),
        };
        Ok(Rule {
            action: (*action).to_string(),
            ports,
            proto,
            from,
        })
    }

    /// The arguments of `ufw` that add (or, after `delete`, remove) this rule.
    pub fn command(&self) -> String {
        let mut s = self.action.clone();
        if let Some(p) = &self.proto {
            s.push_str(&format!(" proto {p}"));
        }
        let from = self
            .from
            .as_ref()
            .map_or_else(|| "any".to_string(), ToString::to_string);
        s.push_str(&format!(" from {from} to any"));
        if let Some(p) = &self.ports {
            s.push_str(&format!(" port {p}"));
        }
        s
    }

    /// Whether the rule matches a new TCP connection from `client` to `port`.
    fn matches_tcp(&self, client: IpAddr, port: u16) -> bool {
        let proto = self.proto.as_deref().is_none_or(|p| p == "tcp");
        let from = self.from.as_ref().is_none_or(|s| s.contains(client));
        let ports = self.ports.as_deref().is_none_or(|spec| {
            spec.split(',').any(|part| match part.split_once(':') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= port)
                        && b.parse::<u16>().is_ok_and(|b| port <= b)
                }
                None => part.parse::<u16>() == Ok(port),
            })
        });
        proto && from && ports
    }
}

/// Whether `source` is IPv6: UFW keeps those rules in a table of their own, so they are listed
/// after the others.
pub fn is_v6_line(line: &str) -> bool {
    line.rsplit(' ').next().is_some_and(|s| s.contains(':'))
}

/// The rule set as UFW's files hold it: `status`, `ENABLED` of ufw.conf, the default input and
/// output policies of /etc/default/ufw, and the tuples of user.rules and user6.rules.
pub fn observed_lines(conf: &str, rules4: &str, rules6: &str) -> Vec<String> {
    let value = |key: &str| {
        conf.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let policy = |v: String| match v.as_str() {
        "ACCEPT" => "allow".to_string(),
        "DROP" => "deny".to_string(),
        "REJECT" => "reject".to_string(),
        other => other.to_lowercase(),
    };
    let status = if value("ENABLED=") == "yes" {
        "enabled"
    } else {
        "disabled"
    };
    let mut lines = vec![
        format!("status {status}"),
        format!(
            "default incoming {}",
            policy(value("DEFAULT_INPUT_POLICY="))
        ),
        format!(
            "default outgoing {}",
            policy(value("DEFAULT_OUTPUT_POLICY="))
        ),
    ];
    lines.extend(tuples(rules4));
    // A rule from anywhere is in both tables: the IPv6 table adds only its own sources.
    lines.extend(tuples(rules6).into_iter().filter(|l| is_v6_line(l)));
    lines
}

/// The rules of one of UFW's user tables, from its `### tuple ###` comments:
/// `ACTION PROTO DPORT DST SPORT SRC DIRECTION`. A rule kz would not write (to a destination,
/// from a source port, outgoing, for an application) is kept as an `other:` line, so it shows.
fn tuples(text: &str) -> Vec<String> {
    let any = |s: &str| s == "0.0.0.0/0" || s == "::/0" || s == "any";
    text.lines()
        .filter_map(|l| l.strip_prefix("### tuple ###"))
        .map(|t| {
            let f: Vec<&str> = t.split_whitespace().collect();
            match f.as_slice() {
                [action, proto, dport, dst, "any", src, "in"] if any(dst) => Rule {
                    action: (*action).to_string(),
                    ports: (*dport != "any").then(|| (*dport).to_string()),
                    proto: (*proto != "any").then(|| (*proto).to_string()),
                    from: if any(src) {
                        None
                    } else {
                        Source::parse(src).ok()
                    },
                }
                .line(),
                _ => format!("other: {}", t.trim()),
            }
        })
        .collect()
}

/// Why the rule set would lock kz out of the host: a new SSH connection from `client` to `port`
/// meets a rule that refuses it, or no rule and a default that does. UFW decides by the first
/// rule that matches; established connections pass, but the next run's would not.
pub fn lockout(lines: &[String], client: IpAddr, port: u16) -> Option<String> {
    if lines.iter().any(|l| l == "status disabled") {
        return None;
    }
    for l in lines {
        let Ok(rule) = Rule::parse(l) else {
            continue;
        };
        if rule.matches_tcp(client, port) {
            return match rule.action.as_str() {
                "allow" | "limit" => None,
                _ => Some(format!(
                    "the rule `{l}` would block SSH (port {port}/tcp) from {client}, the address kz connects from"
                )),
            };
        }
    }
    let default = lines
        .iter()
        .find_map(|l| l.strip_prefix("default incoming "))
        .unwrap_or("deny");
    (default != "allow").then(|| {
        format!(
            "no rule allows SSH (port {port}/tcp) from {client}, the address kz connects from, and the default incoming policy is `{default}`"
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn tuples_read_back_as_canonical_lines() {
        let conf = "ENABLED=yes\nDEFAULT_INPUT_POLICY=\"DROP\"\nDEFAULT_OUTPUT_POLICY=\"ACCEPT\"\n";
        let v4 = "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n-A x\n\
                  ### tuple ### allow tcp 6379 0.0.0.0/0 any 10.0.0.0/8 in\n\
                  ### tuple ### deny any any 0.0.0.0/0 any 192.0.2.5 in\n\
                  ### tuple ### reject udp 8000:8100 0.0.0.0/0 any 0.0.0.0/0 in\n\
                  ### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in\n";
        let v6 = "### tuple ### allow tcp 22 ::/0 any ::/0 in\n\
                  ### tuple ### allow any 53 ::/0 any fd00::/8 in\n";
        assert_eq!(
            observed_lines(conf, v4, v6),
            lines(&[
                "status enabled",
                "default incoming deny",
                "default outgoing allow",
                "allow 22/tcp from any",
                "allow 6379/tcp from 10.0.0.0/8",
                "deny any from 192.0.2.5",
                "reject 8000:8100/udp from any",
                "other: allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in",
                "allow 53 from fd00::/8",
            ])
        );
    }

    #[test]
    fn lines_parse_back_and_make_commands() {
        for l in [
            "allow 22/tcp from any",
            "deny any from 192.0.2.5",
            "limit 80,443/tcp from 10.0.0.0/8",
        ] {
            assert_eq!(Rule::parse(l).unwrap().line(), l);
        }
        assert_eq!(
            Rule::parse("allow 6379/tcp from 10.0.0.0/8")
                .unwrap()
                .command(),
            "allow proto tcp from 10.0.0.0/8 to any port 6379"
        );
        assert_eq!(
            Rule::parse("deny any from 192.0.2.5").unwrap().command(),
            "deny from 192.0.2.5 to any"
        );
        assert!(Rule::parse("allow 0/tcp from any").is_err());
        assert!(Rule::parse("allow 22 from 10.0.0.1/8").is_err());
    }

    #[test]
    fn sources_contain_their_addresses() {
        let s = Source::parse("10.0.0.0/8").unwrap();
        assert!(s.contains("10.1.2.3".parse().unwrap()));
        assert!(!s.contains("11.0.0.1".parse().unwrap()));
        assert!(
            Source::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(
            Source::parse("192.0.2.5/32").unwrap().to_string(),
            "192.0.2.5"
        );
        assert!(
            Source::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(Source::parse("10.0.0.1/33").is_err());
    }

    #[test]
    fn the_first_matching_rule_decides_whether_ssh_stays_open() {
        let client: IpAddr = "10.89.0.1".parse().unwrap();
        let head = [
            "status enabled",
            "default incoming deny",
            "default outgoing allow",
        ];
        let with = |rules: &[&str]| {
            let mut v = lines(&head);
            v.extend(lines(rules));
            lockout(&v, client, 22)
        };
        assert!(with(&["allow 22/tcp from any"]).is_none());
        assert!(with(&["allow 22/tcp from 10.89.0.0/24"]).is_none());
        assert!(with(&["limit 22/tcp from any"]).is_none());
        assert!(
            with(&["allow 2222/tcp from any"])
                .unwrap()
                .contains("no rule allows SSH")
        );
        let blocked = with(&["deny any from 10.89.0.1", "allow 22/tcp from any"]).unwrap();
        assert!(blocked.contains("`deny any from 10.89.0.1`"), "{blocked}");
        assert!(with(&["allow 22/udp from any"]).is_some());
        assert!(with(&["allow 20:30/tcp from any"]).is_none());
        assert!(with(&["allow 22/tcp from 192.0.2.0/24"]).is_some());
        let mut open = lines(&["status enabled", "default incoming allow"]);
        assert!(lockout(&open, client, 22).is_none());
        open.push("reject 22 from any".into());
        assert!(lockout(&open, client, 22).is_some());
        let off = lines(&["status disabled", "default incoming deny"]);
        assert!(lockout(&off, client, 22).is_none());
    }
}
