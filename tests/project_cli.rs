//! The CLI on small projects that need no public registry: farm.toml
//! errors, stale locks, a corrupt store, and two fetches at once.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{farm, run, stderr, stdout};
use farm_testkit::{HttpServer, Reply};
use sha2::Digest;

fn write_project(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("farm.toml"),
        format!("[project]\nname = \"t\"\nversion = \"1\"\n{extra}"),
    )
    .unwrap();
}

#[test]
fn unknown_key_in_farm_toml_names_file_line_column_and_allowed_keys() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write_project(p.path(), "[frontend]\npath = \"web\"\noutput-dri = \"dist\"\n");
    let out = run(&mut farm(p.path(), home.path(), &["lock"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("farm.toml:6:1: unknown field `output-dri`"), "{err}");
    assert!(err.contains("output-dir"), "lists the expected keys: {err}");
}

#[test]
fn wrong_type_in_farm_toml_names_position_and_expected_type() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write_project(p.path(), "[toolchains.debian]\npackages = \"git\"\n");
    let out = run(&mut farm(p.path(), home.path(), &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("farm.toml:5:12"), "{err}");
    assert!(
        err.contains("sequence") || err.contains("array"),
        "says a list was expected: {err}"
    );
}

#[test]
fn missing_farm_toml_is_a_clear_error() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = run(&mut farm(p.path(), home.path(), &["lock"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("farm.toml") && stderr(&out).contains("hint"),
        "{}",
        stderr(&out)
    );
}

fn archive(marker: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let body = format!("#!/bin/sh\necho {marker}\n").into_bytes();
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    tar.append_data(&mut h, "bin/ollama", &body[..]).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

fn ollama_section(url: &str, bytes: &[u8], version: &str) -> String {
    format!(
        "[toolchains.ollama]\nversion = \"{version}\"\nurl = \"{url}\"\nsha256 = \"sha256:{}\"\n",
        hex::encode(sha2::Sha256::digest(bytes))
    )
}

#[test]
fn lock_check_names_the_stale_section_and_lock_updates_only_it() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let a = archive("a");
    write_project(p.path(), &ollama_section("http://127.0.0.1:9/o.tgz", &a, "1.0"));
    assert!(run(&mut farm(p.path(), home.path(), &["lock"])).status.success());
    let first = std::fs::read_to_string(p.path().join("farm.lock")).unwrap();
    assert!(
        first.starts_with("# farm.lock") && first.contains("version = 1"),
        "{first}"
    );
    assert!(
        run(&mut farm(p.path(), home.path(), &["lock", "--check"]))
            .status
            .success(),
        "fresh lock passes --check"
    );

    // A second lock with unchanged inputs rewrites nothing.
    assert!(run(&mut farm(p.path(), home.path(), &["lock"])).status.success());
    assert_eq!(std::fs::read_to_string(p.path().join("farm.lock")).unwrap(), first);

    write_project(p.path(), &ollama_section("http://127.0.0.1:9/o.tgz", &a, "1.1"));
    let out = run(&mut farm(p.path(), home.path(), &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(3), "a stale lock is a distinct 'no'");
    assert!(
        stderr(&out).contains("farm.toml#toolchains.ollama changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("farm.lock")).unwrap(),
        first,
        "--check writes nothing"
    );

    assert!(run(&mut farm(p.path(), home.path(), &["lock"])).status.success());
    let second = std::fs::read_to_string(p.path().join("farm.lock")).unwrap();
    assert!(second.contains("version = \"1.1\""), "{second}");
    assert!(run(&mut farm(p.path(), home.path(), &["lock", "--check"]))
        .status
        .success());

    let bad = run(&mut farm(p.path(), home.path(), &["lock", "--update", "no-such-thing"]));
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("no-such-thing"));
}

#[test]
fn corrupt_store_entry_is_reported_quarantined_and_fetched_again() {
    let a = archive("intact");
    let body = a.clone();
    let server = HttpServer::start(move |_, _| Reply::Ok(body.clone()));
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write_project(p.path(), &ollama_section(&format!("{}/o.tgz", server.url), &a, "1.0"));
    assert!(run(&mut farm(p.path(), home.path(), &["lock"])).status.success());
    assert!(run(&mut farm(p.path(), home.path(), &["fetch"])).status.success());
    assert!(
        run(&mut farm(p.path(), home.path(), &["store", "verify"]))
            .status
            .success(),
        "a fresh store verifies"
    );

    let entry = std::fs::read_dir(home.path().join("store"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = entry.join("bin/ollama");
    let dir = file.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&file, "#!/bin/sh\necho tampered\n").unwrap();

    let out = run(&mut farm(p.path(), home.path(), &["store", "verify"]));
    assert_eq!(out.status.code(), Some(3), "corruption is a distinct non-zero exit");
    let name = entry.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr(&out).contains(&name), "names the entry: {}", stderr(&out));
    assert!(!entry.exists(), "the corrupt entry left the store");
    assert!(
        std::fs::read_dir(home.path().join("quarantine")).unwrap().count() >= 1,
        "and sits in quarantine"
    );

    let offline = run(&mut farm(p.path(), home.path(), &["fetch", "--offline"]));
    assert_eq!(offline.status.code(), Some(3), "the lock's artifact is missing again");
    assert!(run(&mut farm(p.path(), home.path(), &["fetch"])).status.success());
    let again = std::fs::read_to_string(entry.join("bin/ollama")).unwrap();
    assert!(again.contains("intact"), "fetched again from the source: {again}");
    assert!(run(&mut farm(p.path(), home.path(), &["store", "verify"]))
        .status
        .success());
}

#[test]
fn two_fetches_at_once_both_succeed_with_one_entry() {
    let a = archive("shared");
    let b = archive("second");
    let (ba, bb) = (a.clone(), b.clone());
    // Slow enough that the two processes overlap.
    let server = HttpServer::start(move |path, _| {
        std::thread::sleep(Duration::from_millis(300));
        Reply::Ok(if path == "/a.tgz" { ba.clone() } else { bb.clone() })
    });
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write_project(p.path(), &ollama_section(&format!("{}/a.tgz", server.url), &a, "1.0"));
    assert!(run(&mut farm(p.path(), home.path(), &["lock"])).status.success());
    let children: Vec<_> = (0..2)
        .map(|_| farm(p.path(), home.path(), &["fetch"]).spawn().unwrap())
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "both fetches succeed");
    }
    let entries = std::fs::read_dir(home.path().join("store")).unwrap().count();
    assert_eq!(entries, 1, "the same artifact is one entry");
    assert_eq!(
        std::fs::read_dir(home.path().join("tmp")).unwrap().count(),
        0,
        "no staging left behind"
    );
    let status = run(&mut farm(p.path(), home.path(), &["cache", "status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(v["entries"], 1);
    assert!(run(&mut farm(p.path(), home.path(), &["store", "verify"]))
        .status
        .success());
}

#[test]
fn gc_keeps_what_the_lock_references() {
    let a = archive("kept");
    let b = archive("dropped");
    let (ba, bb) = (a.clone(), b.clone());
    let server = HttpServer::start(move |path, _| Reply::Ok(if path == "/a.tgz" { ba.clone() } else { bb.clone() }));
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // Fetch b under an old lock, then lock a: b is no longer referenced.
    write_project(p.path(), &ollama_section(&format!("{}/b.tgz", server.url), &b, "0.9"));
    assert!(run(&mut farm(p.path(), home.path(), &["lock"])).status.success());
    assert!(run(&mut farm(p.path(), home.path(), &["fetch"])).status.success());
    write_project(p.path(), &ollama_section(&format!("{}/a.tgz", server.url), &a, "1.0"));
    assert!(run(&mut farm(p.path(), home.path(), &["lock"])).status.success());
    assert!(run(&mut farm(p.path(), home.path(), &["fetch"])).status.success());
    assert_eq!(std::fs::read_dir(home.path().join("store")).unwrap().count(), 2);

    let out = run(&mut farm(p.path(), home.path(), &["cache", "gc", "--max-size", "0"]));
    assert!(out.status.success());
    let left: Vec<String> = std::fs::read_dir(home.path().join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("ollama-1.0"), "the locked archive stays: {left:?}");
    assert!(run(&mut farm(p.path(), home.path(), &["fetch", "--offline"]))
        .status
        .success());

    let out = run(&mut farm(
        p.path(),
        home.path(),
        &["cache", "gc", "--max-size", "0", "--include-locked"],
    ));
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_dir(home.path().join("store")).unwrap().count(),
        0,
        "--include-locked deletes it too"
    );
}

/// The FARM design's target names reach the engine as farm's (`ai` is
/// models, `docker` is images, through `--target`/`-t` or positionally),
/// and an unknown name is a usage error listing the accepted ones.
#[test]
fn design_target_names_are_farm_targets() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write_project(
        p.path(),
        &ollama_section("http://127.0.0.1:9/o.tgz", &archive("a"), "1.0"),
    );
    assert!(run(&mut farm(p.path(), home.path(), &["lock"])).status.success());
    for (args, expected) in [
        (&["build", "-t", "docker"][..], "target images needs a [backend]"),
        (&["build", "docker"][..], "target images needs a [backend]"),
        (
            &["build", "--target", "ai"][..],
            "target Models needs a [models] section",
        ),
    ] {
        let out = run(&mut farm(p.path(), home.path(), args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
    let out = run(&mut farm(p.path(), home.path(), &["build", "--target", "web"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("frontend") && stderr(&out).contains("models"),
        "lists the targets: {}",
        stderr(&out)
    );
}
