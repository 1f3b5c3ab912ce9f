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

    #[error(
        "the sandbox helper `{helper}` ended ({status}) without reporting a result; \
         hint: the helper binary must call farm_sandbox::helper_main() when its first argument is `{}`",
        crate::HELPER_ARG
    )]
    HelperVanished { helper: PathBuf, status: String },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
}
