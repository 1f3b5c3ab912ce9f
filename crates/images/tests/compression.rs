//! Deterministic parallel compression: gzip and zstd give the same bytes
//! whatever the number of compression threads, and streams that gzip,
//! zstd and the Rust decoders read back.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use farm_images::gzip::{ParallelGzip, BLOCK_SIZE};
use farm_testkit::require_tool;

/// About 6.3 MiB: runs of text (compressible) and xorshift noise (not), so
/// every block holds matches and literals and the last block is partial.
fn sample() -> Vec<u8> {
    let len = 6 * BLOCK_SIZE + 300_000;
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(4) {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(b"usr/lib/python3.11/site-packages/fastapi/routing.py 0644 0:0\n");
        }
    }
    out.truncate(len);
    out
}

fn gzip_on(threads: usize, data: &[u8]) -> Vec<u8> {
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap());
    assert_eq!(pool.current_num_threads(), threads);
    let mut gz = ParallelGzip::new(Vec::new(), 6, pool).unwrap();
    // Odd write sizes: block boundaries must not depend on them.
    for piece in data.chunks(10_007 * threads) {
        gz.write_all(piece).unwrap();
    }
    gz.flush().unwrap();
    gz.finish().unwrap()
}

/// Proves the compressed bytes are identical with 1, 2 and 8 threads (a
/// rayon pool of each size), that flate2 and `gzip -t`/`gzip -dc` read the
/// stream back as the input, and that it really is cut into independent
/// blocks (one sync-flush marker per full block).
#[test]
fn parallel_gzip_is_identical_for_1_2_and_8_threads() {
    let data = sample();
    let one = gzip_on(1, &data);
    let two = gzip_on(2, &data);
    let eight = gzip_on(8, &data);
    assert!(
        one == two,
        "1 and 2 threads differ ({} vs {} bytes)",
        one.len(),
        two.len()
    );
    assert!(
        one == eight,
        "1 and 8 threads differ ({} vs {} bytes)",
        one.len(),
        eight.len()
    );
    assert!(
        one.len() < data.len() * 3 / 4,
        "it compresses: {} of {} bytes",
        one.len(),
        data.len()
    );
    assert_eq!(
        &one[..10],
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255],
        "the pinned gzip header"
    );

    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
    assert!(back == data, "flate2 decodes the input");
    let markers = one.windows(4).filter(|w| *w == [0, 0, 0xff, 0xff]).count();
    assert!(
        markers >= data.len() / BLOCK_SIZE,
        "one sync flush per full block, found {markers}"
    );

    if !require_tool("gzip") {
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &one).unwrap();
    run(Command::new("gzip").arg("-t").arg(file.path()));
    let out = run(Command::new("gzip").arg("-dc").arg(file.path()).stdout(Stdio::piped()));
    assert!(out.stdout == data, "gzip -dc gives the input back");
}

fn zstd_on(workers: u32, data: &[u8]) -> Vec<u8> {
    let mut z = farm_images::compress::zstd_writer(Vec::new(), workers).unwrap();
    // Odd write sizes and a flush through the layer encoder's path do not
    // decide job boundaries: zstd cuts its jobs by input size.
    for piece in data.chunks(10_007 * workers as usize) {
        z.write_all(piece).unwrap();
    }
    z.finish().unwrap()
}

/// About 25 MiB (several of zstd's multi-threaded jobs at level 3):
/// `sample()` four times with a different tail each time, so later jobs
/// cannot just repeat the first.
fn big_sample() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..4u8 {
        let mut s = sample();
        for b in s.iter_mut().step_by(4099) {
            *b = b.wrapping_add(i);
        }
        out.extend(s);
    }
    out
}

/// Proves farm's zstd layers are the same bytes with 1, 2 and 8 worker
/// threads, and that the zstd crate and `zstd -t`/`zstd -dc` read them back.
#[test]
fn zstd_is_identical_for_1_2_and_8_workers() {
    let data = big_sample();
    let one = zstd_on(1, &data);
    let two = zstd_on(2, &data);
    let eight = zstd_on(8, &data);
    assert!(
        one == two,
        "1 and 2 workers differ ({} vs {} bytes)",
        one.len(),
        two.len()
    );
    assert!(
        one == eight,
        "1 and 8 workers differ ({} vs {} bytes)",
        one.len(),
        eight.len()
    );
    assert!(
        one.len() < data.len() / 2,
        "it compresses: {} of {} bytes",
        one.len(),
        data.len()
    );
    assert_eq!(&one[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
    let back = zstd::stream::decode_all(&one[..]).unwrap();
    assert!(back == data, "the zstd crate decodes the input");

    if !require_tool("zstd") {
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &one).unwrap();
    run(Command::new("zstd").arg("-t").arg(file.path()));
    let out = run(Command::new("zstd").arg("-dc").arg(file.path()).stdout(Stdio::piped()));
    assert!(out.stdout == data, "zstd -dc gives the input back");
}
