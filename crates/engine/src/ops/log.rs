//! `farm log STEP`: the full log of a step of the project's last build.

use anyhow::{bail, Context as _, Result};
use farm_project::{StatePaths, StepId};

use crate::Context;

/// Which log `farm log` is asked for.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub step: StepId,
}

/// Entry point of `farm log`: the text of the step's log in the last build.
pub fn log(ctx: &Context, opts: &LogOptions) -> Result<String> {
    // No farm.toml needed: the record of the last build is all there is to read.
    let record = StatePaths::new(&ctx.project_dir).last_build();
    let steps = crate::schedule::read_record(&record, &ctx.farm_home)?;
    let name = opts.step.as_str();
    let Some(step) = steps.get(&opts.step) else {
        let known: Vec<&str> = steps.keys().map(StepId::as_str).collect();
        bail!("the last build had no step {name:?}; its steps: {}", known.join(", "));
    };
    let log = step.log.as_ref().with_context(|| format!("step {name} has no log"))?;
    std::fs::read_to_string(log).with_context(|| format!("{}: the log is gone (was the store cleaned?)", log.display()))
}
