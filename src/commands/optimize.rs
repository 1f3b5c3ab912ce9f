//! `farm optimize images`: arguments into `OptimizeImagesOptions`, then the
//! engine's optimisation; the table is printed here.

use anyhow::Result;
use farm_engine::ops::optimize::{optimize_images, OptimizeImagesOptions};

use crate::{Context, Exit};

#[derive(clap::Subcommand)]
pub enum OptimizeCommand {
    /// Losslessly shrink the frontend's PNG, JPEG, GIF, SVG and WebP sources in place.
    Images(ImagesArgs),
    /// The `optimize-images` build step, run by farm itself in the step's
    /// sandbox: copies INPUT to OUT with every image optimised.
    #[command(hide = true)]
    BuildOutput(BuildOutputArgs),
}

#[derive(clap::Args)]
pub struct BuildOutputArgs {
    /// The frontend step's output (read-only).
    input: std::path::PathBuf,
    /// The step's output directory (empty).
    out: std::path::PathBuf,
}

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Change nothing; exit 3 when an image would shrink (for CI).
    #[arg(long)]
    check: bool,
    /// Images optimised at once [default: the number of CPUs]; the result never depends on it.
    #[arg(long, short)]
    jobs: Option<usize>,
}

/// Entry point of `farm optimize`.
pub fn run(ctx: &Context, cmd: OptimizeCommand) -> Result<Exit> {
    let args = match cmd {
        OptimizeCommand::Images(args) => args,
        OptimizeCommand::BuildOutput(args) => return build_output(args),
    };
    let done = optimize_images(
        ctx,
        &OptimizeImagesOptions {
            check: args.check,
            jobs: args.jobs,
        },
    )?;
    let saved_header = if args.check { "would save" } else { "saved" };
    println!("{:<56} {:>12} {:>12} {:>16}", "file", "before", "after", saved_header);
    for f in &done.files {
        let saved = if f.error.is_some() {
            "error".to_string()
        } else {
            saved(f.before, f.after)
        };
        println!(
            "{:<56} {:>12} {:>12} {:>16}",
            f.path.display(),
            f.before,
            f.after,
            saved
        );
    }
    println!(
        "{:<56} {:>12} {:>12} {:>16}",
        format!("total ({} images, {} smaller)", done.files.len(), done.shrunk()),
        done.before(),
        done.after(),
        saved(done.before(), done.after())
    );
    let mut failed = false;
    for f in done.errors() {
        failed = true;
        ctx.reporter.error(&format!(
            "{}: {} (left untouched)",
            done.root.join(&f.path).display(),
            f.error.as_deref().unwrap_or_default()
        ));
    }
    if failed {
        return Ok(Exit::Error);
    }
    if args.check && done.shrunk() > 0 {
        ctx.reporter.info(&format!(
            "{} of {} images can be made smaller without changing a pixel\nhint: run `farm optimize images`",
            done.shrunk(),
            done.files.len()
        ));
        return Ok(Exit::No);
    }
    Ok(Exit::Success)
}

/// Bytes saved and the share of the original, e.g. `1234 (12.3%)`.
fn saved(before: u64, after: u64) -> String {
    let saved = before - after;
    if before == 0 {
        return "0".into();
    }
    format!("{saved} ({:.1}%)", saved as f64 * 100.0 / before as f64)
}

/// `farm optimize build-output IN OUT` (hidden): one line per image for the step's log.
fn build_output(args: BuildOutputArgs) -> Result<Exit> {
    let files = farm_engine::optimize_step::optimize_output(&args.input, &args.out)?;
    for f in &files {
        println!("{} {} -> {} bytes", f.path.display(), f.before, f.after);
    }
    let (before, after) = files.iter().fold((0, 0), |(b, a), f| (b + f.before, a + f.after));
    println!("{} images: {before} -> {after} bytes", files.len());
    Ok(Exit::Success)
}
