//! The deterministic tar writer: a list of entries whose every attribute
//! is given (path, type, mode, uid, gid, mtime; never user or group names,
//! atime, ctime or xattrs), written header by header to any `Write`, in
//! the order given, so that nothing about the host leaks in.
//!
//! Three header formats are written, one per reader farm writes for, each
//! byte-for-byte as its spec pins it:
//!
//! - [`Format::Pax`]: POSIX ustar headers, and a PAX extended header only
//!   for a value ustar cannot hold (image layers, `spec/images.md`).
//! - [`Format::PaxBase256Numbers`]: the same, except that a size or id too
//!   large for ustar's octal fields is written in GNU's base-256 encoding
//!   (docker archives, which `docker load` and `podman load` read).
//! - [`Format::Gnu`]: GNU headers with `././@LongLink` entries for long
//!   names (roots imported into a container engine, `spec/sandbox.md`).
//!
//! A file's size is part of its entry: a file that has more or fewer bytes
//! when it is copied is an error, never a tar whose headers and data
//! disagree.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Size of a tar block: headers, and the padding of data.
pub const BLOCK: usize = 512;

/// Largest size, uid or gid a ustar numeric field holds (11 and 7 octal digits).
const USTAR_SIZE_MAX: u64 = 0o77_777_777_777;
const USTAR_ID_MAX: u32 = 0o7_777_777;

/// Mode of a PAX extended header's own entry.
const PAX_HEADER_MODE: u32 = 0o644;

/// How headers are encoded (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ustar headers (`ustar\0`, version `00`). A path longer than 100
    /// bytes is split into `prefix` + `name` at the last `/` that makes both
    /// fit; a path that cannot be split, a link target over 100 bytes, a
    /// size of 8 GiB or more and an id above 2097151 go into a PAX extended
    /// header (records sorted by key, `hdrcharset=BINARY` first when a value
    /// is not UTF-8) named `PaxHeaders/<base name>`. Directory names end in `/`.
    Pax,
    /// As [`Format::Pax`], but sizes and ids too large for octal are written
    /// in GNU's base-256 encoding instead of PAX records.
    PaxBase256Numbers,
    /// GNU headers (`ustar \0`), as the `tar` crate's `Builder` writes them:
    /// a path or link target that does not fit the 100-byte field goes into a
    /// `././@LongLink` entry before its own, large numbers into base-256.
    /// Directory names carry no trailing `/`.
    Gnu,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarKind {
    Dir,
    /// A regular file of `size` bytes. [`TarWriter::append`] reads them from
    /// the host file `source`; [`TarWriter::append_reader`] from a reader,
    /// and then `source` only names the data in errors.
    File {
        source: PathBuf,
        size: u64,
    },
    /// A symlink and its target, kept as it is.
    Symlink(Vec<u8>),
    /// Another name of a file written earlier: that file's path in the tar.
    HardLink(Vec<u8>),
}

/// One tar entry with every attribute fixed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Relative, `/`-separated, no trailing `/` (the format adds one to
    /// directories where it should).
    pub path: Vec<u8>,
    pub kind: TarKind,
    /// Permission bits as written; the caller decides which survive.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

/// The sort key that puts entries in tar order: paths compared component
/// by component (as if `/` sorted below every other byte), so a directory
/// is followed directly by its contents, as with GNU tar's `--sort=name`:
/// `a`, `a/x`, `a-b`. [`crate::walk()`] returns entries in this order.
pub fn tar_order(path: &[u8]) -> Vec<u8> {
    path.iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("{}: opening: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: reading: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// `found` is `"<n> bytes"` when there were fewer, `"more"` when more.
    #[error("{}: changed while the tar was written: expected {expected} bytes, found {found}", path.display())]
    Changed {
        path: PathBuf,
        expected: u64,
        found: String,
    },
    /// Writing the entry `entry` (its path in the tar) failed, or the format
    /// cannot encode it.
    #[error("writing `{entry}` to the tar stream: {source}")]
    Write { entry: String, source: io::Error },
    #[error("writing the end of the tar stream: {source}")]
    Finish { source: io::Error },
}

/// Writes `entries` in the order given, then the two zero blocks that end a
/// tar, and returns `out`.
pub fn write_tar<W: Write>(out: W, format: Format, entries: &[TarEntry]) -> Result<W, TarError> {
    let mut tar = TarWriter::new(out, format);
    for entry in entries {
        tar.append(entry)?;
    }
    tar.finish()
}

/// A tar stream being written, one entry at a time.
///
/// After an error the stream is incomplete and must be thrown away. (The
/// `tar` crate's `Builder`, which this holds for the GNU names, closes the
/// stream when dropped, so a failed tar may also end in zero blocks.)
pub struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    format: Format,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W, format: Format) -> Self {
        TarWriter {
            builder: tar::Builder::new(out),
            format,
        }
    }

    /// Appends `entry`, reading a file's data from its `source`.
    pub fn append(&mut self, entry: &TarEntry) -> Result<(), TarError> {
        match &entry.kind {
            TarKind::File { source, .. } => {
                let file = File::open(source).map_err(|e| TarError::Open {
                    path: source.clone(),
                    source: e,
                })?;
                self.append_reader(entry, file)
            }
            _ => self.append_reader(entry, io::empty()),
        }
    }

    /// Appends `entry`, reading a file's data from `data`, which must hold
    /// exactly the entry's size (nothing is read for other kinds).
    pub fn append_reader<R: Read>(&mut self, entry: &TarEntry, data: R) -> Result<(), TarError> {
        self.write_header(entry)?;
        if let TarKind::File { source, size } = &entry.kind {
            let write_err = write_err(entry);
            copy_exact(data, *size, source, self.builder.get_mut(), &write_err)?;
            pad(self.builder.get_mut(), *size).map_err(write_err)?;
        }
        Ok(())
    }

    /// Ends the tar with two zero blocks (no padding to a record size) and
    /// returns the output.
    pub fn finish(self) -> Result<W, TarError> {
        self.builder.into_inner().map_err(|source| TarError::Finish { source })
    }

    fn write_header(&mut self, entry: &TarEntry) -> Result<(), TarError> {
        let write_err = write_err(entry);
        if self.format == Format::Gnu {
            return self.write_gnu_header(entry).map_err(write_err);
        }
        let (header, pax) = ustar_header(entry, self.format);
        let out = self.builder.get_mut();
        if let Some((pax_header, records)) = pax {
            out.write_all(pax_header.as_bytes()).map_err(&write_err)?;
            out.write_all(&records).map_err(&write_err)?;
            pad(out, records.len() as u64).map_err(&write_err)?;
        }
        out.write_all(header.as_bytes()).map_err(write_err)
    }

    /// The header (and any `././@LongLink` entries before it) exactly as
    /// `tar::Builder` writes it; the data follows apart.
    fn write_gnu_header(&mut self, entry: &TarEntry) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(entry.mtime);
        h.set_uid(u64::from(entry.uid));
        h.set_gid(u64::from(entry.gid));
        h.set_mode(entry.mode);
        let (entry_type, size, link) = kind_fields(&entry.kind);
        h.set_entry_type(entry_type);
        h.set_size(size);
        let path = Path::new(OsStr::from_bytes(&entry.path));
        match link {
            Some(target) => self
                .builder
                .append_link(&mut h, path, Path::new(OsStr::from_bytes(target))),
            // The data is copied by the caller; an empty reader writes no padding.
            None => self.builder.append_data(&mut h, path, io::empty()),
        }
    }
}

fn write_err(entry: &TarEntry) -> impl Fn(io::Error) -> TarError {
    let name = String::from_utf8_lossy(&entry.path).into_owned();
    move |source| TarError::Write {
        entry: name.clone(),
        source,
    }
}

/// The header's type, size and link target of a kind.
fn kind_fields(kind: &TarKind) -> (tar::EntryType, u64, Option<&Vec<u8>>) {
    match kind {
        TarKind::Dir => (tar::EntryType::Directory, 0, None),
        TarKind::File { size, .. } => (tar::EntryType::Regular, *size, None),
        TarKind::Symlink(target) => (tar::EntryType::Symlink, 0, Some(target)),
        TarKind::HardLink(target) => (tar::EntryType::Link, 0, Some(target)),
    }
}

/// Copies exactly `size` bytes of `data`, failing if it has more or fewer.
fn copy_exact<R: Read, W: Write>(
    data: R,
    size: u64,
    source: &Path,
    out: &mut W,
    write_err: &impl Fn(io::Error) -> TarError,
) -> Result<(), TarError> {
    let read_err = |e| TarError::Read {
        path: source.into(),
        source: e,
    };
    let mut limited = data.take(size);
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        out.write_all(&buf[..n]).map_err(write_err)?;
        copied += n as u64;
    }
    let changed = |found: String| TarError::Changed {
        path: source.into(),
        expected: size,
        found,
    };
    if copied != size {
        return Err(changed(format!("{copied} bytes")));
    }
    if limited.into_inner().read(&mut [0u8; 1]).map_err(read_err)? != 0 {
        return Err(changed("more".into()));
    }
    Ok(())
}

/// The ustar header of `entry`, and a PAX header with its records when a
/// value does not fit ustar (and `format` does not write it in base-256).
fn ustar_header(entry: &TarEntry, format: Format) -> (tar::Header, Option<(tar::Header, Vec<u8>)>) {
    let mut name = entry.path.clone();
    if entry.kind == TarKind::Dir {
        name.push(b'/');
    }
    let mut h = tar::Header::new_ustar();
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    if !set_ustar_path(&mut h, &name) {
        pax.push(("path", name.clone()));
        let cut = name.len().min(100);
        h.as_old_mut().name[..cut].copy_from_slice(&name[..cut]);
    }
    let (entry_type, size, link) = kind_fields(&entry.kind);
    h.set_entry_type(entry_type);
    if let Some(link) = link {
        let field = &mut h.as_old_mut().linkname;
        let cut = link.len().min(field.len());
        field[..cut].copy_from_slice(&link[..cut]);
        if link.len() > field.len() {
            pax.push(("linkpath", link.clone()));
        }
    }
    let base256 = format == Format::PaxBase256Numbers;
    if size > USTAR_SIZE_MAX && !base256 {
        pax.push(("size", size.to_string().into_bytes()));
        h.set_size(0);
    } else {
        // Beyond USTAR_SIZE_MAX the tar crate writes base-256.
        h.set_size(size);
    }
    let mut id_field = |key: &'static str, id: u32| {
        if id > USTAR_ID_MAX && !base256 {
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
    ph.set_mode(PAX_HEADER_MODE);
    ph.set_uid(0);
    ph.set_gid(0);
    ph.set_mtime(entry.mtime);
    ph.set_cksum();
    (h, Some((ph, records)))
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
    use std::fs;

    use super::*;

    fn file(path: &str, source: &Path, size: u64) -> TarEntry {
        TarEntry {
            path: path.as_bytes().to_vec(),
            kind: TarKind::File {
                source: source.into(),
                size,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
        }
    }

    fn entry(path: &str, kind: TarKind, mode: u32) -> TarEntry {
        TarEntry {
            path: path.as_bytes().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1,
        }
    }

    /// Proves [`Format::Gnu`] writes what `tar::Builder` writes for the same
    /// headers, long names and link targets included.
    #[test]
    fn gnu_format_matches_the_tar_crates_builder() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        fs::write(&data, vec![b'x'; 700]).unwrap();
        let long_dir = "d".repeat(120);
        let long_file = format!("{long_dir}/{}", "f".repeat(90));
        let long_target = "../".repeat(40) + "target";
        let entries = [
            entry("a", TarKind::Dir, 0o755),
            file("a/f", &data, 700),
            entry(&long_dir, TarKind::Dir, 0o700),
            file(&long_file, &data, 700),
            entry("a/s", TarKind::Symlink(long_target.clone().into_bytes()), 0o777),
            entry("a/t", TarKind::Symlink(b"/abs/short".to_vec()), 0o777),
        ];
        let ours = write_tar(Vec::new(), Format::Gnu, &entries).unwrap();

        let mut b = tar::Builder::new(Vec::new());
        for e in &entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(e.mode);
            let path = Path::new(OsStr::from_bytes(&e.path));
            match &e.kind {
                TarKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, path, io::empty()).unwrap();
                }
                TarKind::File { source, size } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*size);
                    b.append_data(&mut h, path, File::open(source).unwrap()).unwrap();
                }
                TarKind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, Path::new(OsStr::from_bytes(target)))
                        .unwrap();
                }
                TarKind::HardLink(_) => unreachable!(),
            }
        }
        assert!(ours == b.into_inner().unwrap(), "same bytes as tar::Builder");
    }

    /// Proves a size beyond ustar's octal field is a PAX record in
    /// [`Format::Pax`] and base-256 in [`Format::PaxBase256Numbers`], and
    /// that ids follow the same rule.
    #[test]
    fn large_numbers_are_pax_records_or_base256_by_format() {
        let big = USTAR_SIZE_MAX + 1;
        let mut e = file("big", Path::new("unused"), big);
        e.uid = 3_000_000;
        let (h, pax) = ustar_header(&e, Format::Pax);
        let (_, records) = pax.expect("a PAX header");
        assert_eq!(
            records,
            [
                pax_record("size", big.to_string().as_bytes()),
                pax_record("uid", b"3000000")
            ]
            .concat()
        );
        assert_eq!((h.size().unwrap(), h.uid().unwrap()), (0, 0));

        let (h, pax) = ustar_header(&e, Format::PaxBase256Numbers);
        assert!(pax.is_none());
        assert_eq!(h.as_old().size[0], 0x80, "base-256 marker");
        assert_eq!((h.size().unwrap(), h.uid().unwrap()), (big, 3_000_000));
    }

    #[test]
    fn a_file_that_changed_size_is_an_error_not_a_short_entry() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        fs::write(&data, b"12345").unwrap();
        let err = write_tar(Vec::new(), Format::Pax, &[file("f", &data, 4)]).unwrap_err();
        assert!(
            matches!(&err, TarError::Changed { found, .. } if found == "more"),
            "{err}"
        );
        let err = write_tar(Vec::new(), Format::Gnu, &[file("f", &data, 6)]).unwrap_err();
        assert!(err.to_string().contains("expected 6 bytes, found 5 bytes"), "{err}");
        let mut tar = TarWriter::new(Vec::new(), Format::Pax);
        tar.append_reader(&file("f", Path::new("stream"), 5), &b"12345"[..])
            .unwrap();
        let out = tar.finish().unwrap();
        assert_eq!(out.len(), 4 * BLOCK, "header, one data block, two zero blocks");
    }

    #[test]
    fn tar_order_puts_a_directorys_contents_right_after_it() {
        let mut paths = ["a-b", "a/x", "a", "a0", "B"];
        paths.sort_by_key(|p| tar_order(p.as_bytes()));
        assert_eq!(paths, ["B", "a", "a/x", "a-b", "a0"]);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"abc"), b"12 path=abc\n");
        let r = pax_record("path", &[b'x'; 93]);
        assert_eq!(r.len(), 103);
        assert!(r.starts_with(b"103 path="));
    }
}
