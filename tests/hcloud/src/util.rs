//! Small helpers with no better home: timestamps, random hex, query strings, IPv4 arithmetic.

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

/// RFC 3339 in UTC with an explicit offset, the form the API uses
/// (`2016-01-30T23:55:00+00:00`). Hand-rolled to spare a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // A failing OS RNG leaves zeros: tokens and correlation ids only need to differ in practice,
    // and the instance counter mixed in by callers keeps tokens apart.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// `a=1&b=x%20y&b=z` as ordered pairs, percent- and `+`-decoded.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An IPv4 network `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        let base = u32::from(ip) & Cidr::mask(len);
        Some(Cidr { base, len })
    }

    fn mask(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len) }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Cidr::mask(self.len) == self.base
    }

    /// The gateway Hetzner gives a subnet: its first address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(1))
    }

    /// Whether `ip` is one a resource may get (see [`Cidr::hosts`]).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        let size: u64 = 1u64 << (32 - u32::from(self.len));
        let a = u64::from(u32::from(ip));
        let base = u64::from(self.base);
        a >= base + 2 && a <= base + size.saturating_sub(2)
    }

    /// Addresses a resource may get: after the gateway, before the broadcast address.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let size: u64 = 1u64 << (32 - u32::from(self.len));
        let first = u64::from(self.base) + 2;
        let last = u64::from(self.base) + size.saturating_sub(2);
        (first..=last).filter_map(|a| u32::try_from(a).ok().map(Ipv4Addr::from))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_454_198_100);
        assert_eq!(rfc3339(t), "2016-01-30T23:55:00+00:00");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00+00:00");
    }

    #[test]
    fn query_decodes() {
        assert_eq!(
            parse_query("label_selector=role%3Dhaproxy&name=a+b&x"),
            vec![
                ("label_selector".into(), "role=haproxy".into()),
                ("name".into(), "a b".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(parse_query("a=%4"), vec![("a".into(), "%4".into())]);
    }

    #[test]
    fn cidr_hosts_skip_network_gateway_and_broadcast() {
        let c = Cidr::parse("10.0.0.0/30").unwrap_or(Cidr { base: 0, len: 0 });
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            c.hosts().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert!(c.contains(Ipv4Addr::new(10, 0, 0, 3)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 0, 4)));
    }
}
