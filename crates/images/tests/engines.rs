//! farm's docker archives in a real engine: `podman load` then `podman
//! run`, and `load_into_engine` through Podman's Docker-compatible API
//! (bollard), each with podman storage of its own.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use farm_images::{build_image, load_into_engine, write_docker_archive, BuiltImage, EngineError, ImageError};
use farm_testkit::{podman_command, require_root, require_tool, PodmanService};

fn podman_ready() -> bool {
    require_tool("podman") && require_tool("runc") && require_root()
}

/// Builds the busybox-based app image and its docker archive.
fn archive(root: &Path) -> (std::path::PathBuf, BuiltImage) {
    let s = sources(&root.join("src"));
    let layout = root.join("layout");
    let built = build_image(&app_spec(&s), &layout, None).unwrap();
    let tar = root.join("farm-app.tar");
    write_docker_archive(&layout, "farm-app:0.1.0", &tar).unwrap();
    (tar, built)
}

/// `podman run` of `args` with the flags these machines need, on `podman`'s storage.
fn podman_run(mut podman: Command, args: &[&str]) -> String {
    let out = run(podman
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(args));
    String::from_utf8(out.stdout).unwrap()
}

/// Proves `podman load` accepts the archive under the given name with the
/// config digest as image ID, and that the image runs: its default command
/// prints `hi` as user 1000 in /app, and the files have the layer's owners.
#[test]
fn podman_loads_the_archive_and_runs_the_image() {
    if !podman_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tar, built) = archive(tmp.path());
    let store = tmp.path().join("podman");
    let podman = || podman_command(&store);
    let out = run(podman().arg("load").arg("-i").arg(&tar));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("farm-app:0.1.0"), "{said}");
    let id = run(podman().args(["image", "inspect", "--format", "{{.Id}}", "farm-app:0.1.0"]));
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), built.config_digest.hex());

    assert_eq!(podman_run(podman(), &["farm-app:0.1.0"]), "hi\n");
    assert_eq!(podman_run(podman(), &["farm-app:0.1.0", "id", "-u"]), "1000\n");
    assert_eq!(
        podman_run(
            podman(),
            &[
                "farm-app:0.1.0",
                "stat",
                "-c",
                "%u:%g %a %n",
                "/app",
                "/app/main.py",
                "/app/run.sh",
                "/usr"
            ]
        ),
        "1000:1000 755 /app\n1000:1000 644 /app/main.py\n1000:1000 755 /app/run.sh\n0:0 755 /usr\n"
    );
    assert_eq!(
        podman_run(podman(), &["farm-app:0.1.0", "cat", "/app/static/index.html"]),
        "<!doctype html><div id=root></div>\n"
    );
}

/// Proves `load_into_engine` streams the archive through the Docker API
/// (Podman's service, reached with bollard on a unix socket), reports the
/// name and ID, and that the CLI on the same storage then runs the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_into_engine_uses_the_docker_api() {
    if !podman_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tar, built) = archive(tmp.path());
    let service = PodmanService::start();
    let host = service.docker_host();
    let loaded = load_into_engine(&tar, Some(&host))
        .await
        .unwrap_or_else(|e| panic!("{e}\nservice log:\n{}", service.log()));
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].reference, "farm-app:0.1.0");
    assert_eq!(loaded[0].id.trim_start_matches("sha256:"), built.config_digest.hex());
    assert_eq!(podman_run(service.command(), &["farm-app:0.1.0"]), "hi\n");
}

/// Proves a missing engine is a clear error naming the socket, with a hint.
#[tokio::test]
async fn no_engine_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (tar, _) = archive(tmp.path());
    let host = format!("unix://{}", tmp.path().join("absent.sock").display());
    let err = load_into_engine(&tar, Some(&host)).await.unwrap_err();
    assert!(matches!(err, ImageError::Engine(EngineError::Connect { .. })), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("absent.sock") && msg.contains("hint:"), "{msg}");
}
