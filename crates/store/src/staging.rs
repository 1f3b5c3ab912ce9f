//! Staging directories under `root/tmp/`: where entries are assembled
//! and downloads land before the atomic rename into `store/`, and where gc
//! parks what it is deleting. What a killed process leaves there is found
//! by [`scan`] (for `farm cache status`) and removed by [`remove_stale`].

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::tree::{remove_tree, TreeError};

/// An unlocked staging directory younger than this, whose owner may still
/// be running, is never treated as abandoned: it covers the instant between
/// a directory's creation and its lock.
pub(crate) const STALE_TMP_GRACE: Duration = Duration::from_secs(3600);

/// A directory under `root/tmp/` owned by one running operation. It holds an
/// exclusive `flock` on itself while alive, so `gc` can tell a live staging
/// directory from a crashed process's leftovers, and it is deleted (even
/// when read-only inside) when dropped. Its name is `<prefix><pid>-<random>`,
/// so a leftover whose process is gone is known as one without waiting.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    _lock: File,
}

impl StagingDir {
    pub(crate) fn new(tmp_root: &Path, prefix: &str) -> io::Result<StagingDir> {
        let prefix = format!("{prefix}{}-", std::process::id());
        let path = tempfile::Builder::new().prefix(&prefix).tempdir_in(tmp_root)?.keep();
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

/// What `tmp/` holds: work of running farm processes, and what killed or
/// crashed ones left behind (half-written downloads, unpacks and builds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TmpStatus {
    /// Leftovers nobody works in any more; the next `gc` removes them.
    pub interrupted: u64,
    /// Their bytes (file lengths).
    pub interrupted_bytes: u64,
    /// Staging directories a running farm holds.
    pub in_use: u64,
}

/// Whether a child of `tmp/` is a leftover. Locked means in use; an
/// unlocked one is a leftover once its owner (the pid in its name) is gone
/// or it is older than `grace`. A lock taken here to test is released
/// before returning, unless the caller keeps it in `hold`.
fn is_leftover(path: &Path, name: &str, grace: Duration, hold: &mut Option<File>) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if meta.is_dir() {
        let Ok(dir) = File::open(path) else { return false };
        if dir.try_lock().is_err() {
            return false; // a live operation owns it
        }
        *hold = Some(dir);
    }
    if owner_pid(name).is_some_and(|pid| !process_alive(pid)) {
        return true;
    }
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    meta.modified().map(|m| m <= cutoff).unwrap_or(false)
}

/// The pid in a staging directory's name `<prefix>-<pid>-<random>`.
fn owner_pid(name: &str) -> Option<i32> {
    let mut parts = name.split('-');
    parts.next()?;
    parts.next()?.parse::<i32>().ok().filter(|pid| *pid > 0)
}

fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    // Signal 0 checks existence; EPERM means it exists under another user.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// Bytes under `path` (file lengths, links not followed); unreadable parts count 0.
fn bytes_under(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| bytes_under(&e.path())).sum())
        .unwrap_or(0)
}

/// Counts what is in `tmp_root`, for `farm cache status`.
pub(crate) fn scan(tmp_root: &Path, grace: Duration) -> Result<TmpStatus, TreeError> {
    let mut status = TmpStatus::default();
    for name in crate::tree::sorted_children(tmp_root)? {
        let path = tmp_root.join(&name);
        let mut hold = None;
        if is_leftover(&path, &name.to_string_lossy(), grace, &mut hold) {
            status.interrupted += 1;
            status.interrupted_bytes += bytes_under(&path);
        } else if path.is_dir() {
            status.in_use += 1;
        }
    }
    Ok(status)
}

/// Removes what killed or crashed processes left in `tmp_root` (see
/// [`is_leftover`]), or with `dry_run` only counts it. Returns the count
/// and bytes. Staging directories of running processes are never touched.
pub(crate) fn remove_stale(tmp_root: &Path, grace: Duration, dry_run: bool) -> Result<(usize, u64), TreeError> {
    let (mut removed, mut bytes) = (0, 0);
    for name in crate::tree::sorted_children(tmp_root)? {
        let path = tmp_root.join(&name);
        // Held while removing, so no other gc or status counts it twice.
        let mut hold = None;
        if !is_leftover(&path, &name.to_string_lossy(), grace, &mut hold) {
            continue;
        }
        bytes += bytes_under(&path);
        if !dry_run {
            remove_tree(&path)?;
        }
        removed += 1;
    }
    Ok((removed, bytes))
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
        let (removed, _) = remove_stale(t.path(), Duration::from_secs(3600), false).unwrap();
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
