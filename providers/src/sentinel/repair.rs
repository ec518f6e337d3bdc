//! Changing a group: make a new one around `initial_master`, register it on every sentinel, and
//! repair a group without a sound master the way the issue orders it: wait out a failover in
//! progress, ask the sentinels (`SENTINEL FAILOVER`), and only when they cannot, promote the
//! candidate by hand and re-register the group on each sentinel, one at a time. Each ends by
//! waiting, under a deadline, until the sentinels agree and `CKQUORUM` passes.

use std::time::Duration;

use tokio::time::{Instant, sleep};

use kz_engine::provider::{
    Applied, ApplyCtx, CommandSpec, ProviderError, UploadOptions, shell_quote,
};

use super::Group;
use super::read::{self, Member, Sentinel};
use super::topology::{Verdict, assess};

/// The deadline of one script on a member.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a started Sentinel has to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `body` (after the group's shell functions) on `host`; its output, or an error naming
/// the step and the host. Lines redis-cli prints for error replies count as failures.
async fn run(
    cx: &ApplyCtx,
    g: &Group,
    host: &str,
    step: &str,
    body: &str,
) -> Result<String, ProviderError> {
    let t = cx.transport(host).await?;
    let out = t
        .run(CommandSpec {
            script: format!("{}{body}", read::prelude(g)),
            timeout: SCRIPT_TIMEOUT,
            ..Default::default()
        })
        .await
        .map_err(|e| ProviderError::transport(step, e).on(host))?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let failed = text.lines().find(|l| {
        [
            "ERR",
            "(error)",
            "NOAUTH",
            "WRONGPASS",
            "NOGOODSLAVE",
            "INPROG",
            "Could not connect",
        ]
        .iter()
        .any(|p| l.starts_with(p))
    });
    match (out.status, failed) {
        (0, None) => Ok(text),
        (_, Some(l)) => Err(ProviderError::new(step, l.to_string()).on(host)),
        (s, None) => Err(ProviderError::new(
            step,
            format!("exit status {s}: {}", crate::tail(&out.stderr, 5)),
        )
        .on(host)),
    }
}

/// A value as a redis-cli line takes it: in double quotes, escaped.
fn redis_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c) & 0xff)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Commands for `kz_r` or `kz_s` on standard input, through the shell's `printf` builtin: a
/// password among them never appears on a command line.
fn piped(lines: &[String], to: &str) -> String {
    let quoted: Vec<String> = lines.iter().map(|l| shell_quote(l)).collect();
    format!("printf '%s\\n' {} | {to}\n", quoted.join(" "))
}

/// Every member, read again (one script per member).
async fn read_all(cx: &ApplyCtx, g: &Group) -> Result<Vec<Member>, ProviderError> {
    let mut members = Vec::new();
    for h in &g.members {
        let t = cx.transport(h).await?;
        let out = t
            .run(CommandSpec {
                script: read::script(g),
                timeout: SCRIPT_TIMEOUT,
                ..Default::default()
            })
            .await
            .map_err(|e| ProviderError::transport("read", e).on(h))?;
        members.push(read::parse(
            h,
            g.address(h),
            &String::from_utf8_lossy(&out.stdout),
        ));
    }
    Ok(members)
}

/// Makes `host` a master, announcing its address.
async fn promote(cx: &ApplyCtx, g: &Group, host: &str) -> Result<(), ProviderError> {
    cx.progress(format!("making {host} the master"));
    let lines = vec![
        format!("CONFIG SET replica-announce-ip {}", g.address(host)),
        "REPLICAOF NO ONE".to_string(),
    ];
    run(cx, g, host, "promote", &piped(&lines, "kz_r"))
        .await
        .map(drop)
}

/// Points `host` at `master`.
async fn follow(cx: &ApplyCtx, g: &Group, host: &str, master: &str) -> Result<(), ProviderError> {
    cx.progress(format!("pointing {host} at {master}"));
    let mut lines = vec![format!(
        "CONFIG SET replica-announce-ip {}",
        g.address(host)
    )];
    if let Some(a) = &g.auth {
        lines.push(format!("CONFIG SET masterauth {}", redis_quote(a)));
    }
    lines.push(format!("REPLICAOF {} {}", g.address(master), g.redis_port));
    run(cx, g, host, "replicaof", &piped(&lines, "kz_r"))
        .await
        .map(drop)
}

/// The settings every sentinel gets: `SENTINEL SET` for the group, and its announced address.
fn sentinel_settings(g: &Group, host: &str) -> Vec<String> {
    let mut set = format!(
        "SENTINEL SET {} quorum {} down-after-milliseconds {} failover-timeout {}",
        g.name,
        g.quorum(),
        g.down_after_ms,
        g.failover_ms
    );
    if let Some(a) = &g.auth {
        set.push_str(&format!(" auth-pass {}", redis_quote(a)));
    }
    vec![
        set,
        format!("SENTINEL CONFIG SET announce-ip {}", g.address(host)),
    ]
}

/// `sentinel.conf`, written only when the file is absent: Sentinel rewrites it afterwards.
fn sentinel_conf(g: &Group, host: &str, master: &str) -> String {
    let mut s = format!(
        "# Written once by kz; Sentinel rewrites this file, and kz changes it through SENTINEL commands.\n\
         port {}\nsentinel announce-ip {}\nsentinel monitor {} {} {} {}\n\
         sentinel down-after-milliseconds {} {}\nsentinel failover-timeout {} {}\n",
        g.sentinel_port,
        g.address(host),
        g.name,
        g.address(master),
        g.redis_port,
        g.quorum(),
        g.name,
        g.down_after_ms,
        g.name,
        g.failover_ms
    );
    if let Some(a) = &g.auth {
        s.push_str(&format!(
            "sentinel auth-pass {} {}\n",
            g.name,
            redis_quote(a)
        ));
    }
    s
}

/// Starts the Sentinel of `m`, writing its file first when absent.
async fn start_sentinel(
    cx: &ApplyCtx,
    g: &Group,
    m: &Member,
    master: &str,
) -> Result<(), ProviderError> {
    let host = m.host.as_str();
    if !m.conf_present {
        cx.progress(format!("writing {} on {host}", g.conf));
        let t = cx.transport(host).await?;
        let opts = UploadOptions {
            mode: Some(0o640),
            timeout: SCRIPT_TIMEOUT,
            ..Default::default()
        };
        t.upload(&g.conf, sentinel_conf(g, host, master).into_bytes(), &opts)
            .await
            .map_err(|e| ProviderError::transport("sentinel.conf", e).on(host))?;
        drop(t);
        // Sentinel rewrites its file: it must own it when it runs as the package's user.
        let conf = shell_quote(&g.conf);
        run(
            cx,
            g,
            host,
            "sentinel.conf",
            &format!("if id redis >/dev/null 2>&1; then chown redis:redis {conf}; fi\n"),
        )
        .await?;
    }
    let Some(start) = &g.start else {
        return Err(ProviderError::new(
            "sentinel",
            format!(
                "no Sentinel answers on port {}: start it, or set `sentinel_start`",
                g.sentinel_port
            ),
        )
        .on(host));
    };
    cx.progress(format!("starting the Sentinel of {host}"));
    let secs = START_TIMEOUT.as_secs() * 5;
    let body = format!(
        "{start}\nkz_n=0; until [ \"$(kz_s ping 2>/dev/null)\" = PONG ]; do kz_n=$((kz_n+1)); \
         [ $kz_n -ge {secs} ] && {{ echo 'Sentinel did not answer within {}s' >&2; exit 1; }}; sleep 0.2; done\n",
        START_TIMEOUT.as_secs()
    );
    run(cx, g, host, "sentinel start", &body).await.map(drop)
}

/// Registers the group around `master` on every member's Sentinel, one at a time, starting
/// those that do not answer; replaces a registration that names another address.
async fn register(
    cx: &ApplyCtx,
    g: &Group,
    members: &[Member],
    master: &str,
) -> Result<(), ProviderError> {
    let addr = g.address(master);
    for m in members {
        if matches!(m.sentinel, Sentinel::Down(_)) {
            start_sentinel(cx, g, m, master).await?;
        }
        cx.progress(format!(
            "registering {} on the Sentinel of {}",
            g.name, m.host
        ));
        let body = format!(
            "kz_cur=$(kz_s sentinel get-master-addr-by-name {name} | head -n 1)\n\
             if [ \"$kz_cur\" != {addr} ]; then\n\
             if [ -n \"$kz_cur\" ]; then kz_s sentinel remove {name}; fi\n\
             kz_s sentinel monitor {name} {addr} {port} {q}\nfi\n{set}",
            name = g.name,
            port = g.redis_port,
            q = g.quorum(),
            set = piped(&sentinel_settings(g, &m.host), "kz_s"),
        );
        run(cx, g, &m.host, "sentinel register", &body).await?;
    }
    Ok(())
}

/// Reads until `done` holds of the verdict or the deadline passes; the last verdict and members.
async fn wait_for(
    cx: &ApplyCtx,
    g: &Group,
    within: Duration,
    what: &str,
    done: impl Fn(&Verdict, &[Member]) -> bool,
) -> Result<(Verdict, Vec<Member>, bool), ProviderError> {
    let deadline = Instant::now() + within;
    let started = Instant::now();
    loop {
        let members = read_all(cx, g).await?;
        // A Redis that cannot be read may be one being restarted: keep reading until the deadline.
        let v = assess(&members);
        let over = Instant::now() >= deadline || cx.aborted();
        let seen = match v {
            Ok(v) if done(&v, &members) => return Ok((v, members, true)),
            Ok(v) if over => return Ok((v, members, false)),
            Err(e) if over => return Err(ProviderError::new("read", e)),
            Ok(v) => v.topology(),
            Err(e) => e,
        };
        cx.progress(format!(
            "waiting for {what} ({}s): {seen}",
            started.elapsed().as_secs(),
        ));
        sleep(Duration::from_secs(1)).await;
    }
}

fn sound(v: &Verdict) -> bool {
    matches!(v, Verdict::Healthy { .. } | Verdict::Align { .. })
}

/// Healthy, with `CKQUORUM` passing on every sentinel.
fn verified(v: &Verdict, members: &[Member]) -> bool {
    matches!(v, Verdict::Healthy { .. })
        && members
            .iter()
            .all(|m| matches!(&m.sentinel, Sentinel::Monitoring(s) if s.ckquorum.is_ok()))
}

/// Asks the sentinels to fail over; whether a sound master came out of it.
async fn sentinel_failover(
    cx: &ApplyCtx,
    g: &Group,
    members: &[Member],
) -> Result<bool, ProviderError> {
    let Some(m) = members
        .iter()
        .find(|m| matches!(m.sentinel, Sentinel::Monitoring(_)))
    else {
        return Ok(false);
    };
    cx.progress(format!("asking the Sentinel of {} to fail over", m.host));
    let body = format!("kz_s sentinel failover {}\n", g.name);
    if run(cx, g, &m.host, "sentinel failover", &body)
        .await
        .is_err()
    {
        // NOGOODSLAVE and the like: the sentinels cannot; kz promotes by hand.
        return Ok(false);
    }
    let within = Duration::from_millis(g.failover_ms) + Duration::from_secs(5);
    let (_, _, ok) = wait_for(cx, g, within, "the sentinels' failover", |v, _| sound(v)).await?;
    Ok(ok)
}

/// Every monitoring sentinel of `members` forgets the group, one at a time.
async fn remove_everywhere(
    cx: &ApplyCtx,
    g: &Group,
    members: &[Member],
) -> Result<(), ProviderError> {
    for m in members {
        if matches!(m.sentinel, Sentinel::Monitoring(_)) {
            cx.progress(format!(
                "removing {} from the Sentinel of {}",
                g.name, m.host
            ));
            run(
                cx,
                g,
                &m.host,
                "sentinel remove",
                &format!("kz_s sentinel remove {}\n", g.name),
            )
            .await?;
        }
    }
    Ok(())
}

/// The master to register the group around after a manual promotion: the candidate once it
/// was promoted, else the master the sentinels named before (the last they watched). `None`
/// when no sentinel watched the group before and the candidate is not master: nothing to restore.
fn register_around<'a>(
    promoted: bool,
    candidate: &'a str,
    named_before: Option<&'a str>,
) -> Option<&'a str> {
    if promoted {
        Some(candidate)
    } else {
        named_before
    }
}

/// Promotes `candidate` by hand: the sentinels forget the group first (so they cannot undo the
/// promotion), the others follow it, then each sentinel registers it again. Whatever fails
/// after the first removal, the group is registered again before the first error returns: a
/// failed repair must not leave the group unwatched.
async fn promote_by_hand(cx: &ApplyCtx, g: &Group, candidate: &str) -> Result<(), ProviderError> {
    let members = read_all(cx, g).await?;
    let named_before = super::topology::named(&members).map(|(h, _)| h);
    let mut promoted = false;
    let mut failure = remove_everywhere(cx, g, &members).await.err();
    if failure.is_none() {
        failure = promote(cx, g, candidate).await.err();
        promoted = failure.is_none();
    }
    if promoted {
        for m in members
            .iter()
            .filter(|m| m.host != candidate && m.redis.is_ok())
        {
            if let Err(e) = follow(cx, g, &m.host, candidate).await {
                failure.get_or_insert(e);
            }
        }
    }
    let registered = match register_around(promoted, candidate, named_before.as_deref()) {
        Some(master) => {
            // The first read tells which sentinels were down, should this one fail.
            let now = read_all(cx, g).await.unwrap_or(members);
            register(cx, g, &now, master).await
        }
        None => Ok(()),
    };
    match failure {
        Some(e) => Err(e),
        None => registered,
    }
}

/// A new group: `initial_master` stays or becomes master, every other node follows it.
async fn make_group(cx: &ApplyCtx, g: &Group, members: &[Member]) -> Result<(), ProviderError> {
    let master = g.initial_master.as_str();
    for m in members {
        if let Err(e) = &m.redis {
            return Err(
                ProviderError::new("redis", format!("Redis does not answer: {e}")).on(&m.host),
            );
        }
    }
    promote(cx, g, master).await?;
    for m in members.iter().filter(|m| m.host != master) {
        follow(cx, g, &m.host, master).await?;
    }
    register(cx, g, members, master).await
}

/// Brings the group to one master the sentinels agree on, then verifies it.
pub async fn ensure(cx: &ApplyCtx) -> Result<Applied, ProviderError> {
    let g = Group::from(cx.instance()).map_err(|e| ProviderError::new("sentinel", e))?;
    let mut members = read_all(cx, &g).await?;
    // A Redis kz cannot read (a wrong password, no answer) is never repaired on a guess.
    let mut verdict = assess(&members).map_err(|e| ProviderError::new("read", e))?;
    if let Verdict::Wait { .. } = verdict {
        let within = Duration::from_millis(g.failover_ms);
        let waited = wait_for(cx, &g, within, "the failover in progress", |v, _| {
            !matches!(v, Verdict::Wait { .. })
        })
        .await?;
        (verdict, members) = (waited.0, waited.1);
    }
    let mut how = String::new();
    match &verdict {
        Verdict::New => {
            make_group(cx, &g, &members).await?;
            how = format!("made with master {}", g.initial_master);
        }
        Verdict::Healthy { master, .. } | Verdict::Align { master, .. } => {
            register(cx, &g, &members, master).await?;
        }
        Verdict::Wait { text } => {
            return Err(ProviderError::new(
                "failover",
                format!("still in progress after failover-timeout: {text}"),
            ));
        }
        Verdict::Promote { candidate, text } => {
            cx.progress(text.clone());
            if sentinel_failover(cx, &g, &members).await? {
                how = "repaired by SENTINEL FAILOVER".into();
                let members = read_all(cx, &g).await?;
                if let Ok(Verdict::Align { master, .. } | Verdict::Healthy { master, .. }) =
                    assess(&members)
                {
                    register(cx, &g, &members, &master).await?;
                }
            } else {
                let Some(c) = candidate else {
                    return Err(ProviderError::new(
                        "repair",
                        format!("{text}: no node can be promoted"),
                    ));
                };
                promote_by_hand(cx, &g, &c.host).await?;
                how = format!("repaired by hand: promoted {}", c.host);
            }
        }
    }
    let within = Duration::from_millis(g.failover_ms).max(Duration::from_secs(30));
    let (v, members, ok) = wait_for(cx, &g, within, "the sentinels to agree", verified).await?;
    if !ok {
        let ck: Vec<String> = members
            .iter()
            .filter_map(|m| match &m.sentinel {
                Sentinel::Monitoring(s) => s
                    .ckquorum
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", m.host)),
                _ => None,
            })
            .collect();
        return Err(ProviderError::new(
            "verify",
            format!(
                "the group did not settle: {}{}",
                v.topology(),
                if ck.is_empty() {
                    String::new()
                } else {
                    format!("; CKQUORUM: {}", ck.join("; "))
                }
            ),
        ));
    }
    let mut summary = match &v {
        Verdict::Healthy { summary, .. } => summary.clone(),
        other => other.topology(),
    };
    // The last check after a repair: each load balancer routes to the master alone.
    if let (Some(b), Verdict::Healthy { master, .. }) = (&g.balancers, &v) {
        let routed = super::balancers::verify(cx, b, master).await?;
        summary.push_str(&format!("; {routed}"));
    }
    Ok(Applied {
        outputs: Default::default(),
        note: Some(if how.is_empty() {
            summary
        } else {
            format!("{how}; {summary}")
        }),
    })
}

/// Removing the resource: every sentinel forgets the group; Redis keeps its replication.
pub async fn forget(cx: &ApplyCtx) -> Result<Applied, ProviderError> {
    let g = Group::from(cx.instance()).map_err(|e| ProviderError::new("sentinel", e))?;
    for h in &g.members {
        let body = format!(
            "if [ -n \"$(kz_s sentinel get-master-addr-by-name {n} | head -n 1)\" ]; then kz_s sentinel remove {n}; fi\n",
            n = g.name
        );
        run(cx, &g, h, "sentinel remove", &body).await?;
    }
    Ok(Applied {
        note: Some("the sentinels forgot the group; Redis keeps its replication".into()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_promotion_registers_the_group_around_the_master_named_before() {
        assert_eq!(
            register_around(true, "redis-02", Some("redis-01")),
            Some("redis-02")
        );
        assert_eq!(
            register_around(false, "redis-02", Some("redis-01")),
            Some("redis-01")
        );
        assert_eq!(register_around(false, "redis-02", None), None);
    }
}
