//! The README's blocks run as written, in order (issue 11, items 21 and 22): the quick start on a
//! copy of the demo stack, and the Hetzner block against the API stand-in. Only what needs a
//! release build changes: `cargo build` lines are left out and `target/release/` is where the
//! test's binaries are.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shell lines of the first ```sh block after `heading` in README.md.
fn block(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let after = &readme[readme.find(heading).expect("heading")..];
    let start = after.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let body = &after[start..];
    let end = body.find("```").expect("the block's end");
    body[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("cargo build"))
        .map(String::from)
        .collect()
}

/// Where the test's binaries are (`target/debug`, or the test's own target directory).
fn bin_dir() -> PathBuf {
    Path::new(support::kz_bin())
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// Runs the lines in a `sh -e` in `dir`, with `target/release/` pointing at the test's binaries.
fn run(lines: &[String], dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let script: String = lines
        .iter()
        .map(|l| l.replace("target/release/", &format!("{}/", bin_dir().display())))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut c = Command::new("sh");
    c.arg("-e").arg("-c").arg(&script).current_dir(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    c.env_remove("KZ_SECRET_REDIS_PASSWORD");
    c.output().expect("sh")
}

#[test]
fn the_quick_start_works_as_written() {
    let repo = tempfile::tempdir().expect("dir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/demo");
    let dst = repo.path().join("stacks/demo");
    std::fs::create_dir_all(repo.path().join("stacks")).expect("mkdir");
    let st = Command::new("cp")
        .args(["-r", &src.display().to_string(), &dst.display().to_string()])
        .status()
        .expect("cp");
    assert!(st.success());
    let _ = std::fs::remove_dir_all(dst.join(".kz"));
    let lines = block("## Quick start");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("export KZ_SECRET_REDIS_PASSWORD"))
    );
    let out = run(&lines, repo.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Each step did what its comment says.
    assert!(
        stdout.contains("No changes. The hosts match the stack."),
        "{stdout}"
    );
    assert!(
        stdout.contains("+nameserver") || stdout.contains("-nameserver 9.9.9.9"),
        "{stdout}"
    );
    assert!(stdout.contains("Destroy:"), "{stdout}");
    assert!(!stderr.contains("warning: secrets not set"), "{stderr}");
    assert!(
        !dst.join(".kz").exists(),
        "the clean-up line left state behind"
    );
}

#[test]
fn the_hetzner_block_works_as_written_and_never_uses_a_real_token() {
    let stand_in = bin_dir().join("kz-test-hcloud");
    assert!(
        stand_in.exists(),
        "{} is built by cargo test --workspace",
        stand_in.display()
    );
    let repo = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(repo.path().join("tests/stacks")).expect("mkdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/keybuzz-lb");
    let st = Command::new("cp")
        .args([
            "-r",
            &src.display().to_string(),
            &repo
                .path()
                .join("tests/stacks/keybuzz-lb")
                .display()
                .to_string(),
        ])
        .status()
        .expect("cp");
    assert!(st.success());
    // The block writes /tmp/keybuzz-lb and /tmp/hcloud.env: its own names, as a user runs it.
    let lines = block("## Hetzner load balancers");
    // A real token in the user's shell must never be used: the block unsets it first.
    let out = run(
        &lines,
        repo.path(),
        &[
            ("HCLOUD_TOKEN", "a-real-token-that-must-not-be-sent"),
            ("KZ_HCLOUD_ENDPOINT", "https://example.invalid/v1"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Plan: 4 to create"), "{stdout}");
    assert!(stdout.contains("Apply: 4 applied, 0 failed"), "{stdout}");
    assert!(
        !Path::new("/tmp/keybuzz-lb").exists(),
        "the clean-up line left it"
    );
}
