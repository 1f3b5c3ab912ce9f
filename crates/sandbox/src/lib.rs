//! farm's native Linux sandbox: runs one build step hermetically, the way
//! Nix's Linux sandbox and bubblewrap do. The step sees a read-only root on
//! a tmpfs, its binds, a writable /build, /out and /tmp, a minimal /dev, its
//! own /proc and generated /etc files; it runs in new user, mount, PID,
//! network (loopback only), UTS, IPC and cgroup namespaces as uid/gid 1000
//! mapped to the caller, with exactly the environment it was given, no
//! capabilities, no_new_privs, Landlock write confinement, a system-call
//! filter, a session and session keyring of its own (and a terminal of its
//! own when the caller's is one), resource limits (memory and processes in
//! a cgroup of the step's own where the kernel gives farm one, else
//! rlimits), a timeout, and a PID 1 that kills everything left when the
//! command exits. With [`Network::Proxy`] the step reaches only the listed
//! `host:port` entries, through an HTTP(S) proxy. It works as root and as
//! an unprivileged user.
//!
//! It is not a container runtime (no images, no CPU or I/O shares).
//! It decides nothing about what a step needs: the caller passes the root,
//! binds and environment.
//!
//! [`container`] is the second backend: the same [`StepSpec`] run in a
//! container of a Docker-compatible engine, for machines without user
//! namespaces (macOS, Windows, Docker-only CI runners).
//!
//! A multi-threaded process cannot enter a new user namespace, so `run`
//! starts a single-threaded helper process that builds the sandbox. By
//! default it is a child forked from the caller ([`Sandbox::default`]): no
//! second program start. [`Sandbox::with_helper`] re-executes a binary
//! instead, with [`HELPER_ARG`]; that binary must call [`helper_main`]
//! first thing in `main`.

mod caps;
mod cgroup;
mod channel;
pub mod container;
mod dev;
mod error;
mod etc;
mod exec;
mod helper;
mod idmap;
mod kernel;
mod keyring;
mod landlock;
mod namespaces;
mod net;
mod pid1;
mod procfs;
mod proxy;
mod rlimits;
mod rootfs;
mod seccomp;
mod spec;
mod supervise;
mod terminal;

use std::path::PathBuf;

pub use cgroup::{
    parents as cgroup_parents, CgroupError, CgroupParent, CgroupParents, CgroupVersion, ExceededLimit, STEP_PREFIX,
    SUPERVISOR_LEAF,
};
pub use container::{ContainerBackend, ContainerError};
pub use error::{SandboxError, Stage};
pub use proxy::ProxyError;
pub use spec::{
    standard_env, Bind, Limits, Network, Outcome, RootSpec, Stdio, StepSetup, StepSpec, BUILD_DIR, BUILD_UID,
    HOMELESS_SHELTER, OUT_DIR, PROXY_ADDR,
};

/// First argument that switches a binary into the sandbox helper.
pub const HELPER_ARG: &str = "__farm-sandbox-init";

/// The sandbox, and how it starts its helper process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    launch: supervise::Launch,
}

impl Default for Sandbox {
    /// Forks the helper from the calling process (which may be
    /// multi-threaded): the fast way, and it needs no helper binary.
    fn default() -> Self {
        Sandbox {
            launch: supervise::Launch::Fork,
        }
    }
}

impl Sandbox {
    /// Re-executes `helper`, a binary that calls [`helper_main`] when its
    /// first argument is [`HELPER_ARG`], instead of forking (e.g.
    /// `/proc/self/exe`, resolved in the child, so it works even if the
    /// file was replaced meanwhile).
    pub fn with_helper(helper: impl Into<PathBuf>) -> Self {
        Sandbox {
            launch: supervise::Launch::Exec(helper.into()),
        }
    }

    /// The binary re-executed as helper; `None` when the helper is forked.
    pub fn helper(&self) -> Option<&std::path::Path> {
        match &self.launch {
            supervise::Launch::Fork => None,
            supervise::Launch::Exec(helper) => Some(helper),
        }
    }

    /// Runs the step and waits for it (and everything it started) to end.
    /// A step that runs and fails is `Ok` with a non-zero status; `Err`
    /// means the sandbox could not be built or the command not started.
    pub fn run(&self, spec: &StepSpec) -> Result<Outcome, SandboxError> {
        supervise::run(&self.launch, spec, None)
    }

    /// [`Sandbox::run`], killing the step (and everything it started) soon
    /// after `cancel` is set; a cancelled step ends as a timed-out one
    /// (`timed_out`), and the caller knows it cancelled.
    pub fn run_cancellable(
        &self,
        spec: &StepSpec,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Outcome, SandboxError> {
        supervise::run(&self.launch, spec, Some(cancel))
    }

    /// Starts the helper of a step before the rest of the step is known:
    /// it joins the step's cgroup and enters its namespaces while the caller
    /// works out the step, and [`PreparedStep::run`] then runs it. The same
    /// as [`Sandbox::run`] otherwise; dropping the `PreparedStep` ends the
    /// helper and removes the cgroup.
    pub fn prepare(&self, setup: &StepSetup) -> Result<PreparedStep, SandboxError> {
        supervise::prepare(&self.launch, setup).map(PreparedStep)
    }

    /// Checks that this machine can build the sandbox (user namespaces, id
    /// maps, mounts, a new /proc), e.g. to choose between this backend and
    /// the container backend. Costs about as much as starting a step;
    /// callers that would run a step anyway can run it and check
    /// [`SandboxError::is_unavailable`] instead.
    pub fn probe(&self) -> Result<(), SandboxError> {
        supervise::probe(&self.launch)
    }
}

/// A helper started by [`Sandbox::prepare`], waiting for its step.
pub struct PreparedStep(supervise::Prepared);

impl PreparedStep {
    /// Runs `spec`, whose [`StepSetup`] must be the one prepared (else
    /// `SandboxError::InvalidSpec`, and nothing runs), as [`Sandbox::run`].
    pub fn run(self, spec: &StepSpec) -> Result<Outcome, SandboxError> {
        supervise::run_prepared(self.0, spec, None)
    }
}

/// [`Sandbox::run`] with a forked helper.
pub fn run(spec: &StepSpec) -> Result<Outcome, SandboxError> {
    Sandbox::default().run(spec)
}

/// [`Sandbox::probe`] with a forked helper.
pub fn probe() -> Result<(), SandboxError> {
    Sandbox::default().probe()
}

/// The helper's entry point: call it first thing in `main` (before any
/// thread starts) when `std::env::args().nth(1) == Some(HELPER_ARG)`.
pub fn helper_main() -> ! {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(helper::main(&args))
}
