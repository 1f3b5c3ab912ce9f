//! `farm cache status|gc|clean` and `farm store verify`: what the store
//! holds, how to trim it, and whether it is intact.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use farm_lockfiles::Lock;
use farm_project::{Project, StatePaths};
use farm_store::{GcReport, Store, StoreStatus, VerifyReport};

use crate::Context;

/// Entries and bytes in the store, by kind (`farm cache status`).
pub fn status(ctx: &Context) -> Result<StoreStatus> {
    let store = Store::open(&ctx.farm_home)?;
    Ok(store.status()?)
}

/// What a gc of the store keeps whatever its age or the store's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: every entry may go.
    Nothing,
    /// What the project's farm.lock references (`farm cache gc`).
    Locked,
    /// What farm.lock and the project's last build reference (`farm cache clean`).
    LockedAndLastBuild,
}

/// What `farm cache gc` (and `clean`, which is a gc down to nothing) is asked to do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Delete least-recently-used entries until the store is at most this many bytes.
    pub max_size: Option<u64>,
    /// Delete entries not used for this long.
    pub older_than: Option<Duration>,
    pub keep: Keep,
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
}

impl GcOptions {
    /// `farm cache clean`: everything neither farm.lock nor the last build references.
    pub fn clean(dry_run: bool) -> GcOptions {
        GcOptions {
            max_size: Some(0),
            older_than: None,
            keep: Keep::LockedAndLastBuild,
            dry_run,
        }
    }
}

/// Entry point of `farm cache gc` and `farm cache clean`.
pub fn gc(ctx: &Context, opts: &GcOptions) -> Result<GcReport> {
    let store = Store::open(&ctx.farm_home)?;
    let keep = match opts.keep {
        Keep::Nothing => HashSet::new(),
        Keep::Locked => locked_entries(ctx, &store)?,
        Keep::LockedAndLastBuild => {
            let mut keep = locked_entries(ctx, &store)?;
            let record = StatePaths::new(&ctx.project_dir).last_build();
            keep.extend(crate::schedule::recorded_entries(&record));
            keep
        }
    };
    Ok(store.gc(&farm_store::GcOptions {
        max_size: opts.max_size,
        older_than: opts.older_than,
        keep,
        dry_run: opts.dry_run,
    })?)
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

/// Entry point of `farm store verify`: re-hashes every entry and moves
/// corrupt ones to the store's quarantine.
pub fn verify(ctx: &Context) -> Result<VerifyReport> {
    let store = Store::open(&ctx.farm_home)?;
    Ok(store.verify()?)
}
