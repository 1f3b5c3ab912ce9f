//! `farm cache status|gc|clean` and `farm store verify`: what the store
//! holds, how to trim it, and whether it is intact; and the `[cache]` policy
//! applied after each successful build.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use farm_lockfiles::Lock;
use farm_project::config::{CachePolicy, CONFIG_FILE};
use farm_project::{Project, StatePaths};
use farm_store::{GcReport, Store, StoreStatus, VerifyReport};
use serde::{Deserialize, Serialize};

use crate::Context;

/// Entries and bytes in the store, by kind (`farm cache status`).
pub fn status(ctx: &Context) -> Result<StoreStatus> {
    let store = Store::open(&ctx.farm_home)?;
    Ok(store.status()?)
}

/// A build product used this recently is never evicted by the policy: a
/// build running now (of this or another project sharing the store) may be
/// reading it. Builds touch what they use, so an hour covers any step.
pub const POLICY_GRACE: Duration = Duration::from_secs(3_600);

/// Where `[cache]` policy runs are recorded, under FARM_HOME.
const LAST_GC_FILE: &str = "last-gc.json";

/// The project's `[cache]` policy and the farm.toml that sets it; the
/// defaults (and no path) when there is no farm.toml here or no `[cache]` in it. An invalid
/// `[cache]` is an error naming the field.
pub fn policy(ctx: &Context) -> Result<(CachePolicy, Option<PathBuf>)> {
    let path = ctx.project_dir.join(CONFIG_FILE);
    if !path.exists() {
        return Ok((CachePolicy::default(), None));
    }
    let project = Project::load(&ctx.project_dir)?;
    let set = project.config.cache.max_size.is_some() || project.config.cache.ttl.is_some();
    Ok((project.cache_policy(), set.then_some(path)))
}

/// What `farm cache status` reports beside the store's totals: the policy,
/// what it would evict now, and its last run.
#[derive(Debug, Clone)]
pub struct PolicyStatus {
    pub policy: CachePolicy,
    /// The farm.toml whose `[cache]` sets the policy; None: farm's defaults.
    pub configured_in: Option<PathBuf>,
    /// A dry run of the policy now: `considered` is the build products'
    /// size, `removed` what would be evicted.
    pub preview: GcReport,
    pub last: Option<LastGc>,
}

/// `farm cache status`'s policy part.
pub fn policy_status(ctx: &Context) -> Result<PolicyStatus> {
    let (policy, configured_in) = policy(ctx)?;
    let store = Store::open(&ctx.farm_home)?;
    let preview = store.gc(&policy_options(ctx, &policy, true))?;
    Ok(PolicyStatus {
        policy,
        configured_in,
        preview,
        last: LastGc::read(&ctx.farm_home),
    })
}

/// One application of the `[cache]` policy, as `$FARM_HOME/last-gc.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastGc {
    /// Unix seconds.
    pub at: u64,
    /// `build` (after a successful build) or `gc` (`farm cache gc`).
    pub trigger: String,
    pub max_size: Option<u64>,
    pub ttl_secs: Option<u64>,
    /// (entry file name, bytes), least recently used first.
    pub removed: Vec<(String, u64)>,
    pub freed: u64,
    pub actions_removed: usize,
    /// Build products' bytes after the run.
    pub remaining: u64,
}

impl LastGc {
    fn new(trigger: &str, policy: &CachePolicy, report: &GcReport) -> LastGc {
        LastGc {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            trigger: trigger.into(),
            max_size: policy.max_size,
            ttl_secs: policy.ttl.map(|t| t.as_secs()),
            removed: report.removed.clone(),
            freed: report.freed,
            actions_removed: report.actions_removed,
            remaining: report.remaining,
        }
    }

    /// The last run, if one was recorded (an unreadable record is none).
    pub fn read(farm_home: &Path) -> Option<LastGc> {
        let text = std::fs::read(farm_home.join(LAST_GC_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Written in a staging directory of the store's tmp/ (which gc clears
    /// of a killed process's leftovers) and renamed into place: never half-written.
    fn write(&self, store: &Store) -> Result<()> {
        let path = store.root().join(LAST_GC_FILE);
        let staging = store.temp_dir()?;
        let tmp = staging.path().join(LAST_GC_FILE);
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n").with_context(|| tmp.display().to_string())?;
        std::fs::rename(&tmp, &path).with_context(|| path.display().to_string())?;
        Ok(())
    }
}

/// The store gc options of the `[cache]` policy: build products only, the
/// last build's entries kept, recently used ones spared. What farm.lock
/// references is fetched, so never a build product: no lock lookup needed.
fn policy_options(ctx: &Context, policy: &CachePolicy, dry_run: bool) -> farm_store::GcOptions {
    let record = StatePaths::new(&ctx.project_dir).last_build();
    farm_store::GcOptions {
        max_size: policy.max_size,
        older_than: policy.ttl,
        keep: crate::schedule::recorded_entries(&record).into_iter().collect(),
        build_products_only: true,
        spare_used_within: Some(POLICY_GRACE),
        dry_run,
    }
}

/// Applies the `[cache]` policy to the store (`farm cache gc` with no
/// option, and after every successful build) and records the run.
pub fn apply_policy(ctx: &Context, policy: &CachePolicy, trigger: &str, dry_run: bool) -> Result<GcReport> {
    let store = Store::open(&ctx.farm_home)?;
    let report = store.gc(&policy_options(ctx, policy, dry_run))?;
    if !dry_run {
        LastGc::new(trigger, policy, &report).write(&store)?;
    }
    Ok(report)
}

/// After a successful build: the policy of `project`'s `[cache]`. The build
/// has succeeded whatever happens here, so a failure is a warning.
pub fn after_build(ctx: &Context, project: &Project) {
    let policy = project.cache_policy();
    match apply_policy(ctx, &policy, "build", false) {
        Ok(report) if !report.removed.is_empty() || report.actions_removed > 0 => {
            ctx.reporter.info(&format!(
                "cache policy: evicted {} build products ({}) and {} action-cache rows; {} of build products left ({})",
                report.removed.len(),
                crate::reporter::human_bytes(report.freed),
                report.actions_removed,
                crate::reporter::human_bytes(report.remaining),
                describe(&policy),
            ));
        }
        Ok(_) => {}
        Err(e) => ctx.reporter.warn(&format!(
            "cache policy: farm.toml's [cache] was not applied: {e:#}\nhint: run `farm cache gc` to apply it"
        )),
    }
}

/// `max-size 5.0 GiB, ttl 7d` as farm.toml would say it.
pub fn describe(policy: &CachePolicy) -> String {
    let size = policy
        .max_size
        .map(crate::reporter::human_bytes)
        .unwrap_or_else(|| "none".into());
    let ttl = policy
        .ttl
        .map(farm_formats::duration::format_duration)
        .unwrap_or_else(|| "none".into());
    format!("max-size {size}, ttl {ttl}")
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
        ..farm_store::GcOptions::default()
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

/// Entry point of `farm cache push`: every artifact the project's farm.lock
/// names, downloaded again from upstream (verified against the lock) and
/// stored in the remote cache `remote`, unless it is there already
/// (spec/remote.md "Store substitution").
pub fn push(
    ctx: &Context,
    remote: &crate::remote_cache::RemoteSettings,
    jobs: usize,
) -> Result<crate::remote_fetch::PushReport> {
    let project = Project::load(&ctx.project_dir)?;
    let path = project.lock_path();
    if !path.exists() {
        anyhow::bail!("{}: no lock file\nhint: run `farm lock` first", path.display());
    }
    let lock = Lock::read(&path)?;
    crate::lockcheck::refuse_invalid(&project, &lock)?;
    let all = super::fetch::jobs(&lock);
    ctx.reporter.info(&format!(
        "pushing the {} artifacts of {} to the remote cache at {}",
        all.len(),
        path.display(),
        farm_lockfiles::redact::redact_url(&remote.config.url)
    ));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(crate::remote_fetch::push(ctx, &project, all, &remote.config, jobs))
}
