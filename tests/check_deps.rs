//! `scripts/check-deps`, the list of every external program the build, the
//! tests and the demo run: it names each missing program with what installs
//! it and fails, and passes on a machine that has them all.
//!
//! A missing program is made by hiding one: the script runs with a `PATH`
//! of one temporary directory holding a symlink to every program of the real
//! `PATH` but that one.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-deps")
}

fn check_deps(path: &OsString) -> Output {
    let out = Command::new(script())
        .env("PATH", path)
        .output()
        .expect("scripts/check-deps runs");
    eprintln!(
        "$ PATH={} scripts/check-deps\n--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        path.to_string_lossy(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `missing: …` lines of a run.
fn missing_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("missing: "))
        .map(str::to_string)
        .collect()
}

/// A directory of symlinks to every executable of `PATH` except `hidden`,
/// the first of each name winning, as in a `PATH` lookup.
fn path_without(hidden: &str, dir: &Path) -> OsString {
    let real = std::env::var_os("PATH").expect("PATH is set");
    let mut seen = HashSet::new();
    for d in std::env::split_paths(&real) {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let executable = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0);
            if name == hidden || !executable || !seen.insert(name.clone()) {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), dir.join(&name)).unwrap();
        }
    }
    assert!(seen.contains(&OsString::from("bash")), "bash is on PATH");
    dir.as_os_str().to_owned()
}

/// Proves a hidden program makes the check fail with one line naming it and
/// its Debian package (for `skopeo`, and `dockerd` of docker.io) or the
/// rustup component (for clippy),
/// and that a machine with everything passes with a summary. Where the
/// real machine lacks something (never in CI, where that fails the test),
/// the hidden-program cases are still checked: the hidden program must be
/// named, and nothing may be reported missing that the real `PATH` has.
#[test]
fn a_hidden_program_is_named_and_a_complete_machine_passes() {
    let real_path = std::env::var_os("PATH").expect("PATH is set");
    let full = check_deps(&real_path);
    let genuinely_missing = missing_lines(&full);
    if full.status.success() {
        assert!(genuinely_missing.is_empty(), "{genuinely_missing:?}");
        let summary = String::from_utf8_lossy(&full.stdout);
        assert!(summary.starts_with("check-deps: all "), "{summary}");
    } else {
        assert_eq!(full.status.code(), Some(1));
        assert!(!genuinely_missing.is_empty(), "a failure names what is missing");
        // Fails in CI; elsewhere says so and goes on with the hidden-program cases.
        let names: Vec<&str> = genuinely_missing
            .iter()
            .filter_map(|l| l.strip_prefix("missing: ")?.split(" (").next())
            .collect();
        farm_testkit::require(
            false,
            format_args!(
                "this machine lacks {} (scripts/install-deps installs them), so the complete-machine case \
                 cannot pass here; the hidden-program cases still run",
                names.join(", ")
            ),
        );
    }

    for (hidden, expected) in [
        (
            "skopeo",
            "missing: skopeo (Debian package skopeo; scripts/install-deps installs it)",
        ),
        (
            "dockerd",
            "missing: dockerd (Debian package docker.io; scripts/install-deps installs it)",
        ),
        (
            "cargo-clippy",
            "missing: cargo-clippy (rustup component add clippy; scripts/install-deps adds it when rustup is installed)",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = check_deps(&path_without(hidden, dir.path()));
        assert_eq!(out.status.code(), Some(1), "hiding {hidden} fails the check");
        let lines = missing_lines(&out);
        assert!(lines.iter().any(|l| l == expected), "hiding {hidden}: {lines:?}");
        let unexpected: Vec<&String> = lines
            .iter()
            .filter(|l| *l != expected && !genuinely_missing.contains(l))
            .collect();
        assert!(
            unexpected.is_empty(),
            "hiding {hidden} also reported programs the real PATH has: {unexpected:?}"
        );
        let summary = String::from_utf8_lossy(&out.stderr);
        assert!(
            summary.contains(&format!("check-deps: {} of ", lines.len())),
            "the summary counts the missing lines: {summary}"
        );
    }
}
