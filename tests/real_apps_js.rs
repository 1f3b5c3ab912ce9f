//! JS apps shaped like real ones (tests/fixtures/js-*), each with the
//! lockfile its own package manager wrote: `farm init`, `lock`,
//! `lock --check`, `fetch` and `build --hermetic` work on them as they are.
//! Packages come from the user's npm registry into the shared test store.

mod common;

use std::path::Path;

use common::{copy_tree, farm, run, stderr, stdout, workspace};
use farm_testkit::shared_farm_home;

/// A copy of the fixture app `name` outside any git repository.
fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &workspace().join("tests/fixtures").join(name),
        dir.path(),
        &["node_modules", "dist", ".farm", "farm.toml", "farm.lock"],
    );
    dir
}

/// The digest `farm build` prints last.
fn build_digest(out: &std::process::Output) -> String {
    stdout(out)
        .lines()
        .rev()
        .find(|l| l.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in the build's output: {}", stdout(out)))
        .to_string()
}

/// Where npm, yarn and bun put vite and @babel/parser.
const HOISTED: [&str; 2] = ["node_modules/vite", "node_modules/@babel/parser"];

/// init → lock → lock --check → fetch → build --hermetic twice (the second
/// without the cache) with equal digests; farm.lock installs vite and
/// @babel/parser at `paths`; returns the project.
fn builds_as_it_is(name: &str, lockfile: &str) -> tempfile::TempDir {
    builds_with_paths(name, lockfile, HOISTED)
}

fn builds_with_paths(name: &str, lockfile: &str, paths: [&str; 2]) -> tempfile::TempDir {
    let dir = fixture(name);
    let p = dir.path();
    let home = shared_farm_home();
    let init = run(&mut farm(p, &home, &["init"]));
    assert!(init.status.success(), "{name}: init");
    assert!(
        !stderr(&init).contains("no JS lockfile"),
        "{name}: init finds the lockfile farm lock reads"
    );
    let lock = run(&mut farm(p, &home, &["lock"]));
    assert!(lock.status.success(), "{name}: lock");
    let farm_lock = std::fs::read_to_string(p.join("farm.lock")).unwrap();
    assert!(
        farm_lock.contains(&format!("\"{lockfile}\" = \"sha256:"))
            || farm_lock.contains(&format!("{lockfile} = \"sha256:")),
        "{name}: the lock records {lockfile} among its inputs:\n{farm_lock}"
    );
    for path in paths {
        assert!(
            farm_lock.contains(&format!("path = \"{path}\"")),
            "{name}: the packages are locked at their install paths ({path})"
        );
    }
    let check = run(&mut farm(p, &home, &["lock", "--check"]));
    assert!(check.status.success(), "{name}: lock --check: {}", stderr(&check));
    assert!(run(&mut farm(p, &home, &["fetch"])).status.success(), "{name}: fetch");
    let first = run(&mut farm(p, &home, &["build", "--hermetic", "frontend"]));
    assert!(first.status.success(), "{name}: build");
    let index = std::fs::read_to_string(p.join(".farm/out/frontend/index.html")).unwrap();
    assert!(
        index.contains("<script type=\"module\""),
        "{name}: vite built index.html"
    );
    let second = run(&mut farm(p, &home, &["build", "--hermetic", "--no-cache", "frontend"]));
    assert!(second.status.success(), "{name}: second build");
    assert_eq!(build_digest(&first), build_digest(&second), "{name}: reproducible");
    // What CI runs: a rebuild under varied clock, CPUs, order, umask and paths.
    let check = run(&mut farm(p, &home, &["check", "--target", "frontend"]));
    assert!(check.status.success(), "{name}: farm check: {}", stderr(&check));
    dir
}

/// The built frontend's JavaScript.
fn built_js(p: &Path) -> String {
    let assets = p.join(".farm/out/frontend/assets");
    std::fs::read_dir(&assets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "js"))
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

/// An npm-workspaces monorepo: the root package-lock.json is the lock, the
/// frontend's build calls a scoped package's bin (`parser` of @babel/parser,
/// hoisted to the root node_modules) and bundles a scoped workspace package
/// from packages/ (a link npm makes), so the frontend's node_modules, the
/// root's and the member directory are all where npm puts them.
#[test]
fn npm_workspaces_monorepo_builds_as_it_is() {
    let dir = builds_as_it_is("js-npm-workspaces", "package-lock.json");
    assert!(
        built_js(dir.path()).contains("Hello, ${"),
        "the workspace package @fixture/greeting was bundled"
    );
}

/// A pnpm workspace (pnpm-lock.yaml v9, `workspace:*` dependency) builds
/// with pnpm's own layout, reproducibly: each package once in
/// `node_modules/.pnpm/<name>@<version>/node_modules/<name>` (a real
/// directory), its dependencies as relative links beside it, the
/// frontend's direct dependencies and their bins linked in
/// `frontend/node_modules`, the member's link made there as pnpm does; and,
/// pnpm's strictness, a package that is only a transitive dependency
/// (rollup, vite's) resolves from vite but not from the frontend. The
/// fixture's build reports what Node sees in the sandbox (scripts/layout.mjs).
#[test]
fn pnpm_workspace_builds_as_it_is() {
    let dir = builds_with_paths(
        "js-pnpm-workspace",
        "pnpm-lock.yaml",
        [
            "node_modules/.pnpm/vite@7.3.8/node_modules/vite",
            "node_modules/.pnpm/@babel+parser@7.24.0/node_modules/@babel/parser",
        ],
    );
    assert!(
        built_js(dir.path()).contains("Hello, ${"),
        "the workspace package @fixture/greeting was bundled"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(".farm/out/frontend/layout.json")).unwrap())
            .unwrap();
    let expected = serde_json::json!({
        "bin/parser": "../../../node_modules/.pnpm/@babel+parser@7.24.0/node_modules/@babel/parser/bin/babel-parser.js",
        "bin/vite": "../../../node_modules/.pnpm/vite@7.3.8/node_modules/vite/bin/vite.js",
        "frontend/@fixture/greeting": "../../../packages/greeting",
        "frontend/rollup exists": false,
        "frontend/vite": "../../node_modules/.pnpm/vite@7.3.8/node_modules/vite",
        "resolve rollup from frontend": null,
        "resolve rollup from vite": "node_modules/.pnpm/rollup@4.68.8/node_modules/rollup/package.json",
        "root/rollup exists": false,
        "vite is a real directory": true,
        "vite/rollup": "../../rollup@4.68.8/node_modules/rollup",
    });
    assert_eq!(report, expected, "node_modules as pnpm lays it out");
}

/// A yarn Berry app (yarn.lock with `__metadata` and zip-cache checksums):
/// the npm tarball integrity yarn does not record is pinned from the
/// registry at lock time, and `lock --check` accepts it offline. Its
/// `.nvmrc` says `24`: init writes the major, the lock pins Node 24's
/// newest release.
#[test]
fn yarn_berry_app_builds_as_it_is() {
    let dir = builds_as_it_is("js-yarn-berry", "yarn.lock");
    let toml = std::fs::read_to_string(dir.path().join("farm.toml")).unwrap();
    assert!(toml.contains("version = \"24\""), "init keeps the major:\n{toml}");
    let lock = std::fs::read_to_string(dir.path().join("farm.lock")).unwrap();
    let node: toml::Table = toml::from_str(&lock).unwrap();
    let version = node["node"]["version"].as_str().unwrap();
    assert!(
        version.starts_with("24.") && version.split('.').count() == 3,
        "the lock pins an exact Node 24 release: {version}"
    );
}

/// A bun app (the text bun.lock).
#[test]
fn bun_app_builds_as_it_is() {
    builds_as_it_is("js-bun", "bun.lock");
}

/// A pnpm lock with a git dependency is refused by `farm lock` naming the
/// package and the lockfile, and no farm.lock is written.
#[test]
fn a_git_dependency_in_a_pnpm_lock_is_refused_by_name() {
    let dir = fixture("js-pnpm-workspace");
    let p = dir.path();
    let home = shared_farm_home();
    assert!(run(&mut farm(p, &home, &["init"])).status.success());
    let lock_path = p.join("pnpm-lock.yaml");
    let text = std::fs::read_to_string(&lock_path).unwrap();
    // What pnpm 9 writes for `"left-pad": "git+https://…/left-pad.git#<commit>"`.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let key = format!("left-pad@git+https://git.example.invalid/example/left-pad.git#{commit}");
    let text = text
        .replacen(
            "    devDependencies:\n",
            &format!("      left-pad:\n        specifier: git+https://git.example.invalid/example/left-pad.git#{commit}\n        version: git+https://git.example.invalid/example/left-pad.git#{commit}\n    devDependencies:\n"),
            1,
        )
        .replacen(
            "packages:\n",
            &format!("packages:\n\n  '{key}':\n    resolution: {{commit: {commit}, repo: 'https://git.example.invalid/example/left-pad.git', type: git}}\n    version: 1.3.0\n"),
            1,
        )
        .replacen("snapshots:\n", &format!("snapshots:\n\n  '{key}': {{}}\n"), 1);
    std::fs::write(&lock_path, text).unwrap();
    let out = run(&mut farm(p, &home, &["lock"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("pnpm-lock.yaml") && err.contains("left-pad") && err.contains("git"),
        "the error names the lockfile and the package: {err}"
    );
    assert!(!p.join("farm.lock").exists(), "no lock was written");
}
