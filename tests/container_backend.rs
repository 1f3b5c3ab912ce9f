//! The container backend (`--sandbox container`) against Podman's Docker
//! API: `farm exec` runs the pinned toolchains in a container, and a
//! hermetic build there gives the same manifest as the native sandbox.

mod common;

use common::{farm, run, stdout};
use farm_testkit::{require_tool, shared_farm_home, PodmanService};

#[test]
fn exec_and_build_in_a_container_match_the_native_sandbox() {
    if !require_tool("podman") {
        return;
    }
    let Some(dir) = common::fetched_example() else { return };
    let p = dir.path();
    let home = shared_farm_home();

    let podman = PodmanService::start();
    let host = podman.docker_host();
    let in_container = |args: &[&str]| {
        let mut all = vec!["--sandbox", "container"];
        all.extend_from_slice(args);
        let mut c = farm(p, &home, &all);
        c.env("DOCKER_HOST", &host).env("FARM_TEST_TOKEN", "leak-me-not");
        run(&mut c)
    };
    let node = in_container(&["exec", "--", "node", "--version"]);
    assert!(node.status.success());
    assert_eq!(stdout(&node).trim(), "v22.19.0");
    let who = in_container(&["exec", "--", "sh", "-c", "id -u; echo HOME=$HOME; env; exit 4"]);
    assert_eq!(who.status.code(), Some(4), "the exit status passes through");
    let out = stdout(&who);
    assert!(
        out.starts_with("1000\nHOME=/homeless-shelter\n"),
        "uid 1000 and the fixed HOME: {out}"
    );
    assert!(!out.contains("FARM_TEST_TOKEN"), "no host variables: {out}");
    let net = in_container(&[
        "exec",
        "--",
        "python3",
        "-c",
        "import socket; socket.create_connection(('127.0.0.1', 9), 2)",
    ]);
    assert!(!net.status.success(), "no network in the container");

    let contained = in_container(&["build", "--hermetic", "--no-cache", "frontend", "backend", "models"]);
    assert!(contained.status.success());
    let native = run(&mut farm(
        p,
        &home,
        &[
            "--sandbox",
            "native",
            "build",
            "--hermetic",
            "--no-cache",
            "frontend",
            "backend",
            "models",
        ],
    ));
    assert!(native.status.success());
    assert_eq!(
        stdout(&contained).trim(),
        stdout(&native).trim(),
        "same manifest digest from both sandboxes"
    );
}
