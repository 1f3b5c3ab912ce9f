//! Source snapshots: a project directory, filtered by the ignore rules a
//! developer expects (node_modules, build output, .git, the app's own
//! .gitignore), copied into the store so a step sees content, never the
//! user's live tree — and so farm never modifies that tree.
//!
//! The tree is read beneath the project root without following any symlink
//! (farm-hostfs): a source directory that is, or passes through, a symlink
//! is refused, and a symlink inside it is kept as a symlink only when it
//! resolves inside the snapshot (spec/engine.md, "Sources").
//!
//! An unchanged tree is neither read nor copied: the stat cache
//! (`statcache`, `.farm/stat-cache/src-<label>.<dir>`) gives each unchanged file's
//! digest, the snapshot's tree digest is computed from them, and when the
//! store already holds that tree it is the snapshot. Otherwise the tree is
//! copied (each file hashed as it is copied, which refreshes the cache).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use farm_hostfs::{self as hostfs, Beneath, Kind, Walk};
use farm_store::{Store, StoreEntry};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

use crate::statcache::{node, Stamp, StatCache};

/// Directory names never part of a source snapshot.
const ALWAYS_SKIPPED: [&str; 6] = ["node_modules", ".git", ".farm", "__pycache__", ".pytest_cache", ".venv"];

/// Files read (hashed or copied), files whose digest came from the stat
/// cache, and snapshots copied, by every snapshot in this process; a build
/// reports the difference across its plan (farm-metrics.json `sources`).
static FILES_READ: AtomicU64 = AtomicU64::new(0);
static FILES_CACHED: AtomicU64 = AtomicU64::new(0);
static SNAPSHOTS_COPIED: AtomicU64 = AtomicU64::new(0);

/// The process's snapshot counters (see [`FILES_READ`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub files_read: u64,
    pub files_cached: u64,
    pub snapshots_copied: u64,
}

impl Counters {
    pub fn now() -> Counters {
        Counters {
            files_read: FILES_READ.load(Ordering::Relaxed),
            files_cached: FILES_CACHED.load(Ordering::Relaxed),
            snapshots_copied: SNAPSHOTS_COPIED.load(Ordering::Relaxed),
        }
    }

    /// What happened since `earlier`, for farm-metrics.json.
    pub fn since(&self, earlier: &Counters) -> serde_json::Value {
        serde_json::json!({
            "files_read": self.files_read - earlier.files_read,
            "files_from_stat_cache": self.files_cached - earlier.files_cached,
            "snapshots_copied": self.snapshots_copied - earlier.snapshots_copied,
        })
    }
}

/// Where the stat cache of the snapshot `label` of the directory `rel`
/// (below the project at `root`) lives. Named by both: one label can cover
/// many directories (every linked npm workspace member is a
/// `frontend-link`), and directories sharing one file would overwrite each
/// other's entries, so that every member is read again on every build.
pub fn stat_cache_path(root: &Path, label: &str, rel: &Path) -> PathBuf {
    use sha2::Digest as _;
    let dir = sha2::Sha256::digest(rel.as_os_str().as_encoded_bytes());
    root.join(farm_project::paths::STATE_DIR)
        .join("stat-cache")
        .join(format!("src-{label}.{}", hex::encode(&dir[..8])))
}

/// The filtered tree at `rel` below the project root `root` (the caller's
/// canonical path) as a store entry named `src-<label>`: the entry the
/// store already holds when the tree is unchanged, else a new copy.
/// `extra_skip` names top-level paths (relative to `rel`) to leave out, such
/// as the frontend's output directory.
pub fn snapshot(store: &Store, root: &Path, rel: &Path, label: &str, extra_skip: &[&Path]) -> Result<StoreEntry> {
    let (entry, what) = snapshot_counted(store, root, rel, label, extra_skip)?;
    FILES_READ.fetch_add(what.read, Ordering::Relaxed);
    FILES_CACHED.fetch_add(what.cached, Ordering::Relaxed);
    SNAPSHOTS_COPIED.fetch_add(what.copied as u64, Ordering::Relaxed);
    Ok(entry)
}

/// What one snapshot did: files read, files the stat cache vouched for,
/// and whether the tree was copied (the store did not hold it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub read: u64,
    pub cached: u64,
    pub copied: bool,
}

/// [`snapshot`], saying what it did.
pub fn snapshot_counted(
    store: &Store,
    root: &Path,
    rel: &Path,
    label: &str,
    extra_skip: &[&Path],
) -> Result<(StoreEntry, Outcome)> {
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
    let mut cache = StatCache::load(&stat_cache_path(root, label, rel));
    let mut copied_tree = false;
    let result = (|| -> Result<StoreEntry> {
        // With no cache every file must be read anyway: copy at once.
        if !cache.is_empty() {
            if let Some(entry) = reuse(store, &dir, &skip, &name, &mut cache)? {
                return Ok(entry);
            }
        }
        let mut copied: Option<[u8; 32]> = None;
        let entry = store
            .build_entry(&name, "source", |dest| {
                let mut tree = walk(&dir, &skip, &mut cache, Some(dest))?;
                check_links(&dir, &Beneath::open_dir(dest)?, &tree.links)?;
                copied = tree.digest();
                Ok(())
            })
            .map_err(|e| match e {
                // Our own error, said once (the store's wrapper would repeat it).
                farm_store::StoreError::Build { source, .. } => anyhow::anyhow!(source),
                other => other.into(),
            })
            .with_context(|| format!("snapshotting {}", root.join(rel).display()))?;
        copied_tree = true;
        if copied != Some(*entry.digest.as_bytes()) {
            // A file changed while it was copied: the cache learns nothing the store did not confirm.
            cache.forget();
        }
        Ok(entry)
    })();
    let entry = result?;
    let what = Outcome {
        read: cache.counts.hashed,
        cached: cache.counts.cached,
        copied: copied_tree,
    };
    // A cache that cannot be written costs only speed.
    let _ = cache.save();
    Ok((entry, what))
}

/// The store's entry for the tree as the stat cache (and a read of the
/// files it has no answer for) says it is, if the store holds it.
fn reuse(
    store: &Store,
    dir: &Beneath,
    skip: &[PathBuf],
    name: &str,
    cache: &mut StatCache,
) -> Result<Option<StoreEntry>> {
    let mut tree = walk(dir, skip, cache, None)?;
    let Some(digest) = tree.digest() else {
        return Ok(None);
    };
    let file_name = format!("{}-{name}", hex::encode(digest));
    let Some(entry) = store.entry(&file_name)? else {
        return Ok(None);
    };
    // The entry holds this very tree; its links were checked when it was
    // made, and are checked again here on the immutable copy.
    check_links(dir, &Beneath::open_dir(&entry.path)?, &tree.links)?;
    Ok(Some(entry))
}

/// A walked snapshot: every directory's children as tree-digest nodes,
/// parents before children (the walk's order), and its symlinks.
struct Tree {
    dirs: Vec<Vec<node::Child>>,
    index: HashMap<PathBuf, usize>,
    parents: Vec<(usize, Vec<u8>)>,
    links: Vec<(PathBuf, PathBuf)>,
    /// A file changed while it was read: no digest can be trusted.
    unsure: bool,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            dirs: vec![Vec::new()],
            index: HashMap::from([(PathBuf::new(), 0)]),
            parents: vec![(0, Vec::new())],
            links: Vec::new(),
            unsure: false,
        }
    }

    fn parent(&self, rel: &Path) -> usize {
        self.index[rel.parent().unwrap_or(Path::new(""))]
    }

    fn add(&mut self, rel: &Path, kind: u8, digest: [u8; 32]) {
        let p = self.parent(rel);
        let name = node::name(rel.file_name().unwrap_or_default());
        self.dirs[p].push((name, kind, digest));
    }

    fn add_dir(&mut self, rel: &Path) {
        let p = self.parent(rel);
        let name = node::name(rel.file_name().unwrap_or_default());
        self.index.insert(rel.to_path_buf(), self.dirs.len());
        self.dirs.push(Vec::new());
        self.parents.push((p, name));
    }

    /// The tree digest of the whole snapshot.
    /// Consumes the nodes: call once.
    fn digest(&mut self) -> Option<[u8; 32]> {
        if self.unsure {
            return None;
        }
        // Reverse walk order finishes every directory before its parent.
        for i in (1..self.dirs.len()).rev() {
            let d = node::directory(&mut self.dirs[i]);
            let (p, name) = std::mem::take(&mut self.parents[i]);
            self.dirs[p].push((name, node::DIRECTORY, d));
        }
        Some(node::directory(&mut self.dirs[0]))
    }
}

/// The walk behind [`snapshot`]: `.gitignore` files apply to their own
/// directory and below, the deepest match deciding (as git and ripgrep do).
/// With `dest`, the tree is copied there (every file read and hashed as it
/// is copied); without, files the stat cache vouches for are not read.
fn walk(dir: &Beneath, skip: &[PathBuf], cache: &mut StatCache, dest: Option<&Path>) -> Result<Tree> {
    let mut ignores: HashMap<PathBuf, Gitignore> = HashMap::new();
    if let Some(g) = gitignore(dir, Path::new(""))? {
        ignores.insert(PathBuf::new(), g);
    }
    let mut tree = Tree::new();
    dir.walk(|e| -> Result<Walk> {
        let name = e.file_name();
        if ALWAYS_SKIPPED.iter().any(|s| name == *s) || skip.contains(&e.rel) {
            return Ok(Walk::Skip);
        }
        if ignored(&ignores, &e.rel, e.meta.kind == Kind::Dir) {
            return Ok(Walk::Skip);
        }
        let to = dest.map(|d| d.join(&e.rel));
        match e.meta.kind {
            Kind::Dir => {
                if let Some(to) = &to {
                    std::fs::create_dir(to).with_context(|| to.display().to_string())?;
                }
                tree.add_dir(&e.rel);
                if let Some(g) = gitignore(dir, &e.rel)? {
                    ignores.insert(e.rel.clone(), g);
                }
            }
            Kind::File => {
                if to.is_none() {
                    if let Some(d) = cache.lookup(&e.rel, &Stamp::of_meta(&e.meta)) {
                        tree.add(&e.rel, node::FILE, d);
                        return Ok(Walk::Descend);
                    }
                }
                let shown = || dir.shown(&e.rel).display().to_string();
                let mut from = e.open_file()?;
                // The stamp of what is read, taken before reading: a later
                // write changes it (or makes the entry racy).
                let stamp = Stamp::of_metadata(&from.metadata().with_context(shown)?);
                let executable = stamp.mode & 0o111 != 0;
                let digest = match &to {
                    Some(to) => {
                        let mut out = std::fs::File::create_new(to).with_context(|| to.display().to_string())?;
                        let d =
                            node::file(&mut Tee(&mut from, &mut out), executable, stamp.size).with_context(shown)?;
                        if executable {
                            out.set_permissions(std::fs::Permissions::from_mode(0o755))?;
                        }
                        d
                    }
                    None => node::file(&mut from, executable, stamp.size).with_context(shown)?,
                };
                match digest {
                    Some(d) => {
                        cache.record(&e.rel, stamp, d);
                        tree.add(&e.rel, node::FILE, d);
                    }
                    None => tree.unsure = true,
                }
            }
            Kind::Symlink => {
                let target = e.link.clone().expect("a symlink has a target");
                if let Some(to) = &to {
                    std::os::unix::fs::symlink(&target, to).with_context(|| to.display().to_string())?;
                }
                tree.add(&e.rel, node::SYMLINK, node::symlink(&target));
                tree.links.push((e.rel.clone(), target));
            }
            // Sockets, fifos and devices are not source.
            Kind::Other => {}
        }
        Ok(Walk::Descend)
    })?;
    Ok(tree)
}

/// Reads from the source and writes what it read to the copy.
struct Tee<'a>(&'a mut std::fs::File, &'a mut std::fs::File);

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Refuses a snapshot with a symlink that leaves it. Checked on the copy
/// (`copy`, the store's), which nothing else writes, so the answer cannot
/// change under us; errors name the link in the project (`dir`).
fn check_links(dir: &Beneath, copy: &Beneath, links: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (link, target) in links {
        if let Err(e) = copy.check_link(link, target) {
            return Err(match e {
                hostfs::Error::LinkLeaves { .. } => anyhow::anyhow!(
                    "{}: is a symlink to {}, which leaves the directory {}\nhint: farm snapshots only what is inside it; copy the file in, or point the link inside",
                    dir.shown(link).display(),
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

    /// Waits (on the clock, with a deadline) until every file below `dir`
    /// was last changed more than the stat cache's margin ago, so its
    /// entries are trusted rather than racy.
    fn age(dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        let mut newest = 0i64;
        for e in walkdir(dir) {
            let m = std::fs::symlink_metadata(&e).unwrap();
            newest = newest.max(m.ctime() * 1_000_000_000 + m.ctime_nsec());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64;
            if now > newest + 2_100_000_000 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the clock did not advance");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walkdir(&p));
            }
            out.push(p);
        }
        out
    }

    fn app(s: &Path) {
        std::fs::create_dir_all(s.join("src/lib")).unwrap();
        std::fs::create_dir_all(s.join("empty")).unwrap();
        std::fs::write(s.join("src/main.js"), "main").unwrap();
        std::fs::write(s.join("src/lib/a.js"), "aaaa").unwrap();
        std::fs::write(s.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(s.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("src/main.js", s.join("link")).unwrap();
        std::fs::write(s.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(s.join("x.log"), "ignored").unwrap();
    }

    /// An unchanged tree is neither read nor copied the second time: every
    /// file comes from the stat cache and the store's entry is reused; the
    /// digest computed from the cache is the copy's tree digest.
    #[test]
    fn an_unchanged_tree_is_not_read_or_copied() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        app(s);
        age(s);
        let (a, first) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_eq!((first.read, first.cached, first.copied), (4, 0, true), "{first:?}");
        assert!(stat_cache_path(s, "web", Path::new("")).is_file());
        let (b, second) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            second,
            Outcome {
                read: 0,
                cached: 4,
                copied: false
            }
        );
        assert_eq!(farm_store::tree_digest(&b.path).unwrap(), b.digest);

        // A touched file is read again and, its content unchanged, the same entry is used.
        let f = std::fs::File::options()
            .append(true)
            .open(s.join("src/main.js"))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
        let (c, third) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_eq!(c, a);
        assert_eq!((third.read, third.cached, third.copied), (1, 3, false), "{third:?}");

        // A changed mode, an added and a removed file all give a new snapshot.
        std::fs::set_permissions(s.join("src/main.js"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (d, _) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_ne!(d, a, "the execute bit is part of the tree");
        std::fs::write(s.join("src/new.js"), "n").unwrap();
        let (e, _) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert!(e.path.join("src/new.js").is_file());
        std::fs::remove_file(s.join("src/lib/a.js")).unwrap();
        let (g, what) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert!(!g.path.join("src/lib/a.js").exists() && what.copied);
        assert_eq!(farm_store::tree_digest(&g.path).unwrap(), g.digest);
    }

    /// Directories snapshotted under one label (npm workspace members are
    /// all `frontend-link`) keep a cache each: once both were verified,
    /// neither is read again, whatever order they are snapshotted in.
    #[test]
    fn directories_sharing_a_label_do_not_evict_each_others_cache() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        for member in ["packages/a", "packages/b"] {
            std::fs::create_dir_all(s.join(member).join("src")).unwrap();
            std::fs::write(s.join(member).join("package.json"), member).unwrap();
            std::fs::write(s.join(member).join("src/index.js"), member).unwrap();
        }
        age(s);
        let both = |want: Outcome| {
            for member in ["packages/a", "packages/b", "packages/a"] {
                let (_, what) = snapshot_counted(&store, s, Path::new(member), "link", &[]).unwrap();
                assert_eq!(what.read + what.cached, 2, "{member}: {what:?}");
                if want.cached == 2 {
                    assert_eq!(what, want, "{member}");
                }
            }
        };
        both(Outcome::default());
        both(Outcome {
            read: 0,
            cached: 2,
            copied: false,
        });
        assert_ne!(
            stat_cache_path(s, "link", Path::new("packages/a")),
            stat_cache_path(s, "link", Path::new("packages/b"))
        );
    }

    /// A file rewritten with the same size and its old mtime restored (as
    /// `touch -d` does) is read again: its ctime changed. So is a file the
    /// cache vouches for only racily: an entry with the file's current
    /// stamp but a wrong digest, written in the same instant, is not believed.
    #[test]
    fn same_size_same_mtime_edits_and_racy_entries_are_read() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        app(s);
        age(s);
        let (a, _) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        let file = s.join("src/lib/a.js");
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, "bbbb").unwrap();
        std::fs::File::options()
            .append(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let (b, what) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(b.path.join("src/lib/a.js")).unwrap(), b"bbbb");
        assert!(what.read >= 1 && what.copied, "{what:?}");

        // Back to the old content; then a cache entry claiming the old
        // content for the new file, written within the racy margin.
        std::fs::write(&file, "aaaa").unwrap();
        let (c, _) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_eq!(c, a);
        std::fs::write(&file, "bbbb").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let mut forged = StatCache::load(&stat_cache_path(s, "web", Path::new("")));
        let old_node = node::file(&mut &b"aaaa"[..], false, 4).unwrap().unwrap();
        forged.record(Path::new("src/lib/a.js"), Stamp::of_metadata(&meta), old_node);
        forged.save().unwrap();
        let (d, what) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_eq!(d, b, "the racy entry was re-read, not believed: {what:?}");
    }

    /// A corrupt stat cache is ignored (every file read) and replaced by a good one.
    #[test]
    fn a_corrupt_stat_cache_is_ignored_and_rebuilt() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        app(s);
        age(s);
        let (a, _) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        let path = stat_cache_path(s, "web", Path::new(""));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (b, what) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_eq!(a, b);
        assert_eq!((what.read, what.cached), (4, 0), "{what:?}");
        let (_, what) = snapshot_counted(&store, s, Path::new(""), "web", &[]).unwrap();
        assert_eq!(
            (what.read, what.cached, what.copied),
            (0, 4, false),
            "rebuilt: {what:?}"
        );
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
