//! Rendering plans and apply progress as text: human (UTF-8 or ASCII, with or without colour)
//! or JSON. Pure functions: the binary's output layer decides where text goes.

mod apply;
mod drill;
mod plan;
mod redact;
mod verify;

use std::fmt::Write;
use std::time::Duration;

use crate::plan::Action;

pub use apply::{render_event, render_report};
pub use drill::render_drills;
pub use plan::render_plan;
pub use redact::Redactor;
pub use verify::render_verify;

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

/// The modules a lab run left out, each with its reason, and the modules that depend on them:
/// shown by plan and apply, so that a module missing from the lab is never silent.
pub(crate) fn render_skipped(
    out: &mut String,
    skipped: &[crate::overlay::SkippedModule],
    resources: &[crate::overlay::SkippedResource],
    style: &Style,
) {
    if skipped.is_empty() && resources.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", style.bold("Skipped in the lab:"));
    for m in skipped {
        let _ = writeln!(
            out,
            "  {} {}: {} ({} instance{} left out)",
            style.yellow(if style.ascii { "~" } else { "⊘" }),
            style.safe(&m.module),
            style.yellow(&style.safe(&m.said())),
            m.instances,
            plural(m.instances)
        );
        for (note, d) in m.dependent_notes().iter().zip(&m.dependents) {
            let _ = writeln!(
                out,
                "    {}: its checks do not hold {} here",
                style.safe(note),
                style.safe(d)
            );
        }
    }
    for r in resources {
        let _ = writeln!(
            out,
            "  {} {}: {} ({} instance{} left out)",
            style.yellow(if style.ascii { "~" } else { "⊘" }),
            style.safe(&r.address()),
            style.yellow(&style.safe(&r.said())),
            r.instances,
            plural(r.instances)
        );
    }
}

pub(crate) fn symbol(action: Action) -> &'static str {
    match action {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
        Action::Adopt => "=",
        Action::Verify => "?",
    }
}

pub(crate) fn colored(style: &Style, action: Action, s: &str) -> String {
    match action {
        Action::Create => style.green(s),
        Action::Update => style.yellow(s),
        Action::Replace | Action::Delete => style.red(s),
        Action::Adopt | Action::Verify => style.cyan(s),
    }
}

pub(crate) fn describe(action: Action) -> &'static str {
    match action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "will be replaced",
        Action::Delete => "will be deleted",
        Action::Adopt => "will be adopted",
        Action::Verify => "will be verified",
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

pub(crate) fn progressive(action: Action) -> &'static str {
    match action {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Replace => "replacing",
        Action::Delete => "deleting",
        Action::Adopt => "adopting",
        Action::Verify => "verifying",
    }
}

pub(crate) fn past(action: Action) -> &'static str {
    match action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Replace => "replaced",
        Action::Delete => "deleted",
        Action::Adopt => "adopted",
        Action::Verify => "verified",
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
}
