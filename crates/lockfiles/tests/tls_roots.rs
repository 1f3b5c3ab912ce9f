//! Which CAs farm's HTTP client trusts: the machine's store, with
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` adding to it (as OpenSSL did when farm
//! used native-tls), checked against an HTTPS server on loopback (`openssl
//! s_server`) whose certificate a throwaway CA signed. One test: the
//! variables are process-wide.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use farm_lockfiles::http::{trusted_roots, Client, ClientOptions};
use farm_testkit::pki::Pki;
use farm_testkit::{free_port, require_tool, wait_until};

/// `openssl s_server -www` with `pki`'s server certificate; killed on drop.
struct TlsServer {
    child: Child,
    url: String,
}

impl TlsServer {
    fn start(pki: &Pki) -> TlsServer {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("openssl")
                .args(["s_server", "-www", "-quiet", "-accept"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-cert")
                .arg(pki.server_cert())
                .arg("-key")
                .arg(pki.server_key())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("openssl runs");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut exited = false;
            let up = wait_until(Duration::from_secs(10), || {
                exited = child.try_wait().unwrap().is_some();
                exited || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            if up && !exited {
                return TlsServer {
                    child,
                    url: format!("https://127.0.0.1:{port}/"),
                };
            }
            // The port was taken in between (s_server exits): another one.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("openssl s_server did not start on a loopback port");
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_env(file: Option<&Path>, dir: Option<&str>) {
    match file {
        Some(f) => std::env::set_var("SSL_CERT_FILE", f),
        None => std::env::remove_var("SSL_CERT_FILE"),
    }
    match dir {
        Some(d) => std::env::set_var("SSL_CERT_DIR", d),
        None => std::env::remove_var("SSL_CERT_DIR"),
    }
}

/// GET `url` with a client built under the current environment.
async fn get(url: &str) -> Result<Vec<u8>, String> {
    let client = Client::new(ClientOptions {
        attempts: 1,
        ..Default::default()
    });
    client.get_bytes(url).await.map_err(|e| e.to_string())
}

fn der_of(pem_path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(pem_path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap()
}

#[tokio::test]
async fn ssl_cert_file_and_dir_add_to_the_machine_store() {
    if !require_tool("openssl") {
        return;
    }
    let pki = Pki::generate("farm-tls-roots-test-ca");
    let other = Pki::generate("farm-tls-roots-other-ca");
    let server = TlsServer::start(&pki);
    let url = server.url.as_str();

    // The machine's store alone does not know the test CA: verification is on.
    set_env(None, None);
    let system = trusted_roots();
    let err = get(url)
        .await
        .expect_err("a server signed by an unknown CA was trusted");
    assert!(
        err.contains("certificate"),
        "the error does not name the certificate: {err}"
    );

    // SSL_CERT_FILE naming the CA: trusted, and the machine's store still is.
    set_env(Some(&pki.ca_cert()), None);
    let body = get(url).await.expect("SSL_CERT_FILE's CA is trusted");
    assert!(!body.is_empty(), "s_server -www answered nothing");
    let with_file = trusted_roots();
    let ca = der_of(&pki.ca_cert());
    assert!(
        with_file.iter().any(|d| d.as_ref() == ca.as_slice()),
        "SSL_CERT_FILE's CA is not a root"
    );
    for root in &system {
        assert!(
            with_file.contains(root),
            "SSL_CERT_FILE dropped a root of the machine's store"
        );
    }

    // Another CA in SSL_CERT_FILE: still refused.
    set_env(Some(&other.ca_cert()), None);
    get(url)
        .await
        .expect_err("a CA that did not sign the server was enough");

    // SSL_CERT_DIR is a `:`-separated list (a missing entry is skipped) and
    // adds to SSL_CERT_FILE; any file name is read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.ca_cert(), dir.path().join("test-ca.pem")).unwrap();
    let dirs = format!("/nonexistent-farm-cert-dir:{}", dir.path().display());
    set_env(Some(&other.ca_cert()), Some(&dirs));
    get(url)
        .await
        .expect("SSL_CERT_DIR's CA is trusted beside SSL_CERT_FILE's");

    // A SSL_CERT_FILE that does not exist falls back to the machine's bundle.
    set_env(Some(Path::new("/nonexistent-farm-ca.pem")), None);
    assert_eq!(trusted_roots(), system, "a missing SSL_CERT_FILE changed the roots");
    get(url).await.expect_err("the test CA was trusted without being named");

    set_env(None, None);
}
