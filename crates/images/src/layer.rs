//! One image layer: which host files go where, and the exact bytes of its
//! uncompressed tar (whose SHA-256 is the layer's diffID).
//!
//! This module decides what the tar holds so that nothing about the host
//! leaks in: entries in tar order, owners as given, modes from the
//! executable bit only, mtimes clamped to SOURCE_DATE_EPOCH, hardlinks for
//! a file's later names. farm-archive's writer writes it (ustar headers, no
//! user or group names, no atime/ctime/xattrs, and a PAX header only where
//! ustar cannot hold a value). `spec/images.md` lists every rule.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use farm_archive::{tar_order, Format, TarEntry, TarError, TarKind, TarWriter, WalkError};
use serde::{Deserialize, Serialize};

/// A named layer and the host trees or files it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// What the layer is for, e.g. `base`, `python-deps`, `app`, `frontend`;
    /// recorded in the config's history.
    pub name: String,
    pub contents: Vec<LayerContent>,
}

/// One host directory or file placed at an absolute path in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerContent {
    /// A directory (its contents go under `target`) or a single file or symlink.
    pub source: PathBuf,
    /// Absolute in-image path, e.g. `/app`; `/` puts a directory's contents at the root.
    pub target: String,
    /// Owner of everything this content adds (not of the parent directories it implies).
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer `{layer}`: target {target:?} for {source_path}: {message}")]
    BadTarget {
        layer: String,
        target: String,
        source_path: PathBuf,
        message: String,
    },
    #[error("layer `{layer}`: {path}: {source}")]
    Read {
        layer: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("layer `{layer}`: `/{entry}` is written by both {first} and {second}; hint: every path may come from one content only, move one of them to another target or layer")]
    Overlap {
        layer: String,
        entry: String,
        first: String,
        second: String,
    },
    /// `first` and `second` name each source with the owner it gives.
    #[error("layer `{layer}`: directory `/{entry}` is owned by {first} but by {second}; hint: give both contents the same uid/gid")]
    OwnerConflict {
        layer: String,
        entry: String,
        first: String,
        second: String,
    },
    #[error("layer `{layer}`: {path} is {kind}; image layers hold only regular files, directories and symlinks")]
    Unsupported {
        layer: String,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("layer `{layer}`: {path} changed while the layer was written: expected {expected} bytes, found {found}; hint: image sources must not change during a build (use store paths)")]
    Changed {
        layer: String,
        path: PathBuf,
        expected: u64,
        found: String,
    },
    #[error("layer `{layer}`: the tar hashed to {second} when compressed but to {first} before; a source changed during the build")]
    Unstable {
        layer: String,
        first: String,
        second: String,
    },
    #[error("layer `{layer}`: writing {what}: {source}")]
    Write {
        layer: String,
        what: String,
        source: io::Error,
    },
}

/// Mode of directories, executables and the parent directories farm adds.
const DIR_OR_EXEC_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;
const SYMLINK_MODE: u32 = 0o777;

/// Where an entry came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Source(PathBuf),
    /// A parent directory that farm adds because `target` (from `source`) needs it.
    Implied {
        target: String,
        source: PathBuf,
    },
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Source(p) => p.display().to_string(),
            Origin::Implied { target, source } => {
                format!("the parent directories of {target} (for {})", source.display())
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// What the tar holds; its path is the in-layer path (relative,
    /// `/`-separated, no trailing `/`).
    tar: TarEntry,
    /// `(dev, ino)` of a file that has other names, to write them as hardlinks.
    inode: Option<(u64, u64)>,
    /// A regular file's identity on the host, for [`LayerPlan::fingerprint`].
    stamp: Option<FileStamp>,
    origin: Origin,
}

/// What `stat` says about a file when planned: device, inode, size and the
/// modification and change times in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp([i64; 5]);

impl FileStamp {
    fn of(meta: &Metadata) -> FileStamp {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        FileStamp([
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            ns(meta.mtime(), meta.mtime_nsec()),
            ns(meta.ctime(), meta.ctime_nsec()),
        ])
    }
}

/// Every entry of one layer, in tar order, with the host files to read.
#[derive(Debug)]
pub(crate) struct LayerPlan {
    name: String,
    entries: Vec<Entry>,
}

/// Splits an absolute in-image path into components.
fn target_components(target: &str) -> Result<Vec<&str>, String> {
    if !target.starts_with('/') {
        return Err("expected an absolute in-image path such as /app".into());
    }
    if target.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let parts: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err("must not contain `.` or `..` components".into());
    }
    Ok(parts)
}

/// Owner, mode and mtime of a directory some layer put in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirAttrs {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
}

/// Directories of the layers below, by in-layer path: a parent directory
/// a layer only implies is written with these attributes, so an upper
/// layer never resets an existing directory's owner (as a `COPY` into an
/// existing directory would not).
pub(crate) type LowerDirs = HashMap<Vec<u8>, DirAttrs>;

struct Planner<'a> {
    layer: &'a str,
    epoch: u64,
    lower: &'a LowerDirs,
    /// By [`tar_order`] of the path.
    entries: BTreeMap<Vec<u8>, Entry>,
}

impl Planner<'_> {
    fn read_err(&self, path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
        let path = path.to_path_buf();
        move |source| LayerError::Read {
            layer: self.layer.into(),
            path,
            source,
        }
    }

    fn add_content(&mut self, content: &LayerContent) -> Result<(), LayerError> {
        let parts = target_components(&content.target).map_err(|message| LayerError::BadTarget {
            layer: self.layer.into(),
            target: content.target.clone(),
            source_path: content.source.clone(),
            message,
        })?;
        let meta = fs::symlink_metadata(&content.source).map_err(self.read_err(&content.source))?;
        if parts.is_empty() && !meta.is_dir() {
            return Err(LayerError::BadTarget {
                layer: self.layer.into(),
                target: content.target.clone(),
                source_path: content.source.clone(),
                message: "only a directory's contents can go at `/`; give a file its full in-image path".into(),
            });
        }
        // Parents of the target: as a lower layer has them, else root-owned.
        for depth in 1..parts.len() {
            let path = parts[..depth].join("/").into_bytes();
            let attrs = self.lower.get(&path).copied().unwrap_or(DirAttrs {
                uid: 0,
                gid: 0,
                mode: DIR_OR_EXEC_MODE,
                mtime: self.epoch,
            });
            self.insert(Entry {
                tar: TarEntry {
                    path,
                    kind: TarKind::Dir,
                    mode: attrs.mode,
                    uid: attrs.uid,
                    gid: attrs.gid,
                    mtime: attrs.mtime,
                },
                inode: None,
                stamp: None,
                origin: Origin::Implied {
                    target: content.target.clone(),
                    source: content.source.clone(),
                },
            })?;
        }
        let path = parts.join("/").into_bytes();
        if !path.is_empty() {
            let entry = self.entry_for(path.clone(), &content.source, &meta, content)?;
            self.insert(entry)?;
        }
        if meta.is_dir() {
            self.walk(&content.source, &path, content)?;
        }
        Ok(())
    }

    /// Adds everything below the directory `dir`, whose in-layer path is `image_dir`.
    fn walk(&mut self, dir: &Path, image_dir: &[u8], content: &LayerContent) -> Result<(), LayerError> {
        let walk_err = |e: WalkError| LayerError::Read {
            layer: self.layer.into(),
            path: e.path,
            source: e.source,
        };
        for found in farm_archive::walk(dir) {
            let found = found.map_err(walk_err)?;
            let meta = found.metadata().map_err(walk_err)?;
            let mut path = image_dir.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(found.relative().as_os_str().as_bytes());
            let entry = self.entry_for(path, found.path(), &meta, content)?;
            self.insert(entry)?;
        }
        Ok(())
    }

    fn entry_for(
        &self,
        path: Vec<u8>,
        host: &Path,
        meta: &Metadata,
        content: &LayerContent,
    ) -> Result<Entry, LayerError> {
        let ft = meta.file_type();
        let mut inode = None;
        let mut stamp = None;
        let (kind, mode) = if ft.is_dir() {
            (TarKind::Dir, DIR_OR_EXEC_MODE)
        } else if ft.is_file() {
            let mode = if meta.mode() & 0o111 != 0 {
                DIR_OR_EXEC_MODE
            } else {
                FILE_MODE
            };
            inode = (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
            stamp = Some(FileStamp::of(meta));
            let kind = TarKind::File {
                source: host.to_path_buf(),
                size: meta.len(),
            };
            (kind, mode)
        } else if ft.is_symlink() {
            let target = fs::read_link(host).map_err(self.read_err(host))?;
            (TarKind::Symlink(target.as_os_str().as_bytes().to_vec()), SYMLINK_MODE)
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_fifo() {
                "a fifo"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node"
            } else {
                "of an unknown file type"
            };
            return Err(LayerError::Unsupported {
                layer: self.layer.into(),
                path: host.to_path_buf(),
                kind,
            });
        };
        Ok(Entry {
            tar: TarEntry {
                path,
                kind,
                mode,
                uid: content.uid,
                gid: content.gid,
                mtime: (meta.mtime().max(0) as u64).min(self.epoch),
            },
            inode,
            stamp,
            origin: Origin::Source(host.to_path_buf()),
        })
    }

    /// Adds `entry`; directories from several contents merge (a content's
    /// own beats an implied parent), anything else at a taken path is an error.
    fn insert(&mut self, entry: Entry) -> Result<(), LayerError> {
        let layer = self.layer;
        match self.entries.entry(tar_order(&entry.tar.path)) {
            MapEntry::Vacant(slot) => {
                slot.insert(entry);
            }
            MapEntry::Occupied(mut slot) => {
                let existing = slot.get_mut();
                let shown = String::from_utf8_lossy(&entry.tar.path).into_owned();
                if existing.tar.kind != TarKind::Dir || entry.tar.kind != TarKind::Dir {
                    return Err(LayerError::Overlap {
                        layer: layer.into(),
                        entry: shown,
                        first: existing.origin.describe(),
                        second: entry.origin.describe(),
                    });
                }
                let implied = |e: &Entry| matches!(e.origin, Origin::Implied { .. });
                let owner = |e: &Entry| (e.tar.uid, e.tar.gid);
                match (implied(existing), implied(&entry)) {
                    (true, false) => *existing = entry,
                    (false, false) if owner(existing) != owner(&entry) => {
                        return Err(LayerError::OwnerConflict {
                            layer: layer.into(),
                            entry: shown,
                            first: format!(
                                "{}:{} in {}",
                                existing.tar.uid,
                                existing.tar.gid,
                                existing.origin.describe()
                            ),
                            second: format!("{}:{} in {}", entry.tar.uid, entry.tar.gid, entry.origin.describe()),
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl LayerPlan {
    /// Walks every content of `spec` (nothing is read but metadata) and
    /// fixes the layer's entries. `epoch` is SOURCE_DATE_EPOCH; `lower`
    /// holds the directories of the layers below.
    pub(crate) fn new(spec: &LayerSpec, epoch: u64, lower: &LowerDirs) -> Result<LayerPlan, LayerError> {
        let mut planner = Planner {
            layer: &spec.name,
            epoch,
            lower,
            entries: BTreeMap::new(),
        };
        for content in &spec.contents {
            planner.add_content(content)?;
        }
        let mut entries: Vec<Entry> = planner.entries.into_values().collect();
        // The first name of a multiply-linked file in tar order carries the
        // data; later names link to it.
        let mut first_names: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        for entry in &mut entries {
            if let Some(inode) = entry.inode {
                match first_names.get(&inode) {
                    Some(first) => entry.tar.kind = TarKind::HardLink(first.clone()),
                    None => {
                        first_names.insert(inode, entry.tar.path.clone());
                    }
                }
            }
        }
        Ok(LayerPlan {
            name: spec.name.clone(),
            entries,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A digest of everything the tar is made from as `stat` sees it: each
    /// entry's header fields and each file's device, inode, size, mtime and
    /// ctime. Equal fingerprints mean the tar is almost certainly the same
    /// (a file rewritten within one timestamp tick with its size kept is
    /// not seen), so it only picks a strategy: the layer cache checks the
    /// real diffID before it uses anything (see `compress::produce_layer`).
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        h.update(b"farm-images layer plan v1\0");
        let bytes = |h: &mut Sha256, b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        for e in &self.entries {
            let t = &e.tar;
            bytes(&mut h, &t.path);
            let (tag, extra): (u8, &[u8]) = match &t.kind {
                TarKind::Dir => (0, b""),
                TarKind::File { size, .. } => {
                    h.update(size.to_le_bytes());
                    (1, b"")
                }
                TarKind::Symlink(target) => (2, target),
                TarKind::HardLink(first) => (3, first),
            };
            h.update([tag]);
            bytes(&mut h, extra);
            for n in [t.mode as u64, t.uid as u64, t.gid as u64, t.mtime] {
                h.update(n.to_le_bytes());
            }
            for n in e.stamp.map_or([0; 5], |s| s.0) {
                h.update(n.to_le_bytes());
            }
        }
        h.finalize().into()
    }

    /// Adds this layer's directories to `lower`, for the layers above it.
    pub(crate) fn record_dirs(&self, lower: &mut LowerDirs) {
        for e in self.entries.iter().map(|e| &e.tar).filter(|e| e.kind == TarKind::Dir) {
            let attrs = DirAttrs {
                uid: e.uid,
                gid: e.gid,
                mode: e.mode,
                mtime: e.mtime,
            };
            lower.insert(e.path.clone(), attrs);
        }
    }

    /// Writes the layer's tar to `out`, reading each file as it goes.
    pub(crate) fn write_tar<W: Write>(&self, out: &mut W) -> Result<(), LayerError> {
        let mut tar = TarWriter::new(out, Format::Pax);
        for entry in &self.entries {
            tar.append(&entry.tar).map_err(|e| self.tar_err(e))?;
        }
        tar.finish().map_err(|e| self.tar_err(e))?;
        Ok(())
    }

    fn tar_err(&self, e: TarError) -> LayerError {
        let layer = self.name.clone();
        match e {
            TarError::Open { path, source } | TarError::Read { path, source } => {
                LayerError::Read { layer, path, source }
            }
            TarError::Changed { path, expected, found } => LayerError::Changed {
                layer,
                path,
                expected,
                found,
            },
            TarError::Write { source, .. } | TarError::Finish { source } => LayerError::Write {
                layer,
                what: "the layer's tar stream".into(),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use farm_archive::writer::BLOCK;

    use super::*;

    fn tar_of(spec: &LayerSpec, epoch: u64) -> Vec<u8> {
        let plan = LayerPlan::new(spec, epoch, &LowerDirs::new()).unwrap();
        let mut out = Vec::new();
        plan.write_tar(&mut out).unwrap();
        out
    }

    fn content(source: &Path, target: &str, uid: u32) -> LayerContent {
        LayerContent {
            source: source.into(),
            target: target.into(),
            uid,
            gid: uid,
        }
    }

    fn set_mtime(path: &Path, secs: i64) {
        let ts = nix::sys::time::TimeSpec::new(secs, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &ts,
            &ts,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    struct Seen {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<String>,
        data: Vec<u8>,
        uname_empty: bool,
    }

    fn read_back(bytes: &[u8]) -> Vec<Seen> {
        let mut archive = tar::Archive::new(bytes);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push(Seen {
                path: String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e.link_name_bytes().map(|l| String::from_utf8(l.to_vec()).unwrap()),
                data,
                uname_empty: h.username_bytes().is_none_or(|u| u.is_empty())
                    && h.groupname_bytes().is_none_or(|g| g.is_empty()),
            });
        }
        seen
    }

    /// Proves the ordering, parent, owner, mode, mtime, symlink and
    /// hardlink rules on a small tree, by reading the tar back.
    #[test]
    fn entries_are_sorted_with_parents_owners_modes_and_clamped_times() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("a/x")).unwrap();
        fs::write(src.join("a/x/f"), b"hello").unwrap();
        fs::write(src.join("a-b"), b"dash").unwrap();
        fs::write(src.join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(src.join("a-b"), fs::Permissions::from_mode(0o4666)).unwrap();
        fs::hard_link(src.join("a/x/f"), src.join("z-link")).unwrap();
        symlink("a/x/f", src.join("sym")).unwrap();
        for p in ["a/x/f", "a-b", "run.sh", "sym", "a/x", "a", ""] {
            set_mtime(&src.join(p), 5_000);
        }
        set_mtime(&src.join("a-b"), 1);
        let spec = LayerSpec {
            name: "app".into(),
            contents: vec![content(&src, "/srv/app", 1000)],
        };
        let seen = read_back(&tar_of(&spec, 2_000));
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "srv/",
                "srv/app/",
                "srv/app/a/",
                "srv/app/a/x/",
                "srv/app/a/x/f",
                "srv/app/a-b",
                "srv/app/run.sh",
                "srv/app/sym",
                "srv/app/z-link"
            ],
            "component-wise order, parents first, directories with a trailing slash"
        );
        let by = |p: &str| seen.iter().find(|s| s.path == p).unwrap();
        let srv = by("srv/");
        assert_eq!(
            (srv.uid, srv.gid, srv.mode, srv.mtime),
            (0, 0, 0o755, 2_000),
            "implied parent"
        );
        let app = by("srv/app/");
        assert_eq!(
            (app.uid, app.gid, app.mode),
            (1000, 1000, 0o755),
            "the content's own root"
        );
        assert_eq!(by("srv/app/a-b").mode, 0o644, "setuid and write bits are not kept");
        assert_eq!(by("srv/app/a-b").mtime, 1, "an older mtime is kept");
        assert_eq!(
            by("srv/app/a/x/f").mtime,
            2_000,
            "a newer mtime is clamped to the epoch"
        );
        assert_eq!(by("srv/app/run.sh").mode, 0o755);
        let sym = by("srv/app/sym");
        assert_eq!(
            (sym.kind, sym.link.as_deref(), sym.mode),
            (tar::EntryType::Symlink, Some("a/x/f"), 0o777)
        );
        let link = by("srv/app/z-link");
        assert_eq!(link.kind, tar::EntryType::Link);
        assert_eq!(
            link.link.as_deref(),
            Some("srv/app/a/x/f"),
            "hardlink to the first name"
        );
        assert!(link.data.is_empty());
        assert_eq!(by("srv/app/a/x/f").data, b"hello");
        assert!(seen.iter().all(|s| s.uname_empty), "no user or group names");
        assert!(
            seen.iter().all(|s| s.kind != tar::EntryType::XHeader),
            "no PAX header when nothing needs one"
        );
    }

    /// Proves PAX headers appear only for a long path or link name, and
    /// that readers get the full values back.
    #[test]
    fn pax_only_for_values_ustar_cannot_hold() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        // 150 bytes: fits as ustar prefix + name.
        let medium = format!("{}/{}", "m".repeat(80), "n".repeat(69));
        // A 120-byte final component cannot be split.
        let long_name = "l".repeat(120);
        fs::create_dir_all(src.join(&medium).parent().unwrap()).unwrap();
        fs::write(src.join(&medium), b"m").unwrap();
        fs::write(src.join(&long_name), b"l").unwrap();
        symlink("t".repeat(150), src.join("longlink")).unwrap();
        let spec = LayerSpec {
            name: "pax".into(),
            contents: vec![content(&src, "/", 0)],
        };
        let bytes = tar_of(&spec, 10);
        let seen = read_back(&bytes);
        assert!(seen.iter().any(|s| s.path == medium && s.data == b"m"));
        assert!(seen.iter().any(|s| s.path == long_name && s.data == b"l"));
        let link = seen.iter().find(|s| s.path == "longlink").unwrap();
        assert_eq!(link.link.as_deref(), Some("t".repeat(150).as_str()));

        let raw: Vec<tar::Header> = {
            let mut headers = Vec::new();
            let mut off = 0;
            while off + BLOCK <= bytes.len() {
                let mut block = [0u8; BLOCK];
                block.copy_from_slice(&bytes[off..off + BLOCK]);
                if block.iter().all(|b| *b == 0) {
                    break;
                }
                let h = tar::Header::from_byte_slice(&block).clone();
                let size = h.size().unwrap() as usize;
                headers.push(h);
                off += BLOCK + size.div_ceil(BLOCK) * BLOCK;
            }
            headers
        };
        let pax_count = raw.iter().filter(|h| h.entry_type() == tar::EntryType::XHeader).count();
        assert_eq!(pax_count, 2, "one PAX header for the long name, one for the long link");
        assert!(raw.iter().all(|h| h.as_ustar().is_some()), "ustar headers only");
    }

    /// Proves that two contents writing one file is an error naming both,
    /// while shared directories with the same owner merge.
    #[test]
    fn overlapping_files_are_an_error_naming_both_sources() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        fs::create_dir_all(one.join("etc")).unwrap();
        fs::create_dir_all(two.join("etc")).unwrap();
        fs::write(one.join("etc/a"), b"1").unwrap();
        fs::write(two.join("etc/b"), b"2").unwrap();
        let merged = LayerSpec {
            name: "base".into(),
            contents: vec![content(&one, "/", 0), content(&two, "/", 0)],
        };
        let seen = read_back(&tar_of(&merged, 1));
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["etc/", "etc/a", "etc/b"]);

        fs::write(two.join("etc/a"), b"other").unwrap();
        let err = LayerPlan::new(&merged, 1, &LowerDirs::new()).unwrap_err().to_string();
        assert!(
            err.contains("/etc/a")
                && err.contains(&one.join("etc/a").display().to_string())
                && err.contains(&two.join("etc/a").display().to_string()),
            "{err}"
        );

        let owners = LayerSpec {
            name: "base".into(),
            contents: vec![content(&one, "/", 0), content(&two, "/", 1000)],
        };
        let err = LayerPlan::new(&owners, 1, &LowerDirs::new()).unwrap_err().to_string();
        assert!(
            err.contains("/etc") && err.contains("0:0") && err.contains("1000:1000"),
            "{err}"
        );
    }

    /// Proves an upper layer's implied parents copy the lower layer's
    /// directory attributes instead of resetting them to root.
    #[test]
    fn implied_parents_keep_the_attributes_of_lower_layers() {
        let dir = tempfile::tempdir().unwrap();
        let (app, web) = (dir.path().join("app"), dir.path().join("web"));
        fs::create_dir_all(&app).unwrap();
        fs::create_dir_all(&web).unwrap();
        fs::write(web.join("index.html"), b"<p>").unwrap();
        set_mtime(&app, 7);
        let lower_spec = LayerSpec {
            name: "app".into(),
            contents: vec![content(&app, "/srv/app", 1000)],
        };
        let mut lower = LowerDirs::new();
        LayerPlan::new(&lower_spec, 100, &lower)
            .unwrap()
            .record_dirs(&mut lower);
        let upper = LayerSpec {
            name: "web".into(),
            contents: vec![content(&web, "/srv/app/static", 2000)],
        };
        let plan = LayerPlan::new(&upper, 100, &lower).unwrap();
        let mut out = Vec::new();
        plan.write_tar(&mut out).unwrap();
        let seen = read_back(&out);
        let attrs: Vec<(&str, u64, u32, u64)> =
            seen.iter().map(|s| (s.path.as_str(), s.uid, s.mode, s.mtime)).collect();
        assert_eq!(
            attrs,
            [
                ("srv/", 0, 0o755, 100),
                ("srv/app/", 1000, 0o755, 7),
                ("srv/app/static/", 2000, 0o755, 100),
                ("srv/app/static/index.html", 2000, 0o644, 100)
            ]
        );
    }

    #[test]
    fn targets_must_be_absolute_and_files_need_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        for (target, expect) in [("app", "absolute"), ("/a/../b", "`..`"), ("/", "full in-image path")] {
            let spec = LayerSpec {
                name: "l".into(),
                contents: vec![content(&file, target, 0)],
            };
            let err = LayerPlan::new(&spec, 1, &LowerDirs::new()).unwrap_err().to_string();
            assert!(
                err.contains(expect) && err.contains(&file.display().to_string()),
                "{err}"
            );
        }
        let spec = LayerSpec {
            name: "l".into(),
            contents: vec![content(&dir.path().join("missing"), "/x", 0)],
        };
        let err = LayerPlan::new(&spec, 1, &LowerDirs::new()).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("layer `l`"), "{err}");
    }

    #[test]
    fn a_file_that_grows_after_planning_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"12345").unwrap();
        let spec = LayerSpec {
            name: "l".into(),
            contents: vec![content(&file, "/f", 0)],
        };
        let plan = LayerPlan::new(&spec, 1, &LowerDirs::new()).unwrap();
        fs::write(&file, b"123456").unwrap();
        let err = plan.write_tar(&mut Vec::new()).unwrap_err().to_string();
        assert!(
            err.contains("changed while the layer was written") && err.contains("expected 5 bytes"),
            "{err}"
        );
    }

    /// Proves ids beyond ustar's 7 octal digits go into PAX records (and
    /// only those records).
    #[test]
    fn large_ids_use_pax_records() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let spec = LayerSpec {
            name: "ids".into(),
            contents: vec![LayerContent {
                source: file,
                target: "/f".into(),
                uid: 3_000_000,
                gid: 5,
            }],
        };
        let bytes = tar_of(&spec, 1);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut records = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if let Some(pax) = entry.pax_extensions().unwrap() {
                for ext in pax {
                    let ext = ext.unwrap();
                    records.push((ext.key().unwrap().to_string(), ext.value().unwrap().to_string()));
                }
                assert_eq!(entry.path().unwrap(), Path::new("f"));
                assert_eq!(entry.header().gid().unwrap(), 5);
            }
        }
        assert_eq!(records, [("uid".to_string(), "3000000".to_string())]);
    }
}
