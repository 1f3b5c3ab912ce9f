//! Helpers for farm-images' integration tests: sample trees, image specs,
//! and the real programs the tests check farm's output with (a registry,
//! podman, skopeo, umoci). Each server is killed when its guard drops.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use farm_images::{ImageSpec, LayerContent, LayerSpec};

/// SOURCE_DATE_EPOCH used by the tests (2023-11-14T22:13:20Z).
pub const EPOCH: i64 = 1_700_000_000;

/// Whether `tool` runs. Outside CI a missing tool skips the test loudly; in
/// CI (`CI=true`) it fails, because a skipped check there is a false green.
pub fn have(tool: &str, probe: &[&str], package: &str) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "`{tool}` is required in CI (apt-get install {package})"
        );
        eprintln!("\n*** SKIPPED: `{tool}` not found; apt-get install {package} to run this test ***\n");
    }
    ok
}

/// Whether the tests run as root (umoci unpack and podman's vfs storage need it).
pub fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "this test must run as root in CI"
        );
        eprintln!("\n*** SKIPPED: needs root ***\n");
    }
    root
}

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `docker-registry` (distribution) process on loopback with its own
/// storage, optionally behind htpasswd auth; killed on drop.
pub struct Registry {
    child: Child,
    pub base: String,
    pub host: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start(login: Option<(&str, &str)>) -> Registry {
        let mut dir = tempfile::tempdir().unwrap();
        let auth = match login {
            None => String::new(),
            Some((user, password)) => {
                let line = run(Command::new("htpasswd").args(["-nbB", user, password])).stdout;
                let file = dir.path().join("htpasswd");
                fs::write(&file, line).unwrap();
                format!(
                    "auth: {{ htpasswd: {{ realm: farm-test, path: {} }} }}\n",
                    file.display()
                )
            }
        };
        // The port can be taken between the probe and the registry's bind:
        // then the registry exits and the next port is tried.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog: {{ level: info }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut reg = Registry {
                child,
                base: format!("http://127.0.0.1:{port}"),
                host: format!("127.0.0.1:{port}"),
                dir,
            };
            if reg.wait_ready(port) {
                return reg;
            }
            let log = reg.log();
            assert!(log.contains("address already in use"), "registry did not start:\n{log}");
            dir = std::mem::replace(&mut reg.dir, tempfile::tempdir().unwrap());
        }
        panic!("no free port for the registry in 5 tries");
    }

    /// Polls `GET /v2/` (200, or 401 with auth on) until a deadline.
    fn wait_ready(&mut self, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).is_ok() && (head.ends_with(b" 200") || head.ends_with(b" 401")) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry on port {port} not ready within 20 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

/// Podman with storage of its own under `dir`, so tests share no state.
pub fn podman(dir: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--runtime",
            "runc",
            "--events-backend",
            "file",
        ]);
    cmd
}

/// `podman system service` on a socket of its own; killed on drop.
pub struct PodmanService {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PodmanService {
    pub fn start(dir: &Path) -> PodmanService {
        fs::create_dir_all(dir).unwrap();
        let socket = dir.join("podman.sock");
        let log = dir.join("service.log");
        let out = fs::File::create(&log).unwrap();
        let child = podman(dir)
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut service = PodmanService { child, socket, log };
        service.wait_ready();
        service
    }

    /// Waits for `GET /_ping` to answer `OK` on the socket, with a deadline.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("podman service exited ({status}):\n{}", self.log());
            }
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n");
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("podman service not ready within 30 s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
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
