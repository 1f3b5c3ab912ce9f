//! SHA-256 while bytes stream past, and digests as paths in a blob store.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use farm_lockfiles::integrity::{Algorithm, Integrity};
use sha2::{Digest as _, Sha256};

/// Passes writes through to `inner`, hashing and counting them.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, Integrity, u64) {
        (self.inner, Integrity::sha256(self.hasher.finalize().into()), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `<dir>/blobs/sha256/<hex>`, the OCI layout's place for a blob.
pub(crate) fn blob_path(dir: &Path, digest: &Integrity) -> PathBuf {
    dir.join("blobs").join(digest.algorithm.name()).join(digest.hex())
}

/// The digest a descriptor names, as farm's [`Integrity`]; only sha256 is
/// produced or accepted, as every OCI tool supports it.
pub(crate) fn parse_sha256(s: &str) -> Option<Integrity> {
    Integrity::parse(s)
        .ok()
        .filter(|d| d.algorithm == Algorithm::Sha256 && s.contains(':'))
}
