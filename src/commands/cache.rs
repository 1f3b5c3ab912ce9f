//! `farm cache status|gc|clean|push` and `farm store verify`: arguments into the
//! engine's options; the status table (with the `[cache]` policy) and the gc
//! and verify reports are printed here.

use anyhow::Result;
use farm_engine::ops::cache::{self, GcOptions, Keep};
use farm_engine::reporter::human_bytes;
use farm_store::GcReport;

use crate::{Context, Exit};

#[derive(clap::Subcommand)]
pub enum CacheCommand {
    /// Entries and bytes in the store, by kind, and the farm.toml `[cache]`
    /// policy: its limits, what it would evict now, its last run.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// With no option, apply the farm.toml `[cache]` policy (as after each
    /// build); with --max-size or --older-than, delete least-recently-used
    /// entries of any kind (what the project's farm.lock references is kept).
    /// Interrupted downloads go either way.
    Gc {
        /// Delete until the store is at most this big (e.g. 10GiB, 500M).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Delete entries not used for this long (e.g. 30d, 12h).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        /// Also delete what the current lock references.
        #[arg(long)]
        include_locked: bool,
        /// Show what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete everything the project's farm.lock and last build do not reference.
    Clean {
        /// Show what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Download every artifact farm.lock names again from upstream (verified
    /// against the lock) and keep a copy in a Remote Execution API server's
    /// CAS, for `farm fetch --remote-cache` when upstream no longer serves it.
    Push {
        /// The server (grpc://HOST:PORT or grpcs://HOST:PORT) [default: farm.toml's [remote] cache].
        /// The bearer token is read from $FARM_REMOTE_TOKEN.
        #[arg(long, value_name = "URL", env = "FARM_REMOTE_CACHE")]
        remote_cache: Option<String>,
        /// The REAPI instance name [default: farm.toml's [remote] instance, else ""].
        #[arg(long, value_name = "NAME")]
        remote_instance: Option<String>,
        /// Parallel downloads and uploads.
        #[arg(long, short, default_value_t = 4)]
        jobs: usize,
    },
}

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Re-hash every entry; quarantine corrupt ones and exit 3 if there were any.
    Verify,
}

/// Entry point of `farm cache`.
pub fn run_cache(ctx: &Context, cmd: CacheCommand) -> Result<Exit> {
    match cmd {
        CacheCommand::Status { json } => {
            let s = cache::status(ctx)?;
            if json {
                let p = cache::policy_status(ctx)?;
                let by_kind: serde_json::Map<String, serde_json::Value> = s
                    .by_kind
                    .iter()
                    .map(|(k, (n, b))| (k.clone(), serde_json::json!({"entries": n, "bytes": b})))
                    .collect();
                let policy = serde_json::json!({
                    "max_size": p.policy.max_size, "ttl_secs": p.policy.ttl.map(|t| t.as_secs()),
                    "configured_in": p.configured_in, "build_products_bytes": p.preview.considered,
                    "would_evict": p.preview.removed, "would_evict_bytes": p.preview.freed,
                    "would_drop_actions": p.preview.actions_removed, "last_gc": p.last});
                let v = serde_json::json!({"root": ctx.farm_home, "entries": s.entries, "bytes": s.bytes, "by_kind": by_kind,
                    "interrupted_downloads": {"count": s.tmp.interrupted, "bytes": s.tmp.interrupted_bytes}, "in_progress": s.tmp.in_use,
                    "policy": policy});
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(Exit::Success);
            }
            println!("store: {}", ctx.farm_home.display());
            println!("{:<12} {:>8} {:>12}", "kind", "entries", "size");
            for (kind, (n, b)) in &s.by_kind {
                println!("{kind:<12} {n:>8} {:>12}", human_bytes(*b));
            }
            println!("{:<12} {:>8} {:>12}", "total", s.entries, human_bytes(s.bytes));
            if s.tmp.interrupted > 0 {
                println!(
                    "interrupted downloads: {} ({}) in {}; `farm cache gc` removes them",
                    s.tmp.interrupted,
                    human_bytes(s.tmp.interrupted_bytes),
                    ctx.farm_home.join("tmp").display()
                );
            }
            // After the table: a farm.toml that cannot be read still shows the store.
            print_policy(&cache::policy_status(ctx)?);
            Ok(Exit::Success)
        }
        CacheCommand::Push {
            remote_cache,
            remote_instance,
            jobs,
        } => push(ctx, remote_cache.as_deref(), remote_instance.as_deref(), jobs),
        CacheCommand::Clean { dry_run } => {
            let report = cache::gc(ctx, &GcOptions::clean(dry_run))?;
            let verb = report_removed(ctx, &report, dry_run);
            ctx.reporter.info(&format!(
                "{verb} {} entries, {}; kept what farm.lock and the last build reference",
                report.removed.len(),
                human_bytes(report.freed)
            ));
            report_interrupted(ctx, &report, dry_run);
            Ok(Exit::Success)
        }
        CacheCommand::Gc {
            max_size,
            older_than,
            include_locked,
            dry_run,
        } => {
            if max_size.is_none() && older_than.is_none() && !include_locked {
                return gc_policy(ctx, dry_run);
            }
            let max_size = max_size.map(|s| farm_formats::size::parse_size(&s)).transpose()?;
            let older_than = older_than.map(|s| farm_store::parse_duration(&s)).transpose()?;
            let opts = GcOptions {
                max_size,
                older_than,
                keep: if include_locked { Keep::Nothing } else { Keep::Locked },
                dry_run,
            };
            let report = cache::gc(ctx, &opts)?;
            let verb = report_removed(ctx, &report, dry_run);
            ctx.reporter.info(&format!(
                "{verb} {} entries, {}; kept {} referenced by farm.lock",
                report.removed.len(),
                human_bytes(report.freed),
                report.kept_referenced
            ));
            report_interrupted(ctx, &report, dry_run);
            Ok(Exit::Success)
        }
    }
}

/// `farm cache push`: the remote cache from the flags or farm.toml, then
/// the engine's push and its summary.
fn push(ctx: &Context, url: Option<&str>, instance: Option<&str>, jobs: usize) -> Result<Exit> {
    let project = farm_project::Project::load(&ctx.project_dir)?;
    let Some(remote) = farm_engine::remote_cache::RemoteSettings::resolve(url, None, instance, false, &project)? else {
        anyhow::bail!(
            "farm cache push needs a remote cache\nhint: add --remote-cache grpc://HOST:PORT, set FARM_REMOTE_CACHE or [remote] cache in farm.toml"
        );
    };
    if remote.read_only {
        anyhow::bail!(
            "farm.toml's [remote] read-only = true: farm cache push writes to the remote cache\nhint: remove read-only, or push from a machine allowed to write (CI)"
        );
    }
    let report = cache::push(ctx, &remote, jobs)?;
    ctx.reporter.info(&format!(
        "pushed {} artifacts ({}), {} already in the remote cache",
        report.uploaded,
        human_bytes(report.bytes),
        report.present
    ));
    Ok(Exit::Success)
}

/// `farm cache status`: the `[cache]` policy's lines under the table.
fn print_policy(p: &cache::PolicyStatus) {
    let from = match &p.configured_in {
        Some(path) => format!("[cache] in {}", path.display()),
        None => "farm's defaults; farm.toml sets no [cache]".into(),
    };
    println!("cache policy: {} ({from})", cache::describe(&p.policy));
    println!(
        "build products: {} (fetched entries are not counted; the last build's are kept)",
        human_bytes(p.preview.considered)
    );
    if p.preview.removed.is_empty() && p.preview.actions_removed == 0 {
        println!("would evict now: nothing");
    } else {
        println!(
            "would evict now: {} entries, {}; {} action-cache rows (`farm cache gc` applies it)",
            p.preview.removed.len(),
            human_bytes(p.preview.freed),
            p.preview.actions_removed
        );
        for (name, size) in &p.preview.removed {
            println!("  {name} ({})", human_bytes(*size));
        }
    }
    match &p.last {
        Some(last) => println!(
            "last applied: {} (after {}): evicted {} entries, {}; {} action-cache rows",
            farm_formats::timestamp::rfc3339(last.at),
            if last.trigger == "build" {
                "a build"
            } else {
                "`farm cache gc`"
            },
            last.removed.len(),
            human_bytes(last.freed),
            last.actions_removed
        ),
        None => println!("last applied: never"),
    }
}

/// `farm cache gc` with no option: the `[cache]` policy, on demand.
fn gc_policy(ctx: &Context, dry_run: bool) -> Result<Exit> {
    let (policy, _) = cache::policy(ctx)?;
    let report = cache::apply_policy(ctx, &policy, "gc", dry_run)?;
    let verb = report_removed(ctx, &report, dry_run);
    ctx.reporter.info(&format!(
        "{verb} {} entries, {} and {} action-cache rows under the [cache] policy ({}); {} of build products left, the last build's {} kept",
        report.removed.len(),
        human_bytes(report.freed),
        report.actions_removed,
        cache::describe(&policy),
        human_bytes(report.remaining),
        report.kept_referenced
    ));
    report_interrupted(ctx, &report, dry_run);
    Ok(Exit::Success)
}

/// Names each removed entry; returns the verb the summary line uses.
fn report_removed(ctx: &Context, report: &GcReport, dry_run: bool) -> &'static str {
    let verb = if dry_run { "would delete" } else { "deleted" };
    for (name, size) in &report.removed {
        ctx.reporter.info(&format!("{verb} {name} ({})", human_bytes(*size)));
    }
    verb
}

/// Entry point of `farm store`.
pub fn run_store(ctx: &Context, cmd: StoreCommand) -> Result<Exit> {
    let StoreCommand::Verify = cmd;
    let report = cache::verify(ctx)?;
    for c in &report.corrupt {
        ctx.reporter.error(&format!(
            "{}: corrupt: expected {}, found {}; moved to {}",
            c.name,
            c.expected,
            c.actual,
            ctx.farm_home.join("quarantine").display()
        ));
    }
    if report.corrupt.is_empty() {
        ctx.reporter
            .info(&format!("verified {} entries: all intact", report.checked));
        Ok(Exit::Success)
    } else {
        ctx.reporter.error(&format!(
            "{} of {} entries were corrupt and have been quarantined\nhint: run `farm fetch` to fetch them again",
            report.corrupt.len(),
            report.checked
        ));
        Ok(Exit::No)
    }
}

/// Interrupted downloads (and unpacks, builds) gc took out of tmp/.
fn report_interrupted(ctx: &Context, report: &GcReport, dry_run: bool) {
    if report.stale_tmp_removed > 0 {
        let verb = if dry_run { "would remove" } else { "removed" };
        ctx.reporter.info(&format!(
            "{verb} {} interrupted downloads, {}",
            report.stale_tmp_removed,
            human_bytes(report.stale_tmp_bytes)
        ));
    }
}
