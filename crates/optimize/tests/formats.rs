//! farm-optimize on images made by other encoders: every format gets
//! smaller, shows the same pixels (decoded here by each format's reference
//! decoder), keeps what changes how it is shown, and gives the same bytes
//! on every run and with any number of threads; a broken file is an error
//! that names it and is left untouched.

mod support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use farm_optimize::{find_images, optimize, optimize_files, Format, Settings};
use support::contains;

fn optimized(name: &str, data: &[u8]) -> Vec<u8> {
    optimize(Format::from_path(Path::new(name)).unwrap(), data).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Each fixture shrinks and decodes to the same frames as before; a second pass changes nothing.
#[test]
fn every_format_shrinks_with_identical_pixels_and_a_second_pass_is_a_no_op() {
    for (name, data) in support::all() {
        let out = optimized(name, &data);
        assert!(out.len() < data.len(), "{name}: {} -> {} bytes", data.len(), out.len());
        if !name.ends_with(".svg") {
            assert!(
                support::frames(name, &data) == support::frames(name, &out),
                "{name}: the decoded pixels changed"
            );
        }
        assert_eq!(optimized(name, &out), out, "{name}: optimising again changes nothing");
    }
}

/// PNG: text chunks go; gamma stays; 16-bit samples that fit in 8 bits decode the same.
#[test]
fn png_drops_text_keeps_gamma() {
    let out = optimized("a.png", &support::png());
    assert!(
        !contains(&out, b"tEXt") && !contains(&out, b"iTXt"),
        "text chunks removed"
    );
    assert!(contains(&out, b"gAMA"), "gamma kept");
    let grey = support::png16();
    assert_eq!(
        support::frames("g.png", &grey),
        support::frames("g.png", &optimized("g.png", &grey))
    );
}

/// JPEG: ICC and orientation stay, metadata goes, the compressed data is untouched.
#[test]
fn jpeg_keeps_icc_and_orientation_and_drops_metadata() {
    for data in [support::jpeg(), support::jpeg_cmyk()] {
        let out = optimized("a.jpg", &data);
        let mut d = jpeg_decoder::Decoder::new(&out[..]);
        d.decode().unwrap();
        assert_eq!(
            d.icc_profile().as_deref(),
            Some(support::ICC),
            "the ICC profile is kept byte for byte"
        );
        let exif = d.exif_data().expect("EXIF with the orientation is kept");
        assert!(contains(exif, &[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0]), "orientation 6");
        assert!(exif.len() < 40, "and nothing else of it: {} bytes", exif.len());
        for gone in [&b"xmpmeta"[..], b"Photoshop", b"a comment", b"trailing bytes", b"Cam\0"] {
            assert!(!contains(&out, gone), "{:?} removed", String::from_utf8_lossy(gone));
        }
        let sos = |b: &[u8]| b.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let eoi = |b: &[u8]| b.windows(2).rposition(|w| w == [0xFF, 0xD9]).unwrap();
        assert_eq!(
            data[sos(&data)..eoi(&data)],
            out[sos(&out)..eoi(&out)],
            "the scans are copied byte for byte"
        );
    }
    assert!(
        contains(&optimized("a.jpg", &support::jpeg_cmyk()), b"Adobe"),
        "Adobe's APP14 (CMYK) kept"
    );
}

/// GIF: the loop and the frames stay; the comment and XMP go.
#[test]
fn gif_keeps_loop_and_frames_and_drops_comment_and_xmp() {
    let out = optimized("a.gif", &support::gif());
    assert!(contains(&out, b"NETSCAPE2.0"));
    assert!(!contains(&out, b"made by a test") && !contains(&out, b"XMP DataXMP"));
    let d = gif::DecodeOptions::new().read_info(&out[..]).unwrap();
    assert_eq!(d.repeat(), gif::Repeat::Infinite);
    assert_eq!(support::frames("a.gif", &out).len(), 2);
}

/// WebP: XMP and an EXIF block without orientation go; the lossless bitstream is re-encoded smaller.
#[test]
fn webp_drops_metadata_and_reencodes_lossless_smaller() {
    let data = support::webp();
    let out = optimized("a.webp", &data);
    assert!(!contains(&out, b"XMP ") && !contains(&out, b"EXIF"));
    let vp8l_len = |b: &[u8]| {
        let at = b.windows(4).position(|w| w == b"VP8L").unwrap();
        u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap())
    };
    assert!(vp8l_len(&out) < vp8l_len(&data), "the bitstream itself is smaller");
}

/// SVG: editors' data, metadata and comments go; drawing, title and text spacing stay.
#[test]
fn svg_keeps_the_drawing_and_its_text() {
    let out = String::from_utf8(optimized("a.svg", support::SVG.as_bytes())).unwrap();
    for gone in ["inkscape", "sodipodi", "<metadata", "rdf:", "<!--", "\n  "] {
        assert!(!out.contains(gone), "{gone:?} removed: {out}");
    }
    for kept in [
        "<title>Farm logo</title>",
        "style=\"fill:url(#fade);stroke:#000000;stroke-width:2\"",
        "<tspan id=\"tspan1\">FARM</tspan> <tspan id=\"tspan2\">&amp; co</tspan>",
        "xmlns=\"http://www.w3.org/2000/svg\"",
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>",
    ] {
        assert!(out.contains(kept), "{kept:?} kept: {out}");
    }
}

fn tree_with_fixtures() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("img")).unwrap();
    for (name, data) in support::all() {
        std::fs::write(d.path().join("img").join(name), data).unwrap();
    }
    d
}

fn run(jobs: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let d = tree_with_fixtures();
    let files = find_images(d.path(), &[], &[]).unwrap();
    let outcomes = optimize_files(d.path(), &files, &Settings { check: false, jobs });
    assert!(
        outcomes.iter().all(|o| o.error.is_none() && o.after < o.before),
        "{outcomes:?}"
    );
    files
        .iter()
        .map(|f| (f.clone(), std::fs::read(d.path().join(f)).unwrap()))
        .collect()
}

/// The same inputs give the same bytes on two runs and with 1 or 8 threads.
#[test]
fn results_are_byte_identical_across_runs_and_thread_counts() {
    let one = run(1);
    assert_eq!(one.len(), support::all().len());
    assert_eq!(one, run(1), "two runs");
    assert_eq!(one, run(8), "1 and 8 threads");
}

/// `check` reports the savings and writes nothing; a real run writes exactly
/// them, keeping each file's mode and owner, and leaves no temporary file.
#[test]
fn check_reports_without_writing() {
    let d = tree_with_fixtures();
    let files = find_images(d.path(), &[], &[]).unwrap();
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(d.path().join(f)).unwrap()).collect();
    let checked = optimize_files(d.path(), &files, &Settings { check: true, jobs: 2 });
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(d.path().join(f)).unwrap()).collect();
    assert_eq!(before, after, "--check writes nothing");
    // A file of another user with its own mode keeps both when it is replaced.
    let logo = d.path().join("img/logo.png");
    std::fs::set_permissions(&logo, std::fs::Permissions::from_mode(0o640)).unwrap();
    let as_root = std::os::unix::fs::chown(&logo, Some(65534), Some(65534)).is_ok();
    let done = optimize_files(d.path(), &files, &Settings { check: false, jobs: 2 });
    assert_eq!(checked, done, "the check predicted the run");
    let meta = std::fs::metadata(&logo).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "the mode is kept");
    if as_root {
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "the owner is kept");
    }
    for o in &done {
        assert_eq!(std::fs::metadata(d.path().join(&o.path)).unwrap().len(), o.after);
    }
    let leftovers: Vec<_> = std::fs::read_dir(d.path().join("img"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");
}

/// Broken files of every format: an error that says what is wrong, and the file is not written.
#[test]
fn broken_images_are_errors_and_left_untouched() {
    let truncated = |b: Vec<u8>| b[..b.len() / 2].to_vec();
    let broken: Vec<(&str, Vec<u8>)> = vec![
        ("cut.png", truncated(support::png())),
        ("cut.jpg", truncated(support::jpeg())),
        ("text.jpg", b"hello".to_vec()),
        ("cut.gif", truncated(support::gif())),
        ("cut.webp", truncated(support::webp())),
        ("cut.svg", truncated(support::SVG.as_bytes().to_vec())),
    ];
    let d = tempfile::tempdir().unwrap();
    for (name, data) in &broken {
        std::fs::write(d.path().join(name), data).unwrap();
    }
    std::fs::write(d.path().join("ok.png"), support::png()).unwrap();
    let files = find_images(d.path(), &[], &[]).unwrap();
    let outcomes = optimize_files(d.path(), &files, &Settings { check: false, jobs: 2 });
    for (name, data) in &broken {
        let o = outcomes.iter().find(|o| o.path == Path::new(name)).unwrap();
        let e = o.error.as_deref().unwrap_or_else(|| panic!("{name} is an error"));
        assert!(e.starts_with(&format!("not a valid {}", o.format)), "{name}: {e}");
        assert_eq!(&std::fs::read(d.path().join(name)).unwrap(), data, "{name} untouched");
        assert_eq!((o.before, o.after), (data.len() as u64, data.len() as u64));
    }
    let ok = outcomes.iter().find(|o| o.path == Path::new("ok.png")).unwrap();
    assert!(ok.error.is_none() && ok.after < ok.before, "the others still go ahead");
}
