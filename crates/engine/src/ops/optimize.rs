//! `farm optimize images`: lossless optimisation of the frontend's image
//! sources in place (farm-optimize does the work; spec/optimize.md).

use std::path::PathBuf;

use anyhow::{bail, Result};
use farm_optimize::{Outcome, Settings};
use farm_project::Project;

use crate::Context;

/// Directory names never searched for images: dependencies, farm's state, VCS data.
const SKIPPED_DIRS: [&str; 3] = ["node_modules", ".farm", ".git"];

/// What `farm optimize images` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct OptimizeImagesOptions {
    /// Only report what would shrink; change no file.
    pub check: bool,
    /// Files optimised at once [default: the number of CPUs]; the bytes never depend on it.
    pub jobs: Option<usize>,
}

/// What `farm optimize images` found and did.
pub struct OptimizedImages {
    /// The frontend's source directory the paths are relative to.
    pub root: PathBuf,
    /// One per image, sorted by path.
    pub files: Vec<Outcome>,
}

impl OptimizedImages {
    pub fn before(&self) -> u64 {
        self.files.iter().map(|f| f.before).sum()
    }

    pub fn after(&self) -> u64 {
        self.files.iter().map(|f| f.after).sum()
    }

    /// Files that shrank (or, with `check`, would).
    pub fn shrunk(&self) -> usize {
        self.files.iter().filter(|f| f.after < f.before).count()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Outcome> {
        self.files.iter().filter(|f| f.error.is_some())
    }
}

/// Entry point of `farm optimize images`: every PNG, JPEG, GIF, SVG and
/// WebP file of the frontend's source tree (not node_modules, the build
/// output directory, .farm or .git), optimised in place unless `check`.
pub fn optimize_images(ctx: &Context, opts: &OptimizeImagesOptions) -> Result<OptimizedImages> {
    let project = Project::load(&ctx.project_dir)?;
    let Some(frontend) = &project.config.frontend else {
        bail!(
            "{}: no [frontend] section, so there are no frontend images to optimise\nhint: add [frontend] with its `path`",
            project.root.join(farm_project::config::CONFIG_FILE).display()
        );
    };
    let root = project.root.join(&frontend.path);
    if !root.is_dir() {
        bail!(
            "{}: the frontend directory ([frontend] path) does not exist",
            root.display()
        );
    }
    // `./dist` and `dist` are the same output directory.
    let output_dir: PathBuf = frontend
        .output_dir
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    let files = farm_optimize::find_images(&root, &SKIPPED_DIRS, &[output_dir])
        .map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let files = farm_optimize::optimize_files(
        &root,
        &files,
        &Settings {
            check: opts.check,
            jobs,
        },
    );
    Ok(OptimizedImages { root, files })
}
