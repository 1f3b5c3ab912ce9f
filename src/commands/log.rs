//! `farm log STEP`: the full log of a step of the project's last build.

use anyhow::{Context as _, Result};

use crate::Context;

#[derive(clap::Args)]
pub struct LogArgs {
    /// The step (frontend, backend, models, …).
    step: String,
}

pub fn run(ctx: &Context, args: LogArgs) -> Result<u8> {
    let record = ctx.project_dir.join(".farm").join("last-build.json");
    let steps = farm_engine::graph::read_record(&record)?;
    let Some(step) = steps.get(&args.step) else {
        let known: Vec<&str> = steps.keys().map(String::as_str).collect();
        anyhow::bail!(
            "the last build had no step {:?}; its steps: {}",
            args.step,
            known.join(", ")
        );
    };
    let log = step
        .log
        .as_ref()
        .with_context(|| format!("step {} has no log", args.step))?;
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("{}: the log is gone (was the store cleaned?)", log.display()))?;
    print!("{text}");
    Ok(0)
}
