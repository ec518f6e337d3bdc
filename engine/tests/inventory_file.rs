//! Hosts from an inventory file (`[inventory]`): a fleet of 52 loads with its labels and the
//! stack's SSH settings; every bad line, a missing column and a host declared twice are errors
//! naming their place.

#![allow(clippy::unwrap_used)]

use kz_engine::load::load_stack_with_env;
use kz_engine::provider::Providers;

const STACK: &str = r#"[stack]
name = "fleet"

[ssh]
user = "ops"
port = 2222

[inventory]
file = "FILE"
name = "hostname"
address = "private_ip"
labels = { role = "role", module = "module" }
"#;

fn load(file: &str, text: &str, extra: &str) -> Result<kz_engine::model::Stack, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        format!("{}{extra}", STACK.replace("FILE", file)),
    )
    .unwrap();
    std::fs::write(dir.path().join(file), text).unwrap();
    load_stack_with_env(dir.path(), &Providers::default(), &|_| None).map_err(|d| {
        d.to_string()
            .replace(&format!("{}/", dir.path().display()), "")
    })
}

#[test]
fn fifty_two_servers_load_with_their_labels_and_the_stack_ssh_settings() {
    let mut tsv = String::from("# KeyBuzz servers\nhostname\tprivate_ip\tmodule\trole\n");
    for i in 0..52 {
        // An empty role cell gives no label.
        let role = if i % 2 == 0 { "db" } else { "" };
        tsv.push_str(&format!("srv-{i:02}\t10.0.1.{i}\t{}\t{role}\n", i % 10));
        if i == 20 {
            tsv.push_str("\n# a comment between rows\n");
        }
    }
    let s = load("servers.tsv", &tsv, "").unwrap();
    assert_eq!(s.hosts.len(), 52);
    let h = &s.hosts["srv-07"];
    assert_eq!(h.address, "10.0.1.7");
    assert_eq!(h.labels.get("module").map(String::as_str), Some("7"));
    assert!(!h.labels.contains_key("role"));
    assert_eq!(s.hosts["srv-08"].labels["role"], "db");
    assert_eq!((h.ssh.user.as_str(), h.ssh.port), ("ops", 2222));
}

#[test]
fn csv_takes_quoted_cells() {
    let csv = "hostname,private_ip,module,role\n\"web-01\",10.0.0.5,\"2\",\"front, edge\"\n";
    let s = load("servers.csv", csv, "").unwrap();
    assert_eq!(s.hosts["web-01"].labels["role"], "front, edge");
}

#[test]
fn every_bad_line_is_named() {
    let tsv = "hostname\tprivate_ip\tmodule\trole\n\
               ok-01\t10.0.0.1\t2\tdb\n\
               short\t10.0.0.2\t2\n\
               bad name\t10.0.0.3\t2\tdb\n\
               ok-01\t10.0.0.4\t2\tdb\n\
               no-addr\t\t2\tdb\n";
    let err = load("servers.tsv", tsv, "").unwrap_err();
    assert!(
        err.contains(
            "servers.tsv:3:1: expected 4 fields (hostname, private_ip, module, role), found 3"
        ),
        "{err}"
    );
    assert!(
        err.contains("servers.tsv:4:1: invalid host name `bad name`"),
        "{err}"
    );
    assert!(
        err.contains("servers.tsv:5:1: host `ok-01` is listed twice (first on line 2)"),
        "{err}"
    );
    assert!(
        err.contains("servers.tsv:6:1: host `no-addr` has no valid address"),
        "{err}"
    );
}

#[test]
fn a_host_in_the_file_and_in_toml_is_refused() {
    let tsv = "hostname\tprivate_ip\tmodule\trole\nredis-01\t10.0.0.123\t4\tredis\n";
    let err = load(
        "servers.tsv",
        tsv,
        "\n[hosts.redis-01]\naddress = \"10.0.0.123\"\n",
    )
    .unwrap_err();
    assert!(
        err.contains("servers.tsv:2:1: host `redis-01` is both in this file and in stack.toml"),
        "{err}"
    );
    assert!(
        err.contains("stack.toml:14: its [hosts.redis-01] table"),
        "{err}"
    );
}

#[test]
fn a_missing_column_or_format_is_an_error_in_stack_toml() {
    let err = load("servers.tsv", "name\tip\n", "").unwrap_err();
    assert!(
        err.contains("stack.toml:10:8: column `hostname` is not in the header of `servers.tsv` (its columns: name, ip)"),
        "{err}"
    );
    let err = load("servers.txt", "hostname\tprivate_ip\n", "").unwrap_err();
    assert!(
        err.contains("cannot tell the inventory file's format"),
        "{err}"
    );
    let err = load("servers.tsv", "", "").unwrap_err();
    assert!(err.contains("has no header line"), "{err}");
}
