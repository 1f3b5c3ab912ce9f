//! The file-system and mount calls the set-up makes, behind a small trait so
//! the root-filesystem logic can be unit-tested with a recorder (no root, no
//! namespaces). `Linux` is the real implementation.

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// What a path is, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Dir,
    File,
    Symlink,
    Missing,
}

/// Per-mount attributes that can be set on an existing mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MountAttrs {
    pub read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
}

pub(crate) trait Kernel {
    fn mount_tmpfs(&mut self, target: &Path, flags: MsFlags, options: &str) -> io::Result<()>;
    /// Recursive bind mount of `source` on `target`.
    fn bind(&mut self, source: &Path, target: &Path) -> io::Result<()>;
    /// Sets attributes on the mount at `target` (and its submounts when `recursive`).
    fn set_attrs(&mut self, target: &Path, attrs: MountAttrs, recursive: bool) -> io::Result<()>;
    fn mount_special(&mut self, fstype: &str, target: &Path, flags: MsFlags, options: &str) -> io::Result<()>;
    fn make_rprivate(&mut self, target: &Path) -> io::Result<()>;
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn umount_detach(&mut self, target: &Path) -> io::Result<()>;
    fn chdir(&mut self, dir: &Path) -> io::Result<()>;
    fn mkdir_all(&mut self, dir: &Path, mode: u32) -> io::Result<()>;
    fn write_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()>;
    fn kind(&self, path: &Path) -> io::Result<FileKind>;
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
}

pub(crate) struct Linux;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

impl Linux {
    /// The pre-5.12 way: remount each bind, keeping the flags the kernel
    /// locked on it (a user namespace may not clear nosuid/nodev/noexec/atime
    /// flags it inherited). Not recursive.
    fn remount_bind(target: &Path, attrs: MountAttrs) -> io::Result<()> {
        let st = nix::sys::statvfs::statvfs(target).map_err(io::Error::from)?;
        use nix::sys::statvfs::FsFlags;
        let f = st.flags();
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
        let keep = [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        ];
        for (st_flag, ms_flag) in keep {
            if f.contains(st_flag) {
                flags |= ms_flag;
            }
        }
        if attrs.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        if attrs.nosuid {
            flags |= MsFlags::MS_NOSUID;
        }
        if attrs.nodev {
            flags |= MsFlags::MS_NODEV;
        }
        nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(io::Error::from)
    }
}

impl Kernel for Linux {
    fn mount_tmpfs(&mut self, target: &Path, flags: MsFlags, options: &str) -> io::Result<()> {
        nix::mount::mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options)).map_err(io::Error::from)
    }

    fn bind(&mut self, source: &Path, target: &Path) -> io::Result<()> {
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)
    }

    fn set_attrs(&mut self, target: &Path, attrs: MountAttrs, recursive: bool) -> io::Result<()> {
        let mut set = 0;
        if attrs.read_only {
            set |= MOUNT_ATTR_RDONLY;
        }
        if attrs.nosuid {
            set |= MOUNT_ATTR_NOSUID;
        }
        if attrs.nodev {
            set |= MOUNT_ATTR_NODEV;
        }
        let attr = MountAttr {
            attr_set: set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let path = cpath(target)?;
        let flags = if recursive { AT_RECURSIVE } else { 0 };
        // SAFETY: mount_setattr(2) with a valid C path and a correctly sized struct mount_attr.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path.as_ptr(),
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            // Older kernels: only the top mount can be changed this way.
            return Linux::remount_bind(target, attrs);
        }
        Err(err)
    }

    fn mount_special(&mut self, fstype: &str, target: &Path, flags: MsFlags, options: &str) -> io::Result<()> {
        let data = if options.is_empty() { None } else { Some(options) };
        nix::mount::mount(Some(fstype), target, Some(fstype), flags, data).map_err(io::Error::from)
    }

    fn make_rprivate(&mut self, target: &Path) -> io::Result<()> {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(io::Error::from)
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(io::Error::from)
    }

    fn umount_detach(&mut self, target: &Path) -> io::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
    }

    fn chdir(&mut self, dir: &Path) -> io::Result<()> {
        std::env::set_current_dir(dir)
    }

    fn mkdir_all(&mut self, dir: &Path, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
    }

    fn write_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
        use io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        f.write_all(contents)?;
        // The umask must not decide what the step sees.
        f.set_permissions(fs::Permissions::from_mode(mode))
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn kind(&self, path: &Path) -> io::Result<FileKind> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Ok(FileKind::Symlink),
            Ok(m) if m.is_dir() => Ok(FileKind::Dir),
            Ok(_) => Ok(FileKind::File),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FileKind::Missing),
            Err(e) => Err(e),
        }
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let mut names = fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        fs::read_link(path)
    }
}

#[cfg(test)]
pub(crate) mod recorder {
    //! A `Kernel` that records every call and answers lookups from a fake host tree.

    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub(crate) struct Recorder {
        pub calls: Vec<String>,
        /// Fake host files by absolute path (as seen from the helper, i.e. under /oldroot).
        pub host: BTreeMap<PathBuf, (FileKind, Option<PathBuf>)>,
    }

    impl Recorder {
        pub fn dir(&mut self, p: &str) {
            self.host.insert(p.into(), (FileKind::Dir, None));
        }
        pub fn file(&mut self, p: &str) {
            self.host.insert(p.into(), (FileKind::File, None));
        }
        pub fn link(&mut self, p: &str, target: &str) {
            self.host.insert(p.into(), (FileKind::Symlink, Some(target.into())));
        }
        pub fn has(&self, call: &str) -> bool {
            self.calls.iter().any(|c| c == call)
        }
        pub fn position(&self, call: &str) -> usize {
            self.calls
                .iter()
                .position(|c| c == call)
                .unwrap_or_else(|| panic!("no call {call:?} in {:#?}", self.calls))
        }
    }

    impl Kernel for Recorder {
        fn mount_tmpfs(&mut self, target: &Path, _flags: MsFlags, options: &str) -> io::Result<()> {
            self.calls.push(format!("tmpfs {} {options}", target.display()));
            Ok(())
        }
        fn bind(&mut self, source: &Path, target: &Path) -> io::Result<()> {
            self.calls
                .push(format!("bind {} {}", source.display(), target.display()));
            Ok(())
        }
        fn set_attrs(&mut self, target: &Path, attrs: MountAttrs, recursive: bool) -> io::Result<()> {
            let ro = if attrs.read_only { "ro" } else { "rw" };
            let rec = if recursive { " recursive" } else { "" };
            self.calls.push(format!("attrs {} {ro}{rec}", target.display()));
            Ok(())
        }
        fn mount_special(&mut self, fstype: &str, target: &Path, _flags: MsFlags, options: &str) -> io::Result<()> {
            self.calls
                .push(format!("mount {fstype} {} {options}", target.display()));
            Ok(())
        }
        fn make_rprivate(&mut self, target: &Path) -> io::Result<()> {
            self.calls.push(format!("rprivate {}", target.display()));
            Ok(())
        }
        fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()> {
            self.calls
                .push(format!("pivot_root {} {}", new_root.display(), put_old.display()));
            Ok(())
        }
        fn umount_detach(&mut self, target: &Path) -> io::Result<()> {
            self.calls.push(format!("umount {}", target.display()));
            Ok(())
        }
        fn chdir(&mut self, dir: &Path) -> io::Result<()> {
            self.calls.push(format!("chdir {}", dir.display()));
            Ok(())
        }
        fn mkdir_all(&mut self, dir: &Path, mode: u32) -> io::Result<()> {
            self.calls.push(format!("mkdir {} {mode:o}", dir.display()));
            Ok(())
        }
        fn write_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
            self.calls.push(format!(
                "write {} {mode:o} {}",
                path.display(),
                String::from_utf8_lossy(contents)
            ));
            Ok(())
        }
        fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
            self.calls
                .push(format!("symlink {} -> {}", link.display(), target.display()));
            Ok(())
        }
        fn kind(&self, path: &Path) -> io::Result<FileKind> {
            Ok(self.host.get(path).map(|(k, _)| *k).unwrap_or(FileKind::Missing))
        }
        fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
            Ok(self
                .host
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
                .collect())
        }
        fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
            self.host
                .get(path)
                .and_then(|(_, t)| t.clone())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a symlink"))
        }
    }
}
