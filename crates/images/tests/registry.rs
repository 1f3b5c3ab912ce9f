//! `push` against a real registry (distribution, Debian's `docker-registry`)
//! on loopback with htpasswd auth, read back by skopeo, which shares none
//! of farm's code.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use farm_images::{build_image, push, BuiltImage, Compression, ImageError, PushError, PushOptions};
use farm_lockfiles::http::{Client, ClientOptions};
use farm_lockfiles::oci::{Credentials, RegistryClient};
use farm_testkit::{require_tool, Registry};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse-battery";

fn tools_ready() -> bool {
    require_tool("docker-registry") && require_tool("htpasswd") && require_tool("skopeo")
}

fn client(reg: &Registry, password: &str) -> RegistryClient {
    let http = Client::new(ClientOptions {
        attempts: 2,
        first_backoff: Duration::from_millis(50),
        ..Default::default()
    });
    RegistryClient::new(&http, &reg.url, Some(Credentials::new(USER, password))).unwrap()
}

fn build(root: &Path, compression: Compression) -> (std::path::PathBuf, BuiltImage) {
    let s = sources(&root.join("src"));
    let mut spec = app_spec(&s);
    spec.compression = compression;
    let layout = root.join("layout");
    let built = build_image(&spec, &layout, None).unwrap();
    (layout, built)
}

/// Pulls `reference` with skopeo into a fresh OCI layout and returns it.
fn skopeo_pull(reg: &Registry, reference: &str, dest: &Path) {
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{}/{reference}", reg.host),
        &format!("oci:{}:pulled", dest.display()),
    ]));
}

/// Proves a push round-trips: every blob is uploaded (the base layer in
/// chunks), the manifest goes up under both tags, skopeo pulls back the
/// very same manifest and blobs by digest and by tag, a second push
/// uploads nothing, and a push to another repository mounts every blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_round_trips_through_a_real_registry() {
    if !tools_ready() {
        return;
    }
    let reg = Registry::start_with_htpasswd(USER, PASSWORD);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, built) = build(tmp.path(), Compression::Gzip);
    let client = client(&reg, PASSWORD);
    let tags = vec!["0.1.0".to_string(), "latest".to_string()];
    let options = PushOptions {
        chunk_size: 256 * 1024,
        ..Default::default()
    };
    assert!(
        built.layers[0].size > options.chunk_size,
        "the base layer is sent in chunks"
    );

    let report = push(&layout, &client, "team/farm-app", &tags, &options)
        .await
        .unwrap_or_else(|e| panic!("{e}\nregistry log:\n{}", reg.log()));
    assert_eq!(
        (report.pushed_blobs, report.skipped_blobs, report.mounted_blobs),
        (5, 0, 0)
    );
    assert_eq!(report.manifest_digest, built.manifest_digest);
    assert_eq!(
        report.references,
        [
            format!("{}/team/farm-app@{}", reg.host, built.manifest_digest),
            format!("{}/team/farm-app:0.1.0", reg.host),
            format!("{}/team/farm-app:latest", reg.host),
        ]
    );

    let log = reg.log();
    assert!(
        log.contains("http.request.method=PATCH") || log.contains(r#""http.request.method":"PATCH""#),
        "the large layer went up in PATCH chunks:\n{log}"
    );

    let pulled = tmp.path().join("pulled");
    skopeo_pull(&reg, &format!("team/farm-app@{}", built.manifest_digest), &pulled);
    let ours = files(&layout);
    let theirs = files(&pulled);
    for layer in &built.layers {
        let key = format!("blobs/sha256/{}", layer.digest.hex());
        assert!(
            theirs.get(&key) == ours.get(&key),
            "layer {} differs after the round trip",
            layer.name
        );
    }
    let manifest_key = format!("blobs/sha256/{}", built.manifest_digest.hex());
    assert_eq!(
        theirs.get(&manifest_key),
        ours.get(&manifest_key),
        "same manifest bytes"
    );
    let config_key = format!("blobs/sha256/{}", built.config_digest.hex());
    assert_eq!(theirs.get(&config_key), ours.get(&config_key), "same config bytes");

    let by_tag = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{}/team/farm-app:latest", reg.host),
    ]));
    let info: serde_json::Value = serde_json::from_slice(&by_tag.stdout).unwrap();
    assert_eq!(info["Digest"], built.manifest_digest.to_string());

    let again = push(&layout, &client, "team/farm-app", &tags, &options).await.unwrap();
    assert_eq!(
        (again.pushed_blobs, again.skipped_blobs),
        (0, 5),
        "a second push uploads nothing"
    );
    assert_eq!(again.manifest_digest, built.manifest_digest);

    let mount = PushOptions {
        mount_from: Some("team/farm-app".into()),
        ..Default::default()
    };
    let mounted = push(&layout, &client, "other/app", &["v1".to_string()], &mount)
        .await
        .unwrap();
    assert_eq!(
        (mounted.pushed_blobs, mounted.mounted_blobs),
        (0, 5),
        "blobs mounted, not uploaded"
    );
}

/// Proves the zstd image survives a push: the registry serves it back
/// and skopeo reads its config through the zstd layers' manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_image_pushes_and_pulls() {
    if !tools_ready() {
        return;
    }
    let reg = Registry::start_with_htpasswd(USER, PASSWORD);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, built) = build(tmp.path(), Compression::Zstd);
    let report = push(
        &layout,
        &client(&reg, PASSWORD),
        "farm-app",
        &[],
        &PushOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        report.references,
        [format!("{}/farm-app@{}", reg.host, built.manifest_digest)]
    );
    let pulled = tmp.path().join("pulled");
    skopeo_pull(&reg, &format!("farm-app@{}", built.manifest_digest), &pulled);
    let manifest = json(&blob(&pulled, &built.manifest_digest.to_string()));
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
}

/// Proves wrong credentials fail with a 401 that names the registry and
/// the user, and that neither the message nor the Debug form shows the
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error_without_the_password() {
    if !tools_ready() {
        return;
    }
    let reg = Registry::start_with_htpasswd(USER, PASSWORD);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = build(tmp.path(), Compression::Gzip);
    let wrong = "wrong-but-secret-password";
    let err = push(
        &layout,
        &client(&reg, wrong),
        "team/farm-app",
        &["0.1.0".into()],
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::Push(PushError::Registry { .. })), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("401") && msg.contains(&reg.host) && msg.contains(USER),
        "{msg}"
    );
    assert!(
        !msg.contains(wrong) && !format!("{err:?}").contains(wrong),
        "password leaked: {msg}"
    );
    assert!(fs::metadata(&layout).is_ok());
}
