//! `gc` evicts in least-recently-used order and honours the keep set;
//! `verify` finds corruption, quarantines it, and reconciles disk and database.

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{list, write};
use farm_store::{Actual, GcOptions, Store, StoreEntry};

fn add(store: &Store, dir: &std::path::Path, name: &str, bytes: usize) -> StoreEntry {
    let f = dir.join(format!("src-{name}"));
    write(&f, &vec![name.as_bytes()[0]; bytes], 0o644);
    store.add_file(&f, name, "test").unwrap()
}

fn names(v: &[(String, u64)]) -> Vec<&str> {
    v.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn gc_max_size_removes_least_recently_used_first() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let a = add(&store, t.path(), "a", 100);
    let b = add(&store, t.path(), "b", 100);
    let c = add(&store, t.path(), "c", 100);
    store.touch(&a).unwrap(); // use order now: b, c, a

    let report = store
        .gc(&GcOptions {
            max_size: Some(150),
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(names(&report.removed), vec![b.file_name(), c.file_name()]);
    assert_eq!(report.freed, 200);
    assert_eq!(report.remaining, 100);
    assert!(a.path.exists() && !b.path.exists() && !c.path.exists());
    assert_eq!(list(&store.store_dir()), vec![a.file_name()]);
    assert_eq!(
        list(&store.tmp_dir()),
        Vec::<String>::new(),
        "parked entries are deleted"
    );
    assert_eq!(store.status().unwrap().bytes, 100);
}

#[test]
fn gc_honours_the_keep_set_and_reports_it() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let a = add(&store, t.path(), "a", 100);
    let b = add(&store, t.path(), "b", 100);
    let c = add(&store, t.path(), "c", 100);
    let keep = HashSet::from([a.file_name()]);
    let report = store
        .gc(&GcOptions {
            max_size: Some(150),
            keep,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(
        names(&report.removed),
        vec![b.file_name(), c.file_name()],
        "a is oldest but kept"
    );
    assert_eq!(report.kept_referenced, 1);
    assert!(a.path.exists());

    // When the keep set alone is over the limit, gc stops there and says so.
    let report = store
        .gc(&GcOptions {
            max_size: Some(10),
            keep: HashSet::from([a.file_name()]),
            ..GcOptions::default()
        })
        .unwrap();
    assert!(report.removed.is_empty());
    assert_eq!(report.remaining, 100);
}

#[test]
fn gc_dry_run_reports_without_deleting() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let a = add(&store, t.path(), "a", 100);
    let b = add(&store, t.path(), "b", 100);
    let report = store
        .gc(&GcOptions {
            max_size: Some(0),
            dry_run: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(names(&report.removed), vec![a.file_name(), b.file_name()]);
    assert_eq!((report.freed, report.remaining), (200, 0));
    assert!(a.path.exists() && b.path.exists());
    assert_eq!(store.status().unwrap().entries, 2);
}

#[test]
fn gc_removes_artifact_rows_with_their_entry() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let a = add(&store, t.path(), "a", 100);
    store.record_artifact("sha256:aaaa", &a).unwrap();
    store
        .gc(&GcOptions {
            max_size: Some(0),
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(store.artifact("sha256:aaaa").unwrap(), None);
    // Fetching it again works and maps the integrity anew.
    let again = add(&store, t.path(), "a", 100);
    store.record_artifact("sha256:aaaa", &again).unwrap();
    assert_eq!(store.artifact("sha256:aaaa").unwrap(), Some(again));
}

#[test]
fn gc_removes_tmp_leftovers_of_crashed_processes_only() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let crashed = store.tmp_dir().join("add-crashed");
    fs::create_dir_all(crashed.join("entry/sub")).unwrap();
    fs::write(crashed.join("entry/sub/f"), "x").unwrap();
    farm_store::normalise_tree(&crashed.join("entry"), 1).unwrap();
    farm_store::normalise_tree(&crashed, 1).unwrap(); // old and read-only, like a real leftover
    let live = store.temp_dir().unwrap();
    let report = store
        .gc(&GcOptions {
            max_size: Some(u64::MAX),
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(report.stale_tmp_removed, 1);
    assert!(!crashed.exists());
    assert!(live.path().exists(), "a live process's directory stays");
}

/// Makes a file in a read-only entry writable and changes it, as a stray
/// process or bit rot would.
fn corrupt(path: &std::path::Path) {
    let dir = path.parent().unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, "tampered").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).unwrap();
}

#[test]
fn verify_quarantines_a_corrupted_entry_and_forgets_it() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let src = t.path().join("tree");
    common::payload(&src);
    let tree = store.add_tree(&src, "tree", "test").unwrap();
    let file = add(&store, t.path(), "intact", 10);
    store.record_artifact("sha512-tree", &tree).unwrap();

    let clean = store.verify().unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.checked, 2);

    corrupt(&tree.path.join("usr/share/doc/x/README"));
    let report = store.verify().unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.checked, 2);
    assert_eq!(report.corrupt.len(), 1);
    let c = &report.corrupt[0];
    assert_eq!(c.name, tree.file_name());
    assert_eq!(c.expected, tree.digest);
    assert!(
        matches!(c.actual, Actual::Digest(d) if d != tree.digest),
        "{:?}",
        c.actual
    );
    assert_eq!(c.quarantined, store.quarantine_dir().join(tree.file_name()));
    assert_eq!(
        fs::read(c.quarantined.join("usr/share/doc/x/README")).unwrap(),
        b"tampered"
    );
    assert!(!tree.path.exists(), "the corrupt entry left store/");
    assert_eq!(
        store.artifact("sha512-tree").unwrap(),
        None,
        "its artifact row is gone, so fetch refetches"
    );
    assert!(file.path.exists());

    let after = store.verify().unwrap();
    assert!(after.is_clean() && after.checked == 1, "{after:?}");
}

#[test]
fn verify_quarantines_a_corrupted_single_file_entry() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let e = add(&store, t.path(), "blob", 1000);
    fs::set_permissions(&e.path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&e.path, "x").unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.corrupt.len(), 1);
    assert!(store.quarantine_dir().join(e.file_name()).is_file());
    assert_eq!(store.status().unwrap().entries, 0);
}

#[test]
fn verify_reconciles_rows_and_disk() {
    let t = common::scratch();
    let home = t.path().join("home");
    let store = Store::open(&home).unwrap();
    let lost_row = add(&store, t.path(), "lost-row", 10);
    let lost_file = add(&store, t.path(), "lost-file", 20);
    fs::write(store.store_dir().join("junk"), "not an entry").unwrap();
    fs::remove_file(&lost_file.path).unwrap();
    let db = rusqlite::Connection::open(home.join("farm.db")).unwrap();
    db.execute("DELETE FROM entries WHERE file_name = ?1", [lost_row.file_name()])
        .unwrap();

    let report = store.verify().unwrap();
    assert!(report.is_clean());
    assert_eq!(report.reregistered, vec![lost_row.file_name()]);
    assert_eq!(report.dropped_rows, vec![lost_file.file_name()]);
    assert_eq!(report.unrecognised, vec!["junk".to_string()]);
    let status = store.status().unwrap();
    assert_eq!(
        (status.entries, status.bytes),
        (1, 10),
        "the re-registered entry's size is measured"
    );
    assert_eq!(status.by_kind.keys().collect::<Vec<_>>(), vec!["recovered"]);
    // Adding it again restores its kind.
    let again = add(&store, t.path(), "lost-row", 10);
    assert_eq!(again, lost_row);
    assert_eq!(store.status().unwrap().by_kind.keys().collect::<Vec<_>>(), vec!["test"]);
}

/// A pid that belonged to a process which has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A fetch killed mid-download leaves `tmp/work-<pid>-<random>/` holding a
/// half-written `.farm-download-*` file and no lock. `status` counts it as
/// an interrupted download (with its bytes) at once, since its process is
/// gone, while a running download's directory counts as in use; `gc` with
/// no other work to do removes the leftover and keeps the live one.
#[test]
fn interrupted_downloads_are_reported_and_removed_but_live_ones_kept() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let killed = store.tmp_dir().join(format!("work-{}-AbC123", dead_pid()));
    fs::create_dir(&killed).unwrap();
    fs::write(killed.join(".farm-download-XyZ789"), vec![7u8; 12_345]).unwrap();
    let live = store.temp_dir().unwrap();
    fs::write(live.path().join(".farm-download-Live00"), vec![1u8; 999]).unwrap();
    // Unlocked, but its process (this one) runs and it is young: it may be
    // about to be locked, so it stays too.
    let creating = store.tmp_dir().join(format!("work-{}-Young0", std::process::id()));
    fs::create_dir(&creating).unwrap();

    let status = store.status().unwrap();
    assert_eq!(status.tmp.interrupted, 1, "{status:?}");
    assert_eq!(status.tmp.interrupted_bytes, 12_345);
    assert_eq!(status.tmp.in_use, 2, "the live and the just-created directory");

    let dry = store
        .gc(&GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!((dry.stale_tmp_removed, dry.stale_tmp_bytes), (1, 12_345));
    assert!(killed.exists(), "a dry run removes nothing");

    let report = store.gc(&GcOptions::default()).unwrap();
    assert_eq!((report.stale_tmp_removed, report.stale_tmp_bytes), (1, 12_345));
    assert!(report.removed.is_empty());
    assert!(!killed.exists(), "the interrupted download is gone");
    assert!(
        live.path().join(".farm-download-Live00").exists(),
        "a running download stays"
    );
    assert!(creating.exists());
    assert_eq!(store.status().unwrap().tmp.interrupted, 0);
}

/// Staging directories are named after their process, so that a leftover
/// is recognised without waiting for the grace period.
#[test]
fn staging_directories_carry_their_pid() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let d = store.temp_dir().unwrap();
    let name = d.path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("work-{}-", std::process::id())), "{name}");
}
