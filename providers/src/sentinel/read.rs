//! Reading one member: its Redis's `INFO replication` (and run id, replica priority) and its
//! Sentinel's view of the group (`SENTINEL MASTER`, `get-master-addr-by-name`, `CKQUORUM`), all
//! in one snippet of the host's batched read, framed by marker lines, and parsed back here.

use std::collections::BTreeMap;

use super::Group;

/// The first line of every script of a group: nothing secret.
pub const FIRST_LINE: &str = "# kz sentinel";

/// Marks each section of a member's read: `MARK NAME EXIT` then what the command printed.
const MARK: &str = "@@kz-sentinel@@";

/// What a member's Redis says about replication.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Redis {
    pub master: bool,
    /// For a replica: the master it follows.
    pub master_host: String,
    pub master_port: u16,
    pub link_up: bool,
    pub offset: i64,
    pub replid: String,
    pub replid2: String,
    pub priority: i64,
    pub run_id: String,
    pub replicas: u32,
}

/// What a member's Sentinel says about the group.
#[derive(Debug, Clone, PartialEq)]
pub struct SentinelView {
    /// The master's address it names (`get-master-addr-by-name`).
    pub ip: String,
    pub port: u16,
    /// `SENTINEL MASTER`'s flags (`master`, `s_down`, `o_down`, `failover_in_progress`, ...).
    pub flags: Vec<String>,
    pub quorum: u32,
    pub down_after_ms: u64,
    pub failover_timeout_ms: u64,
    pub other_sentinels: u32,
    pub replicas: u32,
    /// `CKQUORUM`: `Ok` or its complaint.
    pub ckquorum: Result<(), String>,
}

impl SentinelView {
    pub fn failover_in_progress(&self) -> bool {
        self.flags.iter().any(|f| f == "failover_in_progress")
    }
}

/// A member's Sentinel: not answering, answering without monitoring the group, or monitoring it.
#[derive(Debug, Clone, PartialEq)]
pub enum Sentinel {
    Down(String),
    NotMonitoring,
    Monitoring(SentinelView),
}

/// Why a member's Redis could not be read. `refused`: nothing listens on its port, so Redis is
/// down. Otherwise it answered without its replication (a wrong password, `NOAUTH`) or not in
/// time, which says nothing about whether it serves its clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Unread {
    pub refused: bool,
    pub why: String,
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// One member as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub host: String,
    pub address: String,
    /// `Err` holds why its Redis could not be read.
    pub redis: Result<Redis, Unread>,
    pub sentinel: Sentinel,
    pub conf_present: bool,
}

/// How long `kz_r` and `kz_s` wait for an answer; `timeout` exits 124 when it passes.
const CLI_TIMEOUT_SECS: u32 = 5;

/// The shell functions every script of a group starts with: `kz_r` asks the member's Redis,
/// `kz_s` its Sentinel, each under a deadline. The password goes in `REDISCLI_AUTH`, never on a
/// command line; the script travels on standard input. The first line is a comment: a transport
/// error quotes a script's first line, and the shell-quoted password must not be on it.
pub fn prelude(g: &Group) -> String {
    let auth = g.auth.as_deref().map_or(String::new(), |a| {
        format!("REDISCLI_AUTH={} ", kz_engine::provider::shell_quote(a))
    });
    format!(
        "{FIRST_LINE}\n\
         kz_r() {{ {auth}timeout {CLI_TIMEOUT_SECS} {cli} -h 127.0.0.1 -p {rp} \"$@\"; }}\n\
         kz_s() {{ timeout {CLI_TIMEOUT_SECS} {cli} -h 127.0.0.1 -p {sp} \"$@\"; }}\n",
        cli = g.cli,
        rp = g.redis_port,
        sp = g.sentinel_port,
    )
}

/// The snippet that reads one member.
pub fn script(g: &Group) -> String {
    let name = &g.name;
    let conf = kz_engine::provider::shell_quote(&g.conf);
    let sections = [
        ("info", "kz_r info replication".to_string()),
        ("server", "kz_r info server".to_string()),
        ("priority", "kz_r config get replica-priority".to_string()),
        ("master", format!("kz_s sentinel master {name}")),
        (
            "addr",
            format!("kz_s sentinel get-master-addr-by-name {name}"),
        ),
        ("ckquorum", format!("kz_s sentinel ckquorum {name}")),
        ("ping", "kz_s ping".to_string()),
        (
            "conf",
            format!("[ -f {conf} ] && echo present || echo absent"),
        ),
    ];
    let mut s = prelude(g);
    for (section, cmd) in sections {
        s.push_str(&format!(
            "kz_o=$({cmd} 2>&1); echo \"{MARK} {section} $?\"; printf '%s\\n' \"$kz_o\"\n"
        ));
    }
    s
}

/// The sections of a member's output: name -> (exit status, text without `\r`).
fn sections(out: &str) -> BTreeMap<String, (i32, String)> {
    let mut map = BTreeMap::new();
    let mut current: Option<(String, i32, String)> = None;
    for line in out.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix(MARK) {
            if let Some((n, c, t)) = current.take() {
                map.insert(n, (c, t));
            }
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or("").to_string();
            let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
            current = Some((name, code, String::new()));
        } else if let Some((_, _, t)) = current.as_mut() {
            t.push_str(line);
            t.push('\n');
        }
    }
    if let Some((n, c, t)) = current {
        map.insert(n, (c, t));
    }
    map
}

/// `key:value` lines of an `INFO` answer.
fn info_fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn parse_redis(s: &BTreeMap<String, (i32, String)>) -> Result<Redis, Unread> {
    let (code, text) = s.get("info").ok_or_else(|| Unread {
        refused: false,
        why: "no answer".into(),
    })?;
    let f = info_fields(text);
    let Some(role) = f.get("role") else {
        let said = first_line(text);
        // Only a refused connection means nothing listens: redis-cli says so in these words.
        let refused = said.contains("Connection refused");
        let why = if *code == 124 {
            format!("no answer within {CLI_TIMEOUT_SECS} s")
        } else if said.is_empty() {
            format!("redis-cli exited {code}")
        } else {
            said
        };
        return Err(Unread { refused, why });
    };
    let num = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let server = s.get("server").map(|(_, t)| t.as_str()).unwrap_or("");
    let sf = info_fields(server);
    // `CONFIG GET` answers the name then the value; a replica's INFO has it too.
    let priority = s
        .get("priority")
        .and_then(|(_, t)| t.lines().nth(1))
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| f.get("slave_priority").and_then(|v| v.parse().ok()))
        .unwrap_or(100);
    Ok(Redis {
        master: *role == "master",
        master_host: f.get("master_host").unwrap_or(&"").to_string(),
        master_port: u16::try_from(num("master_port")).unwrap_or(0),
        link_up: f.get("master_link_status") == Some(&"up"),
        offset: num("master_repl_offset"),
        replid: f.get("master_replid").unwrap_or(&"").to_string(),
        replid2: f.get("master_replid2").unwrap_or(&"").to_string(),
        priority,
        run_id: sf.get("run_id").unwrap_or(&"").to_string(),
        replicas: u32::try_from(num("connected_slaves")).unwrap_or(0),
    })
}

fn parse_sentinel(s: &BTreeMap<String, (i32, String)>) -> Sentinel {
    let ping = s
        .get("ping")
        .map(|(_, t)| first_line(t))
        .unwrap_or_default();
    if ping != "PONG" {
        return Sentinel::Down(if ping.is_empty() {
            "no answer".into()
        } else {
            ping
        });
    }
    let master = s.get("master").map(|(_, t)| t.as_str()).unwrap_or("");
    let lines: Vec<&str> = master.lines().map(str::trim).collect();
    if lines.len() < 2 || lines.iter().any(|l| l.contains("No such master")) {
        return Sentinel::NotMonitoring;
    }
    let fields: BTreeMap<&str, &str> = lines
        .chunks(2)
        .filter_map(|c| Some((c[0], *c.get(1)?)))
        .collect();
    let num = |k: &str| {
        fields
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let addr: Vec<String> = s
        .get("addr")
        .map(|(_, t)| t.lines().map(|l| l.trim().to_string()).collect())
        .unwrap_or_default();
    let ck = s
        .get("ckquorum")
        .map(|(_, t)| first_line(t))
        .unwrap_or_default();
    Sentinel::Monitoring(SentinelView {
        ip: addr.first().cloned().unwrap_or_default(),
        port: addr.get(1).and_then(|p| p.parse().ok()).unwrap_or(0),
        flags: fields
            .get("flags")
            .map(|f| f.split(',').map(String::from).collect())
            .unwrap_or_default(),
        quorum: u32::try_from(num("quorum")).unwrap_or(0),
        down_after_ms: num("down-after-milliseconds"),
        failover_timeout_ms: num("failover-timeout"),
        other_sentinels: u32::try_from(num("num-other-sentinels")).unwrap_or(0),
        replicas: u32::try_from(num("num-slaves")).unwrap_or(0),
        ckquorum: if ck.starts_with("OK") {
            Ok(())
        } else {
            Err(ck.trim_start_matches("(error) ").to_string())
        },
    })
}

/// A member, from what its snippet printed.
pub fn parse(host: &str, address: &str, out: &str) -> Member {
    let s = sections(out);
    Member {
        host: host.to_string(),
        address: address.to_string(),
        redis: parse_redis(&s),
        sentinel: parse_sentinel(&s),
        conf_present: s.get("conf").is_some_and(|(_, t)| t.trim() == "present"),
    }
}

#[cfg(test)]
pub mod fixtures {
    //! Members' outputs as redis-cli prints them, for the tests of this module and `topology`.

    use super::MARK;

    pub fn info_master(replid: &str, offset: i64, replicas: u32) -> String {
        format!(
            "# Replication\r\nrole:master\r\nconnected_slaves:{replicas}\r\nmaster_failover_state:no-failover\r\n\
             master_replid:{replid}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n\
             master_repl_offset:{offset}\r\n"
        )
    }

    pub fn info_replica(master: &str, up: bool, replid: &str, offset: i64) -> String {
        format!(
            "# Replication\r\nrole:slave\r\nmaster_host:{master}\r\nmaster_port:6379\r\n\
             master_link_status:{}\r\nslave_repl_offset:{offset}\r\nslave_priority:100\r\n\
             connected_slaves:0\r\nmaster_replid:{replid}\r\n\
             master_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:{offset}\r\n",
            if up { "up" } else { "down" }
        )
    }

    pub fn sentinel_master(ip: &str, flags: &str, others: u32) -> String {
        format!(
            "name\nmymaster\nip\n{ip}\nport\n6379\nrunid\nabc\nflags\n{flags}\nnum-slaves\n2\n\
             num-other-sentinels\n{others}\nquorum\n2\nfailover-timeout\n10000\n\
             down-after-milliseconds\n2000\n"
        )
    }

    /// `out` with its Redis's answer replaced: what redis-cli printed, and its exit status.
    pub fn redis_answers(out: &str, code: i32, text: &str) -> String {
        let start = out.find(&format!("{MARK} info ")).expect("an info section");
        let end = out
            .find(&format!("{MARK} server"))
            .expect("a server section");
        format!(
            "{}{MARK} info {code}\n{text}\n{}",
            &out[..start],
            &out[end..]
        )
    }

    /// A member's whole output: `info` (empty: Redis down), `sentinel` (None: Sentinel down,
    /// Some(""): not monitoring), the address it names.
    pub fn output(info: &str, run_id: &str, sentinel: Option<(&str, &str)>) -> String {
        let redis_code = if info.is_empty() { 1 } else { 0 };
        let info = if info.is_empty() {
            "Could not connect to Redis at 127.0.0.1:6379: Connection refused\n".to_string()
        } else {
            info.to_string()
        };
        let (ping, master, addr, ck) = match sentinel {
            None => (
                "Could not connect to Redis at 127.0.0.1:26379: Connection refused".to_string(),
                String::new(),
                String::new(),
                String::new(),
            ),
            Some(("", _)) => (
                "PONG".into(),
                "ERR No such master with that name".into(),
                String::new(),
                "ERR No such master with that name".into(),
            ),
            Some((master, addr)) => (
                "PONG".into(),
                master.to_string(),
                format!("{addr}\n6379"),
                "OK 3 usable Sentinels. Quorum and failover authorization can be reached".into(),
            ),
        };
        format!(
            "{MARK} info {redis_code}\n{info}\n{MARK} server 0\n# Server\r\nredis_version:7.0.15\r\nrun_id:{run_id}\r\n\
             {MARK} priority 0\nreplica-priority\n100\n{MARK} master 0\n{master}\n{MARK} addr 0\n{addr}\n\
             {MARK} ckquorum 0\n{ck}\n{MARK} ping 0\n{ping}\n{MARK} conf 0\npresent\n"
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn a_replica_and_its_sentinel_are_read_back() {
        let out = output(
            &info_replica("10.0.0.1", true, "r1", 81234),
            "run-b",
            Some((&sentinel_master("10.0.0.1", "master", 2), "10.0.0.1")),
        );
        let m = parse("redis-02", "10.0.0.2", &out);
        let r = m.redis.unwrap();
        assert!(!r.master);
        assert_eq!(r.master_host, "10.0.0.1");
        assert!(r.link_up);
        assert_eq!(r.offset, 81234);
        assert_eq!(r.replid, "r1");
        assert_eq!(r.run_id, "run-b");
        assert_eq!(r.priority, 100);
        let Sentinel::Monitoring(v) = m.sentinel else {
            panic!("{:?}", m.sentinel)
        };
        assert_eq!((v.ip.as_str(), v.port), ("10.0.0.1", 6379));
        assert_eq!(v.other_sentinels, 2);
        assert_eq!(v.down_after_ms, 2000);
        assert!(v.ckquorum.is_ok());
        assert!(!v.failover_in_progress());
        assert!(m.conf_present);
    }

    #[test]
    fn a_silent_redis_and_sentinel_are_down_and_an_unknown_group_is_not_monitored() {
        let m = parse("redis-01", "10.0.0.1", &output("", "x", None));
        let e = m.redis.unwrap_err();
        assert!(e.refused && e.why.contains("Connection refused"), "{e:?}");
        assert!(matches!(m.sentinel, Sentinel::Down(_)));
        let m = parse(
            "redis-01",
            "10.0.0.1",
            &output(&info_master("r1", 5, 0), "x", Some(("", ""))),
        );
        assert!(m.redis.unwrap().master);
        assert_eq!(m.sentinel, Sentinel::NotMonitoring);
    }

    #[test]
    fn a_wrong_password_or_a_timeout_is_not_a_refused_connection() {
        let up = output(&info_master("r1", 5, 0), "x", None);
        let wrong = redis_answers(
            &up,
            0,
            "AUTH failed: WRONGPASS invalid username-password pair or user is disabled.\nNOAUTH Authentication required.",
        );
        let e = parse("a", "b", &wrong).redis.unwrap_err();
        assert!(!e.refused);
        assert!(e.why.starts_with("AUTH failed: WRONGPASS"), "{e}");
        let e = parse("a", "b", &redis_answers(&up, 124, ""))
            .redis
            .unwrap_err();
        assert!(!e.refused);
        assert_eq!(e.why, "no answer within 5 s");
    }

    #[test]
    fn the_first_line_of_a_script_holds_no_password() {
        let g = Group {
            name: "cache".into(),
            initial_master: "a".into(),
            redis_port: 6379,
            sentinel_port: 26379,
            quorum: None,
            down_after_ms: 2000,
            failover_ms: 10000,
            auth: Some("it's-secret".into()),
            conf: "/etc/redis/s.conf".into(),
            start: None,
            cli: "redis-cli".into(),
            members: vec!["a".into()],
            addresses: BTreeMap::new(),
            balancers: None,
        };
        for script in [prelude(&g), script(&g)] {
            assert_eq!(script.lines().next(), Some(FIRST_LINE));
            assert!(
                script.contains("REDISCLI_AUTH='it'\\''s-secret'"),
                "{script}"
            );
        }
    }

    #[test]
    fn flags_tell_a_failover_in_progress() {
        let out = output(
            &info_master("r1", 5, 0),
            "x",
            Some((
                &sentinel_master("10.0.0.1", "master,s_down,o_down,failover_in_progress", 2),
                "10.0.0.1",
            )),
        );
        let Sentinel::Monitoring(v) = parse("a", "b", &out).sentinel else {
            panic!()
        };
        assert!(v.failover_in_progress());
    }
}
