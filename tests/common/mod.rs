//! Shared pieces of farm's integration tests: running the real binary, a
//! store reused between runs, and real servers on loopback.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn farm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_farm"))
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A store shared by the tests of one machine, so a second run downloads nothing.
pub fn shared_farm_home() -> PathBuf {
    if let Some(p) = std::env::var_os("FARM_TEST_HOME") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    base.join("farm-tests")
}

/// `farm ARGS` in `project` with `farm_home`; the environment is cleaned of
/// anything farm reads so tests don't depend on the developer's shell.
pub fn farm(project: &Path, farm_home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(farm_bin());
    c.arg("--project")
        .arg(project)
        .arg("--farm-home")
        .arg(farm_home)
        .args(args);
    c.env_remove("FARM_PROJECT").env_remove("FARM_HOME").env("CI", "true");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("farm runs");
    eprintln!(
        "$ {:?}\n--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        cmd,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls until something accepts connections on `addr`, or panics at the deadline.
pub fn wait_for_port(addr: SocketAddr, deadline: Duration) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < deadline,
            "nothing listened on {addr} within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a test that needs an external program may skip: only outside CI.
pub fn require_program(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is required in CI (scripts/install-deps installs it)");
        }
        eprintln!("SKIPPED: {name} is not installed (run scripts/install-deps)");
    }
    found
}

/// A real `docker-registry` (distribution) on a free loopback port, with
/// optional htpasswd auth; killed on drop.
pub struct Registry {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(htpasswd: Option<&str>) -> Option<Registry> {
        if !require_program("docker-registry") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth = match htpasswd {
            Some(line) => {
                let f = dir.path().join("htpasswd");
                std::fs::write(&f, format!("{line}\n")).unwrap();
                format!("auth: {{ htpasswd: {{ realm: farm-test, path: {} }} }}\n", f.display())
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog: {{ level: error }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n{auth}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30));
        Some(Registry {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seeds the example's tiny Ollama model into `registry` with the example's own script.
pub fn seed_model(registry: &str) {
    let script = workspace().join("examples/farm-app/models/seed-model.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--registry", registry, "--name", "farm-tiny:latest"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "seed-model.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies a directory tree (files, dirs, symlinks), skipping `skip` names.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let ft = e.file_type().unwrap();
        let dst = to.join(&name);
        if ft.is_dir() {
            copy_tree(&e.path(), &dst, skip);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), dst).unwrap();
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A tiny HTTP/1.1 server on loopback whose response to each request is
/// decided by `respond(path, attempt)`; counts requests per path.
pub struct HttpServer {
    pub url: String,
    pub hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the server does with one request.
pub enum Reply {
    Ok(Vec<u8>),
    Status(u16),
    /// Announces `len` bytes, sends `body`, closes.
    Truncated {
        len: usize,
        body: Vec<u8>,
    },
    /// Sends headers, then stalls for this long before the body.
    Stall {
        body: Vec<u8>,
        wait: Duration,
    },
}

impl HttpServer {
    pub fn start(respond: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> HttpServer {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> = Default::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let respond = std::sync::Arc::new(respond);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        let (h, respond, s) = (h.clone(), respond.clone(), s.clone());
                        std::thread::spawn(move || {
                            let mut buf = Vec::new();
                            let mut chunk = [0u8; 1024];
                            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                                match conn.read(&mut chunk) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            let head = String::from_utf8_lossy(&buf).into_owned();
                            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                            let attempt = {
                                let mut m = h.lock().unwrap();
                                let c = m.entry(path.clone()).or_insert(0);
                                *c += 1;
                                *c
                            };
                            let write = |conn: &mut TcpStream, status: u16, len: usize, body: &[u8]| {
                                let _ = write!(
                                    conn,
                                    "HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                                );
                                let _ = conn.write_all(body);
                            };
                            match respond(&path, attempt) {
                                Reply::Ok(body) => write(&mut conn, 200, body.len(), &body),
                                Reply::Status(code) => write(&mut conn, code, 0, b""),
                                Reply::Truncated { len, body } => write(&mut conn, 200, len, &body),
                                Reply::Stall { body, wait } => {
                                    let _ = write!(
                                        conn,
                                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                        body.len()
                                    );
                                    let start = Instant::now();
                                    while start.elapsed() < wait && !s.load(Ordering::SeqCst) {
                                        std::thread::sleep(Duration::from_millis(20));
                                    }
                                    let _ = conn.write_all(&body);
                                }
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        HttpServer {
            url: format!("http://{addr}"),
            hits,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Podman Docker-compatible API service with private storage; stopped
/// (containers removed) on drop.
pub struct Podman {
    child: Child,
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn args(&self) -> Vec<String> {
        let d = self.dir.path();
        vec![
            "--storage-driver".into(),
            "vfs".into(),
            "--root".into(),
            d.join("root").display().to_string(),
            "--runroot".into(),
            d.join("run").display().to_string(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--runtime".into(),
            "runc".into(),
        ]
    }

    pub fn start() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Podman {
            child: Command::new("true").spawn().unwrap(),
            dir,
        };
        let sock = p.socket();
        p.child = Command::new("podman")
            .args(p.args())
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "podman's API socket did not appear"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("podman.sock")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.args(self.args());
        c
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-f", "-a"]).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(self.dir.path()).output();
    }
}

/// A copy of the example app (outside git, so its SOURCE_DATE_EPOCH is the
/// documented fallback), fetched into the shared store with its model served
/// by a loopback registry. None when `docker-registry` is missing outside CI.
pub fn fetched_example() -> Option<tempfile::TempDir> {
    let registry = Registry::start(None)?;
    seed_model(&registry.url);
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &workspace().join("examples/farm-app"),
        dir.path(),
        &["node_modules", "dist", ".farm"],
    );
    let mut fetch = farm(dir.path(), &shared_farm_home(), &["fetch"]);
    fetch.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut fetch).status.success(), "fetching the example app");
    Some(dir)
}
