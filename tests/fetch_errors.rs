//! `farm fetch` against a local HTTP server that misbehaves on purpose:
//! every failure gives the right error or retry, and nothing unverified
//! reaches the store.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{farm, run, stderr};
use farm_testkit::{HttpServer, Reply};
use sha2::Digest;

/// A tar.gz with one executable, like an Ollama release archive.
fn archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let body = b"#!/bin/sh\necho ollama\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "bin/ollama", &body[..]).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

fn project(dir: &Path, url: &str, bytes: &[u8]) {
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    std::fs::write(
        dir.join("farm.toml"),
        format!("[project]\nname = \"t\"\nversion = \"1\"\n[toolchains.ollama]\nversion = \"1.0\"\nurl = \"{url}\"\nsha256 = \"sha256:{sha}\"\n"),
    )
    .unwrap();
}

struct Case {
    project: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Case {
    fn new(server: &HttpServer, good: &[u8]) -> Case {
        let c = Case {
            project: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        };
        project(c.project.path(), &format!("{}/ollama.tgz", server.url), good);
        let out = run(&mut c.farm(&["lock"]));
        assert!(out.status.success(), "lock with a pinned sha256 needs no network");
        c
    }

    fn farm(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = farm(self.project.path(), self.home.path(), args);
        cmd.env("FARM_HTTP_ATTEMPTS", "3")
            .env("FARM_HTTP_BACKOFF_MS", "10")
            .env("FARM_HTTP_READ_TIMEOUT", "1");
        cmd
    }

    /// Nothing in store/ and nothing left in tmp/.
    fn assert_store_empty(&self) {
        for sub in ["store", "tmp"] {
            let d = self.home.path().join(sub);
            let n = std::fs::read_dir(&d).map(|r| r.count()).unwrap_or(0);
            assert_eq!(n, 0, "{} must be empty after a failed fetch", d.display());
        }
    }
}

#[test]
fn wrong_digest_is_refused_naming_artifact_expected_and_actual() {
    let good = archive();
    let server = HttpServer::start(|_, _| Reply::Ok(b"not the archive".to_vec()));
    let case = Case::new(&server, &good);
    let out = run(&mut case.farm(&["fetch"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let expected = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&good)));
    let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"not the archive")));
    assert!(err.contains("ollama 1.0"), "names the artifact: {err}");
    assert!(
        err.contains(&expected) && err.contains(&actual),
        "names expected and actual: {err}"
    );
    assert_eq!(server.hits("/ollama.tgz"), 1, "a digest mismatch is not retried");
    case.assert_store_empty();
}

#[test]
fn truncated_body_is_retried_then_refused() {
    let good = archive();
    let cut = good[..good.len() / 2].to_vec();
    let len = good.len();
    let server = HttpServer::start(move |_, _| Reply::Truncated { len, body: cut.clone() });
    let case = Case::new(&server, &good);
    let out = run(&mut case.farm(&["fetch"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(server.hits("/ollama.tgz"), 3, "each attempt is made");
    assert!(stderr(&out).contains("ollama.tgz"), "{}", stderr(&out));
    case.assert_store_empty();
}

#[test]
fn not_found_fails_at_once_with_the_status() {
    let good = archive();
    let server = HttpServer::start(|_, _| Reply::Status(404));
    let case = Case::new(&server, &good);
    let out = run(&mut case.farm(&["fetch"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    assert_eq!(server.hits("/ollama.tgz"), 1, "404 is final");
    case.assert_store_empty();
}

#[test]
fn server_errors_are_retried_until_success_and_a_second_fetch_is_offline() {
    let good = archive();
    let body = good.clone();
    let server = HttpServer::start(move |_, attempt| {
        if attempt <= 2 {
            Reply::Status(500)
        } else {
            Reply::Ok(body.clone())
        }
    });
    let case = Case::new(&server, &good);
    let out = run(&mut case.farm(&["fetch"]));
    assert!(out.status.success());
    assert_eq!(server.hits("/ollama.tgz"), 3, "two 500s, then the body");
    let entries: Vec<_> = std::fs::read_dir(case.home.path().join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].join("bin/ollama").is_file(),
        "the archive was unpacked into the entry"
    );

    let again = run(&mut case.farm(&["fetch"]));
    assert!(again.status.success());
    assert_eq!(server.total_hits(), 3, "a second fetch does no network I/O");
    let offline = run(&mut case.farm(&["fetch", "--offline"]));
    assert!(offline.status.success());
}

#[test]
fn a_stalled_server_times_out_and_leaves_nothing() {
    let good = archive();
    let body = good.clone();
    let server = HttpServer::start(move |_, _| Reply::Stall {
        body: body.clone(),
        wait: Duration::from_secs(30),
    });
    let case = Case::new(&server, &good);
    let started = std::time::Instant::now();
    let out = run(&mut case.farm(&["fetch"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the read timeout, not the server, ended the fetch"
    );
    assert!(
        stderr(&out).contains("timed out") || stderr(&out).contains("timeout"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.hits("/ollama.tgz"), 3);
    case.assert_store_empty();
    let offline = run(&mut case.farm(&["fetch", "--offline"]));
    assert_eq!(offline.status.code(), Some(3), "--offline reports the artifact missing");
    assert!(stderr(&offline).contains("ollama 1.0"));
}

/// A loopback server whose handler gets each connection after its request
/// head; handlers that stall poll `stop`, which drop sets.
struct RawServer {
    url: String,
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl RawServer {
    fn start(
        handler: impl Fn(&mut std::net::TcpStream, &str, &std::sync::atomic::AtomicBool) + Send + Sync + 'static,
    ) -> RawServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (handler, flag) = (Arc::new(handler), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let (handler, flag) = (handler.clone(), flag.clone());
                std::thread::spawn(move || {
                    let head = read_head(&mut conn);
                    handler(&mut conn, &head, &flag);
                });
            }
        });
        RawServer {
            url: format!("http://{addr}"),
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn read_head(conn: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Zeros until the client hangs up (bounded so a broken client cannot hang the test).
fn endless_body(conn: &mut std::net::TcpStream, stop: &std::sync::atomic::AtomicBool) {
    use std::io::Write;
    if conn
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return;
    }
    let chunk = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    while sent < 4 << 30 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match conn.write(&chunk) {
            Ok(n) if n > 0 => sent += n as u64,
            _ => return,
        }
    }
}

/// Forwards one request to `upstream` (`host:port`) and its whole response back.
fn forward(conn: &mut std::net::TcpStream, head: &str, upstream: &str) {
    use std::io::Write;
    let Ok(mut up) = std::net::TcpStream::connect(upstream) else {
        return;
    };
    // One request per connection: the registry closes after answering.
    let head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let head = head.trim_end().to_string() + "\r\nConnection: close\r\n\r\n";
    if up.write_all(head.as_bytes()).is_err() {
        return;
    }
    let _ = std::io::copy(&mut up, conn);
}

/// A project with the seeded model `farm-tiny:latest` and, optionally, the
/// Ollama toolchain served by `ollama` (URL and bytes).
fn models_project(dir: &Path, ollama: Option<(&str, &[u8])>) {
    let mut toml = String::from(
        "[project]\nname = \"t\"\nversion = \"1\"\n\n[models]\nregistry = \"${FARM_OLLAMA_REGISTRY}\"\nhost = \"models.test.internal\"\nmodels = [\"farm-tiny:latest\"]\n",
    );
    if let Some((url, bytes)) = ollama {
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        toml.push_str(&format!(
            "\n[toolchains.ollama]\nversion = \"1.0\"\nurl = \"{url}\"\nsha256 = \"sha256:{sha}\"\n"
        ));
    }
    std::fs::write(dir.join("farm.toml"), toml).unwrap();
}

/// Every `size = N` the lock pins.
fn locked_sizes(project: &Path) -> Vec<u64> {
    std::fs::read_to_string(project.join("farm.lock"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("size = ")?.parse().ok())
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A registry that streams endless bodies for the model's blobs (its
/// manifests are the real registry's): `farm fetch` stops each blob right
/// after the size farm.lock pins, the error names the model blob, the
/// expected and the observed size, and no blob reaches the store or stays
/// in its tmp/.
#[test]
fn a_model_blob_past_its_locked_size_is_cut_off_and_nothing_kept() {
    if !farm_testkit::require_tool("docker-registry") || !farm_testkit::require_tool("python3") {
        return;
    }
    let registry = farm_testkit::Registry::start();
    common::seed_model(&registry.url);
    let project = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    models_project(project.path(), None);
    let mut lock = farm(project.path(), home.path(), &["lock"]);
    assert!(run(lock.env("FARM_OLLAMA_REGISTRY", &registry.url)).status.success());
    let sizes = locked_sizes(project.path());
    assert!(!sizes.is_empty(), "the lock pins blob sizes");

    let upstream = registry.host.clone();
    let hostile = RawServer::start(move |conn, head, stop| {
        if head.contains("/blobs/") {
            endless_body(conn, stop);
        } else {
            forward(conn, head, &upstream);
        }
    });
    let started = std::time::Instant::now();
    let mut fetch = farm(project.path(), home.path(), &["fetch"]);
    fetch
        .env("FARM_OLLAMA_REGISTRY", &hostile.url)
        .env("FARM_HTTP_ATTEMPTS", "2")
        .env("FARM_HTTP_BACKOFF_MS", "10");
    let out = run(&mut fetch);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the endless bodies did not run on"
    );
    let err = stderr(&out);
    assert!(
        err.contains("fetching farm-tiny:latest sha256:"),
        "names the model blob: {err}"
    );
    let observed: u64 = err
        .split("stopped reading at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("names the observed size: {err}"));
    let expected = sizes
        .iter()
        .copied()
        .find(|n| err.contains(&format!("more than {n} bytes, its expected size")))
        .unwrap_or_else(|| panic!("names a locked size ({sizes:?}) as the expected one: {err}"));
    assert!(
        observed > expected && observed < expected + (1 << 20),
        "stopped right after {expected} bytes, at {observed}"
    );
    // Only the manifest (served by the real registry) may have landed.
    let entries = names_in(&home.path().join("store"));
    assert!(entries.len() <= 1, "{entries:?}");
    let manifest = std::fs::read_to_string(project.path().join("farm.lock")).unwrap();
    for e in &entries {
        let hex = e.rsplit("model-").next().unwrap();
        assert!(
            manifest.contains(&format!("[models.manifest]\ndigest = \"sha256:{hex}\"")),
            "only the manifest is stored, not {e}"
        );
    }
    assert_eq!(
        names_in(&home.path().join("tmp")),
        Vec::<String>::new(),
        "nothing half-written in tmp/"
    );
}

/// `farm fetch` asks for the models registry (here `${FARM_OLLAMA_REGISTRY}`)
/// only when a model blob is missing from the store: with the model
/// fetched, a lock that adds a toolchain fetches without it; in an empty
/// store it is required, and the error says why.
#[test]
fn fetch_needs_the_models_registry_only_when_a_model_must_be_downloaded() {
    if !farm_testkit::require_tool("docker-registry") || !farm_testkit::require_tool("python3") {
        return;
    }
    let registry = farm_testkit::Registry::start();
    common::seed_model(&registry.url);
    let good = archive();
    let body = good.clone();
    let server = HttpServer::start(move |_, _| Reply::Ok(body.clone()));
    let project = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let with_registry = |args: &[&str]| {
        let mut c = farm(project.path(), home.path(), args);
        c.env("FARM_OLLAMA_REGISTRY", &registry.url);
        c
    };
    models_project(project.path(), None);
    assert!(run(&mut with_registry(&["lock"])).status.success());
    assert!(run(&mut with_registry(&["fetch"])).status.success());

    // The app gains a toolchain; the model is unchanged and already stored.
    models_project(project.path(), Some((&format!("{}/ollama.tgz", server.url), &good)));
    assert!(run(&mut with_registry(&["lock"])).status.success());
    let out = run(&mut farm(project.path(), home.path(), &["fetch"]));
    assert!(
        out.status.success(),
        "no model to download, so no registry needed: {}",
        stderr(&out)
    );
    assert_eq!(server.hits("/ollama.tgz"), 1, "the toolchain was fetched");
    let offline = run(&mut farm(project.path(), home.path(), &["fetch", "--offline"]));
    assert!(offline.status.success(), "everything is in the store now");

    let empty = tempfile::tempdir().unwrap();
    let out = run(&mut farm(project.path(), empty.path(), &["fetch"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("FARM_OLLAMA_REGISTRY") && err.contains("models are not all in the store"),
        "{err}"
    );
    assert_eq!(names_in(&empty.path().join("store")), Vec::<String>::new());
    assert_eq!(names_in(&empty.path().join("tmp")), Vec::<String>::new());
}

/// The part file of the download a `farm fetch` is writing, under
/// `tmp/work-<pid>-*/`, once it holds at least `bytes`.
fn part_file(home: &Path, pid: u32, bytes: u64) -> Option<std::path::PathBuf> {
    let tmp = home.join("tmp");
    for dir in names_in(&tmp) {
        if !dir.starts_with(&format!("work-{pid}-")) {
            continue;
        }
        for f in names_in(&tmp.join(&dir)) {
            let p = tmp.join(&dir).join(&f);
            if f.starts_with(".farm-download-") && std::fs::metadata(&p).is_ok_and(|m| m.len() >= bytes) {
                return Some(p);
            }
        }
    }
    None
}

/// A fetch killed with SIGKILL mid-download leaves its half-written file in
/// the store's tmp/. `farm cache status` reports it as an interrupted
/// download (count and bytes) and `farm cache gc` removes it, while the
/// download of a fetch that is still running is kept.
#[test]
fn a_killed_fetch_leaves_an_interrupted_download_that_status_shows_and_gc_removes() {
    use std::io::Write;
    const SENT: u64 = 300_000;
    let server = RawServer::start(|conn, _, stop| {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n";
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&vec![b'x'; SENT as usize]).is_err() {
            return;
        }
        // Then nothing, until the test ends.
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let project = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    crate::project(project.path(), &format!("{}/ollama.tgz", server.url), &archive());
    assert!(run(&mut farm(project.path(), home.path(), &["lock"])).status.success());
    let spawn_fetch = || {
        farm(project.path(), home.path(), &["fetch"])
            .env("FARM_HTTP_READ_TIMEOUT", "600")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };

    let mut killed = spawn_fetch();
    let killed_pid = killed.id();
    let mut part = None;
    let wrote = farm_testkit::wait_until(Duration::from_secs(60), || {
        part = part_file(home.path(), killed_pid, SENT);
        part.is_some()
    });
    assert!(wrote, "the fetch never wrote its partial download");
    killed.kill().unwrap(); // SIGKILL: no destructor runs
    killed.wait().unwrap();
    let part = part.unwrap();
    assert!(part.exists(), "a killed fetch leaves its download behind");

    let mut live = spawn_fetch();
    let live_pid = live.id();
    let mut live_part = None;
    let writing = farm_testkit::wait_until(Duration::from_secs(60), || {
        live_part = part_file(home.path(), live_pid, SENT);
        live_part.is_some()
    });
    assert!(writing, "the second fetch never started its download");

    let status = run(&mut farm(project.path(), home.path(), &["cache", "status", "--json"]));
    assert!(status.status.success());
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["interrupted_downloads"]["count"], 1, "{v}");
    assert_eq!(v["interrupted_downloads"]["bytes"], SENT, "{v}");
    assert_eq!(v["in_progress"], 1, "{v}");
    let table = run(&mut farm(project.path(), home.path(), &["cache", "status"]));
    assert!(
        common::stdout(&table).contains("interrupted downloads: 1 ("),
        "{}",
        common::stdout(&table)
    );

    let gc = run(&mut farm(project.path(), home.path(), &["cache", "gc"]));
    assert!(gc.status.success());
    assert!(
        stderr(&gc).contains("removed 1 interrupted downloads"),
        "{}",
        stderr(&gc)
    );
    assert!(
        !part.exists() && !part.parent().unwrap().exists(),
        "the leftover is gone"
    );
    assert!(
        live_part.as_ref().unwrap().exists(),
        "the running fetch's download is kept"
    );

    live.kill().unwrap();
    live.wait().unwrap();
    let after = run(&mut farm(project.path(), home.path(), &["cache", "status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(
        v["interrupted_downloads"]["count"], 1,
        "now the second one is a leftover too: {v}"
    );
    assert!(run(&mut farm(project.path(), home.path(), &["cache", "gc"]))
        .status
        .success());
    assert_eq!(names_in(&home.path().join("tmp")), Vec::<String>::new());
}

/// farm.toml `[limits] unpack-size` reaches the unpacker: a toolchain
/// archive of 16 MiB of zeros (16 KiB gzipped) is refused under a 1 MiB
/// limit, naming the artifact, the limit and the key to raise, and nothing
/// of it stays in the store or its tmp/; raised, the same archive unpacks.
#[test]
fn the_projects_unpack_limit_stops_an_archive_that_expands_too_far() {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best()));
    let zeros = vec![0u8; 16 << 20];
    let mut h = tar::Header::new_gnu();
    h.set_size(zeros.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "bin/zeros", &zeros[..]).unwrap();
    let bomb = tar.into_inner().unwrap().finish().unwrap();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let body = bomb.clone();
    let server = HttpServer::start(move |_, _| Reply::Ok(body.clone()));
    let project = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    crate::project(project.path(), &format!("{}/ollama.tgz", server.url), &bomb);
    let toml = project.path().join("farm.toml");
    let base = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{base}\n[limits]\nunpack-size = \"1MiB\"\n")).unwrap();
    assert!(run(&mut farm(project.path(), home.path(), &["lock"])).status.success());

    let out = run(&mut farm(project.path(), home.path(), &["fetch"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ollama 1.0"), "names the artifact: {err}");
    assert!(
        err.contains("[limits] unpack-size") && err.contains("1.0 MiB") && err.contains("16777216 bytes"),
        "names the key, the limit and the size reached: {err}"
    );
    assert_eq!(names_in(&home.path().join("store")), Vec::<String>::new());
    assert_eq!(names_in(&home.path().join("tmp")), Vec::<String>::new());

    std::fs::write(
        &toml,
        format!("{base}\n[limits]\nunpack-size = \"32MiB\"\nunpack-ratio = 0\n"),
    )
    .unwrap();
    assert!(run(&mut farm(project.path(), home.path(), &["lock"])).status.success());
    assert!(run(&mut farm(project.path(), home.path(), &["fetch"])).status.success());
}
