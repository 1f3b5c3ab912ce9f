//! Executors: what runs a hermetic step. Every executor takes the same
//! `StepSpec` (built by [`sandbox_spec`] for build steps and `farm exec`
//! alike) and returns the same `Outcome`: the native Linux sandbox, or the
//! same step as a container through the Docker Engine API (for machines
//! without user namespaces, and for Docker-only CI runners). A remote
//! executor joins them behind the same trait.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use farm_sandbox::{Bind, ContainerBackend, Outcome, RootSpec, Stdio, StepSpec};
use farm_store::StoreEntry;

use crate::toolchain::Toolchain;

/// Which sandbox the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SandboxChoice {
    /// Native where user namespaces work, else a container.
    Auto,
    /// The native Linux sandbox.
    Native,
    /// A container via DOCKER_HOST or the default Docker/Podman socket.
    Container,
}

/// Runs one hermetic step.
pub trait Executor: Send + Sync {
    /// For messages: `native`, `container`, …
    fn name(&self) -> &'static str;
    fn run(&self, spec: &StepSpec) -> Result<Outcome>;
}

/// The native Linux sandbox (namespaces, pivot_root, Landlock).
pub struct NativeSandbox;

impl Executor for NativeSandbox {
    fn name(&self) -> &'static str {
        "native"
    }

    fn run(&self, spec: &StepSpec) -> Result<Outcome> {
        farm_sandbox::run(spec).context("running the step in the native sandbox")
    }
}

/// A container engine speaking the Docker Engine API (Docker, Podman).
pub struct ContainerEngine(ContainerBackend);

impl Executor for ContainerEngine {
    fn name(&self) -> &'static str {
        "container"
    }

    fn run(&self, spec: &StepSpec) -> Result<Outcome> {
        self.0.run(spec).context("running the step in a container")
    }
}

/// The executor for `choice`; `Auto` takes the native sandbox where it works.
pub fn select(choice: SandboxChoice) -> Result<Arc<dyn Executor>> {
    let container = || -> Result<Arc<dyn Executor>> {
        let host = std::env::var("DOCKER_HOST").ok();
        let c = ContainerBackend::connect(host.as_deref())
            .context("connecting to the container engine (--sandbox container)")?;
        Ok(Arc::new(ContainerEngine(c)))
    };
    match choice {
        SandboxChoice::Native => Ok(Arc::new(NativeSandbox)),
        SandboxChoice::Container => container(),
        SandboxChoice::Auto => match farm_sandbox::probe() {
            Ok(()) => Ok(Arc::new(NativeSandbox)),
            Err(native) => match container() {
                Ok(b) => Ok(b),
                Err(engine) => bail!(
                    "no sandbox is available here:\n  native: {native}\n  container: {engine:#}\nhint: enable user namespaces, or start Docker or Podman's API service"
                ),
            },
        },
    }
}

/// The limits of every sandboxed step from farm.toml's `[limits]`: `memory`
/// for the whole step and `processes` (a cgroup where the sandbox gets one,
/// else RLIMIT_AS and RLIMIT_NPROC), the sandbox's defaults for the rest.
pub fn step_limits(limits: &farm_project::Limits) -> farm_sandbox::Limits {
    farm_sandbox::Limits {
        memory: limits.memory,
        nproc: limits.processes,
        ..farm_sandbox::Limits::default()
    }
}

/// The sandbox spec of every hermetic step and of `farm exec`/`shell`: the
/// toolchain's root and entries plus `inputs`, each read-only at its
/// `/farm/store` path, the toolchain's fixed environment, no network,
/// hostname `farm`, uid/gid 1000, the project's `[limits]`. Callers add
/// their own binds (`/out`, the project), variables, working directory and
/// timeout.
pub fn sandbox_spec(
    tc: &Toolchain,
    inputs: &[StoreEntry],
    argv: Vec<String>,
    source_date_epoch: u64,
    stdio: Stdio,
    limits: &farm_project::Limits,
) -> StepSpec {
    let mut binds: Vec<Bind> = tc
        .inputs
        .iter()
        .chain(inputs.iter())
        .map(|e| Bind::read_only(&e.path, Toolchain::sandbox_path(e)))
        .collect();
    binds.sort_by(|a, b| a.target.cmp(&b.target));
    binds.dedup_by(|a, b| a.target == b.target);
    let mut spec = StepSpec::new(RootSpec::Dir(tc.root.path.clone()), argv, stdio);
    spec.binds = binds;
    spec.env = tc.env(source_date_epoch);
    spec.hostname = "farm".into();
    spec.limits = step_limits(limits);
    spec
}

/// Where `farm exec` and `farm shell` see the project (read-only).
pub const EXEC_PROJECT_DIR: &str = "/build/src";

/// `farm exec`/`shell`: the build steps' sandbox with the project read-only
/// at /build/src as the working directory and the caller's terminal.
pub fn exec_spec(
    tc: &Toolchain,
    project_root: &std::path::Path,
    argv: Vec<String>,
    source_date_epoch: u64,
    timeout: Option<std::time::Duration>,
    limits: &farm_project::Limits,
) -> StepSpec {
    let mut spec = sandbox_spec(tc, &[], argv, source_date_epoch, Stdio::Inherit, limits);
    spec.binds.push(Bind::read_only(project_root, EXEC_PROJECT_DIR));
    spec.cwd = PathBuf::from(EXEC_PROJECT_DIR);
    spec.timeout = timeout;
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `[limits]` reaches every step's sandbox limits: memory and
    /// processes as configured, "none"/0 as no limit, the rest the sandbox's defaults.
    #[test]
    fn project_limits_become_the_steps_memory_and_process_limits() {
        let l = step_limits(&farm_project::Limits::default());
        assert_eq!((l.memory, l.nproc), (Some(8 << 30), Some(4096)));
        assert_eq!(l.nofile, farm_sandbox::Limits::default().nofile);
        let off = farm_project::Limits {
            memory: None,
            processes: None,
            ..farm_project::Limits::default()
        };
        let l = step_limits(&off);
        assert_eq!((l.memory, l.nproc), (None, None));
    }
}
