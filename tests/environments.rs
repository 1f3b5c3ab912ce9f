//! Build environments, dev builds and clock-free build-time values.

mod common;

use std::path::Path;

use common::{example_copy, farm, run, stdout};
use farm_testkit::{require_tool, shared_farm_home, Registry};

fn fetch(p: &Path) -> bool {
    if !require_tool("docker-registry") {
        return false;
    }
    let registry = Registry::start();
    common::seed_model(&registry.url);
    let mut c = farm(p, &shared_farm_home(), &["fetch"]);
    c.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut c).status.success());
    true
}

fn manifest(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.join(".farm/out/farm-manifest.json")).unwrap()).unwrap()
}

fn bundle_js(p: &Path) -> String {
    let assets = p.join(".farm/out/frontend/assets");
    let mut js = String::new();
    for e in std::fs::read_dir(assets).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "js") {
            js.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    js
}

#[test]
fn environments_change_the_manifest_and_dev_builds_have_sourcemaps() {
    let p = example_copy();
    if !fetch(p.path()) {
        return;
    }
    let home = shared_farm_home();
    assert!(run(&mut farm(p.path(), &home, &["build", "--hermetic", "frontend"]))
        .status
        .success());
    let prod = manifest(p.path());
    assert_eq!(prod["environment"], "production");
    assert_eq!(prod["dev"], false);
    assert!(
        bundle_js(p.path()).contains("production"),
        "the bundle knows its environment"
    );

    assert!(run(&mut farm(
        p.path(),
        &home,
        &["build", "--hermetic", "--env", "staging", "frontend"]
    ))
    .status
    .success());
    let staging = manifest(p.path());
    assert_eq!(staging["environment"], "staging");
    assert_ne!(
        staging["digest"], prod["digest"],
        "the environment is an input of the build"
    );
    assert_ne!(
        staging["outputs"]["frontend"]["digest"],
        prod["outputs"]["frontend"]["digest"]
    );

    let unknown = run(&mut farm(
        p.path(),
        &home,
        &["build", "--hermetic", "--env", "nope", "frontend"],
    ));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(common::stderr(&unknown).contains("[env.nope]"));

    assert!(run(&mut farm(
        p.path(),
        &home,
        &["build", "--hermetic", "--dev", "frontend"]
    ))
    .status
    .success());
    let dev = manifest(p.path());
    assert_eq!(dev["dev"], true, "the manifest marks a dev build");
    let maps = std::fs::read_dir(p.path().join(".farm/out/frontend/assets"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".js.map"))
        .count();
    assert!(maps >= 1, "a dev build has sourcemaps");
    assert!(bundle_js(p.path()).lines().count() > 100, "and is not minified");
}

#[test]
fn builds_at_different_times_give_the_same_bundle_with_the_source_date_timestamp() {
    let p = example_copy();
    if !fetch(p.path()) {
        return;
    }
    let home = shared_farm_home();
    let first = run(&mut farm(
        p.path(),
        &home,
        &["build", "--hermetic", "--no-cache", "frontend"],
    ));
    assert!(first.status.success());
    // The copy is outside git, so SOURCE_DATE_EPOCH is the documented fallback.
    assert!(
        bundle_js(p.path()).contains("1980-01-01T00:00:00Z"),
        "FARM_BUILD_TIMESTAMP comes from SOURCE_DATE_EPOCH"
    );
    let digest = manifest(p.path())["digest"].clone();

    // The same build with farm itself a day in the future.
    if require_tool("faketime") {
        let c = farm(p.path(), &home, &["build", "--hermetic", "--no-cache", "frontend"]);
        let mut wrapped = std::process::Command::new("faketime");
        wrapped.arg("+1 day").arg(c.get_program()).args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        let out = run(&mut wrapped);
        assert!(out.status.success());
        assert_eq!(manifest(p.path())["digest"], digest, "a day later: the same digest");
    }
    // And with the steps' own clock ten years away (farm check's second round).
    let check = run(&mut farm(
        p.path(),
        &home,
        &["check", "--target", "frontend", "--format", "json"],
    ));
    assert_eq!(check.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_str(&stdout(&check)).unwrap();
    assert!(report["rounds"][1]["variation"]["faketime"]
        .as_str()
        .unwrap()
        .starts_with('+'));
    assert_eq!(report["outputs"]["frontend"]["reproducible"], true);
}
