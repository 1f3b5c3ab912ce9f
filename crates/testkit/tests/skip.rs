//! The skip mechanism as a test binary sees it: this binary runs one of its
//! own tests again as a child, so libtest captures output exactly as it does
//! for every other test (no `--nocapture`).

use std::process::{Command, Output};

const CHILD: &str = "child_needs_a_tool_no_machine_has";
const TOOL: &str = "farm-testkit-no-such-tool";

/// Run only by the tests below, as a child: a test whose tool is missing.
#[test]
#[ignore = "run as a child process by the tests of this file"]
fn child_needs_a_tool_no_machine_has() {
    if !farm_testkit::require_tool(TOOL) {
        return;
    }
    unreachable!("{TOOL} cannot be installed");
}

/// This binary running only the child test, with CI as given (unset when None).
fn run_child(ci: Option<&str>) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", CHILD]);
    match ci {
        Some(value) => cmd.env("CI", value),
        None => cmd.env_remove("CI"),
    };
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Proves that outside CI a missing tool ends the test as passed, with a
/// `SKIPPED <test>: <reason>` line on stderr that libtest's capture leaves
/// visible, naming the tool and how to install it.
#[test]
fn outside_ci_a_missing_tool_is_skipped_visibly() {
    let out = run_child(None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "a skip is not a failure:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child test ran: {stdout}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("SKIPPED "))
        .unwrap_or_else(|| panic!("no SKIPPED line on stderr:\n{stderr}"));
    assert!(line.starts_with(&format!("SKIPPED {CHILD}: ")), "{line}");
    assert!(
        line.contains(&format!("`{TOOL}` is not installed")) && line.contains("scripts/install-deps"),
        "{line}"
    );
}

/// Proves that with CI=true the same missing tool fails the test, naming the
/// tool and the install step.
#[test]
fn in_ci_a_missing_tool_fails_the_test() {
    let out = run_child(Some("true"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success(),
        "CI must not pass a test that ran nothing:\n{stdout}"
    );
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(
        stdout.contains(&format!("`{TOOL}` is not installed")) && stdout.contains("scripts/install-deps"),
        "the failure names the tool and the install step:\n{stdout}"
    );
    assert!(
        !stderr.contains("SKIPPED"),
        "a failure is not reported as a skip:\n{stderr}"
    );
}
