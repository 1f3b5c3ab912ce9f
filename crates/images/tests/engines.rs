//! farm's docker archives in real engines, each test once per engine
//! (`podman::<test>`, `docker::<test>`): the engine's CLI loads the archive
//! and runs the image, and `load_into_engine` (what `farm image load`
//! calls) loads it through the Docker Engine API (bollard) of Podman's API
//! service and of Docker Engine (`dockerd`), each started by the test with
//! storage of its own.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use farm_images::{build_image, load_into_engine, write_docker_archive, BuiltImage, EngineError, ImageError};
use farm_testkit::{EngineKind, EngineService};

/// Runs each named test (a `fn(EngineKind)`) once per engine.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod podman {
            $(
                /// See the function of the same name in the parent module.
                #[test]
                fn $name() {
                    super::$name(farm_testkit::EngineKind::Podman)
                }
            )*
        }
        mod docker {
            $(
                /// See the function of the same name in the parent module.
                #[test]
                fn $name() {
                    super::$name(farm_testkit::EngineKind::Docker)
                }
            )*
        }
    };
}

on_both_engines!(
    the_engines_cli_loads_the_archive_and_runs_the_image,
    load_into_engine_uses_the_docker_api,
);

/// Builds the busybox-based app image and its docker archive.
fn archive(root: &Path) -> (std::path::PathBuf, BuiltImage) {
    let s = sources(&root.join("src"));
    let layout = root.join("layout");
    let built = build_image(&app_spec(&s), &layout, None).unwrap();
    let tar = root.join("farm-app.tar");
    write_docker_archive(&layout, "farm-app:0.1.0", &tar).unwrap();
    (tar, built)
}

/// `podman run` or `docker run` of `args` with the flags these machines need.
fn engine_run(mut engine: Command, args: &[&str]) -> String {
    let out = run(engine
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

/// Proves the engine's own `load` (`podman load`, `docker load`) accepts
/// the archive under the given name with the config digest as image ID,
/// and that the image runs: its default command prints `hi` as user 1000
/// in /app, and the files have the layer's owners.
fn the_engines_cli_loads_the_archive_and_runs_the_image(kind: EngineKind) {
    if !kind.require() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tar, built) = archive(tmp.path());
    let engine = EngineService::start(kind);
    let cli = || engine.command();
    let out = run(cli().arg("load").arg("-i").arg(&tar));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("farm-app:0.1.0"), "{said}");
    let id = run(cli().args(["image", "inspect", "--format", "{{.Id}}", "farm-app:0.1.0"]));
    let id = String::from_utf8_lossy(&id.stdout);
    assert_eq!(id.trim().trim_start_matches("sha256:"), built.config_digest.hex());

    assert_eq!(engine_run(cli(), &["farm-app:0.1.0"]), "hi\n");
    assert_eq!(engine_run(cli(), &["farm-app:0.1.0", "id", "-u"]), "1000\n");
    assert_eq!(
        engine_run(
            cli(),
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
        engine_run(cli(), &["farm-app:0.1.0", "cat", "/app/static/index.html"]),
        "<!doctype html><div id=root></div>\n"
    );
}

/// Proves `load_into_engine` streams the archive through the Docker API
/// (the engine's service, reached with bollard on a unix socket), reports
/// the name and ID, and that the engine's CLI then runs the image.
fn load_into_engine_uses_the_docker_api(kind: EngineKind) {
    if !kind.require() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tar, built) = archive(tmp.path());
    let service = EngineService::start(kind);
    let host = service.docker_host();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let loaded = runtime
        .block_on(load_into_engine(&tar, Some(&host)))
        .unwrap_or_else(|e| panic!("{e}\nservice log:\n{}", service.log()));
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].reference, "farm-app:0.1.0");
    assert_eq!(loaded[0].id.trim_start_matches("sha256:"), built.config_digest.hex());
    assert_eq!(engine_run(service.command(), &["farm-app:0.1.0"]), "hi\n");
}

/// Proves Podman reads zstd layers: it pulls the zstd OCI layout
/// directly (the layers stay `tar+zstd` in the layout it reads; a docker
/// archive would hold them decompressed), gives the image the config
/// digest as ID and the diffIDs as its layers, and runs it.
#[test]
fn podman_pulls_and_runs_the_zstd_layout() {
    if !EngineKind::Podman.require() {
        return;
    }
    // Podman names an `oci:` image after its path, which must be lowercase
    // (a random temporary name is not): a directory of this process's own.
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let tmp = RemoveOnDrop(std::env::temp_dir().join(format!("farm-zstd-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).unwrap();
    let s = sources(&tmp.0.join("src"));
    let mut spec = app_spec(&s);
    spec.compression = farm_images::Compression::Zstd;
    let layout = tmp.0.join("layout");
    let built = build_image(&spec, &layout, None).unwrap();
    assert!(built
        .layers
        .iter()
        .all(|l| l.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"));
    let engine = EngineService::start(EngineKind::Podman);
    let cli = || engine.command();
    let out = run(cli().args(["pull", "-q", &format!("oci:{}:0.1.0", layout.display())]));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.trim_start_matches("sha256:"), built.config_digest.hex());
    let layers = run(cli().args(["image", "inspect", "--format", "{{json .RootFS.Layers}}", &id]));
    let layers: Vec<String> = serde_json::from_slice(&layers.stdout).unwrap();
    let diff_ids: Vec<String> = built.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(layers, diff_ids, "podman's layers are farm's diffIDs");
    assert_eq!(engine_run(cli(), &[&id]), "hi\n");
    assert_eq!(
        engine_run(cli(), &[&id, "stat", "-c", "%u:%g %a %n", "/app/main.py", "/usr"]),
        "1000:1000 644 /app/main.py\n0:0 755 /usr\n"
    );
    assert_eq!(
        engine_run(cli(), &[&id, "cat", "/app/static/index.html"]),
        "<!doctype html><div id=root></div>\n"
    );
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
