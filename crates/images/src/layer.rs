//! One image layer: which host files go where, and the exact bytes of its
//! uncompressed tar (whose SHA-256 is the layer's diffID).
//!
//! The tar is written header by header so that nothing about the host
//! leaks in: entries in a fixed order, owners as given, no user or group
//! names, modes from the executable bit only, mtimes clamped to
//! SOURCE_DATE_EPOCH, no atime/ctime/xattrs, and a PAX header only where
//! ustar cannot hold a value. `spec/images.md` lists every rule.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Largest size, uid or gid a ustar numeric field holds (11 and 7 octal digits).
const USTAR_SIZE_MAX: u64 = 0o77_777_777_777;
const USTAR_ID_MAX: u32 = 0o7_777_777;

const BLOCK: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File {
        source: PathBuf,
        size: u64,
        /// `(dev, ino)` when the file has other names, to write them as hardlinks.
        inode: Option<(u64, u64)>,
    },
    Symlink(Vec<u8>),
    /// A later name of a file already in the layer: its in-layer path.
    HardLink(Vec<u8>),
}

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
    /// In-layer path: relative, `/`-separated, no trailing `/`.
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    origin: Origin,
}

/// Every entry of one layer, in tar order, with the host files to read.
#[derive(Debug)]
pub(crate) struct LayerPlan {
    name: String,
    entries: Vec<Entry>,
}

/// Tar order: paths compared component by component (as if `/` sorted
/// below every other byte), so a directory's entries follow it directly,
/// as with GNU tar's `--sort=name`.
fn sort_key(path: &[u8]) -> Vec<u8> {
    path.iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
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
                path,
                kind: Kind::Dir,
                mode: attrs.mode,
                uid: attrs.uid,
                gid: attrs.gid,
                mtime: attrs.mtime,
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

    fn walk(&mut self, dir: &Path, image_dir: &[u8], content: &LayerContent) -> Result<(), LayerError> {
        let mut names: Vec<_> = Vec::new();
        for item in fs::read_dir(dir).map_err(self.read_err(dir))? {
            names.push(item.map_err(self.read_err(dir))?.file_name());
        }
        names.sort();
        for name in names {
            let host = dir.join(&name);
            let meta = fs::symlink_metadata(&host).map_err(self.read_err(&host))?;
            let mut path = image_dir.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let entry = self.entry_for(path.clone(), &host, &meta, content)?;
            self.insert(entry)?;
            if meta.is_dir() {
                self.walk(&host, &path, content)?;
            }
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
        let (kind, mode) = if ft.is_dir() {
            (Kind::Dir, DIR_OR_EXEC_MODE)
        } else if ft.is_file() {
            let mode = if meta.mode() & 0o111 != 0 {
                DIR_OR_EXEC_MODE
            } else {
                FILE_MODE
            };
            let kind = Kind::File {
                source: host.to_path_buf(),
                size: meta.len(),
                inode: (meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
            };
            (kind, mode)
        } else if ft.is_symlink() {
            let target = fs::read_link(host).map_err(self.read_err(host))?;
            (Kind::Symlink(target.as_os_str().as_bytes().to_vec()), SYMLINK_MODE)
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
            path,
            kind,
            mode,
            uid: content.uid,
            gid: content.gid,
            mtime: (meta.mtime().max(0) as u64).min(self.epoch),
            origin: Origin::Source(host.to_path_buf()),
        })
    }

    /// Adds `entry`; directories from several contents merge (a content's
    /// own beats an implied parent), anything else at a taken path is an error.
    fn insert(&mut self, entry: Entry) -> Result<(), LayerError> {
        let layer = self.layer;
        match self.entries.entry(sort_key(&entry.path)) {
            MapEntry::Vacant(slot) => {
                slot.insert(entry);
            }
            MapEntry::Occupied(mut slot) => {
                let existing = slot.get_mut();
                let shown = String::from_utf8_lossy(&entry.path).into_owned();
                if existing.kind != Kind::Dir || entry.kind != Kind::Dir {
                    return Err(LayerError::Overlap {
                        layer: layer.into(),
                        entry: shown,
                        first: existing.origin.describe(),
                        second: entry.origin.describe(),
                    });
                }
                let implied = |e: &Entry| matches!(e.origin, Origin::Implied { .. });
                match (implied(existing), implied(&entry)) {
                    (true, false) => *existing = entry,
                    (false, false) if (existing.uid, existing.gid) != (entry.uid, entry.gid) => {
                        return Err(LayerError::OwnerConflict {
                            layer: layer.into(),
                            entry: shown,
                            first: format!("{}:{} in {}", existing.uid, existing.gid, existing.origin.describe()),
                            second: format!("{}:{} in {}", entry.uid, entry.gid, entry.origin.describe()),
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
            if let Kind::File { inode: Some(inode), .. } = entry.kind {
                match first_names.get(&inode) {
                    Some(first) => entry.kind = Kind::HardLink(first.clone()),
                    None => {
                        first_names.insert(inode, entry.path.clone());
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

    /// Adds this layer's directories to `lower`, for the layers above it.
    pub(crate) fn record_dirs(&self, lower: &mut LowerDirs) {
        for e in self.entries.iter().filter(|e| e.kind == Kind::Dir) {
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
        let write_err = |source: io::Error| LayerError::Write {
            layer: self.name.clone(),
            what: "the layer's tar stream".into(),
            source,
        };
        for entry in &self.entries {
            let (header, pax) = self.header_for(entry);
            if let Some((pax_header, records)) = pax {
                out.write_all(pax_header.as_bytes()).map_err(write_err)?;
                out.write_all(&records).map_err(write_err)?;
                pad(out, records.len() as u64).map_err(write_err)?;
            }
            out.write_all(header.as_bytes()).map_err(write_err)?;
            if let Kind::File { source, size, .. } = &entry.kind {
                self.copy_file(source, *size, out)?;
                pad(out, *size).map_err(write_err)?;
            }
        }
        out.write_all(&[0u8; 2 * BLOCK]).map_err(write_err)
    }

    /// Copies exactly `size` bytes of `source`, failing if it has more or fewer.
    fn copy_file<W: Write>(&self, source: &Path, size: u64, out: &mut W) -> Result<(), LayerError> {
        let read_err = |e| LayerError::Read {
            layer: self.name.clone(),
            path: source.into(),
            source: e,
        };
        let file = fs::File::open(source).map_err(read_err)?;
        let mut limited = file.take(size);
        let mut buf = vec![0u8; 256 * 1024];
        let mut copied = 0u64;
        loop {
            let n = limited.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(|source| LayerError::Write {
                layer: self.name.clone(),
                what: "the layer's tar stream".into(),
                source,
            })?;
            copied += n as u64;
        }
        let changed = |found: String| LayerError::Changed {
            layer: self.name.clone(),
            path: source.into(),
            expected: size,
            found,
        };
        if copied != size {
            return Err(changed(format!("{copied} bytes")));
        }
        let mut file = limited.into_inner();
        if file.read(&mut [0u8; 1]).map_err(read_err)? != 0 {
            return Err(changed("more".into()));
        }
        Ok(())
    }

    /// The ustar header of `entry`, and a PAX header with its records when
    /// a value does not fit ustar.
    fn header_for(&self, entry: &Entry) -> (tar::Header, Option<(tar::Header, Vec<u8>)>) {
        let mut name = entry.path.clone();
        if entry.kind == Kind::Dir {
            name.push(b'/');
        }
        let mut h = tar::Header::new_ustar();
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        if !set_ustar_path(&mut h, &name) {
            pax.push(("path", name.clone()));
            let cut = name.len().min(100);
            h.as_old_mut().name[..cut].copy_from_slice(&name[..cut]);
        }
        let (entry_type, size, link) = match &entry.kind {
            Kind::Dir => (tar::EntryType::Directory, 0, None),
            Kind::File { size, .. } => (tar::EntryType::Regular, *size, None),
            Kind::Symlink(target) => (tar::EntryType::Symlink, 0, Some(target)),
            Kind::HardLink(target) => (tar::EntryType::Link, 0, Some(target)),
        };
        h.set_entry_type(entry_type);
        if let Some(link) = link {
            let field = &mut h.as_old_mut().linkname;
            let cut = link.len().min(field.len());
            field[..cut].copy_from_slice(&link[..cut]);
            if link.len() > field.len() {
                pax.push(("linkpath", link.clone()));
            }
        }
        if size > USTAR_SIZE_MAX {
            pax.push(("size", size.to_string().into_bytes()));
            h.set_size(0);
        } else {
            h.set_size(size);
        }
        let mut id_field = |key: &'static str, id: u32| {
            if id > USTAR_ID_MAX {
                pax.push((key, id.to_string().into_bytes()));
                0
            } else {
                u64::from(id)
            }
        };
        let (uid, gid) = (id_field("uid", entry.uid), id_field("gid", entry.gid));
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mode(entry.mode);
        h.set_mtime(entry.mtime);
        h.set_cksum();
        if pax.is_empty() {
            return (h, None);
        }
        pax.sort_by(|a, b| a.0.cmp(b.0));
        let mut records = Vec::new();
        if pax.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
            records.extend(pax_record("hdrcharset", b"BINARY"));
        }
        for (key, value) in &pax {
            records.extend(pax_record(key, value));
        }
        let mut ph = tar::Header::new_ustar();
        let base = entry.path.rsplit(|b| *b == b'/').next().unwrap_or_default();
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend_from_slice(base);
        pax_name.truncate(100);
        ph.as_old_mut().name[..pax_name.len()].copy_from_slice(&pax_name);
        ph.set_entry_type(tar::EntryType::XHeader);
        ph.set_size(records.len() as u64);
        ph.set_mode(FILE_MODE);
        ph.set_uid(0);
        ph.set_gid(0);
        ph.set_mtime(entry.mtime);
        ph.set_cksum();
        (h, Some((ph, records)))
    }
}

/// Puts `path` in ustar's `name` (100 bytes) or `prefix` (155) + `name`,
/// split at a `/`; false when it cannot fit.
fn set_ustar_path(h: &mut tar::Header, path: &[u8]) -> bool {
    let ustar = h.as_ustar_mut().expect("a ustar header");
    if path.len() <= ustar.name.len() {
        ustar.name[..path.len()].copy_from_slice(path);
        return true;
    }
    // The longest prefix that fits leaves the shortest name.
    let split = path
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'/' && *i <= ustar.prefix.len() && *i + 1 < path.len())
        .map(|(i, _)| i)
        .next_back();
    match split {
        Some(i) if path.len() - i - 1 <= ustar.name.len() => {
            ustar.prefix[..i].copy_from_slice(&path[..i]);
            ustar.name[..path.len() - i - 1].copy_from_slice(&path[i + 1..]);
            true
        }
        _ => false,
    }
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `len` counts itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn pad<W: Write>(out: &mut W, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

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

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"abc"), b"12 path=abc\n");
        let r = pax_record("path", &[b'x'; 93]);
        assert_eq!(r.len(), 103);
        assert!(r.starts_with(b"103 path="));
    }
}
