//! REAPI `Directory` Merkle trees: made from a directory on disk, and
//! checked and laid out from a `Tree` message an ActionResult names.
//!
//! A Directory lists files (name, digest, executable bit), subdirectories
//! (name, digest of their Directory message) and symlinks (name, target),
//! each list sorted by name; nothing else of a file (owner, mode beyond
//! the executable bit, time) is part of the tree.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::proto::{Directory, DirectoryNode, FileNode, SymlinkNode, Tree};
use crate::{digest_string, encode, Digest, Error, Result};

/// A directory on disk as a Merkle tree.
pub struct MerkleTree {
    /// The digest of the root Directory.
    pub root: Digest,
    /// Every Directory message (the root first), with its digest and bytes.
    pub directories: Vec<(Digest, Vec<u8>, Directory)>,
    /// Every file: its digest and where it is on disk.
    pub files: Vec<(Digest, PathBuf)>,
}

impl MerkleTree {
    /// Hashes the tree under `dir` (which is not followed if a symlink's target).
    pub fn of(dir: &Path) -> Result<MerkleTree> {
        let mut t = MerkleTree {
            root: Digest::default(),
            directories: vec![],
            files: vec![],
        };
        let mut dirs = vec![];
        let (root, bytes, msg) = walk(dir, &mut dirs, &mut t.files)?;
        t.root = root.clone();
        t.directories.push((root, bytes, msg));
        t.directories.extend(dirs);
        Ok(t)
    }

    /// The REAPI `Tree` of this directory (what an OutputDirectory names).
    pub fn to_tree(&self) -> Tree {
        let mut seen = std::collections::BTreeSet::new();
        Tree {
            root: Some(self.directories[0].2.clone()),
            children: self.directories[1..]
                .iter()
                .filter(|(d, _, _)| seen.insert(d.hash.clone()))
                .map(|(_, _, m)| m.clone())
                .collect(),
        }
    }
}

fn bad_name(path: &Path) -> Error {
    Error::Invalid(format!(
        "{}: a file name that is not UTF-8 cannot be part of a REAPI tree",
        path.display()
    ))
}

fn walk(
    dir: &Path,
    dirs: &mut Vec<(Digest, Vec<u8>, Directory)>,
    files: &mut Vec<(Digest, PathBuf)>,
) -> Result<(Digest, Vec<u8>, Directory)> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| Error::Io {
            what: format!("reading {what}"),
            source,
        }
    };
    let mut msg = Directory::default();
    let mut entries: Vec<(String, PathBuf)> = vec![];
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().into_string().map_err(|_| bad_name(&e.path()))?;
        entries.push((name, e.path()));
    }
    entries.sort();
    for (name, path) in entries {
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            let target = target.into_os_string().into_string().map_err(|_| bad_name(&path))?;
            msg.symlinks.push(SymlinkNode {
                name,
                target,
                node_properties: None,
            });
        } else if ft.is_dir() {
            let (d, b, m) = walk(&path, dirs, files)?;
            msg.directories.push(DirectoryNode {
                name,
                digest: Some(d.clone()),
            });
            dirs.push((d, b, m));
        } else if ft.is_file() {
            let d = file_digest(&path)?;
            msg.files.push(FileNode {
                name,
                digest: Some(d.clone()),
                is_executable: meta.permissions().mode() & 0o111 != 0,
                node_properties: None,
            });
            files.push((d, path));
        } else {
            return Err(Error::Invalid(format!(
                "{}: only files, directories and symlinks can be part of a REAPI tree",
                path.display()
            )));
        }
    }
    let (d, b) = encode(&msg);
    Ok((d, b, msg))
}

/// The digest of a file's contents, read in pieces.
pub fn file_digest(path: &Path) -> Result<Digest> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0i64;
    loop {
        let k = f.read(&mut buf).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as i64;
    }
    Ok(Digest {
        hash: hex::encode(h.finalize()),
        size_bytes: n,
    })
}

/// What a checked `Tree` holds, by path relative to its root.
#[derive(Debug, Default)]
pub struct Layout {
    /// Directories, parents before children (the root is "").
    pub dirs: Vec<PathBuf>,
    /// Files: path, digest, executable.
    pub files: Vec<(PathBuf, Digest, bool)>,
    /// Symlinks: path, target.
    pub symlinks: Vec<(PathBuf, String)>,
}

/// Checks that `tree`'s root is the Directory `root` names and that every
/// subdirectory it names is among its children with that digest, and lays
/// it out. Names must be single path components: a tree cannot place
/// anything outside its root.
pub fn layout(tree: &Tree, root: &Digest) -> Result<Layout> {
    let root_msg = tree
        .root
        .as_ref()
        .ok_or_else(|| Error::Invalid("the output tree has no root directory".into()))?;
    let (found, _) = encode(root_msg);
    if found != *root {
        return Err(Error::Invalid(format!(
            "the output tree's root directory is {} but the result names {}",
            digest_string(&found),
            digest_string(root)
        )));
    }
    let children: HashMap<String, &Directory> = tree.children.iter().map(|c| (encode(c).0.hash, c)).collect();
    let mut out = Layout::default();
    let mut stack = vec![(PathBuf::new(), root_msg, 0usize)];
    while let Some((at, dir, depth)) = stack.pop() {
        if depth > 256 {
            return Err(Error::Invalid(
                "the output tree is nested deeper than 256 directories".into(),
            ));
        }
        out.dirs.push(at.clone());
        for f in &dir.files {
            let d = f
                .digest
                .clone()
                .ok_or_else(|| Error::Invalid(format!("file {} has no digest", at.join(&f.name).display())))?;
            out.files.push((at.join(component(&f.name)?), d, f.is_executable));
        }
        for s in &dir.symlinks {
            out.symlinks.push((at.join(component(&s.name)?), s.target.clone()));
        }
        for sub in &dir.directories {
            let path = at.join(component(&sub.name)?);
            let d = sub
                .digest
                .as_ref()
                .ok_or_else(|| Error::Invalid(format!("directory {} has no digest", path.display())))?;
            let child = children.get(&d.hash).ok_or_else(|| {
                Error::Invalid(format!(
                    "directory {} names {} which is not among the tree's directories",
                    path.display(),
                    digest_string(d)
                ))
            })?;
            if encode(*child).0.size_bytes != d.size_bytes {
                return Err(Error::Invalid(format!(
                    "directory {} has the wrong size",
                    path.display()
                )));
            }
            stack.push((path, child, depth + 1));
        }
    }
    out.dirs.sort_by_key(|p| p.components().count());
    Ok(out)
}

fn component(name: &str) -> Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Invalid(format!(
            "the output tree has an entry named {name:?}; names must be single path components"
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), "hello").unwrap();
        std::fs::write(t.path().join("x"), "run").unwrap();
        std::fs::set_permissions(t.path().join("x"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a/b/f", t.path().join("l")).unwrap();
        t
    }

    /// A tree laid out again from its `Tree` message has the same paths,
    /// digests, executable bits and symlinks as the directory it came from.
    #[test]
    fn a_tree_round_trips() {
        let t = sample();
        let m = MerkleTree::of(t.path()).unwrap();
        let l = layout(&m.to_tree(), &m.root).unwrap();
        assert_eq!(l.dirs, [PathBuf::new(), "a".into(), "a/b".into()]);
        let files: Vec<_> = l.files.iter().map(|(p, d, x)| (p.clone(), d.size_bytes, *x)).collect();
        assert!(files.contains(&("a/b/f".into(), 5, false)), "{files:?}");
        assert!(files.contains(&("x".into(), 3, true)), "{files:?}");
        assert_eq!(l.symlinks, [("l".into(), "a/b/f".to_string())]);
        // Content and the executable bit change the root; a copy does not.
        let again = MerkleTree::of(t.path()).unwrap();
        assert_eq!(again.root, m.root);
        std::fs::set_permissions(t.path().join("x"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_ne!(MerkleTree::of(t.path()).unwrap().root, m.root);
    }

    /// A tree whose root is not the one the result names, or that points a
    /// name outside its root, is refused.
    #[test]
    fn a_tampered_or_escaping_tree_is_refused() {
        let t = sample();
        let m = MerkleTree::of(t.path()).unwrap();
        let mut tree = m.to_tree();
        tree.root.as_mut().unwrap().files[0].digest = Some(crate::digest_of(b"other"));
        let e = layout(&tree, &m.root).unwrap_err().to_string();
        assert!(e.contains("root directory"), "{e}");

        let mut evil = m.to_tree();
        evil.root.as_mut().unwrap().files[0].name = "../escape".into();
        let root = encode(evil.root.as_ref().unwrap()).0;
        let e = layout(&evil, &root).unwrap_err().to_string();
        assert!(e.contains("single path components"), "{e}");
    }
}
