//! Applying the UFW part: the rules read again, the lockout check made again with this very
//! connection's address, then `ufw` commands that turn the rules into the declared ones.

use std::net::IpAddr;

use kz_engine::provider::{ApplyCtx, ProviderError, Transport};

use super::probe::{Facts, PATH};
use super::ufw::{self, Rule};
use super::{list, run_checked};

/// The current rules (as lines) and the SSH connection, read in one command.
async fn current(t: &dyn Transport) -> Result<(Vec<String>, Option<(IpAddr, u16)>), ProviderError> {
    let script = format!(
        "{PATH}\nmark() {{ printf '%s %s\\n' '@@kz-system@@' \"$1\"; }}\n\
         mark container; echo no\nmark ssh; echo \"${{SSH_CONNECTION:-}}\"\n\
         mark ufw; command -v ufw >/dev/null 2>&1 || {{ echo 'ufw is not installed: add it to `packages`' >&2; exit 3; }}\n\
         echo installed; cat /etc/ufw/ufw.conf /etc/default/ufw 2>/dev/null | \
         grep -E '^(ENABLED|DEFAULT_INPUT_POLICY|DEFAULT_OUTPUT_POLICY)='\n\
         mark ufw4; grep '^### tuple' /etc/ufw/user.rules 2>/dev/null\n\
         mark ufw6; grep '^### tuple' /etc/ufw/user6.rules 2>/dev/null\ntrue\n"
    );
    let out = run_checked(t, "ufw", script, t.command_timeout()).await?;
    let facts = Facts::parse(&String::from_utf8_lossy(&out));
    let lines = ufw::observed_lines(
        facts.section("ufw"),
        facts.section("ufw4"),
        facts.section("ufw6"),
    );
    Ok((lines, facts.ssh))
}

/// The rule that keeps kz's own SSH connection open while the rules are rewritten: `allow` the
/// port kz connects to from the address it connects from. Added first and removed last, so a
/// rewrite cut short (a failing `ufw` call under `set -e`) never leaves kz shut out halfway.
pub fn guard(client: std::net::IpAddr, port: u16) -> String {
    let prefix = if client.is_ipv4() { 32 } else { 128 };
    Rule::parse(&format!("allow {port}/tcp from {client}/{prefix}"))
        .map(|r| r.command())
        .unwrap_or_else(|_| format!("allow proto tcp from {client} to any port {port}"))
}

/// The `ufw` commands from `now` to `want` (both with their three header lines). Rules are kept
/// when the declared ones only add to them; otherwise every rule is removed and the declared
/// ones added in order, since UFW decides by the first rule that matches. With `guard` (see
/// [`guard`]), kz's SSH stays allowed throughout: the guard goes in before the defaults and the
/// removals, and out after everything else, unless a declared rule is the very same rule.
pub fn commands(now: &[String], want: &[String], guard: Option<&str>) -> Vec<String> {
    let rules = |v: &[String]| -> Vec<String> { v.iter().skip(3).cloned().collect() };
    let (now_rules, want_rules) = (rules(now), rules(want));
    let mut cmds = Vec::new();
    for l in want.iter().take(3) {
        if let Some(p) = l.strip_prefix("default incoming ") {
            cmds.push(format!("ufw default {p} incoming"));
        } else if let Some(p) = l.strip_prefix("default outgoing ") {
            cmds.push(format!("ufw default {p} outgoing"));
        }
    }
    let keep = want_rules.starts_with(&now_rules);
    let declared: Vec<String> = want_rules
        .iter()
        .filter_map(|l| Rule::parse(l).ok().map(|r| r.command()))
        .collect();
    let guard = guard.filter(|g| !keep && !declared.iter().any(|d| d == g));
    if let Some(g) = guard {
        cmds.insert(0, format!("ufw {g}"));
    }
    if !keep {
        if now_rules.iter().any(|l| Rule::parse(l).is_err()) {
            // A rule kz would not write cannot be removed by its description: start over (which
            // also disables UFW until the end, and drops the guard: it goes back in after).
            cmds.insert(0, "ufw --force reset".into());
            if let Some(g) = guard {
                cmds.insert(1, format!("ufw {g}"));
                cmds.remove(2);
            }
        } else {
            let mut seen = Vec::new();
            for l in &now_rules {
                if let Ok(r) = Rule::parse(l)
                    && !seen.contains(&r.command())
                {
                    seen.push(r.command());
                    cmds.push(format!("ufw --force delete {}", r.command()));
                }
            }
        }
    }
    let start = if keep { now_rules.len() } else { 0 };
    for l in &want_rules[start..] {
        if let Ok(r) = Rule::parse(l) {
            cmds.push(format!("ufw {}", r.command()));
        }
    }
    if want.iter().any(|l| l == "status enabled") {
        cmds.push("ufw --force enable".into());
    } else {
        cmds.push("ufw disable".into());
    }
    if let Some(g) = guard {
        cmds.push(format!("ufw --force delete {g}"));
    }
    cmds
}

pub async fn apply(cx: &ApplyCtx, t: &dyn Transport) -> Result<(), ProviderError> {
    let want = list(cx.instance(), "ufw");
    for l in want.iter().skip(3) {
        Rule::parse(l).map_err(|e| ProviderError::new("ufw", e))?;
    }
    let (now, ssh) = current(t).await?;
    if let Some((client, port)) = ssh
        && let Some(why) = ufw::lockout(&want, client, port)
    {
        return Err(ProviderError::new("ufw", format!("refused: {why}")));
    }
    cx.progress("ufw: setting the rules");
    let mut script = format!("{PATH}\nset -e\n");
    let guard = ssh.map(|(client, port)| guard(client, port));
    for c in commands(&now, &want, guard.as_deref()) {
        script.push_str(&c);
        script.push_str(" >/dev/null\n");
    }
    run_checked(t, "ufw", script, t.command_timeout()).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    const HEAD: [&str; 3] = [
        "status enabled",
        "default incoming deny",
        "default outgoing allow",
    ];

    #[test]
    fn added_rules_keep_the_old_ones_and_others_start_over() {
        let mut now = lines(&HEAD);
        now.push("allow 22/tcp from any".into());
        let mut want = now.clone();
        want.push("allow 6379/tcp from 10.0.0.0/8".into());
        let c = commands(&now, &want, None);
        assert!(!c.iter().any(|c| c.contains("delete")), "{c:?}");
        assert!(c.contains(&"ufw allow proto tcp from 10.0.0.0/8 to any port 6379".to_string()));
        assert_eq!(c.last().unwrap(), "ufw --force enable");

        let mut reordered = lines(&HEAD);
        reordered.push("deny any from 192.0.2.5".into());
        reordered.push("allow 22/tcp from any".into());
        let c = commands(&now, &reordered, None);
        let del = c
            .iter()
            .position(|c| c == "ufw --force delete allow proto tcp from any to any port 22")
            .unwrap();
        let add = c
            .iter()
            .position(|c| c == "ufw deny from 192.0.2.5 to any")
            .unwrap();
        assert!(del < add, "{c:?}");

        now.push("other: allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in".into());
        assert_eq!(commands(&now, &reordered, None)[0], "ufw --force reset");
    }

    #[test]
    fn a_rewrite_keeps_kz_ssh_open_from_first_to_last_command() {
        let g = guard("10.89.0.1".parse().unwrap(), 22);
        assert_eq!(g, "allow proto tcp from 10.89.0.1 to any port 22");
        let mut now = lines(&HEAD);
        now.push("allow 22/tcp from any".into());
        let mut want = lines(&HEAD);
        want.push("deny any from 192.0.2.5".into());
        want.push("allow 22/tcp from 10.0.0.0/8".into());
        let c = commands(&now, &want, Some(&g));
        assert_eq!(c[0], format!("ufw {g}"), "{c:?}");
        assert_eq!(
            c.last().unwrap(),
            &format!("ufw --force delete {g}"),
            "{c:?}"
        );
        let deleted = c
            .iter()
            .position(|c| c.contains("delete allow proto tcp from any"))
            .unwrap();
        assert!(deleted > 0);
        // Rules only added: nothing is removed, no guard is needed.
        let mut more = now.clone();
        more.push("allow 80/tcp from any".into());
        assert!(
            !commands(&now, &more, Some(&g))
                .iter()
                .any(|c| c.contains("10.89.0.1"))
        );
        // A rule kz would not write: reset first, then the guard, then the rest.
        now.push("other: allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in".into());
        let c = commands(&now, &want, Some(&g));
        assert_eq!(
            &c[..2],
            &["ufw --force reset".to_string(), format!("ufw {g}")],
            "{c:?}"
        );
        assert_eq!(
            c.iter().filter(|c| c.contains("10.89.0.1")).count(),
            2,
            "{c:?}"
        );
    }
}
