//! The reproducibility audit: `farm check` passes on the example app and
//! names each deliberately non-reproducible file of a fixture; `farm verify`
//! and `farm diff` compare against published manifests.

mod common;

use std::path::Path;

use common::{farm, run, stdout};
use farm_testkit::{require_tool, shared_farm_home, Registry};

fn copy(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::copy_tree(from, dir.path(), &["node_modules", "dist", ".farm"]);
    dir
}

fn fetch_example(p: &Path) {
    let registry = Registry::start();
    common::seed_model(&registry.url);
    let mut c = farm(p, &shared_farm_home(), &["fetch"]);
    c.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut c).status.success());
}

#[test]
fn the_example_app_is_reproducible() {
    if !require_tool("docker-registry") {
        return;
    }
    let p = copy(&common::workspace().join("examples/farm-app"));
    fetch_example(p.path());
    let out = run(&mut farm(p.path(), &shared_farm_home(), &["check", "--format", "json"]));
    assert_eq!(out.status.code(), Some(0), "farm check passes on the example app");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["reproducible"], true);
    assert_eq!(report["rounds"].as_array().unwrap().len(), 2);
    for o in ["frontend", "backend", "openapi", "models"] {
        assert_eq!(report["outputs"][o]["reproducible"], true, "{o}");
    }
    assert_eq!(report["rounds"][1]["cpus"], 1, "the second round runs on one CPU");
    assert_eq!(report["rounds"][1]["aslr"], false);
}

#[test]
fn each_kind_of_nondeterminism_is_detected_and_the_file_named() {
    let p = copy(&common::workspace().join("tests/fixtures/unreproducible"));
    let home = shared_farm_home();
    assert!(run(&mut farm(p.path(), &home, &["lock"])).status.success());
    assert!(run(&mut farm(p.path(), &home, &["fetch"])).status.success());
    let out = run(&mut farm(p.path(), &home, &["check", "--format", "json", "--keep"]));
    assert_eq!(out.status.code(), Some(3), "a mismatch has its own exit status");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["reproducible"], false);
    let front = &report["outputs"]["frontend"];
    assert_eq!(front["reproducible"], false);
    assert_eq!(front["step"], "frontend");
    let named: Vec<&str> = front["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    let mut expected = vec![
        "frontend/date.txt",
        "frontend/random.txt",
        "frontend/builddir.txt",
        "frontend/readdir.txt",
    ];
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) > 1 {
        expected.push("frontend/cpus.txt");
    }
    for f in expected {
        assert!(named.contains(&f), "{f} is named among {named:?}");
    }
    assert!(
        !named.contains(&"frontend/stable.txt"),
        "a stable file is not blamed: {named:?}"
    );
    let builddir = front["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "frontend/builddir.txt")
        .unwrap();
    assert!(
        builddir["first_difference"]["offset"].as_u64().unwrap() > 0,
        "a byte offset is given: {builddir}"
    );
    // --keep leaves both trees for inspection.
    for r in 0..2 {
        assert!(p
            .path()
            .join(format!(".farm/check/round-{r}/frontend/date.txt"))
            .is_file());
    }
    // The text report says the same to a person.
    let text = run(&mut farm(p.path(), &home, &["check"]));
    assert_eq!(text.status.code(), Some(3));
    let t = stdout(&text);
    assert!(
        t.contains("NOT REPRODUCIBLE: output frontend (step frontend)") && t.contains("first difference at byte"),
        "{t}"
    );
}

#[test]
fn verify_reproduces_a_published_manifest_and_names_an_edited_output() {
    if !require_tool("docker-registry") {
        return;
    }
    let p = copy(&common::workspace().join("examples/farm-app"));
    fetch_example(p.path());
    let home = shared_farm_home();
    assert!(run(&mut farm(p.path(), &home, &["build", "--hermetic"]))
        .status
        .success());
    let published = tempfile::tempdir().unwrap();
    let good = published.path().join("farm-manifest.json");
    std::fs::copy(p.path().join(".farm/out/farm-manifest.json"), &good).unwrap();

    let out = run(&mut farm(p.path(), &home, &["verify", good.to_str().unwrap()]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "the rebuild reproduces the published manifest"
    );
    assert!(stdout(&out).contains("verified"));

    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    m["outputs"]["frontend"]["digest"] =
        "sha256:0000000000000000000000000000000000000000000000000000000000000000".into();
    let edited = published.path().join("edited.json");
    std::fs::write(&edited, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let out = run(&mut farm(p.path(), &home, &["verify", edited.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(3));
    let t = stdout(&out);
    assert!(t.contains("outputs.frontend"), "names the edited output: {t}");
    assert!(!t.contains("outputs.backend"), "and only it: {t}");

    let same = run(&mut farm(
        p.path(),
        &home,
        &["diff", good.to_str().unwrap(), good.to_str().unwrap()],
    ));
    assert_eq!(same.status.code(), Some(0));
    let differ = run(&mut farm(
        p.path(),
        &home,
        &["diff", good.to_str().unwrap(), edited.to_str().unwrap()],
    ));
    assert_eq!(differ.status.code(), Some(3));
    assert!(stdout(&differ).contains("outputs.frontend"));
}
