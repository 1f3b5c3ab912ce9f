//! `farm lock`: arguments into `LockOptions`, then the engine's lock.

use std::path::Path;

use anyhow::Result;
use farm_engine::ops::lock::{lock, LockOptions, LockOutcome};
use farm_lockfiles::Lock;

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct LockArgs {
    /// Don't write: exit 3 naming what is stale if farm.lock does not match its inputs.
    #[arg(long)]
    check: bool,
    /// Resolve this entry again even if its inputs did not change: a section
    /// (node, python, debian, ollama, npm, wheels, models, images) or a name in it.
    #[arg(long, value_name = "NAME")]
    update: Vec<String>,
}

/// Entry point of `farm lock`.
pub fn run(ctx: &Context, args: LockArgs) -> Result<Exit> {
    let opts = LockOptions {
        check: args.check,
        update: args.update,
    };
    let r = &ctx.reporter;
    match lock(ctx, &opts)? {
        LockOutcome::UpToDate { path } => {
            r.info(&format!("{} is up to date", path.display()));
            Ok(Exit::Success)
        }
        LockOutcome::Written { path, lock } => {
            r.info(&summary(&lock, &path));
            Ok(Exit::Success)
        }
        LockOutcome::Missing { path } => {
            r.error(&format!("{}: no lock file\nhint: run `farm lock`", path.display()));
            Ok(Exit::No)
        }
        LockOutcome::Stale { path, stale } => {
            r.error(&format!(
                "{} is stale:\n  {}\nhint: run `farm lock`",
                path.display(),
                stale.join("\n  ")
            ));
            Ok(Exit::No)
        }
    }
}

fn summary(lock: &Lock, path: &Path) -> String {
    let debs = lock.debian.as_ref().map(|d| d.packages.len()).unwrap_or(0);
    format!(
        "wrote {}: node {}, python {}, {} debian packages, {} npm packages, {} wheels, {} models, {} images",
        path.display(),
        lock.node.as_ref().map(|n| n.version.as_str()).unwrap_or("-"),
        lock.python.as_ref().map(|p| p.package_version.as_str()).unwrap_or("-"),
        debs,
        lock.npm.len(),
        lock.wheels.len(),
        lock.models.len(),
        lock.images.len()
    )
}
