//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use farm_store::Store;

/// A temporary directory that is deleted even when it holds read-only store
/// entries (TempDir alone cannot, unless the tests run as root).
pub struct Scratch(Option<tempfile::TempDir>);

pub fn scratch() -> Scratch {
    Scratch(Some(tempfile::tempdir().unwrap()))
}

impl Scratch {
    pub fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        fn writable(p: &Path) {
            let Ok(meta) = fs::symlink_metadata(p) else { return };
            if meta.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
                for e in fs::read_dir(p).into_iter().flatten().flatten() {
                    writable(&e.path());
                }
            }
        }
        if let Some(t) = self.0.take() {
            writable(t.path());
        }
    }
}

/// Runs an external tool (tar, dpkg-deb, ar, …) and fails the test with its stderr if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see .ci/run)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn write(path: &Path, contents: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A small root-filesystem-like tree with everything the store must keep:
/// an executable, plain files, a hardlink, relative and absolute symlinks,
/// an empty directory and a path longer than ustar's 100-byte name field.
pub fn payload(root: &Path) {
    write(&root.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    write(
        &root.join("usr/lib/libx.so.1"),
        &[0x7f, b'E', b'L', b'F', 0, 1, 2, 3],
        0o644,
    );
    symlink("libx.so.1", root.join("usr/lib/libx.so")).unwrap();
    fs::create_dir_all(root.join("lib64")).unwrap();
    symlink("/usr/lib/libx.so.1", root.join("lib64/ld.so")).unwrap();
    write(
        &root.join("usr/share/doc/x/README"),
        "readme\n".repeat(1000).as_bytes(),
        0o644,
    );
    let long = format!("usr/share/{}/{}", "d".repeat(60), "f".repeat(80));
    write(&root.join(long), b"long name", 0o600);
    fs::create_dir_all(root.join("var/empty")).unwrap();
}

/// Names directly under a directory, sorted.
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Nothing under store/ or tmp/ and no rows: what a failed add must leave.
pub fn assert_no_trace(store: &Store) {
    assert_eq!(list(&store.store_dir()), Vec::<String>::new(), "store/ must stay empty");
    assert_eq!(list(&store.tmp_dir()), Vec::<String>::new(), "tmp/ must be cleaned up");
    assert_eq!(store.status().unwrap().entries, 0, "no database rows");
}
