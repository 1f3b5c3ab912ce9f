//! `farm cache status|gc` and `farm store verify`: what the store holds, how
//! to trim it, and whether it is intact.

use std::collections::HashSet;

use anyhow::Result;
use farm_lockfiles::Lock;
use farm_store::{GcOptions, Store};

use crate::{Context, EXIT_NO};
use farm_engine::reporter::human_bytes;
use farm_project::Project;

#[derive(clap::Subcommand)]
pub enum CacheCommand {
    /// Entries and bytes in the store, by kind.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete least-recently-used entries; what the project's farm.lock references is kept.
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

pub fn run_cache(ctx: &Context, cmd: CacheCommand) -> Result<u8> {
    let store = Store::open(&ctx.farm_home)?;
    match cmd {
        CacheCommand::Status { json } => {
            let s = store.status()?;
            if json {
                let by_kind: serde_json::Map<String, serde_json::Value> = s
                    .by_kind
                    .iter()
                    .map(|(k, (n, b))| (k.clone(), serde_json::json!({"entries": n, "bytes": b})))
                    .collect();
                let v = serde_json::json!({"root": ctx.farm_home, "entries": s.entries, "bytes": s.bytes, "by_kind": by_kind});
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            println!("store: {}", ctx.farm_home.display());
            println!("{:<12} {:>8} {:>12}", "kind", "entries", "size");
            for (kind, (n, b)) in &s.by_kind {
                println!("{kind:<12} {n:>8} {:>12}", human_bytes(*b));
            }
            println!("{:<12} {:>8} {:>12}", "total", s.entries, human_bytes(s.bytes));
            Ok(0)
        }
        CacheCommand::Clean { dry_run } => {
            let mut keep = locked_entries(ctx, &store)?;
            let record = ctx.project_dir.join(".farm").join("last-build.json");
            keep.extend(farm_engine::graph::recorded_entries(&record));
            let report = store.gc(&GcOptions {
                max_size: Some(0),
                older_than: None,
                keep,
                dry_run,
            })?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for (name, size) in &report.removed {
                ctx.reporter.info(&format!("{verb} {name} ({})", human_bytes(*size)));
            }
            ctx.reporter.info(&format!(
                "{verb} {} entries, {}; kept what farm.lock and the last build reference",
                report.removed.len(),
                human_bytes(report.freed)
            ));
            Ok(0)
        }
        CacheCommand::Gc {
            max_size,
            older_than,
            include_locked,
            dry_run,
        } => {
            let max_size = max_size.map(|s| farm_store::parse_size(&s)).transpose()?;
            let older_than = older_than.map(|s| farm_store::parse_duration(&s)).transpose()?;
            if max_size.is_none() && older_than.is_none() {
                anyhow::bail!("farm cache gc needs --max-size SIZE and/or --older-than DURATION");
            }
            let keep = if include_locked {
                HashSet::new()
            } else {
                locked_entries(ctx, &store)?
            };
            let report = store.gc(&GcOptions {
                max_size,
                older_than,
                keep,
                dry_run,
            })?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for (name, size) in &report.removed {
                ctx.reporter.info(&format!("{verb} {name} ({})", human_bytes(*size)));
            }
            ctx.reporter.info(&format!(
                "{verb} {} entries, {}; kept {} referenced by farm.lock",
                report.removed.len(),
                human_bytes(report.freed),
                report.kept_referenced
            ));
            Ok(0)
        }
    }
}

/// Entries the project's lock references (nothing when there is no project here).
fn locked_entries(ctx: &Context, store: &Store) -> Result<HashSet<String>> {
    let Ok(project) = Project::load(&ctx.project_dir) else {
        return Ok(HashSet::new());
    };
    let path = project.lock_path();
    if !path.exists() {
        return Ok(HashSet::new());
    }
    let lock = Lock::read(&path)?;
    let mut keep = HashSet::new();
    for job in super::fetch::jobs(&lock) {
        if let Some(entry) = store.artifact(&job.integrity.to_string())? {
            keep.insert(entry.file_name());
        }
    }
    Ok(keep)
}

pub fn run_store(ctx: &Context, cmd: StoreCommand) -> Result<u8> {
    let StoreCommand::Verify = cmd;
    let store = Store::open(&ctx.farm_home)?;
    let report = store.verify()?;
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
        Ok(0)
    } else {
        ctx.reporter.error(&format!(
            "{} of {} entries were corrupt and have been quarantined\nhint: run `farm fetch` to fetch them again",
            report.corrupt.len(),
            report.checked
        ));
        Ok(EXIT_NO)
    }
}
