//! Downloads from servers that misbehave on purpose: bodies that never end
//! or outgrow what the lock pins, and error paths for URLs that carry
//! credentials. The server is a few lines of std::net on 127.0.0.1, so each
//! test controls every byte the client sees.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use farm_lockfiles::http::{Client, ClientOptions, Expected, HttpError, SizeLimit};
use farm_lockfiles::integrity::sha256_of;

/// A loopback server: `respond` gets each connection after its request head
/// was read, and returns how many body bytes it managed to send.
struct Hostile {
    base: String,
    requests: Arc<AtomicUsize>,
    /// Bytes sent per finished connection.
    sent: mpsc::Receiver<u64>,
}

fn serve(respond: impl Fn(&mut TcpStream, &str) -> u64 + Send + Sync + 'static) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let (tx, sent) = mpsc::channel();
    let respond = Arc::new(respond);
    let counter = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let (respond, counter, tx) = (respond.clone(), counter.clone(), tx.clone());
            std::thread::spawn(move || {
                let head = read_head(&mut conn);
                counter.fetch_add(1, Ordering::SeqCst);
                let n = respond(&mut conn, &head);
                let _ = tx.send(n);
            });
        }
    });
    Hostile { base, requests, sent }
}

fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Zeros until the client hangs up; the count of bytes the kernel took.
fn endless(conn: &mut TcpStream, head: &str) -> u64 {
    if conn.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let chunk = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    // A bound only so a broken client cannot hang the test forever.
    while sent < 8 << 30 {
        match conn.write(&chunk) {
            Ok(n) if n > 0 => sent += n as u64,
            _ => break,
        }
    }
    sent
}

fn client() -> Client {
    Client::new(ClientOptions {
        attempts: 3,
        first_backoff: Duration::from_millis(10),
        ..Default::default()
    })
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The server's count for its one connection, once the client let go. It
/// waits asynchronously: the client's connection is closed by a task on
/// this same runtime.
async fn bytes_sent(server: &Hostile) -> u64 {
    for _ in 0..600 {
        if let Ok(n) = server.sent.try_recv() {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server still sends: the client never hung up");
}

#[tokio::test]
async fn an_endless_body_stops_just_past_the_locked_size_and_leaves_nothing() {
    let server = serve(|conn, _| endless(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("download");
    let url = format!("{}/pool/main/e/endless/endless_1.0_amd64.deb", server.base);
    let locked = sha256_of(b"what the lock pinned");
    let expected = Expected {
        integrity: Some(&locked),
        size: Some(100_000),
    };

    let err = client()
        .download_expected(&url, expected, &dest, &|_, _| {})
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            HttpError::TooLarge {
                limit: SizeLimit::Expected(100_000),
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("endless_1.0_amd64.deb")
            && msg.contains("more than 100000 bytes")
            && msg.contains("expected size"),
        "{msg}"
    );
    // Stopped at the first chunk past the size, and says how far it got.
    let HttpError::TooLarge { observed, .. } = err else {
        unreachable!()
    };
    assert!(
        observed > 100_000 && observed < 100_000 + (1 << 20),
        "observed {observed}"
    );
    assert!(msg.contains(&format!("stopped reading at {observed} bytes")), "{msg}");
    assert!(
        leftovers(dir.path()).is_empty(),
        "left behind: {:?}",
        leftovers(dir.path())
    );
    // Hostile, not flaky: no second attempt, and the client hung up early
    // (the server got rid of no more than the locked size plus socket buffers).
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    let sent = bytes_sent(&server).await;
    assert!(sent < 64 << 20, "the client kept reading: the server sent {sent} bytes");
}

#[tokio::test]
async fn an_endless_chunked_body_without_a_known_size_stops_at_the_cap() {
    // Chunked encoding: the server never says how long the body is.
    let server = serve(|conn, _| {
        if conn
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .is_err()
        {
            return 0;
        }
        let chunk = [b"10000\r\n".as_slice(), &vec![b'x'; 0x10000], b"\r\n"].concat();
        let mut sent = 0u64;
        while conn.write_all(&chunk).is_ok() && sent < 8 << 30 {
            sent += 0x10000;
        }
        sent
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("ollama.tgz");
    let capped = Client::new(ClientOptions {
        attempts: 2,
        first_backoff: Duration::from_millis(10),
        max_download_size: 1 << 20,
        ..Default::default()
    });
    let url = format!("{}/ollama-linux-amd64.tgz", server.base);
    let err = capped.download(&url, None, &dest, &|_, _| {}).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            HttpError::TooLarge {
                limit: SizeLimit::Cap(_),
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("more than 1048576 bytes") && msg.contains("FARM_MAX_DOWNLOAD_SIZE"),
        "{msg}"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "left behind: {:?}",
        leftovers(dir.path())
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert!(bytes_sent(&server).await < 64 << 20);
}

#[tokio::test]
async fn a_declared_length_past_the_locked_size_is_refused_before_reading() {
    let server = serve(|conn, _| {
        endless(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Length: 107374182400\r\nConnection: close\r\n\r\n",
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("download");
    let url = format!("{}/react/-/react-19.0.0.tgz", server.base);
    let expected = Expected {
        integrity: None,
        size: Some(5_000),
    };
    let err = client()
        .download_expected(&url, expected, &dest, &|_, _| {})
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            HttpError::DeclaredTooLarge {
                declared: 107374182400,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("react-19.0.0.tgz") && msg.contains("more than 5000 bytes"),
        "{msg}"
    );
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_short_body_is_an_error_and_leaves_nothing_either() {
    let server = serve(|conn, _| {
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nonly this");
        9
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("download");
    let url = format!("{}/short.whl", server.base);
    let expected = Expected {
        integrity: None,
        size: Some(1_000),
    };
    let err = client()
        .download_expected(&url, expected, &dest, &|_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HttpError::Truncated {
                expected: 1_000,
                actual: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(leftovers(dir.path()).is_empty());
}

#[tokio::test]
async fn an_exact_body_lands_and_a_cancelled_download_leaves_nothing() {
    let body = b"exactly the locked bytes".to_vec();
    let served = body.clone();
    let server = serve(move |conn, head| {
        if head.starts_with("GET /slow") {
            // One chunk, then silence: the client is cancelled while waiting.
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfirst bytes");
            std::thread::sleep(Duration::from_secs(3));
            return 11;
        }
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let _ = conn.write_all(&served);
        served.len() as u64
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("artifact");
    let integrity = sha256_of(&body);
    let expected = Expected {
        integrity: Some(&integrity),
        size: Some(body.len() as u64),
    };
    let got = client()
        .download_expected(&format!("{}/ok", server.base), expected, &dest, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(got, integrity);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(leftovers(dir.path()), ["artifact"]);

    let other = dir.path().join("cancelled");
    let c = client();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(500),
        c.download_expected(&format!("{}/slow", server.base), expected, &other, &|_, _| {}),
    )
    .await;
    assert!(cancelled.is_err(), "the download should still have been waiting");
    assert_eq!(
        leftovers(dir.path()),
        ["artifact"],
        "a dropped download leaves no part file"
    );
}

#[tokio::test]
async fn a_local_device_is_bounded_like_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("download");
    let expected = Expected {
        integrity: None,
        size: Some(4_096),
    };
    let err = client()
        .download_expected("file:///dev/zero", expected, &dest, &|_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::TooLarge { .. }), "{err}");
    assert!(leftovers(dir.path()).is_empty());
}

fn status(code: &'static str) -> impl Fn(&mut TcpStream, &str) -> u64 + Send + Sync + 'static {
    move |conn, _| {
        let body = "{\"error\":\"no\"}";
        let _ = write!(
            conn,
            "HTTP/1.1 {code}\r\nContent-Length: {}\r\nWWW-Authenticate: Basic realm=\"x\"\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        0
    }
}

fn assert_no_secret(err: &HttpError) {
    for shown in [err.to_string(), format!("{err:?}")] {
        for secret in ["hunter2", "tok-123", "sig-456"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }
}

#[tokio::test]
async fn credentials_in_urls_stay_out_of_errors() {
    for code in ["401 Unauthorized", "404 Not Found", "500 Internal Server Error"] {
        let server = serve(status(code));
        let with_secrets = server.base.replace("http://", "http://deploy:hunter2@")
            + "/npm/react/-/react-19.0.0.tgz?token=tok-123&X-Amz-Signature=sig-456";
        let dir = tempfile::tempdir().unwrap();
        let c = client();

        let err = c
            .download(&with_secrets, None, &dir.path().join("d"), &|_, _| {})
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Status { .. }), "{err}");
        assert_no_secret(&err);
        let msg = err.to_string();
        assert!(
            msg.contains("deploy:***@") && msg.contains("token=***") && msg.contains(&code[..3]),
            "the error still says which URL and user: {msg}"
        );

        let err = c.get_bytes(&with_secrets).await.unwrap_err();
        assert_no_secret(&err);
        assert!(leftovers(dir.path()).is_empty());
    }

    // Nobody listening: the transport error (whose text reqwest builds) is clean too.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let refused = format!("http://deploy:hunter2@127.0.0.1:{port}/x?access_token=tok-123");
    let err = client().get_bytes(&refused).await.unwrap_err();
    assert!(matches!(err, HttpError::Transport { .. }), "{err}");
    assert_no_secret(&err);

    // A lone token as the user name is masked whole.
    let server = serve(status("401 Unauthorized"));
    let token_user = server.base.replace("http://", "http://hunter2@") + "/simple/pip/";
    let err = client().get_bytes(&token_user).await.unwrap_err();
    assert_no_secret(&err);
    assert!(err.to_string().contains("http://***@127.0.0.1"), "{err}");
}

/// An OCI blob whose registry streams an endless body: reading stops at the
/// descriptor's size, the error names the blob, the expected and the
/// observed size, and `dest` is not left behind. A Content-Length above the
/// descriptor's size is refused before a byte is read.
#[tokio::test]
async fn an_endless_oci_blob_stops_at_the_descriptor_size() {
    use farm_lockfiles::oci::{OciError, RegistryClient};

    let server = serve(|conn, head| {
        if head.contains("/blobs/") && head.contains("declared") {
            return endless(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: 107374182400\r\nConnection: close\r\n\r\n",
            );
        }
        endless(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let registry = RegistryClient::anonymous(&client(), &server.base).unwrap();
    let digest = sha256_of(b"the model weights the manifest names");

    let err = registry
        .get_blob_expected("library/tiny", &digest, Some(200_000), &dest)
        .await
        .unwrap_err();
    let msg = err.to_string();
    let OciError::TooLarge { limit, observed, .. } = &err else {
        panic!("expected TooLarge, got {msg}")
    };
    assert_eq!(*limit, SizeLimit::Expected(200_000));
    assert!(*observed > 200_000 && *observed < 200_000 + (1 << 20), "{observed}");
    assert!(
        msg.contains(&digest.to_string())
            && msg.contains("more than 200000 bytes")
            && msg.contains(&format!("stopped reading at {observed} bytes")),
        "names the blob, the expected and the observed size: {msg}"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "left behind: {:?}",
        leftovers(dir.path())
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "not retried");
    assert!(bytes_sent(&server).await < 64 << 20);

    let err = registry
        .get_blob_expected("library/declared", &digest, Some(5_000), &dest)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::DeclaredTooLarge {
                declared: 107374182400,
                ..
            }
        ),
        "{err}"
    );
    assert!(leftovers(dir.path()).is_empty());
}

/// Without a descriptor size, a blob is still bounded: by the client's
/// `max_download_size` when the registry declares no length.
#[tokio::test]
async fn an_oci_blob_of_unknown_size_stops_at_the_cap() {
    use farm_lockfiles::oci::{OciError, RegistryClient};

    let server = serve(|conn, _| endless(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"));
    let dir = tempfile::tempdir().unwrap();
    let capped = Client::new(ClientOptions {
        attempts: 1,
        max_download_size: 1 << 20,
        ..Default::default()
    });
    let registry = RegistryClient::anonymous(&capped, &server.base).unwrap();
    let digest = sha256_of(b"x");
    let err = registry
        .get_blob("library/tiny", &digest, &dir.path().join("blob"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::TooLarge { limit: SizeLimit::Cap(n), .. } if n == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("FARM_MAX_DOWNLOAD_SIZE"), "{err}");
    assert!(leftovers(dir.path()).is_empty());
}
