//! The one skip mechanism: fail in CI, say so visibly elsewhere.

use std::fmt::Display;
use std::io::Write;
use std::path::Path;

/// Whether the calling test may go on. `false` means it must return at once:
/// `condition` does not hold here, and `SKIPPED <test>: <reason>` was written
/// to stderr. With `CI=true` it panics with `reason` instead, since CI must
/// run every test. `reason` says what is missing and how to get it.
pub fn require(condition: bool, reason: impl Display) -> bool {
    if condition {
        return true;
    }
    let test = test_name();
    if in_ci() {
        panic!("{test}: {reason}; CI must run every test (CI=true), so this is a failure, not a skip");
    }
    // Straight to the stderr descriptor: libtest captures `eprintln!` of a
    // passing test and would hide the only sign that nothing ran. One write,
    // so the line does not interleave with other tests' output.
    let line = format!("\nSKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// Whether `tool` is an executable on `PATH`; a skip (a failure in CI) when not.
pub fn require_tool(tool: &str) -> bool {
    require(
        on_path(tool),
        format_args!(
            "`{tool}` is not installed (scripts/install-deps installs it: apt-get install {})",
            debian_package(tool)
        ),
    )
}

/// Whether the tests run as root; a skip (a failure in CI) when not.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    require(root, "needs root (CI runs the tests as root)")
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// libtest names each test's thread after the test's path.
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test thread>")
        .to_string()
}

fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(tool))))
}

/// The Debian package that provides `tool`, for the hint; the tool's own
/// name where they agree.
fn debian_package(tool: &str) -> &str {
    match tool {
        "htpasswd" => "apache2-utils",
        "node" => "nodejs",
        "script" => "bsdutils",
        "dockerd" | "docker" | "docker-init" => "docker.io",
        other => other,
    }
}
