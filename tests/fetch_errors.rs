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
