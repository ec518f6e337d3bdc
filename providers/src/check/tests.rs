//! Each kind's verdict on recorded outputs of the real tools (Patroni, RabbitMQ, Galera, MinIO
//! and K3s cannot run here; the others are also tested against real services in tests/).

use std::collections::BTreeMap;

use kz_engine::model::{Address, Attr, Instance, Value};

use super::Kind;
use super::observe::judge;

fn inst(attrs: &[(&str, &str)], lists: &[(&str, &[&str])]) -> Instance {
    let mut a: BTreeMap<String, Attr> = attrs
        .iter()
        .map(|(k, v)| ((*k).to_string(), Attr::plain(Value::Text((*v).into()))))
        .collect();
    for (k, l) in lists {
        let items = l.iter().map(|s| Value::Text((*s).into())).collect();
        a.insert((*k).to_string(), Attr::plain(Value::List(items)));
    }
    Instance {
        address: Address {
            module: "m".into(),
            kind: "check".into(),
            name: "c".into(),
            host: Some("db-01".into()),
        },
        members: Vec::new(),
        attrs: a,
        depends_on: Vec::new(),
        outputs: BTreeMap::new(),
        gate: None,
    }
}

fn verdict(kind: Kind, i: &Instance, text: &str) -> (bool, String) {
    judge(kind, i, text).expect("a verdict")
}

const PATRONI_CLUSTER: &str = r#"{"members": [
 {"name": "db-master-01", "role": "leader", "state": "running", "api_url": "http://10.0.0.120:8008/patroni", "host": "10.0.0.120", "port": 5432, "timeline": 4},
 {"name": "db-slave-01", "role": "replica", "state": "streaming", "host": "10.0.0.121", "port": 5432, "timeline": 4, "lag": 0},
 {"name": "db-slave-02", "role": "replica", "state": "stopped", "host": "10.0.0.122", "port": 5432, "lag": "unknown"}
], "scope": "keybuzz"}
KZ-HTTP 200
"#;

#[test]
fn patroni_counts_one_leader_and_the_streaming_replicas() {
    let i = inst(&[("replicas", "2")], &[]);
    let (ok, note) = verdict(Kind::Patroni, &i, PATRONI_CLUSTER);
    assert!(!ok);
    assert_eq!(note, "leader db-master-01, 1 of 2 replicas streaming");
    let i = inst(&[("replicas", "1")], &[]);
    assert!(verdict(Kind::Patroni, &i, PATRONI_CLUSTER).0);
    let none = PATRONI_CLUSTER.replace("\"leader\"", "\"replica\"");
    assert!(verdict(Kind::Patroni, &i, &none).1.starts_with("no leader"));
    let down = verdict(
        Kind::Patroni,
        &i,
        "curl: (7) Failed to connect\nKZ-HTTP 000\n",
    );
    assert_eq!(
        down,
        (
            false,
            "Patroni /cluster answered 0: curl: (7) Failed to connect".into()
        )
    );
}

const RABBIT_STATUS: &str = r#"{"alarms":[],"cluster_name":"rabbit@queue-01","disk_nodes":["rabbit@queue-01","rabbit@queue-02","rabbit@queue-03"],"running_nodes":["rabbit@queue-01","rabbit@queue-03"],"versions":{}}
KZ-QUORUM
KZ-EXIT 0
"#;

#[test]
fn rabbitmq_wants_its_nodes_running_and_quorum_queues_usable() {
    let i = inst(&[("nodes", "3")], &[]);
    assert_eq!(
        verdict(Kind::RabbitmqCluster, &i, RABBIT_STATUS),
        (false, "2 of 3 nodes running; quorum queues usable".into())
    );
    let i = inst(&[("nodes", "2")], &[]);
    assert!(verdict(Kind::RabbitmqCluster, &i, RABBIT_STATUS).0);
    let critical = RABBIT_STATUS.replace(
        "KZ-EXIT 0",
        "Error:\nQuorum queue 'orders' would lose online quorum\nKZ-EXIT 69",
    );
    let (ok, note) = verdict(Kind::RabbitmqCluster, &i, &critical);
    assert!(!ok);
    assert!(note.contains("quorum critical"), "{note}");
    let (ok, note) = verdict(
        Kind::RabbitmqCluster,
        &i,
        "Error: unable to perform an operation on node\nKZ-QUORUM\nKZ-EXIT 69\n",
    );
    assert!(!ok && note.starts_with("cluster_status: Error"), "{note}");
}

#[test]
fn galera_wants_the_cluster_size_and_synced() {
    let i = inst(&[("nodes", "3")], &[]);
    let ok =
        "wsrep_cluster_size\t3\nwsrep_cluster_status\tPrimary\nwsrep_local_state_comment\tSynced\n";
    assert_eq!(
        verdict(Kind::Galera, &i, ok),
        (
            true,
            "cluster size 3 of 3, this node Synced, component Primary".into()
        )
    );
    let two = "wsrep_cluster_size\t2\nwsrep_local_state_comment\tDonor/Desynced\n";
    assert_eq!(
        verdict(Kind::Galera, &i, two),
        (
            false,
            "cluster size 2 of 3, this node Donor/Desynced".into()
        )
    );
    let refused = "ERROR 2002 (HY000): Can't connect to server on '10.0.0.170' (115)\n";
    assert!(!verdict(Kind::Galera, &i, refused).0);
}

#[test]
fn minio_passes_on_200_only() {
    let i = inst(&[], &[]);
    assert!(verdict(Kind::Minio, &i, "\nKZ-HTTP 200\n").0);
    assert_eq!(
        verdict(Kind::Minio, &i, "\nKZ-HTTP 503\n"),
        (false, "cluster unhealthy (503: write quorum lost)".into())
    );
}

const K3S: &str = "k3s-master-01   Ready    control-plane,etcd,master   40d   v1.28.5+k3s1
k3s-master-02   Ready    control-plane,etcd,master   40d   v1.28.5+k3s1
k3s-worker-01   NotReady <none>                      40d   v1.28.5+k3s1
KZ-DS
ingress-nginx   ingress-nginx-controller   3   3   2   3   2   <none>   40d
kube-system     svclb-traefik              3   3   3   3   3   <none>   40d
";

#[test]
fn k3s_counts_ready_nodes_and_ready_daemonsets() {
    let i = inst(
        &[("nodes", "2")],
        &[("daemonsets", &["kube-system/svclb-traefik"])],
    );
    assert_eq!(
        verdict(Kind::K3sNodes, &i, K3S),
        (
            true,
            "2 of 2 nodes Ready (k3s-worker-01 NotReady); 1 DaemonSets ready".into()
        )
    );
    let i = inst(
        &[("nodes", "3")],
        &[(
            "daemonsets",
            &["ingress-nginx/ingress-nginx-controller", "x/y"],
        )],
    );
    let (ok, note) = verdict(Kind::K3sNodes, &i, K3S);
    assert!(!ok);
    assert!(note.contains("2 of 3 nodes Ready"), "{note}");
    assert!(
        note.contains("ingress-nginx/ingress-nginx-controller 2 of 3 ready"),
        "{note}"
    );
    assert!(note.contains("x/y missing"), "{note}");
}

#[test]
fn redis_role_reads_one_host_or_a_group() {
    let i = inst(&[("role", "master"), ("address", "10.0.0.123")], &[]);
    assert_eq!(
        verdict(Kind::RedisRole, &i, "db-01 master\n"),
        (true, "role:master on db-01".into())
    );
    assert_eq!(
        verdict(Kind::RedisRole, &i, "db-01 slave\n"),
        (false, "role:replica on db-01, expected master".into())
    );
    let g = inst(&[], &[("one_master_among", &["redis-01", "redis-02"])]);
    assert_eq!(
        verdict(Kind::RedisRole, &g, "redis-01 slave\nredis-02 slave\n"),
        (
            false,
            "no master (redis-01 replica, redis-02 replica)".into()
        )
    );
    assert!(verdict(Kind::RedisRole, &g, "redis-01 master\nredis-02 slave\n").0);
    let (ok, note) = verdict(
        Kind::RedisRole,
        &g,
        "redis-01 master\nredis-02 Could not connect to Redis at 10.0.0.124:6379: Connection refused\n",
    );
    assert!(ok, "{note}");
}

#[test]
fn sentinel_quorum_reads_ckquorum() {
    let i = inst(&[("master", "mymaster"), ("sentinels", "3")], &[]);
    let ok = "OK 3 usable Sentinels. Quorum and failover authorization can be reached\n";
    assert_eq!(
        verdict(Kind::SentinelQuorum, &i, ok),
        (
            true,
            "mymaster: quorum reachable, 3 sentinels usable".into()
        )
    );
    let two = ok.replace("OK 3", "OK 2");
    assert!(!verdict(Kind::SentinelQuorum, &i, &two).0);
    let no = "NOQUORUM 1 usable Sentinels. Not enough available Sentinels to reach the specified quorum for this master\n";
    assert!(!verdict(Kind::SentinelQuorum, &i, no).0);
}

#[test]
fn postgres_and_tcp_and_http_verdicts() {
    let i = inst(
        &[("address", "10.0.0.11"), ("port", "6432"), ("expect", "t")],
        &[],
    );
    assert_eq!(
        verdict(Kind::Postgres, &i, "t\nKZ-EXIT 0\n"),
        (true, "10.0.0.11:6432: answered \"t\"".into())
    );
    let refused = "psql: error: connection to server at \"10.0.0.11\", port 6432 failed: Connection refused\nKZ-EXIT 2\n";
    assert!(!verdict(Kind::Postgres, &i, refused).0);
    let t = inst(&[("address", "10.0.0.10"), ("port", "5432")], &[]);
    assert_eq!(
        verdict(Kind::Tcp, &t, "exit 0\n"),
        (true, "10.0.0.10:5432 accepts connections".into())
    );
    assert_eq!(
        verdict(Kind::Tcp, &t, "exit 124\n"),
        (false, "10.0.0.10:5432: no answer within 5s".into())
    );
    let h = inst(&[("contains", "ok")], &[]);
    assert!(verdict(Kind::Http, &h, "all ok\nKZ-HTTP 200\n").0);
    assert_eq!(
        verdict(Kind::Http, &h, "down\nKZ-HTTP 503\n"),
        (false, "status 503, expected 200".into())
    );
}

#[test]
fn the_timer_line_is_cut_off_and_read() {
    let (text, ms) = super::split_timer("0\nok\n\nKZ_CHECK_T 1000000000 1250000000\n");
    assert_eq!(text, "0\nok\n");
    assert_eq!(ms, Some(250));
    // busybox `date` prints `%N` as is: no duration, the text intact.
    let (text, ms) = super::split_timer("0\n\nKZ_CHECK_T 1700000000N 1700000001N\n");
    assert_eq!(text, "0\n");
    assert_eq!(ms, None);
}
