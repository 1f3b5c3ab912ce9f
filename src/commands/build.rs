//! `farm build`: arguments into `BuildOptions`, then the engine's build (or its watch loop).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use farm_engine::build::{build_project, BuildOptions, Target, Variation};
use farm_project::Project;

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct BuildArgs {
    /// What to build.
    #[arg(value_enum, default_value = "all")]
    targets: Vec<Target>,
    /// Run every step in the sandbox with only the locked inputs, network off.
    #[arg(long)]
    hermetic: bool,
    /// Steps run at once [default: the number of CPUs].
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Ignore the action cache: run every step.
    #[arg(long)]
    no_cache: bool,
    /// Run this step even if the action cache has it (repeatable), e.g. `--rerun images`.
    #[arg(long, value_name = "STEP")]
    rerun: Vec<String>,
    /// The output directory [default: .farm/out in the project].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write a bundle report (bundle-report.json and .html) of the frontend.
    #[arg(long)]
    analyze: bool,
    /// Fail when the frontend bundle (sourcemaps excluded) is larger than this (e.g. 500KiB).
    #[arg(long, value_name = "SIZE")]
    size_limit: Option<String>,
    /// Write a Chrome trace-event JSON of the steps (open it in Perfetto).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// The build environment: a `[env.NAME]` of farm.toml.
    #[arg(long, value_name = "NAME", default_value = farm_project::config::DEFAULT_ENV)]
    env: String,
    /// A development build: sourcemaps on, no minification.
    #[arg(long)]
    dev: bool,
    /// Layer compression of the images [default: farm.toml's images.compression].
    #[arg(long, value_enum)]
    compression: Option<farm_project::config::Compression>,
    /// Rebuild whenever an input of the selected targets changes (Ctrl-C stops).
    #[arg(long)]
    watch: bool,
    /// Kill a step after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    step_timeout: u64,
}

/// Entry point of `farm build`.
pub fn run(ctx: &Context, args: BuildArgs) -> Result<Exit> {
    let project = Project::load(&ctx.project_dir)?;
    let size_limit = args
        .size_limit
        .as_deref()
        .map(farm_formats::size::parse_size)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--size-limit: {e}"))?;
    let opts = BuildOptions {
        targets: args.targets,
        hermetic: args.hermetic,
        jobs: args.jobs,
        no_cache: args.no_cache,
        rerun: args.rerun.iter().map(|s| farm_engine::step::StepId::parse(s)).collect(),
        out: args
            .out
            .map(|o| {
                if o.is_absolute() {
                    Ok(o)
                } else {
                    std::env::current_dir().map(|d| d.join(o))
                }
            })
            .transpose()?,
        analyze: args.analyze,
        size_limit,
        profile: args.profile,
        step_timeout: Duration::from_secs(args.step_timeout),
        variation: Variation::default(),
        env: args.env,
        dev: args.dev,
        compression: args.compression,
        skip_types_check: false,
    };
    if args.watch {
        // The watch loop only ends on Ctrl-C (status 0) or an error.
        farm_engine::watch::run(ctx, &project, &opts)?;
        return Ok(Exit::Success);
    }
    let built = build_project(ctx, &project, &opts)?;
    ctx.reporter.info(&format!("wrote {}", built.out_dir.display()));
    println!("{}", built.manifest.digest);
    Ok(Exit::Success)
}
