//! API types: generated from the backend's OpenAPI schema into the build
//! copy of the frontend; a pydantic change changes them and the bundle, and
//! a stale committed file fails `farm types check` and hermetic builds.

mod common;

use common::{farm, run, shared_farm_home, stderr, Registry};

#[test]
fn a_pydantic_change_changes_the_types_and_the_frontend_and_stale_types_are_refused() {
    let Some(registry) = Registry::start(None) else { return };
    common::seed_model(&registry.url);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    common::copy_tree(
        &common::workspace().join("examples/farm-app"),
        p,
        &["node_modules", "dist", ".farm"],
    );
    let home = shared_farm_home();
    let mut fetch = farm(p, &home, &["fetch"]);
    fetch.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut fetch).status.success());

    assert!(
        run(&mut farm(p, &home, &["types", "check", "--hermetic"]))
            .status
            .success(),
        "the committed types are current"
    );
    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let manifest = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p.join(".farm/out/farm-manifest.json")).unwrap()).unwrap()
    };
    let before = manifest(p);
    assert!(before["outputs"]["api-types"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    let schemas = p.join("apps/api/app/schemas.py");
    let text = std::fs::read_to_string(&schemas).unwrap();
    std::fs::write(
        &schemas,
        text.replacen("    words: int\n", "    words: int\n    tags: list[str] = []\n", 1),
    )
    .unwrap();

    let check = run(&mut farm(p, &home, &["types", "check", "--hermetic"]));
    assert_eq!(check.status.code(), Some(3), "a stale committed file is a 'no'");
    assert!(
        stderr(&check).contains("apps/web/src/api-types.ts"),
        "names the file: {}",
        stderr(&check)
    );
    let build = run(&mut farm(p, &home, &["build", "--hermetic"]));
    assert_eq!(build.status.code(), Some(1), "a hermetic build refuses stale types");
    assert!(
        stderr(&build).contains("apps/web/src/api-types.ts"),
        "{}",
        stderr(&build)
    );

    assert!(run(&mut farm(p, &home, &["types", "sync", "--hermetic"]))
        .status
        .success());
    let types = std::fs::read_to_string(p.join("apps/web/src/api-types.ts")).unwrap();
    assert!(types.contains("  tags?: string[];"), "the new field is typed: {types}");
    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let after = manifest(p);
    assert_ne!(
        after["outputs"]["api-types"]["digest"],
        before["outputs"]["api-types"]["digest"]
    );
    assert_ne!(
        after["outputs"]["frontend"]["digest"], before["outputs"]["frontend"]["digest"],
        "the bundle follows the API"
    );
}
