//! `farm types sync|check`: the TypeScript types of the backend's API, for
//! the editor. They are generated exactly as a build generates them (the
//! backend is built, its OpenAPI schema read), then written into the user's
//! tree (`sync`) or compared with it (`check`).

use anyhow::{bail, Context as _, Result};

use crate::{Context, EXIT_NO};
use farm_engine::{self, BuildOptions, Target, Variation};
use farm_project::Project;

#[derive(clap::Subcommand)]
pub enum TypesCommand {
    /// Write the generated types to frontend.api-types.
    Sync(TypesArgs),
    /// Exit 3, naming the file, when the committed types are out of date.
    Check(TypesArgs),
}

#[derive(clap::Args)]
pub struct TypesArgs {
    /// Build the backend in the sandbox (else with the host's python3).
    #[arg(long)]
    hermetic: bool,
}

pub fn run(ctx: &Context, cmd: TypesCommand) -> Result<u8> {
    let (sync, args) = match cmd {
        TypesCommand::Sync(a) => (true, a),
        TypesCommand::Check(a) => (false, a),
    };
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
    let opts = BuildOptions {
        targets: vec![Target::Types],
        hermetic: args.hermetic,
        jobs: None,
        no_cache: false,
        rerun: vec![],
        out: Some(root.join(".farm").join("types")),
        analyze: false,
        size_limit: None,
        profile: None,
        step_timeout: std::time::Duration::from_secs(3600),
        variation: Variation::default(),
        env: farm_project::config::DEFAULT_ENV.into(),
        dev: false,
        compression: None,
        skip_types_check: true,
    };
    let built = farm_engine::build_project(ctx, &project, &opts)?;
    let generated = std::fs::read_to_string(built.out_dir.join("api-types.ts"))?;
    let target = root.join(&committed);
    if sync {
        if farm_engine::build::types_up_to_date(&target, &generated).is_ok() {
            ctx.reporter.info(&format!("{} is up to date", committed.display()));
            return Ok(0);
        }
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&target, &generated).with_context(|| target.display().to_string())?;
        ctx.reporter.info(&format!("wrote {}", committed.display()));
        return Ok(0);
    }
    match farm_engine::build::types_up_to_date(&target, &generated) {
        Ok(()) => {
            ctx.reporter.info(&format!("{} is up to date", committed.display()));
            Ok(0)
        }
        Err(why) => {
            ctx.reporter.error(&format!("{}: {why}", committed.display()));
            Ok(EXIT_NO)
        }
    }
}
