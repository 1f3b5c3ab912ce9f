//! A real OCI registry (distribution, Debian package `docker-registry`).

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::{free_port, wait_until};

/// How long a registry may take to answer `/v2/`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A `docker-registry serve` process on a free loopback port with storage of
/// its own, optionally behind auth; killed and its storage removed on drop.
/// Callers check `require_tool("docker-registry")` first.
pub struct Registry {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`, as image references and skopeo name it.
    pub host: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Registry {
        Registry::start_with_auth("")
    }

    /// A registry that accepts only `user` with `password` (htpasswd Basic
    /// auth; the bcrypt line is made by `htpasswd -nbB`, apache2-utils).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("htpasswd")
            .args(["-nbB", user, password])
            .output()
            .unwrap_or_else(|e| panic!("htpasswd: {e} (scripts/install-deps installs apache2-utils)"));
        assert!(
            out.status.success(),
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = dir.path().join("htpasswd");
        fs::write(&file, out.stdout).unwrap();
        let auth = format!(
            "auth: {{ htpasswd: {{ realm: farm-test, path: {} }} }}\n",
            file.display()
        );
        Registry::launch(dir, &auth)
    }

    /// A registry with `auth_yaml` (an `auth:` section of distribution's
    /// configuration, or empty), for auth schemes the other constructors lack.
    pub fn start_with_auth(auth_yaml: &str) -> Registry {
        Registry::launch(tempfile::tempdir().unwrap(), auth_yaml)
    }

    /// The registry's log (level info: one line per request).
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    fn launch(dir: tempfile::TempDir, auth_yaml: &str) -> Registry {
        // The port can be taken between the probe and the registry's bind:
        // then the registry exits and the next port is tried.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog: {{ level: info }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n{auth_yaml}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("docker-registry: {e} (scripts/install-deps installs it)"));
            if wait_ready(&mut child, port, dir.path()) {
                return Registry {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                    host: format!("127.0.0.1:{port}"),
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = read_log(dir.path());
            assert!(log.contains("address already in use"), "registry did not start:\n{log}");
        }
        panic!("no free port for the registry in 5 tries");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /v2/` (200, or 401 with auth on): true once it answers, false
/// if the registry exited first; panics at the deadline.
fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> bool {
    let mut exited = false;
    let answered = wait_until(READY_WITHIN, || {
        exited = child.try_wait().unwrap().is_some();
        exited || answers_v2(port)
    });
    assert!(
        answered,
        "registry on port {port} not ready within {READY_WITHIN:?}:\n{}",
        read_log(dir)
    );
    !exited
}

fn answers_v2(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && (head.ends_with(b" 200") || head.ends_with(b" 401"))
}

fn read_log(dir: &Path) -> String {
    fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
}
