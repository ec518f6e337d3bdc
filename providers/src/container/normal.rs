//! The canonical forms values are compared by, for what the user declared and for what a
//! runtime's `inspect` reports alike: `5432` and `0.0.0.0:5432:5432/tcp` are one port, `256m` and
//! `268435456` one memory limit, `cap_net_admin` and `NET_ADMIN` one capability.

use std::time::Duration;

use kz_engine::units::format_duration;

/// A published port as `HOSTIP:HOSTPORT:CONTAINERPORT/PROTO`. `5432` publishes host port 5432 to
/// container port 5432 (not to a random host port, as `docker run -p 5432` would): kz declares
/// what the host listens on.
pub(crate) fn port(spec: &str) -> Result<String, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) if p == "tcp" || p == "udp" || p == "sctp" => (r, p),
        Some((_, p)) => return Err(format!("unknown protocol `{p}`: expected tcp, udp or sctp")),
        None => (spec, "tcp"),
    };
    // An IPv6 host address comes in brackets: `[::1]:8080:80`.
    let (ip, ports) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r.split_once(']').ok_or("unclosed `[` in an IPv6 address")?;
        let ports = after
            .strip_prefix(':')
            .ok_or("expected `:` after the address")?;
        (ip.to_string(), ports.to_string())
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [p] => (String::new(), format!("{p}:{p}")),
            [h, c] => (String::new(), format!("{h}:{c}")),
            [ip, h, c] => ((*ip).to_string(), format!("{h}:{c}")),
            _ => return Err("expected PORT, HOST:CONTAINER or IP:HOST:CONTAINER".into()),
        }
    };
    let (host, cont) = ports.split_once(':').ok_or("expected HOST:CONTAINER")?;
    for p in [host, cont] {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("`{p}` is not a port number from 1 to 65535")),
        }
    }
    let ip = if ip.is_empty() {
        "0.0.0.0"
    } else {
        ip.as_str()
    };
    if ip.contains(':') {
        Ok(format!("[{ip}]:{host}:{cont}/{proto}"))
    } else {
        Ok(format!("{ip}:{host}:{cont}/{proto}"))
    }
}

/// A bind mount as `HOST:CONTAINER` or `HOST:CONTAINER:ro`; both paths absolute.
pub(crate) fn volume(spec: &str) -> Result<String, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, cont, ro) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        [_, _, o] => return Err(format!("unknown option `{o}`: expected ro or rw")),
        _ => return Err("expected HOST_DIR:CONTAINER_DIR, optionally with :ro".into()),
    };
    for p in [host, cont] {
        if !p.starts_with('/') {
            return Err(format!(
                "`{p}` is not an absolute path (named volumes are not supported: mount a host directory)"
            ));
        }
    }
    let trim = |p: &str| {
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            "/".to_string()
        } else {
            t.to_string()
        }
    };
    Ok(format!(
        "{}:{}{}",
        trim(host),
        trim(cont),
        if ro { ":ro" } else { "" }
    ))
}

/// A memory size (`256m`, `1g`, `1048576`) in bytes.
pub(crate) fn memory(spec: &str) -> Result<i64, String> {
    let s = spec.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (digits, unit) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1i64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("invalid memory `{spec}`: expected a size such as 256m or 1g"))?;
    let bytes = n
        .checked_mul(unit)
        .ok_or_else(|| format!("memory `{spec}` is too large"))?;
    if bytes < 6 << 20 {
        return Err(format!(
            "memory `{spec}` is too small: runtimes refuse less than 6m"
        ));
    }
    Ok(bytes)
}

/// A CPU limit as the runtime stores it (`NanoCpus`), from `0.5` or `2`.
pub(crate) fn nano_cpus(cpus: f64) -> Result<i64, String> {
    if !(0.01..=1024.0).contains(&cpus) {
        return Err(format!("cpus {cpus} out of range: from 0.01 to 1024"));
    }
    Ok((cpus * 1e9).round() as i64)
}

/// A capability without its `CAP_` prefix, in capitals.
pub(crate) fn capability(s: &str) -> String {
    let up = s.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").unwrap_or(&up).to_string()
}

/// Whether a capability name is well formed (letters and underscores).
pub(crate) fn valid_capability(s: &str) -> bool {
    let c = capability(s);
    !c.is_empty() && c.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
}

/// An image reference as runtimes resolve it: `redis` and `docker.io/library/redis:latest` are
/// one image.
pub(crate) fn image(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("docker.io/library/")
        .or_else(|| s.strip_prefix("docker.io/"))
        .unwrap_or(s);
    let last = s.rsplit('/').next().unwrap_or(s);
    if last.contains(':') || s.contains('@') {
        s.to_string()
    } else {
        format!("{s}:latest")
    }
}

/// A restart policy in one word: `no`, `always`, `unless-stopped`, `on-failure` or
/// `on-failure:N`; runtimes say `""` for `no`.
pub(crate) fn restart(name: &str, retries: i64) -> String {
    match name {
        "" | "no" => "no".into(),
        "on-failure" if retries > 0 => format!("on-failure:{retries}"),
        other => other.into(),
    }
}

/// Whether a declared restart policy is one runtimes know.
pub(crate) fn valid_restart(s: &str) -> bool {
    match s.split_once(':') {
        Some(("on-failure", n)) => n.parse::<u32>().is_ok_and(|n| n > 0),
        Some(_) => false,
        None => ["no", "always", "unless-stopped", "on-failure"].contains(&s),
    }
}

/// A duration from nanoseconds, as kz writes durations (`30s`).
pub(crate) fn nanos(n: i64) -> String {
    format_duration(Duration::from_nanos(u64::try_from(n).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_normalize_to_one_form() {
        assert_eq!(port("5432").ok().as_deref(), Some("0.0.0.0:5432:5432/tcp"));
        assert_eq!(port("8080:80").ok().as_deref(), Some("0.0.0.0:8080:80/tcp"));
        assert_eq!(
            port("127.0.0.1:8080:80/udp").ok().as_deref(),
            Some("127.0.0.1:8080:80/udp")
        );
        assert_eq!(
            port("[::1]:8080:80").ok().as_deref(),
            Some("[::1]:8080:80/tcp")
        );
        assert!(port("0").is_err());
        assert!(port("a:b").is_err());
        assert!(port("80/icmp").is_err());
    }

    #[test]
    fn volumes_memory_and_names() {
        assert_eq!(
            volume("/srv/x/:/data").ok().as_deref(),
            Some("/srv/x:/data")
        );
        assert_eq!(
            volume("/srv/x:/data:ro").ok().as_deref(),
            Some("/srv/x:/data:ro")
        );
        assert!(volume("data:/data").is_err());
        assert_eq!(memory("256m"), Ok(256 << 20));
        assert_eq!(memory("1G"), Ok(1 << 30));
        assert!(memory("1k").is_err());
        assert!(memory("lots").is_err());
        assert_eq!(capability("cap_net_admin"), "NET_ADMIN");
        assert_eq!(image("docker.io/library/redis"), "redis:latest");
        assert_eq!(image("localhost/x:1"), "localhost/x:1");
        assert_eq!(image("host:5000/x"), "host:5000/x:latest");
        assert_eq!(restart("", 0), "no");
        assert_eq!(restart("on-failure", 3), "on-failure:3");
        assert!(valid_restart("on-failure:2") && !valid_restart("sometimes"));
    }
}
