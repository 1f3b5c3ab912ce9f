//! The stat cache of source snapshots: for each file of a snapshot, its
//! stat tuple (device, inode, mode, size, mtime and ctime in nanoseconds)
//! and the tree-digest node of its contents, as git's index and Bazel's
//! digest cache keep them. A file whose tuple is unchanged is not read
//! again; the snapshot's digest is then computed from the cached nodes and,
//! when the store already holds that tree, the snapshot is not copied.
//!
//! One file per snapshot (label and directory) under `.farm/stat-cache/`
//! (spec/engine.md, "The stat cache"). It is only ever a hint: a file that is missing, torn
//! or corrupt (the trailing SHA-256 does not match) is ignored and rebuilt,
//! and an entry is trusted only when its file's times are older than the
//! scan that verified it by a margin ("racy" entries are hashed again).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use farm_hostfs::Meta;
use sha2::{Digest as _, Sha256};

/// The first bytes of a stat-cache file; bumped with the format.
const MAGIC: &[u8; 16] = b"farm-statcache1\n";

/// How much older than the verifying scan a file's mtime and ctime must be
/// for its entry to be trusted. The kernel stamps files from a clock that
/// lags the real one by up to a tick (≤ 10 ms), so a write in the same tick
/// as our read can leave the times unchanged: such entries are re-hashed.
/// A ctime with no sub-second part suggests a filesystem with 1 s (FAT: 2 s)
/// resolution, where the window is that wide.
const FINE_MARGIN_NS: i64 = 100_000_000;
const COARSE_MARGIN_NS: i64 = 2_000_000_000;

/// What `lstat`/`fstat` says about a file, as the cache compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    /// Permission bits (the execute bit is part of the digest).
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Stamp {
    pub fn of_meta(m: &Meta) -> Stamp {
        Stamp {
            dev: m.dev,
            ino: m.ino,
            mode: m.mode & 0o7777,
            size: m.size,
            mtime_ns: m.mtime_ns,
            ctime_ns: m.ctime_ns,
        }
    }

    pub fn of_metadata(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode() & 0o7777,
            size: m.len(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000).saturating_add(m.ctime_nsec()),
        }
    }

    /// Whether the file may have changed in the same clock tick as the scan
    /// that started at `scan_ns` read it (so equal times prove nothing).
    fn racy(&self, scan_ns: i64) -> bool {
        let margin = if self.ctime_ns.rem_euclid(1_000_000_000) == 0 {
            COARSE_MARGIN_NS
        } else {
            FINE_MARGIN_NS
        };
        self.mtime_ns.max(self.ctime_ns).saturating_add(margin) >= scan_ns
    }
}

/// Counts of one snapshot's files: read and hashed, or taken from the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub hashed: u64,
    pub cached: u64,
}

/// The cache of one snapshot, loaded at the start of a scan.
pub struct StatCache {
    path: PathBuf,
    /// When the scan that wrote the loaded file started (ns since the epoch).
    verified_at: i64,
    old: HashMap<Vec<u8>, (Stamp, [u8; 32])>,
    /// What this scan saw, to be written back.
    new: HashMap<Vec<u8>, (Stamp, [u8; 32])>,
    /// An entry was hashed (new or racy) in this scan.
    hashed_any: bool,
    forgotten: bool,
    scan_started: i64,
    pub counts: Counts,
}

impl StatCache {
    /// The cache at `path`; anything unreadable, torn or corrupt is an empty cache.
    pub fn load(path: &Path) -> StatCache {
        let scan_started = now_ns();
        let (verified_at, old) = std::fs::read(path)
            .ok()
            .and_then(|bytes| parse(&bytes))
            .unwrap_or((i64::MIN, HashMap::new()));
        StatCache {
            path: path.to_path_buf(),
            verified_at,
            old,
            new: HashMap::new(),
            hashed_any: false,
            forgotten: false,
            scan_started,
            counts: Counts::default(),
        }
    }

    /// Whether the loaded cache has no entries (a first scan).
    pub fn is_empty(&self) -> bool {
        self.old.is_empty()
    }

    /// The cached file node of `rel` when its stamp is unchanged and not racy.
    pub fn lookup(&mut self, rel: &Path, stamp: &Stamp) -> Option<[u8; 32]> {
        let key = rel.as_os_str().as_bytes();
        let (cached, digest) = self.old.get(key)?;
        if cached != stamp || stamp.racy(self.verified_at) {
            return None;
        }
        let digest = *digest;
        self.new.insert(key.to_vec(), (*stamp, digest));
        self.counts.cached += 1;
        Some(digest)
    }

    /// Records a file this scan read: `stamp` taken from the open file before reading.
    pub fn record(&mut self, rel: &Path, stamp: Stamp, digest: [u8; 32]) {
        self.new.insert(rel.as_os_str().as_bytes().to_vec(), (stamp, digest));
        self.hashed_any = true;
        self.counts.hashed += 1;
    }

    /// Writes what this scan saw when it differs from what was loaded
    /// (nothing is written when every file came from the cache). The write
    /// is atomic (a temporary file renamed over the old one) and never
    /// synced: a torn file fails its checksum and is ignored. A cache that
    /// cannot be written only costs speed, so errors are returned for the
    /// caller to drop.
    pub fn save(self) -> std::io::Result<()> {
        if self.forgotten || (!self.hashed_any && self.new.len() == self.old.len()) {
            return Ok(());
        }
        let dir = self.path.parent().expect("a cache file has a parent");
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new().prefix(".stat-cache-").tempfile_in(dir)?;
        tmp.write_all(&encode(self.scan_started, &self.new))?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Keeps this scan from writing anything (what it learned was not confirmed).
    pub fn forget(&mut self) {
        self.forgotten = true;
    }
}

fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn encode(verified_at: i64, entries: &HashMap<Vec<u8>, (Stamp, [u8; 32])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + entries.len() * 120);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&verified_at.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    // Sorted, so equal caches are equal files.
    let mut keys: Vec<&Vec<u8>> = entries.keys().collect();
    keys.sort();
    for k in keys {
        let (s, d) = &entries[k];
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&s.dev.to_le_bytes());
        out.extend_from_slice(&s.ino.to_le_bytes());
        out.extend_from_slice(&s.mode.to_le_bytes());
        out.extend_from_slice(&s.size.to_le_bytes());
        out.extend_from_slice(&s.mtime_ns.to_le_bytes());
        out.extend_from_slice(&s.ctime_ns.to_le_bytes());
        out.extend_from_slice(d);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

type Entries = HashMap<Vec<u8>, (Stamp, [u8; 32])>;

/// The cache in `bytes`, or None when it is not one this farm wrote intact.
fn parse(bytes: &[u8]) -> Option<(i64, Entries)> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let verified_at = r.i64()?;
    let n = r.u64()?;
    let mut entries = HashMap::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let len = r.u32()? as usize;
        let key = r.take(len)?.to_vec();
        let stamp = Stamp {
            dev: r.u64()?,
            ino: r.u64()?,
            mode: r.u32()?,
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
        };
        let digest: [u8; 32] = r.take(32)?.try_into().ok()?;
        entries.insert(key, (stamp, digest));
    }
    r.0.is_empty().then_some((verified_at, entries))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The nodes of the tree digest (spec/tree-digest.md), computed from parts
/// so a snapshot's digest can be known without copying it.
pub mod node {
    use super::*;

    /// A directory's child: its name, type byte and node.
    pub type Child = (Vec<u8>, u8, [u8; 32]);

    pub const FILE: u8 = b'f';
    pub const SYMLINK: u8 = b'l';
    pub const DIRECTORY: u8 = b'd';

    /// A regular file's node, read from `r`, which must yield exactly
    /// `len` bytes; None when it yields another number (the file changed).
    pub fn file(r: &mut impl Read, executable: bool, len: u64) -> std::io::Result<Option<[u8; 32]>> {
        let mut h = Sha256::new();
        h.update(b"file\0");
        h.update([executable as u8]);
        h.update(len.to_be_bytes());
        let mut buf = vec![0u8; 128 * 1024];
        let mut read = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            read += n as u64;
            h.update(&buf[..n]);
        }
        Ok((read == len).then(|| h.finalize().into()))
    }

    pub fn symlink(target: &Path) -> [u8; 32] {
        let t = target.as_os_str().as_bytes();
        let mut h = Sha256::new();
        h.update(b"symlink\0");
        h.update((t.len() as u64).to_be_bytes());
        h.update(t);
        h.finalize().into()
    }

    /// A directory's node from its children (name, type, node), in any order.
    pub fn directory(children: &mut [Child]) -> [u8; 32] {
        children.sort_by(|a, b| a.0.cmp(&b.0));
        let mut h = Sha256::new();
        h.update(b"directory\0");
        h.update((children.len() as u64).to_be_bytes());
        for (name, kind, digest) in children.iter() {
            h.update((name.len() as u64).to_be_bytes());
            h.update(name);
            h.update([*kind]);
            h.update(digest);
        }
        h.finalize().into()
    }

    /// A name's bytes, as the directory node hashes them.
    pub fn name(n: &OsStr) -> Vec<u8> {
        n.as_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(mtime_ns: i64, ctime_ns: i64) -> Stamp {
        Stamp {
            dev: 1,
            ino: 2,
            mode: 0o644,
            size: 3,
            mtime_ns,
            ctime_ns,
        }
    }

    /// A cache survives a write/load round trip, and a flipped byte, a
    /// truncation or a foreign file anywhere makes it empty (never a wrong hit).
    #[test]
    fn corrupt_or_torn_caches_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut c = StatCache::load(&path);
        assert!(c.is_empty());
        let old = stamp(1_000_000_000_123, 1_000_000_000_123);
        c.record(Path::new("a/b.js"), old, [7; 32]);
        c.save().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut c = StatCache::load(&path);
        assert_eq!(c.lookup(Path::new("a/b.js"), &old), Some([7; 32]));
        assert_eq!(c.counts, Counts { hashed: 0, cached: 1 });

        for i in [0, 17, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let mut c = StatCache::load(&path);
            assert!(c.is_empty(), "byte {i} flipped");
            assert_eq!(c.lookup(Path::new("a/b.js"), &old), None);
        }
        for cut in [0, 10, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(StatCache::load(&path).is_empty(), "cut at {cut}");
        }
        std::fs::write(&path, b"not a cache at all, but long enough to have a checksum").unwrap();
        assert!(StatCache::load(&path).is_empty());
    }

    /// Any change of the stat tuple misses; so does an entry whose file was
    /// changed within the margin before the scan that verified it.
    #[test]
    fn changed_or_racy_stamps_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut c = StatCache::load(&path);
        let old = stamp(1_000_000_000_123, 1_000_000_000_123);
        let fresh_ns = now_ns() - 1_000_000; // 1 ms before the scan
        let fresh = stamp(fresh_ns, fresh_ns);
        c.record(Path::new("old"), old, [1; 32]);
        c.record(Path::new("fresh"), fresh, [2; 32]);
        c.save().unwrap();
        let mut c = StatCache::load(&path);
        assert_eq!(c.lookup(Path::new("fresh"), &fresh), None, "racy: re-hashed");
        for changed in [
            Stamp { ino: 9, ..old },
            Stamp { dev: 9, ..old },
            Stamp { size: 4, ..old },
            Stamp { mode: 0o755, ..old },
            Stamp {
                mtime_ns: old.mtime_ns + 1,
                ..old
            },
            Stamp {
                ctime_ns: old.ctime_ns + 1,
                ..old
            },
        ] {
            assert_eq!(c.lookup(Path::new("old"), &changed), None, "{changed:?}");
        }
        assert_eq!(c.lookup(Path::new("old"), &old), Some([1; 32]));
        // Whole-second times get the wide margin.
        let s = (now_ns() / 1_000_000_000 - 1) * 1_000_000_000;
        assert!(stamp(s, s).racy(now_ns()));
        assert!(!stamp(s - 3_000_000_000, s - 3_000_000_000).racy(now_ns()));
    }

    /// A scan in which every file came from the cache writes nothing.
    #[test]
    fn an_unchanged_scan_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut c = StatCache::load(&path);
        let old = stamp(1_000_000_000_123, 1_000_000_000_123);
        c.record(Path::new("x"), old, [1; 32]);
        c.save().unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let mut c = StatCache::load(&path);
        assert!(c.lookup(Path::new("x"), &old).is_some());
        c.save().unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!((before.ino(), before.mtime_nsec()), (after.ino(), after.mtime_nsec()));
        // A file that disappeared is a change.
        let c = StatCache::load(&path);
        c.save().unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), before.ino());
    }

    /// The nodes computed here give the store's tree digest for the same tree.
    #[test]
    fn nodes_match_the_store_tree_digest() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
        std::fs::write(r.join("hello.txt"), "hello\n").unwrap();
        std::fs::write(r.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(r.join("bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("hello.txt", r.join("link")).unwrap();
        let f = |p: &str, x: bool| {
            let mut file = std::fs::File::open(r.join(p)).unwrap();
            let len = file.metadata().unwrap().len();
            node::file(&mut file, x, len).unwrap().unwrap()
        };
        let mut bin = vec![(b"run".to_vec(), node::FILE, f("bin/run", true))];
        let mut top = vec![
            (b"link".to_vec(), node::SYMLINK, node::symlink(Path::new("hello.txt"))),
            (b"hello.txt".to_vec(), node::FILE, f("hello.txt", false)),
            (b"empty".to_vec(), node::DIRECTORY, node::directory(&mut [])),
            (b"bin".to_vec(), node::DIRECTORY, node::directory(&mut bin)),
        ];
        let ours = farm_store::Digest::from_bytes(node::directory(&mut top));
        assert_eq!(ours, farm_store::tree_digest(r).unwrap());
        assert_eq!(
            ours.to_string(),
            "sha256:caefd048c19a70064e48b0b8722c074b65b26c7d6fe848b0a86b4bb9742ef462",
            "spec/tree-digest.md's reference tree"
        );
        // A reader that yields fewer bytes than the stat said is no digest.
        assert_eq!(node::file(&mut &b"ab"[..], false, 3).unwrap(), None);
    }
}
