//! A directory of compressed layer blobs keyed by what determines their
//! bytes: the diffID, the algorithm, its level and the compressor's
//! fingerprint. Entries are verified against their recorded digest when
//! used, so a damaged entry is recompressed rather than trusted.
//!
//! ```text
//! <cache>/blobs/sha256/<hex>     compressed blobs
//! <cache>/layers/v1/<key hex>    "sha256:<hex> <size>\n" for one key
//! <cache>/plans/v1/<plan hex>     "sha256:<diffID hex>\n": the diffID a layer
//!                                 plan's fingerprint last gave
//! ```

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use farm_lockfiles::integrity::Integrity;
use sha2::{Digest as _, Sha256};

use crate::compress::Compression;
use crate::digest::{blob_path, parse_sha256, HashingWriter};
use crate::layout::LayoutError;

pub(crate) struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    pub(crate) fn open(dir: &Path) -> Result<LayerCache, LayoutError> {
        for sub in ["blobs/sha256", "layers/v1", "plans/v1"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|source| LayoutError::Cache { path, source })?;
        }
        Ok(LayerCache { dir: dir.into() })
    }

    fn key_path(&self, diff_id: &Integrity, compression: Compression) -> PathBuf {
        let key = format!(
            "farm-images layer cache v1\ndiff_id {diff_id}\nalgorithm {}\nlevel {}\ncompressor {}\n",
            compression.name(),
            compression.level(),
            compression.compressor()
        );
        self.dir
            .join("layers/v1")
            .join(hex::encode(Sha256::digest(key.as_bytes())))
    }

    fn plan_path(&self, fingerprint: &[u8; 32]) -> PathBuf {
        self.dir.join("plans/v1").join(hex::encode(fingerprint))
    }

    /// Whether a layer with this plan fingerprint is likely cached: the
    /// plan gave a diffID before and a blob is recorded for it with these
    /// settings. Only a hint; [`LayerCache::fetch`] verifies.
    pub(crate) fn expects_hit(&self, fingerprint: &[u8; 32], compression: Compression) -> bool {
        fs::read_to_string(self.plan_path(fingerprint))
            .ok()
            .and_then(|s| parse_sha256(s.trim_end()))
            .is_some_and(|diff_id| self.key_path(&diff_id, compression).is_file())
    }

    /// Records that the plan with `fingerprint` gave `diff_id`.
    pub(crate) fn remember(&self, fingerprint: &[u8; 32], diff_id: &Integrity) -> Result<(), LayoutError> {
        let path = self.plan_path(fingerprint);
        let line = format!("{diff_id}\n");
        if fs::read_to_string(&path).is_ok_and(|s| s == line) {
            return Ok(());
        }
        write_record(&path, &line)
    }

    /// Puts the cached blob for `diff_id` into `layout`'s blobs, verified;
    /// `None` when there is no usable entry.
    pub(crate) fn fetch(
        &self,
        diff_id: &Integrity,
        compression: Compression,
        layout: &Path,
    ) -> Result<Option<(Integrity, u64)>, LayoutError> {
        let Ok(record) = fs::read_to_string(self.key_path(diff_id, compression)) else {
            return Ok(None);
        };
        let Some((digest, size)) = record
            .trim_end()
            .split_once(' ')
            .and_then(|(d, s)| Some((parse_sha256(d)?, s.parse::<u64>().ok()?)))
        else {
            return Ok(None);
        };
        let source = blob_path(&self.dir, &digest);
        let Ok(mut file) = fs::File::open(&source) else {
            return Ok(None);
        };
        let mut hashed = HashingWriter::new(io::sink());
        if io::copy(&mut file, &mut hashed).is_err() {
            return Ok(None);
        }
        let (_, actual, len) = hashed.finish();
        if actual != digest || len != size {
            // A damaged entry: drop it so the fresh blob replaces it.
            let _ = fs::remove_file(&source);
            return Ok(None);
        }
        let dest = blob_path(layout, &digest);
        link_or_copy(&source, &dest).map_err(|source| LayoutError::Io { path: dest, source })?;
        Ok(Some((digest, size)))
    }

    /// Records the blob at `blob` (already in a layout) for `diff_id`.
    pub(crate) fn store(
        &self,
        diff_id: &Integrity,
        compression: Compression,
        blob: &Path,
        digest: &Integrity,
    ) -> Result<(), LayoutError> {
        let cache_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LayoutError::Cache { path, source }
        };
        let dest = blob_path(&self.dir, digest);
        if !dest.exists() {
            link_or_copy(blob, &dest).map_err(cache_err(&dest))?;
        }
        let size = fs::metadata(&dest).map_err(cache_err(&dest))?.len();
        write_record(&self.key_path(diff_id, compression), &format!("{digest} {size}\n"))
    }
}

/// Writes a one-line record whole (through a temporary file) or not at all.
fn write_record(path: &Path, line: &str) -> Result<(), LayoutError> {
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayoutError::Cache { path, source }
    };
    let dir = path.parent().expect("record paths have a parent");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(cache_err(dir))?;
    tmp.write_all(line.as_bytes()).map_err(cache_err(tmp.path()))?;
    tmp.persist(path).map_err(|e| cache_err(path)(e.error))?;
    Ok(())
}

/// A hardlink where the filesystem allows, else a copy; either way `dest`
/// appears whole (through a temporary name) or not at all.
fn link_or_copy(source: &Path, dest: &Path) -> io::Result<()> {
    let dir = dest.parent().expect("blob paths have a parent");
    // Unique per process and call: two layers of one build may hold the same blob.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(source, &tmp).is_err() {
        let mut from = fs::File::open(source)?;
        let mut to = fs::File::create(&tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n])?;
        }
        to.sync_all()?;
    }
    fs::rename(&tmp, dest)
}
