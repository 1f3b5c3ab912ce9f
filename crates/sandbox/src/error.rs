//! Errors the caller sees. Failures inside the helper are reported per
//! set-up stage (see `Stage`), so a message says which step of building the
//! sandbox broke; each stage's module has its own error enum.

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The stages of sandbox set-up, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// A forked helper moving itself into the step's cgroups.
    Cgroup,
    /// Reading the request from the parent.
    Request,
    /// unshare(2) of the user, mount, pid, net, uts, ipc and cgroup namespaces.
    Namespaces,
    /// uid_map / gid_map / setgroups.
    IdMap,
    /// Forking the namespace's PID 1.
    Fork,
    /// tmpfs root, read-only binds, pivot_root.
    Rootfs,
    /// The minimal /dev.
    Dev,
    /// The new /proc.
    Proc,
    /// Generated /etc files.
    Etc,
    Hostname,
    /// Bringing up `lo`.
    Network,
    /// Leaving the caller's session keyring for a new one.
    Keyring,
    Rlimits,
    Capabilities,
    Landlock,
    /// The system-call filter.
    Seccomp,
    /// chdir, fd hygiene, PATH lookup and execve of the command.
    Exec,
    /// PID 1 forking and reaping the command.
    Reaper,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        f.write_str(s.as_deref().unwrap_or("unknown"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid step spec: {field}: expected {expected}, found {found}")]
    InvalidSpec {
        field: String,
        expected: String,
        found: String,
    },

    #[error("{field} `{path}`: {problem}{}", hint_suffix(.hint))]
    HostPath {
        field: String,
        path: PathBuf,
        problem: String,
        hint: Option<String>,
    },

    #[error("cannot start the sandbox helper `{helper}`: {source}{}", hint_suffix(.hint))]
    Spawn {
        helper: PathBuf,
        #[source]
        source: io::Error,
        hint: Option<String>,
    },

    #[error("log file `{path}`: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the step's terminal: {context}: {source}")]
    Terminal {
        context: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("talking to the sandbox helper: {context}: {source}")]
    Channel {
        context: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("sandbox set-up failed at stage `{stage}`: {message}{}", hint_suffix(.hint))]
    Setup {
        stage: Stage,
        message: String,
        hint: Option<String>,
    },

    #[error("user namespaces are unavailable on this machine: {message}{}", hint_suffix(.hint))]
    UserNamespacesUnavailable { message: String, hint: Option<String> },

    /// The kernel stopped the step at one of its limits (as its cgroup counted).
    #[error("{}", limit_message(.limit, *.status, .log.as_deref()))]
    LimitExceeded {
        limit: crate::cgroup::ExceededLimit,
        /// The step's status, as `Outcome::status` (137 after a timeout's kill).
        status: i32,
        log: Option<PathBuf>,
    },

    #[error("the step's resource limits: {0}\nhint: farm makes a cgroup per step and removes it afterwards; check that nothing else holds processes in it")]
    Cgroup(#[from] crate::cgroup::CgroupError),

    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),

    #[error(
        "the sandbox helper `{helper}` ended ({status}) without reporting a result; \
         hint: the helper binary must call farm_sandbox::helper_main() when its first argument is `{}`",
        crate::HELPER_ARG
    )]
    HelperVanished { helper: PathBuf, status: String },
}

impl SandboxError {
    /// True when the error says that this machine cannot build the native
    /// sandbox at all (what [`crate::Sandbox::probe`] checks), rather than
    /// that this step's spec or command failed: user namespaces refused,
    /// or mounts or /proc denied by the kernel's policy (the errors of those
    /// stages that `supervise::setup_error` gives a hint). A caller may
    /// then try the container backend.
    pub fn is_unavailable(&self) -> bool {
        match self {
            SandboxError::UserNamespacesUnavailable { .. } => true,
            SandboxError::Setup { stage, hint, .. } => {
                hint.is_some()
                    && matches!(
                        stage,
                        Stage::Rootfs | Stage::Dev | Stage::Proc | Stage::Hostname | Stage::Network
                    )
            }
            _ => false,
        }
    }
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
}

/// "64 MiB", "8 GiB", or bytes when not a whole number of either.
fn size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

fn limit_message(limit: &crate::cgroup::ExceededLimit, status: i32, log: Option<&std::path::Path>) -> String {
    use crate::cgroup::{CgroupVersion, ExceededLimit};
    let log = log
        .map(|l| format!("; its log is `{}`", l.display()))
        .unwrap_or_default();
    match *limit {
        ExceededLimit::Memory { bytes, version } => {
            let knob = match version {
                CgroupVersion::V2 => "cgroup v2 memory.max",
                CgroupVersion::V1 => "cgroup v1 memory.limit_in_bytes",
            };
            format!(
                "the step ran out of memory: it reached its memory limit of {} ({knob}) and the kernel killed \
                 a process of it; the step ended with status {status}{log}\n\
                 hint: raise `memory` under [limits] in farm.toml (a size such as \"16GiB\", or \"none\" for no limit)",
                size(bytes)
            )
        }
        ExceededLimit::Processes { count, version } => {
            let knob = match version {
                CgroupVersion::V2 => "cgroup v2 pids.max",
                CgroupVersion::V1 => "cgroup v1 pids.max",
            };
            format!(
                "the step reached its process limit of {count} processes and threads ({knob}): the kernel \
                 refused to start more, and the step ended with status {status}{log}\n\
                 hint: raise `processes` under [limits] in farm.toml (0 for no limit)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{CgroupVersion, ExceededLimit};

    /// Proves a limit error names the limit, its size and the farm.toml key to raise.
    #[test]
    fn limit_errors_name_the_limit_and_the_key_to_raise() {
        let e = SandboxError::LimitExceeded {
            limit: ExceededLimit::Memory {
                bytes: 64 << 20,
                version: CgroupVersion::V1,
            },
            status: 137,
            log: Some("/tmp/x/step.log".into()),
        }
        .to_string();
        assert!(
            e.contains("64 MiB") && e.contains("[limits]") && e.contains("`memory`") && e.contains("step.log"),
            "{e}"
        );
        let e = SandboxError::LimitExceeded {
            limit: ExceededLimit::Processes {
                count: 64,
                version: CgroupVersion::V2,
            },
            status: 2,
            log: None,
        }
        .to_string();
        assert!(e.contains("64 processes") && e.contains("`processes`"), "{e}");
        assert_eq!(size(8 << 30), "8 GiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
