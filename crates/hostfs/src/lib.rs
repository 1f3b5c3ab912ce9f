//! Host-side access to trees that something farm does not trust wrote: a
//! step's output in the store, the project's sources, its farm.toml-named
//! files. Every path is resolved beneath a directory file descriptor and
//! no symlink is ever followed, at any component: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or, on
//! kernels without `openat2` (ENOSYS), `openat(O_NOFOLLOW)` one component
//! at a time. Symlinks are reported as symlinks (their target read with
//! `readlinkat`), never followed, so a step that replaces a file with a link
//! to a host file gets an error naming the link instead of the host file's
//! bytes.
//!
//! It is not a general file system API: the root a [`Beneath`] is opened at
//! is the caller's own trusted path (a store entry, the canonical project
//! root), and everything below it is untrusted.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode};

/// Set once `openat2` answered ENOSYS: every later open walks components.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Deeper trees are refused rather than exhausting file descriptors.
const MAX_DEPTH: usize = 256;

/// Symlinks a target may pass through before [`Beneath::check_link`] gives up.
const MAX_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: is a symlink (to {}); farm never follows a symlink in a step's output or the project's files", path.display(), target.display())]
    Symlink { path: PathBuf, target: PathBuf },
    #[error("{}: leaves the directory {}", path.display(), root.display())]
    Leaves { path: PathBuf, root: PathBuf },
    #[error("{}: is a symlink to {}, which leaves the directory {}", path.display(), target.display(), root.display())]
    LinkLeaves {
        path: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error("{}: expected {expected}, found {found}", path.display())]
    WrongType {
        path: PathBuf,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{}: nests more than {MAX_DEPTH} directories deep", path.display())]
    TooDeep { path: PathBuf },
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The path does not exist (as opposed to being refused).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A device, fifo or socket.
    Other,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Other => "a special file (device, fifo or socket)",
        }
    }
}

/// What `lstat` says about a node, never about what a symlink points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub size: u64,
    /// Device, inode and the modification and change times (nanoseconds
    /// since the epoch): what a stat cache compares (engine's statcache).
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Meta {
    fn of(st: &FileStat) -> Meta {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
            dev: st.st_dev,
            ino: st.st_ino,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec),
            ctime_ns: st
                .st_ctime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_ctime_nsec),
        }
    }

    pub fn is_executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

/// A directory opened at a trusted path; everything below it is opened
/// without following symlinks and without leaving it.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    path: PathBuf,
    components_only: bool,
}

/// What a [`Beneath::walk`] visitor decides for a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    Descend,
    Skip,
}

/// One node met by [`Beneath::walk`].
pub struct WalkEntry<'a> {
    pub rel: PathBuf,
    pub meta: Meta,
    /// The target of a symlink, as written (never followed).
    pub link: Option<PathBuf>,
    name: OsString,
    parent: BorrowedFd<'a>,
    tree: &'a Beneath,
}

impl WalkEntry<'_> {
    /// The file, opened in its parent directory without following a symlink
    /// (a node swapped for a link since it was listed is refused).
    pub fn open_file(&self) -> Result<File> {
        let fd = nix::fcntl::openat(self.parent, self.name.as_os_str(), file_flags(), Mode::empty())
            .map_err(|e| self.tree.explain(&self.rel, e))?;
        self.tree.regular(fd, &self.rel)
    }

    pub fn read(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_file()?
            .read_to_end(&mut buf)
            .map_err(|source| self.tree.io(&self.rel, "reading", source))?;
        Ok(buf)
    }

    pub fn file_name(&self) -> &OsStr {
        &self.name
    }
}

fn file_flags() -> OFlag {
    // O_NONBLOCK: opening a fifo someone planted must not hang the build.
    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

impl Beneath {
    /// Opens the trusted directory `root` (symlinks in `root` itself are the
    /// caller's and are followed; nothing below it is).
    pub fn open_dir(root: &Path) -> Result<Beneath> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            path: root.to_path_buf(),
            action: "opening the directory",
            source: e.into(),
        })?;
        Ok(Beneath {
            fd,
            path: root.to_path_buf(),
            components_only: false,
        })
    }

    /// [`Beneath::open_dir`] that never uses `openat2`: what kernels without
    /// it get. For tests of that path.
    #[doc(hidden)]
    pub fn open_dir_without_openat2(root: &Path) -> Result<Beneath> {
        let mut b = Self::open_dir(root)?;
        b.components_only = true;
        Ok(b)
    }

    /// The path this was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` below this directory, for messages.
    pub fn shown(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    fn io(&self, rel: &Path, action: &'static str, source: impl Into<std::io::Error>) -> Error {
        Error::Io {
            path: self.shown(rel),
            action,
            source: source.into(),
        }
    }

    /// The normal components of `rel`; absolute paths and `..` leave the directory.
    fn parts<'p>(&self, rel: &'p Path) -> Result<Vec<&'p OsStr>> {
        let mut out = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(Error::Leaves {
                        path: self.shown(rel),
                        root: self.path.clone(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Opens `rel` with `flags` (plus O_NOFOLLOW and O_CLOEXEC).
    fn open_at(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd> {
        let parts = self.parts(rel)?;
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if parts.is_empty() {
            return nix::fcntl::openat(self.fd.as_fd(), ".", flags, Mode::empty())
                .map_err(|e| self.io(rel, "opening", e));
        }
        let clean: PathBuf = parts.iter().collect();
        if !self.components_only && !NO_OPENAT2.load(Ordering::Relaxed) {
            let how = OpenHow::new().flags(flags).resolve(
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
            // EAGAIN: a rename raced the lookup; the kernel asks for a retry.
            for _ in 0..8 {
                match nix::fcntl::openat2(self.fd.as_fd(), &clean, how) {
                    Ok(fd) => return Ok(fd),
                    Err(Errno::EAGAIN) => continue,
                    Err(Errno::ENOSYS) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(self.explain(&clean, e)),
                }
            }
        }
        let mut dir: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let at = dir.as_ref().map(|d| d.as_fd()).unwrap_or(self.fd.as_fd());
            let f = if last { flags } else { dir_flags() };
            let fd = nix::fcntl::openat(at, *part, f, Mode::empty()).map_err(|e| self.explain(&clean, e))?;
            dir = Some(fd);
        }
        Ok(dir.expect("at least one component"))
    }

    /// The error for a failed open of `rel`: the first symlink on the way
    /// when there is one, a wrong type, else the errno.
    fn explain(&self, rel: &Path, e: Errno) -> Error {
        if matches!(e, Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) {
            let Ok(parts) = self.parts(rel) else {
                return self.io(rel, "opening", e);
            };
            let mut dir: Option<OwnedFd> = None;
            let mut sofar = PathBuf::new();
            for (i, part) in parts.iter().enumerate() {
                sofar.push(part);
                let at = dir.as_ref().map(|d| d.as_fd()).unwrap_or(self.fd.as_fd());
                let Ok(st) = nix::sys::stat::fstatat(at, *part, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                    break;
                };
                let meta = Meta::of(&st);
                if meta.kind == Kind::Symlink {
                    let target = nix::fcntl::readlinkat(at, *part).map(PathBuf::from).unwrap_or_default();
                    return Error::Symlink {
                        path: self.shown(&sofar),
                        target,
                    };
                }
                if i + 1 == parts.len() {
                    if e == Errno::ENOTDIR {
                        return Error::WrongType {
                            path: self.shown(&sofar),
                            expected: Kind::Dir.describe(),
                            found: meta.kind.describe(),
                        };
                    }
                    break;
                }
                if meta.kind != Kind::Dir {
                    return Error::WrongType {
                        path: self.shown(&sofar),
                        expected: Kind::Dir.describe(),
                        found: meta.kind.describe(),
                    };
                }
                match nix::fcntl::openat(at, *part, dir_flags(), Mode::empty()) {
                    Ok(fd) => dir = Some(fd),
                    Err(_) => break,
                }
            }
            if e == Errno::EXDEV {
                return Error::Leaves {
                    path: self.shown(rel),
                    root: self.path.clone(),
                };
            }
        }
        self.io(rel, "opening", e)
    }

    /// `fd` as a File when it is a regular file.
    fn regular(&self, fd: OwnedFd, rel: &Path) -> Result<File> {
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| self.io(rel, "reading metadata", e))?;
        let meta = Meta::of(&st);
        if meta.kind != Kind::File {
            return Err(Error::WrongType {
                path: self.shown(rel),
                expected: Kind::File.describe(),
                found: meta.kind.describe(),
            });
        }
        Ok(File::from(fd))
    }

    /// The directory `rel` below this one.
    pub fn open_subdir(&self, rel: &Path) -> Result<Beneath> {
        let fd = self.open_at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        Ok(Beneath {
            fd,
            path: self.shown(rel),
            components_only: self.components_only,
        })
    }

    /// The regular file `rel`, opened for reading.
    pub fn open_file(&self, rel: &Path) -> Result<File> {
        let fd = self.open_at(rel, file_flags())?;
        self.regular(fd, rel)
    }

    pub fn read(&self, rel: &Path) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_file(rel)?
            .read_to_end(&mut buf)
            .map_err(|source| self.io(rel, "reading", source))?;
        Ok(buf)
    }

    pub fn read_to_string(&self, rel: &Path) -> Result<String> {
        String::from_utf8(self.read(rel)?).map_err(|e| {
            self.io(
                rel,
                "reading",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
            )
        })
    }

    /// The parent directory of `rel` (opened beneath) and `rel`'s last name.
    fn parent_of<'p>(&self, rel: &'p Path) -> Result<(Option<OwnedFd>, &'p OsStr)> {
        let parts = self.parts(rel)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Ok((None, OsStr::new(".")));
        };
        if dirs.is_empty() {
            return Ok((None, name));
        }
        let parent: PathBuf = dirs.iter().collect();
        Ok((Some(self.open_at(&parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?), name))
    }

    /// `lstat` of `rel`: a symlink is described, not followed.
    pub fn symlink_metadata(&self, rel: &Path) -> Result<Meta> {
        let (parent, name) = self.parent_of(rel)?;
        let at = parent.as_ref().map(|d| d.as_fd()).unwrap_or(self.fd.as_fd());
        let st = nix::sys::stat::fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.io(rel, "reading metadata", e))?;
        Ok(Meta::of(&st))
    }

    /// Whether `rel` exists (as anything, a symlink included).
    pub fn exists(&self, rel: &Path) -> Result<bool> {
        match self.symlink_metadata(rel) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The target of the symlink `rel`, as written.
    pub fn read_link(&self, rel: &Path) -> Result<PathBuf> {
        let (parent, name) = self.parent_of(rel)?;
        let at = parent.as_ref().map(|d| d.as_fd()).unwrap_or(self.fd.as_fd());
        nix::fcntl::readlinkat(at, name)
            .map(PathBuf::from)
            .map_err(|e| self.io(rel, "reading the symlink", e))
    }

    /// The names in `dir` (an open directory) with their metadata, sorted by name.
    fn list(&self, dir: BorrowedFd<'_>, rel: &Path) -> Result<Vec<(OsString, Meta)>> {
        // A fresh open file description: fdopendir would share (and move) `dir`'s offset.
        let own = nix::fcntl::openat(dir, ".", dir_flags(), Mode::empty()).map_err(|e| self.io(rel, "listing", e))?;
        let mut d = nix::dir::Dir::from_fd(own).map_err(|e| self.io(rel, "listing", e))?;
        let mut out = Vec::new();
        for entry in d.iter() {
            let entry = entry.map_err(|e| self.io(rel, "listing", e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            if name == "." || name == ".." {
                continue;
            }
            let st = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| self.io(&rel.join(&name), "reading metadata", e))?;
            out.push((name, Meta::of(&st)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The entries of the directory `rel` (names and `lstat` metadata), sorted by name.
    pub fn read_dir(&self, rel: &Path) -> Result<Vec<(OsString, Meta)>> {
        let dir = self.open_at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        self.list(dir.as_fd(), rel)
    }

    /// Visits every node below this directory, parents before children and
    /// siblings in byte order of their names. Symlinks are visited as
    /// symlinks with their target; directories are entered when the visitor
    /// says [`Walk::Descend`], each opened in its parent without following a link.
    pub fn walk<E: From<Error>>(&self, mut visit: impl FnMut(&WalkEntry<'_>) -> Result<Walk, E>) -> Result<(), E> {
        self.walk_dir(self.fd.as_fd(), Path::new(""), &mut visit, 0)
    }

    fn walk_dir<E: From<Error>>(
        &self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        visit: &mut impl FnMut(&WalkEntry<'_>) -> Result<Walk, E>,
        depth: usize,
    ) -> Result<(), E> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep { path: self.shown(rel) }.into());
        }
        for (name, meta) in self.list(dir, rel)? {
            let child = rel.join(&name);
            let link = match meta.kind {
                Kind::Symlink => Some(
                    nix::fcntl::readlinkat(dir, name.as_os_str())
                        .map(PathBuf::from)
                        .map_err(|e| self.io(&child, "reading the symlink", e))?,
                ),
                _ => None,
            };
            let entry = WalkEntry {
                rel: child,
                meta,
                link,
                name,
                parent: dir,
                tree: self,
            };
            let what = visit(&entry)?;
            if meta.kind == Kind::Dir && what == Walk::Descend {
                let fd = nix::fcntl::openat(dir, entry.name.as_os_str(), dir_flags(), Mode::empty())
                    .map_err(|e| self.explain(&entry.rel, e))?;
                self.walk_dir(fd.as_fd(), &entry.rel, visit, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Refuses the symlink at `link` (relative to this directory) unless its
    /// `target` resolves inside this directory, following any symlinks it
    /// passes through as they are in this tree (so a chain of links that
    /// each stay inside cannot together climb out). Absolute targets are
    /// refused. Parts that do not exist are resolved lexically.
    pub fn check_link(&self, link: &Path, target: &Path) -> Result<()> {
        let leaves = || Error::LinkLeaves {
            path: self.shown(link),
            target: target.to_path_buf(),
            root: self.path.clone(),
        };
        let mut here: Vec<OsString> = self
            .parts(link.parent().unwrap_or(Path::new("")))?
            .into_iter()
            .map(OsStr::to_os_string)
            .collect();
        let mut pending: Vec<OsString> = Vec::new(); // reversed: the next component is last
        let push_target = |pending: &mut Vec<OsString>, t: &Path| -> Result<()> {
            let mut comps = Vec::new();
            for c in t.components() {
                match c {
                    Component::Normal(n) => comps.push(n.to_os_string()),
                    Component::ParentDir => comps.push(OsString::from("..")),
                    Component::CurDir => {}
                    Component::RootDir | Component::Prefix(_) => return Err(leaves()),
                }
            }
            pending.extend(comps.into_iter().rev());
            Ok(())
        };
        push_target(&mut pending, target)?;
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            if c == ".." {
                if here.pop().is_none() {
                    return Err(leaves());
                }
                continue;
            }
            here.push(c);
            let at: PathBuf = here.iter().collect();
            match self.symlink_metadata(&at) {
                Ok(m) if m.kind == Kind::Symlink => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(leaves());
                    }
                    let next = self.read_link(&at)?;
                    here.pop();
                    push_target(&mut pending, &next)?;
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() || matches!(e, Error::WrongType { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `bytes` to `rel`, replacing what is there (a symlink is
    /// replaced, never written through): a new file beside it, renamed over
    /// it. Missing parent directories are created, none of them through a link.
    pub fn replace_file(&self, rel: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        let parts = self.parts(rel)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(Error::WrongType {
                path: self.shown(rel),
                expected: Kind::File.describe(),
                found: Kind::Dir.describe(),
            });
        };
        let mut sofar = PathBuf::new();
        for d in dirs {
            sofar.push(d);
            let (parent, _) = self.parent_of(&sofar)?;
            let at = parent.as_ref().map(|p| p.as_fd()).unwrap_or(self.fd.as_fd());
            match nix::sys::stat::mkdirat(at, *d, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.io(&sofar, "creating the directory", e)),
            }
        }
        let parent_rel: PathBuf = dirs.iter().collect();
        let parent = self.open_at(&parent_rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let tmp = OsString::from(format!(".{}.farm-new-{}", name.to_string_lossy(), std::process::id()));
        let fd = nix::fcntl::openat(
            parent.as_fd(),
            tmp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| self.io(rel, "creating", e))?;
        let written = File::from(fd)
            .write_all(bytes)
            .map_err(|source| self.io(rel, "writing", source));
        let renamed = written.and_then(|()| {
            nix::fcntl::renameat(parent.as_fd(), tmp.as_os_str(), parent.as_fd(), *name)
                .map_err(|e| self.io(rel, "renaming into place", e))
        });
        if renamed.is_err() {
            let _ = nix::unistd::unlinkat(parent.as_fd(), tmp.as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        renamed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Both resolvers: openat2, and the component walk of older kernels.
    fn both(root: &Path) -> [Beneath; 2] {
        [
            Beneath::open_dir(root).unwrap(),
            Beneath::open_dir_without_openat2(root).unwrap(),
        ]
    }

    fn tree() -> (tempfile::TempDir, tempfile::TempDir) {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "SECRET").unwrap();
        std::fs::set_permissions(outside.path().join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/f.txt"), "inside").unwrap();
        symlink(outside.path().join("secret"), r.join("abs")).unwrap();
        symlink(outside.path(), r.join("dirlink")).unwrap();
        symlink("b", r.join("a/rel")).unwrap();
        (t, outside)
    }

    /// Reads inside work; a symlink at the last or any earlier component,
    /// `..` and absolute paths are refused by name, with both resolvers.
    #[test]
    fn reads_never_follow_a_symlink_or_leave_the_directory() {
        let (t, _outside) = tree();
        for b in both(t.path()) {
            assert_eq!(b.read(Path::new("a/b/f.txt")).unwrap(), b"inside");
            let e = b.read(Path::new("abs")).unwrap_err();
            assert!(matches!(e, Error::Symlink { .. }), "{e}");
            assert!(e.to_string().contains("abs: is a symlink"), "{e}");
            let e = b.read(Path::new("dirlink/secret")).unwrap_err();
            assert!(e.to_string().contains("dirlink: is a symlink"), "{e}");
            let e = b.read(Path::new("a/rel/f.txt")).unwrap_err();
            assert!(
                e.to_string().contains("a/rel: is a symlink (to b)"),
                "an inside link is not followed either: {e}"
            );
            let e = b.open_subdir(Path::new("dirlink")).unwrap_err();
            assert!(matches!(e, Error::Symlink { .. }), "{e}");
            for bad in ["../x", "a/../../x", "/etc/passwd"] {
                let e = b.read(Path::new(bad)).unwrap_err();
                assert!(e.to_string().contains("leaves the directory"), "{bad}: {e}");
            }
            let e = b.read(Path::new("a")).unwrap_err();
            assert!(
                e.to_string().contains("expected a regular file, found a directory"),
                "{e}"
            );
            assert!(b.read(Path::new("missing")).unwrap_err().is_not_found());
            let sub = b.open_subdir(Path::new("a")).unwrap();
            assert_eq!(sub.read_to_string(Path::new("b/f.txt")).unwrap(), "inside");
        }
    }

    /// A fifo is refused as a special file instead of blocking the reader.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&t.path().join("p"), Mode::from_bits_truncate(0o644)).unwrap();
        for b in both(t.path()) {
            let e = b.read(Path::new("p")).unwrap_err();
            assert!(e.to_string().contains("found a special file"), "{e}");
        }
    }

    /// The walk reports links as links with their targets, never enters them,
    /// and visits in name order.
    #[test]
    fn walk_reports_links_and_never_enters_them() {
        let (t, _outside) = tree();
        for b in both(t.path()) {
            let mut seen = Vec::new();
            b.walk(|e| {
                seen.push((e.rel.display().to_string(), e.meta.kind, e.link.clone()));
                if e.meta.kind == Kind::File {
                    assert_eq!(e.read().unwrap(), b"inside");
                }
                Ok::<_, Error>(Walk::Descend)
            })
            .unwrap();
            let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
            assert_eq!(names, ["a", "a/b", "a/b/f.txt", "a/rel", "abs", "dirlink"]);
            assert_eq!(seen[3].1, Kind::Symlink);
            assert_eq!(seen[3].2.as_deref(), Some(Path::new("b")));
            assert_eq!(seen[5].1, Kind::Symlink, "a link to a directory is not a directory");
        }
    }

    /// Links are checked against the tree as it is: a chain of links that
    /// each look harmless (`up -> ../..`, then `esc -> a/b/up/../x`) is
    /// caught, absolute targets are refused, inside targets are fine.
    #[test]
    fn check_link_follows_chains_inside_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        symlink("../..", r.join("a/b/up")).unwrap();
        symlink("a/b/up/../etc/shadow", r.join("esc")).unwrap();
        symlink("../../a", r.join("a/b/loop")).unwrap();
        let b = Beneath::open_dir(r).unwrap();
        b.check_link(Path::new("a/b/up"), Path::new("../..")).unwrap();
        let e = b
            .check_link(Path::new("esc"), Path::new("a/b/up/../etc/shadow"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("esc: is a symlink to a/b/up/../etc/shadow, which leaves the directory"),
            "{e}"
        );
        assert!(b.check_link(Path::new("x"), Path::new("/etc/shadow")).is_err());
        assert!(b.check_link(Path::new("a/x"), Path::new("../../y")).is_err());
        b.check_link(Path::new("a/x"), Path::new("../a/b/nothing/here"))
            .unwrap();
        b.check_link(Path::new("a/x"), Path::new("b/loop/b")).unwrap();
        // A link to itself loops; the hop limit ends it.
        symlink("self", r.join("self")).unwrap();
        assert!(b.check_link(Path::new("self"), Path::new("self")).is_err());
    }

    /// replace_file replaces a planted symlink instead of writing through it.
    #[test]
    fn replace_file_never_writes_through_a_link() {
        let (t, outside) = tree();
        let b = Beneath::open_dir(t.path()).unwrap();
        b.replace_file(Path::new("abs"), b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"SECRET");
        assert_eq!(std::fs::read(t.path().join("abs")).unwrap(), b"new");
        let e = b.replace_file(Path::new("dirlink/x"), b"new", 0o644).unwrap_err();
        assert!(matches!(e, Error::Symlink { .. }), "{e}");
        assert!(!outside.path().join("x").exists());
        b.replace_file(Path::new("new/dir/f"), b"ok", 0o644).unwrap();
        assert_eq!(std::fs::read(t.path().join("new/dir/f")).unwrap(), b"ok");
    }
}
