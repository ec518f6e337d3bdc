//! Rendering plans and apply progress as text: human (UTF-8 or ASCII, with or without colour)
//! or JSON. Pure functions: the binary's output layer decides where text goes.

use std::fmt::Write;
use std::time::Duration;

use similar::{ChangeTag, TextDiff};

use crate::apply::{ApplyReport, Event};
use crate::plan::{Action, AttrChange, Change, Plan};

/// How text is drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// Only ASCII characters: for terminals that garble UTF-8 (plink on a Windows console).
    pub ascii: bool,
    pub color: bool,
}

const MAX_DIFF_LINES: usize = 400;

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn cyan(&self, s: &str) -> String {
        self.paint("36", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    fn arrow(&self) -> &'static str {
        if self.ascii { "->" } else { "→" }
    }
    fn rule(&self) -> &'static str {
        if self.ascii { "--" } else { "──" }
    }

    /// Makes text from anywhere (file contents, command output) safe to print: control characters
    /// become visible escapes, and in ASCII mode so does every non-ASCII character.
    pub fn safe(&self, s: &str) -> String {
        // Most text needs no escape: return it as is without rebuilding it character by character.
        let clean =
            |c: char| (!c.is_control() || c == '\n' || c == '\t') && (!self.ascii || c.is_ascii());
        if s.chars().all(clean) {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '\n' | '\t' => out.push(c),
                c if c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if self.ascii && !c.is_ascii() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        out
    }
}

fn symbol(action: Action) -> &'static str {
    match action {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
        Action::Adopt => "=",
        Action::Verify => "?",
    }
}

fn colored(style: &Style, action: Action, s: &str) -> String {
    match action {
        Action::Create => style.green(s),
        Action::Update => style.yellow(s),
        Action::Replace | Action::Delete => style.red(s),
        Action::Adopt | Action::Verify => style.cyan(s),
    }
}

fn describe(action: Action) -> &'static str {
    match action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "will be replaced",
        Action::Delete => "will be deleted",
        Action::Adopt => "will be adopted",
        Action::Verify => "will be verified",
    }
}

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
    for e in &plan.errors {
        let _ = writeln!(out, "\n{} {}", style.red("error:"), style.safe(&e.message));
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "\n{} {}", style.yellow("warning:"), style.safe(w));
    }
    render_unverified(&mut out, plan, style);
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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
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

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn progressive(action: Action) -> &'static str {
    match action {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Replace => "replacing",
        Action::Delete => "deleting",
        Action::Adopt => "adopting",
        Action::Verify => "verifying",
    }
}

fn past(action: Action) -> &'static str {
    match action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Replace => "replaced",
        Action::Delete => "deleted",
        Action::Adopt => "adopted",
        Action::Verify => "verified",
    }
}

/// One line per apply event, for logs and non-terminal output.
pub fn render_event(e: &Event, style: &Style) -> String {
    match e {
        Event::Started { address, action } => {
            format!("{}: {}...", style.safe(address), progressive(*action))
        }
        Event::Finished {
            address,
            action,
            elapsed,
            error: None,
        } => format!(
            "{}: {} {}",
            style.safe(address),
            colored(style, *action, past(*action)),
            style.dim(&format!("({})", seconds(*elapsed)))
        ),
        Event::Finished {
            address,
            action,
            elapsed,
            error: Some(err),
        } => format!(
            "{}: {} {} after {}: {}",
            style.safe(address),
            style.red("failed to"),
            action.verb(),
            seconds(*elapsed),
            style.safe(err)
        ),
        Event::Interrupted {
            abort: false,
            running,
        } => style.yellow(&format!(
            "Interrupt: starting nothing new, waiting for {running} running change{}; interrupt again to abort {}.",
            plural(*running),
            if *running == 1 { "it" } else { "them" }
        )),
        Event::Interrupted { abort: true, running } => style.red(&format!(
            "Second interrupt: aborting {running} running change{}.",
            plural(*running)
        )),
        Event::Unreadable { address, error } => format!(
            "{}: {} {}",
            style.safe(address),
            style.red("could not be read:"),
            style.safe(error)
        ),
        Event::NotAttempted { address, because } => {
            format!(
                "{}: {}",
                style.safe(address),
                style.yellow(&style.safe(because))
            )
        }
        Event::Progress { address, message } => format!(
            "{}: {}",
            style.safe(address),
            style.dim(&style.safe(message))
        ),
    }
}

/// The closing lines of an apply.
pub fn render_report(r: &ApplyReport, style: &Style) -> String {
    let mut out = String::new();
    if !r.failed.is_empty() {
        let _ = writeln!(out, "\n{}", style.red("Failed:"));
        for (addr, err) in &r.failed {
            let _ = writeln!(out, "  {}: {}", style.safe(addr), style.safe(err));
        }
    }
    if !r.unreachable_hosts.is_empty() {
        let hosts: Vec<&str> = r.unreachable_hosts.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "{} {}",
            style.red("Unreachable hosts:"),
            hosts.join(", ")
        );
    }
    if r.interrupted {
        let _ = writeln!(
            out,
            "{}",
            style.yellow("Interrupted: nothing new was started after the interrupt.")
        );
    }
    if let Some(e) = &r.lock_lost {
        let _ = writeln!(
            out,
            "{} {}; nothing new was started",
            style.red("State lock lost:"),
            style.safe(e)
        );
    }
    if let Some(e) = &r.state_error {
        let _ = writeln!(out, "{} {}", style.red("State not saved:"), style.safe(e));
    }
    let verified = if r.verified.is_empty() {
        String::new()
    } else {
        format!(", {} verified", r.verified.len())
    };
    let _ = writeln!(
        out,
        "\n{} {} applied{verified}, {} failed, {} not attempted.",
        style.bold("Apply:"),
        r.applied.len(),
        r.failed.len(),
        r.not_attempted.len()
    );
    out
}

/// Replaces every known secret value in text bound for the screen or a log.
///
/// A value is masked whole, and in the forms output gives it: each line of a multi-line value
/// (error messages show a script's first line, the last lines of a command's output: a PEM key
/// cut there must not print its other lines), and each of those escaped as text plans (`{:?}`)
/// and JSON escape strings (`\"`, `\\`, `\n`), so that a quote or a backslash in a secret does
/// not slip it past the mask.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// The lines of a multi-line secret worth masking on their own: trimmed, and no shorter than a
/// secret may be (a `}` or an empty line would mask half of every output, and tell nothing).
fn secret_lines(secret: &str) -> impl Iterator<Item = &str> {
    let multi = secret.contains('\n') || secret.contains('\r');
    secret
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(move |l| multi && l.chars().count() >= crate::secrets::MIN_SECRET_LEN)
}

/// The text between the quotes of a quoted, escaped string.
fn unquoted(quoted: &str) -> String {
    let inner = quoted.strip_prefix('"').unwrap_or(quoted);
    inner.strip_suffix('"').unwrap_or(inner).to_string()
}

/// Every form of a secret that output may show.
fn secret_forms(secret: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for part in std::iter::once(secret).chain(secret_lines(secret)) {
        forms.push(part.to_string());
        // Text plans show strings as Rust string literals, JSON as JSON strings.
        forms.push(unquoted(&format!("{part:?}")));
        forms.push(unquoted(
            &serde_json::to_string(part).unwrap_or_else(|_| part.to_string()),
        ));
    }
    forms
}

impl Redactor {
    /// Masks `secrets` and their forms (see [`Redactor`]).
    pub fn new(secrets: Vec<String>) -> Redactor {
        Redactor::with_escape(secrets, |s| s.to_string())
    }

    /// Masks `secrets`, their forms, and those forms as `style` escapes text to print it (control
    /// characters, and non-ASCII characters in ASCII mode).
    pub fn for_style(secrets: Vec<String>, style: &Style) -> Redactor {
        Redactor::with_escape(secrets, |s| style.safe(s))
    }

    fn with_escape(secrets: Vec<String>, escape: impl Fn(&str) -> String) -> Redactor {
        let mut all: Vec<String> = Vec::new();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            for form in secret_forms(secret) {
                let escaped = escape(&form);
                if escaped != form {
                    all.push(escaped);
                }
                all.push(form);
            }
        }
        all.retain(|s| !s.is_empty());
        // Longest first, so a secret containing another (or its own line) is masked whole.
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Redactor { secrets: all }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "(sensitive)");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_text_escapes_controls_and_non_ascii_in_ascii_mode() {
        let utf8 = Style::default();
        let ascii = Style {
            ascii: true,
            color: false,
        };
        assert_eq!(utf8.safe("é\x1b[2J"), "é\\x1b[2J");
        assert_eq!(ascii.safe("é ✓"), "\\u{e9} \\u{2713}");
    }

    #[test]
    fn redactor_masks_escaped_forms() {
        let secret = r#"pa"ss\w0rd"#;
        let r = Redactor::new(vec![secret.into()]);
        // As a text plan shows it, and as JSON does.
        let text = format!("content: {:?}", format!("x={secret}"));
        assert_eq!(r.redact(&text), r#"content: "x=(sensitive)""#);
        let json = serde_json::json!({ "content": format!("x={secret}") }).to_string();
        assert_eq!(r.redact(&json), r#"{"content":"x=(sensitive)"}"#);
        // ASCII mode escapes non-ASCII characters: that form is masked too.
        let ascii = Style {
            ascii: true,
            color: false,
        };
        let r = Redactor::for_style(vec!["Grüße-\"geheim\"".into()], &ascii);
        let shown = ascii.safe(&format!("{:?}", "Grüße-\"geheim\""));
        assert_eq!(r.redact(&shown), "\"(sensitive)\"");
    }

    #[test]
    fn redactor_masks_each_line_of_a_multi_line_secret() {
        let key =
            "-----BEGIN KEY-----\r\nAAAAline1secret\nBBBBline2secret\nshort\n-----END KEY-----\n";
        let r = Redactor::new(vec![key.into()]);
        assert_eq!(r.redact(key), "(sensitive)");
        // A tail that cut the key, a first line alone, the lines joined as a note joins them.
        assert_eq!(
            r.redact("BBBBline2secret\nshort\n-----END KEY-----"),
            "(sensitive)\nshort\n(sensitive)"
        );
        assert_eq!(
            r.redact("echo '-----BEGIN KEY----- ..."),
            "echo '(sensitive) ..."
        );
        assert_eq!(
            r.redact("exit 1: AAAAline1secret / BBBBline2secret"),
            "exit 1: (sensitive) / (sensitive)"
        );
        // The text plan's escaped form of the whole.
        assert!(!r.redact(&format!("{key:?}")).contains("line"));
        // A short line alone is no secret to mask.
        assert_eq!(r.redact("short"), "short");
    }

    #[test]
    fn redactor_masks_every_occurrence() {
        let r = Redactor::new(vec!["hunter2".into(), String::new()]);
        assert_eq!(r.redact("pw=hunter2;hunter2"), "pw=(sensitive);(sensitive)");
    }
}
