//! `farm exec` and `farm shell`: arguments into `ExecOptions`, then the
//! engine runs the command; its exit status becomes farm's.

use std::time::Duration;

use anyhow::Result;
use farm_engine::ops::exec::{exec, ExecOptions};

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Kill the command after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ShellArgs {
    /// The shell to start.
    #[arg(long, default_value = "/bin/sh")]
    shell: String,
}

/// Entry point of `farm exec`.
pub fn run_exec(ctx: &Context, args: ExecArgs) -> Result<Exit> {
    run(
        ctx,
        ExecOptions {
            argv: args.command,
            timeout: args.timeout.map(Duration::from_secs),
        },
    )
}

/// Entry point of `farm shell`.
pub fn run_shell(ctx: &Context, args: ShellArgs) -> Result<Exit> {
    run(
        ctx,
        ExecOptions {
            argv: vec![args.shell],
            timeout: None,
        },
    )
}

fn run(ctx: &Context, opts: ExecOptions) -> Result<Exit> {
    let status = exec(ctx, &opts)?;
    // A status outside 0..=255 cannot be passed on; it is an error.
    Ok(Exit::Command(u8::try_from(status).unwrap_or(1)))
}
