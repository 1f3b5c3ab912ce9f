//! The FARM design's build command lines, typed as written, on the example
//! app: `--target`/`-t` and the `ai` name, `--clear-cache`, `--profile`
//! without a value, `farm analyze bundle`, and the summary after a build.
//!
//! The tests share the farm-tests store, and `--clear-cache` empties its
//! action cache, so they run one at a time.

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::{farm, fetched_example, run, stderr, stdout};
use farm_testkit::shared_farm_home;

/// One test at a time: `--clear-cache` empties the shared action cache.
static SERIAL: Mutex<()> = Mutex::new(());

fn build(project: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build", "--hermetic"];
    all.extend_from_slice(args);
    let out = run(&mut farm(project, &shared_farm_home(), &all));
    assert!(out.status.success(), "farm {all:?}");
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn outputs(project: &Path) -> Vec<String> {
    json(&project.join(".farm/out/farm-manifest.json"))["outputs"]
        .as_object()
        .unwrap()
        .keys()
        // The SBOMs of what was built are there whatever the targets (spec/attestations.md).
        .filter(|k| !k.starts_with("sbom."))
        .cloned()
        .collect()
}

/// `--target frontend`, `-t frontend -t ai` and positional targets build
/// exactly those, and the summary names them with artifacts, size,
/// duration and cache hits and misses (also in farm-metrics.json); `-q`
/// silences it.
#[test]
fn target_flags_build_only_those_targets_and_the_summary_says_what_was_built() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(app) = fetched_example() else { return };
    let p = app.path();

    let out = build(p, &["--target", "frontend"]);
    assert_eq!(outputs(p), ["frontend"], "only the frontend in the manifest");
    let metrics = json(&p.join(".farm/out/farm-metrics.json"));
    assert_eq!(metrics["targets"], serde_json::json!(["frontend"]));
    assert_eq!(metrics["artifacts"], 1);
    let size = json(&p.join(".farm/out/farm-manifest.json"))["outputs"]["frontend"]["size"].clone();
    assert_eq!(metrics["artifacts_bytes"], size, "the artifacts' total size");
    let steps = metrics["steps"].as_object().unwrap().len() as u64;
    assert_eq!(
        metrics["cache_hits"].as_u64().unwrap() + metrics["cache_misses"].as_u64().unwrap(),
        steps,
        "every step is a hit or a miss: {metrics}"
    );
    let err = stderr(&out);
    let summary = err
        .lines()
        .find(|l| l.starts_with("built frontend in "))
        .unwrap_or_else(|| panic!("a summary line: {err}"));
    assert!(
        summary.contains("s: 1 artifact, ") && summary.contains("; cache: "),
        "{summary}"
    );
    assert!(summary.contains(&format!("{} hit", metrics["cache_hits"])), "{summary}");

    build(p, &["-t", "frontend", "-t", "ai"]);
    assert_eq!(outputs(p), ["frontend", "models"], "ai is the models target");
    let metrics = json(&p.join(".farm/out/farm-metrics.json"));
    assert_eq!(metrics["artifacts"], 2);

    build(p, &["models", "--target", "frontend"]);
    assert_eq!(outputs(p), ["frontend", "models"], "positional and --target together");

    let quiet = build(p, &["-q", "-t", "frontend"]);
    assert!(
        !stderr(&quiet).contains("built frontend"),
        "-q prints no summary: {}",
        stderr(&quiet)
    );
    assert!(stdout(&quiet).trim().starts_with("sha256:"), "stdout keeps the digest");
}

/// Bare `--profile` writes a trace to .farm/profile.json and never takes
/// the following target as its file; `--profile=FILE` writes FILE.
#[test]
fn profile_alone_writes_the_default_trace_and_never_takes_a_target() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(app) = fetched_example() else { return };
    let p = app.path();

    build(p, &["--profile", "frontend"]);
    assert_eq!(
        outputs(p),
        ["frontend"],
        "`frontend` was the target, not the trace file"
    );
    assert!(!p.join("frontend").exists() && !common::workspace().join("frontend").exists());
    let trace = json(&p.join(".farm/profile.json"));
    let events = trace["traceEvents"].as_array().expect("a Chrome trace");
    assert!(
        events.iter().any(|e| e["name"] == "frontend" && e["ph"] == "X"),
        "the frontend step is a complete event: {trace}"
    );
    assert!(events.iter().all(|e| e["ts"].is_u64() && e["dur"].is_u64()));

    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("trace.json");
    build(p, &["-t", "frontend", &format!("--profile={}", file.display())]);
    assert!(json(&file)["traceEvents"].is_array(), "--profile=FILE writes FILE");
}

/// `--clear-cache` empties the action cache before building (a row put
/// there by this test is gone and the frontend step runs again) and keeps
/// the store: everything farm.lock pins is still present.
#[test]
fn clear_cache_empties_the_action_cache_keeps_the_locked_store_and_reruns() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(app) = fetched_example() else { return };
    let p = app.path();
    let home = shared_farm_home();
    build(p, &["-t", "frontend"]);

    let marker = format!("farm-cli-test-{}", std::process::id());
    {
        let store = farm_store::Store::open(&home).unwrap();
        store
            .action_put(&marker, &serde_json::json!({"entry": "none"}))
            .unwrap();
        assert!(store.action_get(&marker).unwrap().is_some());
    }
    let out = build(p, &["--clear-cache", "-t", "frontend"]);
    assert!(stderr(&out).contains("emptied the action cache ("), "{}", stderr(&out));
    let store = farm_store::Store::open(&home).unwrap();
    assert!(
        store.action_get(&marker).unwrap().is_none(),
        "the action cache was emptied"
    );
    assert!(store.status().unwrap().actions > 0, "and filled again by the build");
    let metrics = json(&p.join(".farm/out/farm-metrics.json"));
    assert_eq!(metrics["steps"]["frontend"]["cached"], false, "the step ran again");
    assert_eq!(
        metrics["cache_hits"], 0,
        "nothing came from the emptied cache: {metrics}"
    );

    let offline = run(&mut farm(p, &home, &["fetch", "--offline"]));
    assert!(
        offline.status.success(),
        "every locked artifact is still in the store: {}",
        stderr(&offline)
    );
}

/// `farm analyze bundle` prints the bundle report of the last build and
/// writes its files; `farm analyze` stays the same command.
#[test]
fn analyze_bundle_prints_the_report_and_analyze_is_its_alias() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(app) = fetched_example() else { return };
    let p = app.path();
    let home = shared_farm_home();
    build(p, &["-t", "frontend"]);

    let bundle = run(&mut farm(p, &home, &["analyze", "bundle"]));
    assert!(bundle.status.success());
    let table = stdout(&bundle);
    assert!(table.starts_with("file ") && table.contains("gzip"), "{table}");
    assert!(table.contains("assets/index-") && table.contains("total ("), "{table}");
    assert!(p.join(".farm/out/bundle-report.html").is_file());
    let report = json(&p.join(".farm/out/bundle-report.json"));
    assert!(report["totals"]["bytes"].as_u64().unwrap() > 0, "{report}");

    let alias = run(&mut farm(p, &home, &["analyze"]));
    assert!(alias.status.success());
    assert_eq!(stdout(&alias), table, "`farm analyze` is `farm analyze bundle`");

    let as_json = run(&mut farm(p, &home, &["analyze", "bundle", "--json"]));
    assert!(as_json.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&as_json.stdout).unwrap();
    assert_eq!(printed, report);

    let unknown = run(&mut farm(p, &home, &["analyze", "images"]));
    assert_eq!(unknown.status.code(), Some(2), "only known reports");
}
