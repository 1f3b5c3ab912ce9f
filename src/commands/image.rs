//! `farm push` and `farm image load`: arguments into the engine's options;
//! what reached the registry or the engine is printed here as it happens.

use std::path::PathBuf;

use anyhow::Result;
use farm_engine::ops::image::{self, LoadOptions, PushOptions};

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct PushArgs {
    /// Registry base URL, e.g. https://registry.example or http://127.0.0.1:5000.
    #[arg(long, env = "FARM_PUSH_REGISTRY")]
    registry: String,
    /// Tag to push (repeatable) [default: the project version].
    #[arg(long)]
    tag: Vec<String>,
    /// Mount blobs from this repository of the same registry when possible.
    #[arg(long, value_name = "REPOSITORY")]
    mount_from: Option<String>,
    /// The build's output directory [default: .farm/out].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Images to push (app, ollama) [default: all built].
    images: Vec<String>,
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Load the last build's images into Docker or Podman (DOCKER_HOST or the default socket).
    Load {
        /// The build's output directory [default: .farm/out].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Images to load (app, ollama) [default: all built].
        images: Vec<String>,
    },
}

/// Entry point of `farm push`.
pub fn run_push(ctx: &Context, args: PushArgs) -> Result<Exit> {
    let opts = PushOptions {
        registry: args.registry,
        tags: args.tag,
        mount_from: args.mount_from,
        out: args.out,
        images: args.images,
    };
    image::push(ctx, &opts, &mut |name, report| {
        ctx.reporter.info(&format!(
            "{name}: {} blobs uploaded, {} already there, {} mounted",
            report.pushed_blobs, report.skipped_blobs, report.mounted_blobs
        ));
        for r in &report.references {
            println!("{r}");
        }
        if let Some(refs) = report.referrers.as_ref().filter(|r| !r.artifacts.is_empty()) {
            let via = match &refs.tag {
                Some(tag) => format!("the referrers tag {tag} (the registry has no referrers API)"),
                None => "the registry's referrers API".to_string(),
            };
            ctx.reporter.info(&format!(
                "{name}: {} attestations refer to {}, found through {via}",
                refs.artifacts.len(),
                report.manifest_digest
            ));
            for (kind, digest) in &refs.artifacts {
                ctx.reporter.info(&format!("  {kind} {digest}"));
            }
        }
    })?;
    Ok(Exit::Success)
}

/// Entry point of `farm image`.
pub fn run_image(ctx: &Context, cmd: ImageCommand) -> Result<Exit> {
    let ImageCommand::Load { out, images } = cmd;
    image::load(ctx, &LoadOptions { out, images }, &mut |loaded| {
        for l in loaded {
            println!("{} {}", l.reference, l.id);
        }
    })?;
    Ok(Exit::Success)
}
