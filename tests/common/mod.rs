//! Shared pieces of farm's integration tests: running the real binary and
//! copies of the example app. The servers, the shared store and the skip
//! mechanism are farm-testkit's.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use farm_testkit::{require_tool, shared_farm_home, Registry};

pub fn farm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_farm"))
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `farm ARGS` in `project` with `farm_home`; the environment is cleaned of
/// anything farm reads so tests don't depend on the developer's shell.
pub fn farm(project: &Path, farm_home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(farm_bin());
    c.arg("--project")
        .arg(project)
        .arg("--farm-home")
        .arg(farm_home)
        .args(args);
    c.env_remove("FARM_PROJECT").env_remove("FARM_HOME").env("CI", "true");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("farm runs");
    eprintln!(
        "$ {:?}\n--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        cmd,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Seeds the example's tiny Ollama model into `registry` with the example's own script.
pub fn seed_model(registry: &str) {
    let script = workspace().join("examples/farm-app/models/seed-model.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--registry", registry, "--name", "farm-tiny:latest"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "seed-model.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies a directory tree (files, dirs, symlinks), skipping `skip` names.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let ft = e.file_type().unwrap();
        let dst = to.join(&name);
        if ft.is_dir() {
            copy_tree(&e.path(), &dst, skip);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), dst).unwrap();
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A copy of the example app outside any git repository, so its
/// SOURCE_DATE_EPOCH is the documented fallback wherever it is copied.
pub fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &workspace().join("examples/farm-app"),
        dir.path(),
        &["node_modules", "dist", ".farm"],
    );
    dir
}

/// A copy of the example app (see [`example_copy`]), fetched into the shared
/// store with its model served by a loopback registry. None when the test
/// is skipped because `docker-registry` is missing (outside CI).
pub fn fetched_example() -> Option<tempfile::TempDir> {
    if !require_tool("docker-registry") {
        return None;
    }
    let registry = Registry::start();
    seed_model(&registry.url);
    let dir = example_copy();
    let mut fetch = farm(dir.path(), &shared_farm_home(), &["fetch"]);
    fetch.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut fetch).status.success(), "fetching the example app");
    Some(dir)
}

/// A client of the REAPI server at `url` (a test's BuildGrid) with the
/// runtime that drives it.
pub fn remote_client(url: &str) -> (tokio::runtime::Runtime, farm_remote::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = farm_remote::RemoteConfig {
        url: url.to_string(),
        ..Default::default()
    };
    let client = rt
        .block_on(farm_remote::Client::connect(
            &config,
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(120),
        ))
        .unwrap();
    (rt, client)
}
