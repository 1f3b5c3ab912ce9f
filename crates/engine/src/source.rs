//! Source snapshots: a project directory, filtered by the ignore rules a
//! developer expects (node_modules, build output, .git, the app's own
//! .gitignore), copied into the store so a step sees content, never the
//! user's live tree — and so farm never modifies that tree.
//!
//! The tree is read beneath the project root without following any symlink
//! (farm-hostfs): a source directory that is, or passes through, a symlink
//! is refused, and a symlink inside it is kept as a symlink only when it
//! resolves inside the snapshot (spec/engine.md, "Sources").

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use farm_hostfs::{self as hostfs, Beneath, Kind, Walk};
use farm_store::{Store, StoreEntry};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

/// Directory names never part of a source snapshot.
const ALWAYS_SKIPPED: [&str; 6] = ["node_modules", ".git", ".farm", "__pycache__", ".pytest_cache", ".venv"];

/// Copies the filtered tree at `rel` below the project root `root` (the
/// caller's canonical path) into a store entry named `src-<label>`.
/// `extra_skip` names top-level paths (relative to `rel`) to leave out, such
/// as the frontend's output directory.
pub fn snapshot(store: &Store, root: &Path, rel: &Path, label: &str, extra_skip: &[&Path]) -> Result<StoreEntry> {
    let project = Beneath::open_dir(root)?;
    let dir = match project.open_subdir(rel) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => {
            anyhow::bail!(
                "{}: the {label} source directory does not exist",
                root.join(rel).display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("the {label} source directory {}", rel.display())),
    };
    let skip: Vec<PathBuf> = extra_skip.iter().map(|p| p.to_path_buf()).collect();
    let name = format!("src-{label}");
    store
        .build_entry(&name, "source", move |dest| copy_filtered(&dir, &skip, dest))
        .map_err(|e| match e {
            // Our own error, said once (the store's wrapper would repeat it).
            farm_store::StoreError::Build { source, .. } => anyhow::anyhow!(source),
            other => other.into(),
        })
        .with_context(|| format!("snapshotting {}", root.join(rel).display()))
}

/// The walk behind [`snapshot`]: `.gitignore` files apply to their own
/// directory and below, the deepest match deciding (as git and ripgrep do).
fn copy_filtered(dir: &Beneath, skip: &[PathBuf], dest: &Path) -> Result<()> {
    let mut ignores: HashMap<PathBuf, Gitignore> = HashMap::new();
    if let Some(g) = gitignore(dir, Path::new(""))? {
        ignores.insert(PathBuf::new(), g);
    }
    let mut links = Vec::new();
    dir.walk(|e| -> Result<Walk> {
        let name = e.file_name();
        if ALWAYS_SKIPPED.iter().any(|s| name == *s) || skip.contains(&e.rel) {
            return Ok(Walk::Skip);
        }
        if ignored(&ignores, &e.rel, e.meta.kind == Kind::Dir) {
            return Ok(Walk::Skip);
        }
        let to = dest.join(&e.rel);
        match e.meta.kind {
            Kind::Dir => {
                std::fs::create_dir(&to).with_context(|| to.display().to_string())?;
                if let Some(g) = gitignore(dir, &e.rel)? {
                    ignores.insert(e.rel.clone(), g);
                }
            }
            Kind::File => {
                let mut from = e.open_file()?;
                let mut out = std::fs::File::create_new(&to).with_context(|| to.display().to_string())?;
                std::io::copy(&mut from, &mut out).with_context(|| dir.shown(&e.rel).display().to_string())?;
                if e.meta.is_executable() {
                    use std::os::unix::fs::PermissionsExt;
                    out.set_permissions(std::fs::Permissions::from_mode(0o755))?;
                }
            }
            Kind::Symlink => {
                let target = e.link.clone().expect("a symlink has a target");
                std::os::unix::fs::symlink(&target, &to).with_context(|| to.display().to_string())?;
                links.push((e.rel.clone(), target));
            }
            // Sockets, fifos and devices are not source.
            Kind::Other => {}
        }
        Ok(Walk::Descend)
    })?;
    // Checked on the copy, which nothing else writes, so the answer cannot change under us.
    let copy = Beneath::open_dir(dest)?;
    for (link, target) in links {
        if let Err(e) = copy.check_link(&link, &target) {
            return Err(match e {
                hostfs::Error::LinkLeaves { .. } => anyhow::anyhow!(
                    "{}: is a symlink to {}, which leaves the directory {}\nhint: farm snapshots only what is inside it; copy the file in, or point the link inside",
                    dir.shown(&link).display(),
                    target.display(),
                    dir.path().display()
                ),
                other => other.into(),
            });
        }
    }
    Ok(())
}

/// The rules of `<rel>/.gitignore`, read without following a link (a
/// `.gitignore` that is a symlink contributes no rules). Lines that are not
/// valid patterns are skipped, as git skips them.
fn gitignore(dir: &Beneath, rel: &Path) -> Result<Option<Gitignore>> {
    let file = rel.join(".gitignore");
    let text = match dir.read(&file) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.is_not_found() => return Ok(None),
        Err(hostfs::Error::Symlink { .. } | hostfs::Error::WrongType { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut b = GitignoreBuilder::new(Path::new("/").join(rel));
    for line in text.lines() {
        let _ = b.add_line(None, line);
    }
    Ok(Some(b.build()?))
}

/// Whether the `.gitignore` files above `rel` leave it out; the deepest one that matches decides.
fn ignored(ignores: &HashMap<PathBuf, Gitignore>, rel: &Path, is_dir: bool) -> bool {
    let abs = Path::new("/").join(rel);
    for dir in rel.ancestors().skip(1) {
        if let Some(g) = ignores.get(dir) {
            match g.matched(&abs, is_dir) {
                Match::None => continue,
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
            }
        }
    }
    false
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
        let a = snapshot(&store, s, Path::new(""), "web", &[Path::new("dist")]).unwrap();
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
        let b = snapshot(&store, s, Path::new(""), "web", &[Path::new("dist")]).unwrap();
        assert_eq!(a.file_name(), b.file_name());
        std::fs::write(s.join("src/main.js"), "2").unwrap();
        let c = snapshot(&store, s, Path::new(""), "web", &[Path::new("dist")]).unwrap();
        assert_ne!(a.file_name(), c.file_name());
    }

    /// Nested .gitignore files apply below their directory and the deepest
    /// match decides, so a child can re-include what its parent ignores.
    #[test]
    fn nested_gitignores_apply_below_their_directory() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("a/b")).unwrap();
        std::fs::write(s.join(".gitignore"), "*.gen\nbuild/\n").unwrap();
        std::fs::write(s.join("a/.gitignore"), "!keep.gen\n").unwrap();
        for f in ["x.gen", "a/keep.gen", "a/drop.gen", "a/b/keep.gen", "a/b/f.txt"] {
            std::fs::write(s.join(f), f).unwrap();
        }
        std::fs::create_dir_all(s.join("a/build")).unwrap();
        std::fs::write(s.join("a/build/out"), "1").unwrap();
        let e = snapshot(&store, s, Path::new(""), "nested", &[]).unwrap();
        assert!(!e.path.join("x.gen").exists());
        assert!(e.path.join("a/keep.gen").is_file(), "re-included by a/.gitignore");
        assert!(e.path.join("a/b/keep.gen").is_file(), "a/.gitignore applies below a/");
        assert!(!e.path.join("a/drop.gen").exists());
        assert!(
            !e.path.join("a/build").exists(),
            "a directory pattern applies at any depth"
        );
        assert!(e.path.join("a/b/f.txt").is_file());
    }

    /// A source directory that is (or passes through) a symlink to a host
    /// directory is refused by name, and so is a symlink inside that leaves
    /// the snapshot; a symlink that stays inside is kept as a symlink.
    #[test]
    fn symlinks_never_bring_host_files_into_a_snapshot() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "HOST-SECRET").unwrap();
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        std::fs::create_dir_all(p.join("data/sub")).unwrap();
        std::fs::write(p.join("data/sub/f.txt"), "data").unwrap();
        std::os::unix::fs::symlink("sub/f.txt", p.join("data/alias")).unwrap();
        std::os::unix::fs::symlink(host.path(), p.join("hostdir")).unwrap();

        let ok = snapshot(&store, p, Path::new("data"), "ok", &[]).unwrap();
        assert_eq!(
            std::fs::read_link(ok.path.join("alias")).unwrap(),
            Path::new("sub/f.txt")
        );

        let before = std::fs::read_dir(store.store_dir()).unwrap().count();
        let err = format!(
            "{:#}",
            snapshot(&store, p, Path::new("hostdir"), "hostdir", &[]).unwrap_err()
        );
        assert!(err.contains("hostdir: is a symlink"), "{err}");
        std::os::unix::fs::symlink(host.path().join("secret"), p.join("data/leak")).unwrap();
        let err = format!("{:#}", snapshot(&store, p, Path::new("data"), "data", &[]).unwrap_err());
        assert!(
            err.contains("data/leak: is a symlink to") && err.contains("which leaves the directory"),
            "{err}"
        );
        std::fs::remove_file(p.join("data/leak")).unwrap();
        std::os::unix::fs::symlink("../hostdir/secret", p.join("data/leak")).unwrap();
        let err = format!("{:#}", snapshot(&store, p, Path::new("data"), "data", &[]).unwrap_err());
        assert!(err.contains("which leaves the directory"), "{err}");
        assert_eq!(
            std::fs::read_dir(store.store_dir()).unwrap().count(),
            before,
            "a refused snapshot leaves no entry"
        );
        for e in std::fs::read_dir(store.store_dir()).unwrap() {
            let e = e.unwrap().path();
            assert!(std::fs::read(e.join("leak")).is_err(), "no entry holds the host file");
        }
    }
}
