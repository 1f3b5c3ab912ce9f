//! `farm init`: write a farm.toml for an existing app (detection lives in farm-init).

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct InitArgs {
    /// Replace an existing farm.toml.
    #[arg(long)]
    pub force: bool,
}

/// Entry point of `farm init`.
pub fn run(ctx: &Context, args: InitArgs) -> anyhow::Result<Exit> {
    let report = farm_init::init(&ctx.project_dir, args.force)?;
    let r = &ctx.reporter;
    for n in &report.detection.notes {
        r.info(n);
    }
    for w in &report.detection.warnings {
        r.warn(w);
    }
    r.info(&report.summary);
    r.info(&format!("wrote {}", report.written.display()));
    r.info(&format!("next: {}", report.next));
    Ok(Exit::Success)
}
