//! `farm build --remote-cache` against a real REAPI server (BuildGrid):
//! a second FARM_HOME builds a small project with no step run locally and
//! the same manifest digest; an ActionResult tampered with in the server's
//! ActionCache is detected, reported and the step rebuilt (and the good
//! result restored); a server that is down leaves a local build with a
//! warning; a malformed address is an error before anything is built.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{copy_tree, farm, remote_client, run, stderr, stdout, workspace};
use farm_remote::proto::Tree;
use farm_remote::{digest_of, encode, parse_digest, BlobData};
use farm_testkit::buildgrid::BuildGrid;
use farm_testkit::{free_port, require_tool, shared_farm_home};

/// The fixture (a frontend with no npm packages and one custom step that
/// writes a file, an executable and a symlink), locked, in a temp dir.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&workspace().join("tests/fixtures/remote-cache"), dir.path(), &[]);
    dir
}

/// `farm ARGS` with no remote cache from the caller's environment.
fn farm_rc(p: &Path, home: &Path, args: &[&str]) -> Output {
    let mut c = farm(p, home, args);
    c.env_remove("FARM_REMOTE_CACHE").env_remove("FARM_REMOTE_TOKEN");
    run(&mut c)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "farm failed:\n{}", stderr(o));
    stdout(o).trim().to_string()
}

/// The steps of the last build: name → (cached, remote action).
fn last_build(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.join(".farm/last-build.json")).unwrap()).unwrap()
}

/// One server, two stores. The first builds hermetically (every step run,
/// its result uploaded); the second, after `farm fetch` of the same lock,
/// takes every step from the remote cache — no step line says `built` —
/// and writes the same manifest digest. Then the custom step's result is
/// tampered with in the server's ActionCache, twice: its root digest
/// replaced, and its tree swapped for one whose file has other content.
/// Each time the second store, its local action cache emptied, reports
/// the failed verification, builds the step itself, gets the same digest,
/// and the server holds the good result again.
#[test]
fn a_second_store_builds_from_the_remote_cache_and_a_tampered_result_is_rebuilt() {
    if !require_tool("bgd") {
        return;
    }
    let server = BuildGrid::start();
    let dir = project();
    let p = dir.path();
    let home1 = shared_farm_home();
    ok(&farm_rc(p, &home1, &["fetch"]));
    let first = farm_rc(
        p,
        &home1,
        &["build", "--hermetic", "--no-cache", "--remote-cache", &server.url],
    );
    let digest = ok(&first);
    assert!(digest.starts_with("sha256:"), "{digest}");
    let steps = last_build(p)["steps"].clone();
    let gen_action = steps["gen"]["remote_action"]
        .as_str()
        .unwrap_or_else(|| panic!("the first build stored gen's result: {steps}"))
        .to_string();
    assert!(steps["frontend"]["remote_action"].is_string(), "{steps}");

    let home2 = tempfile::tempdir().unwrap();
    ok(&farm_rc(p, home2.path(), &["fetch"]));
    let second = farm_rc(p, home2.path(), &["build", "--hermetic", "--remote-cache", &server.url]);
    assert_eq!(ok(&second), digest, "the same manifest from the remote cache");
    let err = stderr(&second);
    assert!(!err.contains("] built"), "no step ran in the second store:\n{err}");
    assert!(
        err.contains("[frontend] remote cache hit") && err.contains("[gen] remote cache hit"),
        "{err}"
    );
    let steps = last_build(p)["steps"].clone();
    for s in ["frontend", "gen"] {
        assert_eq!(steps[s]["cached"], true, "{s}: {steps}");
    }
    assert_eq!(steps["gen"]["remote_action"].as_str(), Some(gen_action.as_str()));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join(".farm/out/farm-metrics.json")).unwrap()).unwrap();
    let rc = &metrics["remote_cache"];
    assert_eq!(
        (rc["hits"].as_u64(), rc["misses"].as_u64()),
        (Some(2), Some(0)),
        "{metrics}"
    );
    assert!(rc["bytes_down"].as_u64().unwrap() > 0, "{metrics}");
    let out = p.join(".farm/out/steps/gen");
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "<h1>hi</h1>\n");
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), PathBuf::from("a.txt"));

    let (rt, c) = remote_client(&server.url);
    let action = parse_digest(&gen_action).unwrap();
    let good = rt.block_on(c.get_action_result(&action)).unwrap().unwrap();

    // 1. The output's root digest changed. Read-only, the bad result
    // stays on the server; otherwise the rebuilt step's result replaces it.
    let mut bad = good.clone();
    bad.output_directories[0].root_directory_digest = Some(digest_of(b"not the output"));
    rt.block_on(c.update_action_result(&action, bad.clone())).unwrap();
    rebuilt_after_tampering(p, home2.path(), &server, &digest, "root directory", true);
    assert_eq!(
        rt.block_on(c.get_action_result(&action))
            .unwrap()
            .unwrap()
            .output_directories,
        bad.output_directories,
        "--remote-cache-read-only writes nothing"
    );
    rebuilt_after_tampering(p, home2.path(), &server, &digest, "root directory", false);
    assert_eq!(
        rt.block_on(c.get_action_result(&action))
            .unwrap()
            .unwrap()
            .output_directories,
        good.output_directories
    );

    // 2. A tree whose file has other (uploaded, self-consistent) content.
    let tree_bytes = rt
        .block_on(c.read_blob(good.output_directories[0].tree_digest.as_ref().unwrap()))
        .unwrap();
    let mut tree: Tree = farm_remote::decode(&tree_bytes, "Tree").unwrap();
    let evil = b"<script>evil()</script>\n".to_vec();
    let file = tree
        .root
        .as_mut()
        .unwrap()
        .files
        .iter_mut()
        .find(|f| f.name == "a.txt")
        .unwrap();
    file.digest = Some(digest_of(&evil));
    let (evil_tree, evil_tree_bytes) = encode(&tree);
    rt.block_on(c.upload(vec![
        (digest_of(&evil), BlobData::Bytes(evil.clone())),
        (evil_tree.clone(), BlobData::Bytes(evil_tree_bytes)),
    ]))
    .unwrap();
    let mut bad = good.clone();
    bad.output_directories[0].tree_digest = Some(evil_tree);
    rt.block_on(c.update_action_result(&action, bad)).unwrap();
    rebuilt_after_tampering(p, home2.path(), &server, &digest, "root directory", false);
    assert!(!std::fs::read_to_string(out.join("a.txt")).unwrap().contains("evil"));
    assert_eq!(
        rt.block_on(c.get_action_result(&action))
            .unwrap()
            .unwrap()
            .output_directories,
        good.output_directories
    );
}

/// Empties `home`'s local action cache and builds: gen's remote result
/// fails verification (`why` in the message), gen is built here, the
/// frontend still comes from the remote cache, the manifest is `digest`.
fn rebuilt_after_tampering(p: &Path, home: &Path, server: &BuildGrid, digest: &str, why: &str, read_only: bool) {
    let mut args = vec!["build", "--hermetic", "--clear-cache", "--remote-cache", &server.url];
    if read_only {
        args.push("--remote-cache-read-only");
    }
    let o = farm_rc(p, home, &args);
    assert_eq!(ok(&o), digest, "the rebuilt step gives the same manifest");
    let err = stderr(&o);
    assert!(
        err.contains("the result of step gen") && err.contains("failed verification") && err.contains(why),
        "the tampering is reported:\n{err}"
    );
    assert!(err.contains("[gen] built"), "gen was built here:\n{err}");
    assert!(err.contains("[frontend] remote cache hit"), "{err}");
}

/// Nothing listens at the address (given by FARM_REMOTE_CACHE, and by
/// farm.toml's [remote]): the build warns, naming the address without its
/// credentials, builds every step locally and succeeds.
#[test]
fn a_remote_cache_that_is_down_falls_back_to_a_local_build() {
    let dir = project();
    let p = dir.path();
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut c = farm(p, home.path(), &["build"]);
    c.env("FARM_REMOTE_CACHE", format!("grpc://ci:hunter2@127.0.0.1:{port}"));
    let o = run(&mut c);
    ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the remote cache at grpc://") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        err.contains("remote cache: not used; every step is built here"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "no credentials in messages:\n{err}");
    assert!(err.contains("[frontend] built") && err.contains("[gen] built"), "{err}");

    // The same from farm.toml.
    let toml = p.join("farm.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let port = free_port();
    std::fs::write(
        &toml,
        format!("{text}\n[remote]\ncache = \"grpc://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let o = farm_rc(p, home.path(), &["build", "--no-cache"]);
    ok(&o);
    assert!(
        stderr(&o).contains(&format!("grpc://127.0.0.1:{port}")),
        "{}",
        stderr(&o)
    );
}

/// An address that is not a gRPC address fails the build before any step
/// runs, saying what is wrong and what is expected.
#[test]
fn a_malformed_remote_cache_address_is_an_error() {
    let dir = project();
    let p = dir.path();
    let home = tempfile::tempdir().unwrap();
    for (url, why) in [
        ("http://127.0.0.1:1", "the scheme must be grpc or grpcs"),
        ("grpc://127.0.0.1", "no port"),
    ] {
        let o = farm_rc(p, home.path(), &["build", "--remote-cache", url]);
        assert_eq!(o.status.code(), Some(1), "{url}");
        let err = stderr(&o);
        assert!(
            err.contains(why) && err.contains("hint: use grpc://HOST:PORT"),
            "{url}: {err}"
        );
        assert!(!err.contains("] started"), "no step ran: {err}");
        assert!(!p.join(".farm/out").exists(), "nothing was written");
    }
    let o = farm_rc(p, home.path(), &["build", "--remote-cache-read-only"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("need a remote cache"), "{}", stderr(&o));
}

/// A server that wants a bearer token refuses the one given: the build
/// fails before any step runs, naming the server and the token's
/// variable, without printing the token.
#[test]
fn a_refused_token_is_a_clear_error() {
    if !require_tool("bgd") {
        return;
    }
    let server = BuildGrid::start_with_jwt_secret("farm-test-secret-0123456789abcdef");
    let dir = project();
    let p = dir.path();
    let home = tempfile::tempdir().unwrap();
    let mut c = farm(p, home.path(), &["build", "--remote-cache", &server.url]);
    c.env_remove("FARM_REMOTE_CACHE")
        .env("FARM_REMOTE_TOKEN", "not-a-jwt-s3cr3t");
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&server.url) && err.contains("permission denied") && err.contains("FARM_REMOTE_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("not-a-jwt-s3cr3t"), "the token is not printed: {err}");
    assert!(!err.contains("] started"), "no step ran: {err}");
}

/// `grpcs://` with mutual TLS from farm.toml's `[remote]` (certificate
/// paths relative to the project): a server that requires a client
/// certificate serves a build that gives one (the second store's steps
/// are remote cache hits). Without the client certificate, and trusting
/// another CA, the server is not used and the message says why.
#[test]
fn mutual_tls_from_farm_toml() {
    if !require_tool("bgd") || !require_tool("openssl") {
        return;
    }
    let pki = farm_testkit::pki::Pki::generate("farm-test-ca");
    let other = farm_testkit::pki::Pki::generate("some-other-ca");
    let server = BuildGrid::start_mutual_tls(&pki);
    assert!(server.url.starts_with("grpcs://"));
    let dir = project();
    let p = dir.path();
    std::fs::create_dir(p.join("certs")).unwrap();
    for (from, to) in [
        (pki.ca_cert(), "ca.pem"),
        (pki.client_cert(), "me.pem"),
        (pki.client_key(), "me.key"),
        (other.ca_cert(), "other-ca.pem"),
    ] {
        std::fs::copy(from, p.join("certs").join(to)).unwrap();
    }
    let toml = p.join("farm.toml");
    let base = std::fs::read_to_string(&toml).unwrap();
    let with = |remote: &str| {
        std::fs::write(&toml, format!("{base}\n[remote]\ncache = \"{}\"\n{remote}", server.url)).unwrap()
    };

    with("ca-cert = \"certs/ca.pem\"\nclient-cert = \"certs/me.pem\"\nclient-key = \"certs/me.key\"\n");
    let home1 = tempfile::tempdir().unwrap();
    ok(&farm_rc(p, home1.path(), &["fetch"]));
    let first = farm_rc(p, home1.path(), &["build", "--hermetic"]);
    let digest = ok(&first);
    assert!(
        stderr(&first).contains(&format!("remote cache: {}", server.url)),
        "{}",
        stderr(&first)
    );
    assert!(
        last_build(p)["steps"]["gen"]["remote_action"].is_string(),
        "the result was stored over TLS"
    );
    let home2 = tempfile::tempdir().unwrap();
    ok(&farm_rc(p, home2.path(), &["fetch"]));
    let second = farm_rc(p, home2.path(), &["build", "--hermetic"]);
    assert_eq!(ok(&second), digest);
    assert!(
        stderr(&second).contains("[gen] remote cache hit"),
        "{}",
        stderr(&second)
    );

    // No client certificate, or a server certificate from a CA not
    // trusted: a configuration error, before any step runs, naming the
    // server and pointing at the TLS files.
    for remote in [
        "ca-cert = \"certs/ca.pem\"\n",
        "ca-cert = \"certs/other-ca.pem\"\nclient-cert = \"certs/me.pem\"\nclient-key = \"certs/me.key\"\n",
    ] {
        with(remote);
        let o = farm_rc(p, home2.path(), &["build", "--hermetic", "--clear-cache"]);
        assert_eq!(o.status.code(), Some(1), "{remote}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&server.url) && err.contains("hint: check the TLS files"),
            "{remote}: {err}"
        );
        assert!(!err.contains("] started"), "no step ran: {err}");
    }
}
