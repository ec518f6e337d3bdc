//! Apply progress and its closing report as text.

use std::fmt::Write;

use super::{Style, colored, past, plural, progressive, render_skipped, seconds};
use crate::apply::{ApplyReport, Event};

/// One line per apply event, for logs and non-terminal output.
pub fn render_event(e: &Event, style: &Style) -> String {
    match e {
        Event::Started { address, action } => {
            format!("{}: {}...", style.safe(address), progressive(*action))
        }
        Event::Finished {
            address,
            elapsed,
            error: None,
            note: Some(note),
            ..
        } => format!(
            "{}: {} {}",
            style.safe(address),
            style.cyan(&style.safe(note)),
            style.dim(&format!("({})", seconds(*elapsed)))
        ),
        Event::Finished {
            address,
            action,
            elapsed,
            error: None,
            note: None,
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
            ..
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

/// What was not attempted, grouped by what held it back (a failed check holding back a
/// module that depends on its module reads: `01_app.check.ready[h1] failed: 10_lb.lb.front`).
fn render_held_back(out: &mut String, r: &ApplyReport, style: &Style) {
    let mut by_cause: Vec<(&str, Vec<&str>)> = Vec::new();
    for (addr, because) in &r.not_attempted {
        let cause = because
            .strip_prefix("not attempted because ")
            .unwrap_or(because);
        match by_cause.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, list)) => list.push(addr),
            None => by_cause.push((cause, vec![addr])),
        }
    }
    if by_cause.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", style.yellow("Held back:"));
    for (cause, addrs) in by_cause {
        let _ = writeln!(
            out,
            "  {}: {}",
            style.safe(cause),
            style.safe(&addrs.join(", "))
        );
    }
}

/// The closing lines of an apply.
pub fn render_report(r: &ApplyReport, style: &Style, title: &str) -> String {
    let mut out = String::new();
    if !r.failed.is_empty() {
        let _ = writeln!(out, "\n{}", style.red("Failed:"));
        for (addr, err) in &r.failed {
            let _ = writeln!(out, "  {}: {}", style.safe(addr), style.safe(err));
        }
    }
    render_held_back(&mut out, r, style);
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
    render_skipped(&mut out, &r.skipped_modules, &r.skipped_resources, style);
    let verified = if r.verified.is_empty() {
        String::new()
    } else {
        format!(", {} verified", r.verified.len())
    };
    let _ = writeln!(
        out,
        "\n{} {} applied{verified}, {} failed, {} not attempted.",
        style.bold(&format!("{title}:")),
        r.applied.len(),
        r.failed.len(),
        r.not_attempted.len()
    );
    out
}
