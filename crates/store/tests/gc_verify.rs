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
