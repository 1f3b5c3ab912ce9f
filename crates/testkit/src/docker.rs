//! Docker Engine (Debian's `docker.io`), started by each test on a socket
//! and directories of its own, and the two engines side by side.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::podman::{stop, wait_for_ping, PodmanService};
use crate::skip::{require_root, require_tool};

/// How long dockerd may take to answer `/_ping` (it starts its own containerd).
const READY_WITHIN: Duration = Duration::from_secs(90);
/// How long it gets to stop its containers and containerd on SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// dockerd creates `/etc/docker/key.json` on its first start without
/// locking it: daemons starting at once could read it half-written.
static STARTING: Mutex<()> = Mutex::new(());

/// `dockerd` on a socket, data root, exec root and containerd namespace of
/// its own, with an empty configuration file (so no `daemon.json` of the
/// machine applies), no bridge network and no iptables rules (containers
/// get `none` or `host` networking only; nothing of the host's network
/// changes) and vfs storage (works on any filesystem, also inside a
/// container). On drop its containers are removed, the daemon is stopped
/// (SIGTERM, then SIGKILL) and its directories deleted. Callers check
/// [`EngineKind::Docker`]'s [`EngineKind::require`] first.
pub struct DockerService {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
}

impl DockerService {
    /// Starts the daemon and waits for `GET /_ping` to answer `200`.
    pub fn start() -> DockerService {
        let dir = tempfile::Builder::new().prefix("farm-docker-").tempdir().unwrap();
        let d = dir.path();
        let socket = d.join("docker.sock");
        let log = d.join("dockerd.log");
        let config = d.join("daemon.json");
        fs::write(&config, "{}\n").unwrap();
        // Unique among the daemons of this machine, in case dockerd uses a
        // system containerd (it does when /run/containerd/containerd.sock exists).
        let namespace = format!(
            "farm-test-{}",
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("farm-docker-")
        );
        let out = fs::File::create(&log).unwrap();
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}-plugins")])
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--storage-driver",
                "vfs",
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("dockerd: {e} (scripts/install-deps installs docker.io)"));
        let mut service = DockerService {
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

    /// The docker CLI (Debian's `docker.io` has it) talking to this daemon.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", self.docker_host())
            // No configuration or credentials of the machine's user.
            .env("DOCKER_CONFIG", self.dir.path().join("cli"));
        cmd
    }

    /// What the daemon (and its containerd) has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        wait_for_ping(&mut self.child, &self.socket, "dockerd", &self.log, READY_WITHIN);
    }
}

impl Drop for DockerService {
    fn drop(&mut self) {
        // Containers a test left running would keep their mounts under the data root.
        if let Ok(out) = self.command().args(["ps", "-a", "-q"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = self.command().args(["rm", "--force"]).args(&ids).output();
            }
        }
        // SIGTERM stops the daemon and the containerd it started.
        stop(&mut self.child, STOP_WITHIN);
        // A mount left under the exec root (a container's netns, shm) would
        // stop the directory's removal; detach any that is left.
        unmount_below(self.dir.path());
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(self.dir.path()).output();
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p) else { continue };
        // SAFETY: umount2 only reads the NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The container engines farm's container backend and image loading are
/// tested against. Both speak the Docker Engine API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Podman's API service (`podman system service`), with runc.
    Podman,
    /// Docker Engine (`dockerd`), with its own containerd and runc.
    Docker,
}

impl EngineKind {
    /// `podman` or `docker`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }

    /// Whether this engine can be started here (root, and its programs);
    /// a skip (a failure in CI) when not.
    pub fn require(self) -> bool {
        match self {
            EngineKind::Podman => require_root() && require_tool("podman") && require_tool("runc"),
            EngineKind::Docker => {
                require_root()
                    && ["dockerd", "containerd", "runc", "docker-init", "docker"]
                        .iter()
                        .all(|t| require_tool(t))
            }
        }
    }
}

/// One running engine of either kind, for tests that run the same checks
/// against both.
pub enum EngineService {
    Podman(PodmanService),
    Docker(DockerService),
}

impl EngineService {
    /// Starts an engine of `kind` (after [`EngineKind::require`]).
    pub fn start(kind: EngineKind) -> EngineService {
        match kind {
            EngineKind::Podman => EngineService::Podman(PodmanService::start()),
            EngineKind::Docker => EngineService::Docker(DockerService::start()),
        }
    }

    pub fn kind(&self) -> EngineKind {
        match self {
            EngineService::Podman(_) => EngineKind::Podman,
            EngineService::Docker(_) => EngineKind::Docker,
        }
    }

    /// `unix://SOCKET`, for `DOCKER_HOST` or a client's host argument.
    pub fn docker_host(&self) -> String {
        match self {
            EngineService::Podman(s) => s.docker_host(),
            EngineService::Docker(s) => s.docker_host(),
        }
    }

    /// The engine's CLI (`podman` or `docker`) on this engine.
    pub fn command(&self) -> Command {
        match self {
            EngineService::Podman(s) => s.command(),
            EngineService::Docker(s) => s.command(),
        }
    }

    /// What the engine has logged so far.
    pub fn log(&self) -> String {
        match self {
            EngineService::Podman(s) => s.log(),
            EngineService::Docker(s) => s.log(),
        }
    }
}
