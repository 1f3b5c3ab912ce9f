//! Adding entries: naming, normalisation, idempotence, atomicity, and the
//! artifact and action tables.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{assert_no_trace, list, payload, write};
use farm_store::{tree_digest, Store, StoreError, STORE_MTIME};

/// Every node under `path` has the store's canonical metadata.
fn assert_normalised(path: &Path) {
    let meta = fs::symlink_metadata(path).unwrap();
    let mode = meta.mode() & 0o7777;
    if meta.file_type().is_symlink() {
        assert_eq!(meta.mtime(), STORE_MTIME, "{}", path.display());
        return;
    }
    assert_eq!(meta.mtime(), STORE_MTIME, "mtime of {}", path.display());
    if meta.is_dir() {
        assert_eq!(mode, 0o555, "{}", path.display());
        for e in fs::read_dir(path).unwrap() {
            assert_normalised(&e.unwrap().path());
        }
    } else {
        assert!(mode == 0o444 || mode == 0o555, "{}: mode {mode:o}", path.display());
    }
}

#[test]
fn add_file_names_the_entry_by_its_digest_and_normalises_it() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let src = t.path().join("tool");
    write(&src, b"#!/bin/sh\n", 0o4750);
    let entry = store.add_file(&src, "tool-1.0", "test").unwrap();

    assert_eq!(entry.path, store.store_dir().join(entry.file_name()));
    assert_eq!(entry.file_name(), format!("{}-tool-1.0", entry.digest.to_hex()));
    assert_eq!(
        tree_digest(&entry.path).unwrap(),
        entry.digest,
        "the name is the digest of what is stored"
    );
    assert_eq!(
        fs::metadata(&entry.path).unwrap().mode() & 0o7777,
        0o555,
        "setuid dropped, x kept"
    );
    assert_eq!(fs::read(&entry.path).unwrap(), b"#!/bin/sh\n");
    assert_eq!(entry.size, 10);
    assert!(src.exists(), "add_file copies");
    assert_normalised(&entry.path);
}

#[test]
fn add_tree_keeps_symlinks_hardlinked_content_and_x_bits() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let src = t.path().join("src");
    payload(&src);
    let entry = store.add_tree(&src, "payload", "test").unwrap();
    assert_eq!(
        entry.digest,
        tree_digest(&src).unwrap(),
        "the copy hashes like the original"
    );
    assert_eq!(
        fs::read_link(entry.path.join("usr/lib/libx.so")).unwrap(),
        Path::new("libx.so.1")
    );
    assert_eq!(
        fs::read_link(entry.path.join("lib64/ld.so")).unwrap(),
        Path::new("/usr/lib/libx.so.1")
    );
    assert_normalised(&entry.path);
    assert!(fs::symlink_metadata(&src).is_ok(), "add_tree copies");
}

#[test]
fn adding_the_same_content_twice_gives_one_entry() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let src = t.path().join("src");
    payload(&src);
    let first = store.add_tree(&src, "payload", "test").unwrap();
    let second = store.add_tree(&src, "payload", "test").unwrap();
    assert_eq!(first, second);
    assert_eq!(list(&store.store_dir()), vec![first.file_name()]);
    assert_eq!(
        list(&store.tmp_dir()),
        Vec::<String>::new(),
        "the loser's staging copy is discarded"
    );
    assert_eq!(store.status().unwrap().entries, 1);
    // Same bytes under another name are another entry (the name is part of it).
    let renamed = store.add_tree(&src, "payload-2", "test").unwrap();
    assert_eq!(renamed.digest, first.digest);
    assert_ne!(renamed.path, first.path);
}

#[test]
fn adopt_moves_files_and_trees_in() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let work = store.temp_dir().unwrap();
    let download = work.path().join("download");
    write(&download, b"bytes", 0o644);
    let file = store.adopt_file(&download, "blob", "test").unwrap();
    assert!(!download.exists(), "adopt_file moves");
    assert_eq!(fs::read(&file.path).unwrap(), b"bytes");

    let out = work.path().join("out");
    payload(&out);
    let expected = tree_digest(&out).unwrap();
    let tree = store.adopt_tree(&out, "out", "output").unwrap();
    assert!(!out.exists(), "adopt_tree moves");
    assert_eq!(tree.digest, expected);
    drop(work);
    assert_eq!(list(&store.tmp_dir()), Vec::<String>::new());
}

#[test]
fn build_entry_is_invisible_until_complete() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let store_dir = store.store_dir();
    let entry = store
        .build_entry("composed", "root", |dir| {
            fs::create_dir(dir.join("bin"))?;
            fs::write(dir.join("bin/sh"), "sh")?;
            fs::set_permissions(dir.join("bin/sh"), fs::Permissions::from_mode(0o700))?;
            assert_eq!(
                list(&store_dir),
                Vec::<String>::new(),
                "nothing appears in store/ while building"
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(list(&store.store_dir()), vec![entry.file_name()]);
    assert_eq!(fs::metadata(entry.path.join("bin/sh")).unwrap().mode() & 0o7777, 0o555);
    assert_normalised(&entry.path);
}

#[test]
fn a_failing_build_leaves_no_trace() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let err = store
        .build_entry("broken", "root", |dir| {
            fs::create_dir(dir.join("half"))?;
            fs::write(dir.join("half/written"), "x")?;
            // Read-only leftovers must not keep the staging directory alive.
            fs::set_permissions(dir.join("half"), fs::Permissions::from_mode(0o555))?;
            anyhow::bail!("the compiler crashed")
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Build { .. }), "{err}");
    assert!(
        err.to_string().contains("broken") && err.to_string().contains("the compiler crashed"),
        "{err}"
    );
    assert_no_trace(&store);
}

#[test]
fn a_special_file_in_a_tree_fails_the_add_and_leaves_no_trace() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let src = t.path().join("src");
    payload(&src);
    nix::unistd::mkfifo(&src.join("usr/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let err = store.add_tree(&src, "with-fifo", "test").unwrap_err();
    assert!(
        err.to_string().contains("usr/fifo") && err.to_string().contains("fifo"),
        "{err}"
    );
    assert_no_trace(&store);
}

#[test]
fn wrong_source_types_and_names_are_refused_with_the_reason() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let err = store.add_file(t.path(), "x", "test").unwrap_err();
    assert!(
        err.to_string().contains("expected a regular file, found a directory"),
        "{err}"
    );
    let f = t.path().join("f");
    write(&f, b"x", 0o644);
    let err = store.add_tree(&f, "x", "test").unwrap_err();
    assert!(
        err.to_string().contains("expected a directory, found a regular file"),
        "{err}"
    );
    let err = store.add_file(&f, "a/b", "test").unwrap_err();
    assert!(matches!(err, StoreError::InvalidName { .. }), "{err}");
    let err = store.add_file(&f, "ok", "Not A Kind").unwrap_err();
    assert!(matches!(err, StoreError::InvalidKind { .. }), "{err}");
    assert_no_trace(&store);
}

#[test]
fn artifacts_map_integrities_to_entries_and_forget_vanished_ones() {
    let t = common::scratch();
    let home = t.path().join("home");
    let store = Store::open(&home).unwrap();
    let f = t.path().join("f");
    write(&f, b"artifact", 0o644);
    let entry = store.add_file(&f, "pkg-1.0.tgz", "npm").unwrap();
    let integrity = "sha512-AAAA";
    assert_eq!(store.artifact(integrity).unwrap(), None);
    store.record_artifact(integrity, &entry).unwrap();
    assert_eq!(store.artifact(integrity).unwrap().as_ref(), Some(&entry));
    // Another handle (another process) sees it too.
    assert_eq!(
        Store::open(&home).unwrap().artifact(integrity).unwrap().as_ref(),
        Some(&entry)
    );

    // Someone deletes the entry behind the store's back.
    fs::remove_file(&entry.path).unwrap();
    assert_eq!(
        store.artifact(integrity).unwrap(),
        None,
        "a vanished path is not an artifact"
    );
    assert_eq!(store.status().unwrap().entries, 0, "its stale rows are dropped");
    let err = store.record_artifact(integrity, &entry).unwrap_err();
    assert!(matches!(err, StoreError::NotInStore { .. }), "{err}");
}

#[test]
fn entry_lookup_by_file_name() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    let f = t.path().join("f");
    write(&f, b"x", 0o644);
    let entry = store.add_file(&f, "x", "test").unwrap();
    assert_eq!(store.entry(&entry.file_name()).unwrap(), Some(entry.clone()));
    let missing = format!("{}-x", "0".repeat(64));
    assert_eq!(store.entry(&missing).unwrap(), None);
    assert!(matches!(
        store.entry("not-an-entry").unwrap_err(),
        StoreError::BadFileName { .. }
    ));
}

#[test]
fn action_cache_round_trips_and_persists() {
    let t = common::scratch();
    let home = t.path().join("home");
    let v = serde_json::json!({"outputs": {"dist": "abc-dist"}, "n": 3});
    {
        let store = Store::open(&home).unwrap();
        assert_eq!(store.action_get("step-1").unwrap(), None);
        store.action_put("step-1", &v).unwrap();
        store
            .action_put("step-1", &serde_json::json!({"replaced": true}))
            .unwrap();
        store.action_put("step-2", &v).unwrap();
    }
    let store = Store::open(&home).unwrap();
    assert_eq!(
        store.action_get("step-1").unwrap(),
        Some(serde_json::json!({"replaced": true}))
    );
    assert_eq!(store.action_get("step-2").unwrap(), Some(v));
    assert_eq!(store.status().unwrap().actions, 2);
}

#[test]
fn status_totals_by_kind() {
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    for (i, kind) in ["npm", "npm", "deb"].iter().enumerate() {
        let f = t.path().join(format!("f{i}"));
        write(&f, &vec![b'x'; 10 * (i + 1)], 0o644);
        store.add_file(&f, &format!("e{i}"), kind).unwrap();
    }
    let s = store.status().unwrap();
    assert_eq!((s.entries, s.bytes), (3, 60));
    assert_eq!(s.by_kind["npm"], (2, 30));
    assert_eq!(s.by_kind["deb"], (1, 30));
}

#[test]
fn open_creates_the_layout_with_a_wal_database() {
    let t = common::scratch();
    let home = t.path().join("a/b/home");
    Store::open(&home).unwrap();
    assert!(home.join("farm.db").is_file());
    for d in ["store", "tmp", "quarantine", "logs"] {
        assert!(home.join(d).is_dir(), "{d}");
    }
    let conn = rusqlite::Connection::open(home.join("farm.db")).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn adopt_from_another_filesystem_copies_then_removes_the_source() {
    use std::os::unix::fs::MetadataExt;
    let t = common::scratch();
    let store = Store::open(t.path().join("home")).unwrap();
    // /dev/shm is a tmpfs, so a rename from it into the store fails with EXDEV.
    let elsewhere = tempfile::tempdir_in("/dev/shm").unwrap();
    assert_ne!(
        fs::metadata(elsewhere.path()).unwrap().dev(),
        fs::metadata(store.root()).unwrap().dev(),
        "this test needs /dev/shm on another filesystem than the temp dir"
    );
    let out = elsewhere.path().join("out");
    payload(&out);
    let expected = tree_digest(&out).unwrap();
    let entry = store.adopt_tree(&out, "out", "output").unwrap();
    assert_eq!(entry.digest, expected);
    assert!(
        fs::symlink_metadata(&out).is_err(),
        "the source is gone after a cross-filesystem adopt"
    );
}
