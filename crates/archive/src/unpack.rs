//! The safe unpacker: tarballs (gzip, xz, zstd or uncompressed, sniffed
//! from magic bytes) and Debian packages (an ar archive whose `data.tar.*`
//! member is the payload) into a directory, refusing anything that could
//! write outside it, link outside it, or fill the disk. `spec/store.md`
//! ("Archives") states every rule.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use farm_formats::size::format_size;
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

/// How large one archive may grow when unpacked: the bytes of file contents
/// and symlink targets written, against a fixed cap and against the
/// archive's own size. `None` turns a bound off. A project sets both in
/// farm.toml `[limits]` (`unpack-size`, `unpack-ratio`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most bytes one archive may unpack to.
    pub max_size: Option<u64>,
    /// Most unpacked bytes per byte of the archive file.
    pub max_ratio: Option<u64>,
}

impl UnpackLimits {
    /// 20 GiB, the same bound as a download of unknown size (the same
    /// default as farm.toml's `[limits] unpack-size`).
    pub const DEFAULT_MAX_SIZE: u64 = 20 << 30;
    /// Real packages compress at most ~20:1; deflate cannot pass ~1030:1, so
    /// only xz or zstd streams built for it get past this (`[limits] unpack-ratio`).
    pub const DEFAULT_MAX_RATIO: u64 = 1000;
    /// No bound at all (for trusted archives farm wrote itself).
    pub const NONE: UnpackLimits = UnpackLimits {
        max_size: None,
        max_ratio: None,
    };

    /// The bytes an archive of `archive_bytes` may unpack to, and which bound says so.
    fn budget(&self, archive_bytes: u64) -> Option<(u64, UnpackLimit)> {
        let size = self.max_size.map(|n| (n, UnpackLimit::Size(n)));
        let ratio = self.max_ratio.map(|ratio| {
            (
                ratio.saturating_mul(archive_bytes),
                UnpackLimit::Ratio { ratio, archive_bytes },
            )
        });
        match (size, ratio) {
            (Some(s), Some(r)) => Some(if r.0 < s.0 { r } else { s }),
            (s, r) => s.or(r),
        }
    }
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_size: Some(Self::DEFAULT_MAX_SIZE),
            max_ratio: Some(Self::DEFAULT_MAX_RATIO),
        }
    }
}

/// The bound an archive ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnpackLimit {
    /// [`UnpackLimits::max_size`].
    Size(u64),
    /// [`UnpackLimits::max_ratio`] times the archive's size.
    Ratio { ratio: u64, archive_bytes: u64 },
}

impl UnpackLimit {
    /// The farm.toml key that raises this bound.
    pub fn key(&self) -> &'static str {
        match self {
            UnpackLimit::Size(_) => "unpack-size",
            UnpackLimit::Ratio { .. } => "unpack-ratio",
        }
    }

    /// The bound in bytes.
    pub fn bytes(&self) -> u64 {
        match *self {
            UnpackLimit::Size(n) => n,
            UnpackLimit::Ratio { ratio, archive_bytes } => ratio.saturating_mul(archive_bytes),
        }
    }
}

impl fmt::Display for UnpackLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UnpackLimit::Size(n) => write!(f, "the unpack size limit of {} ({n} bytes)", format_size(n)),
            UnpackLimit::Ratio { ratio, archive_bytes } => write!(
                f,
                "the unpack ratio limit of {ratio} times the archive's {archive_bytes} bytes ({} bytes)",
                self.bytes()
            ),
        }
    }
}

/// How [`unpack_tar_into`] reads a tarball.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TarOptions {
    /// Leading path components dropped from every member, as in
    /// [`ArchiveFormat::Tar`].
    pub strip: u32,
    pub members: Members,
    pub limits: UnpackLimits,
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
    /// Bytes of file contents and symlink targets written (what the limits count).
    pub bytes: u64,
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
    #[error("{archive}: symlink `{entry}` -> `{target}` climbs above the archive root{via}; farm refuses links that escape the unpacked tree")]
    SymlinkEscapes {
        archive: String,
        entry: String,
        target: String,
        /// ` (by way of the symlink `…`)` when an earlier link took it there, else empty.
        via: String,
    },
    #[error("{archive}: member `{entry}` would change `{path}`, which the earlier symlink `{link}` resolves through, so that link could then point outside the unpacked tree; farm refuses archives whose links are only safe in one order")]
    ChangesEarlierLink {
        archive: String,
        entry: String,
        path: String,
        link: String,
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
    #[error(
        "{archive}: member `{entry}` takes the unpacked size to {reached} bytes ({}), past {limit}; farm stopped unpacking and kept nothing; hint: if the archive is genuine, raise `[limits] {}` in farm.toml",
        format_size(*.reached),
        .limit.key()
    )]
    TooLarge {
        archive: String,
        entry: String,
        /// Bytes unpacked so far plus those the member would add.
        reached: u64,
        limit: UnpackLimit,
    },
}

/// Unpacks `archive` into `dest`, which must not exist yet. Absolute paths,
/// `..` components and symlinks that resolve above the root (through the
/// tree as unpacked so far) are refused; nothing is ever written through a
/// symlink; hardlinks must point at earlier members; device nodes and fifos
/// are skipped (and counted). Absolute symlink targets are kept: they mean a
/// path inside whatever root the tree is later mounted as (a Debian
/// package's `/lib64/ld-linux…`). Unpacking stops as soon as it would pass
/// `limits`. Permissions, owners and times from the archive are ignored
/// except for execute bits; the store normalises the rest. On any error
/// `dest` is removed again.
pub fn unpack_archive(
    archive: &Path,
    format: ArchiveFormat,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let label = archive.display().to_string();
    let (file, archive_bytes) = open_archive(archive, &label)?;
    fs::create_dir(dest).map_err(|source| UnpackError::Io {
        archive: label.clone(),
        action: "creating the unpack directory",
        source,
    })?;
    let budget = limits.budget(archive_bytes);
    let result = match format {
        ArchiveFormat::Tar { strip } => unpack_tar_stream(
            Box::new(BufReader::new(file)),
            &label,
            strip,
            Members::All,
            budget,
            dest,
        ),
        ArchiveFormat::Deb => unpack_deb(file, &label, budget, dest),
    };
    if result.is_err() {
        // Best effort: the caller's staging directory goes too.
        let _ = fs::remove_dir_all(dest);
    }
    result
}

/// Unpacks the tarball `archive` into `dest`, which is created (with its
/// parents) when missing and may already hold files: members replace them
/// as later members replace earlier ones. Every rule of [`unpack_archive`]
/// applies; `dest` itself and the directories above it are trusted. After
/// an error `dest` may hold part of the archive: callers unpack into a
/// staging directory they discard.
pub fn unpack_tar_into(archive: &Path, options: TarOptions, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let label = archive.display().to_string();
    let (file, archive_bytes) = open_archive(archive, &label)?;
    fs::create_dir_all(dest).map_err(|source| UnpackError::Io {
        archive: label.clone(),
        action: "creating the unpack directory",
        source,
    })?;
    unpack_tar_stream(
        Box::new(BufReader::new(file)),
        &label,
        options.strip,
        options.members,
        options.limits.budget(archive_bytes),
        dest,
    )
}

fn open_archive(archive: &Path, label: &str) -> Result<(File, u64), UnpackError> {
    let io_err = |action| {
        move |source| UnpackError::Io {
            archive: label.to_string(),
            action,
            source,
        }
    };
    let file = File::open(archive).map_err(io_err("opening"))?;
    let len = file.metadata().map_err(io_err("reading its size"))?.len();
    Ok((file, len))
}

fn unpack_deb(
    file: File,
    label: &str,
    budget: Option<(u64, UnpackLimit)>,
    dest: &Path,
) -> Result<UnpackStats, UnpackError> {
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
            return unpack_tar_stream(Box::new(member), &member_label, 0, Members::All, budget, dest);
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
    strip: u32,
    members: Members,
    budget: Option<(u64, UnpackLimit)>,
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
        strip,
        members,
        budget,
        stats: UnpackStats::default(),
        real_dirs: HashSet::new(),
        depended_on: HashMap::new(),
        buf: vec![0; 64 << 10],
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

/// Linux's limit on symlinks followed in one path resolution (MAXSYMLINKS).
const MAX_LINK_HOPS: u32 = 40;

/// One step of a symlink target.
enum Step {
    Root,
    Up,
    Name(OsString),
}

fn steps(path: &Path) -> VecDeque<Step> {
    path.components()
        .filter_map(|c| match c {
            Component::Prefix(_) | Component::RootDir => Some(Step::Root),
            Component::CurDir => None,
            Component::ParentDir => Some(Step::Up),
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
        })
        .collect()
}

/// A directory a symlink resolution stands in, with the paths whose current
/// state put it there: symlinks followed on the way, and names that did not
/// exist yet (or were files) and were taken to be directories. Going `..`
/// out of it relies on those paths staying as they are.
struct Place {
    name: OsString,
    relies_on: Vec<PathBuf>,
}

struct Unpacker<'a> {
    dest: &'a Path,
    label: &'a str,
    strip: u32,
    members: Members,
    /// Most bytes this archive may unpack to, and which limit says so.
    budget: Option<(u64, UnpackLimit)>,
    stats: UnpackStats,
    /// Relative paths known to be real directories (never symlinks) under `dest`.
    real_dirs: HashSet<PathBuf>,
    /// Paths earlier symlinks resolve through, with the first such link: a
    /// later member may not make them a symlink or replace a symlink there.
    depended_on: HashMap<PathBuf, String>,
    buf: Vec<u8>,
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
                self.check_depended_on(&rel, &name, false)?;
                if !self.clear_leaf(&path, &name, true)? {
                    fs::create_dir(&path).map_err(member_err("creating directory"))?;
                }
                self.real_dirs.insert(rel);
                self.stats.directories += 1;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Refused before a byte is written when the header already says it is too much.
                self.charge(entry.size(), &name, false)?;
                self.check_depended_on(&rel, &name, false)?;
                self.clear_leaf(&path, &name, false)?;
                let executable = entry.header().mode().map_err(member_err("reading mode"))? & 0o111 != 0;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .open(&path)
                    .map_err(member_err("creating file"))?;
                let mut buf = std::mem::take(&mut self.buf);
                let copied = self.copy_counted(&mut entry, &mut out, &mut buf, &name);
                self.buf = buf;
                copied?;
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
                self.charge(target.as_os_str().len() as u64, &name, true)?;
                self.check_link(&rel, &target, &name)?;
                self.check_depended_on(&rel, &name, true)?;
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
                let is_symlink = match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => return Err(bad("the target is a directory".into())),
                    Ok(m) => m.file_type().is_symlink(),
                    Err(_) => return Err(bad("the target is not an earlier member of the archive".into())),
                };
                if is_symlink {
                    // link(2) links the symlink itself: a new symlink here,
                    // whose target is read from this directory, not the old one.
                    let text = fs::read_link(&target).map_err(member_err("reading the linked symlink"))?;
                    self.check_link(&rel, &text, &name)?;
                }
                self.check_depended_on(&rel, &name, is_symlink)?;
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

    /// Counts `n` more unpacked bytes (`commit`) or checks that they would
    /// fit (a header's declared size), refusing them past the budget.
    fn charge(&mut self, n: u64, name: &str, commit: bool) -> Result<(), UnpackError> {
        let reached = self.stats.bytes.saturating_add(n);
        if let Some((max, limit)) = self.budget {
            if reached > max {
                return Err(UnpackError::TooLarge {
                    archive: self.label.to_string(),
                    entry: name.to_string(),
                    reached,
                    limit,
                });
            }
        }
        if commit {
            self.stats.bytes = reached;
        }
        Ok(())
    }

    /// Copies a member's data, each chunk counted against the budget before
    /// it is written: the header's size is not trusted (sparse files, pax).
    fn copy_counted(
        &mut self,
        from: &mut impl Read,
        to: &mut File,
        buf: &mut [u8],
        name: &str,
    ) -> Result<(), UnpackError> {
        let label = self.label;
        let member_err = |action: &'static str| {
            move |source| UnpackError::Member {
                archive: label.to_string(),
                entry: name.to_string(),
                action,
                source,
            }
        };
        loop {
            let n = match from.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(member_err("reading file")(e)),
            };
            self.charge(n as u64, name, true)?;
            to.write_all(&buf[..n]).map_err(member_err("writing file"))?;
        }
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

    /// A symlink at `rel` pointing at `target` must stay inside the tree,
    /// resolved as the kernel would through the tree as unpacked so far: from
    /// the link's own directory, following symlinks that earlier members made,
    /// component by component. Names not there yet count as directories (the
    /// lexical reading); absolute targets are kept as they are, but followed
    /// from the root when another link passes through them. What the
    /// resolution relied on when it went `..` is remembered, so that no later
    /// member can change it ([`Self::check_depended_on`]).
    fn check_link(&mut self, rel: &Path, target: &Path, name: &str) -> Result<(), UnpackError> {
        let unsafe_path = |reason| UnpackError::UnsafePath {
            archive: self.label.to_string(),
            entry: name.to_string(),
            reason,
        };
        if target.as_os_str().is_empty() {
            return Err(unsafe_path("symlink with an empty target"));
        }
        if target.is_absolute() {
            return Ok(());
        }
        // The link's own parents are real directories (make_parents checked them).
        let mut stack: Vec<Place> = rel
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .map(|c| Place {
                name: c.as_os_str().to_os_string(),
                relies_on: Vec::new(),
            })
            .collect();
        // The target's steps, then those of each link followed (innermost last).
        let mut frames: Vec<(VecDeque<Step>, Option<PathBuf>)> = vec![(steps(target), None)];
        let mut last_followed: Option<PathBuf> = None;
        let mut relied_on: Vec<PathBuf> = Vec::new();
        let mut hops = 0;
        loop {
            // A followed link is done: where the resolution stands is where it points.
            while let Some((queue, followed)) = frames.last() {
                if !queue.is_empty() {
                    break;
                }
                if let Some(link) = followed {
                    for place in &mut stack {
                        place.relies_on.push(link.clone());
                    }
                }
                frames.pop();
            }
            let Some((queue, _)) = frames.last_mut() else { break };
            let step = queue.pop_front().expect("non-empty");
            let is_last = frames.iter().all(|(q, _)| q.is_empty());
            match step {
                Step::Root => stack.clear(),
                Step::Up => match stack.pop() {
                    Some(place) => relied_on.extend(place.relies_on),
                    None => {
                        return Err(UnpackError::SymlinkEscapes {
                            archive: self.label.to_string(),
                            entry: name.to_string(),
                            target: target.display().to_string(),
                            via: last_followed
                                .map(|l| format!(" (by way of the symlink `{}`)", l.display()))
                                .unwrap_or_default(),
                        })
                    }
                },
                Step::Name(n) => {
                    let mut relies_on = stack.last().map(|p| p.relies_on.clone()).unwrap_or_default();
                    let path: PathBuf = stack
                        .iter()
                        .map(|p| p.name.as_os_str())
                        .chain([n.as_os_str()])
                        .collect();
                    if is_last {
                        // The link's last name is not followed: a link there is checked on its own.
                        stack.push(Place { name: n, relies_on });
                        continue;
                    }
                    // Every parent in `path` is a real directory, so this lstat follows no link.
                    match fs::symlink_metadata(self.dest.join(&path)) {
                        Ok(m) if m.is_dir() => stack.push(Place { name: n, relies_on }),
                        Ok(m) if m.file_type().is_symlink() => {
                            hops += 1;
                            if hops > MAX_LINK_HOPS {
                                return Err(unsafe_path("symlink chain of more than 40 links (a loop?)"));
                            }
                            let next = fs::read_link(self.dest.join(&path)).map_err(|source| UnpackError::Member {
                                archive: self.label.to_string(),
                                entry: name.to_string(),
                                action: "reading a symlink the target passes through",
                                source,
                            })?;
                            frames.push((steps(&next), Some(path.clone())));
                            last_followed = Some(path);
                        }
                        Ok(_) => {
                            relies_on.push(path);
                            stack.push(Place { name: n, relies_on });
                        }
                        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                            relies_on.push(path);
                            stack.push(Place { name: n, relies_on });
                        }
                        Err(source) => {
                            return Err(UnpackError::Member {
                                archive: self.label.to_string(),
                                entry: name.to_string(),
                                action: "resolving the symlink target",
                                source,
                            })
                        }
                    }
                }
            }
        }
        for path in relied_on {
            self.depended_on.entry(path).or_insert_with(|| name.to_string());
        }
        Ok(())
    }

    /// A member at `rel` may not change what an earlier link resolved
    /// through: no symlink where it saw a directory (or nothing), and no
    /// replacing a symlink it followed.
    fn check_depended_on(&self, rel: &Path, name: &str, becomes_link: bool) -> Result<(), UnpackError> {
        let Some(link) = self.depended_on.get(rel) else {
            return Ok(());
        };
        let is_link = fs::symlink_metadata(self.dest.join(rel)).is_ok_and(|m| m.file_type().is_symlink());
        if becomes_link || is_link {
            return Err(UnpackError::ChangesEarlierLink {
                archive: self.label.to_string(),
                entry: name.to_string(),
                path: rel.display().to_string(),
                link: link.clone(),
            });
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
        let r = unpack_archive(
            &archive,
            ArchiveFormat::Tar { strip },
            &t.path().join("out"),
            UnpackLimits::default(),
        );
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
                bytes: 6,
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
            limits: UnpackLimits::default(),
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
