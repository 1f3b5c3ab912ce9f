//! `farm build` of the example app: hermetic builds are reproducible across
//! stores and project paths, the action cache skips what did not change,
//! failures keep the previous output, and bundle limits and reports work.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{example_copy, farm, run, stderr, stdout};
use farm_testkit::{require_tool, shared_farm_home, Registry};

/// A second store, also kept between runs, for the cross-store comparison.
fn other_farm_home() -> PathBuf {
    let mut p = shared_farm_home();
    p.set_file_name("farm-tests-other-home");
    p
}

fn fetch(project: &Path, home: &Path) {
    let registry = Registry::start();
    common::seed_model(&registry.url);
    let mut c = farm(project, home, &["fetch"]);
    c.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut c).status.success(), "fetch");
}

fn build(project: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    run(&mut farm(project, home, &all))
}

fn manifest(project: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(project.join(".farm/out/farm-manifest.json")).unwrap()).unwrap()
}

fn metrics(project: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(project.join(".farm/out/farm-metrics.json")).unwrap()).unwrap()
}

fn cached(project: &Path, step: &str) -> bool {
    metrics(project)["steps"][step]["cached"].as_bool().unwrap()
}

/// A marker no earlier run wrote (the store and its action cache outlive runs).
fn unique() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", t.as_nanos(), std::process::id())
}

fn have_registry() -> bool {
    require_tool("docker-registry")
}

#[test]
fn hermetic_build_is_reproducible_across_stores_and_paths_and_cached() {
    if !have_registry() {
        return;
    }
    let a = example_copy();
    let b = example_copy();
    let (home_a, home_b) = (shared_farm_home(), other_farm_home());
    fetch(a.path(), &home_a);
    fetch(b.path(), &home_b);

    let out_a = build(a.path(), &home_a, &["--hermetic", "--no-cache"]);
    assert!(out_a.status.success());
    let out_b = build(b.path(), &home_b, &["--hermetic", "--no-cache"]);
    assert!(out_b.status.success());
    let (ma, mb) = (manifest(a.path()), manifest(b.path()));
    assert_eq!(ma["hermetic"], true);
    assert_eq!(
        ma["digest"], mb["digest"],
        "same commit, other store and path: same manifest digest"
    );
    assert_eq!(
        stdout(&out_a).trim(),
        ma["digest"].as_str().unwrap(),
        "the build prints the manifest digest"
    );
    // pip ran from its prepared entry (unpacked, bytecode compiled), not the wheel.
    let ready: Vec<PathBuf> = std::fs::read_dir(home_b.join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-ready") && p.to_string_lossy().contains("-pip-"))
        .collect();
    assert_eq!(ready.len(), 1, "one prepared pip in the store: {ready:?}");
    let pycache = ready[0].join("pip/__pycache__");
    assert!(
        std::fs::read_dir(&pycache).map_or(0, |d| d.count()) > 0,
        "the prepared pip holds bytecode in {}",
        pycache.display()
    );
    let manifest_bytes = |p: &Path| std::fs::read(p.join(".farm/out/farm-manifest.json")).unwrap();
    assert_eq!(
        manifest_bytes(a.path()),
        manifest_bytes(b.path()),
        "byte-identical manifests"
    );
    for (name, _) in ma["outputs"].as_object().unwrap() {
        assert!(ma["outputs"][name]["digest"].as_str().unwrap().starts_with("sha256:"));
    }
    assert_eq!(
        ma["outputs"]["openapi"]["metadata"]["endpoints"], 4,
        "GET /health, GET /api/models, GET+POST /api/notes"
    );
    assert!(a.path().join(".farm/out/frontend/index.html").is_file());
    assert!(a.path().join(".farm/out/models/ai-config.json").is_file());
    let ai = std::fs::read_to_string(a.path().join(".farm/out/models/ai-config.json")).unwrap();
    assert!(
        !ai.contains("apiKey") && ai.contains("farm-tiny"),
        "secrets stripped, the rest kept: {ai}"
    );
    let pyc_paths = Command::new("grep")
        .args(["-rl", "--include=*.pyc", a.path().to_str().unwrap()])
        .arg(a.path().join(".farm/out/backend"))
        .output()
        .unwrap();
    assert!(
        stdout(&pyc_paths).is_empty(),
        "no .pyc names the build machine's project path"
    );

    // A no-op rebuild runs no step (and --profile writes a Chrome trace of the steps).
    let trace = a.path().join("trace.json");
    let profile = format!("--profile={}", trace.display());
    let again = build(a.path(), &home_a, &["--hermetic", &profile]);
    assert!(again.status.success());
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let names: Vec<&str> = t["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for step in ["backend", "frontend", "models"] {
        assert!(names.contains(&step), "{step} is in the trace: {names:?}");
    }
    assert!(
        t["traceEvents"].as_array().unwrap().iter().all(|e| e["ph"] == "X"),
        "complete events Perfetto reads"
    );
    for step in ["backend", "frontend", "models"] {
        assert!(cached(a.path(), step), "{step} came from the action cache");
    }
    assert_eq!(manifest(a.path())["digest"], ma["digest"]);

    // A backend edit re-runs only the backend; the frontend is untouched.
    let main_py = a.path().join("apps/api/app/main.py");
    let mut text = std::fs::read_to_string(&main_py).unwrap();
    // Unique, so the shared store's action cache has never seen this source.
    text.push_str(&format!("\n# an edit {}\n", unique()));
    std::fs::write(&main_py, text).unwrap();
    let edited = build(a.path(), &home_a, &["--hermetic"]);
    assert!(edited.status.success());
    assert!(!cached(a.path(), "backend"), "the backend re-ran");
    assert!(
        cached(a.path(), "frontend") && cached(a.path(), "models"),
        "nothing else did"
    );
    let me = manifest(a.path());
    assert_eq!(me["outputs"]["frontend"]["digest"], ma["outputs"]["frontend"]["digest"]);
    assert_ne!(me["outputs"]["backend"]["digest"], ma["outputs"]["backend"]["digest"]);
    assert_ne!(me["digest"], ma["digest"]);
}

#[test]
fn failing_steps_show_their_log_and_keep_the_previous_output() {
    if !have_registry() {
        return;
    }
    let p = example_copy();
    let home = shared_farm_home();
    fetch(p.path(), &home);
    assert!(build(p.path(), &home, &["--hermetic"]).status.success());
    let good = std::fs::read(p.path().join(".farm/out/farm-manifest.json")).unwrap();

    // A Python import error in the app.
    let main_py = p.path().join("apps/api/app/main.py");
    let original = std::fs::read_to_string(&main_py).unwrap();
    std::fs::write(&main_py, format!("import no_such_module_farm\n{original}")).unwrap();
    let out = build(p.path(), &home, &["--hermetic"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("step backend failed"), "{err}");
    assert!(
        err.contains("No module named 'no_such_module_farm'"),
        "the log excerpt shows the cause: {err}"
    );
    assert!(err.contains("full log: "), "{err}");
    assert_eq!(
        std::fs::read(p.path().join(".farm/out/farm-manifest.json")).unwrap(),
        good,
        "previous output intact"
    );
    let log = run(&mut farm(p.path(), &home, &["log", "backend"]));
    assert!(
        log.status.success() && stdout(&log).contains("no_such_module_farm"),
        "farm log shows the whole log"
    );
    std::fs::write(&main_py, original).unwrap();

    // A frontend build error.
    let app = p.path().join("apps/web/src/App.jsx");
    let original = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{original}\nexport const broken = <div>;\n")).unwrap();
    let out = build(p.path(), &home, &["--hermetic", "frontend"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("step frontend failed"), "{err}");
    assert!(err.contains("App.jsx"), "the excerpt names the broken file: {err}");
    assert_eq!(
        std::fs::read(p.path().join(".farm/out/farm-manifest.json")).unwrap(),
        good,
        "previous output intact"
    );
    let leftovers: Vec<_> = std::fs::read_dir(p.path().join(".farm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".new-") || n.contains(".old-"))
        .collect();
    assert!(leftovers.is_empty(), "no staging directories left: {leftovers:?}");
}

#[test]
fn size_limit_and_bundle_report() {
    if !have_registry() {
        return;
    }
    let p = example_copy();
    let home = shared_farm_home();
    fetch(p.path(), &home);
    let out = build(p.path(), &home, &["--hermetic", "frontend", "--size-limit", "10KiB"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("over the --size-limit"), "{err}");
    assert!(
        err.contains("assets/index-") && err.contains(".js"),
        "names the largest chunk: {err}"
    );
    assert!(
        !p.path().join(".farm/out").exists(),
        "a failed build writes no output directory"
    );

    let out = build(
        p.path(),
        &home,
        &["--hermetic", "frontend", "--size-limit", "5MiB", "--analyze"],
    );
    assert!(out.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join(".farm/out/bundle-report.json")).unwrap()).unwrap();
    assert!(report.to_string().contains("index.html"), "{report}");
    let html = std::fs::read_to_string(p.path().join(".farm/out/bundle-report.html")).unwrap();
    assert!(
        html.contains("<html") && !html.contains("https://"),
        "a self-contained page"
    );
}

#[test]
fn host_build_says_it_is_not_hermetic() {
    if !require_tool("node") || !require_tool("python3") || !have_registry() {
        return;
    }
    let p = example_copy();
    let home = shared_farm_home();
    fetch(p.path(), &home);
    let out = build(p.path(), &home, &["backend", "models"]);
    assert!(out.status.success());
    let m = manifest(p.path());
    assert_eq!(m["hermetic"], false);
    assert!(m["outputs"]["openapi"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[test]
fn cache_clean_keeps_the_lock_and_last_build_and_analyze_reads_the_last_build() {
    if !have_registry() {
        return;
    }
    let p = example_copy();
    let home = shared_farm_home();
    fetch(p.path(), &home);
    // A backend output the final build will not reference.
    let main_py = p.path().join("apps/api/app/main.py");
    let original = std::fs::read_to_string(&main_py).unwrap();
    std::fs::write(&main_py, format!("{original}\n# {}\n", unique())).unwrap();
    assert!(build(p.path(), &home, &["--hermetic", "backend"]).status.success());
    let stale_entry = metrics(p.path())["steps"]["backend"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let stale_out = manifest(p.path())["outputs"]["backend"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&main_py, original).unwrap();
    assert!(build(p.path(), &home, &["--hermetic"]).status.success());
    let kept_out = manifest(p.path())["outputs"]["backend"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!stale_entry.is_empty());

    let out = run(&mut farm(p.path(), &home, &["cache", "clean", "--dry-run"]));
    assert!(out.status.success());
    let err = stderr(&out);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join(".farm/last-build.json")).unwrap()).unwrap();
    let kept: Vec<String> = serde_json::from_value(record["entries"].clone()).unwrap();
    assert!(
        kept.iter().any(|e| e.ends_with("-out-frontend")),
        "the last build's outputs are recorded: {kept:?}"
    );
    // The record lives in the project: no host path of FARM_HOME in it, and
    // `farm log` still finds the logs through FARM_HOME.
    let text = std::fs::read_to_string(p.path().join(".farm/last-build.json")).unwrap();
    assert!(
        !text.contains(&*home.to_string_lossy()),
        "host paths in last-build.json: {text}"
    );
    let log = run(&mut farm(p.path(), &home, &["log", "backend"]));
    assert!(log.status.success(), "{}", stderr(&log));
    for e in &kept {
        assert!(!err.contains(&format!("would delete {e} ")), "{e} is kept: {err}");
    }
    assert_ne!(stale_out, kept_out);
    assert!(err.contains("would delete"), "{err}");
    assert!(!err.contains("-node-22.19.0 "), "locked artifacts stay: {err}");

    let analyzed = run(&mut farm(p.path(), &home, &["analyze"]));
    assert!(analyzed.status.success());
    assert!(stdout(&analyzed).contains("assets/index-"), "{}", stdout(&analyzed));
    assert!(p.path().join(".farm/out/bundle-report.html").is_file());
}

#[test]
fn install_scripts_run_only_for_allowed_packages() {
    if !have_registry() {
        return;
    }
    let p = example_copy();
    let home = shared_farm_home();
    fetch(p.path(), &home);
    let toml = p.path().join("farm.toml");
    let original = std::fs::read_to_string(&toml).unwrap();
    let with = |allow: &str| {
        original.replacen(
            "output-dir = \"dist\"\n",
            &format!("output-dir = \"dist\"\nallow-scripts = [{allow}]\n"),
            1,
        )
    };

    std::fs::write(&toml, with("\"nope\"")).unwrap();
    let out = build(p.path(), &home, &["--hermetic", "frontend"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("allow-scripts names \"nope\""),
        "{}",
        stderr(&out)
    );

    std::fs::write(&toml, with("\"esbuild\"")).unwrap();
    assert!(
        build(p.path(), &home, &["--hermetic", "--rerun", "frontend", "frontend"])
            .status
            .success()
    );
    let log = run(&mut farm(p.path(), &home, &["log", "frontend"]));
    assert!(
        stdout(&log).contains("esbuild@") && stdout(&log).contains("postinstall"),
        "esbuild's postinstall ran: {}",
        stdout(&log)
    );

    std::fs::write(&toml, &original).unwrap();
    assert!(
        build(p.path(), &home, &["--hermetic", "--rerun", "frontend", "frontend"])
            .status
            .success()
    );
    let log = run(&mut farm(p.path(), &home, &["log", "frontend"]));
    assert!(
        !stdout(&log).contains("postinstall"),
        "no install script runs by default: {}",
        stdout(&log)
    );
}

/// A workspace package inside the frontend (package-lock `"link": true`,
/// as `npm install` writes for `workspaces`) is linked into the build's
/// node_modules and bundled; the build is reproducible.
#[test]
fn a_workspace_package_inside_the_frontend_is_linked_and_bundled() {
    if !have_registry() {
        return;
    }
    let p = example_copy();
    let home = shared_farm_home();
    fetch(p.path(), &home);
    let web = p.path().join("apps/web");
    let marker = format!("FARM-WORKSPACE-{}", unique());
    std::fs::create_dir_all(web.join("packages/greet")).unwrap();
    std::fs::write(
        web.join("packages/greet/package.json"),
        r#"{"name":"greet","version":"1.0.0","type":"module","main":"index.js"}"#,
    )
    .unwrap();
    std::fs::write(
        web.join("packages/greet/index.js"),
        format!("export const greeting = {marker:?};\n"),
    )
    .unwrap();
    let main = web.join("src/main.jsx");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        format!("import {{ greeting }} from 'greet';\nconsole.log(greeting);\n{text}"),
    )
    .unwrap();
    let lock_path = web.join("package-lock.json");
    let mut lock: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&lock_path).unwrap()).unwrap();
    lock["packages"]["packages/greet"] = serde_json::json!({"name": "greet", "version": "1.0.0"});
    lock["packages"]["node_modules/greet"] = serde_json::json!({"resolved": "packages/greet", "link": true});
    std::fs::write(&lock_path, serde_json::to_string_pretty(&lock).unwrap()).unwrap();
    assert!(run(&mut farm(p.path(), &home, &["lock"])).status.success());

    assert!(build(p.path(), &home, &["--hermetic", "frontend"]).status.success());
    let assets = p.path().join(".farm/out/frontend/assets");
    let bundled = std::fs::read_dir(&assets)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .any(|js| js.contains(&marker));
    assert!(bundled, "the workspace package is in the bundle");
    let first = manifest(p.path())["outputs"]["frontend"]["digest"].clone();
    assert!(
        build(p.path(), &home, &["--hermetic", "--rerun", "frontend", "frontend"])
            .status
            .success()
    );
    assert_eq!(
        manifest(p.path())["outputs"]["frontend"]["digest"],
        first,
        "rebuilt, the same bundle"
    );
}
