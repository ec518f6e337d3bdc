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

/// The `ufw` commands from `now` to `want` (both with their three header lines). Rules are kept
/// when the declared ones only add to them; otherwise every rule is removed and the declared
/// ones added in order, since UFW decides by the first rule that matches.
pub fn commands(now: &[String], want: &[String]) -> Vec<String> {
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
    if !keep {
        if now_rules.iter().any(|l| Rule::parse(l).is_err()) {
            // A rule kz would not write cannot be removed by its description: start over.
            cmds.insert(0, "ufw --force reset".into());
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
    for c in commands(&now, &want) {
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
        let c = commands(&now, &want);
        assert!(!c.iter().any(|c| c.contains("delete")), "{c:?}");
        assert!(c.contains(&"ufw allow proto tcp from 10.0.0.0/8 to any port 6379".to_string()));
        assert_eq!(c.last().unwrap(), "ufw --force enable");

        let mut reordered = lines(&HEAD);
        reordered.push("deny any from 192.0.2.5".into());
        reordered.push("allow 22/tcp from any".into());
        let c = commands(&now, &reordered);
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
        assert_eq!(commands(&now, &reordered)[0], "ufw --force reset");
    }
}
