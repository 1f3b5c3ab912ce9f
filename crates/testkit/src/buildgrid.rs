//! BuildGrid (`bgd`, PyPI's `buildgrid` in a virtual environment that
//! scripts/install-deps makes), a real Remote Execution API server, in its
//! cache-only form: CAS, ByteStream and ActionCache over disk storage, no
//! database.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::{free_port, wait_until};

/// How long `bgd` may take to listen (it imports a lot of Python).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A `bgd server start` process on a free loopback port with its CAS in a
/// directory of its own; killed and the directory removed on drop. Callers
/// check `require_tool("bgd")` first.
pub struct BuildGrid {
    child: Option<Child>,
    /// `grpc://127.0.0.1:PORT`, as farm's `--remote-cache` takes it.
    pub url: String,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl BuildGrid {
    /// A cache-only server (instance name "") that accepts ActionCache
    /// updates from clients.
    pub fn start() -> BuildGrid {
        BuildGrid::launch("{ method: none }", tempfile::tempdir().unwrap())
    }

    /// A cache-only server that takes only requests with an HS256 JWT
    /// signed with `secret` (`authorization: Bearer …`).
    pub fn start_with_jwt_secret(secret: &str) -> BuildGrid {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwt.secret");
        fs::write(&file, secret).unwrap();
        let auth = format!("{{ method: jwt, secret: {}, algorithm: hs256 }}", file.display());
        BuildGrid::launch(&auth, dir)
    }

    /// A cache-only server on TLS (`grpcs://`) with `pki`'s server
    /// certificate that requires a client certificate signed by `pki`'s CA.
    pub fn start_mutual_tls(pki: &crate::pki::Pki) -> BuildGrid {
        let channel = format!(
            "{{ address: \"127.0.0.1:{{port}}\", insecure-mode: false, credentials: {{ tls-server-key: {}, tls-server-cert: {}, tls-client-certs: {} }} }}",
            pki.server_key().display(),
            pki.server_cert().display(),
            pki.ca_cert().display()
        );
        let dir = tempfile::tempdir().unwrap();
        let cas = dir.path().join("cas");
        let (child, port) = spawn_bgd(dir.path(), |port| {
            config_yaml(port, "{ method: none }", &cas).replace(
                &format!("{{ address: \"127.0.0.1:{port}\", insecure-mode: true }}"),
                &channel.replace("{port}", &port.to_string()),
            )
        });
        BuildGrid {
            child: Some(child),
            url: format!("grpcs://127.0.0.1:{port}"),
            port,
            dir,
        }
    }

    fn launch(auth: &str, dir: tempfile::TempDir) -> BuildGrid {
        let cas = dir.path().join("cas");
        let (child, port) = spawn_bgd(dir.path(), |port| config_yaml(port, auth, &cas));
        BuildGrid {
            child: Some(child),
            url: format!("grpc://127.0.0.1:{port}"),
            port,
            dir,
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("bgd.log")).unwrap_or_default()
    }

    /// Where the server keeps its CAS blobs.
    pub fn cas_dir(&self) -> PathBuf {
        self.dir.path().join("cas")
    }

    /// Stops the server now (its port then refuses connections); the
    /// directory stays until drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `bgd server start` in `dir` with the configuration `config(port)` on a
/// free loopback port, once it listens. The port can be taken between the
/// probe and bgd's bind: then bgd exits and the next port is tried.
pub(crate) fn spawn_bgd(dir: &Path, config: impl Fn(u16) -> String) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        if let Some(child) = spawn_bgd_on(dir, port, &config(port)) {
            return (child, port);
        }
    }
    panic!("no free port for BuildGrid in 5 tries");
}

/// `bgd server start` on `port` with `config`, once it listens; None when
/// the port is in use.
pub(crate) fn spawn_bgd_on(dir: &Path, port: u16, config: &str) -> Option<Child> {
    let log_path = dir.join("bgd.log");
    let file = dir.join("buildgrid.yml");
    fs::write(&file, config).unwrap();
    let log = fs::File::create(&log_path).unwrap();
    let mut child = Command::new("bgd")
        .args(["server", "start"])
        .arg(&file)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("bgd: {e} (scripts/install-deps installs BuildGrid)"));
    let mut exited = false;
    let listening = wait_until(READY_WITHIN, || {
        exited = child.try_wait().unwrap().is_some();
        exited || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if listening && !exited {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        exited && log.contains("in use"),
        "bgd did not listen on 127.0.0.1:{port} within {READY_WITHIN:?}:\n{log}"
    );
    None
}

/// The cache-only configuration ../shared/TESTING.md records as verified.
fn config_yaml(port: u16, auth: &str, cas: &Path) -> String {
    format!(
        r#"server:
  - !channel {{ address: "127.0.0.1:{port}", insecure-mode: true }}
authorization: {auth}
storages:
  - !disk-storage &store {{ path: {cas} }}
caches:
  - !lru-action-cache &ac {{ storage: *store, max-cached-refs: 100000, allow-updates: true, cache-failed-actions: false }}
instances:
  - name: ""
    services:
      - !action-cache {{ cache: *ac }}
      - !cas {{ storage: *store }}
      - !bytestream {{ storage: *store }}
"#,
        cas = cas.display()
    )
}
