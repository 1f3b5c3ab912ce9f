//! The store itself: opening it, adding entries atomically, and the
//! artifact and action tables that point into it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::db::{self, OpenError};
use crate::digest::{tree_digest, Digest};
use crate::staging::{self, StagingDir, TmpStatus};
use crate::tree::{copy_tree, lstat, normalise_tree, remove_tree, set_mode, set_times, tree_size, TreeError, DIR_MODE};
use crate::unpack::{unpack_archive, ArchiveFormat, UnpackError, UnpackLimits, UnpackStats};

/// Every mtime in the store (as Nix does): 1 second after the epoch, not 0,
/// because some tools treat a zero mtime as "missing".
pub const STORE_MTIME: i64 = 1;

/// Longest entry name: file names are `<64 hex>-<name>` and must fit in 255 bytes.
pub const MAX_NAME_LEN: usize = 180;

/// Errors of the store: opening it, adding entries and its database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: cannot create the store directory: {source}; hint: set FARM_HOME to a writable directory", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{}: {action}: {source}", path.display())]
    Database {
        path: PathBuf,
        action: &'static str,
        source: rusqlite::Error,
    },
    #[error("{}: SQLite kept journal mode `{found}`, expected `wal`; hint: put FARM_HOME on a local filesystem (WAL needs shared memory, which network filesystems lack)", path.display())]
    NotWal { path: PathBuf, found: String },
    #[error("{}: database schema version {found} is newer than this farm understands ({supported}); hint: upgrade farm, or point FARM_HOME elsewhere", path.display())]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("entry name `{name}`: {reason}; hint: farm_store::sanitize_entry_name makes any string a valid name")]
    InvalidName { name: String, reason: &'static str },
    #[error("entry kind `{kind}`: expected a short lowercase word such as `npm`, `deb` or `output`")]
    InvalidKind { kind: String },
    #[error("{}: expected {expected}, found {found}", path.display())]
    WrongSourceType {
        path: PathBuf,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("building store entry `{name}`: {source}")]
    Build {
        name: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{}: not in the store; hint: it may have been removed by `farm cache gc`; fetch or build it again", path.display())]
    NotInStore { path: PathBuf },
    #[error("`{file_name}`: not a store entry name; expected `<64 hex digits>-<name>`")]
    BadFileName { file_name: String },
    #[error("action `{key}`: stored outputs are not valid JSON: {source}")]
    ActionJson { key: String, source: serde_json::Error },
}

/// One immutable entry under `root/store/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreEntry {
    /// Tree digest of the contents; the first part of the file name.
    pub digest: Digest,
    /// The human part of the file name (`node-v20.18.0`).
    pub name: String,
    /// What it is (`npm`, `deb`, `toolchain`, `output`, …); for `farm cache status`.
    pub kind: String,
    /// Bytes of file contents and symlink targets (hardlinked files once).
    pub size: u64,
    /// Absolute path of the entry.
    pub path: PathBuf,
}

impl StoreEntry {
    /// `<64 hex>-<name>`: the entry's name under `store/` and its key in the database.
    pub fn file_name(&self) -> String {
        entry_file_name(&self.digest, &self.name)
    }
}

fn entry_file_name(digest: &Digest, name: &str) -> String {
    format!("{}-{}", digest.to_hex(), name)
}

/// Splits `<64 hex>-<name>` into its digest and name.
pub fn parse_file_name(file_name: &str) -> Option<(Digest, &str)> {
    let (hex, rest) = (file_name.get(..64)?, file_name.get(64..)?);
    let name = rest.strip_prefix('-')?;
    let digest = Digest::from_hex(hex).ok()?;
    validate_entry_name(name).ok()?;
    Some((digest, name))
}

fn name_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+-._=@~".contains(c)
}

/// Entry names are 1 to [`MAX_NAME_LEN`] characters from `A-Za-z0-9+-._=@~`
/// and do not start with a dot (so no entry is hidden, `.` or `..`).
pub fn validate_entry_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("is longer than 180 bytes");
    }
    if name.starts_with('.') {
        return bad("starts with a dot");
    }
    if !name.chars().all(name_char_ok) {
        return bad("has characters outside A-Z a-z 0-9 + - . _ = @ ~");
    }
    Ok(())
}

/// A valid entry name made from any string: other characters become `_`,
/// leading dots go, long names are cut (`@types/react` → `@types_react`).
pub fn sanitize_entry_name(raw: &str) -> String {
    let mut name: String = raw.chars().map(|c| if name_char_ok(c) { c } else { '_' }).collect();
    name = name.trim_start_matches('.').to_string();
    name.truncate(MAX_NAME_LEN);
    if name.is_empty() {
        name.push_str("unnamed");
    }
    name
}

fn validate_kind(kind: &str) -> Result<(), StoreError> {
    let ok = !kind.is_empty()
        && kind.len() <= 32
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKind { kind: kind.to_string() })
    }
}

/// Totals for `farm cache status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreStatus {
    pub entries: u64,
    pub bytes: u64,
    /// kind → (entries, bytes)
    pub by_kind: BTreeMap<String, (u64, u64)>,
    /// Rows in the action cache.
    pub actions: u64,
    /// What `tmp/` holds: interrupted downloads and builds, work in progress.
    pub tmp: TmpStatus,
}

/// A content-addressed store rooted at one directory (`$FARM_HOME`).
/// Several `Store`s, in one process or many, may use the same root at once.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    db_path: PathBuf,
    db: Mutex<Connection>,
}

/// Where the store lives: `$FARM_HOME`, else `$XDG_CACHE_HOME/farm`, else `~/.cache/farm`.
fn root_from_env(get: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |key: &str| get(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = set("FARM_HOME") {
        return home;
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(cache) = set("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return cache.join("farm");
    }
    if let Some(home) = set("HOME") {
        return home.join(".cache").join("farm");
    }
    // A service account without HOME still gets a private, stable place.
    std::env::temp_dir().join(format!("farm-{}", nix::unistd::getuid()))
}

impl Store {
    /// `$FARM_HOME`, else `$XDG_CACHE_HOME/farm`, else `~/.cache/farm`
    /// (empty variables count as unset).
    pub fn default_root() -> PathBuf {
        root_from_env(|key| std::env::var_os(key))
    }

    /// Opens (creating if needed) the store at `root`: the directories
    /// `store/`, `tmp/`, `quarantine/`, `logs/` and the database `farm.db`.
    pub fn open(root: impl AsRef<Path>) -> Result<Store, StoreError> {
        let root = std::path::absolute(root.as_ref()).map_err(|source| StoreError::CreateDir {
            path: root.as_ref().to_path_buf(),
            source,
        })?;
        for dir in [
            root.clone(),
            root.join("store"),
            root.join("tmp"),
            root.join("quarantine"),
            root.join("logs"),
        ] {
            fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let db_path = root.join("farm.db");
        let conn = db::open(&db_path).map_err(|e| match e {
            OpenError::Sqlite(source) => StoreError::Database {
                path: db_path.clone(),
                action: "opening the store database",
                source,
            },
            OpenError::NotWal(found) => StoreError::NotWal {
                path: db_path.clone(),
                found,
            },
            OpenError::TooNew(found) => StoreError::SchemaTooNew {
                path: db_path.clone(),
                found,
                supported: db::SCHEMA_VERSION,
            },
        })?;
        Ok(Store {
            root,
            db_path,
            db: Mutex::new(conn),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/store`: where entries live.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// `root/tmp`: staging, on the same filesystem as `store/`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `root/quarantine`: corrupt entries moved aside by [`Store::verify`].
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// `root/logs`: build logs kept by the caller.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// A fresh directory under `tmp/` (same filesystem as the store) that is
    /// deleted when dropped and that `gc` leaves alone while it lives; for
    /// downloads that then enter the store with [`Store::adopt_file`].
    pub fn temp_dir(&self) -> Result<StagingDir, StoreError> {
        self.staging("work-")
    }

    pub(crate) fn staging(&self, prefix: &str) -> Result<StagingDir, StoreError> {
        let tmp = self.tmp_dir();
        StagingDir::new(&tmp, prefix).map_err(|source| StoreError::Io {
            path: tmp,
            action: "creating a staging directory",
            source,
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back on drop).
        self.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn db_err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Database {
            path: self.db_path.clone(),
            action,
            source,
        }
    }

    /// Copies the regular file `src` into the store (`src` is left as it was).
    pub fn add_file(&self, src: &Path, name: &str, kind: &str) -> Result<StoreEntry, StoreError> {
        self.add_source(src, name, kind, SourceType::File, Transfer::Copy)
    }

    /// Moves the regular file `src` into the store (a rename when it is on
    /// the store's filesystem, e.g. in [`Store::temp_dir`]; else copy and delete).
    pub fn adopt_file(&self, src: &Path, name: &str, kind: &str) -> Result<StoreEntry, StoreError> {
        self.add_source(src, name, kind, SourceType::File, Transfer::Move)
    }

    /// Copies the directory tree `src` into the store.
    pub fn add_tree(&self, src: &Path, name: &str, kind: &str) -> Result<StoreEntry, StoreError> {
        self.add_source(src, name, kind, SourceType::Directory, Transfer::Copy)
    }

    /// Moves the directory tree `src` into the store (rename when possible).
    pub fn adopt_tree(&self, src: &Path, name: &str, kind: &str) -> Result<StoreEntry, StoreError> {
        self.add_source(src, name, kind, SourceType::Directory, Transfer::Move)
    }

    /// Unpacks a tarball or .deb into a new entry (see [`unpack_archive`] for
    /// what is refused), stopping at `limits`; on any error nothing is kept.
    pub fn add_archive(
        &self,
        archive: &Path,
        format: ArchiveFormat,
        limits: UnpackLimits,
        name: &str,
        kind: &str,
    ) -> Result<StoreEntry, StoreError> {
        self.add_archive_with_stats(archive, format, limits, name, kind)
            .map(|(entry, _)| entry)
    }

    /// [`Store::add_archive`], also saying what was unpacked and skipped.
    pub fn add_archive_with_stats(
        &self,
        archive: &Path,
        format: ArchiveFormat,
        limits: UnpackLimits,
        name: &str,
        kind: &str,
    ) -> Result<(StoreEntry, UnpackStats), StoreError> {
        validate_entry_name(name)?;
        validate_kind(kind)?;
        let staging = self.staging("add-")?;
        let staged = staging.path().join("entry");
        let stats = unpack_archive(archive, format, &staged, limits)?;
        Ok((self.commit(staging, &staged, name, kind)?, stats))
    }

    /// Makes an entry from a directory that `fill` populates (an empty
    /// directory on the store's filesystem). If `fill` fails nothing is kept.
    pub fn build_entry<F>(&self, name: &str, kind: &str, fill: F) -> Result<StoreEntry, StoreError>
    where
        F: FnOnce(&Path) -> anyhow::Result<()>,
    {
        validate_entry_name(name)?;
        validate_kind(kind)?;
        let staging = self.staging("build-")?;
        let staged = staging.path().join("entry");
        fs::create_dir(&staged).map_err(|source| StoreError::Io {
            path: staged.clone(),
            action: "creating the build directory",
            source,
        })?;
        fill(&staged).map_err(|e| StoreError::Build {
            name: name.to_string(),
            source: e.into(),
        })?;
        self.commit(staging, &staged, name, kind)
    }

    fn add_source(
        &self,
        src: &Path,
        name: &str,
        kind: &str,
        expected: SourceType,
        transfer: Transfer,
    ) -> Result<StoreEntry, StoreError> {
        validate_entry_name(name)?;
        validate_kind(kind)?;
        let meta = fs::symlink_metadata(src).map_err(|source| StoreError::Io {
            path: src.to_path_buf(),
            action: "reading the source",
            source,
        })?;
        let found = if meta.is_file() {
            SourceType::File
        } else if meta.is_dir() {
            SourceType::Directory
        } else {
            SourceType::Other
        };
        if found != expected {
            return Err(StoreError::WrongSourceType {
                path: src.to_path_buf(),
                expected: expected.describe(),
                found: found.describe(),
            });
        }
        let staging = self.staging("add-")?;
        let staged = staging.path().join("entry");
        match transfer {
            Transfer::Copy => copy_tree(src, &staged)?,
            Transfer::Move => match fs::rename(src, &staged) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(Errno::EXDEV as i32) => {
                    copy_tree(src, &staged)?;
                    remove_tree(src)?;
                }
                Err(source) => {
                    return Err(StoreError::Io {
                        path: src.to_path_buf(),
                        action: "moving into the store's staging directory",
                        source,
                    })
                }
            },
        }
        self.commit(staging, &staged, name, kind)
    }

    /// Normalises and hashes the staged tree, then renames it into place.
    /// If an identical entry is already there (another process won), ours is
    /// discarded and theirs returned.
    fn commit(&self, _staging: StagingDir, staged: &Path, name: &str, kind: &str) -> Result<StoreEntry, StoreError> {
        normalise_tree(staged, STORE_MTIME)?;
        let digest = tree_digest(staged)?;
        let size = tree_size(staged)?;
        let is_dir = lstat(staged)?.is_dir();
        let path = self.store_dir().join(entry_file_name(&digest, name));
        let entry = StoreEntry {
            digest,
            name: name.to_string(),
            kind: kind.to_string(),
            size,
            path,
        };
        // Already stored, recorded under this kind and used moments ago: ours
        // is discarded with the staging dir, and nothing needs writing.
        let file_name = entry.file_name();
        let row = db::get_entry(&self.conn(), &file_name).map_err(self.db_err("looking up an entry"))?;
        if row.is_some_and(|r| r.kind == entry.kind && db::recently_used(r.last_access, db::now()))
            && fs::symlink_metadata(&entry.path).is_ok()
        {
            return Ok(entry);
        }
        // The rename and the row happen under the database's write lock, which
        // gc also holds while it drops a row and moves its entry out: so gc can
        // never take an entry between our rename and our row, and an entry we
        // find already present cannot vanish before we have marked it used.
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn).map_err(self.db_err("recording an entry"))?;
        if is_dir {
            // Moving a directory to a new parent rewrites its `..`, which needs
            // write permission on it for non-root users.
            set_mode(staged, 0o755)?;
        }
        match rename_noreplace(staged, &entry.path) {
            Ok(()) => {
                if is_dir {
                    set_mode(&entry.path, DIR_MODE)?;
                    set_times(&entry.path, STORE_MTIME)?;
                }
            }
            // Another process stored the same tree first; ours is discarded with the staging dir.
            Err(e) if already_exists(&e) => {}
            Err(source) => {
                return Err(StoreError::Io {
                    path: entry.path.clone(),
                    action: "renaming the staged entry into the store",
                    source,
                })
            }
        }
        db::upsert_entry(
            &tx,
            &entry.file_name(),
            &entry.digest.to_string(),
            &entry.name,
            &entry.kind,
            entry.size,
            db::now(),
        )
        .map_err(self.db_err("recording an entry"))?;
        tx.commit().map_err(self.db_err("recording an entry"))?;
        Ok(entry)
    }

    /// Marks an entry used (inserting its row if missing) if it is on disk,
    /// else drops any row it has. Returns whether it is on disk. Checked under
    /// the write lock, so a concurrent gc cannot slip in between.
    fn mark_used(&self, entry: &StoreEntry, integrity: Option<&str>) -> Result<bool, StoreError> {
        let action = if integrity.is_some() {
            "recording an artifact"
        } else {
            "recording an entry use"
        };
        let file_name = entry.file_name();
        let mut conn = self.conn();
        let tx = db::write_tx(&mut conn).map_err(self.db_err(action))?;
        let present = fs::symlink_metadata(&entry.path).is_ok();
        if present {
            db::upsert_entry(
                &tx,
                &file_name,
                &entry.digest.to_string(),
                &entry.name,
                &entry.kind,
                entry.size,
                db::now(),
            )
            .map_err(self.db_err(action))?;
            if let Some(integrity) = integrity {
                db::put_artifact(&tx, integrity, &file_name).map_err(self.db_err(action))?;
            }
        } else {
            db::delete_entry(&tx, &file_name).map_err(self.db_err(action))?;
        }
        tx.commit().map_err(self.db_err(action))?;
        Ok(present)
    }

    /// Marks an entry as used now (what `gc` orders by). Errors if it is no
    /// longer on disk.
    pub fn touch(&self, entry: &StoreEntry) -> Result<(), StoreError> {
        if self.mark_used(entry, None)? {
            Ok(())
        } else {
            Err(StoreError::NotInStore {
                path: entry.path.clone(),
            })
        }
    }

    /// The entry called `file_name` (`<64 hex>-<name>`) if it is on disk,
    /// marked as used (a use recorded in the last 10 minutes is not rewritten). A database row whose path is gone is dropped; an entry
    /// on disk without a row is registered (kind `recovered`).
    pub fn entry(&self, file_name: &str) -> Result<Option<StoreEntry>, StoreError> {
        let Some((digest, name)) = parse_file_name(file_name) else {
            return Err(StoreError::BadFileName {
                file_name: file_name.to_string(),
            });
        };
        let row = db::get_entry(&self.conn(), file_name).map_err(self.db_err("looking up an entry"))?;
        self.entry_from_row(file_name, digest, name, row)
    }

    /// [`Store::entry`] given the row the database has for it (if any).
    fn entry_from_row(
        &self,
        file_name: &str,
        digest: Digest,
        name: &str,
        row: Option<db::EntryRow>,
    ) -> Result<Option<StoreEntry>, StoreError> {
        let path = self.store_dir().join(file_name);
        let (kind, size, recent) = match row {
            Some(row) => (row.kind, row.size, db::recently_used(row.last_access, db::now())),
            None => match tree_size(&path) {
                Ok(size) => (db::RECOVERED_KIND.to_string(), size, false),
                Err(e) if e.is_not_found_at(&path) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        let entry = StoreEntry {
            digest,
            name: name.to_string(),
            kind,
            size,
            path,
        };
        // Used moments ago and still there: a read suffices, no write transaction.
        if recent && fs::symlink_metadata(&entry.path).is_ok() {
            return Ok(Some(entry));
        }
        Ok(self.mark_used(&entry, None)?.then_some(entry))
    }

    /// Remembers that the lock artifact with this integrity (`sha256:…`,
    /// `sha512:…`, any string) is stored as `entry`.
    pub fn record_artifact(&self, integrity: &str, entry: &StoreEntry) -> Result<(), StoreError> {
        if self.mark_used(entry, Some(integrity))? {
            Ok(())
        } else {
            Err(StoreError::NotInStore {
                path: entry.path.clone(),
            })
        }
    }

    /// The entry recorded for a lock artifact's integrity, marked as used;
    /// None if there is none or its path vanished (the stale row is dropped).
    pub fn artifact(&self, integrity: &str) -> Result<Option<StoreEntry>, StoreError> {
        // One query for the artifact and its entry's row: a command looks up
        // every artifact of its lock.
        let found = db::artifact_entry(&self.conn(), integrity).map_err(self.db_err("looking up an artifact"))?;
        let Some((file_name, row)) = found else { return Ok(None) };
        let found = match parse_file_name(&file_name) {
            Some((digest, name)) => self.entry_from_row(&file_name, digest, name, row)?,
            None => None,
        };
        if found.is_none() {
            db::delete_artifact(&self.conn(), integrity, &file_name)
                .map_err(self.db_err("dropping a stale artifact"))?;
        }
        Ok(found)
    }

    /// The outputs recorded for a step key, marking the action as used.
    /// The caller checks that the entries they name still exist.
    pub fn action_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let conn = self.conn();
        let found = db::get_action(&conn, key).map_err(self.db_err("reading the action cache"))?;
        let now = db::now();
        let outputs = match found {
            Some((outputs, last_access)) => {
                if !db::recently_used(last_access, now) {
                    db::touch_action(&conn, key, now).map_err(self.db_err("marking an action used"))?;
                }
                Some(outputs)
            }
            None => None,
        };
        drop(conn);
        outputs
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|source| StoreError::ActionJson {
                key: key.to_string(),
                source,
            })
    }

    /// Records (or replaces) the outputs of a step key.
    pub fn action_put(&self, key: &str, outputs: &serde_json::Value) -> Result<(), StoreError> {
        let text = outputs.to_string();
        db::put_action(&self.conn(), key, &text, db::now()).map_err(self.db_err("writing the action cache"))
    }

    /// Empties the action cache (`farm build --clear-cache`): every step
    /// runs again; the entries, and so what farm.lock pins, stay. Returns
    /// the number of actions removed.
    pub fn clear_actions(&self) -> Result<usize, StoreError> {
        db::clear_actions(&self.conn()).map_err(self.db_err("clearing the action cache"))
    }

    /// Entries and bytes, in total and by kind, as the database records
    /// them, and what `tmp/` holds.
    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        let conn = self.conn();
        let mut status = StoreStatus::default();
        for (kind, count, bytes) in db::totals_by_kind(&conn).map_err(self.db_err("summing entries"))? {
            status.entries += count;
            status.bytes += bytes;
            status.by_kind.insert(kind, (count, bytes));
        }
        status.actions = db::count_actions(&conn).map_err(self.db_err("counting actions"))?;
        drop(conn);
        status.tmp = staging::scan(&self.tmp_dir(), staging::STALE_TMP_GRACE)?;
        Ok(status)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SourceType {
    File,
    Directory,
    Other,
}

impl SourceType {
    fn describe(self) -> &'static str {
        match self {
            SourceType::File => "a regular file",
            SourceType::Directory => "a directory",
            SourceType::Other => "a symlink or special file",
        }
    }
}

#[derive(Clone, Copy)]
enum Transfer {
    Copy,
    Move,
}

/// What [`rename_noreplace`] reports when the target is taken.
fn already_exists(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(Errno::ENOTEMPTY as i32)
}

/// rename(2) that fails with EEXIST instead of replacing an existing target.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE: link(2) never replaces; for a
        // directory, rename(2) refuses a non-empty target, and an existing
        // empty-directory entry is identical to ours.
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            if fs::symlink_metadata(from)?.is_dir() {
                if fs::symlink_metadata(to).is_ok() {
                    return Err(io::Error::from(Errno::EEXIST));
                }
                fs::rename(from, to)
            } else {
                fs::hard_link(from, to)?;
                fs::remove_file(from)
            }
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_prefers_farm_home_then_xdg_then_home() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| OsString::from(v))
        }
        let all = [("FARM_HOME", "/f"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(root_from_env(env(&all)), Path::new("/f"));
        assert_eq!(
            root_from_env(env(&[("FARM_HOME", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Path::new("/x/farm")
        );
        assert_eq!(
            root_from_env(env(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/h")])),
            Path::new("/h/.cache/farm"),
            "a relative XDG_CACHE_HOME is ignored, as the XDG spec says"
        );
        assert!(root_from_env(env(&[])).starts_with(std::env::temp_dir()));
    }

    #[test]
    fn names_are_validated_and_sanitised() {
        for good in [
            "node-v20.18.0",
            "@types_react-18.2.0",
            "python3.11_3.11.2-6+deb12u6",
            "a",
        ] {
            validate_entry_name(good).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(181)] {
            let err = validate_entry_name(bad).unwrap_err();
            assert!(
                err.to_string().contains("hint: farm_store::sanitize_entry_name"),
                "{err}"
            );
        }
        assert_eq!(sanitize_entry_name("@types/react"), "@types_react");
        assert_eq!(sanitize_entry_name("..x:1.0"), "x_1.0");
        assert_eq!(sanitize_entry_name(""), "unnamed");
        for raw in ["@types/react", "..", "é/ü", &"y".repeat(500)] {
            validate_entry_name(&sanitize_entry_name(raw)).unwrap();
        }
    }

    #[test]
    fn file_names_round_trip() {
        let d = Digest::from_bytes([7; 32]);
        let name = entry_file_name(&d, "pkg-1.0");
        assert_eq!(parse_file_name(&name), Some((d, "pkg-1.0")));
        assert_eq!(parse_file_name("short-name"), None);
        assert_eq!(parse_file_name(&format!("{}_pkg", d.to_hex())), None);
    }

    /// Repeated lookups (`entry`, `artifact`, `action_get`) and re-adds of
    /// things used within `USE_RESOLUTION` write nothing: no row changes, and they even
    /// succeed while another process holds the database's write lock. A
    /// lookup of something last used longer ago does record the use.
    #[test]
    fn lookups_of_recently_used_entries_do_not_write() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("home")).unwrap();
        let src = t.path().join("f");
        fs::write(&src, "contents").unwrap();
        let entry = store.add_file(&src, "pkg-1.0", "test").unwrap();
        store.record_artifact("sha256:abc", &entry).unwrap();
        store
            .action_put("step-key", &serde_json::json!({"out": entry.file_name()}))
            .unwrap();

        let before = store.conn().total_changes();
        // Another process's write transaction: any lookup needing the write lock fails fast.
        store.conn().busy_timeout(std::time::Duration::from_millis(50)).unwrap();
        let other = Connection::open(t.path().join("home/farm.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..20 {
            assert_eq!(store.entry(&entry.file_name()).unwrap().as_ref(), Some(&entry));
            assert_eq!(store.artifact("sha256:abc").unwrap().as_ref(), Some(&entry));
            assert!(store.action_get("step-key").unwrap().is_some());
        }
        // Adding the same contents again finds the entry and writes nothing either.
        assert_eq!(store.add_file(&src, "pkg-1.0", "test").unwrap(), entry);
        assert_eq!(store.conn().total_changes(), before, "recent uses were rewritten");
        other.execute_batch("COMMIT").unwrap();

        // A use older than the resolution is recorded again, by each kind of lookup.
        let old = db::now() - db::USE_RESOLUTION - 5;
        db::set_last_access(&store.conn(), &entry.file_name(), old).unwrap();
        store
            .conn()
            .execute("UPDATE actions SET last_access = ?1", [old])
            .unwrap();
        let before = store.conn().total_changes();
        store.entry(&entry.file_name()).unwrap().unwrap();
        store.action_get("step-key").unwrap().unwrap();
        assert_eq!(store.conn().total_changes(), before + 2);
        let row = db::get_entry(&store.conn(), &entry.file_name()).unwrap().unwrap();
        assert!(db::recently_used(row.last_access, db::now()));
        let (_, action_used) = db::get_action(&store.conn(), "step-key").unwrap().unwrap();
        assert!(db::recently_used(action_used, db::now()));
        // Once refreshed, the next lookups are reads again.
        let before = store.conn().total_changes();
        store.artifact("sha256:abc").unwrap().unwrap();
        store.action_get("step-key").unwrap().unwrap();
        assert_eq!(store.conn().total_changes(), before);
    }

    /// A recent row whose entry vanished from disk is not trusted: the
    /// lookup reports it missing and drops the stale rows.
    #[test]
    fn a_recent_row_without_its_entry_is_dropped() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("home")).unwrap();
        let src = t.path().join("f");
        fs::write(&src, "contents").unwrap();
        let entry = store.add_file(&src, "pkg-1.0", "test").unwrap();
        store.record_artifact("sha256:abc", &entry).unwrap();
        fs::remove_file(&entry.path).unwrap();
        assert_eq!(store.artifact("sha256:abc").unwrap(), None);
        assert!(db::get_entry(&store.conn(), &entry.file_name()).unwrap().is_none());
        assert!(db::artifact_entry(&store.conn(), "sha256:abc").unwrap().is_none());
    }

    /// `artifact` reads the artifact and its entry's row in one query: it
    /// answers as `entry` does, whether the row is there, recent or old, or
    /// missing (the entry on disk is registered again, as `recovered`), and
    /// the cached statements see rows changed after their first use.
    #[test]
    fn artifact_lookup_answers_as_entry_lookup() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("home")).unwrap();
        let src = t.path().join("f");
        fs::write(&src, "contents").unwrap();
        let entry = store.add_file(&src, "pkg-1.0", "test").unwrap();
        store.record_artifact("sha256:abc", &entry).unwrap();
        let by_name = store.entry(&entry.file_name()).unwrap().unwrap();
        assert_eq!(store.artifact("sha256:abc").unwrap().as_ref(), Some(&by_name));
        assert_eq!(by_name.kind, "test");
        let row = db::get_entry(&store.conn(), &entry.file_name()).unwrap().unwrap();
        assert!(row.fetched);

        // An old use is rewritten by the lookup.
        db::set_last_access(&store.conn(), &entry.file_name(), 1000).unwrap();
        assert_eq!(store.artifact("sha256:abc").unwrap().as_ref(), Some(&by_name));
        let row = db::get_entry(&store.conn(), &entry.file_name()).unwrap().unwrap();
        assert!(db::recently_used(row.last_access, db::now()));

        // The entries row gone (the artifact row stays): found on disk again.
        store
            .conn()
            .execute("DELETE FROM entries WHERE file_name = ?1", [entry.file_name()])
            .unwrap();
        let recovered = store.artifact("sha256:abc").unwrap().unwrap();
        assert_eq!(recovered.path, entry.path);
        assert_eq!(recovered.kind, db::RECOVERED_KIND);
        assert_eq!(recovered.size, entry.size);
        assert!(db::get_entry(&store.conn(), &entry.file_name()).unwrap().is_some());
        assert_eq!(store.artifact("sha256:unknown").unwrap(), None);
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::write(&a, "new").unwrap();
        fs::write(&b, "old").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
    }
}
