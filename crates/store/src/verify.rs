//! `farm store verify`: re-hash every entry and reconcile disk with the database.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::db;
use crate::digest::{tree_digest, Digest};
use crate::store::{parse_file_name, Store, StoreError};
use crate::tree::{set_mode, sorted_children};

/// What re-hashing an entry found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Actual {
    /// Its contents hash to this (not to the digest in its name).
    Digest(Digest),
    /// It could not be hashed (a special file inside, unreadable files, …).
    Unreadable(String),
}

impl fmt::Display for Actual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actual::Digest(d) => write!(f, "{d}"),
            Actual::Unreadable(why) => write!(f, "an unreadable tree ({why})"),
        }
    }
}

/// An entry whose contents no longer match its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Corrupt {
    /// The entry's file name (`<64 hex>-<name>`).
    pub name: String,
    pub expected: Digest,
    pub actual: Actual,
    /// Where it was moved.
    pub quarantined: PathBuf,
}

/// What `verify` checked and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries re-hashed.
    pub checked: usize,
    /// Entries that did not match their digest, now in `quarantine/`, their rows dropped.
    pub corrupt: Vec<Corrupt>,
    /// Intact entries that were on disk without a database row, now registered.
    pub reregistered: Vec<String>,
    /// Database rows whose entry was gone from disk, now dropped.
    pub dropped_rows: Vec<String>,
    /// Names under `store/` that are not entry names; left alone.
    pub unrecognised: Vec<String>,
}

impl VerifyReport {
    /// True when every entry matched its digest.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
    }
}

impl Store {
    /// Re-hashes every entry under `store/` (in parallel) and compares it
    /// with the digest in its name. Corrupt entries move to `quarantine/`
    /// and lose their rows (artifact rows too); intact entries missing from
    /// the database are registered; rows whose path is gone are dropped.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let rows: HashMap<String, db::EntryRow> = db::all_entries(&self.conn())
            .map_err(self.db_err("listing entries"))?
            .into_iter()
            .map(|r| (r.file_name.clone(), r))
            .collect();

        let store_dir = self.store_dir();
        let mut on_disk: Vec<(String, Digest)> = Vec::new();
        for name in sorted_children(&store_dir)? {
            let name = name.to_string_lossy().into_owned();
            match parse_file_name(&name) {
                Some((digest, _)) => on_disk.push((name, digest)),
                None => report.unrecognised.push(name),
            }
        }

        let mut vanished: Vec<&String> = rows.keys().filter(|n| !on_disk.iter().any(|(d, _)| d == *n)).collect();
        vanished.sort();
        for name in vanished {
            if self.drop_row_if_gone(name)? {
                report.dropped_rows.push(name.clone());
            }
        }

        let hashed: Vec<(&String, &Digest, Result<Digest, crate::tree::TreeError>)> = on_disk
            .par_iter()
            .map(|(name, expected)| (name, expected, tree_digest(&store_dir.join(name))))
            .collect();
        for (name, expected, result) in hashed {
            let path = store_dir.join(name);
            let actual = match result {
                Ok(actual) if actual == *expected => {
                    report.checked += 1;
                    let unregistered = !rows.contains_key(name)
                        && db::get_entry(&self.conn(), name)
                            .map_err(self.db_err("looking up an entry"))?
                            .is_none();
                    if unregistered && self.entry(name)?.is_some() {
                        report.reregistered.push(name.clone());
                    }
                    continue;
                }
                // Removed by a concurrent gc while we hashed: nothing to judge.
                Err(e) if e.is_not_found_at(&path) => continue,
                Ok(actual) => Actual::Digest(actual),
                Err(e) => Actual::Unreadable(e.to_string()),
            };
            report.checked += 1;
            let quarantined = self.quarantine(name, &path)?;
            report.corrupt.push(Corrupt {
                name: name.clone(),
                expected: *expected,
                actual,
                quarantined,
            });
        }
        Ok(report)
    }

    fn drop_row_if_gone(&self, file_name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn).map_err(self.db_err("dropping a vanished entry"))?;
        if fs::symlink_metadata(self.store_dir().join(file_name)).is_ok() {
            return Ok(false); // added again meanwhile
        }
        db::delete_entry(&tx, file_name).map_err(self.db_err("dropping a vanished entry"))?;
        tx.commit().map_err(self.db_err("dropping a vanished entry"))?;
        Ok(true)
    }

    /// Moves a corrupt entry to `quarantine/<file name>[.N]` and forgets it.
    fn quarantine(&self, file_name: &str, path: &Path) -> Result<PathBuf, StoreError> {
        let quarantine = self.quarantine_dir();
        let mut target = quarantine.join(file_name);
        let mut n = 1;
        while fs::symlink_metadata(&target).is_ok() {
            target = quarantine.join(format!("{file_name}.{n}"));
            n += 1;
        }
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn).map_err(self.db_err("quarantining an entry"))?;
        db::delete_entry(&tx, file_name).map_err(self.db_err("quarantining an entry"))?;
        if fs::symlink_metadata(path).map(|m| m.is_dir()).unwrap_or(false) {
            set_mode(path, 0o755)?; // a directory's `..` changes when it moves
        }
        fs::rename(path, &target).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            action: "moving a corrupt entry to quarantine",
            source,
        })?;
        tx.commit().map_err(self.db_err("quarantining an entry"))?;
        Ok(target)
    }
}
