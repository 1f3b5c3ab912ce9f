//! `farm types sync|check`: arguments into `TypesOptions`, then the
//! engine's types; a stale check is the answer "no".

use anyhow::Result;
use farm_engine::ops::types::{types, TypesMode, TypesOptions, TypesOutcome};

use crate::{Context, Exit};

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

/// Entry point of `farm types`.
pub fn run(ctx: &Context, cmd: TypesCommand) -> Result<Exit> {
    let (mode, args) = match cmd {
        TypesCommand::Sync(a) => (TypesMode::Sync, a),
        TypesCommand::Check(a) => (TypesMode::Check, a),
    };
    let opts = TypesOptions {
        mode,
        hermetic: args.hermetic,
    };
    let r = &ctx.reporter;
    match types(ctx, &opts)? {
        TypesOutcome::UpToDate { path } => {
            r.info(&format!("{} is up to date", path.display()));
            Ok(Exit::Success)
        }
        TypesOutcome::Written { path } => {
            r.info(&format!("wrote {}", path.display()));
            Ok(Exit::Success)
        }
        TypesOutcome::Stale { path, why } => {
            r.error(&format!("{}: {why}", path.display()));
            Ok(Exit::No)
        }
    }
}
