//! Several Store handles (threads) and several processes using one root at
//! once: shared entries are stored once, nothing is lost or half-written,
//! and gc running beside adds leaves disk and database consistent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{list, write};
use farm_store::{GcOptions, Store};

const SHARED: usize = 8;
const UNIQUE: usize = 8;

/// What worker `id` adds: SHARED entries every worker adds identically
/// (they race on the same final paths) and UNIQUE of its own.
fn add_workload(root: &Path, scratch: &Path, id: usize) {
    let store = Store::open(root).unwrap();
    for i in 0..SHARED.max(UNIQUE) {
        if i < SHARED {
            let dir = scratch.join(format!("shared-{id}-{i}"));
            write(&dir.join("bin/tool"), format!("shared tool {i}").as_bytes(), 0o755);
            write(&dir.join("data"), &vec![i as u8; 4096], 0o644);
            let e = store.add_tree(&dir, &format!("shared-{i}"), "test").unwrap();
            store.record_artifact(&format!("sha256:shared-{i}"), &e).unwrap();
        }
        if i < UNIQUE {
            let f = scratch.join(format!("unique-{id}-{i}"));
            write(&f, format!("worker {id} file {i}").as_bytes(), 0o644);
            store.add_file(&f, &format!("unique-{id}-{i}"), "test").unwrap();
        }
    }
}

fn assert_consistent(root: &Path, workers: usize) {
    let store = Store::open(root).unwrap();
    let expected = SHARED + workers * UNIQUE;
    assert_eq!(list(&store.store_dir()).len(), expected, "one entry per distinct tree");
    assert_eq!(store.status().unwrap().entries, expected as u64, "one row per entry");
    assert_eq!(
        list(&store.tmp_dir()),
        Vec::<String>::new(),
        "every staging directory was cleaned up"
    );
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(
        report.reregistered.is_empty() && report.dropped_rows.is_empty(),
        "{report:?}"
    );
    for i in 0..SHARED {
        assert!(store.artifact(&format!("sha256:shared-{i}")).unwrap().is_some());
    }
}

#[test]
fn threads_with_separate_handles_add_at_once() {
    let t = common::scratch();
    let root = t.path().join("home");
    let workers = 4;
    let barrier = Arc::new(Barrier::new(workers));
    let handles: Vec<_> = (0..workers)
        .map(|id| {
            let (root, scratch, barrier) = (root.clone(), t.path().join(format!("scratch-{id}")), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait(); // every thread opens the fresh store at the same moment
                add_workload(&root, &scratch, id);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread panicked");
    }
    assert_consistent(&root, workers);
}

const WORKER_ROOT: &str = "FARM_STORE_TEST_WORKER_ROOT";

/// Not a test on its own: the body of each child process of
/// `processes_add_at_once`, which runs this binary filtered to it.
#[test]
#[ignore = "child process of processes_add_at_once"]
fn worker_process() {
    let root = PathBuf::from(std::env::var_os(WORKER_ROOT).expect("run by processes_add_at_once"));
    let id: usize = std::env::var("FARM_STORE_TEST_WORKER_ID").unwrap().parse().unwrap();
    let go = PathBuf::from(std::env::var_os("FARM_STORE_TEST_WORKER_GO").unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !go.exists() {
        assert!(Instant::now() < deadline, "the parent never created {}", go.display());
        std::thread::sleep(Duration::from_millis(2));
    }
    add_workload(&root, &root.with_file_name(format!("scratch-{id}")), id);
}

#[test]
fn processes_add_at_once() {
    let t = common::scratch();
    let root = t.path().join("home");
    let go = t.path().join("go");
    let workers = 3;
    let children: Vec<_> = (0..workers)
        .map(|id| {
            Command::new(std::env::current_exe().unwrap())
                .args(["worker_process", "--exact", "--ignored", "--test-threads=1", "--quiet"])
                .env(WORKER_ROOT, &root)
                .env("FARM_STORE_TEST_WORKER_ID", id.to_string())
                .env("FARM_STORE_TEST_WORKER_GO", &go)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Release them together, so their opens and adds overlap.
    std::fs::write(&go, "").unwrap();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a worker process failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_consistent(&root, workers);
}

#[test]
fn gc_beside_adds_never_breaks_an_add_or_the_database() {
    let t = common::scratch();
    let root = t.path().join("home");
    Store::open(&root).unwrap();
    let src = t.path().join("src");
    write(&src.join("f"), b"contended", 0o644);
    write(&src.join("g"), b"more", 0o755);
    let expected = farm_store::tree_digest(&src).unwrap();
    let adding = Arc::new(AtomicBool::new(true));
    let started = Arc::new(Barrier::new(2));
    // gc runs with max_size 0 in a loop for as long as the adds go on, so it
    // keeps removing the entry the other thread keeps adding.
    let collector = {
        let (root, adding, started) = (root.clone(), adding.clone(), started.clone());
        std::thread::spawn(move || {
            let store = Store::open(&root).unwrap();
            let mut removed = 0;
            started.wait();
            while adding.load(Ordering::SeqCst) {
                removed += store
                    .gc(&GcOptions {
                        max_size: Some(0),
                        ..GcOptions::default()
                    })
                    .unwrap()
                    .removed
                    .len();
            }
            removed
        })
    };
    let store = Store::open(&root).unwrap();
    started.wait();
    for _ in 0..100 {
        let e = store.add_tree(&src, "contended", "test").unwrap();
        assert_eq!(e.digest, expected);
    }
    adding.store(false, Ordering::SeqCst);
    let removed = collector.join().expect("gc failed while adds ran");
    assert!(removed > 0, "gc never removed the entry, so the race was not exercised");

    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(
        report.reregistered.is_empty() && report.dropped_rows.is_empty(),
        "disk and rows agree: {report:?}"
    );
    assert_eq!(list(&store.tmp_dir()), Vec::<String>::new());
}
