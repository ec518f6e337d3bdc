//! The corpus of bad stacks in `tests/bad-stacks/`: every case directory is a stack that kz must
//! reject. For each case (in sorted order), a copy in a fresh temporary directory is checked with
//! `kz validate .` and `kz plan --refresh=false .`: both must exit 1, print nothing on standard
//! output, print exactly `expected.txt` on standard error, never panic, and write nothing.
//!
//! `KZ_BLESS=1 cargo test --test bad_stacks` rewrites every `expected.txt` from the actual output
//! of `kz validate .` (review the diff before committing it).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The file of a case holding the expected standard error; it is not part of the stack.
const EXPECTED: &str = "expected.txt";

/// The corpus must cover at least this many kinds of mistakes.
const MIN_CASES: usize = 34;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-stacks")
}

fn blessing() -> bool {
    std::env::var_os("KZ_BLESS").is_some_and(|v| v == "1")
}

/// The case directories, sorted by name.
fn cases() -> Vec<PathBuf> {
    let dir = corpus_dir();
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

/// Copies a case into `to`, leaving out `expected.txt`.
fn copy_case(from: &Path, to: &Path) {
    copy_dir(from, to, true);
}

fn copy_dir(from: &Path, to: &Path, top: bool) {
    for entry in
        fs::read_dir(from).unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()))
    {
        let entry = entry.expect("directory entry");
        let name = entry.file_name();
        if top && name == OsStr::new(EXPECTED) {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            fs::create_dir(&dst).unwrap_or_else(|e| panic!("cannot create {}: {e}", dst.display()));
            copy_dir(&src, &dst, false);
        } else if kind.is_file() {
            fs::copy(&src, &dst).unwrap_or_else(|e| panic!("cannot copy {}: {e}", src.display()));
        } else {
            panic!(
                "{}: only files and directories may be in a case",
                src.display()
            );
        }
    }
}

/// Every path under `dir` with the content of files, to tell whether kz wrote anything.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()))
        {
            let path = entry.expect("directory entry").path();
            let rel = path.strip_prefix(dir).expect("under dir").to_path_buf();
            if path.is_dir() {
                todo.push(path);
                out.push((rel, None));
            } else {
                let bytes = fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.push((rel, Some(bytes)));
            }
        }
    }
    out.sort();
    out
}

/// Runs kz in `dir` with a fixed environment: no secrets, a UTF-8 locale, no colours.
fn kz(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kz"));
    cmd.arg("--color").arg("never").args(args).current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"KZ_SECRET_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("KZ_TEST_SURELY_UNSET_VAR")
        .env_remove("LC_ALL")
        .env_remove("LC_CTYPE")
        .env_remove("NO_COLOR")
        .env("LANG", "C.UTF-8")
        .env("RUST_BACKTRACE", "0");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run kz {}: {e}", args.join(" ")))
}

/// Text indented under a heading, each line behind `|` so that empty lines show.
fn block(text: &str) -> String {
    if text.is_empty() {
        return "    (empty)\n".to_string();
    }
    let mut out: String = text.lines().map(|l| format!("    |{l}\n")).collect();
    if !text.ends_with('\n') {
        out.push_str("    (no newline at end)\n");
    }
    out
}

/// Where two texts first differ, as a line number.
fn first_difference(expected: &str, actual: &str) -> String {
    let mut e = expected.split_inclusive('\n');
    let mut a = actual.split_inclusive('\n');
    let mut line = 1;
    loop {
        match (e.next(), a.next()) {
            (Some(x), Some(y)) if x == y => line += 1,
            (None, None) => return "texts differ only in line endings".to_string(),
            _ => return format!("first difference at line {line}"),
        }
    }
}

/// What is wrong with one run of kz, measured against the expectations shared by validate and plan.
fn check_run(out: &Output, expected: Option<&str>) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.code() != Some(1) {
        let status = match out.status.code() {
            Some(c) => format!("exit code {c}"),
            None => out.status.to_string(),
        };
        problems.push(format!("{status}, expected exit code 1"));
    }
    if stderr.contains("panicked") {
        problems.push("kz panicked".to_string());
    }
    if !stdout.is_empty() {
        problems.push(format!("standard output is not empty:\n{}", block(&stdout)));
    }
    match expected {
        Some(expected) if stderr != expected => problems.push(format!(
            "standard error differs from {EXPECTED} ({}):\n  expected:\n{}  actual:\n{}",
            first_difference(expected, &stderr),
            block(expected),
            block(&stderr)
        )),
        _ if !problems.is_empty() => {
            problems.push(format!("standard error:\n{}", block(&stderr)));
        }
        _ => {}
    }
    problems
}

/// Runs both commands on one case; returns its problems and the standard error of validate.
fn run_case(case_dir: &Path, expected: Option<&str>) -> (Vec<String>, String) {
    let tmp = tempfile::tempdir().expect("temp dir");
    copy_case(case_dir, tmp.path());
    let before = snapshot(tmp.path());
    let mut problems = Vec::new();

    let validate = kz(tmp.path(), &["validate", "."]);
    let validate_stderr = String::from_utf8_lossy(&validate.stderr).into_owned();
    for p in check_run(&validate, expected) {
        problems.push(format!("`kz validate .`: {p}"));
    }

    // Plan must fail the same way as validate, before touching any state.
    let plan = kz(tmp.path(), &["plan", "--refresh=false", "."]);
    let plan_problems = check_run(&plan, expected);
    let same_as_validate = plan.status.code() == validate.status.code()
        && plan.stdout == validate.stdout
        && plan.stderr == validate.stderr;
    if !plan_problems.is_empty() && same_as_validate {
        problems.push("`kz plan --refresh=false .`: the same output as validate".to_string());
    } else {
        for p in plan_problems {
            problems.push(format!("`kz plan --refresh=false .`: {p}"));
        }
    }

    if tmp.path().join(".kz").exists() {
        problems.push("kz created a .kz directory".to_string());
    }
    let after = snapshot(tmp.path());
    if before != after {
        let mut changed: Vec<String> = after
            .iter()
            .filter(|e| !before.contains(e))
            .chain(before.iter().filter(|e| !after.contains(e)))
            .map(|(p, _)| p.display().to_string())
            .collect();
        changed.sort();
        changed.dedup();
        problems.push(format!(
            "kz changed the stack directory: {}",
            changed.join(", ")
        ));
    }
    (problems, validate_stderr)
}

#[test]
fn every_bad_stack_is_rejected_with_its_expected_message() {
    let cases = cases();
    assert!(
        cases.len() >= MIN_CASES,
        "expected at least {MIN_CASES} cases in {}, found {}",
        corpus_dir().display(),
        cases.len()
    );
    let bless = blessing();
    let mut failed: Vec<String> = Vec::new();
    let mut blessed: Vec<String> = Vec::new();
    for case_dir in &cases {
        let case = case_dir
            .file_name()
            .expect("case name")
            .to_string_lossy()
            .into_owned();
        let expected_path = case_dir.join(EXPECTED);
        let expected = fs::read_to_string(&expected_path).ok();
        let mut problems = Vec::new();
        if bless {
            let (_, actual) = run_case(case_dir, None);
            if expected.as_deref() != Some(actual.as_str()) {
                fs::write(&expected_path, &actual)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", expected_path.display()));
                blessed.push(case.clone());
            }
            problems.extend(run_case(case_dir, Some(&actual)).0);
        } else if expected.is_none() {
            problems.push(format!("no {EXPECTED}: write one, or run with KZ_BLESS=1"));
        } else {
            problems.extend(run_case(case_dir, expected.as_deref()).0);
        }
        if !problems.is_empty() {
            failed.push(format!("=== {case}\n- {}", problems.join("\n- ")));
        }
    }
    let mut report = String::new();
    if !blessed.is_empty() {
        report.push_str(&format!(
            "KZ_BLESS=1 rewrote {EXPECTED} of: {}\n\n",
            blessed.join(", ")
        ));
    }
    assert!(
        failed.is_empty(),
        "{report}{} of {} bad stacks failed:\n\n{}\n",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}
