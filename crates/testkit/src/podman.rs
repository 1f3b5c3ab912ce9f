//! Podman, as these machines need it run, and its Docker-compatible API.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::wait_until;

/// How long the service may take to answer `/_ping`.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long it gets to stop on SIGTERM before SIGKILL.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// The podman CLI on storage of its own under `storage`, so tests share no
/// state: vfs storage, cgroupfs and runc (crun fails on these machines with
/// hybrid cgroups and rlimits), events to a file.
pub fn podman_command(storage: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("runroot"))
        .arg("--tmpdir")
        .arg(storage.join("tmp"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--runtime",
            "runc",
            "--events-backend",
            "file",
        ]);
    cmd
}

/// `podman system service` (the Docker Engine API) on a socket and storage
/// of its own. On drop its containers are removed, the service is stopped
/// (SIGTERM, then SIGKILL) and its storage deleted. Callers check
/// `require_tool("podman")` (and runc, root) first.
pub struct PodmanService {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
}

impl PodmanService {
    /// Starts the service and waits for `GET /_ping` to answer `200`.
    pub fn start() -> PodmanService {
        let dir = tempfile::Builder::new().prefix("farm-podman-").tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let log = dir.path().join("service.log");
        let out = fs::File::create(&log).unwrap();
        let child = podman_command(dir.path())
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("podman: {e} (scripts/install-deps installs it)"));
        let mut service = PodmanService {
            child,
            dir,
            socket,
            log,
        };
        service.wait_ready();
        service
    }

    /// The API's unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://SOCKET`, for `DOCKER_HOST` or a client's host argument.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The podman CLI on the service's storage.
    pub fn command(&self) -> Command {
        podman_command(self.dir.path())
    }

    /// What the service has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        wait_for_ping(&mut self.child, &self.socket, "podman service", &self.log, READY_WITHIN);
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        // Containers a test left running (e.g. `run -d`) would outlive the service.
        let _ = self.command().args(["rm", "--force", "--all"]).output();
        // SIGTERM lets the service shut down cleanly.
        stop(&mut self.child, STOP_WITHIN);
        // vfs layers can hold read-only directories, which TempDir alone cannot delete.
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(self.dir.path()).output();
    }
}

/// Waits until `child` (an engine API service, `what` in messages) answers
/// `GET /_ping` on `socket`; panics with its log if it exits first or does
/// not answer `within`.
pub(crate) fn wait_for_ping(child: &mut Child, socket: &Path, what: &str, log: &Path, within: Duration) {
    let mut exited = None;
    let ready = wait_until(within, || {
        exited = child.try_wait().unwrap();
        exited.is_some() || answers_ping(socket)
    });
    let log = || fs::read_to_string(log).unwrap_or_default();
    if let Some(status) = exited {
        panic!("{what} exited ({status}):\n{}", log());
    }
    assert!(ready, "{what} not ready within {within:?}:\n{}", log());
}

/// SIGTERM, then SIGKILL when `child` has not exited `within`.
pub(crate) fn stop(child: &mut Child, within: Duration) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if !wait_until(within, || matches!(child.try_wait(), Ok(Some(_)))) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn answers_ping(socket: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}
