//! Tar archives written header by header, so that tests can hold names and
//! link targets (`..`, absolute) that a careful builder refuses.

#![allow(dead_code)] // each test file uses part of it

use tar::{EntryType, Header};

/// One member of a hand-made archive.
pub struct Member {
    pub path: String,
    pub kind: EntryType,
    pub data: Vec<u8>,
    pub link: Option<String>,
}

impl Member {
    pub fn file(path: &str, data: &[u8]) -> Member {
        Member::new(path, EntryType::Regular, data, None)
    }
    pub fn dir(path: &str) -> Member {
        Member::new(path, EntryType::Directory, b"", None)
    }
    pub fn symlink(path: &str, target: &str) -> Member {
        Member::new(path, EntryType::Symlink, b"", Some(target))
    }
    pub fn hardlink(path: &str, target: &str) -> Member {
        Member::new(path, EntryType::Link, b"", Some(target))
    }
    fn new(path: &str, kind: EntryType, data: &[u8], link: Option<&str>) -> Member {
        Member {
            path: path.into(),
            kind,
            data: data.to_vec(),
            link: link.map(Into::into),
        }
    }
}

/// The GNU header of a member of `size` bytes (names up to 100 bytes).
pub fn header(path: &str, kind: EntryType, size: u64, link: Option<&str>) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(l) = link {
        gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    h
}

/// An uncompressed tar of `members`, in order.
pub fn raw_tar(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let h = header(&m.path, m.kind, m.data.len() as u64, m.link.as_deref());
        b.append(&h, &m.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}
