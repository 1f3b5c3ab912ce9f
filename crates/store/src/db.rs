//! The store database (`farm.db`, SQLite in WAL mode): which entries exist
//! with their sizes and access times, which lock integrity maps to which
//! entry, and the action cache. The schema is documented in spec/store.md.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

/// Version in `PRAGMA user_version`; bump with a migration when the schema changes.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another process's transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    file_name   TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    last_access INTEGER NOT NULL,
    access_seq  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_access ON entries (access_seq);
CREATE TABLE IF NOT EXISTS artifacts (
    integrity TEXT PRIMARY KEY,
    file_name TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_entry ON artifacts (file_name);
CREATE TABLE IF NOT EXISTS actions (
    key         TEXT PRIMARY KEY,
    outputs     TEXT NOT NULL,
    created     INTEGER NOT NULL,
    last_access INTEGER NOT NULL
);
";

/// Why the database could not be opened (beyond a plain SQLite error).
pub(crate) enum OpenError {
    Sqlite(rusqlite::Error),
    NotWal(String),
    TooNew(i64),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Sqlite(e)
    }
}

pub(crate) fn open(path: &Path) -> Result<Connection, OpenError> {
    // Switching a new database to WAL, and the first transaction after it,
    // can fail with SQLITE_BUSY without consulting the busy handler while
    // another process does the same; so the whole open is retried.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut backoff = Duration::from_millis(1);
    loop {
        match try_open(path) {
            Err(OpenError::Sqlite(e)) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn try_open(path: &Path) -> Result<Connection, OpenError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal(mode));
    }
    // In WAL mode NORMAL never corrupts the database; a power cut may lose the last commit.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::TooNew(version));
    }
    if version < SCHEMA_VERSION {
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(conn)
}

pub(crate) fn write_tx(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    // IMMEDIATE takes the write lock up front (waiting on the busy timeout), so
    // a read-then-write transaction can never fail half-way on lock upgrade.
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One row of `entries`.
#[derive(Clone, Debug)]
pub(crate) struct EntryRow {
    pub file_name: String,
    pub kind: String,
    pub size: u64,
    pub last_access: i64,
    pub access_seq: i64,
    /// A lock artifact (some farm.lock's integrity) maps to this entry:
    /// it was fetched, not made by a build.
    pub fetched: bool,
}

const ENTRY_COLUMNS: &str = "file_name, kind, size, last_access, access_seq, \
     EXISTS (SELECT 1 FROM artifacts WHERE artifacts.file_name = entries.file_name)";

fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok(EntryRow {
        file_name: r.get(0)?,
        kind: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        last_access: r.get(3)?,
        access_seq: r.get(4)?,
        fetched: r.get(5)?,
    })
}

/// Kind given to entries found on disk without a row (their real kind is unknown).
pub(crate) const RECOVERED_KIND: &str = "recovered";

/// Inserts the entry, or marks an existing one as just used. A `recovered`
/// kind is replaced by the caller's.
pub(crate) fn upsert_entry(
    conn: &Connection,
    file_name: &str,
    digest: &str,
    name: &str,
    kind: &str,
    size: u64,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO entries (file_name, digest, name, kind, size, created, last_access, access_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, (SELECT COALESCE(MAX(access_seq), 0) + 1 FROM entries))
         ON CONFLICT (file_name) DO UPDATE SET
             last_access = excluded.last_access,
             access_seq = excluded.access_seq,
             kind = CASE WHEN entries.kind = ?7 THEN excluded.kind ELSE entries.kind END",
        params![file_name, digest, name, kind, size as i64, now, RECOVERED_KIND],
    )?;
    Ok(())
}

/// The row of `file_name`. Like the other lookups, it runs once per entry a
/// command uses (a Debian root is dozens), so its statement comes from the
/// connection's cache: compiling the SQL costs several times running it.
pub(crate) fn get_entry(conn: &Connection, file_name: &str) -> rusqlite::Result<Option<EntryRow>> {
    conn.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE file_name = ?1"))?
        .query_row([file_name], entry_row)
        .optional()
}

/// All entries, least recently used first.
pub(crate) fn all_entries(conn: &Connection) -> rusqlite::Result<Vec<EntryRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY access_seq"))?;
    let rows = stmt.query_map([], entry_row)?;
    rows.collect()
}

/// Forgets an entry and every artifact that points at it.
pub(crate) fn delete_entry(conn: &Connection, file_name: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM artifacts WHERE file_name = ?1", [file_name])?;
    conn.execute("DELETE FROM entries WHERE file_name = ?1", [file_name])?;
    Ok(())
}

/// The entry file name recorded for an artifact, with that entry's row
/// when it has one.
pub(crate) fn artifact_entry(
    conn: &Connection,
    integrity: &str,
) -> rusqlite::Result<Option<(String, Option<EntryRow>)>> {
    // The entry's columns first, as `entry_row` reads them; `fetched` is
    // true by construction (this artifact points at the entry).
    conn.prepare_cached(
        "SELECT entries.file_name, entries.kind, entries.size, entries.last_access, entries.access_seq, 1,
                artifacts.file_name
         FROM artifacts LEFT JOIN entries ON entries.file_name = artifacts.file_name
         WHERE artifacts.integrity = ?1",
    )?
    .query_row([integrity], |r| {
        let row = match r.get::<_, Option<String>>(0)? {
            Some(_) => Some(entry_row(r)?),
            None => None,
        };
        Ok((r.get(6)?, row))
    })
    .optional()
}

pub(crate) fn put_artifact(conn: &Connection, integrity: &str, file_name: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO artifacts (integrity, file_name) VALUES (?1, ?2)
         ON CONFLICT (integrity) DO UPDATE SET file_name = excluded.file_name",
        params![integrity, file_name],
    )?;
    Ok(())
}

/// Drops the artifact row if it still points at `file_name` (not if it was re-recorded meanwhile).
pub(crate) fn delete_artifact(conn: &Connection, integrity: &str, file_name: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM artifacts WHERE integrity = ?1 AND file_name = ?2",
        [integrity, file_name],
    )?;
    Ok(())
}

/// Uses this recent are not written again: a lookup of a recently used entry
/// or action is then a read, not a write transaction. Well under the hour
/// the `[cache]` policy spares (`spare_used_within`), so what a running
/// build uses stays spared for at least 50 minutes after its lookup.
pub(crate) const USE_RESOLUTION: i64 = 10 * 60;

/// Whether a use recorded at `last_access` is recent enough that a use at
/// `now` need not be written (a time in the future, after a clock change, is rewritten).
pub(crate) fn recently_used(last_access: i64, now: i64) -> bool {
    last_access <= now && now - last_access < USE_RESOLUTION
}

/// An action's outputs and when it was last used.
pub(crate) fn get_action(conn: &Connection, key: &str) -> rusqlite::Result<Option<(String, i64)>> {
    conn.prepare_cached("SELECT outputs, last_access FROM actions WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

pub(crate) fn touch_action(conn: &Connection, key: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE actions SET last_access = ?2 WHERE key = ?1", params![key, now])?;
    Ok(())
}

pub(crate) fn put_action(conn: &Connection, key: &str, outputs: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO actions (key, outputs, created, last_access) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (key) DO UPDATE SET outputs = excluded.outputs, last_access = excluded.last_access",
        params![key, outputs, now],
    )?;
    Ok(())
}

/// Removes (or with `dry_run` only counts) actions not used since `cutoff`,
/// except those for which `spare(outputs)` is true. A row used after the
/// listing (its `last_access` moved past `cutoff`) is left alone.
pub(crate) fn prune_actions(
    conn: &mut Connection,
    cutoff: i64,
    dry_run: bool,
    spare: impl Fn(&str) -> bool,
) -> rusqlite::Result<usize> {
    let tx = write_tx(conn)?;
    let stale: Vec<String> = {
        let mut stmt = tx.prepare("SELECT key, outputs FROM actions WHERE last_access < ?1")?;
        let rows = stmt.query_map([cutoff], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut keys = Vec::new();
        for row in rows {
            let (key, outputs) = row?;
            if !spare(&outputs) {
                keys.push(key);
            }
        }
        keys
    };
    if !dry_run {
        for key in &stale {
            tx.execute(
                "DELETE FROM actions WHERE key = ?1 AND last_access < ?2",
                params![key, cutoff],
            )?;
        }
        tx.commit()?;
    }
    Ok(stale.len())
}

/// Removes every action-cache row; entries stay.
pub(crate) fn clear_actions(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM actions", [])
}

pub(crate) fn count_actions(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM actions", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// (kind, count, bytes) for every kind.
pub(crate) fn totals_by_kind(conn: &Connection) -> rusqlite::Result<Vec<(String, u64, u64)>> {
    let mut stmt =
        conn.prepare("SELECT kind, COUNT(*), COALESCE(SUM(size), 0) FROM entries GROUP BY kind ORDER BY kind")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
    })?;
    rows.collect()
}

#[cfg(test)]
pub(crate) fn set_last_access(conn: &Connection, file_name: &str, when: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE entries SET last_access = ?2 WHERE file_name = ?1",
        params![file_name, when],
    )?;
    Ok(())
}
