//! What one sandboxed step is: the value the caller fills in and the helper
//! receives (as JSON over a pipe).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;

/// Working directory of a build step inside the sandbox.
pub const BUILD_DIR: &str = "/build";
/// Where a step writes its outputs.
pub const OUT_DIR: &str = "/out";
/// HOME of every step: it does not exist, so tools that write to HOME fail loudly (as in Nix).
pub const HOMELESS_SHELTER: &str = "/homeless-shelter";
/// Default uid and gid of the step inside the sandbox.
pub const BUILD_UID: u32 = 1000;

/// One step to run hermetically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// The read-only root filesystem.
    pub root: RootSpec,
    /// Extra host paths bound into the sandbox (store paths, /build, /out, ...).
    pub binds: Vec<Bind>,
    /// The command; `argv[0]` without a `/` is looked up in the PATH of `env`.
    pub argv: Vec<String>,
    /// The complete environment of the step: nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    /// Wall-clock limit; the whole sandbox is killed when it passes.
    pub timeout: Option<Duration>,
    pub limits: Limits,
    pub network: Network,
    pub stdio: Stdio,
    /// In-sandbox directories that may be written (Landlock). Those that are
    /// not a writable bind (or below one) get a fresh tmpfs.
    pub writable: Vec<PathBuf>,
}

/// The root filesystem of the sandbox, always mounted read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootSpec {
    /// A directory tree (e.g. the merged Debian base: usr/, etc/, bin -> usr/bin).
    /// Each top-level entry is bound at `/<entry>`; symlinks are re-created.
    Dir(PathBuf),
    /// Host paths bound at the same place (e.g. /usr, /lib, /lib64, /bin).
    /// A path that is a symlink on the host is re-created as the same symlink.
    HostPaths(Vec<PathBuf>),
}

/// A host path made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

impl Bind {
    pub fn read_only(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Bind {
            source: source.into(),
            target: target.into(),
            read_only: true,
        }
    }

    pub fn writable(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Bind {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }
}

/// Resource limits applied to the step (soft = hard). `None` keeps the
/// caller's limit. A value above the caller's hard limit is lowered to it,
/// since nothing in a user namespace may raise a hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Processes and threads of the step: the pids.max of a cgroup of the
    /// step's own where farm can make one (see `cgroup`), and RLIMIT_NPROC
    /// in any case. Since Linux 5.14 RLIMIT_NPROC counts the processes of
    /// the step's uid *in the sandbox's user namespace* only, so it bounds
    /// the step's own process tree and not every process of the calling
    /// user; the kernel does not enforce it when the caller is root (host
    /// uid 0 is exempt), which is what the cgroup fixes.
    pub nproc: Option<u64>,
    pub nofile: Option<u64>,
    /// RLIMIT_AS in bytes.
    pub address_space: Option<u64>,
    /// Memory of the whole step in bytes: a cgroup's memory limit (swap
    /// included) where farm can make one, else the container engine's memory
    /// limit, else RLIMIT_DATA of each process (its private writable memory;
    /// not RLIMIT_AS, which counts reserved address space and breaks Node's
    /// WebAssembly at any size a build could use).
    #[serde(default)]
    pub memory: Option<u64>,
    /// RLIMIT_FSIZE in bytes.
    pub fsize: Option<u64>,
    pub cpu_seconds: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nproc: Some(4096),
            nofile: Some(8192),
            address_space: None,
            memory: None,
            fsize: None,
            cpu_seconds: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A new network namespace with only `lo` up.
    None,
    /// The host's network (fetch steps only).
    Host,
    /// A new network namespace with only `lo` up, plus an HTTP(S) proxy at
    /// [`PROXY_ADDR`] inside (`HTTP_PROXY`, `HTTPS_PROXY` and their lower-case
    /// forms are set) that reaches exactly the `host:port` entries of `allow`:
    /// `CONNECT` to them, and plain `GET`/`HEAD` of `http://` URLs on them.
    /// Everything else gets `403 Forbidden`; nothing else is reachable.
    Proxy { allow: Vec<String> },
}

impl Network {
    /// Whether the step gets a network namespace of its own.
    pub fn isolated(&self) -> bool {
        !matches!(self, Network::Host)
    }
}

/// Where a step with [`Network::Proxy`] finds its proxy.
pub const PROXY_ADDR: &str = "127.0.0.1:3128";

/// What of a step is fixed when its helper starts (see
/// `Sandbox::prepare`): the namespaces and id maps it enters, the cgroup it
/// joins and the descriptors it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSetup {
    pub network: Network,
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    pub stdio: Stdio,
}

impl StepSetup {
    /// The setup `spec` needs.
    pub fn of(spec: &StepSpec) -> StepSetup {
        StepSetup {
            network: spec.network.clone(),
            uid: spec.uid,
            gid: spec.gid,
            limits: spec.limits,
            stdio: spec.stdio.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stdio {
    /// stdin is /dev/null; stdout and stderr go (interleaved) into `log`, and
    /// also to the caller's stderr when `stream` is set.
    Capture { log: PathBuf, stream: bool },
    /// The caller's stdin/stdout/stderr (interactive use, e.g. `farm shell`),
    /// except that a terminal among them is replaced by a pseudo-terminal of
    /// the step's own, relayed to the caller's: the step never holds the
    /// caller's terminal, so it cannot push input into it.
    Inherit,
}

/// The result of a step that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The command's exit code, or 128 + signal number.
    pub status: i32,
    pub timed_out: bool,
    /// The captured output, for `Stdio::Capture`.
    pub log: Option<PathBuf>,
    /// Peak resident set size of the largest process of the step.
    pub peak_rss_kib: Option<u64>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == 0 && !self.timed_out
    }
}

/// The environment every hermetic step starts from; callers add their own
/// variables (and must pass PATH built from the step's toolchains).
pub fn standard_env(path: &str, source_date_epoch: u64) -> Vec<(String, String)> {
    [
        ("PATH", path.to_string()),
        ("HOME", HOMELESS_SHELTER.to_string()),
        ("TMPDIR", "/tmp".to_string()),
        ("TZ", "UTC".to_string()),
        ("LANG", "C.UTF-8".to_string()),
        ("LC_ALL", "C.UTF-8".to_string()),
        ("SOURCE_DATE_EPOCH", source_date_epoch.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl StepSpec {
    /// A step with the defaults of a hermetic build: cwd /build, uid/gid 1000,
    /// no network, writable /build, /out, /tmp and /dev/shm, default limits,
    /// no timeout and an empty environment.
    pub fn new(root: RootSpec, argv: Vec<String>, stdio: Stdio) -> Self {
        StepSpec {
            root,
            binds: Vec::new(),
            argv,
            env: Vec::new(),
            cwd: PathBuf::from(BUILD_DIR),
            hostname: "localhost".to_string(),
            uid: BUILD_UID,
            gid: BUILD_UID,
            timeout: None,
            limits: Limits::default(),
            network: Network::None,
            stdio,
            writable: ["/build", "/out", "/tmp", "/dev/shm"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        }
    }

    /// Checks what can be checked before any process starts.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let invalid = |field: String, expected: &str, found: String| SandboxError::InvalidSpec {
            field,
            expected: expected.to_string(),
            found,
        };
        if self.argv.is_empty() {
            return Err(invalid("argv".into(), "at least the command", "an empty list".into()));
        }
        if let Some(bad) = self.argv.iter().find(|a| a.contains('\0')) {
            return Err(invalid(
                "argv".into(),
                "arguments without NUL bytes",
                format!("{bad:?}"),
            ));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(invalid(
                    format!("env.{k}"),
                    "a name without '=' or NUL and a value without NUL",
                    format!("{k:?}={v:?}"),
                ));
            }
        }
        check_sandbox_path("cwd", &self.cwd)?;
        for (i, w) in self.writable.iter().enumerate() {
            check_sandbox_path(&format!("writable[{i}]"), w)?;
        }
        for (i, b) in self.binds.iter().enumerate() {
            check_sandbox_path(&format!("binds[{i}].target"), &b.target)?;
            if !b.source.is_absolute() {
                return Err(invalid(
                    format!("binds[{i}].source"),
                    "an absolute host path",
                    b.source.display().to_string(),
                ));
            }
            if is_reserved(&b.target) {
                return Err(invalid(
                    format!("binds[{i}].target"),
                    "a path outside /, /proc and /dev, which the sandbox provides itself",
                    b.target.display().to_string(),
                ));
            }
        }
        match &self.root {
            RootSpec::Dir(dir) if !dir.is_absolute() => {
                return Err(invalid(
                    "root".into(),
                    "an absolute directory",
                    dir.display().to_string(),
                ));
            }
            RootSpec::HostPaths(paths) => {
                for (i, p) in paths.iter().enumerate() {
                    check_sandbox_path(&format!("root[{i}]"), p)?;
                    if is_reserved(p) {
                        return Err(invalid(
                            format!("root[{i}]"),
                            "a host path other than /, /proc and /dev",
                            p.display().to_string(),
                        ));
                    }
                }
            }
            RootSpec::Dir(_) => {}
        }
        let valid_hostname = !self.hostname.is_empty()
            && self.hostname.len() <= 64
            && self
                .hostname
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
        if !valid_hostname {
            return Err(invalid(
                "hostname".into(),
                "1-64 characters of [A-Za-z0-9.-]",
                format!("{:?}", self.hostname),
            ));
        }
        if self.uid == 0 || self.gid == 0 {
            return Err(SandboxError::InvalidSpec {
                field: "uid/gid".into(),
                expected: "a non-zero id (the step must not be root in its namespace)".into(),
                found: format!("{}:{}", self.uid, self.gid),
            });
        }
        if let Network::Proxy { allow } = &self.network {
            for (i, entry) in allow.iter().enumerate() {
                if let Err(problem) = crate::proxy::parse_authority(entry) {
                    return Err(invalid(
                        format!("network.allow[{i}]"),
                        "`host:port` (e.g. `index.example:443`, `[::1]:8080`)",
                        format!("{entry:?} ({problem})"),
                    ));
                }
            }
        }
        if self.limits.nproc == Some(0) || self.limits.memory == Some(0) {
            return Err(invalid(
                "limits".into(),
                "nproc and memory above 0, or none for no limit",
                format!("nproc {:?}, memory {:?}", self.limits.nproc, self.limits.memory),
            ));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(invalid("timeout".into(), "a positive duration or none", "0s".into()));
        }
        Ok(())
    }
}

/// The sandbox mounts /, /proc and /dev itself; nothing may be bound there.
fn is_reserved(p: &Path) -> bool {
    p == Path::new("/") || p.starts_with("/proc") || p.starts_with("/dev")
}

fn check_sandbox_path(field: &str, p: &Path) -> Result<(), SandboxError> {
    let normal = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if normal {
        Ok(())
    } else {
        Err(SandboxError::InvalidSpec {
            field: field.to_string(),
            expected: "an absolute path without `.` or `..`".into(),
            found: p.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StepSpec {
        StepSpec::new(
            RootSpec::HostPaths(vec!["/usr".into()]),
            vec!["true".into()],
            Stdio::Inherit,
        )
    }

    #[test]
    fn defaults_pass_validation() {
        spec().validate().unwrap();
    }

    #[test]
    fn relative_or_dotted_paths_are_rejected_with_the_field_name() {
        let mut s = spec();
        s.cwd = "build".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("cwd") && e.contains("build"), "{e}");

        let mut s = spec();
        s.binds.push(Bind::read_only("/srv", "/build/../etc"));
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("binds[0].target"), "{e}");
    }

    #[test]
    fn binds_onto_proc_dev_or_root_are_rejected() {
        for target in ["/", "/proc/self", "/dev/sda"] {
            let mut s = spec();
            s.binds.push(Bind::writable("/srv", target));
            assert!(s.validate().is_err(), "bind onto {target} was accepted");
        }
    }

    #[test]
    fn root_uid_env_with_equals_and_empty_argv_are_rejected() {
        let mut s = spec();
        s.uid = 0;
        assert!(s.validate().unwrap_err().to_string().contains("uid/gid"));
        let mut s = spec();
        s.env.push(("A=B".into(), "c".into()));
        assert!(s.validate().unwrap_err().to_string().contains("env.A=B"));
        let mut s = spec();
        s.argv.clear();
        assert!(s.validate().unwrap_err().to_string().contains("argv"));
        let mut s = spec();
        s.hostname = "bad name".into();
        assert!(s.validate().unwrap_err().to_string().contains("hostname"));
    }

    /// Proves a zero limit (meaningless: nothing could run) and a proxy
    /// entry without a port are refused naming the field.
    #[test]
    fn zero_limits_and_malformed_proxy_entries_are_rejected() {
        let mut s = spec();
        s.limits.memory = Some(0);
        assert!(s.validate().unwrap_err().to_string().contains("limits"));
        let mut s = spec();
        s.network = Network::Proxy {
            allow: vec!["index.example:443".into(), "index.example".into()],
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("network.allow[1]") && e.contains("no `:port`"), "{e}");
        s.network = Network::Proxy {
            allow: vec!["index.example:443".into()],
        };
        s.validate().unwrap();
    }

    #[test]
    fn standard_env_is_the_documented_set() {
        let env = standard_env("/farm/store/x-node/bin", 1700000000);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_ALL", "SOURCE_DATE_EPOCH"]
        );
        assert!(env.contains(&("HOME".into(), "/homeless-shelter".into())));
        assert!(env.contains(&("SOURCE_DATE_EPOCH".into(), "1700000000".into())));
    }
}
