//! The safe unpacker: tarballs (gzip, xz, zstd or uncompressed, sniffed
//! from magic bytes) and Debian packages (an ar archive whose `data.tar.*`
//! member is the payload) into a directory, refusing anything that could
//! write outside it. `spec/store.md` ("Archives") states every rule.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// How [`unpack_archive`] reads an archive (the store's `add_archive` takes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tarball; `strip` leading path components are dropped from every
    /// member (like `tar --strip-components`), members with no more are skipped.
    Tar { strip: u32 },
    /// A Debian binary package: its `data.tar{,.gz,.xz,.zst}` member is unpacked.
    Deb,
}

/// Compressions farm unpacks; sniffed from the stream's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

/// How [`unpack_tar_into`] reads a tarball.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TarOptions {
    /// Leading path components dropped from every member, as in
    /// [`ArchiveFormat::Tar`].
    pub strip: u32,
    pub members: Members,
}

/// Which members are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Members {
    /// Files, directories, symlinks and hardlinks (device nodes and fifos
    /// are always skipped).
    All,
    /// Only files and directories, as npm installs a package tarball:
    /// symlinks, hardlinks, sparse files and any other type are skipped
    /// (and counted in [`UnpackStats::skipped_other`]). Their paths are
    /// still checked.
    FilesAndDirectories,
}

/// What an unpack wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Device nodes and fifos, which never enter the store.
    pub skipped_special: u64,
    /// Members left out by [`Members::FilesAndDirectories`].
    pub skipped_other: u64,
}

/// Errors from unpacking an archive; `archive` names the file (and member).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{archive}: {action}: {source}")]
    Io {
        archive: String,
        action: &'static str,
        source: io::Error,
    },
    #[error("{archive}: the file is empty; expected a tar archive")]
    Empty { archive: String },
    #[error("{archive}: {found}-compressed tar archives are not supported; expected gzip, xz, zstd or none; hint: recompress it with xz or zstd")]
    UnsupportedCompression { archive: String, found: &'static str },
    #[error("{archive}: not a tar archive ({compression:?} stream starting with {head}); expected the `ustar` magic at offset 257")]
    NotTar {
        archive: String,
        compression: Compression,
        head: String,
    },
    #[error("{archive}: not a Debian binary package: {reason}")]
    NotDeb { archive: String, reason: String },
    #[error("{archive}: member `{entry}`: {reason}; farm refuses archive members that could land outside the unpack directory")]
    UnsafePath {
        archive: String,
        entry: String,
        reason: &'static str,
    },
    #[error("{archive}: symlink `{entry}` -> `{target}` climbs above the archive root; farm refuses links that escape the unpacked tree")]
    SymlinkEscapes {
        archive: String,
        entry: String,
        target: String,
    },
    #[error("{archive}: member `{entry}` would be written through the symlink `{symlink}`; farm never writes through links while unpacking")]
    ThroughSymlink {
        archive: String,
        entry: String,
        symlink: String,
    },
    #[error("{archive}: hardlink `{entry}` -> `{target}`: {reason}")]
    BadHardlink {
        archive: String,
        entry: String,
        target: String,
        reason: String,
    },
    #[error("{archive}: member `{entry}`: {reason}")]
    Conflict {
        archive: String,
        entry: String,
        reason: &'static str,
    },
    #[error("{archive}: member `{entry}`: unsupported tar entry type {type_byte:?}")]
    UnsupportedEntry {
        archive: String,
        entry: String,
        type_byte: char,
    },
    #[error("{archive}: member `{entry}`: {action}: {source}")]
    Member {
        archive: String,
        entry: String,
        action: &'static str,
        source: io::Error,
    },
}

/// Unpacks `archive` into `dest`, which must not exist yet. Absolute paths,
/// `..` components and relative symlinks that climb above the root are
/// refused; nothing is ever written through a symlink; hardlinks must point
/// at earlier members; device nodes and fifos are skipped (and counted).
/// Absolute symlink targets are kept: they mean a path inside whatever root
/// the tree is later mounted as (a Debian package's `/lib64/ld-linux…`).
/// Permissions, owners and times from the archive are ignored except for
/// execute bits; the store normalises the rest.
pub fn unpack_archive(archive: &Path, format: ArchiveFormat, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let label = archive.display().to_string();
    let file = File::open(archive).map_err(|source| UnpackError::Io {
        archive: label.clone(),
        action: "opening",
        source,
    })?;
    fs::create_dir(dest).map_err(|source| UnpackError::Io {
        archive: label.clone(),
        action: "creating the unpack directory",
        source,
    })?;
    match format {
        ArchiveFormat::Tar { strip } => {
            let options = TarOptions {
                strip,
                members: Members::All,
            };
            unpack_tar_stream(Box::new(BufReader::new(file)), &label, options, dest)
        }
        ArchiveFormat::Deb => unpack_deb(file, &label, dest),
    }
}

/// Unpacks the tarball `archive` into `dest`, which is created (with its
/// parents) when missing and may already hold files: members replace them
/// as later members replace earlier ones. Every rule of [`unpack_archive`]
/// applies; `dest` itself and the directories above it are trusted.
pub fn unpack_tar_into(archive: &Path, options: TarOptions, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let label = archive.display().to_string();
    let file = File::open(archive).map_err(|source| UnpackError::Io {
        archive: label.clone(),
        action: "opening",
        source,
    })?;
    fs::create_dir_all(dest).map_err(|source| UnpackError::Io {
        archive: label.clone(),
        action: "creating the unpack directory",
        source,
    })?;
    unpack_tar_stream(Box::new(BufReader::new(file)), &label, options, dest)
}

fn unpack_deb(file: File, label: &str, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let not_deb = |reason: String| UnpackError::NotDeb {
        archive: label.to_string(),
        reason,
    };
    let mut ar = ar::Archive::new(BufReader::new(file));
    let mut saw_version = false;
    while let Some(member) = ar.next_entry() {
        let mut member = member.map_err(|e| not_deb(format!("reading the ar archive: {e}")))?;
        let id = String::from_utf8_lossy(member.header().identifier())
            .trim_end_matches([' ', '/'])
            .to_string();
        if id == "debian-binary" {
            let mut version = String::new();
            (&mut member)
                .take(64)
                .read_to_string(&mut version)
                .map_err(|e| not_deb(format!("reading `debian-binary`: {e}")))?;
            if !version.starts_with("2.") {
                return Err(not_deb(format!(
                    "`debian-binary` says {:?}; expected format 2.x",
                    version.trim_end()
                )));
            }
            saw_version = true;
        } else if id.starts_with("data.tar") {
            if !saw_version {
                return Err(not_deb(format!("`{id}` comes before `debian-binary`")));
            }
            let member_label = format!("{label} (member {id})");
            let options = TarOptions {
                strip: 0,
                members: Members::All,
            };
            return unpack_tar_stream(Box::new(member), &member_label, options, dest);
        }
    }
    Err(not_deb(if saw_version {
        "it has no `data.tar*` member".to_string()
    } else {
        "it has neither `debian-binary` nor `data.tar*` members".to_string()
    }))
}

/// Reads up to `n` bytes and returns them with a reader that yields the whole stream again.
fn peek<'r>(mut r: Box<dyn Read + 'r>, n: u64) -> io::Result<(Vec<u8>, Box<dyn Read + 'r>)> {
    let mut head = Vec::new();
    (&mut r).take(n).read_to_end(&mut head)?;
    Ok((head.clone(), Box::new(io::Cursor::new(head).chain(r))))
}

enum Sniffed {
    Known(Compression),
    Unsupported(&'static str),
}

fn sniff(head: &[u8]) -> Sniffed {
    match head {
        [0x1f, 0x8b, ..] => Sniffed::Known(Compression::Gzip),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Sniffed::Known(Compression::Xz),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Sniffed::Known(Compression::Zstd),
        [b'B', b'Z', b'h', ..] => Sniffed::Unsupported("bzip2"),
        [0x04, 0x22, 0x4d, 0x18, ..] => Sniffed::Unsupported("lz4"),
        [0x5d, 0x00, 0x00, ..] => Sniffed::Unsupported("lzma"),
        _ => Sniffed::Known(Compression::None),
    }
}

/// A ustar/GNU header has `ustar` at offset 257; an empty archive is all zeros.
fn looks_like_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar") || (head.len() >= 512 && head.iter().all(|b| *b == 0))
}

fn unpack_tar_stream<'r>(
    raw: Box<dyn Read + 'r>,
    label: &str,
    options: TarOptions,
    dest: &Path,
) -> Result<UnpackStats, UnpackError> {
    let io_err = |action: &'static str| {
        move |source| UnpackError::Io {
            archive: label.to_string(),
            action,
            source,
        }
    };
    let (head, raw) = peek(raw, 512).map_err(io_err("reading"))?;
    if head.is_empty() {
        return Err(UnpackError::Empty {
            archive: label.to_string(),
        });
    }
    let compression = match sniff(&head) {
        Sniffed::Known(c) => c,
        Sniffed::Unsupported(found) => {
            return Err(UnpackError::UnsupportedCompression {
                archive: label.to_string(),
                found,
            })
        }
    };
    let decoded: Box<dyn Read + 'r> = match compression {
        Compression::None => raw,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw).map_err(io_err("starting zstd"))?),
    };
    let (head, decoded) = peek(decoded, 512).map_err(io_err("decompressing"))?;
    if !looks_like_tar(&head) {
        let shown = &head[..head.len().min(8)];
        return Err(UnpackError::NotTar {
            archive: label.to_string(),
            compression,
            head: hex::encode(shown),
        });
    }

    let mut archive = tar::Archive::new(decoded);
    let mut unpacker = Unpacker {
        dest,
        label,
        strip: options.strip,
        members: options.members,
        stats: UnpackStats::default(),
        real_dirs: HashSet::new(),
    };
    for entry in archive.entries().map_err(io_err("reading the tar stream"))? {
        let entry = entry.map_err(io_err("reading the tar stream"))?;
        unpacker.unpack(entry)?;
    }
    // Read to the end so a truncated or corrupt compressed stream is an error, not a short tree.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(io_err("reading past the end of the tar stream"))?;
    Ok(unpacker.stats)
}

struct Unpacker<'a> {
    dest: &'a Path,
    label: &'a str,
    strip: u32,
    members: Members,
    stats: UnpackStats,
    /// Relative paths known to be real directories (never symlinks) under `dest`.
    real_dirs: HashSet<PathBuf>,
}

impl Unpacker<'_> {
    fn unpack<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry
            .path()
            .map_err(|source| UnpackError::Io {
                archive: self.label.to_string(),
                action: "reading a member name",
                source,
            })?
            .into_owned();
        let name = raw_path.display().to_string();
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XGlobalHeader => return Ok(()),
            EntryType::Block | EntryType::Char | EntryType::Fifo => {
                self.stats.skipped_special += 1;
                return Ok(());
            }
            _ => {}
        }
        let Some(rel) = self.relative(&raw_path, &name)? else {
            return Ok(());
        };
        if self.members == Members::FilesAndDirectories
            // npm's tar (node-tar) writes these types and no others.
            && !matches!(kind, EntryType::Directory | EntryType::Regular | EntryType::Continuous)
        {
            self.stats.skipped_other += 1;
            return Ok(());
        }
        let path = self.make_parents(&rel, &name)?;
        let label = self.label;
        let member_err = |action: &'static str| {
            let (archive, entry) = (label.to_string(), name.clone());
            move |source| UnpackError::Member {
                archive,
                entry,
                action,
                source,
            }
        };
        match kind {
            EntryType::Directory => {
                if !self.clear_leaf(&path, &name, true)? {
                    fs::create_dir(&path).map_err(member_err("creating directory"))?;
                }
                self.real_dirs.insert(rel);
                self.stats.directories += 1;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear_leaf(&path, &name, false)?;
                let executable = entry.header().mode().map_err(member_err("reading mode"))? & 0o111 != 0;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .open(&path)
                    .map_err(member_err("creating file"))?;
                io::copy(&mut entry, &mut out).map_err(member_err("writing file"))?;
                self.stats.files += 1;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(member_err("reading symlink target"))?
                    .ok_or_else(|| UnpackError::UnsafePath {
                        archive: self.label.to_string(),
                        entry: name.clone(),
                        reason: "symlink without a target",
                    })?
                    .into_owned();
                self.check_symlink(&rel, &target, &name)?;
                self.clear_leaf(&path, &name, false)?;
                std::os::unix::fs::symlink(&target, &path).map_err(member_err("creating symlink"))?;
                self.stats.symlinks += 1;
            }
            EntryType::Link => {
                let raw_target = entry
                    .link_name()
                    .map_err(member_err("reading hardlink target"))?
                    .unwrap_or_default();
                let target_name = raw_target.display().to_string();
                let bad = |reason: String| UnpackError::BadHardlink {
                    archive: label.to_string(),
                    entry: name.clone(),
                    target: target_name.clone(),
                    reason,
                };
                let Some(target_rel) = self.relative(&raw_target, &name)? else {
                    return Err(bad(format!("the target is removed by strip = {}", self.strip)));
                };
                if target_rel == rel {
                    return Ok(()); // a member linked to itself is already in place
                }
                self.check_parents_are_dirs(&target_rel, &name)?;
                let target = self.dest.join(&target_rel);
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => return Err(bad("the target is a directory".into())),
                    Ok(_) => {}
                    Err(_) => return Err(bad("the target is not an earlier member of the archive".into())),
                }
                self.clear_leaf(&path, &name, false)?;
                fs::hard_link(&target, &path).map_err(member_err("creating hardlink"))?;
                self.stats.hardlinks += 1;
            }
            other => {
                return Err(UnpackError::UnsupportedEntry {
                    archive: self.label.to_string(),
                    entry: name,
                    type_byte: other.as_byte() as char,
                })
            }
        }
        Ok(())
    }

    /// The member's path relative to `dest` after stripping, or None when
    /// nothing is left of it. Absolute paths and `..` are refused.
    fn relative(&self, raw: &Path, name: &str) -> Result<Option<PathBuf>, UnpackError> {
        let unsafe_path = |reason| UnpackError::UnsafePath {
            archive: self.label.to_string(),
            entry: name.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        for c in raw.components() {
            match c {
                Component::Prefix(_) | Component::RootDir => return Err(unsafe_path("absolute path")),
                Component::ParentDir => return Err(unsafe_path("path contains a `..` component")),
                Component::CurDir => {}
                Component::Normal(part) => parts.push(part),
            }
        }
        let strip = self.strip as usize;
        if parts.len() <= strip {
            return Ok(None);
        }
        Ok(Some(parts[strip..].iter().collect()))
    }

    /// Creates the missing parents of `rel` and returns its full path; every
    /// existing parent must be a real directory, never a symlink.
    fn make_parents(&mut self, rel: &Path, name: &str) -> Result<PathBuf, UnpackError> {
        let mut current = PathBuf::new();
        let parents: Vec<Component> = rel.components().collect();
        for c in &parents[..parents.len() - 1] {
            current.push(c);
            if self.real_dirs.contains(&current) {
                continue;
            }
            let full = self.dest.join(&current);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => return Err(self.through_symlink(name, &current)),
                Ok(_) => {
                    return Err(UnpackError::Conflict {
                        archive: self.label.to_string(),
                        entry: name.to_string(),
                        reason: "a parent of this member is a file in the archive",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(|source| UnpackError::Member {
                        archive: self.label.to_string(),
                        entry: name.to_string(),
                        action: "creating parent directory",
                        source,
                    })?;
                }
                Err(source) => {
                    return Err(UnpackError::Member {
                        archive: self.label.to_string(),
                        entry: name.to_string(),
                        action: "inspecting parent directory",
                        source,
                    })
                }
            }
            self.real_dirs.insert(current.clone());
        }
        Ok(self.dest.join(rel))
    }

    /// Like [`Self::make_parents`] but creates nothing (for hardlink targets).
    fn check_parents_are_dirs(&self, rel: &Path, name: &str) -> Result<(), UnpackError> {
        let mut current = PathBuf::new();
        let parents: Vec<Component> = rel.components().collect();
        for c in &parents[..parents.len() - 1] {
            current.push(c);
            if self.real_dirs.contains(&current) {
                continue;
            }
            match fs::symlink_metadata(self.dest.join(&current)) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => return Err(self.through_symlink(name, &current)),
                _ => {
                    return Err(UnpackError::BadHardlink {
                        archive: self.label.to_string(),
                        entry: name.to_string(),
                        target: rel.display().to_string(),
                        reason: "the target is not an earlier member of the archive".into(),
                    })
                }
            }
        }
        Ok(())
    }

    fn through_symlink(&self, name: &str, symlink: &Path) -> UnpackError {
        UnpackError::ThroughSymlink {
            archive: self.label.to_string(),
            entry: name.to_string(),
            symlink: symlink.display().to_string(),
        }
    }

    /// Makes room for a member at `path`: an earlier file or symlink there is
    /// removed (a later member wins, as with tar); a directory stays for a
    /// directory member and is a conflict otherwise. Returns whether a
    /// directory already exists there.
    fn clear_leaf(&self, path: &Path, name: &str, want_dir: bool) -> Result<bool, UnpackError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() && want_dir => Ok(true),
            Ok(m) if m.is_dir() => Err(UnpackError::Conflict {
                archive: self.label.to_string(),
                entry: name.to_string(),
                reason: "an earlier member made a directory here",
            }),
            Ok(_) => {
                // Unlink, never truncate: the old name may be hardlinked to another member.
                fs::remove_file(path).map_err(|source| UnpackError::Member {
                    archive: self.label.to_string(),
                    entry: name.to_string(),
                    action: "replacing an earlier member",
                    source,
                })?;
                Ok(false)
            }
            Err(_) => Ok(false),
        }
    }

    /// Relative symlink targets must stay inside the tree, judged from the link's own directory.
    fn check_symlink(&self, rel: &Path, target: &Path, name: &str) -> Result<(), UnpackError> {
        if target.as_os_str().is_empty() {
            return Err(UnpackError::UnsafePath {
                archive: self.label.to_string(),
                entry: name.to_string(),
                reason: "symlink with an empty target",
            });
        }
        if target.is_absolute() {
            return Ok(());
        }
        let mut depth = rel.components().count() - 1;
        for c in target.components() {
            match c {
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                Component::ParentDir if depth > 0 => depth -= 1,
                _ => {
                    return Err(UnpackError::SymlinkEscapes {
                        archive: self.label.to_string(),
                        entry: name.to_string(),
                        target: target.display().to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar built with the tar crate's raw header API, so names like `../x`
    /// (which its safe builder refuses) can be written.
    fn raw_tar(members: &[(&str, EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..path.len()].copy_from_slice(path.as_bytes());
                if let Some(l) = link {
                    gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack_bytes(bytes: &[u8], strip: u32) -> (tempfile::TempDir, Result<UnpackStats, UnpackError>) {
        let t = tempfile::tempdir().unwrap();
        let archive = t.path().join("a.tar");
        fs::write(&archive, bytes).unwrap();
        let r = unpack_archive(&archive, ArchiveFormat::Tar { strip }, &t.path().join("out"));
        (t, r)
    }

    #[test]
    fn parent_dir_member_is_refused() {
        let tar = raw_tar(&[
            ("ok", EntryType::Regular, b"x", None),
            ("../evil", EntryType::Regular, b"x", None),
        ]);
        let (t, r) = unpack_bytes(&tar, 0);
        let err = r.unwrap_err();
        assert!(matches!(err, UnpackError::UnsafePath { .. }), "{err}");
        assert!(err.to_string().contains("../evil"), "names the member: {err}");
        assert!(!t.path().join("evil").exists());
    }

    #[test]
    fn absolute_member_is_refused() {
        let tar = raw_tar(&[("/tmp/evil-farm-test", EntryType::Regular, b"x", None)]);
        let err = unpack_bytes(&tar, 0).1.unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::UnsafePath {
                    reason: "absolute path",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let tar = raw_tar(&[
            ("link", EntryType::Symlink, b"", Some("/tmp")),
            ("link/evil", EntryType::Regular, b"x", None),
        ]);
        let err = unpack_bytes(&tar, 0).1.unwrap_err();
        assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    }

    #[test]
    fn relative_symlink_climbing_out_is_refused_but_inside_and_absolute_are_kept() {
        let escape = raw_tar(&[("a/up", EntryType::Symlink, b"", Some("../../etc"))]);
        let err = unpack_bytes(&escape, 0).1.unwrap_err();
        assert!(matches!(err, UnpackError::SymlinkEscapes { .. }), "{err}");

        let fine = raw_tar(&[
            ("a/b/up", EntryType::Symlink, b"", Some("../../top")),
            ("abs", EntryType::Symlink, b"", Some("/lib/x86_64-linux-gnu/ld.so")),
        ]);
        let (t, r) = unpack_bytes(&fine, 0);
        assert_eq!(r.unwrap().symlinks, 2);
        assert_eq!(
            fs::read_link(t.path().join("out/a/b/up")).unwrap(),
            Path::new("../../top")
        );
        assert_eq!(
            fs::read_link(t.path().join("out/abs")).unwrap(),
            Path::new("/lib/x86_64-linux-gnu/ld.so")
        );
    }

    #[test]
    fn hardlinks_strip_and_devices() {
        let tar = raw_tar(&[
            ("pkg/bin/tool", EntryType::Regular, b"binary", None),
            ("pkg/bin/alias", EntryType::Link, b"", Some("pkg/bin/tool")),
            ("pkg/dev/null", EntryType::Char, b"", None),
            ("pkg/pipe", EntryType::Fifo, b"", None),
            ("toplevel-file-stripped-away", EntryType::Regular, b"x", None),
        ]);
        let (t, r) = unpack_bytes(&tar, 1);
        let stats = r.unwrap();
        assert_eq!(
            stats,
            UnpackStats {
                files: 1,
                directories: 0,
                symlinks: 0,
                hardlinks: 1,
                skipped_special: 2,
                skipped_other: 0,
            }
        );
        let out = t.path().join("out");
        assert_eq!(fs::read(out.join("bin/alias")).unwrap(), b"binary");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(out.join("bin/alias")).unwrap().ino(),
            fs::metadata(out.join("bin/tool")).unwrap().ino()
        );
        assert!(!out.join("dev/null").exists() && !out.join("pipe").exists());
        assert!(!out.join("toplevel-file-stripped-away").exists());
    }

    #[test]
    fn hardlink_to_a_missing_or_outside_target_is_refused() {
        let missing = raw_tar(&[("a", EntryType::Link, b"", Some("nothing-here"))]);
        assert!(matches!(
            unpack_bytes(&missing, 0).1.unwrap_err(),
            UnpackError::BadHardlink { .. }
        ));
        let outside = raw_tar(&[("a", EntryType::Link, b"", Some("../../etc/passwd"))]);
        assert!(matches!(
            unpack_bytes(&outside, 0).1.unwrap_err(),
            UnpackError::UnsafePath { .. }
        ));
        let via_link = raw_tar(&[
            ("l", EntryType::Symlink, b"", Some("/etc")),
            ("a", EntryType::Link, b"", Some("l/passwd")),
        ]);
        assert!(matches!(
            unpack_bytes(&via_link, 0).1.unwrap_err(),
            UnpackError::ThroughSymlink { .. }
        ));
    }

    #[test]
    fn a_later_member_replaces_an_earlier_one_without_touching_its_hardlinks() {
        let tar = raw_tar(&[
            ("a", EntryType::Regular, b"first", None),
            ("b", EntryType::Link, b"", Some("a")),
            ("b", EntryType::Regular, b"second", None),
        ]);
        let (t, r) = unpack_bytes(&tar, 0);
        r.unwrap();
        assert_eq!(fs::read(t.path().join("out/a")).unwrap(), b"first");
        assert_eq!(fs::read(t.path().join("out/b")).unwrap(), b"second");
    }

    #[test]
    fn bzip2_and_garbage_get_clear_errors() {
        let err = unpack_bytes(b"BZh91AY&SY....", 0).1.unwrap_err();
        assert!(
            matches!(err, UnpackError::UnsupportedCompression { found: "bzip2", .. }),
            "{err}"
        );
        let err = unpack_bytes(&[7u8; 600], 0).1.unwrap_err();
        assert!(matches!(err, UnpackError::NotTar { .. }), "{err}");
        let err = unpack_bytes(b"", 0).1.unwrap_err();
        assert!(matches!(err, UnpackError::Empty { .. }), "{err}");
    }

    #[test]
    fn truncated_gzip_is_an_error_not_a_short_tree() {
        let tar = raw_tar(&[("f", EntryType::Regular, &[b'z'; 100_000], None)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let err = unpack_bytes(&gz[..gz.len() - 10], 0).1.unwrap_err();
        assert!(err.to_string().contains("a.tar"), "{err}");
    }

    /// Proves the npm way: only files and directories land, links are
    /// skipped (but their paths still checked), and an existing directory
    /// is unpacked into.
    #[test]
    fn files_and_directories_only_into_an_existing_directory() {
        let tar = raw_tar(&[
            ("package/index.js", EntryType::Regular, b"js", None),
            ("package/lib", EntryType::Directory, b"", None),
            ("package/link", EntryType::Symlink, b"", Some("index.js")),
            ("package/hard", EntryType::Link, b"", Some("package/index.js")),
        ]);
        let t = tempfile::tempdir().unwrap();
        let archive = t.path().join("p.tgz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &tar).unwrap();
        fs::write(&archive, gz.finish().unwrap()).unwrap();
        let dest = t.path().join("node_modules/@scope/p");
        fs::create_dir_all(dest.join("node_modules")).unwrap();
        let options = TarOptions {
            strip: 1,
            members: Members::FilesAndDirectories,
        };
        let stats = unpack_tar_into(&archive, options, &dest).unwrap();
        assert_eq!((stats.files, stats.directories, stats.skipped_other), (1, 1, 2));
        let mut names: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["index.js", "lib", "node_modules"]);

        let unsafe_link = raw_tar(&[("package/../up", EntryType::Symlink, b"", Some("x"))]);
        fs::write(&archive, unsafe_link).unwrap();
        let err = unpack_tar_into(&archive, options, &dest).unwrap_err();
        assert!(matches!(err, UnpackError::UnsafePath { .. }), "{err}");
    }
}
