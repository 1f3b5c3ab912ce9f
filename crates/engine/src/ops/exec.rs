//! `farm exec` and `farm shell`: run a command in the project's hermetic
//! environment, the one build steps get: locked toolchains on PATH, the
//! project read-only at /build/src, no network, nothing from the host.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use farm_project::Project;
use farm_sandbox::{Network, Sandbox, Stdio, StepSetup};
use farm_store::Store;

use crate::toolchain;
use crate::{Context, SandboxChoice};

/// What `farm exec` (and `farm shell`, which runs a shell) is asked to run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
}

/// Entry point of `farm exec` and `farm shell`: runs the command with the
/// terminal attached and returns its exit status (128 + signal number when
/// a signal ended it).
pub fn exec(ctx: &Context, opts: &ExecOptions) -> Result<i32> {
    let project = Project::load(&ctx.project_dir)?;
    let lock_path = project.lock_path();
    if !lock_path.exists() {
        bail!(
            "{}: no lock file\nhint: run `farm lock && farm fetch`",
            lock_path.display()
        );
    }
    // The native sandbox's helper starts first: it joins the step's cgroup
    // and enters its namespaces while the lock and the store are read. If
    // it cannot start, the step starts the usual way below.
    let setup = StepSetup {
        network: Network::None,
        uid: farm_sandbox::BUILD_UID,
        gid: farm_sandbox::BUILD_UID,
        limits: crate::executor::step_limits(&project.limits()),
        stdio: Stdio::Inherit,
    };
    let prepared = match ctx.sandbox {
        SandboxChoice::Auto => Sandbox::default().prepare(&setup).ok(),
        _ => None,
    };
    let lock_text = std::fs::read_to_string(&lock_path).with_context(|| lock_path.display().to_string())?;
    // On this thread: SOURCE_DATE_EPOCH is mostly a few stat calls or the
    // time kept in .farm/commit-time (`git log` runs once per new HEAD), and
    // a thread to overlap it with the store cost every run ~0.3 ms of CPU.
    let source_date_epoch = project.source_date_epoch();
    // The store is closed before the command runs (a shell may stay for hours).
    let tc = toolchain::for_lock_text(&Store::open(&ctx.farm_home)?, &lock_path, &lock_text)?;
    let project_root = std::fs::canonicalize(&project.root).with_context(|| project.root.display().to_string())?;
    let spec = crate::executor::exec_spec(
        &tc,
        &project_root,
        opts.argv.clone(),
        source_date_epoch,
        opts.timeout,
        &project.limits(),
    );
    let run_native = || match prepared {
        Some(p) if StepSetup::of(&spec) == setup => p.run(&spec),
        // exec_spec's setup is not the one guessed: that helper ends unused.
        other => {
            drop(other);
            farm_sandbox::run(&spec)
        }
    };
    let outcome = match ctx.sandbox {
        // No probe first: it would cost as much as the step. The native
        // sandbox fails before the command starts when the machine cannot
        // build it, and only then is the container engine tried.
        SandboxChoice::Auto => match run_native() {
            Err(native) if native.is_unavailable() => match crate::executor::select(SandboxChoice::Container) {
                Ok(container) => container.run(&spec)?,
                Err(engine) => bail!(
                    "no sandbox is available here:\n  native: {native}\n  container: {engine:#}\nhint: enable user namespaces, or start Docker or Podman's API service"
                ),
            },
            native => native.context("running the command in the native sandbox")?,
        },
        choice => crate::executor::select(choice)?.run(&spec)?,
    };
    if outcome.timed_out {
        bail!(
            "the command ran past its {}s timeout and was killed",
            opts.timeout.map(|t| t.as_secs()).unwrap_or(0)
        );
    }
    Ok(outcome.status)
}
