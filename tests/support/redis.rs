//! What the Redis lab tests read on their three Redis hosts (`redis-01..03`, Sentinel group
//! `cache`), through podman rather than kz: who says master, whom each sentinel names.

use super::lab;

/// The Redis hosts of those tests.
pub const HOSTS: [&str; 3] = ["redis-01", "redis-02", "redis-03"];

/// Each host's role line, its sentinel's master address, and the host's own address; one line
/// each, even when Redis or Sentinel does not answer.
pub fn roles(stack: &str) -> Vec<(String, String, String)> {
    HOSTS
        .iter()
        .map(|h| {
            let out = lab::on_host(
                stack,
                h,
                "echo \"$(redis-cli info replication | grep '^role:')\"; \
                 echo \"$(redis-cli -p 26379 sentinel get-master-addr-by-name cache | head -n 1)\"; \
                 hostname -i",
            )
            .replace('\r', "");
            let mut l = out.lines().map(|l| l.trim().to_string());
            let mut next = || l.next().unwrap_or_default();
            (next(), next(), next())
        })
        .collect()
}

/// The one master's host when exactly one node says master and every sentinel names that
/// node's own address (not merely the same address as the others: all may still name the old one).
pub fn settled(stack: &str) -> Option<&'static str> {
    let r = roles(stack);
    let masters: Vec<usize> = (0..HOSTS.len())
        .filter(|i| r[*i].0 == "role:master")
        .collect();
    let [m] = masters[..] else {
        return None;
    };
    (!r[m].2.is_empty() && r.iter().all(|(_, named, _)| *named == r[m].2)).then(|| HOSTS[m])
}
