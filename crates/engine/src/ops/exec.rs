//! `farm exec` and `farm shell`: run a command in the project's hermetic
//! environment, the one build steps get: locked toolchains on PATH, the
//! project read-only at /build/src, no network, nothing from the host.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use farm_project::Project;
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
    let lock_text = std::fs::read_to_string(&lock_path).with_context(|| lock_path.display().to_string())?;
    // SOURCE_DATE_EPOCH may need a `git log`: it runs while the store is read.
    let (source_date_epoch, tc) = std::thread::scope(|s| {
        let sde = s.spawn(|| project.source_date_epoch());
        let tc = Store::open(&ctx.farm_home)
            .map_err(anyhow::Error::from)
            .and_then(|store| toolchain::for_lock_text(&store, &lock_path, &lock_text));
        let sde = sde.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (sde, tc)
    });
    let tc = tc?;
    let project_root = std::fs::canonicalize(&project.root).with_context(|| project.root.display().to_string())?;
    let spec = crate::executor::exec_spec(
        &tc,
        &project_root,
        opts.argv.clone(),
        source_date_epoch,
        opts.timeout,
        &project.limits(),
    );
    let outcome = match ctx.sandbox {
        // No probe first: it would cost as much as the step. The native
        // sandbox fails before the command starts when the machine cannot
        // build it, and only then is the container engine tried.
        SandboxChoice::Auto => match farm_sandbox::run(&spec) {
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
