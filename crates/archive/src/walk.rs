//! The sorted directory walk: everything below a directory, depth first,
//! siblings in byte order of their names, each directory directly followed
//! by its contents. That is the order of [`crate::tar_order`] (`a`, `a/x`,
//! `a-b`), so a walk's entries can be written to a tar as they come.
//!
//! Symlinks are never followed below the root: a symlink is an entry of its
//! own, with the file type of the link. The root itself is read the way
//! `read_dir` reads it, so a root that is a symlink to a directory is
//! walked; a root that is not a directory is an error, as for `read_dir`
//! (callers that accept a single file look at it first).

use std::ffi::OsStr;
use std::fs::{self, FileType, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Walks everything below `root` in sorted order (see the module docs).
///
/// Each directory's names are read and sorted before any of them is
/// returned; at most a few directories are open at once, however deep the
/// tree.
pub fn walk(root: &Path) -> Walk {
    let root_len = root.as_os_str().len();
    let inner = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    Walk { inner, root_len }
}

/// The iterator of [`walk`]; stop at the first error (the rest of the walk
/// would describe a tree with a hole in it).
pub struct Walk {
    inner: walkdir::IntoIter,
    root_len: usize,
}

impl Walk {
    /// Leaves out the contents of the directory just returned (as for a
    /// `node_modules` a caller does not look into). Does nothing when the
    /// last entry was not a directory.
    pub fn skip_current_dir(&mut self) {
        self.inner.skip_current_dir();
    }
}

impl Iterator for Walk {
    type Item = Result<WalkEntry, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let inner = match self.inner.next()? {
                Ok(inner) => inner,
                Err(e) => return Some(Err(e.into())),
            };
            // The root itself (its type read through a symlink) is not an entry.
            if inner.depth() == 0 {
                // walkdir has already listed a root that is a symlink to a directory.
                let ty = inner.file_type();
                if ty.is_dir() || (ty.is_symlink() && inner.path().is_dir()) {
                    continue;
                }
                return Some(Err(WalkError {
                    path: inner.path().to_path_buf(),
                    source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                }));
            }
            return Some(Ok(WalkEntry {
                inner,
                root_len: self.root_len,
            }));
        }
    }
}

/// One file, directory, symlink or special file found by [`walk`].
#[derive(Debug, Clone)]
pub struct WalkEntry {
    inner: walkdir::DirEntry,
    root_len: usize,
}

impl WalkEntry {
    /// The full path: the walk's root joined with [`Self::relative`].
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// The path below the walk's root, `/`-separated, e.g. `assets/index.js`.
    pub fn relative(&self) -> &Path {
        // Every path is the root as given, joined with the names below it.
        let bytes = &self.inner.path().as_os_str().as_bytes()[self.root_len..];
        let bytes = bytes.strip_prefix(b"/").unwrap_or(bytes);
        Path::new(OsStr::from_bytes(bytes))
    }

    pub fn file_name(&self) -> &OsStr {
        self.inner.file_name()
    }

    /// The entry's own type: a symlink is a symlink, whatever it points at.
    pub fn file_type(&self) -> FileType {
        self.inner.file_type()
    }

    /// 1 for the root's children, 2 for theirs, and so on.
    pub fn depth(&self) -> usize {
        self.inner.depth()
    }

    /// The entry's own metadata (`lstat`: a symlink's, not its target's),
    /// read now.
    pub fn metadata(&self) -> Result<Metadata, WalkError> {
        fs::symlink_metadata(self.path()).map_err(|source| WalkError {
            path: self.path().to_path_buf(),
            source,
        })
    }
}

/// A directory that could not be listed, or an entry that could not be
/// inspected.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WalkError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl From<walkdir::Error> for WalkError {
    fn from(e: walkdir::Error) -> Self {
        let path = e.path().map(Path::to_path_buf).unwrap_or_default();
        let source = match e.into_io_error() {
            Some(io) => io,
            // Only a symlink loop has no I/O error, and links are never followed.
            None => io::Error::other("filesystem loop"),
        };
        WalkError { path, source }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn listed(root: &Path) -> Vec<(String, char)> {
        walk(root)
            .map(|e| {
                let e = e.unwrap();
                let t = e.file_type();
                let kind = if t.is_dir() {
                    'd'
                } else if t.is_symlink() {
                    'l'
                } else {
                    'f'
                };
                (e.relative().to_str().unwrap().to_string(), kind)
            })
            .collect()
    }

    /// Proves the order (directories directly followed by their contents,
    /// `/` below every other byte), that symlinks are entries and never
    /// followed, and that a symlinked root is walked.
    #[test]
    fn sorted_depth_first_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("a/x")).unwrap();
        fs::write(root.join("a/x/f"), b"").unwrap();
        fs::write(root.join("a-b"), b"").unwrap();
        fs::write(root.join("B"), b"").unwrap();
        fs::create_dir(root.join("a0")).unwrap();
        symlink("a", root.join("link")).unwrap();
        let expected = [
            ("B", 'f'),
            ("a", 'd'),
            ("a/x", 'd'),
            ("a/x/f", 'f'),
            ("a-b", 'f'),
            ("a0", 'd'),
            ("link", 'l'),
        ]
        .map(|(p, k)| (p.to_string(), k));
        assert_eq!(listed(&root), expected);

        let mut keys: Vec<Vec<u8>> = expected.iter().map(|(p, _)| crate::tar_order(p.as_bytes())).collect();
        let walked = keys.clone();
        keys.sort();
        assert_eq!(keys, walked, "walk order is tar order");

        symlink(&root, t.path().join("via")).unwrap();
        assert_eq!(listed(&t.path().join("via")), expected);
        let with_slash = format!("{}/", root.display());
        assert_eq!(listed(Path::new(&with_slash)), expected);
    }

    #[test]
    fn skipping_a_directory_and_errors_name_the_path() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("node_modules/x")).unwrap();
        fs::write(t.path().join("z"), b"").unwrap();
        let mut seen = Vec::new();
        let mut w = walk(t.path());
        while let Some(e) = w.next() {
            let e = e.unwrap();
            if e.file_name() == "node_modules" {
                w.skip_current_dir();
            }
            seen.push(e.relative().to_path_buf());
        }
        assert_eq!(seen, [PathBuf::from("node_modules"), PathBuf::from("z")]);

        let missing = t.path().join("missing");
        let err = walk(&missing).next().unwrap().unwrap_err();
        assert_eq!(err.path, missing);
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing"), "{err}");
        let mut w = walk(&t.path().join("z"));
        let err = w.next().unwrap().unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::NotADirectory, "{err}");
        assert!(w.next().is_none());
    }
}
