//! The drill journal as text: per drill, each step with its offset from the drill's start, its
//! outcome, what it is about and what was seen, then the verdict. ASCII marks under `--ascii`.

use std::fmt::Write;
use std::time::Duration;

use super::{Style, seconds};
use crate::drill::{DrillJournal, DrillRun, Outcome, Step};

fn mark(style: &Style, o: Outcome) -> String {
    let (utf8, ascii) = match o {
        Outcome::Pass => ("✓", "[ok]  "),
        Outcome::Fail => ("✗", "[FAIL]"),
        Outcome::Error => ("?", "[ERR] "),
        Outcome::Skipped => ("-", "[skip]"),
        Outcome::Recorded => ("•", "[rec] "),
    };
    let m = if style.ascii { ascii } else { utf8 };
    match o {
        Outcome::Pass => style.green(m),
        Outcome::Fail | Outcome::Error => style.red(m),
        Outcome::Skipped => style.yellow(m),
        Outcome::Recorded => style.dim(m),
    }
}

fn word(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "FAIL",
        Outcome::Error => "ERROR",
        Outcome::Skipped => "skipped",
        Outcome::Recorded => "recorded",
    }
}

fn ms(v: u64) -> String {
    seconds(Duration::from_millis(v))
}

fn step_line(out: &mut String, style: &Style, s: &Step) {
    let after = match (s.after_ms, s.step.as_str()) {
        (Some(a), "expect") => format!(" {} after the fault", ms(a)),
        (Some(a), "steady_again") => format!(" {} after the restore", ms(a)),
        (Some(a), _) => format!(" after {}", ms(a)),
        (None, _) => String::new(),
    };
    let _ = writeln!(
        out,
        "  {:>8} {} {:<12} {} {}{}",
        format!("+{}", ms(s.start_ms)),
        mark(style, s.outcome),
        s.step,
        style.safe(&s.name),
        word(s.outcome),
        after,
    );
    let _ = writeln!(
        out,
        "           {}",
        style.dim(&format!(
            "{} (took {})",
            style.safe(&s.observed),
            ms(s.duration_ms)
        ))
    );
}

fn drill_block(out: &mut String, style: &Style, d: &DrillRun) {
    let _ = writeln!(
        out,
        "\n{} {} {}{}",
        style.bold(&format!("Drill {}", style.safe(&d.drill))),
        style.rule(),
        style.safe(&d.module),
        d.description
            .as_deref()
            .map(|t| format!(" ({})", style.safe(t)))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "  {}", style.dim(&format!("started {}", d.started)));
    for s in &d.steps {
        step_line(out, style, s);
    }
    let verdict = if d.passed {
        style.green(&format!("PASSED in {}", ms(d.duration_ms)))
    } else if d.interrupted {
        style.red(&format!(
            "INTERRUPTED after {} (the restore ran)",
            ms(d.duration_ms)
        ))
    } else {
        style.red(&format!("FAILED in {}", ms(d.duration_ms)))
    };
    let _ = writeln!(out, "  {verdict}");
}

/// The human form of a drill journal.
pub fn render_drills(journal: &DrillJournal, style: &Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}{}",
        style.bold("Drills of stack"),
        style.bold(&style.safe(&journal.stack)),
        if journal.lab { " (lab)" } else { "" },
    );
    for d in &journal.drills {
        drill_block(&mut out, style, d);
    }
    for d in &journal.skipped {
        let _ = writeln!(
            out,
            "\n{} {} ({}): {}",
            style.bold("Drill"),
            style.bold(&style.safe(&d.name)),
            style.safe(&d.module),
            style.yellow(&style.safe(&d.reason))
        );
    }
    let passed = journal.drills.iter().filter(|d| d.passed).count();
    let failed = journal.drills.len() - passed;
    let skipped = if journal.skipped.is_empty() {
        String::new()
    } else {
        format!(", {} skipped in the lab", journal.skipped.len())
    };
    let line = format!("\nDrills: {passed} passed, {failed} failed{skipped}.");
    let _ = writeln!(
        out,
        "{}",
        if journal.passed {
            style.green(&line)
        } else {
            style.red(&line)
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::SkippedDrill;

    fn journal() -> DrillJournal {
        let step = |step: &str, name: &str, outcome, observed: &str, after| Step {
            step: step.into(),
            name: name.into(),
            start_ms: 1500,
            duration_ms: 200,
            outcome,
            observed: observed.into(),
            after_ms: after,
        };
        DrillJournal {
            format_version: 1,
            stack: "keybuzz".into(),
            lab: true,
            drills: vec![DrillRun {
                drill: "quorum-loss".into(),
                module: "04_redis".into(),
                description: Some("two of three down".into()),
                started: "2026-01-22T10:00:00Z".into(),
                duration_ms: 9000,
                passed: false,
                interrupted: false,
                steps: vec![
                    step(
                        "expect",
                        "04_redis.check.quorum",
                        Outcome::Fail,
                        "FAIL on h1: NOQUORUM – é",
                        None,
                    ),
                    step(
                        "expect",
                        "04_redis.check.up",
                        Outcome::Pass,
                        "ok",
                        Some(6200),
                    ),
                    step("restore", "stop_host", Outcome::Pass, "h2: started", None),
                ],
            }],
            skipped: vec![SkippedDrill {
                name: "minio-node-loss".into(),
                module: "06_minio".into(),
                reason: "skipped in the lab: no Debian package of MinIO".into(),
            }],
            passed: false,
        }
    }

    #[test]
    fn the_ascii_journal_shows_each_step_its_time_and_what_was_seen() {
        let text = render_drills(
            &journal(),
            &Style {
                ascii: true,
                color: false,
            },
        );
        assert!(text.is_ascii(), "{text}");
        assert!(
            text.contains("   +1.50s [FAIL] expect       04_redis.check.quorum FAIL\n"),
            "{text}"
        );
        assert!(text.contains("FAIL on h1: NOQUORUM"), "{text}");
        assert!(text.contains("pass 6.20s after the fault"), "{text}");
        assert!(text.contains("FAILED in 9.00s"), "{text}");
        assert!(
            text.contains(
                "Drill minio-node-loss (06_minio): skipped in the lab: no Debian package of MinIO"
            ),
            "{text}"
        );
        assert!(
            text.contains("Drills: 0 passed, 1 failed, 1 skipped in the lab."),
            "{text}"
        );
    }

    #[test]
    fn the_utf8_journal_uses_marks() {
        let text = render_drills(&journal(), &Style::default());
        assert!(text.contains("✗ expect"), "{text}");
        assert!(text.contains("Drill quorum-loss ── 04_redis"), "{text}");
    }
}
