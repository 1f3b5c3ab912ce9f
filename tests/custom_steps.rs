//! `[[steps]]`: a project's own step runs in the sandbox, is cached, is in
//! the manifest and feeds the app image; bad graphs are refused by name.

mod common;

use std::path::Path;

use common::{farm, run, stderr};
use farm_testkit::{require_tool, shared_farm_home, Registry};

const COMPRESS: &str = r#"
[[steps]]
name = "compress"
inputs = ["step:frontend", "toolchain:python"]
outputs = ["assets"]
image-path = "/app/static"
command = '''
python3 - "$FARM_INPUT_FRONTEND" "$out" <<'PY'
import gzip, os, sys
src, out = sys.argv[1], sys.argv[2]
for d, _, files in sorted(os.walk(src)):
    for f in sorted(files):
        if f.endswith((".js", ".css", ".html")):
            rel = os.path.relpath(os.path.join(d, f), src)
            os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(d, f), "rb") as i, open(os.path.join(out, rel + ".gz"), "wb") as o:
                o.write(gzip.compress(i.read(), 9, mtime=0))
PY
'''
"#;

fn example_with(extra: &str) -> tempfile::TempDir {
    let dir = common::example_copy();
    let toml = dir.path().join("farm.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}\n{extra}")).unwrap();
    dir
}

fn manifest(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.join(".farm/out/farm-manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_custom_step_runs_is_cached_and_feeds_the_app_image() {
    if !require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start();
    common::seed_model(&registry.url);
    let project = example_with(COMPRESS);
    let p = project.path();
    let home = shared_farm_home();
    let mut fetch = farm(p, &home, &["fetch"]);
    fetch.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut fetch).status.success());

    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let m = manifest(p);
    let step = &m["outputs"]["step.compress"];
    assert!(
        step["digest"].as_str().unwrap().starts_with("sha256:"),
        "the step's output is in the manifest: {m}"
    );
    let gz: Vec<_> = std::fs::read_dir(p.join(".farm/out/steps/compress/assets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".js.gz"))
        .collect();
    assert_eq!(gz.len(), 1, "the bundle's script was compressed: {gz:?}");
    let layers: Vec<String> = m["outputs"]["image.app"]["metadata"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        layers,
        ["base", "python-deps", "app", "frontend", "step-compress"],
        "the step feeds the app image"
    );

    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join(".farm/out/farm-metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics["steps"]["compress"]["cached"], true,
        "the step is cached by key"
    );
    assert_eq!(manifest(p)["digest"], m["digest"]);
}

#[test]
fn cycles_and_unknown_references_are_refused_naming_the_steps() {
    let home = tempfile::tempdir().unwrap();
    let cycle = example_with(
        "[[steps]]\nname = \"a\"\ncommand = \"true\"\ninputs = [\"step:b\"]\n\n[[steps]]\nname = \"b\"\ncommand = \"true\"\ninputs = [\"step:a\"]\n",
    );
    let out = run(&mut farm(cycle.path(), home.path(), &["build"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the steps form a cycle: a -> b -> a"),
        "{}",
        stderr(&out)
    );

    let unknown = example_with("[[steps]]\nname = \"a\"\ncommand = \"true\"\ninputs = [\"step:nope\"]\n");
    let out = run(&mut farm(unknown.path(), home.path(), &["build"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("steps.a.inputs") && stderr(&out).contains("\"nope\""),
        "{}",
        stderr(&out)
    );

    let network = example_with("[[steps]]\nname = \"a\"\ncommand = \"true\"\nnetwork = true\n");
    let out = run(&mut farm(network.path(), home.path(), &["build"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("steps.a.network"), "{}", stderr(&out));
}
