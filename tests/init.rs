//! `farm init` on real repositories: the example FARM app (whose checked-in
//! farm.toml is what init must reproduce), a plain Vite + FastAPI repository,
//! and the refusals (existing farm.toml, no build script, a vague .nvmrc).

mod common;

use std::path::Path;

use common::{farm, run, stderr};
use farm_testkit::{require, require_tool, shared_farm_home, Registry};

/// A copy of the example app as a user would have it before adopting farm:
/// no farm.toml, no farm.lock, no build outputs.
fn example_without_farm_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::copy_tree(
        &common::workspace().join("examples/farm-app"),
        dir.path(),
        &["node_modules", "dist", ".farm", "farm.toml", "farm.lock"],
    );
    dir
}

fn toml_of(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn get<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

fn str_at<'a>(t: &'a toml::Table, dotted: &str) -> &'a str {
    get(t, dotted)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{dotted} is not a string in {t:#?}"))
}

/// `farm lock --check` loads and validates farm.toml before anything else:
/// "no lock file" (exit 3) means farm accepted the file.
fn assert_farm_accepts(project: &Path, home: &Path) {
    let out = run(&mut farm(project, home, &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no lock file"), "{}", stderr(&out));
}

/// Proves init reads the FARM app's layout, farm.config.ts, .nvmrc and the
/// FastAPI module to the very values the example's hand-written farm.toml has.
#[test]
fn init_on_the_example_app_reproduces_its_checked_in_farm_toml() {
    let p = example_without_farm_files();
    let home = tempfile::tempdir().unwrap();
    let out = run(&mut farm(p.path(), home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let generated = toml_of(&p.path().join("farm.toml"));
    let example = toml_of(&common::workspace().join("examples/farm-app/farm.toml"));
    assert_eq!(str_at(&generated, "frontend.path"), "apps/web");
    assert_eq!(str_at(&generated, "frontend.output-dir"), "dist");
    assert_eq!(str_at(&generated, "backend.path"), "apps/api");
    assert_eq!(str_at(&generated, "backend.app"), "app.main:app");
    assert_eq!(str_at(&generated, "toolchains.node.version"), "22.19.0");
    assert_eq!(str_at(&generated, "toolchains.python.version"), "3.11");
    assert_eq!(str_at(&generated, "models.default"), "farm-tiny:latest");
    assert_eq!(str_at(&generated, "models.registry"), "${FARM_OLLAMA_REGISTRY}");
    // farm.config.ts's `database: { type: 'mongodb' }` becomes MongoDB beside
    // the app in the compose file, from the registry the environment names.
    assert_eq!(str_at(&generated, "deploy.mongodb"), "library/mongo:7.0");
    assert_eq!(get(&generated, "deploy.compose").and_then(|v| v.as_bool()), Some(true));
    assert_eq!(
        str_at(&generated, "registries.containers"),
        "${FARM_CONTAINER_REGISTRY}"
    );
    // `[env.*]` holds per-deployment choices no file in the app records, and
    // the example's checked-in farm.toml does not deploy MongoDB; every other
    // value must be the checked-in one.
    let mut example = example;
    example.remove("env");
    let mut generated = generated;
    generated.remove("deploy");
    generated.remove("registries");
    assert_eq!(generated, example, "every value equals the checked-in farm.toml's");

    // The output says where each value came from and what to run next.
    let err = stderr(&out);
    for needle in [
        ".nvmrc",
        "farm.config.ts ai.providers.ollama",
        "apps/api/app/main.py:",
        "apps/web/vite.config.js build.outDir",
        "farm lock && farm fetch && farm build --hermetic",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    assert_farm_accepts(p.path(), home.path());
    // Same values, same lock inputs: the example's own lock is exactly as fresh
    // for the generated farm.toml (without the MongoDB the example leaves out)
    // as for the checked-in one.
    let without_database = p.path().join("without-database.toml");
    std::fs::write(&without_database, toml::to_string(&generated).unwrap()).unwrap();
    let with_example_lock = |toml_from: &Path| {
        let d = example_without_farm_files();
        std::fs::copy(toml_from, d.path().join("farm.toml")).unwrap();
        std::fs::copy(
            common::workspace().join("examples/farm-app/farm.lock"),
            d.path().join("farm.lock"),
        )
        .unwrap();
        let out = run(&mut farm(d.path(), home.path(), &["lock", "--check"]));
        let text = stderr(&out).replace(&d.path().display().to_string(), "<project>");
        (out.status.code(), text)
    };
    assert_eq!(
        with_example_lock(&without_database),
        with_example_lock(&common::workspace().join("examples/farm-app/farm.toml"))
    );
}

/// Proves an existing farm.toml is never replaced without --force, and is with it.
#[test]
fn init_refuses_to_replace_farm_toml_without_force_and_replaces_it_with_force() {
    let p = example_without_farm_files();
    let home = tempfile::tempdir().unwrap();
    let mine = "# my own farm.toml\n[project]\nname = \"mine\"\nversion = \"9\"\n";
    std::fs::write(p.path().join("farm.toml"), mine).unwrap();

    let out = run(&mut farm(p.path(), home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("farm.toml already exists; use --force to replace it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(p.path().join("farm.toml")).unwrap(), mine);

    let out = run(&mut farm(p.path(), home.path(), &["init", "--force"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let replaced = toml_of(&p.path().join("farm.toml"));
    assert_eq!(str_at(&replaced, "project.name"), "farm-app");
    assert_eq!(str_at(&replaced, "backend.app"), "app.main:app");
    let leftovers: Vec<_> = std::fs::read_dir(p.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".farm.toml"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");

    // A second run without --force now refuses the file init wrote itself.
    let before = std::fs::read(p.path().join("farm.toml")).unwrap();
    let out = run(&mut farm(p.path(), home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(p.path().join("farm.toml")).unwrap(), before);
}

/// Proves a repository that is not a FARM framework app works too: the
/// frontend at the root, vite.config.js's outDir, the app module relative to
/// the backend directory, and no [models] when nothing names Ollama models.
#[test]
fn init_on_a_plain_vite_and_fastapi_repository() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let root = p.path();
    write(
        root,
        "package.json",
        r#"{ "name": "@acme/Plain Repo", "version": "2.3.4", "private": true,
            "scripts": { "dev": "vite", "build": "vite build" },
            "devDependencies": { "vite": "^7.0.0" } }"#,
    );
    write(
        root,
        "package-lock.json",
        "{\"lockfileVersion\": 3, \"packages\": {}}\n",
    );
    write(
        root,
        "vite.config.js",
        "import { defineConfig } from 'vite';\n\
         // build: { outDir: 'not-this' },\n\
         export default defineConfig({\n  base: '/',\n  build: { outDir: 'build', sourcemap: false },\n});\n",
    );
    write(
        root,
        "api/main.py",
        "from fastapi import FastAPI\n\napp = FastAPI()\n\n@app.get('/health')\ndef health():\n    return {'status': 'ok'}\n",
    );
    write(root, "api/requirements.txt", "fastapi==0.115.0\n");
    // A test module creating its own app must not be taken for the real one.
    write(
        root,
        "api/tests/test_main.py",
        "from fastapi import FastAPI\napp = FastAPI()\n",
    );

    let out = run(&mut farm(root, home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = toml_of(&root.join("farm.toml"));
    assert_eq!(str_at(&t, "project.name"), "plain-repo");
    assert_eq!(str_at(&t, "project.version"), "2.3.4");
    assert_eq!(str_at(&t, "frontend.path"), ".");
    assert_eq!(str_at(&t, "frontend.build-script"), "build");
    assert_eq!(str_at(&t, "frontend.output-dir"), "build");
    assert_eq!(str_at(&t, "backend.path"), "api");
    assert_eq!(str_at(&t, "backend.requirements"), "requirements.txt");
    assert_eq!(str_at(&t, "backend.app"), "main:app");
    assert_eq!(str_at(&t, "toolchains.node.version"), "22.19.0");
    assert_eq!(str_at(&t, "toolchains.python.version"), "3.11");
    assert!(t.get("models").is_none(), "no [models]: {t:#?}");
    assert_farm_accepts(root, home.path());
}

/// Proves the version sources beyond the defaults: requires-python picks the
/// series, a bare major in .node-version is written for `farm lock` to pin, and a
/// backend with only pyproject.toml is used but warned about.
#[test]
fn init_reads_requires_python_node_version_and_warns_about_missing_requirements() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let root = p.path();
    write(
        root,
        "frontend/package.json",
        r#"{ "scripts": { "build": "vite build" }, "dependencies": { "vite": "7.3.8" } }"#,
    );
    write(root, "frontend/package-lock.json", "{}\n");
    write(root, ".node-version", "v20\n");
    write(
        root,
        "backend/pyproject.toml",
        "[project]\nname = \"svc\"\nversion = \"0.2.0\"\nrequires-python = \">=3.9,<3.13\"\ndependencies = [\"fastapi\"]\n",
    );
    write(
        root,
        "backend/svc/asgi.py",
        "import fastapi\n\"\"\"\nold = FastAPI()\n\"\"\"\napplication: fastapi.FastAPI = fastapi.FastAPI(title='svc')\n",
    );

    let out = run(&mut farm(root, home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = toml_of(&root.join("farm.toml"));
    assert_eq!(str_at(&t, "frontend.path"), "frontend");
    assert_eq!(str_at(&t, "frontend.output-dir"), "dist");
    assert_eq!(str_at(&t, "toolchains.node.version"), "20");
    assert_eq!(str_at(&t, "toolchains.python.version"), "3.11");
    assert_eq!(str_at(&t, "backend.app"), "svc.asgi:application");
    assert_eq!(str_at(&t, "backend.requirements"), "requirements.txt");
    let err = stderr(&out);
    assert!(
        err.contains("warning: backend/requirements.txt: missing"),
        "warns that farm needs pinned requirements:\n{err}"
    );
    assert!(err.contains("backend/pyproject.toml requires-python"), "{err}");
}

/// Proves init stops, naming the file, where it cannot write a working farm.toml.
#[test]
fn init_names_the_file_when_it_cannot_decide() {
    let home = tempfile::tempdir().unwrap();

    let p = tempfile::tempdir().unwrap();
    write(
        p.path(),
        "web/package.json",
        r#"{ "scripts": { "dev": "vite" }, "devDependencies": { "vite": "7.3.8" } }"#,
    );
    let out = run(&mut farm(p.path(), home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("web/package.json: scripts has no \"build\" (found: dev)") && err.contains("hint:"),
        "{err}"
    );
    assert!(!p.path().join("farm.toml").exists(), "nothing written on error");

    write(
        p.path(),
        "web/package.json",
        r#"{ "scripts": { "build": "vite build" }, "devDependencies": { "vite": "7.3.8" } }"#,
    );
    write(p.path(), "web/.nvmrc", "lts/iron\n");
    let out = run(&mut farm(p.path(), home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("web/.nvmrc: expected a Node version") && err.contains("\"lts/iron\""),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = run(&mut farm(empty.path(), home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("found neither a Vite frontend"),
        "{}",
        stderr(&out)
    );
}

/// Proves the farm.toml init writes for the example is enough for a real
/// `farm lock`: toolchains, npm packages and wheels from the machine's
/// registries, the model from a loopback OCI registry seeded with it.
/// Set FARM_TEST_NETWORK=0 to skip it where the registries are unreachable.
#[test]
fn init_then_lock_pins_everything() {
    let network = std::env::var("FARM_TEST_NETWORK").as_deref() != Ok("0");
    if !require(
        network,
        "FARM_TEST_NETWORK=0 keeps the tests off the registries (unset it to run this test)",
    ) || !require_tool("docker-registry")
    {
        return;
    }
    let registry = Registry::start();
    common::seed_model(&registry.url);
    let p = example_without_farm_files();
    let home = shared_farm_home();
    let out = run(&mut farm(p.path(), &home, &["init"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A stand-in for MongoDB's image at library/mongo:7.0 of the same
    // loopback registry (any manifest has a digest to pin).
    let seeded = std::process::Command::new("python3")
        .arg(common::workspace().join("examples/farm-app/models/seed-model.py"))
        .args(["--registry", &registry.url, "--name", "mongo:7.0"])
        .output()
        .unwrap();
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    let with_registries = |args: &[&str]| {
        let mut c = farm(p.path(), &home, args);
        c.env("FARM_OLLAMA_REGISTRY", &registry.url)
            .env("FARM_CONTAINER_REGISTRY", &registry.url);
        run(&mut c)
    };
    let out = with_registries(&["lock"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lock = std::fs::read_to_string(p.path().join("farm.lock")).unwrap();
    assert!(lock.contains("farm-tiny"), "the model is pinned:\n{lock}");
    assert!(
        lock.contains("name = \"mongodb\""),
        "farm.config.ts's MongoDB is pinned:\n{lock}"
    );
    let out = with_registries(&["lock", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Proves init reads what the FARM CLI and corepack record: farm.config.ts's
/// `database: "mongodb"` (the string form) becomes `[deploy]` MongoDB in the
/// compose file, `packageManager: "npm@10.9.2"` pins npm, and an
/// `engines.node` range becomes the major `farm lock` pins the newest
/// release of; farm accepts the file.
#[test]
fn init_reads_database_package_manager_and_engines() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let root = p.path();
    write(
        root,
        "farm.config.ts",
        "export default defineConfig({ name: 'shop', version: '1.0.0', database: 'mongodb' });\n",
    );
    write(
        root,
        "package.json",
        r#"{ "name": "shop", "scripts": { "build": "vite build" }, "devDependencies": { "vite": "7.3.8" },
            "packageManager": "npm@10.9.2+sha512.abc", "engines": { "node": "^20.11.0" } }"#,
    );
    write(
        root,
        "package-lock.json",
        "{\"lockfileVersion\": 3, \"packages\": {}}\n",
    );
    let out = run(&mut farm(root, home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = toml_of(&root.join("farm.toml"));
    assert_eq!(str_at(&t, "deploy.mongodb"), "library/mongo:7.0");
    assert_eq!(get(&t, "deploy.compose").and_then(|v| v.as_bool()), Some(true));
    assert_eq!(str_at(&t, "registries.containers"), "${FARM_CONTAINER_REGISTRY}");
    assert_eq!(str_at(&t, "toolchains.node.npm"), "10.9.2");
    assert_eq!(str_at(&t, "toolchains.node.version"), "20");
    let text = std::fs::read_to_string(root.join("farm.toml")).unwrap();
    assert!(
        text.contains("package.json packageManager") && text.contains("package.json engines.node"),
        "the sources are in the comments:\n{text}"
    );
    assert_farm_accepts(root, home.path());
}

/// Proves the other shapes: `database: { type: 'postgresql' }` is noted and
/// writes no `[deploy]` (farm deploys MongoDB only); a `packageManager` that
/// is not the manager of the lockfile found is a warning naming both; and
/// the pnpm lockfile's manager is recorded beside `[frontend]`.
#[test]
fn init_notes_other_databases_and_a_package_manager_that_disagrees() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let root = p.path();
    write(
        root,
        "farm.config.ts",
        "export default defineConfig({ name: 'shop', database: { type: 'postgresql' } });\n",
    );
    write(
        root,
        "package.json",
        r#"{ "name": "shop", "scripts": { "build": "vite build" }, "devDependencies": { "vite": "7.3.8" },
            "packageManager": "pnpm@9.12.0" }"#,
    );
    write(
        root,
        "package-lock.json",
        "{\"lockfileVersion\": 3, \"packages\": {}}\n",
    );
    let out = run(&mut farm(root, home.path(), &["init"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("farm.config.ts database.type is \"postgresql\"") && err.contains("MongoDB only"),
        "{err}"
    );
    assert!(
        err.contains("packageManager is pnpm@9.12.0, but the lockfile here is package-lock.json"),
        "{err}"
    );
    let t = toml_of(&root.join("farm.toml"));
    assert!(t.get("deploy").is_none() && t.get("registries").is_none(), "{t:#?}");
    assert_eq!(str_at(&t, "toolchains.node.npm"), "10");

    // With pnpm's lockfile instead, the comment says pnpm lays the packages out.
    std::fs::remove_file(root.join("package-lock.json")).unwrap();
    write(root, "pnpm-lock.yaml", "lockfileVersion: '9.0'\nimporters:\n  .: {}\n");
    let out = run(&mut farm(root, home.path(), &["init", "--force"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("packageManager is"), "{}", stderr(&out));
    let text = std::fs::read_to_string(root.join("farm.toml")).unwrap();
    assert!(
        text.contains("# Packages: pnpm-lock.yaml, laid out as pnpm 9.12.0 does (package.json packageManager)."),
        "{text}"
    );
}
