//! farm-remote against a real REAPI server (BuildGrid, cache-only): blobs
//! round-trip through batches and ByteStream, the ActionCache keeps what is
//! written, a blob changed on the server's disk is refused, and a server
//! that is not there or an address that is not one give clear errors.

use std::time::Duration;

use farm_remote::proto::{ActionResult, OutputFile};
use farm_remote::{digest_of, BlobData, Client, Error, RemoteConfig};
use farm_testkit::buildgrid::BuildGrid;
use farm_testkit::{free_port, require_tool};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn config(url: &str) -> RemoteConfig {
    RemoteConfig {
        url: url.to_string(),
        ..Default::default()
    }
}

async fn connect(url: &str) -> Result<Client, Error> {
    Client::connect(&config(url), Duration::from_secs(5), Duration::from_secs(60)).await
}

/// Bytes that are not all alike, so a shifted or truncated chunk shows.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[0] ^ seed)
        .collect()
}

/// Small blobs go in a batch and a 3 MiB one through ByteStream; all read
/// back identical, FindMissingBlobs then finds none missing, and a second
/// upload sends nothing. The ActionCache returns what was written and
/// nothing for an unknown action. Capabilities name SHA-256.
#[test]
fn blobs_and_action_results_round_trip() {
    if !require_tool("bgd") {
        return;
    }
    let server = BuildGrid::start();
    rt().block_on(async {
        let c = connect(&server.url).await.unwrap();
        let caps = c.capabilities().await.unwrap();
        let cache = caps.cache_capabilities.unwrap();
        assert!(
            cache
                .digest_functions
                .contains(&(farm_remote::proto::digest_function::Value::Sha256 as i32)),
            "{cache:?}"
        );

        let small = pattern(1000, 1);
        let empty = vec![];
        let large = pattern(3 << 20, 2);
        let dir = tempfile::tempdir().unwrap();
        let large_file = dir.path().join("large");
        std::fs::write(&large_file, &large).unwrap();
        let digests = [digest_of(&small), digest_of(&empty), digest_of(&large)];
        // The empty blob is always there (REAPI): only two are missing.
        assert_eq!(c.find_missing(&digests).await.unwrap().len(), 2);
        let sent = c
            .upload(vec![
                (digests[0].clone(), BlobData::Bytes(small.clone())),
                (digests[1].clone(), BlobData::Bytes(empty.clone())),
                (digests[2].clone(), BlobData::File(large_file.clone())),
            ])
            .await
            .unwrap();
        assert_eq!(sent, 1000 + (3 << 20));
        assert!(c.find_missing(&digests).await.unwrap().is_empty());
        let again = c
            .upload(vec![(digests[2].clone(), BlobData::File(large_file))])
            .await
            .unwrap();
        assert_eq!(again, 0, "a blob the CAS has is not sent again");
        let back = c.read_blobs(&digests).await.unwrap();
        assert_eq!(back[0], small);
        assert_eq!(back[1], empty);
        assert!(back[2] == large, "the ByteStream read gives the same 3 MiB");

        let action = digest_of(b"an action");
        assert_eq!(c.get_action_result(&action).await.unwrap(), None);
        let result = ActionResult {
            output_files: vec![OutputFile {
                path: "out/x".into(),
                digest: Some(digests[0].clone()),
                ..Default::default()
            }],
            exit_code: 0,
            ..Default::default()
        };
        c.update_action_result(&action, result.clone()).await.unwrap();
        let got = c.get_action_result(&action).await.unwrap().unwrap();
        assert_eq!(got.output_files, result.output_files);
    });
}

/// A blob whose bytes were changed in the server's storage is refused on
/// read, naming the digest, through a batch and through ByteStream alike.
#[test]
fn a_blob_changed_on_the_server_is_refused() {
    if !require_tool("bgd") {
        return;
    }
    let server = BuildGrid::start();
    rt().block_on(async {
        let c = connect(&server.url).await.unwrap();
        let blobs = [pattern(100, 3), pattern(2 << 20, 4)];
        for b in &blobs {
            c.upload(vec![(digest_of(b), BlobData::Bytes(b.clone()))])
                .await
                .unwrap();
        }
        for b in &blobs {
            let d = digest_of(b);
            let on_disk = find_file(&server.cas_dir(), &d.hash[2..])
                .unwrap_or_else(|| panic!("BuildGrid keeps {} under {}", d.hash, server.cas_dir().display()));
            let mut evil = b.clone();
            evil[0] ^= 0xff;
            std::fs::write(&on_disk, &evil).unwrap();
            let e = c.read_blob(&d).await.unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(&d.hash), "{e}");
        }
    });
}

/// HMAC-SHA-256 (RFC 2104), to sign the test's JWTs.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// An HS256 JWT for `sub`, valid for an hour, signed with `secret`.
fn jwt(secret: &str, sub: &str) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64(serde_json::json!({"sub": sub, "exp": exp}).to_string().as_bytes());
    let signed = format!("{head}.{claims}");
    let sig = b64(&hmac_sha256(secret.as_bytes(), signed.as_bytes()));
    format!("{signed}.{sig}")
}

/// A server that requires a bearer JWT: without a token, and with one
/// signed by another key, a call is refused with an Auth error that names
/// the server and points at the token; with a good token it succeeds. The
/// token never appears in the error.
#[test]
fn a_bearer_token_is_sent_and_a_refusal_is_a_clear_error() {
    if !require_tool("bgd") {
        return;
    }
    let secret = "farm-test-secret-0123456789abcdef";
    let server = BuildGrid::start_with_jwt_secret(secret);
    rt().block_on(async {
        let with = |token: Option<String>| {
            let url = server.url.clone();
            async move {
                let cfg = RemoteConfig {
                    url,
                    token,
                    ..Default::default()
                };
                Client::connect(&cfg, Duration::from_secs(5), Duration::from_secs(60))
                    .await
                    .unwrap()
            }
        };
        let blob = digest_of(b"x");
        let forged = jwt("another-secret-0123456789abcdef0", "farm");
        for (what, c) in [
            ("no token", with(None).await),
            ("a forged token", with(Some(forged.clone())).await),
        ] {
            let e = c.find_missing(std::slice::from_ref(&blob)).await.unwrap_err();
            assert!(matches!(e, Error::Auth { .. }), "{what}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(&server.url) && msg.contains("token"), "{what}: {msg}");
            assert!(!msg.contains(&forged), "{what}: {msg}");
        }
        let c = with(Some(jwt(secret, "farm"))).await;
        assert_eq!(c.find_missing(std::slice::from_ref(&blob)).await.unwrap(), vec![blob]);
    });
}

fn find_file(dir: &std::path::Path, suffix: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, suffix) {
                return Some(f);
            }
        } else if p.file_name()?.to_string_lossy().ends_with(suffix) {
            return Some(p);
        }
    }
    None
}

/// Nothing listening: an Unreachable error naming the address. Not a gRPC
/// address: an Address error before any connection, with a hint.
#[test]
fn a_missing_server_and_a_bad_address_are_clear_errors() {
    rt().block_on(async {
        let port = free_port();
        let url = format!("grpc://127.0.0.1:{port}");
        let e = connect(&url).await.err().expect("nothing listens there");
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&url), "{e}");

        for (bad, why) in [
            ("http://127.0.0.1:1", "scheme"),
            ("grpc://127.0.0.1", "no port"),
            ("grpc://127.0.0.1:1/main", "instance name"),
            ("not a url", "grpc://HOST:PORT"),
        ] {
            let e = connect(bad).await.err().unwrap();
            assert!(matches!(e, Error::Address { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        // Credentials in the address never reach a message.
        let e = connect("grpc://user:hunter2@127.0.0.1").await.err().unwrap();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    });
}
