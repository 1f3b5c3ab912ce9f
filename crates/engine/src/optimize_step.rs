//! The `optimize-images` step (`[frontend] optimize-images = true`): the
//! frontend step's output copied with every image losslessly optimised by
//! farm-optimize (spec/optimize.md, "As a build step"). The optimiser is
//! farm's own code, so the step runs farm's own binary again, hidden
//! subcommand `farm optimize build-output /in /out`, in the build's sandbox
//! with no network: the frontend's output read-only at /in, the step's
//! output at /out. Its action key holds farm-optimize's identity (version
//! and settings) and the frontend output's tree digest, so an unchanged
//! frontend is a cache hit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use farm_sandbox::{Bind, RootSpec, Stdio, StepSpec};

use crate::executor::{step_limits, Executor};
use crate::step::{Step, StepAction, StepId};

/// The hidden subcommand's words after `farm`.
pub const SUBCOMMAND: [&str; 2] = ["optimize", "build-output"];
/// Where farm's binary is in the step's sandbox.
pub const SANDBOX_FARM: &str = "/farm/bin/farm";
/// Where the frontend step's output is in the step's sandbox (read-only).
pub const SANDBOX_INPUT: &str = "/in";
/// The host directories bound (read-only) as the root of the step's sandbox:
/// what farm's binary links against, since it was built for this host.
const HOST_ROOT: [&str; 6] = ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/libx32"];

/// How the step runs farm again: in the build's sandbox (hermetic builds) or
/// as a plain child process (other builds, whose steps all run on the host).
struct Runner {
    exe: PathBuf,
    executor: Option<Arc<dyn Executor>>,
    limits: farm_project::Limits,
    source_date_epoch: u64,
    timeout: Duration,
}

/// The `optimize-images` step after the frontend step. `executor` is the
/// build's sandbox (`None` for a non-hermetic build).
pub fn step(
    executor: Option<Arc<dyn Executor>>,
    limits: farm_project::Limits,
    source_date_epoch: u64,
    timeout: Duration,
) -> Result<Step> {
    let exe = std::env::current_exe().context("finding farm's own binary for the optimize-images step")?;
    let runner = Runner {
        exe,
        executor,
        limits,
        source_date_epoch,
        timeout,
    };
    Ok(Step {
        id: StepId::OptimizeImages,
        after: vec![StepId::Frontend],
        inputs_from: vec![StepId::Frontend],
        action: StepAction::InProcess {
            // The frontend output's entry (its tree digest) joins the key as a dep.
            key_parts: vec!["optimize-images-v1".into(), farm_optimize::IDENTITY.into()],
            run: Box::new(move |out: &Path, deps| {
                let front = deps.get(&StepId::Frontend).context("the frontend step's output")?;
                runner.run(&front.path, out)
            }),
        },
    })
}

impl Runner {
    fn run(&self, input: &Path, out: &Path) -> Result<()> {
        let logs = tempfile::tempdir().context("a temporary directory for the optimize-images log")?;
        let log = logs.path().join("optimize-images.log");
        let (status, timed_out) = match &self.executor {
            Some(x) => self.sandboxed(x.as_ref(), input, out, &log)?,
            None => self.on_host(input, out, &log)?,
        };
        if timed_out {
            bail!(
                "step optimize-images ran past its {}s timeout and was killed",
                self.timeout.as_secs()
            );
        }
        if status != 0 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            bail!(
                "step optimize-images (farm's own image optimiser on the frontend's output) failed with exit status {status}:\n  | {}",
                tail.join("\n  | ")
            );
        }
        Ok(())
    }

    fn sandboxed(&self, x: &dyn Executor, input: &Path, out: &Path, log: &Path) -> Result<(i32, bool)> {
        if x.name() == "container" {
            bail!(
                "[frontend] optimize-images runs farm's own binary in the native sandbox, which this build does not use (--sandbox container)\n\
                 hint: build with the native sandbox, or set optimize-images = false and run `farm optimize images` on the sources"
            );
        }
        let root = HOST_ROOT
            .iter()
            .map(PathBuf::from)
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .collect();
        let argv = std::iter::once(SANDBOX_FARM.to_string())
            .chain(SUBCOMMAND.iter().map(|s| s.to_string()))
            .chain([SANDBOX_INPUT.to_string(), farm_sandbox::OUT_DIR.to_string()])
            .collect();
        let mut spec = StepSpec::new(
            RootSpec::HostPaths(root),
            argv,
            Stdio::Capture {
                log: log.to_path_buf(),
                stream: false,
            },
        );
        spec.binds = vec![
            Bind::read_only(&self.exe, SANDBOX_FARM),
            Bind::read_only(input, SANDBOX_INPUT),
            Bind::writable(out, farm_sandbox::OUT_DIR),
        ];
        spec.env = farm_sandbox::standard_env("/farm/bin", self.source_date_epoch);
        spec.hostname = "farm".into();
        spec.limits = step_limits(&self.limits);
        spec.timeout = Some(self.timeout);
        let o = x.run(&spec)?;
        Ok((o.status, o.timed_out))
    }

    fn on_host(&self, input: &Path, out: &Path, log: &Path) -> Result<(i32, bool)> {
        let logf = std::fs::File::create(log)?;
        let mut child = std::process::Command::new(&self.exe)
            .args(SUBCOMMAND)
            .arg(input)
            .arg(out)
            .env_clear()
            .env("HOME", farm_sandbox::HOMELESS_SHELTER)
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((status.code().unwrap_or(1), false));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((1, true));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What the hidden subcommand does: copies `input` to `out` with every image
/// optimised; fails naming each image that could not be (spec/optimize.md).
pub fn optimize_output(input: &Path, out: &Path) -> Result<Vec<farm_optimize::Outcome>> {
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let files = farm_optimize::optimize_tree(input, out, jobs)
        .with_context(|| format!("copying the frontend's output {}", input.display()))?;
    let failed: Vec<String> = files
        .iter()
        .filter_map(|f| Some(format!("{}: {}", f.path.display(), f.error.as_ref()?)))
        .collect();
    if !failed.is_empty() {
        bail!(
            "the frontend's output has {} image(s) farm cannot optimise:\n  {}\n\
             hint: fix or remove the file in the frontend's build, or set optimize-images = false in farm.toml's [frontend]",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(files)
}
