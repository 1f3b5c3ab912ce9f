//! The images target end to end: OCI layouts that independent tools accept,
//! reproducible digests, an app image Podman runs, pushes to a registry with
//! auth, the Ollama image's models, and the deploy files.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{example_copy, farm, run, stderr, stdout};
use farm_testkit::{free_port, require_tool, shared_farm_home, wait_for_port, PodmanService, Registry};
use sha2::Digest;

fn tools_present() -> bool {
    [
        "docker-registry",
        "skopeo",
        "umoci",
        "oci-image-tool",
        "podman",
        "htpasswd",
    ]
    .iter()
    .all(|t| require_tool(t))
}

/// A fake Ollama release (the real one lives on a host tests cannot reach):
/// a tarball with `bin/ollama`, served to the real fetch code by file URL.
fn ollama_archive(dir: &Path) -> (String, String) {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let body = b"#!/bin/sh\necho 'ollama stand-in for farm tests'\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    tar.append_data(&mut h, "bin/ollama", &body[..]).unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let path = dir.join("ollama-linux-amd64.tgz");
    std::fs::write(&path, &bytes).unwrap();
    (
        format!("file://{}", path.display()),
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
    )
}

struct Setup {
    project: tempfile::TempDir,
    _files: tempfile::TempDir,
    registry: Registry,
}

/// The example with the Ollama toolchain added, locked and fetched.
fn setup() -> Setup {
    let project = example_copy();
    let files = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    common::seed_model(&registry.url);
    let (url, sha) = ollama_archive(files.path());
    let toml = project.path().join("farm.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "\n[toolchains.ollama]\nversion = \"0.0.0-test\"\nurl = \"{url}\"\nsha256 = \"{sha}\"\n"
    ));
    std::fs::write(&toml, text).unwrap();
    let p = project.path();
    let env = |mut c: Command| {
        c.env("FARM_OLLAMA_REGISTRY", &registry.url);
        c
    };
    assert!(run(&mut env(farm(p, &shared_farm_home(), &["lock"]))).status.success());
    assert!(run(&mut env(farm(p, &shared_farm_home(), &["fetch"]))).status.success());
    Setup {
        project,
        _files: files,
        registry,
    }
}

fn manifest(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.join(".farm/out/farm-manifest.json")).unwrap()).unwrap()
}

fn tool(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn images_are_valid_reproducible_and_hold_the_models() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = s.project.path();
    let home = shared_farm_home();
    assert!(
        run(&mut farm(p, &home, &["build", "--hermetic", "--no-cache", "images"]))
            .status
            .success()
    );
    let first = manifest(p);
    let layout = |name: &str| p.join(".farm/out/images").join(name);
    let tag = first["project"]["version"].as_str().unwrap().to_string();
    for name in ["app", "ollama"] {
        let l = layout(name);
        // The layout also lists the image's SBOM artifacts: tools pick the image by its tag.
        let inspect: serde_json::Value = serde_json::from_str(&tool(
            Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci:{}:{tag}", l.display())),
        ))
        .unwrap();
        assert_eq!(
            inspect["Created"], "1980-01-01T00:00:00Z",
            "created comes from SOURCE_DATE_EPOCH"
        );
        assert_eq!(
            inspect["Digest"],
            first["outputs"][&format!("image.{name}")]["metadata"]["manifest_digest"]
        );
        // oci-image-tool's ref filter mishandles an index.json with several
        // manifests (it skips entries while deleting), so validate the image
        // as skopeo copies it, byte for byte, into a layout of its own.
        let alone = tempfile::tempdir().unwrap();
        let alone = alone.path().join("l");
        tool(
            Command::new("skopeo")
                .args(["copy", "--preserve-digests"])
                .arg(format!("oci:{}:{tag}", l.display()))
                .arg(format!("oci:{}:{tag}", alone.display())),
        );
        let copied: serde_json::Value =
            serde_json::from_slice(&std::fs::read(alone.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            copied["manifests"][0]["digest"],
            first["outputs"][&format!("image.{name}")]["metadata"]["manifest_digest"],
            "the validated copy is the same image"
        );
        tool(
            Command::new("oci-image-tool")
                .args(["validate", "--type", "image", "--ref", &format!("name={tag}")])
                .arg(&alone),
        );
        let bundle = tempfile::tempdir().unwrap();
        let b = bundle.path().join("b");
        tool(
            Command::new("umoci")
                .arg("unpack")
                .arg("--image")
                .arg(format!("{}:{tag}", l.display()))
                .arg(&b),
        );
        if name == "app" {
            assert!(b.join("rootfs/usr/bin/python3.11").is_file());
            assert!(b.join("rootfs/app/static/index.html").is_file());
            assert!(b.join("rootfs/app/site-packages/fastapi").is_dir());
            assert!(
                !b.join("rootfs/usr/bin/gcc").exists() && !b.join("rootfs/var/lib/dpkg").exists(),
                "no compilers, no dpkg state"
            );
        } else {
            // The models directory exactly as the models target built it.
            let image_models = farm_tree_digest(&b.join("rootfs/models"));
            let built = first["outputs"]["models"]["digest"].as_str().unwrap().to_string();
            assert_eq!(image_models, built, "the Ollama image's /models is the models output");
            assert!(b.join("rootfs/usr/bin/ollama").is_file());
        }
    }
    // A second build from scratch gives the same digests.
    assert!(
        run(&mut farm(p, &home, &["build", "--hermetic", "--no-cache", "images"]))
            .status
            .success()
    );
    let second = manifest(p);
    for name in ["image.app", "image.ollama"] {
        assert_eq!(
            first["outputs"][name], second["outputs"][name],
            "{name} is reproducible"
        );
    }
    let _ = &s.registry;
}

/// The tree digest of `path`, computed by farm's own store code path:
/// `farm store` has no digest command, so hash via a throwaway store entry.
fn farm_tree_digest(path: &Path) -> String {
    farm_store::tree_digest(path).unwrap().to_string()
}

#[test]
fn the_app_image_runs_in_podman_and_serves_health_and_the_frontend() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = s.project.path();
    let home = shared_farm_home();
    assert!(run(&mut farm(p, &home, &["build", "--hermetic", "images"]))
        .status
        .success());
    let podman = PodmanService::start();
    let mut load = farm(p, &home, &["image", "load", "app"]);
    load.env("DOCKER_HOST", podman.docker_host());
    let out = run(&mut load);
    assert!(out.status.success());
    let line = stdout(&out);
    assert!(
        line.starts_with("farm-app:0.1.0 sha256:"),
        "prints the reference and image ID: {line}"
    );

    let port = free_port();
    let id = tool(podman.command().args([
        "run",
        "-d",
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "farm-app:0.1.0",
        "--port",
        &port.to_string(),
    ]));
    assert!(!id.trim().is_empty());
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(60));
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        stdout(&out)
    };
    let health = get("/health");
    assert!(health.ends_with("\n200") && health.contains("\"ok\""), "{health}");
    let index = get("/");
    assert!(
        index.ends_with("\n200") && index.contains("<div id=\"root\">"),
        "serves the frontend's index.html: {index}"
    );
}

#[test]
fn push_with_auth_pulls_back_identical_and_skips_what_is_there() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = s.project.path();
    let home = shared_farm_home();
    assert!(run(&mut farm(p, &home, &["build", "--hermetic", "images"]))
        .status
        .success());
    let registry = Registry::start_with_htpasswd("farmer", "s3cret-pass");
    let push = |user: &str, pass: &str| {
        let mut c = farm(p, &home, &["push", "--registry", &registry.url, "app"]);
        c.env("FARM_REGISTRY_USERNAME", user)
            .env("FARM_REGISTRY_PASSWORD", pass);
        run(&mut c)
    };
    let bad = push("farmer", "wrong-pass");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("401") && !stderr(&bad).contains("wrong-pass"),
        "clear, and no secret: {}",
        stderr(&bad)
    );

    let out = push("farmer", "s3cret-pass");
    assert!(out.status.success());
    let refs = stdout(&out);
    let by_digest = refs
        .lines()
        .find(|l| l.contains("@sha256:"))
        .expect("a digest reference")
        .trim()
        .to_string();
    let digest = manifest(p)["outputs"]["image.app"]["metadata"]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(by_digest.ends_with(&digest), "{by_digest} is the built manifest");
    assert!(stderr(&out).contains("already there"), "{}", stderr(&out));

    let pulled = tempfile::tempdir().unwrap();
    let dest = pulled.path().join("pulled");
    tool(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--src-creds", "farmer:s3cret-pass"])
            .arg(format!("docker://{}", by_digest.trim_start_matches("http://")))
            .arg(format!("oci:{}:pulled", dest.display())),
    );
    let inspect: serde_json::Value = serde_json::from_str(&tool(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:pulled", dest.display())),
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], digest, "pulled back by digest: the same image");

    let again = push("farmer", "s3cret-pass");
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("app: 0 blobs uploaded"),
        "a second push uploads nothing: {}",
        stderr(&again)
    );
}

#[test]
fn deploy_files_pin_every_image_by_digest_and_are_stable() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = s.project.path();
    let home = shared_farm_home();
    // A stand-in MongoDB image in the local registry (the real one's registry is unreachable here).
    assert!(run(&mut farm(p, &home, &["build", "--hermetic", "images"]))
        .status
        .success());
    let mongo_ref = format!("{}/library/mongo:7.0", s.registry.url.trim_start_matches("http://"));
    tool(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!(
                "oci:{}:{}",
                p.join(".farm/out/images/app").display(),
                manifest(p)["project"]["version"].as_str().unwrap()
            ))
            .arg(format!("docker://{mongo_ref}")),
    );
    let toml = p.join("farm.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "\n[deploy]\ncompose = true\nkubernetes = true\nmongodb = \"{mongo_ref}\"\n"
    ));
    std::fs::write(&toml, text).unwrap();
    assert!(
        run(&mut farm(p, &home, &["lock"])).status.success(),
        "locks the MongoDB image's digest"
    );
    let lock = std::fs::read_to_string(p.join("farm.lock")).unwrap();
    assert!(
        lock.contains("name = \"mongodb\"") && lock.contains("digest = \"sha256:"),
        "{lock}"
    );

    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let read = |rel: &str| std::fs::read(p.join(".farm/out/deploy").join(rel)).unwrap();
    let files = [
        "docker-compose.yml",
        "kubernetes/app.yaml",
        "kubernetes/mongodb.yaml",
        "kubernetes/ollama.yaml",
    ];
    let first: Vec<Vec<u8>> = files.iter().map(|f| read(f)).collect();
    for (f, bytes) in files.iter().zip(&first) {
        let text = String::from_utf8(bytes.clone()).unwrap();
        let docs: Vec<yaml_rust2::Yaml> =
            yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!docs.is_empty(), "{f} parses as YAML");
        for image in text.lines().filter(|l| l.trim_start().starts_with("image:")) {
            assert!(image.contains("@sha256:"), "{f}: {image} is pinned by digest");
        }
    }
    let compose = String::from_utf8(first[0].clone()).unwrap();
    assert!(compose.contains("mongodb:") && compose.contains("ollama:") && compose.contains("healthcheck:"));
    let mongo_pvc = String::from_utf8(first[2].clone()).unwrap();
    assert!(mongo_pvc.contains("kind: PersistentVolumeClaim"));
    assert!(manifest(p)["outputs"]["deploy"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    assert!(run(&mut farm(p, &home, &["build", "--hermetic", "--no-cache"]))
        .status
        .success());
    let second: Vec<Vec<u8>> = files.iter().map(|f| read(f)).collect();
    assert_eq!(first, second, "deploy files are byte-identical across builds");
}
