//! The container backend (`--sandbox container`) against both real
//! engines, Podman's API service and Docker Engine (`dockerd`), each started
//! by the test on a socket and storage of its own: `farm exec` runs the
//! pinned toolchains in a container, and a hermetic build there gives the
//! same manifest digest as the native sandbox; `farm image load` loads an
//! image into either. Also: what `farm push` and `farm image load` print
//! never holds the password of a registry or engine address.

mod common;

use std::path::Path;

use common::{example_copy, farm, run, stderr, stdout};
use farm_testkit::{shared_farm_home, EngineKind, EngineService};
use sha2::Digest;

/// `farm --sandbox container ARGS` on `engine`, with a variable set that
/// must not reach the step.
fn in_container(p: &Path, home: &Path, engine: &EngineService, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--sandbox", "container"];
    all.extend_from_slice(args);
    let mut c = farm(p, home, &all);
    c.env("DOCKER_HOST", engine.docker_host())
        .env("FARM_TEST_TOKEN", "leak-me-not");
    let out = run(&mut c);
    if !out.status.success() {
        eprintln!("{} log:\n{}", engine.kind().name(), engine.log());
    }
    out
}

/// Proves that on Podman and on Docker Engine `farm exec` runs the pinned
/// node as uid 1000 with the fixed HOME and none of the caller's variables,
/// passes the exit status through and has no network; and that a hermetic
/// `--no-cache` build of the example's frontend, backend and models gives
/// the same manifest digest natively, through Podman and through Docker
/// (the backend's pip needs a writable /tmp, which Docker with a store
/// root's 0555 /tmp used not to give).
#[test]
fn a_hermetic_build_gives_one_manifest_digest_natively_in_podman_and_in_docker() {
    if !(EngineKind::Podman.require() && EngineKind::Docker.require()) {
        return;
    }
    let Some(dir) = common::fetched_example() else { return };
    let p = dir.path();
    let home = shared_farm_home();
    let targets = ["frontend", "backend", "models"];
    let build = |sandbox: &'static str| {
        let mut args = vec!["--sandbox", sandbox, "build", "--hermetic", "--no-cache"];
        args.extend(targets);
        args
    };

    let native = run(&mut farm(p, &home, &build("native")));
    assert!(native.status.success());
    let native_digest = stdout(&native).trim().to_string();
    assert!(native_digest.starts_with("sha256:"), "{native_digest}");
    let mut figures = vec![format!("native: {native_digest}")];

    for kind in [EngineKind::Podman, EngineKind::Docker] {
        let engine = EngineService::start(kind);
        let name = kind.name();
        let node = in_container(p, &home, &engine, &["exec", "--", "node", "--version"]);
        assert!(node.status.success(), "{name}");
        assert_eq!(stdout(&node).trim(), "v22.19.0", "{name}");
        let who = in_container(
            p,
            &home,
            &engine,
            &["exec", "--", "sh", "-c", "id -u; echo HOME=$HOME; env; exit 4"],
        );
        assert_eq!(who.status.code(), Some(4), "{name}: the exit status passes through");
        let out = stdout(&who);
        assert!(
            out.starts_with("1000\nHOME=/homeless-shelter\n"),
            "{name}: uid 1000 and the fixed HOME: {out}"
        );
        assert!(!out.contains("FARM_TEST_TOKEN"), "{name}: no host variables: {out}");
        let net = in_container(
            p,
            &home,
            &engine,
            &[
                "exec",
                "--",
                "python3",
                "-c",
                "import socket; socket.create_connection(('127.0.0.1', 9), 2)",
            ],
        );
        assert!(!net.status.success(), "{name}: no network in the container");

        let mut args = vec!["build", "--hermetic", "--no-cache"];
        args.extend(targets);
        let contained = in_container(p, &home, &engine, &args);
        assert!(contained.status.success(), "{name}: {}", stderr(&contained));
        let digest = stdout(&contained).trim().to_string();
        figures.push(format!("{name}: {digest}"));
        assert_eq!(
            digest, native_digest,
            "{name}: the same manifest digest as the native sandbox"
        );
    }
    // The figures, for the record (shown with --nocapture).
    eprintln!("manifest digests of the hermetic build:\n  {}", figures.join("\n  "));
}

/// Writes `bytes` as a blob of the OCI layout at `dir`; returns its digest.
fn blob(dir: &Path, bytes: &[u8]) -> String {
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// An uncompressed layer holding the host's static busybox as /bin/busybox.
fn busybox_layer() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_cksum();
    tar.append_data(&mut dir, "bin/", std::io::empty()).unwrap();
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let mut file = tar::Header::new_ustar();
    file.set_mode(0o755);
    file.set_size(busybox.len() as u64);
    file.set_cksum();
    tar.append_data(&mut file, "bin/busybox", &busybox[..]).unwrap();
    tar.into_inner().unwrap()
}

/// Makes `project`'s last build one that made one image, `app`
/// (`farm-app:0.1.0`, a valid OCI layout), so that `farm push` and `farm
/// image load` get as far as the registry or the engine. With `layer` the
/// image holds it and its command is `/bin/busybox echo hi` as uid 1000;
/// returns the config digest (the image ID engines report).
fn last_build_with_an_image(project: &Path, layer: Option<Vec<u8>>) -> String {
    let out = project.join(".farm/out");
    let layout = out.join("images/app");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = vec![];
    let mut diff_ids = vec![];
    if let Some(bytes) = layer {
        let digest = blob(&layout, &bytes);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest,
            "size": bytes.len(),
        }));
        diff_ids.push(digest);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "echo", "hi"], "User": "1000:1000"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let config_digest = blob(&layout, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    })
    .to_string();
    let manifest_digest = blob(&layout, manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "0.1.0"},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    let build = serde_json::json!({
        "schema": 1,
        "project": {"name": "farm-app", "version": "0.1.0"},
        "hermetic": true,
        "environment": "production",
        "dev": false,
        "source_date_epoch": 315532800,
        "inputs": {"lock": "sha256:11", "farm_toml": "sha256:22", "sources": {}},
        "outputs": {"image.app": {
            "path": "images/app",
            "digest": "sha256:00",
            "size": 1,
            "metadata": {"reference": "farm-app:0.1.0"},
        }},
    });
    std::fs::write(out.join("farm-manifest.json"), build.to_string()).unwrap();
    config_digest
}

/// Proves `farm image load` puts the last build's image into Podman and
/// into Docker Engine (through each one's API at `DOCKER_HOST`), prints its
/// name and the config digest as image ID, and that the engine then runs it.
#[test]
fn farm_image_load_puts_the_image_into_podman_and_docker() {
    if !(EngineKind::Podman.require() && EngineKind::Docker.require()) {
        return;
    }
    let project = example_copy();
    let p = project.path();
    let id = last_build_with_an_image(p, Some(busybox_layer()));
    let home = tempfile::tempdir().unwrap();
    for kind in [EngineKind::Podman, EngineKind::Docker] {
        let engine = EngineService::start(kind);
        let mut load = farm(p, home.path(), &["image", "load", "app"]);
        load.env("DOCKER_HOST", engine.docker_host());
        let out = run(&mut load);
        assert!(out.status.success(), "{}: {}", kind.name(), engine.log());
        assert_eq!(stdout(&out), format!("farm-app:0.1.0 {id}\n"), "{}", kind.name());
        let ran = engine
            .command()
            .args(["run", "--rm", "--network", "none"])
            .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
            .arg("farm-app:0.1.0")
            .output()
            .unwrap();
        assert_eq!(
            (ran.status.success(), stdout(&ran).as_str()),
            (true, "hi\n"),
            "{}: {}",
            kind.name(),
            stderr(&ran)
        );
    }
}

/// Proves a push to a registry URL with a password, and a load into an
/// engine whose `DOCKER_HOST` has one, fail (nothing listens on port 1)
/// with errors that name the address but never the password, on stdout or
/// stderr.
#[test]
fn failing_push_and_load_never_print_the_password() {
    let project = example_copy();
    let p = project.path();
    last_build_with_an_image(p, None);
    let home = tempfile::tempdir().unwrap();
    let secret = "hunter2-not-shown";

    let push = run(&mut farm(
        p,
        home.path(),
        &[
            "push",
            "--registry",
            &format!("http://farmer:{secret}@127.0.0.1:1/x"),
            "app",
        ],
    ));
    assert_eq!(push.status.code(), Some(1));
    let said = format!("{}{}", stdout(&push), stderr(&push));
    assert!(
        said.contains("pushing the app image to http://farmer:***@127.0.0.1:1/x"),
        "names the registry: {said}"
    );
    assert!(!said.contains(secret), "{said}");

    let mut load = farm(p, home.path(), &["image", "load", "app"]);
    load.env("DOCKER_HOST", format!("tcp://farmer:{secret}@127.0.0.1:1"));
    let load = run(&mut load);
    assert_eq!(load.status.code(), Some(1));
    let said = format!("{}{}", stdout(&load), stderr(&load));
    assert!(
        said.contains("loading the app image into tcp://farmer:***@127.0.0.1:1"),
        "names the engine: {said}"
    );
    assert!(!said.contains(secret), "{said}");
}
