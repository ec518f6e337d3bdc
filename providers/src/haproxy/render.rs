//! The configuration as data, and its text: one rendering for one declaration, byte for byte, so
//! that a plan compares it with the live file and shows the difference as a text diff.

/// A declared configuration, checked: every line is one line, every name valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// What heads the file: who wrote it.
    pub header: String,
    pub global: Vec<String>,
    pub defaults: Vec<String>,
    pub frontends: Vec<Section>,
    pub backends: Vec<Section>,
    /// Raw lines after everything else (a `listen` section, `userlist`, ...).
    pub extra: Vec<String>,
}

/// A `frontend` or `backend`: its lines, then its servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub lines: Vec<String>,
    pub servers: Vec<Server>,
}

/// A server of a backend: a host of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// What follows the address (`check`, `check port 8008 backup`), maybe empty.
    pub params: String,
}

const INDENT: &str = "    ";

fn section(out: &mut String, head: &str, lines: &[String]) {
    out.push('\n');
    out.push_str(head);
    out.push('\n');
    for l in lines {
        out.push_str(INDENT);
        out.push_str(l);
        out.push('\n');
    }
}

/// The text of the configuration. A server's address is `${hosts.HOST.address}`, which the
/// loader replaces per run after the lab overlay: the declaration never bakes an address in.
pub fn render(c: &Config) -> String {
    let mut out = format!("# {}\n", c.header);
    section(&mut out, "global", &c.global);
    section(&mut out, "defaults", &c.defaults);
    for f in &c.frontends {
        section(&mut out, &format!("frontend {}", f.name), &f.lines);
    }
    for b in &c.backends {
        let mut lines = b.lines.clone();
        for s in &b.servers {
            let mut l = format!("server {} ${{hosts.{}.address}}:{}", s.host, s.host, s.port);
            if !s.params.is_empty() {
                l.push(' ');
                l.push_str(&s.params);
            }
            lines.push(l);
        }
        section(&mut out, &format!("backend {}", b.name), &lines);
    }
    if !c.extra.is_empty() {
        out.push('\n');
        for l in &c.extra {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sections_in_order_with_servers_last() {
        let c = Config {
            header: "Written by kz".into(),
            global: vec!["maxconn 100".into()],
            defaults: vec!["mode tcp".into()],
            frontends: vec![Section {
                name: "redis".into(),
                lines: vec!["bind *:6379".into(), "default_backend redis".into()],
                servers: vec![],
            }],
            backends: vec![Section {
                name: "redis".into(),
                lines: vec!["balance first".into()],
                servers: vec![
                    Server {
                        host: "redis-01".into(),
                        port: 6379,
                        params: "check".into(),
                    },
                    Server {
                        host: "redis-02".into(),
                        port: 6379,
                        params: String::new(),
                    },
                ],
            }],
            extra: vec!["listen stats".into(), "    bind :8404".into()],
        };
        assert_eq!(
            render(&c),
            "# Written by kz\n\
             \nglobal\n    maxconn 100\n\
             \ndefaults\n    mode tcp\n\
             \nfrontend redis\n    bind *:6379\n    default_backend redis\n\
             \nbackend redis\n    balance first\n    \
             server redis-01 ${hosts.redis-01.address}:6379 check\n    \
             server redis-02 ${hosts.redis-02.address}:6379\n\
             \nlisten stats\n    bind :8404\n"
        );
    }
}
