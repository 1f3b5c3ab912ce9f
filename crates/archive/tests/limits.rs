//! Decompression bombs: archives of a few kilobytes that unpack to hundreds
//! of megabytes. Unpacking stops at the size cap or the ratio guard, before
//! the expansion is written, with an error naming the archive, the limit,
//! the farm.toml key that raises it and the size reached; the partial tree
//! is removed.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;

use farm_archive::{
    unpack_archive, unpack_tar_into, ArchiveFormat, Members, TarOptions, UnpackError, UnpackLimit, UnpackLimits,
};
use support::header;
use tar::EntryType;

const MIB: u64 = 1 << 20;

/// A zstd frame of `prefix` in raw blocks followed by `zeros` zero bytes in
/// run-length blocks of 128 KiB: four bytes per block, whatever its size.
/// Written by hand (RFC 8878 §3.1.1) so the test needs no compressor time.
fn zstd_frame(prefix: &[u8], zeros: u64) -> Vec<u8> {
    const BLOCK: u64 = 128 << 10;
    // Magic; descriptor 0 (no content size, no checksum, not single-segment); window 2^(10+7).
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    let mut blocks: Vec<(u32, u64, Vec<u8>)> = prefix
        .chunks(BLOCK as usize)
        .map(|c| (0, c.len() as u64, c.to_vec()))
        .collect();
    let mut left = zeros;
    while left > 0 {
        let n = left.min(BLOCK);
        blocks.push((1, n, vec![0]));
        left -= n;
    }
    let count = blocks.len();
    for (i, (kind, size, content)) in blocks.into_iter().enumerate() {
        let last = u32::from(i + 1 == count);
        let h = last | (kind << 1) | ((size as u32) << 3);
        out.extend_from_slice(&h.to_le_bytes()[..3]);
        out.extend_from_slice(&content);
    }
    out
}

/// A tar.zst holding one file of `size` zero bytes (a multiple of 512).
fn zstd_bomb(size: u64) -> Vec<u8> {
    let h = header("bomb/zeros", EntryType::Regular, size, None);
    // The file's data, then the two zero blocks that end a tar: all zeros.
    zstd_frame(h.as_bytes(), size + 1024)
}

/// A tar.gz of `files` files of `each` zero bytes, compressed by flate2.
fn gzip_bomb(files: usize, each: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; each];
    for i in 0..files {
        let h = header(&format!("pkg/zeros-{i:03}"), EntryType::Regular, each as u64, None);
        gz.write_all(h.as_bytes()).unwrap();
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap()
}

fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        total += if m.is_dir() { bytes_under(&e.path()) } else { m.len() };
    }
    total
}

/// The default ratio guard (1000) stops a 16 KiB zstd archive that unpacks
/// to 512 MiB, on the member's header, before a byte of it is written.
#[test]
fn a_zstd_bomb_is_stopped_by_the_default_ratio_guard_before_writing() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("bomb.tar.zst");
    let bytes = zstd_bomb(512 * MIB);
    assert!(bytes.len() < 32 << 10, "the bomb is small: {} bytes", bytes.len());
    fs::write(&archive, &bytes).unwrap();
    // Sanity: the stream really is what it claims (the zstd crate reads it back).
    let mut head = vec![0u8; 1024];
    std::io::Read::read_exact(&mut zstd::Decoder::new(&bytes[..]).unwrap(), &mut head).unwrap();
    assert_eq!(&head[257..262], b"ustar");

    let dest = t.path().join("out");
    let started = std::time::Instant::now();
    let err = unpack_archive(
        &archive,
        ArchiveFormat::Tar { strip: 0 },
        &dest,
        UnpackLimits::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    match &err {
        UnpackError::TooLarge {
            entry, reached, limit, ..
        } => {
            assert_eq!(entry, "bomb/zeros");
            assert_eq!(
                *reached,
                512 * MIB,
                "refused on the declared size, nothing copied first"
            );
            assert_eq!(
                *limit,
                UnpackLimit::Ratio {
                    ratio: 1000,
                    archive_bytes: bytes.len() as u64
                }
            );
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    assert!(msg.contains("bomb.tar.zst"), "names the archive: {msg}");
    assert!(msg.contains("[limits] unpack-ratio"), "names the key to raise: {msg}");
    assert!(
        msg.contains("536870912 bytes") && msg.contains("512.0 MiB"),
        "the size reached: {msg}"
    );
    assert!(msg.contains("1000 times"), "the limit: {msg}");
    assert!(!dest.exists(), "the partial tree is removed");
    assert!(started.elapsed().as_secs() < 10, "fails fast: {:?}", started.elapsed());
}

/// With the ratio guard off, the size cap stops the same bomb and names `unpack-size`.
#[test]
fn the_size_cap_stops_a_bomb_when_the_ratio_guard_is_off() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("bomb.tar.zst");
    fs::write(&archive, zstd_bomb(512 * MIB)).unwrap();
    let limits = UnpackLimits {
        max_size: Some(64 * MIB),
        max_ratio: None,
    };
    let dest = t.path().join("out");
    let err = unpack_archive(&archive, ArchiveFormat::Tar { strip: 0 }, &dest, limits).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooLarge { limit: UnpackLimit::Size(n), .. } if n == 64 * MIB),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("[limits] unpack-size") && msg.contains("64.0 MiB"),
        "{msg}"
    );
    assert!(!dest.exists());
}

/// Many members that each fit: the cap is reached mid-archive, the member
/// that would pass it is refused, and what was written never exceeds the cap
/// (seen with `unpack_tar_into`, which leaves the partial tree to its caller).
#[test]
fn a_gzip_bomb_of_many_files_stops_at_the_cap() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("many.tgz");
    let bytes = gzip_bomb(64, 256 << 10);
    assert!(
        bytes.len() < 64 << 10,
        "16 MiB of zeros compress to {} bytes",
        bytes.len()
    );
    fs::write(&archive, &bytes).unwrap();
    let limits = UnpackLimits {
        max_size: Some(MIB),
        max_ratio: None,
    };
    let err = unpack_archive(&archive, ArchiveFormat::Tar { strip: 1 }, &t.path().join("out"), limits).unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooLarge { entry, reached, .. } if entry == "pkg/zeros-004" && *reached == 5 * (256 << 10)),
        "four files fit in 1 MiB, the fifth does not: {err}"
    );
    assert!(!t.path().join("out").exists());

    let into = t.path().join("node_modules/pkg");
    let options = TarOptions {
        strip: 1,
        members: Members::FilesAndDirectories,
        limits,
    };
    let err = unpack_tar_into(&archive, options, &into).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert_eq!(bytes_under(&into), MIB, "written up to the cap and not a byte more");
}

/// A ratio below what the archive needs is named as `unpack-ratio`; with
/// no limits (or generous ones) the same archive unpacks, and the stats
/// count its bytes.
#[test]
fn limits_can_be_raised_and_turned_off() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("zeros.tgz");
    fs::write(&archive, gzip_bomb(4, 1 << 20)).unwrap();
    let strict = UnpackLimits {
        max_size: None,
        max_ratio: Some(10),
    };
    let err = unpack_archive(&archive, ArchiveFormat::Tar { strip: 0 }, &t.path().join("a"), strict).unwrap_err();
    assert!(err.to_string().contains("[limits] unpack-ratio"), "{err}");
    assert!(!t.path().join("a").exists());

    for limits in [
        UnpackLimits::NONE,
        UnpackLimits {
            max_size: Some(4 * MIB),
            max_ratio: None,
        },
    ] {
        let dest = t.path().join("b");
        let stats = unpack_archive(&archive, ArchiveFormat::Tar { strip: 0 }, &dest, limits).unwrap();
        assert_eq!((stats.files, stats.bytes), (4, 4 * MIB), "{limits:?}");
        fs::remove_dir_all(&dest).unwrap();
    }
}

/// A .deb is measured against the .deb's own size: its data.tar.zst bomb
/// is refused like a bare one, naming the member.
#[test]
fn a_bomb_inside_a_deb_is_stopped_too() {
    let t = tempfile::tempdir().unwrap();
    let deb = t.path().join("bomb_1.0_amd64.deb");
    let mut ar = ar::Builder::new(fs::File::create(&deb).unwrap());
    let parts: [(&str, Vec<u8>); 2] = [
        ("debian-binary", b"2.0\n".to_vec()),
        ("data.tar.zst", zstd_bomb(256 * MIB)),
    ];
    for (name, data) in parts {
        let h = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
        ar.append(&h, &data[..]).unwrap();
    }
    drop(ar);
    let dest = t.path().join("out");
    let err = unpack_archive(&deb, ArchiveFormat::Deb, &dest, UnpackLimits::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            UnpackError::TooLarge {
                limit: UnpackLimit::Ratio { .. },
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("bomb_1.0_amd64.deb (member data.tar.zst)"), "{msg}");
    assert!(!dest.exists());
}
