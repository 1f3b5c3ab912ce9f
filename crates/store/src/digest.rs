//! The tree digest: a SHA-256 Merkle hash of a file or directory tree that
//! sees names, node types, execute bits, file contents and symlink targets,
//! and nothing else. The byte format is specified in spec/tree-digest.md;
//! the test vectors at the bottom pin it.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::tree::{lstat, sorted_children, special_file_type, TreeError};

/// A SHA-256 tree digest; prints as `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// A string that is not a `sha256:<hex>` digest.
#[derive(Debug, thiserror::Error)]
#[error("`{found}`: expected {expected}")]
pub struct DigestParseError {
    found: String,
    expected: &'static str,
}

impl Digest {
    pub const PREFIX: &'static str = "sha256:";

    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 lowercase hex digits (no prefix), as in store file names.
    pub fn from_hex(s: &str) -> Result<Digest, DigestParseError> {
        let bad = || DigestParseError {
            found: s.to_string(),
            expected: "64 lowercase hex digits",
        };
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Digest::PREFIX, self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Digest, DigestParseError> {
        let hex = s.strip_prefix(Digest::PREFIX).ok_or_else(|| DigestParseError {
            found: s.to_string(),
            expected: "`sha256:` followed by 64 lowercase hex digits",
        })?;
        Digest::from_hex(hex).map_err(|_| DigestParseError {
            found: s.to_string(),
            expected: "`sha256:` followed by 64 lowercase hex digits",
        })
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Node tags and directory-record type bytes of spec/tree-digest.md.
const TAG_FILE: &[u8] = b"file\0";
const TAG_SYMLINK: &[u8] = b"symlink\0";
const TAG_DIRECTORY: &[u8] = b"directory\0";
const TYPE_FILE: u8 = b'f';
const TYPE_SYMLINK: u8 = b'l';
const TYPE_DIRECTORY: u8 = b'd';

/// The tree digest of the file, symlink or directory at `path` (symlinks
/// are never followed, not even at the top). Regular files are hashed in
/// parallel. Devices, fifos and sockets are refused.
pub fn tree_digest(path: &Path) -> Result<Digest, TreeError> {
    node_digest(path).map(|(_, digest)| digest)
}

fn node_digest(path: &Path) -> Result<(u8, Digest), TreeError> {
    let meta = lstat(path)?;
    let ft = meta.file_type();
    if let Some(file_type) = special_file_type(&ft) {
        return Err(TreeError::SpecialFile {
            path: path.to_path_buf(),
            file_type,
        });
    }
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(TreeError::io(path, "reading symlink"))?;
        let target = target.as_os_str().as_bytes();
        let mut h = Sha256::new();
        h.update(TAG_SYMLINK);
        h.update((target.len() as u64).to_be_bytes());
        h.update(target);
        return Ok((TYPE_SYMLINK, Digest(h.finalize().into())));
    }
    if ft.is_file() {
        let executable = meta.permissions().mode() & 0o111 != 0;
        return file_digest(path, executable, meta.len()).map(|d| (TYPE_FILE, d));
    }
    let names = sorted_children(path)?;
    let children: Vec<(u8, Digest)> = names
        .par_iter()
        .map(|name| node_digest(&path.join(name)))
        .collect::<Result<_, _>>()?;
    let mut h = Sha256::new();
    h.update(TAG_DIRECTORY);
    h.update((names.len() as u64).to_be_bytes());
    for (name, (kind, digest)) in names.iter().zip(&children) {
        let name = name.as_bytes();
        h.update((name.len() as u64).to_be_bytes());
        h.update(name);
        h.update([*kind]);
        h.update(digest.0);
    }
    Ok((TYPE_DIRECTORY, Digest(h.finalize().into())))
}

fn file_digest(path: &Path, executable: bool, len: u64) -> Result<Digest, TreeError> {
    let mut file = File::open(path).map_err(TreeError::io(path, "opening file"))?;
    let mut h = Sha256::new();
    h.update(TAG_FILE);
    h.update([executable as u8]);
    h.update(len.to_be_bytes());
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(TreeError::io(path, "reading file"))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        h.update(&buf[..n]);
    }
    // The length went into the hash before the contents, so they must agree.
    if read != len {
        return Err(TreeError::Changed {
            path: path.to_path_buf(),
            expected: len,
            found: read,
        });
    }
    Ok(Digest(h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// The reference tree of spec/tree-digest.md:
    ///   hello.txt  "hello\n", mode 0644
    ///   bin/run    "#!/bin/sh\necho hi\n", mode 0755
    ///   link       -> "hello.txt"
    ///   empty/     (empty directory)
    fn reference_tree(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("hello.txt"), "hello\n").unwrap();
        fs::set_permissions(root.join("hello.txt"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(root.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("hello.txt", root.join("link")).unwrap();
    }

    // Expected values computed independently of this crate, with Python's
    // hashlib straight from the spec (the script is in spec/tree-digest.md):
    //   file(b"abc", False)       -> FILE_ABC
    //   the reference tree above  -> REFERENCE_TREE
    const FILE_ABC: &str = "sha256:2766a1ba76a6d7056aff36b3c2320d52e11a6fed574a552312d55f603a8103d7";
    const REFERENCE_TREE: &str = "sha256:caefd048c19a70064e48b0b8722c074b65b26c7d6fe848b0a86b4bb9742ef462";

    #[test]
    fn test_vector_single_file_matches_spec() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("abc");
        fs::write(&p, "abc").unwrap();
        assert_eq!(tree_digest(&p).unwrap().to_string(), FILE_ABC);
    }

    #[test]
    fn test_vector_reference_tree_matches_spec() {
        let t = tempfile::tempdir().unwrap();
        reference_tree(t.path());
        assert_eq!(tree_digest(t.path()).unwrap().to_string(), REFERENCE_TREE);
    }

    #[test]
    fn digest_ignores_mtime_and_non_execute_mode_bits() {
        let t = tempfile::tempdir().unwrap();
        reference_tree(t.path());
        let before = tree_digest(t.path()).unwrap();
        crate::tree::set_times(&t.path().join("hello.txt"), 12345).unwrap();
        crate::tree::set_times(&t.path().join("link"), 999).unwrap();
        fs::set_permissions(t.path().join("hello.txt"), fs::Permissions::from_mode(0o400)).unwrap();
        fs::set_permissions(t.path().join("bin/run"), fs::Permissions::from_mode(0o4500)).unwrap();
        fs::set_permissions(t.path().join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            tree_digest(t.path()).unwrap(),
            before,
            "mtimes, setuid and r/w bits must not count"
        );
    }

    #[test]
    fn digest_ignores_owner() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: changing owners needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        reference_tree(t.path());
        let before = tree_digest(t.path()).unwrap();
        let other = nix::unistd::Uid::from_raw(4242);
        let group = nix::unistd::Gid::from_raw(4242);
        nix::unistd::chown(&t.path().join("hello.txt"), Some(other), Some(group)).unwrap();
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &t.path().join("link"),
            Some(other),
            Some(group),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        assert_eq!(tree_digest(t.path()).unwrap(), before);
    }

    #[test]
    fn digest_sees_content_x_bit_symlink_target_and_names() {
        let base = {
            let t = tempfile::tempdir().unwrap();
            reference_tree(t.path());
            tree_digest(t.path()).unwrap()
        };
        type Change = fn(&Path);
        let variants: [(&str, Change); 6] = [
            ("content", |r| fs::write(r.join("hello.txt"), "hellO\n").unwrap()),
            ("x bit", |r| {
                fs::set_permissions(r.join("hello.txt"), fs::Permissions::from_mode(0o645)).unwrap()
            }),
            ("symlink target", |r| {
                fs::remove_file(r.join("link")).unwrap();
                symlink("bin/run", r.join("link")).unwrap();
            }),
            ("file name", |r| {
                fs::rename(r.join("hello.txt"), r.join("hello.txT")).unwrap()
            }),
            ("empty dir name", |r| {
                fs::rename(r.join("empty"), r.join("empty2")).unwrap()
            }),
            ("extra empty dir", |r| fs::create_dir(r.join("empty/more")).unwrap()),
        ];
        let mut seen = std::collections::HashSet::from([base]);
        for (what, change) in variants {
            let t = tempfile::tempdir().unwrap();
            reference_tree(t.path());
            change(t.path());
            let d = tree_digest(t.path()).unwrap();
            assert!(seen.insert(d), "changing the {what} must change the digest");
        }
    }

    #[test]
    fn digest_tells_file_from_symlink_and_empty_file_from_empty_dir() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), "x").unwrap();
        symlink("x", t.path().join("l")).unwrap();
        fs::write(t.path().join("e"), "").unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        assert_ne!(
            tree_digest(&t.path().join("f")).unwrap(),
            tree_digest(&t.path().join("l")).unwrap()
        );
        assert_ne!(
            tree_digest(&t.path().join("e")).unwrap(),
            tree_digest(&t.path().join("d")).unwrap()
        );
    }

    #[test]
    fn digest_refuses_a_socket() {
        let t = tempfile::tempdir().unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(t.path().join("sock")).unwrap();
        let err = tree_digest(t.path()).unwrap_err();
        assert!(
            matches!(
                err,
                TreeError::SpecialFile {
                    file_type: "socket",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn digest_string_round_trips_and_rejects_malformed() {
        let d = Digest::from_bytes([0xab; 32]);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(
            serde_json::from_str::<Digest>(&serde_json::to_string(&d).unwrap()).unwrap(),
            d
        );
        for bad in [
            "ab".repeat(32),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}", "AB".repeat(32)),
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert!(err.to_string().contains("64 lowercase hex"), "{err}");
        }
    }
}
