//! `farm cache status|gc|clean` and `farm store verify`: arguments into the
//! engine's options; the status table and the gc and verify reports are
//! printed here.

use anyhow::Result;
use farm_engine::ops::cache::{self, GcOptions, Keep};
use farm_engine::reporter::human_bytes;
use farm_store::GcReport;

use crate::{Context, Exit};

#[derive(clap::Subcommand)]
pub enum CacheCommand {
    /// Entries and bytes in the store, by kind.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete least-recently-used entries (what the project's farm.lock
    /// references is kept) and interrupted downloads; with no option, only the latter.
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
                let by_kind: serde_json::Map<String, serde_json::Value> = s
                    .by_kind
                    .iter()
                    .map(|(k, (n, b))| (k.clone(), serde_json::json!({"entries": n, "bytes": b})))
                    .collect();
                let v = serde_json::json!({"root": ctx.farm_home, "entries": s.entries, "bytes": s.bytes, "by_kind": by_kind,
                    "interrupted_downloads": {"count": s.tmp.interrupted, "bytes": s.tmp.interrupted_bytes}, "in_progress": s.tmp.in_use});
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
            Ok(Exit::Success)
        }
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
