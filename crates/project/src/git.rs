//! What farm asks git about a project's checkout: its commit, whether the
//! project's directory has uncommitted changes, and the commit time that
//! SOURCE_DATE_EPOCH defaults to. No git, or no checkout, is `None`.

use std::path::Path;
use std::process::{Command, Stdio};

/// The commit a project directory is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub commit: String,
    /// No uncommitted change under the project directory.
    pub clean: bool,
}

/// `git ARGS` in `root`, its trimmed stdout when it succeeds.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .current_dir(root)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub fn revision(root: &Path) -> Option<Revision> {
    let commit = git(root, &["rev-parse", "HEAD"]).filter(|r| !r.is_empty())?;
    let clean = git(root, &["status", "--porcelain", "--", "."]).is_some_and(|s| s.is_empty());
    Some(Revision { commit, clean })
}

/// The commit time of the last commit touching the project directory.
pub fn commit_time(root: &Path) -> Option<u64> {
    git(root, &["log", "-1", "--format=%ct", "--", "."])?.parse().ok()
}
