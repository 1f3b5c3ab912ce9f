//! `farm worker`: serves a Remote Execution API server's leases (the
//! Remote Workers API, as BuildGrid speaks it) with farm's sandbox, so
//! that `farm build --remote-executor` steps run on this machine.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use farm_engine::remote_cache::DEFAULT_TOKEN_ENV;
use farm_engine::worker::{serve, WorkerOptions};
use farm_remote::RemoteConfig;
use farm_store::Store;

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The server whose leases this worker takes (grpc://HOST:PORT or
    /// grpcs://HOST:PORT). The bearer token is read from $FARM_REMOTE_TOKEN.
    #[arg(long, value_name = "URL", env = "FARM_WORKER_SERVER")]
    server: String,
    /// Steps run side by side (one bot session each).
    #[arg(long, short, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    /// The REAPI instance name.
    #[arg(long, value_name = "NAME", default_value = "")]
    instance: String,
    /// The bot ids' prefix [default: farm-<pid>].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Kill a step after this many seconds when its Action names no timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    step_timeout: u64,
    /// Trim the worker's store to this size (least recently used entries
    /// first; none used in the last hour), e.g. 20GiB; `none` never trims.
    #[arg(long, value_name = "SIZE", default_value = "20GiB")]
    max_size: String,
    /// Remove store entries not used for this long, e.g. 7d; `none` keeps them.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    ttl: String,
    /// PEM CA certificates to trust for grpcs:// [default: the machine's].
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM client key for mutual TLS (with --client-cert).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

/// Set by SIGINT/SIGTERM: the worker finishes its running steps and stops.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(ctx: &Context, args: WorkerArgs) -> Result<Exit> {
    let token = match std::env::var(DEFAULT_TOKEN_ENV) {
        Ok(t) if !t.is_empty() => Some(t),
        _ => None,
    };
    let store =
        Store::open(&ctx.farm_home).with_context(|| format!("opening the store {}", ctx.farm_home.display()))?;
    let executor = farm_engine::executor::select(ctx.sandbox)?;
    let name = args.name.unwrap_or_else(|| format!("farm-{}", std::process::id()));
    let max_size = match args.max_size.as_str() {
        "none" => None,
        v => Some(farm_formats::size::parse_size(v).map_err(|e| anyhow::anyhow!("--max-size {v:?}: {e}"))?),
    };
    let ttl = match args.ttl.as_str() {
        "none" => None,
        v => Some(farm_formats::duration::parse_duration(v).map_err(|e| anyhow::anyhow!("--ttl {v:?}: {e}"))?),
    };
    let opts = WorkerOptions {
        server: RemoteConfig {
            url: args.server,
            instance: args.instance,
            token,
            ca_cert: args.ca_cert,
            client_cert: args.client_cert,
            client_key: args.client_key,
        },
        jobs: usize::from(args.jobs),
        name,
        store,
        executor,
        timeout: Duration::from_secs(args.step_timeout),
        max_size,
        ttl,
    };
    // A plain flag store is async-signal-safe.
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    ctx.reporter.info(&format!(
        "farm worker {}: {} bot session(s) on {}, sandbox {}, store {}",
        opts.name,
        opts.jobs,
        farm_lockfiles::redact::redact_url(&opts.server.url),
        opts.executor.name(),
        ctx.farm_home.display()
    ));
    serve(&opts, &STOP)?;
    ctx.reporter.info("farm worker: stopped");
    Ok(Exit::Success)
}
