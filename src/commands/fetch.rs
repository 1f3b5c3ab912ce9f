//! `farm fetch`: arguments into `FetchOptions`, then the engine's fetch.

use anyhow::Result;
use farm_engine::ops::fetch::{fetch, FetchOptions, FetchOutcome};
use farm_engine::reporter::human_bytes;

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct FetchArgs {
    /// Only check that everything is in the store; exit 3 listing what is missing.
    #[arg(long)]
    offline: bool,
    /// Parallel downloads.
    #[arg(long, short, default_value_t = 8)]
    jobs: usize,
    /// Take what upstream fails to serve from this Remote Execution API
    /// server (filled by `farm cache push`), verified against farm.lock
    /// (grpc://HOST:PORT or grpcs://HOST:PORT) [default: farm.toml's [remote] cache].
    /// The bearer token is read from $FARM_REMOTE_TOKEN.
    #[arg(long, value_name = "URL", env = "FARM_REMOTE_CACHE")]
    remote_cache: Option<String>,
    /// The remote cache's REAPI instance name [default: farm.toml's [remote] instance, else ""].
    #[arg(long, value_name = "NAME")]
    remote_instance: Option<String>,
}

/// Entry point of `farm fetch`.
pub fn run(ctx: &Context, args: FetchArgs) -> Result<Exit> {
    // --offline downloads nothing, so it needs no remote cache (nor a farm.toml).
    let remote = if args.offline {
        None
    } else {
        let project = farm_project::Project::load(&ctx.project_dir)?;
        farm_engine::remote_cache::RemoteSettings::resolve(
            args.remote_cache.as_deref(),
            None,
            args.remote_instance.as_deref(),
            false,
            &project,
        )?
    };
    let opts = FetchOptions {
        offline: args.offline,
        jobs: args.jobs,
        remote,
    };
    let r = &ctx.reporter;
    match fetch(ctx, &opts)? {
        FetchOutcome::AllPresent { lock, artifacts } => {
            if args.offline {
                r.info(&format!(
                    "all {artifacts} artifacts of {} are in the store",
                    lock.display()
                ));
            } else {
                r.info(&format!("all {artifacts} artifacts are in the store; nothing to fetch"));
            }
            Ok(Exit::Success)
        }
        FetchOutcome::Missing { artifacts, missing } => {
            let list: Vec<String> = missing
                .iter()
                .map(|j| format!("{} ({})", j.label, j.integrity))
                .collect();
            r.error(&format!(
                "{} of {artifacts} artifacts are not in the store:\n  {}\nhint: run `farm fetch` with network access",
                missing.len(),
                list.join("\n  ")
            ));
            Ok(Exit::No)
        }
        FetchOutcome::Fetched { count, bytes } => {
            r.info(&format!("fetched {count} artifacts ({})", human_bytes(bytes)));
            Ok(Exit::Success)
        }
    }
}
