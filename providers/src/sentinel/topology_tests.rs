//! The decision on parsed fixtures: each situation of the issue, and Sentinel's choice.

#![allow(clippy::unwrap_used)]

use super::super::read::fixtures::{
    info_master, info_replica, output, redis_answers, sentinel_master,
};
use super::super::read::{Member, parse};
use super::*;

fn addr(host: &str) -> String {
    format!("10.0.0.{}", &host[host.len() - 1..])
}

/// A member: its `INFO replication` ("" when its Redis is down), its run id, and the master its
/// Sentinel names (`None`: Sentinel down, `Some("")`: not monitoring).
fn member(host: &str, info: &str, run_id: &str, names: Option<&str>) -> Member {
    let master = names.map(|n| {
        if n.is_empty() {
            String::new()
        } else {
            sentinel_master(&addr(n), "master", 2)
        }
    });
    let names_addr = names.map(|n| if n.is_empty() { String::new() } else { addr(n) });
    let sentinel = match (&master, &names_addr) {
        (Some(m), Some(a)) if !m.is_empty() => Some((m.as_str(), a.as_str())),
        (Some(_), _) => Some(("", "")),
        _ => None,
    };
    parse(host, &addr(host), &output(info, run_id, sentinel))
}

fn replica_of(master: &str, up: bool, offset: i64) -> String {
    info_replica(&addr(master), up, "aaaa", offset)
}

#[test]
fn after_a_failover_the_new_master_is_healthy_and_no_change() {
    let members = [
        member("redis-01", "", "r1", Some("redis-02")),
        member(
            "redis-02",
            &info_master("bbbb", 900, 1),
            "r2",
            Some("redis-02"),
        ),
        member(
            "redis-03",
            &replica_of("redis-02", true, 900),
            "r3",
            Some("redis-02"),
        ),
    ];
    let v = assess(&members).unwrap();
    let Verdict::Healthy { master, summary } = &v else {
        panic!("{v:?}")
    };
    assert_eq!(master, "redis-02");
    assert_eq!(
        summary,
        "master redis-02, 1 of 2 replicas in sync, 3 sentinels agree; Redis down on redis-01"
    );
    assert_eq!(v.topology(), HEALTHY);
}

#[test]
fn an_old_master_restarted_saying_master_is_left_to_sentinel() {
    let members = [
        member(
            "redis-01",
            &info_master("aaaa", 500, 0),
            "r1",
            Some("redis-02"),
        ),
        member(
            "redis-02",
            &info_master("bbbb", 900, 1),
            "r2",
            Some("redis-02"),
        ),
        member(
            "redis-03",
            &replica_of("redis-02", true, 900),
            "r3",
            Some("redis-02"),
        ),
    ];
    let Verdict::Healthy { master, summary } = assess(&members).unwrap() else {
        panic!()
    };
    assert_eq!(master, "redis-02");
    assert!(
        summary.contains("redis-01 not following redis-02 yet"),
        "{summary}"
    );
}

#[test]
fn no_master_proposes_the_replica_with_the_highest_offset() {
    let members = [
        member(
            "redis-01",
            &replica_of("redis-03", false, 100),
            "r1",
            Some("redis-01"),
        ),
        member(
            "redis-02",
            &replica_of("redis-01", false, 81234),
            "r2",
            Some("redis-01"),
        ),
        member(
            "redis-03",
            &replica_of("redis-02", false, 150),
            "r3",
            Some("redis-01"),
        ),
    ];
    let v = assess(&members).unwrap();
    assert_eq!(
        v.topology(),
        "NO MASTER: 3 replicas; 3 sentinels name redis-01; would promote redis-02 (offset 81234, same replication id)"
    );
    let Verdict::Promote { candidate, .. } = v else {
        panic!()
    };
    assert_eq!(candidate.unwrap().host, "redis-02");
}

#[test]
fn no_master_with_sentinels_down_and_a_redis_down_still_has_a_candidate() {
    let members = [
        member("redis-01", "", "r1", None),
        member("redis-02", &replica_of("redis-01", false, 40), "r2", None),
        member("redis-03", &replica_of("redis-01", false, 40), "r3", None),
    ];
    let v = assess(&members).unwrap();
    assert_eq!(
        v.topology(),
        "NO MASTER: 2 replicas, redis-01 down; no sentinel monitors the group; no sentinel answers on redis-01, redis-02, redis-03; would promote redis-02 (offset 40, same replication id)"
    );
}

#[test]
fn split_brain_without_agreement_keeps_the_longest_history() {
    let members = [
        member(
            "redis-01",
            &info_master("aaaa", 500, 0),
            "r1",
            Some("redis-01"),
        ),
        member(
            "redis-02",
            &info_master("bbbb", 300, 1),
            "r2",
            Some("redis-02"),
        ),
        member(
            "redis-03",
            &info_replica(&addr("redis-02"), true, "bbbb", 300),
            "r3",
            None,
        ),
    ];
    let v = assess(&members).unwrap();
    let t = v.topology();
    assert!(
        t.starts_with("SPLIT BRAIN: redis-01 and redis-02 say master; sentinels disagree: redis-01 (1), redis-02 (1)"),
        "{t}"
    );
    // Two histories of two nodes and one: redis-02's (with its replica) is shared by more.
    assert!(
        t.ends_with("would keep redis-02 (offset 300, replication id of 2 of 3 nodes)"),
        "{t}"
    );
}

#[test]
fn a_phantom_master_is_a_node_saying_master_that_the_sentinels_do_not_name() {
    let members = [
        member(
            "redis-01",
            &replica_of("redis-02", false, 100),
            "r1",
            Some("redis-01"),
        ),
        member(
            "redis-02",
            &info_master("aaaa", 700, 0),
            "r2",
            Some("redis-01"),
        ),
        member(
            "redis-03",
            &replica_of("redis-02", true, 700),
            "r3",
            Some("redis-01"),
        ),
    ];
    let t = assess(&members).unwrap().topology();
    assert_eq!(
        t,
        "PHANTOM MASTER: redis-02 says master, but 3 sentinels name redis-01; would keep redis-02 (offset 700, same replication id)"
    );
}

#[test]
fn a_failover_in_progress_is_waited_for() {
    let mut members = vec![
        member("redis-01", "", "r1", Some("redis-01")),
        member(
            "redis-02",
            &replica_of("redis-01", false, 10),
            "r2",
            Some("redis-01"),
        ),
    ];
    let out = output(
        &replica_of("redis-01", false, 10),
        "r3",
        Some((
            &sentinel_master(&addr("redis-01"), "master,o_down,failover_in_progress", 2),
            &addr("redis-01"),
        )),
    );
    members.push(parse("redis-03", &addr("redis-03"), &out));
    let v = assess(&members).unwrap();
    assert!(matches!(v, Verdict::Wait { .. }), "{v:?}");
    assert!(
        v.topology()
            .starts_with("FAILOVER IN PROGRESS (sentinel on redis-03)")
    );
}

#[test]
fn a_group_no_sentinel_monitors_and_no_replica_follows_is_new() {
    let members = [
        member("redis-01", &info_master("a", 0, 0), "r1", Some("")),
        member("redis-02", &info_master("b", 0, 0), "r2", None),
    ];
    assert_eq!(assess(&members).unwrap(), Verdict::New);
}

#[test]
fn a_sentinel_without_the_group_is_registered() {
    let members = [
        member(
            "redis-01",
            &info_master("aaaa", 9, 2),
            "r1",
            Some("redis-01"),
        ),
        member(
            "redis-02",
            &replica_of("redis-01", true, 9),
            "r2",
            Some("redis-01"),
        ),
        member("redis-03", &replica_of("redis-01", true, 9), "r3", Some("")),
    ];
    let v = assess(&members).unwrap();
    let Verdict::Align {
        master,
        unregistered,
        ..
    } = &v
    else {
        panic!("{v:?}")
    };
    assert_eq!(master, "redis-01");
    assert_eq!(unregistered, &["redis-03".to_string()]);
    assert!(
        v.topology()
            .ends_with("would register the group on the sentinel of redis-03")
    );
}

#[test]
fn sentinel_skips_priority_zero_then_prefers_low_priority_then_offset_then_run_id() {
    let mut members = vec![
        member("redis-01", &replica_of("x", false, 900), "r1", None),
        member("redis-02", &replica_of("x", false, 500), "r9", None),
        member("redis-03", &replica_of("x", false, 500), "r3", None),
    ];
    members[0].redis.as_mut().unwrap().priority = 0;
    assert_eq!(choose(&members).unwrap().host, "redis-03", "lowest run id");
    members[1].redis.as_mut().unwrap().priority = 10;
    assert_eq!(
        choose(&members).unwrap().host,
        "redis-02",
        "lowest priority"
    );
    members[1].redis.as_mut().unwrap().priority = 100;
    members[1].redis.as_mut().unwrap().offset = 501;
    assert_eq!(choose(&members).unwrap().host, "redis-02", "highest offset");
    for m in &mut members {
        m.redis.as_mut().unwrap().priority = 0;
    }
    assert_eq!(choose(&members), None);
}

const WRONGPASS: &str =
    "AUTH failed: WRONGPASS invalid username-password pair or user is disabled.";

/// Three members whose sentinels all name redis-01 with `flags`, redis-01's Redis answering
/// `code` and `text`.
fn master_unread(flags: &str, code: i32, text: &str) -> Vec<Member> {
    let with = |host: &str, info: &str| {
        let out = output(
            info,
            host,
            Some((
                &sentinel_master(&addr("redis-01"), flags, 2),
                &addr("redis-01"),
            )),
        );
        parse(host, &addr(host), &out)
    };
    let first = output(
        &info_master("aaaa", 9, 2),
        "r1",
        Some((
            &sentinel_master(&addr("redis-01"), flags, 2),
            &addr("redis-01"),
        )),
    );
    vec![
        parse(
            "redis-01",
            &addr("redis-01"),
            &redis_answers(&first, code, text),
        ),
        with("redis-02", &replica_of("redis-01", true, 9)),
        with("redis-03", &replica_of("redis-01", true, 9)),
    ]
}

#[test]
fn a_master_kz_cannot_read_is_an_error_not_a_failover() {
    // A stale password: every sentinel names redis-01 and none flags it down.
    let e = assess(&master_unread("master", 0, WRONGPASS)).unwrap_err();
    assert!(
        e.starts_with("cannot read Redis on redis-01: AUTH failed: WRONGPASS"),
        "{e}"
    );
    assert!(e.contains("none considers it down"), "{e}");
    // A hung master, and one just stopped that the sentinels have not yet noticed: the same.
    let e = assess(&master_unread("master", 124, "")).unwrap_err();
    assert!(e.contains("no answer within 5 s"), "{e}");
    let refused = "Could not connect to Redis at 127.0.0.1:6379: Connection refused";
    assert!(assess(&master_unread("master", 1, refused)).is_err());
}

#[test]
fn a_master_the_sentinels_flag_down_is_down_whatever_kz_read() {
    for flags in ["master,s_down", "master,s_down,o_down"] {
        let v = assess(&master_unread(flags, 0, WRONGPASS)).unwrap();
        let Verdict::Promote { candidate, .. } = &v else {
            panic!("{v:?}")
        };
        assert!(
            v.topology()
                .starts_with("NO MASTER: 2 replicas, redis-01 down")
        );
        assert_ne!(candidate.as_ref().unwrap().host, "redis-01");
    }
}

#[test]
fn a_replica_kz_cannot_read_is_an_error_but_a_stopped_one_is_down() {
    let mut members = master_unread("master", 0, &info_master("aaaa", 9, 2));
    let replica = output(&replica_of("redis-01", true, 9), "r2", None);
    members[1] = parse(
        "redis-02",
        &addr("redis-02"),
        &redis_answers(&replica, 124, ""),
    );
    let e = assess(&members).unwrap_err();
    assert_eq!(e, "cannot read Redis on redis-02: no answer within 5 s");
    members[1] = parse("redis-02", &addr("redis-02"), &output("", "r2", None));
    assert!(matches!(assess(&members), Ok(Verdict::Align { .. })));
}
