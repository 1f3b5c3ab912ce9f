//! Walking file trees: normalising metadata, copying, measuring and deleting
//! (including read-only trees, which need a chmod before they can go).

use std::fs::{self, FileType, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Errors from walking a file or directory tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{}: is a {file_type}; store entries hold only regular files, directories and symlinks", path.display())]
    SpecialFile { path: PathBuf, file_type: &'static str },
    #[error(
        "{}: changed while farm read it (expected {expected} bytes, read {found}); hint: nothing may write to a tree while farm stores or verifies it",
        path.display()
    )]
    Changed { path: PathBuf, expected: u64, found: u64 },
}

impl TreeError {
    pub(crate) fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> TreeError + 'a {
        move |source| TreeError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    /// True when the walked path itself disappeared (e.g. removed by a concurrent gc).
    pub(crate) fn is_not_found_at(&self, at: &Path) -> bool {
        matches!(self, TreeError::Io { path, source, .. } if path == at && source.kind() == io::ErrorKind::NotFound)
    }
}

/// Mode of a normalised regular file without / with an execute bit, and of a directory.
pub(crate) const FILE_MODE: u32 = 0o444;
pub(crate) const EXEC_MODE: u32 = 0o555;
pub(crate) const DIR_MODE: u32 = 0o555;

/// The name of a file type the store refuses, or None for file/dir/symlink.
pub(crate) fn special_file_type(ft: &FileType) -> Option<&'static str> {
    if ft.is_block_device() {
        Some("block device")
    } else if ft.is_char_device() {
        Some("character device")
    } else if ft.is_fifo() {
        Some("fifo")
    } else if ft.is_socket() {
        Some("socket")
    } else if ft.is_file() || ft.is_dir() || ft.is_symlink() {
        None
    } else {
        Some("file of unknown type")
    }
}

pub(crate) fn lstat(path: &Path) -> Result<Metadata, TreeError> {
    fs::symlink_metadata(path).map_err(TreeError::io(path, "reading metadata"))
}

/// Sorted child names of a directory (byte order, so the result never depends on readdir order).
pub(crate) fn sorted_children(dir: &Path) -> Result<Vec<std::ffi::OsString>, TreeError> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(TreeError::io(dir, "listing directory"))? {
        names.push(entry.map_err(TreeError::io(dir, "listing directory"))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), TreeError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(TreeError::io(path, "changing mode"))
}

/// Sets atime and mtime of `path` itself (never a symlink's target).
pub(crate) fn set_times(path: &Path, secs: i64) -> Result<(), TreeError> {
    let t = TimeSpec::new(secs, 0);
    utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(|errno| TreeError::Io {
        path: path.to_path_buf(),
        action: "setting modification time",
        source: io::Error::from(errno),
    })
}

/// Gives every file, directory and symlink under `path` (and `path` itself)
/// the store's canonical metadata: mtime and atime `mtime` seconds since the
/// epoch; regular files 0444, or 0555 when any execute bit was set;
/// directories 0555; symlinks keep their target. setuid, setgid, sticky and
/// write bits go. Owners are left alone (an unprivileged process cannot
/// change them, and the tree digest ignores them). Special files are refused.
pub fn normalise_tree(path: &Path, mtime: i64) -> Result<(), TreeError> {
    let meta = lstat(path)?;
    let ft = meta.file_type();
    if let Some(file_type) = special_file_type(&ft) {
        return Err(TreeError::SpecialFile {
            path: path.to_path_buf(),
            file_type,
        });
    }
    if ft.is_dir() {
        if meta.mode() & 0o700 != 0o700 {
            // We must be able to list and enter it to normalise what is inside.
            set_mode(path, 0o700 | (meta.mode() & 0o7777))?;
        }
        for name in sorted_children(path)? {
            normalise_tree(&path.join(name), mtime)?;
        }
        // After the children: creating or renaming inside would bump the mtime again.
        set_mode(path, DIR_MODE)?;
    } else if ft.is_file() {
        set_mode(path, if meta.mode() & 0o111 != 0 { EXEC_MODE } else { FILE_MODE })?;
    }
    set_times(path, mtime)
}

/// Copies a file or a tree (files, directories, symlinks as symlinks),
/// keeping execute bits; `dst` must not exist. Special files are refused.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), TreeError> {
    let meta = lstat(src)?;
    let ft = meta.file_type();
    if let Some(file_type) = special_file_type(&ft) {
        return Err(TreeError::SpecialFile {
            path: src.to_path_buf(),
            file_type,
        });
    }
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(TreeError::io(src, "reading symlink"))?;
        std::os::unix::fs::symlink(target, dst).map_err(TreeError::io(dst, "creating symlink"))
    } else if ft.is_dir() {
        fs::create_dir(dst).map_err(TreeError::io(dst, "creating directory"))?;
        for name in sorted_children(src)? {
            copy_tree(&src.join(&name), &dst.join(&name))?;
        }
        Ok(())
    } else {
        let copied = fs::copy(src, dst).map_err(TreeError::io(src, "copying file"))?;
        if copied != meta.len() {
            return Err(TreeError::Changed {
                path: src.to_path_buf(),
                expected: meta.len(),
                found: copied,
            });
        }
        Ok(())
    }
}

/// Bytes a tree occupies as the store counts them: the lengths of its regular
/// files (each hardlinked inode once) and of its symlink targets.
pub(crate) fn tree_size(path: &Path) -> Result<u64, TreeError> {
    let mut seen = std::collections::HashSet::new();
    tree_size_inner(path, &mut seen)
}

fn tree_size_inner(path: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> Result<u64, TreeError> {
    let meta = lstat(path)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        let mut total = 0;
        for name in sorted_children(path)? {
            total += tree_size_inner(&path.join(name), seen)?;
        }
        Ok(total)
    } else if ft.is_file() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
        Ok(0)
    } else {
        Ok(meta.len())
    }
}

/// Deletes a file or tree even when it is read-only (store entries are):
/// directories are made writable before their children are unlinked.
/// Symlinks are removed, never followed. A missing path is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<(), TreeError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(TreeError::Io {
                path: path.to_path_buf(),
                action: "reading metadata",
                source: e,
            })
        }
    };
    if meta.is_dir() {
        if meta.mode() & 0o700 != 0o700 {
            set_mode(path, 0o700)?;
        }
        for name in sorted_children(path)? {
            remove_tree(&path.join(name))?;
        }
        fs::remove_dir(path).map_err(TreeError::io(path, "removing directory"))
    } else {
        fs::remove_file(path).map_err(TreeError::io(path, "removing file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn normalise_sets_canonical_modes_and_mtimes_everywhere() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("plain"), "a").unwrap();
        fs::write(root.join("sub/tool"), "b").unwrap();
        fs::set_permissions(root.join("plain"), fs::Permissions::from_mode(0o6644)).unwrap();
        fs::set_permissions(root.join("sub/tool"), fs::Permissions::from_mode(0o710)).unwrap();
        symlink("plain", root.join("link")).unwrap();
        fs::set_permissions(root.join("sub"), fs::Permissions::from_mode(0o1777)).unwrap();

        normalise_tree(&root, 1).unwrap();

        assert_eq!(mode(&root.join("plain")), 0o444, "setuid/setgid and write bits must go");
        assert_eq!(mode(&root.join("sub/tool")), 0o555, "any x bit makes a file 0555");
        assert_eq!(mode(&root.join("sub")), 0o555, "sticky bit must go from directories");
        assert_eq!(mode(&root), 0o555);
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            Path::new("plain"),
            "symlink target kept"
        );
        for p in ["", "plain", "sub", "sub/tool", "link"] {
            let m = fs::symlink_metadata(root.join(p)).unwrap();
            assert_eq!(m.mtime(), 1, "mtime of {p:?}");
        }
        remove_tree(&root).unwrap();
        assert!(!root.exists(), "read-only tree must be removable");
    }

    #[test]
    fn normalise_refuses_a_fifo() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = normalise_tree(t.path(), 1).unwrap_err();
        assert!(matches!(err, TreeError::SpecialFile { file_type: "fifo", .. }), "{err}");
        assert!(err.to_string().contains("pipe"), "error names the file: {err}");
    }

    #[test]
    fn tree_size_counts_hardlinked_inodes_once() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a"), vec![0u8; 1000]).unwrap();
        fs::hard_link(t.path().join("a"), t.path().join("b")).unwrap();
        fs::write(t.path().join("c"), vec![0u8; 10]).unwrap();
        symlink("abc", t.path().join("l")).unwrap();
        assert_eq!(tree_size(t.path()).unwrap(), 1000 + 10 + 3);
    }
}
