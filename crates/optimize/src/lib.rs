//! Lossless, deterministic optimisation of a web app's images, for
//! `farm optimize images`: PNG, JPEG, GIF, SVG and WebP files get smaller
//! without any change to what they show. Every result is checked before it
//! is kept: raster images are decoded again and must give the same pixels,
//! an SVG must parse to the same tree less what was removed. The same input
//! gives the same bytes on every machine and with any number of threads (one
//! file is always one thread; files run in parallel). spec/optimize.md says
//! which tool and settings each format uses.
//!
//! Not for lossy compression, resizing or format conversion, and not a
//! build step by itself: it works on bytes and on a directory it is given.

mod exif;
mod gif;
mod jpeg;
mod png;
mod svg;
mod webp;

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// The image formats this crate optimises, known by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    Png,
    Jpeg,
    Gif,
    Svg,
    Webp,
}

impl Format {
    /// The format a file name's extension names (case-insensitive), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "png" => Format::Png,
            "jpg" | "jpeg" => Format::Jpeg,
            "gif" => Format::Gif,
            "svg" => Format::Svg,
            "webp" => Format::Webp,
            _ => return None,
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Gif => "GIF",
            Format::Svg => "SVG",
            Format::Webp => "WebP",
        })
    }
}

/// Why an image was not optimised.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    /// The input is not a valid file of its format.
    #[error("not a valid {format} file: {detail}")]
    Invalid { format: Format, detail: String },
    /// A result did not pass its check; it is never written.
    #[error(
        "the optimised {format} would not show the same image ({detail}), so it was not written \
         (a bug in farm-optimize: please report it with the file)"
    )]
    Changed { format: Format, detail: String },
}

impl OptimizeError {
    fn invalid(format: Format, detail: impl fmt::Display) -> OptimizeError {
        OptimizeError::Invalid {
            format,
            detail: detail.to_string(),
        }
    }

    fn changed(format: Format, detail: impl fmt::Display) -> OptimizeError {
        OptimizeError::Changed {
            format,
            detail: detail.to_string(),
        }
    }
}

/// Decoded images larger than this many bytes are refused (a decompression bomb
/// in a source tree should fail, not exhaust memory).
pub const MAX_DECODED_BYTES: usize = 1 << 30;

/// The optimised bytes of one image: never larger than `data`, and `data`
/// itself when nothing smaller was found. Checked: the result shows the
/// same image as `data` (see the crate docs).
pub fn optimize(format: Format, data: &[u8]) -> Result<Vec<u8>, OptimizeError> {
    let out = match format {
        Format::Png => png::optimize(data)?,
        Format::Jpeg => jpeg::optimize(data)?,
        Format::Gif => gif::optimize(data)?,
        Format::Svg => svg::optimize(data)?,
        Format::Webp => webp::optimize(data)?,
    };
    Ok(if out.len() < data.len() { out } else { data.to_vec() })
}

/// Every image file below `root`, relative to it and sorted, leaving out
/// the directories whose names are in `skip_names` (e.g. `node_modules`)
/// and the paths (relative to `root`) in `skip_paths` (e.g. the build's
/// output directory). Symlinks are never followed nor rewritten.
pub fn find_images(root: &Path, skip_names: &[&str], skip_paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut walk = farm_archive::walk(root);
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| std::io::Error::other(e.to_string()))?;
        let rel = entry.relative().to_path_buf();
        if entry.file_type().is_dir() {
            let name = entry.file_name();
            if skip_names.iter().any(|s| name == *s) || skip_paths.contains(&rel) {
                walk.skip_current_dir();
            }
            continue;
        }
        if entry.file_type().is_file() && Format::from_path(&rel).is_some() {
            found.push(rel);
        }
    }
    Ok(found)
}

/// How [`optimize_files`] runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only report what would shrink; write nothing.
    pub check: bool,
    /// Files optimised at once (each file on one thread, so the bytes do not depend on it).
    pub jobs: usize,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Relative to the root the files were given under.
    pub path: PathBuf,
    pub format: Format,
    /// Bytes before.
    pub before: u64,
    /// Bytes after (or, with `check`, after an optimisation); `before` when
    /// nothing smaller was found or on an error.
    pub after: u64,
    /// Why the file was left as it was, when it was not a success.
    pub error: Option<String>,
}

impl Outcome {
    /// Bytes saved (or, with `check`, that would be).
    pub fn saved(&self) -> u64 {
        self.before - self.after
    }
}

/// Optimises `files` (relative to `root`) in place, `settings.jobs` at a
/// time, and reports each in the order given. A file is replaced only when
/// its optimised bytes are smaller, through a temporary file in the same
/// directory renamed over it (so a reader never sees half a file); it keeps
/// its permission bits. A file that fails is left untouched and reported;
/// the others still go ahead.
pub fn optimize_files(root: &Path, files: &[PathBuf], settings: &Settings) -> Vec<Outcome> {
    let run = || {
        files
            .par_iter()
            .map(|rel| optimize_file(root, rel, settings.check))
            .collect::<Vec<_>>()
    };
    match rayon::ThreadPoolBuilder::new()
        .num_threads(settings.jobs.max(1))
        .build()
    {
        Ok(pool) => pool.install(run),
        // Without a pool of our own, rayon's global one does the same work.
        Err(_) => run(),
    }
}

fn optimize_file(root: &Path, rel: &Path, check: bool) -> Outcome {
    let format = Format::from_path(rel).expect("find_images only returns known formats");
    let mut outcome = Outcome {
        path: rel.to_path_buf(),
        format,
        before: 0,
        after: 0,
        error: None,
    };
    let path = root.join(rel);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => {
            outcome.error = Some(format!("reading: {e}"));
            return outcome;
        }
    };
    outcome.before = data.len() as u64;
    outcome.after = outcome.before;
    let optimized = match optimize(format, &data) {
        Ok(o) => o,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    if optimized.len() >= data.len() {
        return outcome;
    }
    if !check {
        if let Err(e) = replace(&path, &optimized) {
            outcome.error = Some(format!("writing: {e}"));
            return outcome;
        }
    }
    outcome.after = optimized.len() as u64;
    outcome
}

/// What decides the bytes [`optimize`] gives: this crate's version and the
/// tool and settings of each format (spec/optimize.md, "Per format"). A build
/// step that runs the optimiser puts it in its action key.
pub const IDENTITY: &str = concat!(
    "farm-optimize ",
    env!("CARGO_PKG_VERSION"),
    "; png: oxipng 10 -o 2, optimize_alpha off, scale_16 off, interlace kept, strip tEXt zTXt iTXt tIME",
    "; jpeg: segment rewriter; gif: block rewriter; webp: RIFF rewriter + image-webp 0.2 VP8L",
    "; svg: removals only; smaller-only; checked"
);

/// Copies the tree `from` into the empty or missing directory `to` with
/// every image optimised ([`optimize`]), `jobs` images at a time: for a
/// build's output, which is read-only where it is. Other files and
/// symlinks (never followed) are copied as they are, with their permission
/// bits; directories are made anew. An image that fails is copied unchanged
/// and reported in its [`Outcome`]; the caller decides whether that fails
/// the whole copy.
/// Any other kind of file (a FIFO, a device) is an error. The outcomes are
/// sorted by path, and the bytes never depend on `jobs`.
pub fn optimize_tree(from: &Path, to: &Path, jobs: usize) -> std::io::Result<Vec<Outcome>> {
    let err = |p: &Path, e: &dyn fmt::Display| std::io::Error::other(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(to).map_err(|e| err(to, &e))?;
    let mut images = Vec::new();
    for entry in farm_archive::walk(from) {
        let entry = entry.map_err(|e| std::io::Error::other(e.to_string()))?;
        let rel = entry.relative().to_path_buf();
        let (src, dst) = (entry.path().to_path_buf(), to.join(&rel));
        let ft = entry.file_type();
        if ft.is_dir() {
            // Writable whatever the source's mode (a store entry's are read-only).
            std::fs::create_dir(&dst).map_err(|e| err(&dst, &e))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| err(&src, &e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| err(&dst, &e))?;
        } else if ft.is_file() && Format::from_path(&rel).is_some() {
            images.push(rel);
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| err(&src, &e))?;
        } else {
            return Err(err(&src, &"neither a file, a directory nor a symlink"));
        }
    }
    let run = || {
        images
            .par_iter()
            .map(|rel| optimize_copy(&from.join(rel), &to.join(rel), rel))
            .collect::<std::io::Result<Vec<_>>>()
    };
    match rayon::ThreadPoolBuilder::new().num_threads(jobs.max(1)).build() {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    }
}

/// One image of [`optimize_tree`]: the optimised bytes (or the original's,
/// when nothing smaller was found or it failed) written to `dst` with the
/// original's permission bits.
fn optimize_copy(src: &Path, dst: &Path, rel: &Path) -> std::io::Result<Outcome> {
    let format = Format::from_path(rel).expect("only images are given");
    let data = std::fs::read(src).map_err(|e| std::io::Error::other(format!("{}: {e}", src.display())))?;
    let before = data.len() as u64;
    let (bytes, error) = match optimize(format, &data) {
        Ok(o) => (o, None),
        Err(e) => (data, Some(e.to_string())),
    };
    let mode = std::fs::metadata(src)?.permissions().mode();
    let mut f = std::fs::File::create(dst).map_err(|e| std::io::Error::other(format!("{}: {e}", dst.display())))?;
    f.write_all(&bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    Ok(Outcome {
        path: rel.to_path_buf(),
        format,
        before,
        after: bytes.len() as u64,
        error,
    })
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, keeping its permission bits and (where allowed) its owner.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let meta = std::fs::metadata(path)?;
    let mut tmp = tempfile::Builder::new().prefix(".farm-optimize-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(meta.permissions().mode()))?;
    // Run as root on someone else's checkout, the file stays theirs; as
    // its owner this changes nothing, and otherwise it is not allowed.
    let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_known_by_extension_in_any_case() {
        assert_eq!(Format::from_path(Path::new("a/B.PNG")), Some(Format::Png));
        assert_eq!(Format::from_path(Path::new("x.jpeg")), Some(Format::Jpeg));
        assert_eq!(Format::from_path(Path::new("x.JPG")), Some(Format::Jpeg));
        assert_eq!(Format::from_path(Path::new("x.svg")), Some(Format::Svg));
        assert_eq!(Format::from_path(Path::new("x.svgz")), None);
        assert_eq!(Format::from_path(Path::new("png")), None);
    }

    /// `optimize_tree` copies a tree with its images smaller and the same
    /// pixels, other files, directories, symlinks and modes as they were,
    /// and the same bytes whatever the number of threads; a broken image
    /// is copied unchanged and reported by path.
    #[test]
    fn optimize_tree_copies_a_tree_with_smaller_images_independent_of_threads() {
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("in");
        std::fs::create_dir_all(from.join("assets")).unwrap();
        // An 8-bit RGB PNG of one colour, stored with no compression to speak of.
        let mut png_bytes = Vec::new();
        {
            let mut enc = ::png::Encoder::new(&mut png_bytes, 64, 64);
            enc.set_color(::png::ColorType::Rgb);
            enc.set_compression(::png::Compression::NoCompression);
            enc.add_text_chunk("Comment".into(), "x".repeat(200)).unwrap();
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[200u8; 64 * 64 * 3]).unwrap();
        }
        std::fs::write(from.join("assets/a.png"), &png_bytes).unwrap();
        std::fs::write(from.join("assets/bad.png"), b"not a png").unwrap();
        std::fs::write(from.join("index.html"), b"<p>hi</p>").unwrap();
        std::fs::set_permissions(from.join("index.html"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("assets/a.png", from.join("link.png")).unwrap();
        let one = optimize_tree(&from, &d.path().join("one"), 1).unwrap();
        let four = optimize_tree(&from, &d.path().join("four"), 4).unwrap();
        assert_eq!(one, four);
        let paths: Vec<_> = one.iter().map(|o| o.path.to_str().unwrap()).collect();
        assert_eq!(paths, ["assets/a.png", "assets/bad.png"]);
        assert!(one[0].after < one[0].before && one[0].error.is_none(), "{:?}", one[0]);
        assert!(
            one[1].error.as_deref().unwrap().contains("not a valid PNG"),
            "{:?}",
            one[1]
        );
        for rel in ["assets/a.png", "assets/bad.png", "index.html"] {
            assert_eq!(
                std::fs::read(d.path().join("one").join(rel)).unwrap(),
                std::fs::read(d.path().join("four").join(rel)).unwrap(),
                "{rel}: the same bytes with 1 and 4 threads"
            );
        }
        let out = d.path().join("one");
        assert_eq!(std::fs::read(out.join("assets/bad.png")).unwrap(), b"not a png");
        assert_eq!(std::fs::read(out.join("index.html")).unwrap(), b"<p>hi</p>");
        assert_eq!(
            std::fs::metadata(out.join("index.html")).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_link(out.join("link.png")).unwrap(),
            Path::new("assets/a.png")
        );
        let small = std::fs::read(out.join("assets/a.png")).unwrap();
        assert_eq!(small.len() as u64, one[0].after);
        let pixels = |b: &[u8]| {
            let mut r = ::png::Decoder::new(std::io::Cursor::new(b.to_vec()))
                .read_info()
                .unwrap();
            let mut buf = vec![0; r.output_buffer_size().unwrap()];
            let info = r.next_frame(&mut buf).unwrap();
            (info.width, info.height, info.color_type, buf)
        };
        let (w, h, _, _) = pixels(&small);
        assert_eq!((w, h), (64, 64));
        assert!(crate::png::optimize(&small).is_ok(), "the result is a valid PNG");
    }

    /// The walk skips the named directories and paths and symlinks, and sorts.
    #[test]
    fn find_images_skips_dependencies_outputs_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for p in [
            "src/b.png",
            "src/a.svg",
            "node_modules/x/i.png",
            "dist/o.png",
            "public/dist/k.gif",
            "x.txt",
        ] {
            std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
            std::fs::write(r.join(p), b"x").unwrap();
        }
        std::os::unix::fs::symlink(r.join("src/b.png"), r.join("src/link.png")).unwrap();
        let found = find_images(r, &["node_modules"], &[PathBuf::from("dist")]).unwrap();
        assert_eq!(
            found,
            ["public/dist/k.gif", "src/a.svg", "src/b.png"]
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        );
    }
}
