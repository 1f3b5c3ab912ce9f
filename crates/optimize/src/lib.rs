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
