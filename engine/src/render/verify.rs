//! The `kz verify` report as text: the status report operators used to write by hand, one
//! section per module in stack order, each check with its evidence, then a summary line per
//! module. ASCII marks under `--ascii` (or a locale that is not UTF-8).

use std::fmt::Write;
use std::time::Duration;

use super::{Style, seconds};
use crate::verify::{CheckResult, ModuleStatus, VerifyReport};

fn mark(style: &Style, r: CheckResult) -> String {
    let (utf8, ascii) = match r {
        CheckResult::Pass => ("✓", "[ok]  "),
        CheckResult::Fail => ("✗", "[FAIL]"),
        CheckResult::Unreachable => ("⚠", "[UNRE]"),
        CheckResult::Error => ("?", "[ERR] "),
    };
    let m = if style.ascii { ascii } else { utf8 };
    match r {
        CheckResult::Pass => style.green(m),
        CheckResult::Fail | CheckResult::Error => style.red(m),
        CheckResult::Unreachable => style.yellow(m),
    }
}

fn status(style: &Style, s: ModuleStatus) -> String {
    let l = s.label();
    match s {
        ModuleStatus::Ok => style.green(l),
        ModuleStatus::Failing => style.red(l),
        ModuleStatus::Unreachable | ModuleStatus::NotDeployed => style.yellow(l),
        ModuleStatus::Unchecked | ModuleStatus::Skipped => style.dim(l),
    }
}

fn result_word(r: CheckResult) -> &'static str {
    match r {
        CheckResult::Pass => "pass",
        CheckResult::Fail => "FAIL",
        CheckResult::Unreachable => "UNREACHABLE",
        CheckResult::Error => "ERROR",
    }
}

/// The human form of a verify report.
pub fn render_verify(report: &VerifyReport, style: &Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}{} ({}, {})",
        style.bold("Verify of stack"),
        style.bold(&style.safe(&report.stack)),
        if report.lab { " (lab)" } else { "" },
        report.started,
        seconds(Duration::from_millis(report.duration_ms))
    );
    for m in &report.modules {
        let _ = writeln!(
            out,
            "\n{} {} {}",
            style.bold(&style.safe(&m.module)),
            style.rule(),
            status(style, m.status)
        );
        if let Some(reason) = &m.reason {
            let _ = writeln!(out, "  {}", style.yellow(&style.safe(reason)));
        } else if m.checks.is_empty() {
            let _ = writeln!(out, "  {}", style.dim("no checks"));
        }
        for n in &m.notes {
            let _ = writeln!(out, "  {} {}", style.yellow("note:"), style.safe(n));
        }
        for c in &m.checks {
            let _ = writeln!(
                out,
                "  {} {} {} on {}: {}",
                mark(style, c.result),
                result_word(c.result),
                style.safe(&c.address),
                style.safe(&c.host),
                style.safe(&c.observed)
            );
            let _ = writeln!(
                out,
                "      {}",
                style.dim(&format!(
                    "at {}, took {}",
                    c.at,
                    seconds(Duration::from_millis(c.duration_ms))
                ))
            );
        }
    }
    let _ = writeln!(out, "\n{}", style.bold("Summary:"));
    let width = report
        .modules
        .iter()
        .map(|m| m.module.chars().count())
        .max()
        .unwrap_or(0);
    for m in &report.modules {
        let failing = m
            .checks
            .iter()
            .filter(|c| c.result != CheckResult::Pass)
            .count();
        let detail = if let Some(reason) = &m.reason {
            format!(" ({})", style.safe(reason))
        } else if m.checks.is_empty() {
            String::new()
        } else if failing == 0 {
            format!(" ({} of {} checks pass)", m.checks.len(), m.checks.len())
        } else {
            format!(" ({failing} of {} checks not passing)", m.checks.len())
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {}{detail}",
            style.safe(&m.module),
            status(style, m.status)
        );
    }
    let _ = writeln!(
        out,
        "\n{}",
        if report.passed {
            style.green("Verified: every module with checks passes.")
        } else {
            style.red("Not verified: see the modules above.")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{CheckReport, ModuleReport};

    fn report() -> VerifyReport {
        let check = |address: &str, host: &str, result, observed: &str| CheckReport {
            address: address.into(),
            host: host.into(),
            result,
            observed: observed.into(),
            at: "2026-01-22T10:00:00Z".into(),
            duration_ms: 120,
        };
        VerifyReport {
            format_version: 1,
            stack: "keybuzz".into(),
            started: "2026-01-22T10:00:00Z".into(),
            duration_ms: 3100,
            lab: false,
            modules: vec![
                ModuleReport {
                    module: "04_redis".into(),
                    status: ModuleStatus::Failing,
                    reason: None,
                    notes: Vec::new(),
                    checks: vec![check(
                        "04_redis.check.one-master[redis-01]",
                        "redis-01",
                        CheckResult::Fail,
                        "no master (redis-01 replica, redis-02 replica, redis-03 replica) – é",
                    )],
                },
                ModuleReport {
                    module: "07_galera".into(),
                    status: ModuleStatus::Unreachable,
                    reason: None,
                    notes: Vec::new(),
                    checks: vec![check(
                        "07_galera.check.synced[maria-01]",
                        "maria-01",
                        CheckResult::Unreachable,
                        "maria-01 (10.0.0.170): connect: timed out after 3s",
                    )],
                },
                ModuleReport {
                    module: "06_minio".into(),
                    status: ModuleStatus::Skipped,
                    reason: Some("skipped in the lab: no Debian package of MinIO".into()),
                    notes: Vec::new(),
                    checks: Vec::new(),
                },
                ModuleReport {
                    module: "10_lb".into(),
                    status: ModuleStatus::NotDeployed,
                    reason: None,
                    notes: Vec::new(),
                    checks: Vec::new(),
                },
            ],
            passed: false,
        }
    }

    #[test]
    fn the_ascii_report_names_every_module_and_check_in_ascii_only() {
        let text = render_verify(
            &report(),
            &Style {
                ascii: true,
                color: false,
            },
        );
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains("04_redis -- FAILING"), "{text}");
        assert!(
            text.contains("[FAIL] FAIL 04_redis.check.one-master[redis-01] on redis-01: no master")
        );
        assert!(text.contains("[UNRE] UNREACHABLE 07_galera.check.synced[maria-01] on maria-01"));
        assert!(
            text.contains("      at 2026-01-22T10:00:00Z, took 0.12s"),
            "{text}"
        );
        assert!(text.contains("  10_lb      NOT DEPLOYED\n"), "{text}");
        assert!(
            text.contains(
                "06_minio -- SKIPPED\n  skipped in the lab: no Debian package of MinIO\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  06_minio   SKIPPED (skipped in the lab: no Debian package of MinIO)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  07_galera  UNREACHABLE (1 of 1 checks not passing)"),
            "{text}"
        );
        assert!(text.contains("Not verified"), "{text}");
    }

    #[test]
    fn the_utf8_report_uses_marks() {
        let text = render_verify(&report(), &Style::default());
        assert!(text.contains("✗ FAIL 04_redis"), "{text}");
        assert!(text.contains("04_redis ── FAILING"), "{text}");
    }
}
