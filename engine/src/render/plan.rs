//! Plans as text, host by host, in the style of `terraform plan`.

use std::fmt::Write;

use similar::{ChangeTag, TextDiff};

use super::{MAX_DIFF_LINES, Style, colored, describe, plural, render_skipped, symbol};
use crate::plan::{Action, AttrChange, Change, Plan};

/// The gates of a plan: whether each passes now, and whether apply runs it again.
fn render_gates(out: &mut String, plan: &Plan, style: &Style) {
    if plan.gates.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", style.bold("Gates:"));
    for g in &plan.gates {
        let now = match g.passing {
            Some(true) => style.green("passing"),
            Some(false) => style.red("failing"),
            None => style.yellow("not read"),
        };
        let note = g
            .note
            .as_deref()
            .map(|n| format!(" ({})", style.safe(n)))
            .unwrap_or_default();
        let then = match (g.will_run, g.passing) {
            (false, _) => "nothing it depends on changes",
            (true, Some(true)) => "runs again at apply, after the changes it depends on",
            (true, _) => "runs at apply; what depends on it waits until it passes",
        };
        let _ = writeln!(out, "  {} {now}{note}; {then}", style.safe(&g.address));
    }
}

/// The resources whose changes apply one host at a time, each with its hosts in order.
fn render_serial(out: &mut String, orders: &[crate::model::SerialOrder], style: &Style) {
    if orders.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", style.bold("One host at a time:"));
    for o in orders {
        let after = match &o.after_each {
            Some(c) => format!(", each once {} passes on the host before", style.safe(c)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {}: {}{after}",
            style.safe(&o.resource),
            style.safe(&o.hosts.join(", then "))
        );
    }
}

/// The human form of a plan, host by host, in the style of `terraform plan`.
pub fn render_plan(plan: &Plan, style: &Style) -> String {
    let mut out = String::new();
    for m in &plan.removed_modules {
        let _ = writeln!(
            out,
            "\n{} module `{}` is no longer in the stack: this plan deletes {} (its file was removed, renamed, or could not be read)",
            style.red("warning:"),
            style.safe(&m.module),
            if m.deletes == 1 {
                "its only instance".to_string()
            } else {
                format!("all {} of its instances", m.deletes)
            }
        );
    }
    render_skipped(
        &mut out,
        &plan.skipped_modules,
        &plan.skipped_resources,
        style,
    );
    let mut place: Option<String> = None;
    for c in &plan.changes {
        let here = c.place();
        if place.as_ref() != Some(&here) {
            let heading = style.safe(&here);
            place = Some(here);
            let _ = writeln!(
                out,
                "\n{} {} {}",
                style.rule(),
                style.bold(&heading),
                style.rule()
            );
        }
        render_change(&mut out, c, style);
    }
    render_serial(&mut out, &plan.serial, style);
    for e in &plan.errors {
        let _ = writeln!(out, "\n{} {}", style.red("error:"), style.safe(&e.message));
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "\n{} {}", style.yellow("warning:"), style.safe(w));
    }
    render_unverified(&mut out, plan, style);
    render_not_applicable(&mut out, plan, style);
    render_live(&mut out, plan, style);
    render_gates(&mut out, plan, style);
    out.push('\n');
    let unverified = plan.unverified.len();
    if plan.changes.is_empty() && unverified > 0 {
        let _ = writeln!(
            out,
            "No changes found, but {unverified} instance{} could not be compared: set the secrets and plan again.",
            plural(unverified)
        );
    } else if plan.changes.is_empty() {
        if plan.errors.is_empty() {
            out.push_str("No changes. The hosts match the stack.\n");
        } else {
            out.push_str("No changes on the hosts that could be read.\n");
        }
    } else {
        if plan.modules.len() > 1 {
            let list: Vec<String> = plan
                .modules
                .iter()
                .map(|m| format!("{} ({})", style.safe(&m.module), m.changes))
                .collect();
            let _ = writeln!(
                out,
                "{} {}.",
                style.bold("Modules, in apply order:"),
                list.join(", ")
            );
        }
        let s = &plan.summary;
        let _ = writeln!(
            out,
            "{} {} to create, {} to update, {} to replace, {} to delete, {} to adopt.",
            style.bold("Plan:"),
            s.create,
            s.update,
            s.replace,
            s.delete,
            s.adopt
        );
        if unverified > 0 {
            let _ = writeln!(
                out,
                "{unverified} more instance{} could not be compared: set the secrets and plan again.",
                plural(unverified)
            );
        }
    }
    if plan.refreshed && (plan.read.hosts > 0 || plan.read.api_reads > 0) {
        let mut read = Vec::new();
        if plan.read.hosts > 0 {
            read.push(format!(
                "{} host{} in {} round trip{}",
                plan.read.hosts,
                plural(plan.read.hosts),
                plan.read.round_trips,
                plural(plan.read.round_trips)
            ));
        }
        if plan.read.api_reads > 0 {
            read.push(format!(
                "{} API provider{}",
                plan.read.api_reads,
                plural(plan.read.api_reads)
            ));
        }
        let _ = writeln!(
            out,
            "{}",
            style.dim(&format!("Read {}.", read.join(" and ")))
        );
    }
    out
}

/// The instances a plan could not compare, above everything else it concludes.
fn render_unverified(out: &mut String, plan: &Plan, style: &Style) {
    if plan.unverified.is_empty() {
        return;
    }
    let n = plan.unverified.len();
    let _ = writeln!(
        out,
        "\n{} {n} instance{} could not be compared with the hosts: {} secrets that are not set, so whether {} changed is not known:",
        style.yellow("not compared:"),
        plural(n),
        if n == 1 { "it uses" } else { "they use" },
        if n == 1 { "it" } else { "they" },
    );
    for u in &plan.unverified {
        let attrs: Vec<String> = u.attributes.iter().map(|a| format!("`{a}`")).collect();
        let _ = writeln!(
            out,
            "  {} {} ({})",
            style.yellow("?"),
            style.safe(&u.address),
            style.safe(&attrs.join(", "))
        );
    }
}

/// The parts the hosts cannot change, each on its line under its instance's address.
fn render_not_applicable(out: &mut String, plan: &Plan, style: &Style) {
    if plan.not_applicable.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        style.bold("Not applicable here (left as they are):")
    );
    for n in &plan.not_applicable {
        let _ = writeln!(
            out,
            "  {} {}  {}: not applicable here ({})",
            style.dim("-"),
            style.safe(&n.address),
            style.safe(&n.attribute),
            style.safe(&n.reason)
        );
    }
}

/// What instances are live, each on its line under its address: shown even when nothing
/// changes, so the operator sees the topology the plan found.
fn render_live(out: &mut String, plan: &Plan, style: &Style) {
    if plan.live.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", style.bold("Live:"));
    for l in &plan.live {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            style.dim("-"),
            style.safe(&l.address),
            style.safe(&l.text)
        );
    }
}

fn render_change(out: &mut String, c: &Change, style: &Style) {
    let sym = colored(style, c.action, &format!("{:>3}", symbol(c.action)));
    let _ = write!(
        out,
        "\n{sym} {} {}",
        style.bold(&style.safe(&c.address)),
        describe(c.action)
    );
    if let Some(r) = &c.reason {
        let _ = write!(out, " {}", style.dim(&format!("({})", style.safe(r))));
    }
    out.push('\n');
    let width = c.attributes.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for a in &c.attributes {
        render_attr(out, a, width, c.action, style);
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn inline(v: Option<&serde_json::Value>, style: &Style) -> String {
    match v {
        None => "(none)".into(),
        Some(serde_json::Value::String(s)) if s == "(sensitive)" || s == "(known after apply)" => {
            s.clone()
        }
        Some(serde_json::Value::String(s)) => style.safe(&format!("{s:?}")),
        Some(serde_json::Value::Object(o)) if o.contains_key("sha256") => {
            let sha = o.get("sha256").map(value_text).unwrap_or_default();
            let size = o.get("size").map(value_text).unwrap_or_default();
            format!(
                "(content of {size} bytes, sha256 {})",
                &sha[..sha.len().min(12)]
            )
        }
        Some(other) => style.safe(&other.to_string()),
    }
}

fn is_multiline(v: Option<&serde_json::Value>) -> bool {
    matches!(v, Some(serde_json::Value::String(s)) if s.contains('\n'))
}

fn render_attr(out: &mut String, a: &AttrChange, width: usize, action: Action, style: &Style) {
    let name = format!("{:width$}", format!("{}:", a.name), width = width + 1);
    let pad = "      ";
    let text_diff = !a.sensitive
        && (is_multiline(a.before.as_ref()) || is_multiline(a.after.as_ref()))
        && matches!(a.before, None | Some(serde_json::Value::String(_)))
        && matches!(a.after, None | Some(serde_json::Value::String(_)));
    if text_diff {
        let _ = writeln!(out, "{pad}{}:", a.name);
        let before = a.before.as_ref().map(value_text).unwrap_or_default();
        let after = a.after.as_ref().map(value_text).unwrap_or_default();
        render_text_diff(out, &before, &after, style);
        return;
    }
    if !a.sensitive
        && let Some((before, after)) = list_sides(a.before.as_ref(), a.after.as_ref())
    {
        let _ = writeln!(out, "{pad}{}:", a.name);
        render_list_diff(out, action, &before, &after, style);
        return;
    }
    let line = match (action, &a.before, &a.after) {
        (Action::Delete, b, _) => inline(b.as_ref(), style),
        (Action::Create | Action::Adopt, None, after) => inline(after.as_ref(), style),
        (_, before, after) if before == after => inline(after.as_ref(), style),
        (_, before, after) => format!(
            "{} {} {}",
            inline(before.as_ref(), style),
            style.arrow(),
            inline(after.as_ref(), style)
        ),
    };
    let _ = writeln!(out, "{pad}{name} {line}");
}

/// Both sides of a list attribute as text items, when it is one (a missing side is empty).
fn list_sides(
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> Option<(Vec<String>, Vec<String>)> {
    let items = |v: Option<&serde_json::Value>| match v {
        None => Some(Vec::new()),
        Some(serde_json::Value::Array(a)) => Some(a.iter().map(value_text).collect()),
        Some(_) => None,
    };
    let (b, a) = (items(before)?, items(after)?);
    (!b.is_empty() || !a.is_empty()).then_some((b, a))
}

/// A list one item a line: items kept plain, items added with `+`, items removed with `-`.
/// Lists are compared as sets of lines, so a changed item shows as one removed and one added.
fn render_list_diff(
    out: &mut String,
    action: Action,
    before: &[String],
    after: &[String],
    style: &Style,
) {
    let shown: &[String] = if action == Action::Delete {
        before
    } else {
        after
    };
    let changing = !matches!(action, Action::Create | Action::Adopt | Action::Delete);
    if shown.is_empty() && !changing {
        let _ = writeln!(out, "        (none)");
    }
    if changing {
        for item in before.iter().filter(|i| !after.contains(i)) {
            let _ = writeln!(
                out,
                "        {}",
                style.red(&format!("- {}", style.safe(item)))
            );
        }
    }
    for item in shown {
        if changing && !before.contains(item) {
            let _ = writeln!(
                out,
                "        {}",
                style.green(&format!("+ {}", style.safe(item)))
            );
        } else {
            let _ = writeln!(out, "          {}", style.safe(item));
        }
    }
}

/// A unified diff with three lines of context, cut after a few hundred lines.
fn render_text_diff(out: &mut String, before: &str, after: &str, style: &Style) {
    let diff = TextDiff::from_lines(before, after);
    let mut lines = 0;
    let mut cut = 0;
    for group in diff.grouped_ops(3) {
        let (first, last) = (&group[0], &group[group.len() - 1]);
        let (o, n) = (first.old_range().start, first.new_range().start);
        let (old_len, new_len) = (last.old_range().end - o, last.new_range().end - n);
        // As in diff -u, an empty side starts at line 0.
        let header = format!(
            "@@ -{},{old_len} +{},{new_len} @@",
            if old_len == 0 { o } else { o + 1 },
            if new_len == 0 { n } else { n + 1 },
        );
        if lines < MAX_DIFF_LINES {
            let _ = writeln!(out, "        {}", style.cyan(&header));
        }
        for op in &group {
            for change in diff.iter_changes(op) {
                if lines >= MAX_DIFF_LINES {
                    cut += 1;
                    continue;
                }
                lines += 1;
                let text = style.safe(change.value().trim_end_matches('\n'));
                let line = match change.tag() {
                    ChangeTag::Delete => style.red(&format!("-{text}")),
                    ChangeTag::Insert => style.green(&format!("+{text}")),
                    ChangeTag::Equal => format!(" {text}"),
                };
                let _ = writeln!(out, "        {line}");
                if change.missing_newline() {
                    let _ = writeln!(out, "        {}", style.dim("\\ No newline at end of file"));
                }
            }
        }
    }
    if cut > 0 {
        let _ = writeln!(
            out,
            "        {}",
            style.dim(&format!("... {cut} more diff lines"))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_facts_show_even_without_a_change() {
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "format_version": 2, "kz_version": "0", "stack": "s", "stack_digest": "d",
            "state": { "lineage": null, "serial": 0 }, "refreshed": true,
            "changes": [], "errors": [],
            "live": [{ "address": "04_redis_ha.sentinel.cache",
                       "text": "master redis-02, 2 of 2 replicas in sync, 3 sentinels agree" }],
            "summary": { "create": 0, "update": 0, "replace": 0, "delete": 0, "adopt": 0, "no_op": 4 },
            "read": { "hosts": 3, "round_trips": 3 }
        }))
        .expect("a plan");
        let text = render_plan(
            &plan,
            &Style {
                ascii: true,
                color: false,
            },
        );
        assert!(
            text.contains(
                "\nLive:\n  - 04_redis_ha.sentinel.cache: master redis-02, 2 of 2 replicas in sync, 3 sentinels agree\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("No changes. The hosts match the stack."),
            "{text}"
        );
    }
}
