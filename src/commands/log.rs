//! `farm log STEP`: arguments into `LogOptions`; the log is printed as it is.

use anyhow::Result;
use farm_engine::ops::log::{log, LogOptions};
use farm_project::StepId;

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct LogArgs {
    /// The step (frontend, backend, models, …).
    step: String,
}

/// Entry point of `farm log`.
pub fn run(ctx: &Context, args: LogArgs) -> Result<Exit> {
    let text = log(
        ctx,
        &LogOptions {
            step: StepId::parse(&args.step),
        },
    )?;
    print!("{text}");
    Ok(Exit::Success)
}
