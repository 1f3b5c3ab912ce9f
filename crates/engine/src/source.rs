//! Source snapshots: a project directory, filtered by the ignore rules a
//! developer expects (node_modules, build output, .git, the app's own
//! .gitignore), copied into the store so a step sees content, never the
//! user's live tree — and so farm never modifies that tree.

use std::path::Path;

use anyhow::{Context as _, Result};
use farm_store::{Store, StoreEntry};

/// Directory names never part of a source snapshot.
const ALWAYS_SKIPPED: [&str; 6] = ["node_modules", ".git", ".farm", "__pycache__", ".pytest_cache", ".venv"];

/// Copies the filtered tree at `dir` into a store entry named `src-<label>`.
/// `extra_skip` names top-level paths (relative to `dir`) to leave out, such
/// as the frontend's output directory.
pub fn snapshot(store: &Store, dir: &Path, label: &str, extra_skip: &[&Path]) -> Result<StoreEntry> {
    let root = dir.to_path_buf();
    if !root.is_dir() {
        anyhow::bail!("{}: the {label} source directory does not exist", root.display());
    }
    let skip: Vec<std::path::PathBuf> = extra_skip.iter().map(|p| root.join(p)).collect();
    let name = format!("src-{label}");
    store
        .build_entry(&name, "source", move |dest| {
            let walker = ignore::WalkBuilder::new(&root)
                .hidden(false)
                .git_ignore(true)
                .git_global(false)
                .git_exclude(false)
                .require_git(false)
                .parents(false)
                .ignore(false)
                .sort_by_file_name(|a, b| a.cmp(b))
                .filter_entry({
                    let skip = skip.clone();
                    move |e| {
                        let n = e.file_name();
                        !ALWAYS_SKIPPED.iter().any(|s| n == *s) && !skip.iter().any(|s| s == e.path())
                    }
                })
                .build();
            for entry in walker {
                let entry = entry?;
                let rel = entry.path().strip_prefix(&root)?;
                if rel.as_os_str().is_empty() {
                    continue;
                }
                let to = dest.join(rel);
                let ft = entry.file_type().context("file type")?;
                if ft.is_dir() {
                    std::fs::create_dir_all(&to)?;
                } else if ft.is_symlink() {
                    std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
                } else if ft.is_file() {
                    std::fs::copy(entry.path(), &to).with_context(|| entry.path().display().to_string())?;
                }
                // Sockets, fifos and devices are not source.
            }
            Ok(())
        })
        .with_context(|| format!("snapshotting {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_honours_gitignore_and_fixed_skips_and_ignores_mtimes() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("src")).unwrap();
        std::fs::create_dir_all(s.join("node_modules/x")).unwrap();
        std::fs::create_dir_all(s.join("dist")).unwrap();
        std::fs::write(s.join("src/main.js"), "1").unwrap();
        std::fs::write(s.join("node_modules/x/i.js"), "1").unwrap();
        std::fs::write(s.join("dist/out.js"), "1").unwrap();
        std::fs::write(s.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(s.join("debug.log"), "noise").unwrap();
        let a = snapshot(&store, s, "web", &[Path::new("dist")]).unwrap();
        assert!(a.path.join("src/main.js").is_file());
        assert!(a.path.join(".gitignore").is_file(), "the ignore file itself is source");
        assert!(!a.path.join("node_modules").exists());
        assert!(!a.path.join("dist").exists());
        assert!(!a.path.join("debug.log").exists(), "the app's .gitignore applies");

        // Touching a file without changing it gives the same entry.
        let f = std::fs::File::options()
            .append(true)
            .open(s.join("src/main.js"))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
        let b = snapshot(&store, s, "web", &[Path::new("dist")]).unwrap();
        assert_eq!(a.file_name(), b.file_name());
        std::fs::write(s.join("src/main.js"), "2").unwrap();
        let c = snapshot(&store, s, "web", &[Path::new("dist")]).unwrap();
        assert_ne!(a.file_name(), c.file_name());
    }
}
