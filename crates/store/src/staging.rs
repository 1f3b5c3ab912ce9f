//! Staging directories under `root/tmp/`: where entries are assembled
//! before the atomic rename into `store/`, and where gc parks what it is
//! deleting.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::tree::{remove_tree, TreeError};

/// A directory under `root/tmp/` owned by one running operation. It holds an
/// exclusive `flock` on itself while alive, so `gc` can tell a live staging
/// directory from a crashed process's leftovers, and it is deleted (even
/// when read-only inside) when dropped.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    _lock: File,
}

impl StagingDir {
    pub(crate) fn new(tmp_root: &Path, prefix: &str) -> io::Result<StagingDir> {
        let path = tempfile::Builder::new().prefix(prefix).tempdir_in(tmp_root)?.keep();
        let lock = File::open(&path)?;
        lock.lock()?;
        Ok(StagingDir { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        // Best effort: a leftover is unlocked, so the next gc removes it.
        let _ = remove_tree(&self.path);
    }
}

/// Removes what crashed processes left in `tmp_root`: entries older than
/// `grace` that nobody holds a lock on. The grace period covers the instant
/// between a staging directory's creation and its lock.
pub(crate) fn remove_stale(tmp_root: &Path, grace: Duration) -> Result<usize, TreeError> {
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    for name in crate::tree::sorted_children(tmp_root)? {
        let path = tmp_root.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.modified().map(|m| m > cutoff).unwrap_or(true) {
            continue;
        }
        if meta.is_dir() {
            let Ok(dir) = File::open(&path) else { continue };
            if dir.try_lock().is_err() {
                continue; // a live operation owns it
            }
            remove_tree(&path)?;
        } else {
            remove_tree(&path)?;
        }
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_dir_is_removed_on_drop_even_when_read_only() {
        let t = tempfile::tempdir().unwrap();
        let s = StagingDir::new(t.path(), "add-").unwrap();
        let p = s.path().to_path_buf();
        std::fs::create_dir(p.join("x")).unwrap();
        std::fs::write(p.join("x/f"), "f").unwrap();
        crate::tree::normalise_tree(&p.join("x"), 1).unwrap();
        drop(s);
        assert!(!p.exists());
    }

    #[test]
    fn remove_stale_spares_locked_and_recent_dirs_and_removes_abandoned_ones() {
        let t = tempfile::tempdir().unwrap();
        let live = StagingDir::new(t.path(), "add-").unwrap();
        let abandoned = t.path().join("add-crashed");
        std::fs::create_dir(&abandoned).unwrap();
        let recent = t.path().join("fetch-recent");
        std::fs::create_dir(&recent).unwrap();
        for p in [live.path(), abandoned.as_path()] {
            crate::tree::set_times(p, 1000).unwrap();
        }
        let removed = remove_stale(t.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(removed, 1);
        assert!(
            live.path().exists(),
            "a locked staging dir belongs to a running process"
        );
        assert!(
            recent.exists(),
            "a dir younger than the grace period may be about to be locked"
        );
        assert!(!abandoned.exists());
    }
}
