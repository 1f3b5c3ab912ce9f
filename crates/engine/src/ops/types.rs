//! `farm types sync|check`: the TypeScript types of the backend's API, for
//! the editor. They are generated exactly as a build generates them (the
//! backend is built, its OpenAPI schema read), then written into the user's
//! tree (`sync`) or compared with it (`check`).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use farm_project::{Project, StatePaths};

use crate::{build_project, BuildOptions, Context, Target, Variation};

/// What to do with the generated types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypesMode {
    /// Write them to frontend.api-types.
    Sync,
    /// Only compare them with frontend.api-types.
    Check,
}

/// What `farm types` is asked to do.
#[derive(Debug, Clone)]
pub struct TypesOptions {
    pub mode: TypesMode,
    /// Build the backend in the sandbox (else with the host's python3).
    pub hermetic: bool,
}

/// How `farm types` ended; `path` is frontend.api-types, relative to the project.
#[derive(Debug)]
pub enum TypesOutcome {
    /// The committed types are the generated ones.
    UpToDate { path: PathBuf },
    /// `sync` wrote the generated types.
    Written { path: PathBuf },
    /// `check`: the committed types are not the generated ones, and why.
    Stale { path: PathBuf, why: String },
}

/// Entry point of `farm types`: builds the types and syncs or checks them.
pub fn types(ctx: &Context, opts: &TypesOptions) -> Result<TypesOutcome> {
    let project = Project::load(&ctx.project_dir)?;
    let root = std::fs::canonicalize(&project.root)?;
    let f = project
        .config
        .frontend
        .as_ref()
        .context("farm.toml has no [frontend]")?;
    let Some(rel) = &f.api_types else {
        bail!("farm.toml: frontend.api-types is not set\nhint: add api-types = \"src/api-types.ts\" to [frontend]");
    };
    let committed = f.path.join(rel);
    let build = BuildOptions {
        targets: vec![Target::Types],
        hermetic: opts.hermetic,
        jobs: None,
        no_cache: false,
        rerun: vec![],
        // The output directory must be absolute: from the canonical root.
        out: Some(StatePaths::new(&root).types()),
        analyze: false,
        size_limit: None,
        profile: None,
        step_timeout: std::time::Duration::from_secs(3600),
        variation: Variation::default(),
        env: farm_project::config::DEFAULT_ENV.into(),
        dev: false,
        compression: None,
        skip_types_check: true,
        settings: Default::default(),
    };
    let built = build_project(ctx, &project, &build)?;
    let generated = std::fs::read_to_string(built.out_dir.join("api-types.ts"))?;
    let target = root.join(&committed);
    let up_to_date = crate::build::types_up_to_date(&root, &committed, &generated);
    match (opts.mode, up_to_date) {
        (_, Ok(())) => Ok(TypesOutcome::UpToDate { path: committed }),
        (TypesMode::Sync, Err(_)) => {
            // Replaces a symlink planted there instead of writing through it.
            farm_hostfs::Beneath::open_dir(&root)?
                .replace_file(&committed, generated.as_bytes(), 0o644)
                .with_context(|| target.display().to_string())?;
            Ok(TypesOutcome::Written { path: committed })
        }
        (TypesMode::Check, Err(why)) => Ok(TypesOutcome::Stale { path: committed, why }),
    }
}
