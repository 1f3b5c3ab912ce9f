//! Helpers for farm-images' integration tests: sample trees, image specs,
//! and running the real programs the tests check farm's output with
//! (skopeo, umoci, podman). The registry, Podman's service and the skip
//! mechanism are farm-testkit's.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use farm_images::{ImageSpec, LayerContent, LayerSpec};

/// SOURCE_DATE_EPOCH used by the tests (2023-11-14T22:13:20Z).
pub const EPOCH: i64 = 1_700_000_000;

/// Runs `cmd`, failing the test with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn write(path: &Path, bytes: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Normalises a tree the way farm's store does: 0444/0555 modes, mtime 1.
pub fn normalise(root: &Path) {
    let ts = nix::sys::time::TimeSpec::new(1, 0);
    let meta = fs::symlink_metadata(root).unwrap();
    if meta.is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            normalise(&entry.unwrap().path());
        }
    }
    if !meta.file_type().is_symlink() {
        let mode = if meta.is_dir() || meta.permissions().mode() & 0o111 != 0 {
            0o555
        } else {
            0o444
        };
        fs::set_permissions(root, fs::Permissions::from_mode(mode)).unwrap();
    }
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        root,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Makes a tree writable again so a test can change it.
pub fn make_writable(root: &Path) {
    let meta = fs::symlink_metadata(root).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = meta.permissions().mode() | 0o200;
    fs::set_permissions(root, fs::Permissions::from_mode(mode)).unwrap();
    if meta.is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            make_writable(&entry.unwrap().path());
        }
    }
}

/// Sources for a FARM-like image: a busybox base, Python deps, the app, the
/// frontend; each a separate store-like tree under `root`.
pub struct Sources {
    pub base: PathBuf,
    pub deps: PathBuf,
    pub app: PathBuf,
    pub frontend: PathBuf,
}

pub fn sources(root: &Path) -> Sources {
    let base = root.join("base");
    // A runnable base: the host's static busybox with the applets the tests use.
    let busybox = fs::read("/bin/busybox").unwrap_or_else(|_| b"#!/bin/sh\necho not busybox\n".to_vec());
    write(&base.join("bin/busybox"), &busybox, 0o755);
    for applet in ["sh", "echo", "cat", "ls", "stat", "id"] {
        symlink("busybox", base.join("bin").join(applet)).unwrap();
    }
    write(
        &base.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n",
        0o644,
    );
    write(&base.join("etc/group"), b"root:x:0:\napp:x:1000:\n", 0o644);
    fs::create_dir_all(base.join("tmp")).unwrap();

    let deps = root.join("deps");
    write(&deps.join("fastapi/__init__.py"), b"__version__ = '0.115.0'\n", 0o644);
    write(&deps.join("fastapi/routing.py"), &b"# routing\n".repeat(2000), 0o644);
    write(
        &deps.join("bin/uvicorn"),
        b"#!/usr/bin/env python3\nprint('uvicorn')\n",
        0o755,
    );

    let app = root.join("app");
    write(
        &app.join("main.py"),
        b"from fastapi import FastAPI\napp = FastAPI()\n",
        0o644,
    );
    write(&app.join("run.sh"), b"#!/bin/sh\necho app\n", 0o755);
    write(&app.join("data/model.txt"), b"weights", 0o644);
    fs::hard_link(app.join("data/model.txt"), app.join("data/model-alias.txt")).unwrap();
    symlink("data/model.txt", app.join("model")).unwrap();

    let frontend = root.join("frontend");
    write(
        &frontend.join("index.html"),
        b"<!doctype html><div id=root></div>\n",
        0o644,
    );
    write(
        &frontend.join("assets/index-abc123.js"),
        &b"console.log('farm');\n".repeat(500),
        0o644,
    );

    for tree in [&base, &deps, &app, &frontend] {
        normalise(tree);
    }
    Sources {
        base,
        deps,
        app,
        frontend,
    }
}

fn content(source: &Path, target: &str, id: u32) -> LayerContent {
    LayerContent {
        source: source.into(),
        target: target.into(),
        uid: id,
        gid: id,
    }
}

/// `farm-app:0.1.0` with four layers ordered by how often they change.
pub fn app_spec(s: &Sources) -> ImageSpec {
    let mut spec = ImageSpec::new("farm-app", "0.1.0", EPOCH);
    spec.layers = vec![
        LayerSpec {
            name: "base".into(),
            contents: vec![content(&s.base, "/", 0)],
        },
        LayerSpec {
            name: "python-deps".into(),
            contents: vec![content(&s.deps, "/usr/local/lib/python3.11/site-packages", 0)],
        },
        LayerSpec {
            name: "app".into(),
            contents: vec![content(&s.app, "/app", 1000)],
        },
        LayerSpec {
            name: "frontend".into(),
            contents: vec![content(&s.frontend, "/app/static", 1000)],
        },
    ];
    spec.config.user = Some("1000:1000".into());
    spec.config.working_dir = Some("/app".into());
    spec.config.env = vec!["PATH=/bin".into(), "PYTHONDONTWRITEBYTECODE=1".into()];
    spec.config.exposed_ports = vec!["8000/tcp".into()];
    spec.config.cmd = vec!["/bin/sh".into(), "-c".into(), "echo hi".into()];
    spec.config.labels = BTreeMap::from([
        ("org.opencontainers.image.title".into(), "farm-app".into()),
        ("dev.farm.example".into(), "yes".into()),
    ]);
    spec.config.volumes = vec!["/data".into()];
    spec.annotations = BTreeMap::from([
        ("org.opencontainers.image.revision".into(), "0123456789abcdef".into()),
        ("org.opencontainers.image.version".into(), "0.1.0".into()),
        (
            "org.opencontainers.image.source".into(),
            "https://example.invalid/farm-app".into(),
        ),
    ]);
    spec
}

/// Every file of a directory tree by relative path, with its bytes.
pub fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().display().to_string(),
                    fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `blobs/sha256/<hex>` of a `sha256:<hex>` digest.
pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Sets the mtime of everything under `root` (symlinks themselves included).
pub fn set_mtimes(root: &Path, secs: i64) {
    let meta = fs::symlink_metadata(root).unwrap();
    if meta.is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            set_mtimes(&entry.unwrap().path(), secs);
        }
    }
    let ts = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        root,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}
