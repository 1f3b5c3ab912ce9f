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
    /// Entry file names (`<64 hex>-<name>`) never to delete, e.g. what farm.lock references.
    pub keep: HashSet<String>,
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
    /// Bytes the database records after gc (may exceed `max_size` when `keep` holds more).
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
        let rows = db::all_entries(&self.conn()).map_err(self.db_err("listing entries"))?;
        let mut report = GcReport {
            kept_referenced: rows.iter().filter(|r| options.keep.contains(&r.file_name)).count(),
            ..GcReport::default()
        };
        let before: u64 = rows.iter().map(|r| r.size).sum();
        let mut total = before;
        let candidates: Vec<&EntryRow> = rows.iter().filter(|r| !options.keep.contains(&r.file_name)).collect();
        let mut chosen: Vec<&EntryRow> = Vec::new();
        let cutoff = options
            .older_than
            .map(|age| db::now().saturating_sub(age.as_secs().min(i64::MAX as u64) as i64));
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
            report.actions_removed = db::prune_actions(&self.conn(), cutoff, options.dry_run)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreEntry;

    fn add(store: &Store, name: &str, bytes: usize) -> StoreEntry {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, name.repeat(bytes / name.len())).unwrap();
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
}
