//! Layer compression with pinned settings, and turning a planned layer into
//! a compressed blob (reusing a cached one when its diffID was seen before).
//!
//! gzip: level 6, header mtime 0, no file name or comment, OS byte 255
//! ("unknown"), the deflate stream cut into independently compressed 1 MiB
//! blocks so all cores work on one layer with the same bytes for any thread
//! count ([`crate::gzip`]). zstd: level 3, one frame, no checksum, zstd's
//! own multi-threaded streaming mode with one worker per compression
//! thread (its output is the same for any number of workers ≥ 1; it
//! differs from the single-threaded mode, which farm never uses). The bytes still depend on the compressor library's version, so
//! the cache key carries a fingerprint of the compressor's actual output
//! (see [`Compression::compressor`]).

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use farm_lockfiles::integrity::Integrity;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cache::LayerCache;
use crate::digest::{blob_path, HashingWriter};
use crate::gzip::{self, ParallelGzip};
use crate::layer::{LayerError, LayerPlan};
use crate::layout::LayoutError;
use crate::ImageError;

pub const GZIP_LEVEL: u32 = 6;
pub const ZSTD_LEVEL: i32 = 3;
/// The gzip header's OS byte: 255, "unknown", so the host OS never shows.
pub const GZIP_OS_BYTE: u8 = 255;

pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How layers are compressed; each choice has one pinned level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Every OCI tool reads it.
    #[default]
    Gzip,
    /// Smaller and faster; needs containerd ≥ 1.5, Docker ≥ 23 or Podman ≥ 3.
    Zstd,
}

/// The settings a layer was compressed with, for farm's build manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompressionSettings {
    pub algorithm: String,
    pub level: i32,
    pub media_type: String,
    /// The compressor library and a fingerprint of its output.
    pub compressor: String,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn level(self) -> i32 {
        match self {
            Compression::Gzip => GZIP_LEVEL as i32,
            Compression::Zstd => ZSTD_LEVEL,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_TYPE_GZIP,
            Compression::Zstd => MEDIA_TYPE_ZSTD,
        }
    }

    /// Names the compressor and fingerprints it: the SHA-256 (first 16 hex
    /// digits) of a fixed 256 KiB probe compressed with these settings. A
    /// library update that changes compressed bytes changes the fingerprint,
    /// so cached blobs from the old one are not reused.
    pub fn compressor(self) -> &'static str {
        static GZIP: OnceLock<String> = OnceLock::new();
        static ZSTD: OnceLock<String> = OnceLock::new();
        let (cell, library) = match self {
            Compression::Gzip => (
                &GZIP,
                format!("flate2/miniz_oxide, independent {} KiB blocks", gzip::BLOCK_SIZE >> 10),
            ),
            Compression::Zstd => (&ZSTD, format!("zstd {}", zstd::zstd_safe::version_string())),
        };
        cell.get_or_init(|| {
            let mut encoder = self.encoder(Vec::new()).expect("compressing into memory");
            encoder.write_all(&probe()).expect("compressing into memory");
            let out = encoder.finish().expect("compressing into memory");
            let fingerprint = hex::encode(Sha256::digest(&out));
            format!("{library} probe:{}", &fingerprint[..16])
        })
    }

    pub fn settings(self) -> CompressionSettings {
        CompressionSettings {
            algorithm: self.name().into(),
            level: self.level(),
            media_type: self.media_type().into(),
            compressor: self.compressor().into(),
        }
    }

    /// The one place encoders are made.
    fn encoder<W: Write>(self, out: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::Gzip => Encoder::Gzip(ParallelGzip::new(out, GZIP_LEVEL, gzip::shared_pool())?),
            Compression::Zstd => {
                let workers = gzip::shared_pool().current_num_threads().clamp(1, 256) as u32;
                Encoder::Zstd(zstd_writer(out, workers)?)
            }
        })
    }
}

/// farm's zstd encoder with `workers` compression threads: the same bytes
/// for any `workers` ≥ 1 (crates/images/tests/compression.rs proves it).
pub fn zstd_writer<W: Write>(out: W, workers: u32) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut e = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    e.include_checksum(false)?;
    e.include_contentsize(false)?;
    e.multithread(workers.max(1))?;
    Ok(e)
}

/// Text-like and binary-like bytes, so both matchers and literals are exercised.
fn probe() -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * 1024);
    let mut x: u32 = 0x2545_f491;
    while out.len() < 256 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if x.is_multiple_of(3) {
            out.extend_from_slice(b"def handler(request):\n    return {\"status\": \"ok\"}\n");
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(256 * 1024);
    out
}

enum Encoder<W: Write> {
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            // A flush would end a multi-threaded job early, at a point that
            // depends on the caller's buffering; finish() writes everything.
            Encoder::Zstd(_) => Ok(()),
        }
    }
}

/// A reader of a layer blob's uncompressed tar, by its media type; `None`
/// for a media type farm does not know.
pub(crate) fn decoder<'a, R: Read + 'a>(media_type: &str, blob: R) -> io::Result<Option<Box<dyn Read + 'a>>> {
    Ok(match media_type {
        MEDIA_TYPE_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Some(Box::new(flate2::read::GzDecoder::new(blob)))
        }
        MEDIA_TYPE_ZSTD => Some(Box::new(zstd::stream::read::Decoder::new(blob)?)),
        MEDIA_TYPE_TAR | "application/vnd.docker.image.rootfs.diff.tar" => Some(Box::new(blob)),
        _ => None,
    })
}

/// A layer blob now in the layout's `blobs/sha256/`.
#[derive(Debug, Clone)]
pub(crate) struct ProducedLayer {
    pub diff_id: Integrity,
    pub digest: Integrity,
    pub size: u64,
    pub reused_from_cache: bool,
}

/// Counts compressor runs and tar passes, so tests and reports can tell
/// that a cached layer was not compressed again and a layer was tarred once.
#[derive(Debug, Default)]
pub(crate) struct CompressorRuns {
    compressed: AtomicUsize,
    tar_passes: AtomicUsize,
}

impl CompressorRuns {
    pub(crate) fn get(&self) -> usize {
        self.compressed.load(Ordering::SeqCst)
    }

    pub(crate) fn tar_passes(&self) -> usize {
        self.tar_passes.load(Ordering::SeqCst)
    }
}

/// Writes `plan`'s compressed tar into `layout/blobs/sha256/`, tarring once:
/// the tar goes through SHA-256 (the diffID) into the compressor, whose
/// output goes through SHA-256 (the blob digest) into the file.
///
/// With a cache, a layer whose plan fingerprint (its entries and each
/// file's `stat`) led to a cached blob before is first only hashed; the
/// blob cached for that diffID is then verified and used. Any other layer
/// is compressed in its one pass and its blob cached. A hint that turns out
/// wrong (a file changed without its `stat` showing it, or the cached blob
/// is gone or damaged) costs a second pass, never a wrong blob.
pub(crate) fn produce_layer(
    plan: &LayerPlan,
    compression: Compression,
    layout: &Path,
    cache: Option<&LayerCache>,
    runs: &CompressorRuns,
) -> Result<ProducedLayer, ImageError> {
    let fingerprint = cache.map(|_| plan.fingerprint());
    let mut hashed_first = None;
    if let (Some(cache), Some(fingerprint)) = (cache, &fingerprint) {
        if cache.expects_hit(fingerprint, compression) {
            let mut sink = HashingWriter::new(io::sink());
            runs.tar_passes.fetch_add(1, Ordering::SeqCst);
            plan.write_tar(&mut sink)?;
            let (_, diff_id, _) = sink.finish();
            if let Some((digest, size)) = cache.fetch(&diff_id, compression, layout)? {
                cache.remember(fingerprint, &diff_id)?;
                return Ok(ProducedLayer {
                    diff_id,
                    digest,
                    size,
                    reused_from_cache: true,
                });
            }
            hashed_first = Some(diff_id);
        }
    }
    let produced = compress_into_layout(plan, compression, layout, runs)?;
    if let Some(first) = hashed_first {
        if first != produced.diff_id {
            return Err(LayerError::Unstable {
                layer: plan.name().into(),
                first: first.to_string(),
                second: produced.diff_id.to_string(),
            }
            .into());
        }
    }
    if let (Some(cache), Some(fingerprint)) = (cache, &fingerprint) {
        cache.store(
            &produced.diff_id,
            compression,
            &blob_path(layout, &produced.digest),
            &produced.digest,
        )?;
        cache.remember(fingerprint, &produced.diff_id)?;
    }
    Ok(produced)
}

fn compress_into_layout(
    plan: &LayerPlan,
    compression: Compression,
    layout: &Path,
    runs: &CompressorRuns,
) -> Result<ProducedLayer, ImageError> {
    let blobs = layout.join("blobs").join("sha256");
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayoutError::Io { path, source }
    };
    let tmp = tempfile::NamedTempFile::new_in(&blobs).map_err(io_err(&blobs))?;
    let tmp_path = tmp.path().to_path_buf();
    let file = tmp.as_file().try_clone().map_err(io_err(&tmp_path))?;
    let compressed = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    runs.compressed.fetch_add(1, Ordering::SeqCst);
    runs.tar_passes.fetch_add(1, Ordering::SeqCst);
    let encoder = compression.encoder(compressed).map_err(io_err(&tmp_path))?;
    let mut tar = HashingWriter::new(encoder);
    plan.write_tar(&mut tar)?;
    let (encoder, diff_id, _) = tar.finish();
    let compressed = encoder.finish().map_err(io_err(&tmp_path))?;
    let (buffered, digest, size) = compressed.finish();
    let file = buffered.into_inner().map_err(|e| io_err(&tmp_path)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp_path))?;
    let dest = blob_path(layout, &digest);
    // Two layers with the same bytes share one blob.
    tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
    Ok(ProducedLayer {
        diff_id,
        digest,
        size,
        reused_from_cache: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the gzip header is fixed (mtime 0, no name, OS 255, XFL 0 at
    /// level 6) and that both formats round-trip.
    #[test]
    fn gzip_header_is_pinned_and_both_formats_round_trip() {
        let data = probe();
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut e = c.encoder(Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            let out = e.finish().unwrap();
            if c == Compression::Gzip {
                assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
            } else {
                assert_eq!(&out[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
            }
            let mut back = Vec::new();
            decoder(c.media_type(), &out[..])
                .unwrap()
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{c:?} round trip");
        }
        assert_ne!(Compression::Gzip.compressor(), Compression::Zstd.compressor());
        assert!(Compression::Zstd.compressor().starts_with("zstd 1."));
        assert!(decoder("application/x-unknown", &b""[..]).unwrap().is_none());
    }
}
