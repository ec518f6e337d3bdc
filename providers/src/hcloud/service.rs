//! The `lb` resource's services in one canonical line each.
//!
//! A load balancer's services are compared as a list of lines (`services` attribute), so a plan
//! shows a service added, removed or changed as a line added or removed, and a service made
//! behind kz's back shows too. The loader writes these lines from the stack; the provider writes
//! them from what the API returns, and parses the stack's to build its API calls. Both sides use
//! this one format, so equal services always give equal lines.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use kz_engine::units::{format_duration, parse_duration};

/// One service of a load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `tcp` or `http`.
    pub protocol: String,
    pub listen_port: u16,
    pub destination_port: u16,
    pub proxyprotocol: bool,
    pub health: HealthCheck,
}

/// How the load balancer checks a target of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `tcp` or `http`.
    pub protocol: String,
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    /// For `http` checks: the path asked for (`/` by default) and the Host header, if any.
    pub http_path: Option<String>,
    pub http_domain: Option<String>,
}

impl HealthCheck {
    /// Hetzner's own default for a service that declares none: TCP on the destination port.
    pub fn default_for(destination_port: u16) -> HealthCheck {
        HealthCheck {
            protocol: "tcp".into(),
            port: destination_port,
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            retries: 3,
            http_path: None,
            http_domain: None,
        }
    }
}

impl fmt::Display for Service {
    /// `tcp 5432 -> 5432, health tcp:5432 every 15s timeout 10s retries 3`, with
    /// `, proxyprotocol` when set and ` path /x domain d` for HTTP checks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.protocol, self.listen_port, self.destination_port
        )?;
        if self.proxyprotocol {
            write!(f, ", proxyprotocol")?;
        }
        let h = &self.health;
        write!(
            f,
            ", health {}:{} every {} timeout {} retries {}",
            h.protocol,
            h.port,
            format_duration(h.interval),
            format_duration(h.timeout),
            h.retries
        )?;
        if let Some(p) = &h.http_path {
            write!(f, " path {p}")?;
        }
        if let Some(d) = &h.http_domain {
            write!(f, " domain {d}")?;
        }
        Ok(())
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(line: &str) -> Result<Service, String> {
        let bad = || format!("not a service line: `{line}`");
        let mut parts = line.split(", ");
        let head: Vec<&str> = parts.next().ok_or_else(bad)?.split(' ').collect();
        let [protocol, listen, "->", dest] = head[..] else {
            return Err(bad());
        };
        let mut proxyprotocol = false;
        let mut health = None;
        for part in parts {
            if part == "proxyprotocol" {
                proxyprotocol = true;
            } else if let Some(rest) = part.strip_prefix("health ") {
                health = Some(parse_health(rest).ok_or_else(bad)?);
            } else {
                return Err(bad());
            }
        }
        Ok(Service {
            protocol: protocol.into(),
            listen_port: listen.parse().map_err(|_| bad())?,
            destination_port: dest.parse().map_err(|_| bad())?,
            proxyprotocol,
            health: health.ok_or_else(bad)?,
        })
    }
}

fn parse_health(s: &str) -> Option<HealthCheck> {
    let words: Vec<&str> = s.split(' ').collect();
    let (protocol, port) = words.first()?.split_once(':')?;
    let mut h = HealthCheck {
        protocol: protocol.into(),
        port: port.parse().ok()?,
        ..HealthCheck::default_for(0)
    };
    let mut i = 1;
    while i < words.len() {
        let value = *words.get(i + 1)?;
        match words[i] {
            "every" => h.interval = parse_duration(value)?,
            "timeout" => h.timeout = parse_duration(value)?,
            "retries" => h.retries = value.parse().ok()?,
            "path" => h.http_path = Some(value.into()),
            "domain" => h.http_domain = Some(value.into()),
            _ => return None,
        }
        i += 2;
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_line_reads_back_as_the_same_service() {
        let mut s = Service {
            protocol: "http".into(),
            listen_port: 80,
            destination_port: 8080,
            proxyprotocol: true,
            health: HealthCheck::default_for(8080),
        };
        s.health.protocol = "http".into();
        s.health.http_path = Some("/healthz".into());
        s.health.interval = Duration::from_millis(1500);
        let line = s.to_string();
        assert_eq!(
            line,
            "http 80 -> 8080, proxyprotocol, health http:8080 every 1500ms timeout 10s retries 3 path /healthz"
        );
        assert_eq!(line.parse::<Service>(), Ok(s));
    }

    #[test]
    fn a_malformed_line_is_refused() {
        assert!("tcp 80 8080".parse::<Service>().is_err());
        assert!(
            "tcp 80 -> 80, health tcp:80 every soon"
                .parse::<Service>()
                .is_err()
        );
        assert!("tcp 80 -> 80".parse::<Service>().is_err());
    }
}
