//! The output directory: assembled in a staging directory beside the old
//! one and swapped in only when complete, so a failed build leaves the
//! previous output as it was. Files leave the store writable by the user
//! (0644/0755) with SOURCE_DATE_EPOCH as their time, reflinked (FICLONE)
//! where the filesystem can share the store's blocks, copied otherwise.
//!
//! A directory left in place by an earlier build is not touched again: the
//! marker beside it ([`Marker`], `.<name>-placed.json`) names what was placed
//! there and the stat tuples of everything in it, so a build with the same
//! placement, the same manifest and an untouched directory writes nothing
//! but `farm-metrics.json` (spec/engine.md, "Placing outputs").

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use farm_hostfs::{self as hostfs, Beneath, Kind, Walk};
use sha2::Digest as _;

use crate::manifest::{Output, METRICS_FILE};

pub struct Staging {
    target: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Staging {
    pub fn new(target: &Path) -> Result<Staging> {
        let parent = target.parent().context("the output directory has no parent")?;
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        let name = target
            .file_name()
            .context("the output directory has no name")?
            .to_string_lossy()
            .into_owned();
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.new-"))
            .tempdir_in(parent)?;
        Ok(Staging {
            target: target.to_path_buf(),
            dir: Some(dir),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("not committed").path()
    }

    /// Swaps the staging directory in: old → aside, new → target, old removed.
    pub fn commit(mut self) -> Result<()> {
        let dir = self.dir.take().expect("not committed").keep();
        let parent = self.target.parent().expect("checked in new");
        let aside = parent.join(format!(
            ".{}.old-{}",
            self.target.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &aside).with_context(|| format!("moving {} aside", self.target.display()))?;
        }
        if let Err(e) = std::fs::rename(&dir, &self.target) {
            if had_old {
                let _ = std::fs::rename(&aside, &self.target);
            }
            return Err(e).with_context(|| format!("moving the new output into {}", self.target.display()));
        }
        std::fs::set_permissions(&self.target, std::fs::Permissions::from_mode(0o755))?;
        if had_old {
            std::fs::remove_dir_all(&aside).with_context(|| aside.display().to_string())?;
        }
        Ok(())
    }
}

/// Copies `from` (a path inside the store entry at `entry`; empty for the
/// whole entry) to `to` and describes it for the manifest. What a step
/// wrote is read without following a symlink: an output that is itself a
/// symlink is refused, symlinks inside it are kept only when they resolve
/// inside it (spec/engine.md, "Outputs").
pub fn place(entry: &Path, from: &Path, to: &Path, rel: &str, sde: u64, stats: &mut PlaceStats) -> Result<Output> {
    let tree = Beneath::open_dir(entry)?;
    copy_out(&tree, from, to, sde, stats).with_context(|| format!("writing the output {rel}"))?;
    let digest = farm_store::tree_digest(to)?;
    Ok(Output {
        path: rel.to_string(),
        digest: digest.to_string(),
        size: tree_size(to)?,
        metadata: Default::default(),
    })
}

/// Files placed by sharing the store's blocks and by copying them, and
/// outputs carried over unchanged from the previous output directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaceStats {
    pub reflinked: u64,
    pub copied: u64,
    pub carried: u64,
}

fn copy_out(tree: &Beneath, from: &Path, to: &Path, sde: u64, stats: &mut PlaceStats) -> Result<()> {
    let time = UNIX_EPOCH + Duration::from_secs(sde);
    let meta = tree.symlink_metadata(from)?;
    match meta.kind {
        Kind::File => return copy_file(tree.open_file(from)?, &meta, to, time, stats),
        Kind::Dir => {}
        Kind::Symlink => {
            return Err(hostfs::Error::Symlink {
                path: tree.shown(from),
                target: tree.read_link(from)?,
            }
            .into())
        }
        Kind::Other => {
            return Err(hostfs::Error::WrongType {
                path: tree.shown(from),
                expected: "a file or directory",
                found: meta.kind.describe(),
            }
            .into())
        }
    }
    let src = tree.open_subdir(from)?;
    std::fs::create_dir_all(to).with_context(|| to.display().to_string())?;
    let mut dirs = vec![to.to_path_buf()];
    let mut links = Vec::new();
    src.walk(|e| -> Result<Walk> {
        let dest = to.join(&e.rel);
        match e.meta.kind {
            Kind::Dir => {
                std::fs::create_dir(&dest).with_context(|| dest.display().to_string())?;
                dirs.push(dest);
            }
            Kind::File => copy_file(e.open_file()?, &e.meta, &dest, time, stats)?,
            Kind::Symlink => {
                let target = e.link.clone().expect("a symlink has a target");
                std::os::unix::fs::symlink(&target, &dest).with_context(|| dest.display().to_string())?;
                links.push((e.rel.clone(), target));
            }
            Kind::Other => {
                return Err(hostfs::Error::WrongType {
                    path: src.shown(&e.rel),
                    expected: "a file, directory or symlink",
                    found: e.meta.kind.describe(),
                }
                .into())
            }
        }
        Ok(Walk::Descend)
    })?;
    // Checked on the copy, which nothing else writes: a link must land inside this output.
    let copy = Beneath::open_dir(to)?;
    for (link, target) in &links {
        if let Err(e) = copy.check_link(link, target) {
            return Err(match e {
                hostfs::Error::LinkLeaves { target, .. } => anyhow::anyhow!(
                    "{}: is a symlink to {}, which leaves the directory {}\nhint: a step's output may hold symlinks only to files of the same output",
                    src.shown(link).display(),
                    target.display(),
                    src.path().display()
                ),
                other => other.into(),
            });
        }
    }
    for d in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        std::fs::File::open(d)?.set_modified(time)?;
    }
    Ok(())
}

/// Writes an opened step file to `to` (0644, or 0755 when executable) with
/// the build's time: a reflink of the store's file where the filesystem
/// allows (its own inode, so its mode and time are its own and a write to
/// it never reaches the store), a copy otherwise. Never a hard link: that
/// would share the store file's read-only mode and time.
fn copy_file(
    mut from: std::fs::File,
    meta: &hostfs::Meta,
    to: &Path,
    time: std::time::SystemTime,
    stats: &mut PlaceStats,
) -> Result<()> {
    let mut out = std::fs::File::create_new(to).with_context(|| to.display().to_string())?;
    if reflink(&from, &out) {
        stats.reflinked += 1;
    } else {
        std::io::copy(&mut from, &mut out).with_context(|| to.display().to_string())?;
        stats.copied += 1;
    }
    let mode = if meta.is_executable() { 0o755 } else { 0o644 };
    out.set_permissions(std::fs::Permissions::from_mode(mode))?;
    out.set_modified(time)?;
    Ok(())
}

/// Makes `to` (new and empty) share `from`'s blocks; false where the
/// filesystem cannot (ext4, tmpfs, across filesystems), and `to` is still empty.
fn reflink(from: &std::fs::File, to: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: FICLONE reads two open descriptors we own for the whole call.
    unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) == 0 }
}

/// Bump when what [`place`] writes or reports changes, so that markers of
/// an older farm are not trusted.
const PLACEMENT_FORMAT: u32 = 1;

/// What a build placed in its output directory, kept beside it (not in it,
/// so the directory holds only outputs): written after the directory is
/// swapped in, removed before it is replaced, never synced. Any marker that
/// cannot be read is no marker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// [`placement_key`] of what was placed.
    pub placement: String,
    /// The digest of the manifest written with it.
    pub manifest_digest: String,
    /// The manifest's outputs (digests, sizes, metadata), as measured when placed.
    pub outputs: BTreeMap<String, Output>,
    /// [`dir_stamp`] of the directory right after it was placed.
    pub stamp: String,
    /// By output name: what was placed there and its [`path_stamp`], so an
    /// unchanged output is carried over when others change.
    #[serde(default)]
    pub parts: BTreeMap<String, Part>,
}

/// One output of a [`Marker`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Part {
    /// [`part_key`] of the output.
    pub key: String,
    /// [`path_stamp`] of its path right after it was placed.
    pub stamp: String,
}

/// `<parent>/.<name>-placed.json` for the output directory `<parent>/<name>`.
pub fn marker_path(out_dir: &Path) -> PathBuf {
    let name = out_dir.file_name().unwrap_or_default().to_string_lossy();
    out_dir.with_file_name(format!(".{name}-placed.json"))
}

impl Marker {
    pub fn read(out_dir: &Path) -> Option<Marker> {
        serde_json::from_slice(&std::fs::read(marker_path(out_dir)).ok()?).ok()
    }

    /// Written atomically (a temporary file renamed into place), not synced:
    /// a marker lost in a crash only costs one more placement.
    pub fn write(&self, out_dir: &Path) -> Result<()> {
        let path = marker_path(out_dir);
        let parent = path.parent().context("the output directory has no parent")?;
        let mut tmp = tempfile::Builder::new().prefix(".placed-").tempfile_in(parent)?;
        tmp.write_all(&serde_json::to_vec(self)?)?;
        tmp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| path.display().to_string())?;
        Ok(())
    }

    pub fn remove(out_dir: &Path) -> Result<()> {
        let path = marker_path(out_dir);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// One output to place: the manifest name, the step's store entry, the
/// path in it (empty for all of it) and the path in the output directory.
#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    pub entry: farm_store::StoreEntry,
    pub from: String,
    pub rel: String,
    /// Manifest metadata known before placing.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Everything that decides the bytes and the manifest entries of the
/// placed outputs: the store entries (immutable, named by digest), where
/// each goes, SOURCE_DATE_EPOCH (the files' time), `extra` (what else the
/// caller writes beside them, e.g. the bundle report) and this farm's format.
pub fn placement_key(planned: &[Planned], sde: u64, extra: &serde_json::Value) -> String {
    // By name: the scheduler lists steps in the order they finished.
    let outputs: BTreeMap<&str, serde_json::Value> = planned
        .iter()
        .map(|p| {
            let v = serde_json::json!([p.entry.file_name(), p.from, p.rel, p.metadata]);
            (p.name.as_str(), v)
        })
        .collect();
    let v = serde_json::json!({
        "format": PLACEMENT_FORMAT,
        "farm": env!("CARGO_PKG_VERSION"),
        "source_date_epoch": sde,
        "outputs": outputs,
        "extra": extra,
    });
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(v.to_string())))
}

/// What decides one output's placed bytes and manifest entry: its store
/// entry, the paths, its metadata, SOURCE_DATE_EPOCH and this farm's format.
pub fn part_key(p: &Planned, sde: u64) -> String {
    let v = serde_json::json!([
        PLACEMENT_FORMAT,
        env!("CARGO_PKG_VERSION"),
        sde,
        p.entry.file_name(),
        p.from,
        p.rel,
        p.metadata
    ]);
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(v.to_string())))
}

/// A digest of the stat tuples (type, mode, device, inode, size, mtime,
/// ctime; names and mode only for directories) of everything in the output
/// directory but `farm-metrics.json`, which every build rewrites. Any write,
/// chmod, touch, removal, rename or addition below it changes it. None when
/// the directory does not exist.
pub fn dir_stamp(out_dir: &Path) -> Result<Option<String>> {
    match std::fs::symlink_metadata(out_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| out_dir.display().to_string()),
    }
    let mut h = sha2::Sha256::new();
    stamp_below(&Beneath::open_dir(out_dir)?, &mut h, Some(Path::new(METRICS_FILE)))?;
    Ok(Some(format!("sha256:{}", hex::encode(h.finalize()))))
}

/// [`dir_stamp`] of the file or directory `rel` below `out_dir`; None when it is missing.
pub fn path_stamp(out_dir: &Path, rel: &Path) -> Result<Option<String>> {
    let tree = match Beneath::open_dir(out_dir) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = match tree.symlink_metadata(rel) {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut h = sha2::Sha256::new();
    stamp_node(&mut h, Path::new(""), &meta);
    if meta.kind == Kind::Dir {
        stamp_below(&tree.open_subdir(rel)?, &mut h, None)?;
    }
    Ok(Some(format!("sha256:{}", hex::encode(h.finalize()))))
}

/// A directory's entries with their `lstat`, sorted by name.
type Listing = Vec<(std::ffi::OsString, hostfs::Meta)>;

/// Feeds [`stamp_node`] of everything below `tree` (but `skip`) into `h`,
/// parents before children and siblings by name, as [`Beneath::walk`]
/// visits them. A no-op build's largest cost is this `lstat` of every
/// placed file (tens of thousands with a Python backend), so the top
/// levels are listed until there are enough subtrees to share out, a few
/// threads walk one subtree each (every directory opened in its parent,
/// one name to look up), and the results are hashed in walk order: the
/// stamp does not depend on the threads.
fn stamp_below(tree: &Beneath, h: &mut sha2::Sha256, skip: Option<&Path>) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let mut listings: HashMap<PathBuf, Listing> = HashMap::new();
    let mut level = vec![PathBuf::new()];
    while !level.is_empty() && level.len() < threads * 8 {
        let mut below = Vec::new();
        for rel in level {
            let entries = tree.read_dir(&rel)?;
            below.extend(
                entries
                    .iter()
                    .filter(|(_, m)| m.kind == Kind::Dir)
                    .map(|(name, _)| rel.join(name))
                    .filter(|r| Some(r.as_path()) != skip),
            );
            listings.insert(rel, entries);
        }
        level = below;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let walk = || -> Result<Vec<(usize, Vec<u8>)>> {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(rel) = level.get(i) else { return Ok(done) };
            let mut bytes = Vec::new();
            tree.open_subdir(rel)?.walk(|e| -> Result<Walk> {
                stamp_bytes(&mut bytes, &rel.join(&e.rel), &e.meta);
                Ok(Walk::Descend)
            })?;
            done.push((i, bytes));
        }
    };
    let mut walked: Vec<(usize, Vec<u8>)> = if threads == 1 || level.len() < 2 {
        walk()?
    } else {
        std::thread::scope(|s| {
            let workers: Vec<_> = (1..threads).map(|_| s.spawn(walk)).collect();
            let mut all = walk()?;
            for w in workers {
                all.extend(w.join().expect("a stamp thread panicked")?);
            }
            Ok::<_, anyhow::Error>(all)
        })?
    };
    walked.sort_by_key(|(i, _)| *i);
    let subtrees: HashMap<&Path, Vec<u8>> = level
        .iter()
        .map(PathBuf::as_path)
        .zip(walked.into_iter().map(|(_, b)| b))
        .collect();
    fn feed(
        h: &mut sha2::Sha256,
        listings: &HashMap<PathBuf, Listing>,
        subtrees: &HashMap<&Path, Vec<u8>>,
        dir: &Path,
        skip: Option<&Path>,
    ) {
        for (name, meta) in listings.get(dir).into_iter().flatten() {
            let rel = dir.join(name);
            if Some(rel.as_path()) == skip {
                continue;
            }
            stamp_node(h, &rel, meta);
            match subtrees.get(rel.as_path()) {
                Some(bytes) => h.update(bytes),
                None if meta.kind == Kind::Dir => feed(h, listings, subtrees, &rel, skip),
                None => {}
            }
        }
    }
    feed(h, &listings, &subtrees, Path::new(""), skip);
    Ok(())
}

fn stamp_node(h: &mut sha2::Sha256, rel: &Path, m: &hostfs::Meta) {
    let mut bytes = Vec::with_capacity(128);
    stamp_bytes(&mut bytes, rel, m);
    h.update(&bytes);
}

/// What [`stamp_node`] hashes for one node.
fn stamp_bytes(out: &mut Vec<u8>, rel: &Path, m: &hostfs::Meta) {
    let p = rel.as_os_str().as_bytes();
    out.extend_from_slice(&(p.len() as u64).to_le_bytes());
    out.extend_from_slice(p);
    out.push(m.kind as u8);
    out.extend_from_slice(&m.mode.to_le_bytes());
    if m.kind != Kind::Dir {
        for v in [m.dev, m.ino, m.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [m.mtime_ns, m.ctime_ns] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Carries the output `rel` of the previous output directory `out_dir`
/// over to `to` in the staging directory: files hard-linked (they are the
/// files farm placed, unchanged since — the caller checked its
/// [`path_stamp`] — so the same bytes, mode and time; the old directory is
/// removed when the new one is swapped in), directories made anew with the
/// build's time, symlinks recreated. Nothing is followed.
pub fn carry_over(out_dir: &Path, rel: &Path, to: &Path, sde: u64) -> Result<()> {
    let tree = Beneath::open_dir(out_dir)?;
    let time = UNIX_EPOCH + Duration::from_secs(sde);
    let meta = tree.symlink_metadata(rel)?;
    let from = out_dir.join(rel);
    match meta.kind {
        Kind::File => {
            return std::fs::hard_link(&from, to)
                .with_context(|| format!("linking {} to {}", from.display(), to.display()))
        }
        Kind::Dir => {}
        other => {
            return Err(hostfs::Error::WrongType {
                path: tree.shown(rel),
                expected: "a file or directory",
                found: other.describe(),
            }
            .into())
        }
    }
    std::fs::create_dir_all(to).with_context(|| to.display().to_string())?;
    let mut dirs = vec![to.to_path_buf()];
    tree.open_subdir(rel)?.walk(|e| -> Result<Walk> {
        let dest = to.join(&e.rel);
        match e.meta.kind {
            Kind::Dir => {
                std::fs::create_dir(&dest).with_context(|| dest.display().to_string())?;
                dirs.push(dest);
            }
            Kind::File => {
                let src = from.join(&e.rel);
                std::fs::hard_link(&src, &dest)
                    .with_context(|| format!("linking {} to {}", src.display(), dest.display()))?;
            }
            Kind::Symlink => {
                let target = e.link.clone().expect("a symlink has a target");
                std::os::unix::fs::symlink(&target, &dest).with_context(|| dest.display().to_string())?;
            }
            Kind::Other => anyhow::bail!("{}: a special file in the output directory", dest.display()),
        }
        Ok(Walk::Descend)
    })?;
    for d in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        std::fs::File::open(d)?.set_modified(time)?;
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` (mode 0644) by renaming a complete
/// temporary file over it, without syncing.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    let to = dir.join(name);
    tmp.persist(&to)
        .map_err(|e| e.error)
        .with_context(|| to.display().to_string())?;
    Ok(())
}

pub fn tree_size(p: &Path) -> Result<u64> {
    let meta = std::fs::symlink_metadata(p)?;
    if meta.is_dir() {
        let mut total = 0;
        for e in std::fs::read_dir(p)? {
            total += tree_size(&e?.path())?;
        }
        Ok(total)
    } else if meta.is_file() {
        Ok(meta.len())
    } else {
        Ok(0)
    }
}

/// Installed distributions in the site-packages directory `rel` of a step's output.
pub fn count_dist_infos(entry: &Path, rel: &Path) -> Result<u64> {
    let tree = Beneath::open_dir(entry)?;
    let names = match tree.read_dir(rel) {
        Ok(names) => names,
        Err(e) if e.is_not_found() => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(names
        .iter()
        .filter(|(n, _)| n.to_string_lossy().ends_with(".dist-info"))
        .count() as u64)
}

/// (operations, component schemas) of an OpenAPI document; `shown` names it in errors.
pub fn openapi_counts(bytes: &[u8], shown: &str) -> Result<(u64, u64)> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{shown}: the backend's OpenAPI schema is not JSON"))?;
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let ops = v["paths"]
        .as_object()
        .map(|paths| {
            paths
                .values()
                .map(|item| {
                    item.as_object()
                        .map(|m| m.keys().filter(|k| METHODS.contains(&k.as_str())).count())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
        .unwrap_or(0) as u64;
    let schemas = v["components"]["schemas"].as_object().map(|m| m.len()).unwrap_or(0) as u64;
    Ok((ops, schemas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Placed files are 0644/0755 with the build's time whether reflinked
    /// or copied, and every one is counted as one or the other.
    #[test]
    fn placed_files_have_their_own_modes_and_times() {
        use std::os::unix::fs::MetadataExt;
        let entry = tempfile::tempdir().unwrap();
        let e = entry.path();
        std::fs::create_dir_all(e.join("d/sub")).unwrap();
        std::fs::write(e.join("d/a"), "a").unwrap();
        std::fs::write(e.join("d/sub/x"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(e.join("d/a"), std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(e.join("d/sub/x"), std::fs::Permissions::from_mode(0o555)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut stats = PlaceStats::default();
        let o = place(e, Path::new("d"), &out.path().join("d"), "d", 86_400, &mut stats).unwrap();
        assert_eq!(stats.reflinked + stats.copied, 2, "{stats:?}");
        let a = std::fs::metadata(out.path().join("d/a")).unwrap();
        let x = std::fs::metadata(out.path().join("d/sub/x")).unwrap();
        assert_eq!((a.mode() & 0o7777, x.mode() & 0o7777), (0o644, 0o755));
        assert_eq!((a.mtime(), x.mtime()), (86_400, 86_400));
        assert_ne!(
            a.ino(),
            std::fs::metadata(e.join("d/a")).unwrap().ino(),
            "never a hard link"
        );
        assert_eq!(std::fs::read(out.path().join("d/sub/x")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(o.digest, farm_store::tree_digest(&e.join("d")).unwrap().to_string());
    }

    /// The directory stamp sees every kind of change below it (content of
    /// the same size, a touch, a chmod, a removal, an addition, a rename)
    /// but not farm-metrics.json being replaced; a marker round-trips.
    #[test]
    fn the_directory_stamp_sees_every_change_but_the_metrics() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("out");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), "1234").unwrap();
        std::fs::write(dir.join("top"), "t").unwrap();
        std::fs::write(dir.join(METRICS_FILE), "{}").unwrap();
        let s0 = dir_stamp(&dir).unwrap().unwrap();
        replace_file(&dir, METRICS_FILE, b"{\"x\": 1}").unwrap();
        assert_eq!(dir_stamp(&dir).unwrap().unwrap(), s0, "metrics are not part of it");
        assert_eq!(
            std::fs::metadata(dir.join(METRICS_FILE)).unwrap().permissions().mode() & 0o777,
            0o644
        );

        type Change = fn(&Path);
        let changes: [(&str, Change); 6] = [
            ("same-size write", |d| std::fs::write(d.join("a/b/f"), "abcd").unwrap()),
            ("touch", |d| {
                std::fs::File::options()
                    .append(true)
                    .open(d.join("top"))
                    .unwrap()
                    .set_modified(UNIX_EPOCH)
                    .unwrap()
            }),
            ("chmod", |d| {
                std::fs::set_permissions(d.join("a"), std::fs::Permissions::from_mode(0o700)).unwrap()
            }),
            ("removal", |d| std::fs::remove_file(d.join("a/b/f")).unwrap()),
            ("addition", |d| std::fs::write(d.join("a/new"), "").unwrap()),
            ("rename", |d| std::fs::rename(d.join("a/b"), d.join("a/c")).unwrap()),
        ];
        let mut seen = vec![s0];
        for (what, change) in changes {
            change(&dir);
            let s = dir_stamp(&dir).unwrap().unwrap();
            assert!(!seen.contains(&s), "a {what} must change the stamp");
            seen.push(s);
        }
        assert_eq!(dir_stamp(&out.path().join("missing")).unwrap(), None);

        let m = Marker {
            placement: "p".into(),
            manifest_digest: "d".into(),
            outputs: BTreeMap::new(),
            stamp: seen[0].clone(),
            parts: BTreeMap::new(),
        };
        assert_eq!(Marker::read(&dir), None);
        m.write(&dir).unwrap();
        assert!(
            out.path().join(".out-placed.json").is_file(),
            "beside the directory, not in it"
        );
        assert_eq!(Marker::read(&dir), Some(m));
        std::fs::write(out.path().join(".out-placed.json"), "{not json").unwrap();
        assert_eq!(Marker::read(&dir), None, "an unreadable marker is no marker");
        Marker::remove(&dir).unwrap();
        Marker::remove(&dir).unwrap();
    }

    /// The stamp listed by threads equals the one a single walk of the
    /// tree hashes (so markers written before stay valid), on a tree wide
    /// and deep enough to spread over every thread, with symlinks.
    #[test]
    fn the_threaded_stamp_is_the_walks_stamp() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("out");
        for i in 0..40 {
            let d = dir.join(format!("pkg{i}/sub{}/deep", i % 3));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f.py"), format!("{i}")).unwrap();
            std::fs::write(dir.join(format!("pkg{i}/top.txt")), "t").unwrap();
            std::os::unix::fs::symlink("top.txt", dir.join(format!("pkg{i}/link"))).unwrap();
        }
        std::fs::write(dir.join(METRICS_FILE), "{}").unwrap();
        let walked = |root: &Path, skip: Option<&Path>| {
            let mut h = sha2::Sha256::new();
            Beneath::open_dir(root)
                .unwrap()
                .walk(|e| -> Result<Walk> {
                    if Some(e.rel.as_path()) == skip {
                        return Ok(Walk::Skip);
                    }
                    stamp_node(&mut h, &e.rel, &e.meta);
                    Ok(Walk::Descend)
                })
                .unwrap();
            h
        };
        let want = format!(
            "sha256:{}",
            hex::encode(walked(&dir, Some(Path::new(METRICS_FILE))).finalize())
        );
        assert_eq!(dir_stamp(&dir).unwrap().unwrap(), want);
        // path_stamp: the node itself, then what is below it, in one hasher.
        let mut one = sha2::Sha256::new();
        let pkg7 = Beneath::open_dir(&dir)
            .unwrap()
            .symlink_metadata(Path::new("pkg7"))
            .unwrap();
        stamp_node(&mut one, Path::new(""), &pkg7);
        Beneath::open_dir(&dir.join("pkg7"))
            .unwrap()
            .walk(|e| -> Result<Walk> {
                stamp_node(&mut one, &e.rel, &e.meta);
                Ok(Walk::Descend)
            })
            .unwrap();
        assert_eq!(
            path_stamp(&dir, Path::new("pkg7")).unwrap().unwrap(),
            format!("sha256:{}", hex::encode(one.finalize()))
        );
    }

    /// An output carried over keeps its files (same inodes, modes and
    /// times), its symlinks and its tree digest; its path stamp sees a change.
    #[test]
    fn carried_over_outputs_are_the_same_files() {
        use std::os::unix::fs::MetadataExt;
        let entry = tempfile::tempdir().unwrap();
        let e = entry.path();
        std::fs::create_dir_all(e.join("d/sub")).unwrap();
        std::fs::write(e.join("d/a"), "a").unwrap();
        std::fs::write(e.join("d/sub/x"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(e.join("d/sub/x"), std::fs::Permissions::from_mode(0o555)).unwrap();
        symlink("sub/x", e.join("d/l")).unwrap();
        let old = tempfile::tempdir().unwrap();
        let o = place(
            e,
            Path::new("d"),
            &old.path().join("d"),
            "d",
            7,
            &mut PlaceStats::default(),
        )
        .unwrap();
        let stamp = path_stamp(old.path(), Path::new("d")).unwrap().unwrap();
        assert_eq!(path_stamp(old.path(), Path::new("missing")).unwrap(), None);

        let new = tempfile::tempdir().unwrap();
        carry_over(old.path(), Path::new("d"), &new.path().join("d"), 7).unwrap();
        for f in ["a", "sub/x"] {
            let (a, b) = (
                std::fs::metadata(old.path().join("d").join(f)).unwrap(),
                std::fs::metadata(new.path().join("d").join(f)).unwrap(),
            );
            assert_eq!((a.ino(), a.mode(), a.mtime()), (b.ino(), b.mode(), b.mtime()), "{f}");
        }
        assert_eq!(std::fs::read_link(new.path().join("d/l")).unwrap(), Path::new("sub/x"));
        let d = std::fs::metadata(new.path().join("d/sub")).unwrap();
        assert_eq!((d.mode() & 0o7777, d.mtime()), (0o755, 7));
        assert_eq!(
            farm_store::tree_digest(&new.path().join("d")).unwrap().to_string(),
            o.digest
        );
        // Linking changed the old files' ctimes: the old stamp no longer holds.
        assert_ne!(path_stamp(old.path(), Path::new("d")).unwrap().unwrap(), stamp);
    }

    /// The placement key does not depend on the order steps finished in,
    /// and changes with any entry, path or metadata.
    #[test]
    fn the_placement_key_is_order_free_and_sees_every_part() {
        let entry = |name: &str, byte: u8| farm_store::StoreEntry {
            digest: farm_store::Digest::from_bytes([byte; 32]),
            name: name.into(),
            kind: "output".into(),
            size: 1,
            path: PathBuf::from("/nowhere"),
        };
        let planned = |e: u8, rel: &str| {
            vec![
                Planned {
                    name: "frontend".into(),
                    entry: entry("frontend", e),
                    from: String::new(),
                    rel: rel.into(),
                    metadata: Default::default(),
                },
                Planned {
                    name: "models".into(),
                    entry: entry("models", 2),
                    from: String::new(),
                    rel: "models".into(),
                    metadata: serde_json::json!({"models": ["a"]}).as_object().unwrap().clone(),
                },
            ]
        };
        let extra = serde_json::json!({});
        let key = placement_key(&planned(1, "frontend"), 0, &extra);
        let mut reversed = planned(1, "frontend");
        reversed.reverse();
        assert_eq!(placement_key(&reversed, 0, &extra), key);
        assert_ne!(placement_key(&planned(3, "frontend"), 0, &extra), key);
        assert_ne!(placement_key(&planned(1, "web"), 0, &extra), key);
        assert_ne!(placement_key(&planned(1, "frontend"), 1, &extra), key);
        assert_ne!(
            placement_key(&planned(1, "frontend"), 0, &serde_json::json!({"analyze": true})),
            key
        );
        let mut other = planned(1, "frontend");
        other[1].metadata.insert("models".into(), serde_json::json!(["b"]));
        assert_ne!(placement_key(&other, 0, &extra), key);
    }

    /// A step output that is a symlink (to a host file) is refused by name
    /// and nothing of the file is copied; a link inside a directory output
    /// is kept when it stays inside, refused when it climbs out.
    #[test]
    fn step_outputs_never_bring_host_files_along() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "HOST-SECRET").unwrap();
        let entry = tempfile::tempdir().unwrap();
        let e = entry.path();
        symlink(host.path().join("secret"), e.join("openapi.json")).unwrap();
        std::fs::create_dir_all(e.join("good/sub")).unwrap();
        std::fs::write(e.join("good/sub/f"), "f").unwrap();
        symlink("sub/f", e.join("good/alias")).unwrap();
        std::fs::create_dir_all(e.join("bad")).unwrap();
        symlink("../../../../../../../../etc/shadow", e.join("bad/esc")).unwrap();
        let out = tempfile::tempdir().unwrap();

        let err = format!(
            "{:#}",
            place(
                e,
                Path::new("openapi.json"),
                &out.path().join("openapi.json"),
                "openapi.json",
                0,
                &mut PlaceStats::default()
            )
            .unwrap_err()
        );
        assert!(err.contains("openapi.json: is a symlink"), "{err}");
        assert!(!out.path().join("openapi.json").exists());

        let o = place(
            e,
            Path::new("good"),
            &out.path().join("good"),
            "good",
            0,
            &mut PlaceStats::default(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_link(out.path().join("good/alias")).unwrap(),
            Path::new("sub/f")
        );
        assert_eq!(o.size, 1);

        let err = format!(
            "{:#}",
            place(
                e,
                Path::new("bad"),
                &out.path().join("bad"),
                "bad",
                0,
                &mut PlaceStats::default()
            )
            .unwrap_err()
        );
        assert!(
            err.contains("bad/esc: is a symlink to") && err.contains("leaves the directory"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            place(
                e,
                Path::new("../x"),
                &out.path().join("x"),
                "x",
                0,
                &mut PlaceStats::default()
            )
            .unwrap_err()
        );
        assert!(err.contains("leaves the directory"), "{err}");
    }
}
