//! Ready-made health checks, by name: the exact lines a backend gets, so nobody writes a
//! `tcp-check` sequence by hand again. Each check gives the backend's lines and what follows
//! `check` on every server line.

/// A ready-made check: the lines of the backend and the server parameters it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// Lines of the backend, in order, before its servers.
    pub lines: &'static [&'static str],
    /// What each server line gets (`check`, `check port 8008`).
    pub server: &'static str,
    /// It may log in first (`auth`): the server asks for a password.
    pub takes_auth: bool,
}

/// The lines of a check in a backend; with `auth`, a login right after the connection (for
/// Redis, `AUTH` then `+OK`), so a server with `requirepass` answers the rest.
pub fn lines(c: &Check, auth: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for l in c.lines {
        out.push(l.to_string());
        if let Some(pw) = auth.filter(|_| *l == "tcp-check connect") {
            out.push(format!("tcp-check send \"AUTH {pw}\\r\\n\""));
            out.push("tcp-check expect string +OK".to_string());
        }
    }
    out
}

/// Every ready-made check, by name.
pub const CHECKS: &[Check] = &[
    // PING, then the role: only the master answers `role:master`. A demoted master's clients
    // are cut (`shutdown-sessions`), so they reconnect to the new one instead of staying on a
    // replica that refuses their writes.
    Check {
        name: "redis_master",
        lines: &[
            "option tcp-check",
            "tcp-check connect",
            "tcp-check send PING\\r\\n",
            "tcp-check expect string +PONG",
            "tcp-check send info\\ replication\\r\\n",
            "tcp-check expect string role:master",
            "tcp-check send QUIT\\r\\n",
            "tcp-check expect string +OK",
            "default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions",
        ],
        server: "check",
        takes_auth: true,
    },
    // Patroni's REST API answers 200 on `/primary` only on the leader (`/master` is the old
    // name); OPTIONS keeps its log quiet.
    Check {
        name: "patroni_primary",
        lines: &[
            "option httpchk OPTIONS /primary",
            "http-check expect status 200",
            "default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions",
        ],
        server: "check port 8008",
        takes_auth: false,
    },
    Check {
        name: "patroni_replica",
        lines: &[
            "option httpchk OPTIONS /replica",
            "http-check expect status 200",
            "default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions",
        ],
        server: "check port 8008",
        takes_auth: false,
    },
    // The AMQP 0-9-1 protocol header; a broker that serves clients answers with a
    // Connection.Start method frame (type 1, channel 0). No credentials needed.
    Check {
        name: "rabbitmq",
        lines: &[
            "option tcp-check",
            "tcp-check connect",
            "tcp-check send-binary 414d515000000901",
            "tcp-check expect binary 0100000000",
            "default-server inter 2s fall 3 rise 2 on-marked-down shutdown-sessions",
        ],
        server: "check",
        takes_auth: false,
    },
    // A PostgreSQL SSLRequest: PgBouncer answers `N` (no TLS) or `S` (TLS) at once, without a
    // user or a password, proving it speaks the protocol, not only that the port is open.
    Check {
        name: "pgbouncer",
        lines: &[
            "option tcp-check",
            "tcp-check connect",
            "tcp-check send-binary 0000000804d2162f",
            "tcp-check expect rbinary ^(4[Ee]|53)",
            "default-server inter 2s fall 3 rise 2 on-marked-down shutdown-sessions",
        ],
        server: "check",
        takes_auth: false,
    },
    // A TCP connection is all it asks.
    Check {
        name: "tcp",
        lines: &["default-server inter 2s fall 3 rise 2"],
        server: "check",
        takes_auth: false,
    },
];

/// The check named `name`.
pub fn find(name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.name == name)
}

/// The names, for error messages: "`redis_master`, `patroni_primary`, ...".
pub fn names() -> String {
    CHECKS
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_master_asks_the_role_and_cuts_a_demoted_master() {
        let c = find("redis_master").expect("known");
        assert_eq!(
            c.lines.join("\n"),
            "option tcp-check\n\
             tcp-check connect\n\
             tcp-check send PING\\r\\n\n\
             tcp-check expect string +PONG\n\
             tcp-check send info\\ replication\\r\\n\n\
             tcp-check expect string role:master\n\
             tcp-check send QUIT\\r\\n\n\
             tcp-check expect string +OK\n\
             default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions"
        );
        assert_eq!(c.server, "check");
    }

    #[test]
    fn redis_master_logs_in_right_after_connecting() {
        let c = find("redis_master").expect("known");
        let l = lines(c, Some("${secret.PW}"));
        assert_eq!(l[1], "tcp-check connect");
        assert_eq!(l[2], "tcp-check send \"AUTH ${secret.PW}\\r\\n\"");
        assert_eq!(l[3], "tcp-check expect string +OK");
        assert_eq!(l[4], "tcp-check send PING\\r\\n");
        assert_eq!(lines(c, None).len(), c.lines.len());
        assert!(!find("patroni_primary").expect("known").takes_auth);
    }

    #[test]
    fn patroni_checks_ask_the_rest_api_on_8008() {
        for (name, url) in [
            ("patroni_primary", "/primary"),
            ("patroni_replica", "/replica"),
        ] {
            let c = find(name).expect("known");
            assert_eq!(c.lines[0], format!("option httpchk OPTIONS {url}"));
            assert_eq!(c.lines[1], "http-check expect status 200");
            assert_eq!(c.server, "check port 8008");
        }
    }

    #[test]
    fn every_check_is_named_in_the_error_list() {
        assert_eq!(
            names(),
            "`redis_master`, `patroni_primary`, `patroni_replica`, `rabbitmq`, `pgbouncer`, `tcp`"
        );
        assert!(find("nope").is_none());
    }
}
