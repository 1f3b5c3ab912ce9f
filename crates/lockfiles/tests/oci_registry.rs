//! The OCI client and the model/image resolvers against a real registry
//! (distribution, Debian package `docker-registry`) on loopback: anonymous,
//! with htpasswd Basic auth, and with Docker token (Bearer) auth served by a
//! token server in this test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use farm_lockfiles::http::{Client, ClientOptions};
use farm_lockfiles::integrity::sha256_of;
use farm_lockfiles::oci::{self, Credentials, OciError, RegistryClient};
use farm_lockfiles::Integrity;
use farm_testkit::{require_tool, Registry};

fn http() -> Client {
    Client::new(ClientOptions {
        attempts: 2,
        first_backoff: Duration::from_millis(50),
        ..Default::default()
    })
}

/// Deterministic filler bytes standing in for model weights.
fn weights(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct PushedModel {
    manifest_digest: Integrity,
    manifest: Vec<u8>,
    config: Vec<u8>,
    layers: Vec<(Vec<u8>, &'static str)>,
}

/// Pushes an Ollama-format model (Docker v2 manifest, Ollama layer media
/// types) with the client's push side: the weights chunked, the rest whole.
async fn push_model(client: &RegistryClient, dir: &Path, repo: &str, tag: &str) -> PushedModel {
    let weights = weights(3 * 1024 * 1024 + 123);
    let template = b"{{ .System }}\n{{ .Prompt }}".to_vec();
    let weights_path = dir.join("weights.bin");
    let template_path = dir.join("template.txt");
    std::fs::write(&weights_path, &weights).unwrap();
    std::fs::write(&template_path, &template).unwrap();
    let (wd, td) = (sha256_of(&weights), sha256_of(&template));
    assert!(
        client
            .push_blob(repo, &wd, &weights_path, Some(1024 * 1024))
            .await
            .unwrap(),
        "weights uploaded"
    );
    assert!(
        client.push_blob(repo, &td, &template_path, None).await.unwrap(),
        "template uploaded"
    );
    assert!(
        !client.push_blob(repo, &td, &template_path, None).await.unwrap(),
        "an existing blob is not re-sent"
    );
    let config = br#"{"model_format":"gguf","model_family":"llama","model_type":"1B","file_type":"Q4_0","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let cd = client.push_blob_bytes(repo, &config).await.unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"{wd}","size":{}}},{{"mediaType":"application/vnd.ollama.image.template","digest":"{td}","size":{}}}]}}"#,
        oci::DOCKER_MANIFEST_V2,
        config.len(),
        weights.len(),
        template.len()
    )
    .into_bytes();
    let manifest_digest = client
        .put_manifest(repo, tag, &manifest, oci::DOCKER_MANIFEST_V2)
        .await
        .unwrap();
    assert_eq!(manifest_digest, sha256_of(&manifest));
    PushedModel {
        manifest_digest,
        manifest,
        config,
        layers: vec![
            (weights, "application/vnd.ollama.image.model"),
            (template, "application/vnd.ollama.image.template"),
        ],
    }
}

/// Locks `reference` and checks the lock against what was pushed, then
/// fetches every blob by its locked digest and compares the bytes.
async fn lock_and_fetch(client: &RegistryClient, reference: &str, pushed: &PushedModel, dir: &Path) {
    let locked = oci::resolve_model(client, reference).await.unwrap();
    assert_eq!(locked.reference, reference);
    assert_eq!(locked.manifest.digest, pushed.manifest_digest);
    assert_eq!(locked.manifest.media_type, oci::DOCKER_MANIFEST_V2);
    assert_eq!(locked.manifest.size, pushed.manifest.len() as u64);
    assert_eq!(locked.config.digest, sha256_of(&pushed.config));
    assert_eq!(
        locked.config.media_type,
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(locked.layers.len(), 2);
    for (layer, (bytes, media_type)) in locked.layers.iter().zip(&pushed.layers) {
        assert_eq!(layer.media_type, *media_type);
        assert_eq!(layer.size, bytes.len() as u64);
        let dest = dir.join(layer.digest.hex());
        let size = client.get_blob(&locked.repository, &layer.digest, &dest).await.unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert!(std::fs::read(&dest).unwrap() == *bytes, "blob {} differs", layer.digest);
    }
    let dest = dir.join("config");
    client
        .get_blob(&locked.repository, &locked.config.digest, &dest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), pushed.config);
    // The manifest by its locked digest is the same bytes (what an offline models dir stores).
    let by_digest = client
        .get_manifest(
            &locked.repository,
            &locked.manifest.digest.to_string(),
            &oci::MODEL_MANIFEST_TYPES,
        )
        .await
        .unwrap();
    assert_eq!(by_digest.bytes, pushed.manifest);
}

/// Proves a model pushed in Ollama's format locks by tag to its manifest,
/// config and layer digests (for `name`, `name:tag` and `ns/name:tag`), and
/// that every blob then fetches by digest with verified bytes.
#[tokio::test]
async fn ollama_model_locks_by_tag_and_every_blob_fetches_verified() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let client = RegistryClient::anonymous(&http(), &reg.url).unwrap();
    client.ping().await.unwrap();
    let pushed = push_model(&client, work.path(), "library/tiny", "latest").await;
    lock_and_fetch(&client, "tiny", &pushed, work.path()).await;
    lock_and_fetch(&client, "tiny:latest", &pushed, work.path()).await;

    // Mounting from another repository needs no upload; a namespaced name resolves as is.
    let weights = sha256_of(&pushed.layers[0].0);
    assert!(client
        .mount_blob("someone/tiny", &weights, "library/tiny")
        .await
        .unwrap());
    assert_eq!(
        client.blob_exists("someone/tiny", &weights).await.unwrap(),
        Some(pushed.layers[0].0.len() as u64)
    );
    for (bytes, _) in &pushed.layers {
        assert!(client
            .mount_blob("someone/tiny", &sha256_of(bytes), "library/tiny")
            .await
            .unwrap());
    }
    client
        .mount_blob("someone/tiny", &sha256_of(&pushed.config), "library/tiny")
        .await
        .unwrap();
    client
        .put_manifest("someone/tiny", "q4", &pushed.manifest, oci::DOCKER_MANIFEST_V2)
        .await
        .unwrap();
    lock_and_fetch(&client, "someone/tiny:q4", &pushed, work.path()).await;

    // A blob the registry lacks is reported, and leaves no file behind.
    let missing = sha256_of(b"not pushed");
    assert_eq!(client.blob_exists("library/tiny", &missing).await.unwrap(), None);
    assert!(!client
        .mount_blob("someone/tiny", &missing, "library/tiny")
        .await
        .unwrap());
    let dest = work.path().join("missing");
    let err = client.get_blob("library/tiny", &missing, &dest).await.unwrap_err();
    assert!(matches!(err, OciError::Status { status: 404, .. }), "{err}");
    assert!(!dest.exists());

    let err = oci::resolve_model(&client, "tiny:nope").await.unwrap_err().to_string();
    assert!(
        err.contains("404") && err.contains("MANIFEST_UNKNOWN") && err.contains("hint"),
        "{err}"
    );
}

/// Proves `resolve_image` pins a multi-arch tag to its index digest, a
/// single-arch tag to its manifest digest, and checks a reference's own digest.
#[tokio::test]
async fn image_tags_resolve_to_index_or_manifest_digests() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start();
    let client = RegistryClient::anonymous(&http(), &reg.url).unwrap();
    let repo = "library/mongo";
    let config_bytes = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config = client.push_blob_bytes(repo, config_bytes).await.unwrap();
    let config_len = config_bytes.len();
    let manifest = |arch: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_len}}},"layers":[],"annotations":{{"arch":"{arch}"}}}}"#,
            oci::OCI_MANIFEST
        )
    };
    let (amd, arm) = (manifest("amd64"), manifest("arm64"));
    let amd_d = client
        .put_manifest(
            repo,
            &sha256_of(amd.as_bytes()).to_string(),
            amd.as_bytes(),
            oci::OCI_MANIFEST,
        )
        .await
        .unwrap();
    let arm_d = client
        .put_manifest(
            repo,
            &sha256_of(arm.as_bytes()).to_string(),
            arm.as_bytes(),
            oci::OCI_MANIFEST,
        )
        .await
        .unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{m}","digest":"{amd_d}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{m}","digest":"{arm_d}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        oci::OCI_INDEX,
        amd.len(),
        arm.len(),
        m = oci::OCI_MANIFEST
    );
    let index_d = client
        .put_manifest(repo, "7.0", index.as_bytes(), oci::OCI_INDEX)
        .await
        .unwrap();
    client
        .put_manifest(repo, "7.0-amd64", amd.as_bytes(), oci::OCI_MANIFEST)
        .await
        .unwrap();

    assert_eq!(oci::resolve_image(&client, "mongo:7.0").await.unwrap(), index_d);
    let host = reg.host.as_str();
    assert_eq!(
        oci::resolve_image(&client, &format!("{host}/library/mongo:7.0"))
            .await
            .unwrap(),
        index_d
    );
    assert_eq!(oci::resolve_image(&client, "mongo:7.0-amd64").await.unwrap(), amd_d);
    assert_eq!(
        oci::resolve_image(&client, &format!("mongo:7.0@{index_d}"))
            .await
            .unwrap(),
        index_d
    );
    let err = oci::resolve_image(&client, "mongo:6.0").await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    let fetched = client
        .get_manifest(repo, "7.0", &oci::IMAGE_MANIFEST_TYPES)
        .await
        .unwrap();
    assert_eq!(
        (fetched.media_type.as_str(), fetched.digest.clone()),
        (oci::OCI_INDEX, index_d)
    );
    // Asking only for model manifests must not silently accept the index.
    let err = client
        .get_manifest(repo, "7.0", &oci::MODEL_MANIFEST_TYPES)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(oci::OCI_INDEX) || err.contains("404"), "{err}");
}

/// Proves htpasswd Basic auth: the right login pushes and locks, a wrong
/// password is a clear 401 naming the user and the credentials' source
/// (never the password), and no login says how to log in.
#[tokio::test]
async fn basic_auth_accepts_the_right_login_and_explains_a_wrong_one() {
    if !require_tool("docker-registry") || !require_tool("htpasswd") {
        return;
    }
    let reg = Registry::start_with_htpasswd("alice", "right-password");
    let work = tempfile::tempdir().unwrap();

    let good = RegistryClient::new(&http(), &reg.url, Some(Credentials::new("alice", "right-password"))).unwrap();
    let pushed = push_model(&good, work.path(), "library/tiny", "latest").await;
    lock_and_fetch(&good, "tiny:latest", &pushed, work.path()).await;

    let bad = RegistryClient::new(&http(), &reg.url, Some(Credentials::new("alice", "wrong-password"))).unwrap();
    let err = oci::resolve_model(&bad, "tiny").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains("401") && msg.contains("rejected the credentials") && msg.contains("`alice`"),
        "{msg}"
    );
    assert!(msg.contains("explicit") && !msg.contains("wrong-password"), "{msg}");

    let anonymous = RegistryClient::anonymous(&http(), &reg.url).unwrap();
    let msg = oci::resolve_model(&anonymous, "tiny").await.unwrap_err().to_string();
    assert!(
        msg.contains("no credentials were found") && msg.contains("FARM_REGISTRY_USERNAME"),
        "{msg}"
    );
}

/// A Docker token server: checks Basic credentials, grants what is asked,
/// and signs RS256 JWTs with a self-signed certificate (via openssl) that
/// the registry trusts through `rootcertbundle`.
struct TokenServer {
    realm: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const ISSUER: &str = "farm-test-issuer";
const SERVICE: &str = "farm-test-registry";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn start_token_server(dir: &Path, user: &'static str, password: &'static str) -> TokenServer {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=farm-test-token",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success(), "openssl could not make the token signing key");
    // x5c carries the DER certificate in standard base64, which is the PEM body.
    let pem = std::fs::read_to_string(&cert).unwrap();
    let x5c: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let head = String::from_utf8_lossy(&req).to_string();
            let authorized = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .any(|(name, value)| name.eq_ignore_ascii_case("authorization") && value.trim() == expected_auth);
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let query = url::Url::parse(&format!("http://x{target}")).unwrap();
            let access: Vec<serde_json::Value> = query
                .query_pairs()
                .filter(|(k, _)| k == "scope")
                .filter_map(|(_, v)| {
                    let mut parts = v.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                })
                .collect();
            let (status, body) = if !authorized {
                (
                    "401 Unauthorized",
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad login"}]}"#.to_string(),
                )
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                    "iat": now - 10, "jti": format!("t{}", counter.load(Ordering::SeqCst)), "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut openssl = tokio::process::Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                openssl
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(signing_input.as_bytes())
                    .await
                    .unwrap();
                let signature = openssl.wait_with_output().await.unwrap().stdout;
                (
                    "200 OK",
                    serde_json::json!({"token": format!("{signing_input}.{}", b64url(&signature))}).to_string(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        }
    });
    TokenServer { realm, requests, task }
}

/// Proves Bearer token auth end to end: the client follows the registry's
/// challenge to the token server with its Basic login, retries with the
/// token, reuses tokens per scope, and a wrong login is a clear 401.
#[tokio::test]
async fn bearer_token_auth_follows_the_challenge_and_caches_tokens() {
    if !require_tool("docker-registry") || !require_tool("openssl") {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let tokens = start_token_server(keys.path(), "bob", "token-password").await;
    let cert: PathBuf = keys.path().join("cert.pem");
    let reg = Registry::start_with_auth(&format!(
        "auth: {{ token: {{ realm: \"{}\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {} }} }}\n",
        tokens.realm,
        cert.display()
    ));
    let work = tempfile::tempdir().unwrap();

    let client = RegistryClient::new(&http(), &reg.url, Some(Credentials::new("bob", "token-password"))).unwrap();
    let pushed = push_model(&client, work.path(), "library/tiny", "latest").await;
    // One token for the pull scope (the existence checks), one for pull,push; then reused.
    let after_push = tokens.requests.load(Ordering::SeqCst);
    assert_eq!(after_push, 2, "one token per scope is enough for the whole push");
    lock_and_fetch(&client, "tiny", &pushed, work.path()).await;
    let after_pull = tokens.requests.load(Ordering::SeqCst);
    assert_eq!(
        after_pull, after_push,
        "the pull scope's token is reused for the lock and the fetches"
    );

    let bad = RegistryClient::new(&http(), &reg.url, Some(Credentials::new("bob", "nope"))).unwrap();
    let err = oci::resolve_model(&bad, "tiny").await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains("token server answered 401") && msg.contains("`bob`") && !msg.contains("nope"),
        "{msg}"
    );
}
