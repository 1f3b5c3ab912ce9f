//! The OCI client's defences against a registry that misbehaves: wrong
//! bytes for a digest, a lying `Docker-Content-Digest`, a body cut short,
//! and transient 503s. A scripted loopback server plays the registry,
//! since a real one never serves bad bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_lockfiles::http::{Client, ClientOptions};
use farm_lockfiles::integrity::sha256_of;
use farm_lockfiles::oci::{self, OciError, RegistryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Raw HTTP responses per "METHOD path", served in order (the last repeats).
type Script = HashMap<String, Vec<Vec<u8>>>;

struct Scripted {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8], content_length: Option<usize>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        content_length.unwrap_or(body.len())
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn serve(script: Script) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen = hits.clone();
    let task = tokio::spawn(async move {
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
            let head = String::from_utf8_lossy(&req).to_string();
            let mut words = head.split_whitespace();
            let key = format!("{} {}", words.next().unwrap_or(""), words.next().unwrap_or(""));
            let n = {
                let mut hits = seen.lock().unwrap();
                let n = hits.entry(key.clone()).or_default();
                *n += 1;
                *n
            };
            let resp = match script.get(&key) {
                Some(list) => list[(n - 1).min(list.len() - 1)].clone(),
                None => response("404 Not Found", &[], b"", None),
            };
            let _ = conn.write_all(&resp).await;
            let _ = conn.shutdown().await;
        }
    });
    Scripted { base, hits, task }
}

fn client(base: &str) -> RegistryClient {
    let http = Client::new(ClientOptions {
        attempts: 3,
        first_backoff: Duration::from_millis(10),
        ..Default::default()
    });
    RegistryClient::anonymous(&http, base).unwrap()
}

/// Proves a blob whose bytes do not hash to the requested digest is an
/// error naming both digests, and leaves no file behind.
#[tokio::test]
async fn blob_with_wrong_bytes_is_rejected_and_removed() {
    let good = sha256_of(b"the real weights");
    let server = serve(Script::from([(
        format!("GET /v2/library/tiny/blobs/{good}"),
        vec![response("200 OK", &[], b"tampered weights", None)],
    )]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let err = client(&server.base)
        .get_blob("library/tiny", &good, &dest)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&good.to_string()) && msg.contains(&sha256_of(b"tampered weights").to_string()),
        "{msg}"
    );
    assert!(!dest.exists(), "a blob that failed verification must not stay on disk");
}

/// Proves a manifest is checked against `Docker-Content-Digest` when fetched
/// by tag, and against the digest itself when fetched by digest.
#[tokio::test]
async fn manifests_must_match_their_digest() {
    let bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{}},"layers":[]}}"#,
        oci::DOCKER_MANIFEST_V2
    );
    let claimed = sha256_of(b"some other manifest").to_string();
    let asked = sha256_of(b"the manifest we pinned");
    let server = serve(Script::from([
        (
            "GET /v2/library/tiny/manifests/latest".to_string(),
            vec![response(
                "200 OK",
                &[
                    ("content-type", oci::DOCKER_MANIFEST_V2),
                    ("docker-content-digest", &claimed),
                ],
                bytes.as_bytes(),
                None,
            )],
        ),
        (
            format!("GET /v2/library/tiny/manifests/{asked}"),
            vec![response(
                "200 OK",
                &[("content-type", oci::DOCKER_MANIFEST_V2)],
                bytes.as_bytes(),
                None,
            )],
        ),
    ]))
    .await;
    let c = client(&server.base);
    let err = oci::resolve_model(&c, "tiny").await.unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&claimed), "{err}");
    let err = c
        .get_manifest("library/tiny", &asked.to_string(), &oci::MODEL_MANIFEST_TYPES)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
}

/// Proves transient 503s are retried and a body cut short is retried and
/// then reported, without leaving a partial file.
#[tokio::test]
async fn transient_failures_are_retried_and_truncation_is_never_accepted() {
    let blob = b"weights that arrive on the third try".to_vec();
    let digest = sha256_of(&blob);
    let short = sha256_of(b"cut short");
    let server = serve(Script::from([
        (
            format!("GET /v2/library/tiny/blobs/{digest}"),
            vec![
                response("503 Service Unavailable", &[], b"", None),
                response("503 Service Unavailable", &[], b"", None),
                response("200 OK", &[], &blob, None),
            ],
        ),
        (
            format!("GET /v2/library/tiny/blobs/{short}"),
            vec![response("200 OK", &[], b"cut", Some(9))],
        ),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&server.base);
    let size = c
        .get_blob("library/tiny", &digest, &dir.path().join("ok"))
        .await
        .unwrap();
    assert_eq!(size, blob.len() as u64);
    assert_eq!(std::fs::read(dir.path().join("ok")).unwrap(), blob);
    assert_eq!(
        server.hits.lock().unwrap()[&format!("GET /v2/library/tiny/blobs/{digest}")],
        3
    );

    let dest = dir.path().join("short");
    let err = c.get_blob("library/tiny", &short, &dest).await.unwrap_err();
    assert!(matches!(err, OciError::Transport { attempts: 3, .. }), "{err}");
    assert!(!dest.exists());
}
