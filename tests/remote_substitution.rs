//! Store substitution (spec/remote.md) against a real REAPI server
//! (BuildGrid) and a loopback upstream that can be told to 404:
//! `farm cache push` keeps the locked archive in the server, and
//! `farm fetch --remote-cache` takes it from there once upstream is gone,
//! giving the same store entry; without a pushed copy, or with a copy that
//! is not the locked artifact, the fetch fails naming the artifact and
//! why, and stores nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{farm, remote_client, run, stderr};
use farm_remote::{digest_of, BlobData};
use farm_testkit::buildgrid::BuildGrid;
use farm_testkit::{free_port, require_tool, HttpServer, Reply};
use sha2::Digest as _;

/// A tar.gz with one executable, like an Ollama release archive.
fn archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let body = b"#!/bin/sh\necho substituted ollama\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "bin/ollama", &body[..]).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

/// An upstream serving the archive at /ollama.tgz until `gone` is set,
/// then answering 404; a project locking it; FARM_HOMEs made on demand.
struct Case {
    server: HttpServer,
    gone: Arc<AtomicBool>,
    project: tempfile::TempDir,
    good: Vec<u8>,
}

impl Case {
    fn new() -> Case {
        let good = archive();
        let gone = Arc::new(AtomicBool::new(false));
        let (body, g) = (good.clone(), gone.clone());
        let server = HttpServer::start(move |_, _| {
            if g.load(Ordering::SeqCst) {
                Reply::Status(404)
            } else {
                Reply::Ok(body.clone())
            }
        });
        let project = tempfile::tempdir().unwrap();
        let sha = hex::encode(sha2::Sha256::digest(&good));
        std::fs::write(
            project.path().join("farm.toml"),
            format!(
                "[project]\nname = \"t\"\nversion = \"1\"\n[toolchains.ollama]\nversion = \"1.0\"\nurl = \"{}/ollama.tgz\"\nsha256 = \"sha256:{sha}\"\n",
                server.url
            ),
        )
        .unwrap();
        let home = tempfile::tempdir().unwrap();
        let c = Case {
            server,
            gone,
            project,
            good,
        };
        let out = c.farm(home.path(), &["lock"]);
        assert!(out.status.success(), "lock with a pinned sha256: {}", stderr(&out));
        c
    }

    fn farm(&self, home: &Path, args: &[&str]) -> Output {
        let mut cmd = farm(self.project.path(), home, args);
        cmd.env_remove("FARM_REMOTE_CACHE")
            .env_remove("FARM_REMOTE_TOKEN")
            .env("FARM_HTTP_ATTEMPTS", "1")
            .env("FARM_HTTP_BACKOFF_MS", "10");
        run(&mut cmd)
    }

    fn integrity(&self) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&self.good)))
    }
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "farm failed:\n{}", stderr(o));
    stderr(o)
}

/// The store's entries: (file name, bin/ollama's bytes).
fn store_entries(home: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(home.join("store"))
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_else(|_| vec![])
        .into_iter()
        .map(|p: PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p.join("bin/ollama")).unwrap_or_default())
        })
        .collect();
    v.sort();
    v
}

/// A failed fetch left nothing in store/ or tmp/.
fn assert_nothing_stored(home: &Path) {
    for sub in ["store", "tmp"] {
        let d = home.join(sub);
        let n = std::fs::read_dir(&d).map(|r| r.count()).unwrap_or(0);
        assert_eq!(n, 0, "{} must be empty after a refused fetch", d.display());
    }
}

/// `farm cache push` uploads the locked archive (and a second push finds
/// it there); after upstream starts answering 404, `farm fetch
/// --remote-cache` in a fresh FARM_HOME succeeds, says where the archive
/// came from, and gives the same store entry (name and content) as a
/// fetch from upstream did.
#[test]
fn a_pushed_artifact_is_fetched_from_the_remote_cache_when_upstream_404s() {
    if !require_tool("bgd") {
        return;
    }
    let bg = BuildGrid::start();
    let case = Case::new();
    let push_home = tempfile::tempdir().unwrap();
    let err = ok(&case.farm(push_home.path(), &["cache", "push", "--remote-cache", &bg.url]));
    assert!(
        err.contains("pushed 1 artifacts") && err.contains("0 already in the remote cache"),
        "{err}"
    );
    assert_eq!(case.server.hits("/ollama.tgz"), 1, "push downloaded the archive");
    let err = ok(&case.farm(push_home.path(), &["cache", "push", "--remote-cache", &bg.url]));
    assert!(
        err.contains("pushed 0 artifacts") && err.contains("1 already in the remote cache"),
        "{err}"
    );
    assert_eq!(
        case.server.hits("/ollama.tgz"),
        1,
        "a present artifact is not downloaded again"
    );

    let upstream_home = tempfile::tempdir().unwrap();
    ok(&case.farm(upstream_home.path(), &["fetch"]));
    let from_upstream = store_entries(upstream_home.path());
    assert_eq!(from_upstream.len(), 1, "{from_upstream:?}");

    case.gone.store(true, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let o = case.farm(home.path(), &["fetch", "--remote-cache", &bg.url]);
    let err = ok(&o);
    assert!(
        err.contains("ollama 1.0") && err.contains("404") && err.contains("took it from the remote cache"),
        "{err}"
    );
    assert_eq!(store_entries(home.path()), from_upstream, "the same store entry");
    assert_eq!(
        case.server.hits("/ollama.tgz"),
        3,
        "upstream was asked first (push, upstream fetch, this fetch)"
    );
}

/// Upstream 404s and nothing was pushed: the fetch fails naming the
/// artifact, the upstream 404 and that the remote cache does not have it,
/// and stores nothing. A remote cache that cannot be reached is named the
/// same way.
#[test]
fn without_a_pushed_copy_the_error_names_the_artifact_and_both_failures() {
    if !require_tool("bgd") {
        return;
    }
    let bg = BuildGrid::start();
    let case = Case::new();
    case.gone.store(true, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let o = case.farm(home.path(), &["fetch", "--remote-cache", &bg.url]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("ollama 1.0")
            && err.contains(&case.integrity())
            && err.contains("upstream:")
            && err.contains("404")
            && err.contains(&format!("remote cache at {}", bg.url))
            && err.contains("does not have this artifact")
            && err.contains("farm cache push"),
        "{err}"
    );
    assert_nothing_stored(home.path());

    let down = format!("grpc://127.0.0.1:{}", free_port());
    let o = case.farm(home.path(), &["fetch", "--remote-cache", &down]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("ollama 1.0") && err.contains("404") && err.contains("cannot reach the remote cache"),
        "{err}"
    );
    assert_nothing_stored(home.path());
}

/// Attacks on the server's copy, upstream gone: (1) the pushed blob is
/// overwritten in BuildGrid's disk storage — the blob no longer matches its
/// CAS digest and is refused; (2) the ActionCache entry is pointed at
/// another, self-consistent blob of the same size (a tampered archive) —
/// the lock's integrity check refuses it, naming expected and found.
/// Each time the fetch fails naming the artifact and stores nothing.
#[test]
fn a_tampered_copy_in_the_remote_cache_is_refused_and_nothing_is_stored() {
    if !require_tool("bgd") {
        return;
    }
    let bg = BuildGrid::start();
    let case = Case::new();
    let push_home = tempfile::tempdir().unwrap();
    ok(&case.farm(push_home.path(), &["cache", "push", "--remote-cache", &bg.url]));
    case.gone.store(true, Ordering::SeqCst);

    // (2) first, while the stored blob is intact: another blob, same size.
    let mut evil = case.good.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    let (rt, c) = remote_client(&bg.url);
    let integrity = farm_lockfiles::Integrity::parse(&case.integrity()).unwrap();
    let (action, _) = farm_engine::remote_fetch::fetch_action(&integrity);
    let good_result = rt
        .block_on(c.get_action_result(&action))
        .unwrap()
        .expect("push wrote the entry");
    let mut bad = good_result.clone();
    bad.output_files[0].digest = Some(digest_of(&evil));
    rt.block_on(c.upload(vec![(digest_of(&evil), BlobData::Bytes(evil.clone()))]))
        .unwrap();
    rt.block_on(c.update_action_result(&action, bad)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let o = case.farm(home.path(), &["fetch", "--remote-cache", &bg.url]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let found = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&evil)));
    assert!(
        err.contains("ollama 1.0")
            && err.contains("is not the locked artifact")
            && err.contains(&case.integrity())
            && err.contains(&found),
        "{err}"
    );
    assert_nothing_stored(home.path());

    // (1) the entry restored, the pushed blob's bytes overwritten on disk.
    rt.block_on(c.update_action_result(&action, good_result)).unwrap();
    let blob = files(&bg.cas_dir())
        .into_iter()
        .find(|p| std::fs::read(p).unwrap() == case.good)
        .expect("the pushed archive is in BuildGrid's disk storage");
    std::fs::write(&blob, &evil).unwrap();
    let o = case.farm(home.path(), &["fetch", "--remote-cache", &bg.url]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("ollama 1.0") && err.contains("404") && err.contains("wrong content"),
        "{err}"
    );
    assert_nothing_stored(home.path());
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `farm cache push` with no remote cache named anywhere is an error that
/// says how to name one, before anything is downloaded.
#[test]
fn push_without_a_remote_cache_is_an_error() {
    let case = Case::new();
    let home = tempfile::tempdir().unwrap();
    let o = case.farm(home.path(), &["cache", "push"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("farm cache push needs a remote cache") && err.contains("--remote-cache grpc://HOST:PORT"),
        "{err}"
    );
    assert_eq!(case.server.hits("/ollama.tgz"), 0, "nothing was downloaded");
}
