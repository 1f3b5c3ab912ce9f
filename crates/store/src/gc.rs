//! `farm cache gc`: least-recently-used eviction of store entries.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::time::Duration;

use serde::Serialize;

use crate::db::{self, EntryRow};
use crate::staging;
use crate::store::{Store, StoreError};
use crate::tree::{remove_tree, set_mode};

/// What `gc` may delete.
#[derive(Clone, Debug, Default)]
pub struct GcOptions {
    /// Delete least-recently-used entries until the total is at most this many bytes.
    pub max_size: Option<u64>,
    /// Delete entries (and action-cache rows) not used for this long.
    pub older_than: Option<Duration>,
    /// Entry file names (`<64 hex>-<name>`) never to delete, e.g. what farm.lock
    /// references. Action-cache rows whose outputs name one of them stay too.
    pub keep: HashSet<String>,
    /// Consider only build products: entries no lock artifact maps to. Fetched
    /// entries cost a download to get back, build products only a rebuild;
    /// `max_size` then bounds the build products' total alone.
    pub build_products_only: bool,
    /// Never delete an entry used this recently: a build running now may be
    /// reading it (the `[cache]` policy runs while other builds do).
    pub spare_used_within: Option<Duration>,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
}

/// What `gc` deleted (or, with `dry_run`, would delete).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// (entry file name, bytes), least recently used first.
    pub removed: Vec<(String, u64)>,
    pub freed: u64,
    /// Entries in the database that `keep` protected.
    pub kept_referenced: usize,
    /// Bytes of the entries gc considered (all, or the build products) before gc.
    pub considered: u64,
    /// The same after gc (may exceed `max_size` when `keep` holds more).
    pub remaining: u64,
    /// Action-cache rows dropped for `older_than`.
    pub actions_removed: usize,
    /// Leftovers of killed or crashed processes (interrupted downloads,
    /// unpacks, builds) removed from `tmp/`, or that would be with `dry_run`.
    pub stale_tmp_removed: usize,
    /// Their bytes.
    pub stale_tmp_bytes: u64,
}

impl Store {
    /// Deletes entries not in `keep`: first those unused for `older_than`,
    /// then the least recently used until the store is at most `max_size`.
    /// An entry used (touched) after gc chose it is spared; an entry being
    /// added right now has no row yet and is never a candidate.
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, StoreError> {
        let in_scope = |r: &EntryRow| !(options.build_products_only && r.fetched);
        let rows: Vec<EntryRow> = db::all_entries(&self.conn())
            .map_err(self.db_err("listing entries"))?
            .into_iter()
            .filter(|r| in_scope(r))
            .collect();
        let mut report = GcReport {
            kept_referenced: rows.iter().filter(|r| options.keep.contains(&r.file_name)).count(),
            ..GcReport::default()
        };
        let now = db::now();
        let ago = |age: Duration| now.saturating_sub(age.as_secs().min(i64::MAX as u64) as i64);
        let spare_after = options.spare_used_within.map(ago);
        let before: u64 = rows.iter().map(|r| r.size).sum();
        report.considered = before;
        let mut total = before;
        let candidates: Vec<&EntryRow> = rows
            .iter()
            .filter(|r| !options.keep.contains(&r.file_name))
            .filter(|r| spare_after.is_none_or(|t| r.last_access < t))
            .collect();
        let mut chosen: Vec<&EntryRow> = Vec::new();
        let cutoff = options.older_than.map(ago);
        if let Some(cutoff) = cutoff {
            for row in candidates.iter().filter(|r| r.last_access < cutoff) {
                chosen.push(row);
                total -= row.size;
            }
        }
        if let Some(max) = options.max_size {
            // `rows` is in access order, so this walks from the least recently used.
            for row in &candidates {
                if total <= max {
                    break;
                }
                if !chosen.iter().any(|c| c.file_name == row.file_name) {
                    chosen.push(row);
                    total -= row.size;
                }
            }
        }
        chosen.sort_by_key(|r| r.access_seq);

        for row in chosen {
            if options.dry_run || self.remove_if_unused(row)? {
                report.removed.push((row.file_name.clone(), row.size));
                report.freed += row.size;
            }
        }
        if let Some(cutoff) = cutoff {
            let spare = |outputs: &str| names_any(outputs, &options.keep);
            report.actions_removed = db::prune_actions(&mut self.conn(), cutoff, options.dry_run, spare)
                .map_err(self.db_err("pruning the action cache"))?;
        }
        (report.stale_tmp_removed, report.stale_tmp_bytes) =
            staging::remove_stale(&self.tmp_dir(), staging::STALE_TMP_GRACE, options.dry_run)?;
        report.remaining = if options.dry_run {
            before - report.freed
        } else {
            db::all_entries(&self.conn())
                .map_err(self.db_err("listing entries"))?
                .iter()
                .filter(|r| in_scope(r))
                .map(|r| r.size)
                .sum()
        };
        Ok(report)
    }

    /// Removes one entry unless it was used since gc listed it. The rows go
    /// and the entry leaves `store/` (renamed into `tmp/`) in one write
    /// transaction; the slow delete happens after the lock is released.
    fn remove_if_unused(&self, row: &EntryRow) -> Result<bool, StoreError> {
        let parking = self.staging("gc-")?;
        let path = self.store_dir().join(&row.file_name);
        let parked = parking.path().join(&row.file_name);
        {
            let mut conn = self.conn();
            let tx = db::write_tx(&mut conn).map_err(self.db_err("removing an entry"))?;
            let current = db::get_entry(&tx, &row.file_name).map_err(self.db_err("removing an entry"))?;
            if current.map(|c| c.access_seq) != Some(row.access_seq) {
                return Ok(false);
            }
            db::delete_entry(&tx, &row.file_name).map_err(self.db_err("removing an entry"))?;
            match fs::symlink_metadata(&path) {
                Ok(meta) => {
                    if meta.is_dir() {
                        set_mode(&path, 0o755)?; // a directory's `..` changes when it moves
                    }
                    fs::rename(&path, &parked).map_err(|source| StoreError::Io {
                        path: path.clone(),
                        action: "moving the entry out of the store",
                        source,
                    })?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        path,
                        action: "inspecting the entry",
                        source,
                    })
                }
            }
            tx.commit().map_err(self.db_err("removing an entry"))?;
        }
        remove_tree(&parked)?;
        Ok(true)
    }
}

/// Whether an action-cache row's outputs (JSON the build system chose) name
/// one of `entries` anywhere in a string.
fn names_any(outputs: &str, entries: &HashSet<String>) -> bool {
    fn walk(v: &serde_json::Value, entries: &HashSet<String>) -> bool {
        match v {
            serde_json::Value::String(s) => entries.contains(s),
            serde_json::Value::Array(a) => a.iter().any(|v| walk(v, entries)),
            serde_json::Value::Object(o) => o.values().any(|v| walk(v, entries)),
            _ => false,
        }
    }
    !entries.is_empty() && serde_json::from_str(outputs).is_ok_and(|v| walk(&v, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreEntry;

    fn add(store: &Store, name: &str, bytes: usize) -> StoreEntry {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, name.bytes().cycle().take(bytes).collect::<Vec<u8>>()).unwrap();
        store.add_file(&f, name, "test").unwrap()
    }

    #[test]
    fn older_than_removes_only_entries_unused_for_that_long() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let old = add(&store, "old", 100);
        let recent = add(&store, "recent", 100);
        let old_but_kept = add(&store, "kept", 100);
        let ten_days_ago = db::now() - 10 * 86400;
        for e in [&old, &old_but_kept] {
            db::set_last_access(&store.conn(), &e.file_name(), ten_days_ago).unwrap();
        }
        store
            .action_put("stale-step", &serde_json::json!({"out": old.file_name()}))
            .unwrap();
        store
            .conn()
            .execute("UPDATE actions SET last_access = ?1", [ten_days_ago])
            .unwrap();
        store.action_put("fresh-step", &serde_json::json!({})).unwrap();

        let options = GcOptions {
            older_than: Some(Duration::from_secs(7 * 86400)),
            keep: HashSet::from([old_but_kept.file_name()]),
            ..GcOptions::default()
        };
        let report = store.gc(&options).unwrap();
        assert_eq!(report.removed, vec![(old.file_name(), old.size)]);
        assert_eq!(report.kept_referenced, 1);
        assert_eq!(report.actions_removed, 1);
        assert!(!old.path.exists() && recent.path.exists() && old_but_kept.path.exists());
        assert!(store.action_get("stale-step").unwrap().is_none());
        assert!(store.action_get("fresh-step").unwrap().is_some());
        crate::tree::remove_tree(t.path()).unwrap(); // read-only entries defeat TempDir's cleanup
    }
    /// Sets every entry's last use to `days` ago (access order unchanged).
    fn age_all(store: &Store, days: i64) {
        store
            .conn()
            .execute("UPDATE entries SET last_access = ?1", [db::now() - days * 86400])
            .unwrap();
    }

    /// The `[cache]` policy's size limit: build products go least recently
    /// used first until their total is within the limit; a fetched entry
    /// (a lock artifact) is neither counted nor removed, and a kept build
    /// product stays even though the total is then still over the limit.
    #[test]
    fn size_limit_evicts_least_recently_used_build_products_only() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let fetched = add(&store, "fetched", 1000);
        store.record_artifact("sha256:abc", &fetched).unwrap();
        let oldest = add(&store, "oldest", 100);
        let kept = add(&store, "kept", 300);
        let middle = add(&store, "middle", 100);
        let newest = add(&store, "newest", 100);
        age_all(&store, 1);

        let options = GcOptions {
            max_size: Some(450),
            keep: HashSet::from([kept.file_name()]),
            build_products_only: true,
            ..GcOptions::default()
        };
        let preview = store
            .gc(&GcOptions {
                dry_run: true,
                ..options.clone()
            })
            .unwrap();
        assert!(
            oldest.path.exists() && middle.path.exists(),
            "a dry run removes nothing"
        );
        let report = store.gc(&options).unwrap();
        assert_eq!(preview.removed, report.removed);
        assert_eq!(
            report.removed,
            vec![(oldest.file_name(), oldest.size), (middle.file_name(), middle.size)],
            "least recently used first, and no more than needed (600, 500, then 400 <= 450 bytes)"
        );
        assert_eq!(report.considered, oldest.size + kept.size + middle.size + newest.size);
        assert_eq!(report.remaining, kept.size + newest.size);
        assert!(!oldest.path.exists() && !middle.path.exists());
        assert!(fetched.path.exists() && kept.path.exists() && newest.path.exists());

        // Over the limit with only the kept entry left: it stays.
        let report = store
            .gc(&GcOptions {
                max_size: Some(0),
                ..options
            })
            .unwrap();
        assert_eq!(report.removed, vec![(newest.file_name(), newest.size)]);
        assert_eq!(
            report.remaining, kept.size,
            "the kept entry alone is over the limit and stays"
        );
        assert!(kept.path.exists() && fetched.path.exists());
        crate::tree::remove_tree(t.path()).unwrap();
    }

    /// The policy's TTL: build products and action-cache rows unused for
    /// that long go; a kept entry and the action row that names it stay
    /// (so the last build is still a cache hit), and so does a fetched one.
    #[test]
    fn ttl_keeps_referenced_entries_and_their_action_rows() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let fetched = add(&store, "fetched", 100);
        store.record_artifact("sha256:abc", &fetched).unwrap();
        let stale = add(&store, "stale", 100);
        let kept = add(&store, "kept", 100);
        let fresh = add(&store, "fresh", 100);
        store
            .action_put("step:stale", &serde_json::json!({"entry": stale.file_name()}))
            .unwrap();
        store
            .action_put(
                "step:kept",
                &serde_json::json!({"entry": kept.file_name(), "log": "logs/x.log"}),
            )
            .unwrap();
        age_all(&store, 10);
        store
            .conn()
            .execute("UPDATE actions SET last_access = ?1", [db::now() - 10 * 86400])
            .unwrap();
        db::set_last_access(&store.conn(), &fresh.file_name(), db::now() - 86400).unwrap();

        let report = store
            .gc(&GcOptions {
                older_than: Some(Duration::from_secs(7 * 86400)),
                keep: HashSet::from([kept.file_name()]),
                build_products_only: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(report.removed, vec![(stale.file_name(), stale.size)]);
        assert_eq!(report.actions_removed, 1);
        assert!(store.action_get("step:stale").unwrap().is_none());
        assert!(
            store.action_get("step:kept").unwrap().is_some(),
            "the kept entry's action row stays"
        );
        assert!(fetched.path.exists() && kept.path.exists() && fresh.path.exists());
        crate::tree::remove_tree(t.path()).unwrap();
    }

    /// An entry used within `spare_used_within` is not evicted even when the
    /// size limit asks for it: a running build may be reading it.
    #[test]
    fn recently_used_entries_are_spared() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let old = add(&store, "old", 100);
        let recent = add(&store, "recent", 100);
        db::set_last_access(&store.conn(), &old.file_name(), db::now() - 2 * 3600).unwrap();
        let report = store
            .gc(&GcOptions {
                max_size: Some(0),
                spare_used_within: Some(Duration::from_secs(3600)),
                build_products_only: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(report.removed, vec![(old.file_name(), old.size)]);
        assert!(recent.path.exists());
        assert_eq!(report.remaining, recent.size);
        crate::tree::remove_tree(t.path()).unwrap();
    }
}
