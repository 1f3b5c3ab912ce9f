//! A build: turn config + lock into steps, run them (in the sandbox
//! with `--hermetic`) with an action cache, and write the output directory
//! and its manifest atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use farm_lockfiles::Lock;
use farm_store::{Store, StoreEntry};

use farm_project::Project;

use crate::executor::{self, Executor, SandboxChoice};
use crate::plan::{self, select_targets, PlanInputs};
use crate::schedule;
use crate::step::StepId;
use crate::toolchain::{self, Toolchain};
use crate::{manifest, output, scripts, Context};

pub use crate::plan::types_up_to_date;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Target {
    Frontend,
    Backend,
    Models,
    /// The OCI images and deploy files (builds what they contain first).
    Images,
    /// The TypeScript API types (builds the backend first).
    Types,
    All,
}

/// Everything a build can be asked to do; `farm build`, `farm check` and
/// `farm verify` fill it in.
pub struct BuildOptions {
    pub targets: Vec<Target>,
    pub hermetic: bool,
    pub jobs: Option<usize>,
    pub no_cache: bool,
    pub rerun: Vec<StepId>,
    /// Absolute; `None` is `.farm/out` in the project.
    pub out: Option<PathBuf>,
    pub analyze: bool,
    pub size_limit: Option<u64>,
    pub profile: Option<PathBuf>,
    pub step_timeout: Duration,
    pub variation: Variation,
    /// The `[env.NAME]` to build for.
    pub env: String,
    /// Development build: sourcemaps on, no minification.
    pub dev: bool,
    /// Overrides farm.toml's images.compression.
    pub compression: Option<farm_project::config::Compression>,
    /// Don't fail a hermetic build on a stale committed types file (`farm types sync`).
    pub skip_types_check: bool,
}

/// Build-time values the frontend sees, from the project and
/// SOURCE_DATE_EPOCH, never the wall clock. Vite exposes the `VITE_`
/// copies as `import.meta.env.VITE_FARM_*` without configuration.
pub fn build_defines(version: &str, src: &StoreEntry, sde: u64, env: &str, dev: bool) -> Vec<(String, String)> {
    let values = [
        (
            "FARM_BUILD_VERSION",
            format!("{version}+{}", &src.digest.to_hex()[..12]),
        ),
        ("FARM_BUILD_TIMESTAMP", farm_formats::timestamp::rfc3339(sde)),
        ("FARM_DEV", if dev { "1" } else { "0" }.to_string()),
    ];
    let mut out = Vec::new();
    for (k, v) in values {
        out.push((k.to_string(), v.clone()));
        out.push((format!("VITE_{k}"), v));
    }
    out.push(("VITE_FARM_ENVIRONMENT".to_string(), env.to_string()));
    out
}

/// Conditions `farm check` varies between rounds, beyond what the sandbox pins.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Variation {
    /// Human description, for reports.
    pub label: String,
    /// The in-sandbox build directory (default `/build`).
    pub build_dir: Option<String>,
    /// Start ready steps in reverse order.
    pub reverse_order: bool,
    /// umask the step scripts run with.
    pub umask: Option<u32>,
    /// A libfaketime `FAKETIME` offset for the realtime clock (e.g. `+3650d`).
    pub faketime: Option<String>,
    /// Create source files in reverse-sorted order (changes readdir order on tmpfs).
    pub reverse_copy: bool,
}

pub struct Built {
    pub manifest: manifest::Manifest,
    pub out_dir: PathBuf,
    /// Steps that ran (the rest came from the action cache).
    pub ran: Vec<StepId>,
    pub cached: Vec<StepId>,
    /// What farm-metrics.json holds (timings, cache hits and misses, targets, artifact sizes).
    pub metrics: serde_json::Value,
}

pub fn build_project(ctx: &Context, project: &Project, opts: &BuildOptions) -> Result<Built> {
    let started = std::time::Instant::now();
    let root = std::fs::canonicalize(&project.root).with_context(|| project.root.display().to_string())?;
    let (lock, lock_bytes) = read_lock(ctx, project, opts.hermetic)?;
    let targets = select_targets(project, &opts.targets)?;
    let store = Store::open(&ctx.farm_home)?;
    if opts.hermetic {
        require_fetched(&store, &lock)?;
    }
    let sde = project.source_date_epoch();
    let env = BuildEnv::new(
        &store,
        &lock,
        opts.hermetic,
        sde,
        &opts.variation,
        ctx.sandbox,
        project.limits(),
    )?;
    if let Some(x) = &env.executor {
        ctx.reporter
            .info(&format!("hermetic build in the {} sandbox", x.name()));
    }

    let (config, vars) = project.config.for_env(&opts.env).map_err(anyhow::Error::msg)?;
    // What every env-dependent step sees: the environment and its variables.
    let mut env_vars: Vec<(String, String)> = vec![("FARM_ENVIRONMENT".into(), opts.env.clone())];
    env_vars.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    let plan::Plan { steps, sources } = plan::plan(&PlanInputs {
        project,
        root: &root,
        config: &config,
        lock: &lock,
        store: &store,
        env: &env,
        opts,
        farm_home: &ctx.farm_home,
        targets: &targets,
        env_vars: &env_vars,
    })?;

    let results = run_steps(ctx, project, opts, &store, &env, &steps)?;

    // Assemble the output directory beside the old one; swap only when complete.
    let out_dir = opts.out.clone().unwrap_or_else(|| project.state().out());
    let staging = output::Staging::new(&out_dir)?;
    let outputs = assemble_outputs(ctx, project, &root, &config, &lock, opts, &results, staging.path())?;
    if let Some(front) = outputs.get("frontend") {
        bundle_report(project, opts, staging.path(), &staging.path().join(&front.path))?;
    }
    let mut manifest = manifest::Manifest {
        schema: manifest::SCHEMA,
        project: manifest::ProjectInfo {
            name: project.config.project.name.clone(),
            version: project.config.project.version.clone(),
        },
        hermetic: opts.hermetic,
        environment: opts.env.clone(),
        dev: opts.dev,
        source_date_epoch: sde,
        inputs: manifest::Inputs {
            lock: farm_lockfiles::integrity::sha256_of(&lock_bytes).to_string(),
            farm_toml: farm_lockfiles::integrity::sha256_of(&std::fs::read(
                root.join(farm_project::config::CONFIG_FILE),
            )?)
            .to_string(),
            sources,
        },
        outputs,
        digest: String::new(),
    };
    manifest.seal();
    std::fs::write(staging.path().join(manifest::MANIFEST_FILE), manifest.to_bytes())?;
    let mut metrics = manifest::metrics_without_host_paths(results.metrics(started.elapsed()), &ctx.farm_home);
    // The build summary `farm build` prints, machine-readable.
    metrics["targets"] = targets.iter().map(|t| format!("{t:?}").to_lowercase()).collect();
    metrics["artifacts"] = manifest.outputs.len().into();
    metrics["artifacts_bytes"] = manifest.outputs.values().map(|o| o.size).sum::<u64>().into();
    metrics["cache_misses"] = results.records.values().filter(|r| !r.cached).count().into();
    std::fs::write(
        staging.path().join(manifest::METRICS_FILE),
        serde_json::to_string_pretty(&metrics)? + "\n",
    )?;
    if let Some(p) = &opts.profile {
        std::fs::write(p, manifest::trace_json(&results.trace())).with_context(|| p.display().to_string())?;
    }
    staging.commit()?;
    let (cached, ran): (Vec<_>, Vec<_>) = results.steps.iter().partition(|r| r.record.cached);
    Ok(Built {
        manifest,
        out_dir,
        ran: ran.into_iter().map(|r| r.id.clone()).collect(),
        cached: cached.into_iter().map(|r| r.id.clone()).collect(),
        metrics,
    })
}

/// farm.lock and its bytes; a stale lock fails a hermetic build and warns otherwise.
fn read_lock(ctx: &Context, project: &Project, hermetic: bool) -> Result<(Lock, Vec<u8>)> {
    let lock_path = project.lock_path();
    if !lock_path.exists() {
        bail!(
            "{}: no lock file\nhint: run `farm lock && farm fetch`",
            lock_path.display()
        );
    }
    let lock_bytes = std::fs::read(&lock_path)?;
    let lock = Lock::read(&lock_path)?;
    crate::lockcheck::refuse_invalid(project, &lock)?;
    let stale = farm_project::inputs::stale_inputs(&lock, &farm_project::inputs::current_inputs(project)?);
    if !stale.is_empty() {
        let msg = format!(
            "{} is stale:\n  {}\nhint: run `farm lock`",
            lock_path.display(),
            stale.join("\n  ")
        );
        if hermetic {
            bail!(msg);
        }
        ctx.reporter.warn(&msg);
    }
    Ok((lock, lock_bytes))
}

/// A hermetic build reads only the store: every toolchain artifact and model blob must be there.
fn require_fetched(store: &Store, lock: &Lock) -> Result<()> {
    toolchain::require_fetched(store, lock)?;
    for m in &lock.models {
        for d in std::iter::once(&m.manifest)
            .chain(std::iter::once(&m.config))
            .chain(m.layers.iter())
        {
            if store.artifact(&d.digest.to_string())?.is_none() {
                bail!(
                    "model {} ({}) is not in the store\nhint: run `farm fetch`",
                    m.reference,
                    d.digest
                );
            }
        }
    }
    Ok(())
}

/// Runs the plan's steps and records them in `.farm/last-build.json`, failed or not.
fn run_steps(
    ctx: &Context,
    project: &Project,
    opts: &BuildOptions,
    store: &Store,
    env: &BuildEnv,
    steps: &[crate::step::Step],
) -> Result<schedule::Results> {
    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .max(1);
    let runner = schedule::Runner {
        store,
        reporter: &ctx.reporter,
        jobs,
        no_cache: opts.no_cache,
        rerun: opts.rerun.clone(),
        logs_dir: ctx.farm_home.join("logs"),
        timeout: opts.step_timeout,
        reverse_order: opts.variation.reverse_order,
    };
    let results = runner.run(steps, env);
    schedule::write_record(&project.state().last_build(), &results, steps, env)?;
    results.into_result()
}

/// `--analyze` writes the bundle report beside the outputs; `--size-limit` fails an oversized bundle.
fn bundle_report(project: &Project, opts: &BuildOptions, staging: &Path, dist: &Path) -> Result<()> {
    if !opts.analyze && opts.size_limit.is_none() {
        return Ok(());
    }
    let report = farm_bundle_report::analyze(dist)?;
    if opts.analyze {
        std::fs::write(staging.join("bundle-report.json"), report.to_json())?;
        std::fs::write(
            staging.join("bundle-report.html"),
            report.to_html(&project.config.project.name),
        )?;
    }
    if let Some(limit) = opts.size_limit {
        report.check_size_limit(limit).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Places every step's output in the staging output directory and names
/// it in the manifest's outputs.
#[allow(clippy::too_many_arguments)]
fn assemble_outputs(
    ctx: &Context,
    project: &Project,
    root: &Path,
    config: &farm_project::Config,
    lock: &Lock,
    opts: &BuildOptions,
    results: &schedule::Results,
    staging: &Path,
) -> Result<BTreeMap<String, manifest::Output>> {
    let sde = project.source_date_epoch();
    let mut outputs = BTreeMap::new();
    for r in &results.steps {
        let entry = &r.entry;
        let place = |from: &str, rel: &str| output::place(&entry.path, Path::new(from), &staging.join(rel), rel, sde);
        match &r.id {
            StepId::Frontend => {
                outputs.insert("frontend".into(), place("", "frontend")?);
            }
            StepId::Backend => {
                let mut o = place("backend", "backend")?;
                o.metadata.insert(
                    "packages".into(),
                    output::count_dist_infos(&entry.path, Path::new("backend/site-packages"))?.into(),
                );
                outputs.insert("backend".into(), o);
                let mut api = place("openapi.json", "openapi.json")?;
                // Counted on the placed copy: a regular file farm wrote, not the step's path.
                let (endpoints, schemas) =
                    output::openapi_counts(&std::fs::read(staging.join("openapi.json"))?, "openapi.json")?;
                api.metadata.insert("endpoints".into(), endpoints.into());
                api.metadata.insert("schemas".into(), schemas.into());
                outputs.insert("openapi".into(), api);
            }
            StepId::Models => {
                let mut o = place("", "models")?;
                let refs: Vec<String> = lock.models.iter().map(|m| m.reference.clone()).collect();
                o.metadata.insert("models".into(), refs.into());
                outputs.insert("models".into(), o);
            }
            StepId::Images => {
                let built: BTreeMap<String, serde_json::Value> = serde_json::from_slice(
                    &farm_hostfs::Beneath::open_dir(&entry.path)?.read(Path::new("images.json"))?,
                )?;
                for (name, info) in built {
                    let rel = format!("images/{name}");
                    let mut o = place(&name, &rel)?;
                    if let serde_json::Value::Object(m) = info {
                        o.metadata = m;
                    }
                    outputs.insert(format!("image.{name}"), o);
                }
            }
            StepId::Types => {
                outputs.insert("api-types".into(), place("api-types.ts", "api-types.ts")?);
                let f = config.frontend.as_ref().expect("types need a frontend");
                let committed_rel = f.path.join(f.api_types.as_ref().expect("types are on"));
                let generated = std::fs::read_to_string(staging.join("api-types.ts"))?;
                if let Err(why) = types_up_to_date(root, &committed_rel, &generated) {
                    let msg = format!("{}: {why}", committed_rel.display());
                    if opts.hermetic && !opts.skip_types_check {
                        bail!(msg);
                    }
                    ctx.reporter.warn(&msg);
                }
            }
            StepId::Custom(name) => {
                let rel = format!("steps/{name}");
                outputs.insert(format!("step.{name}"), place("", &rel)?);
            }
            StepId::Deploy => {
                outputs.insert("deploy".into(), place("", "deploy")?);
            }
        }
    }
    Ok(outputs)
}

/// How steps run: in the sandbox with the locked toolchain, or on the host.
pub struct BuildEnv {
    pub hermetic: bool,
    pub toolchain: Option<Toolchain>,
    pub pip: Option<StoreEntry>,
    /// For host builds: versions of the host tools, part of every step key.
    pub host_tools: Vec<String>,
    pub source_date_epoch: u64,
    pub variation: Variation,
    /// The sandbox of hermetic builds.
    pub executor: Option<std::sync::Arc<dyn Executor>>,
    /// Memory and processes of each sandboxed step (`[limits]`).
    pub limits: farm_project::Limits,
}

impl BuildEnv {
    fn new(
        store: &Store,
        lock: &Lock,
        hermetic: bool,
        source_date_epoch: u64,
        variation: &Variation,
        sandbox: SandboxChoice,
        limits: farm_project::Limits,
    ) -> Result<BuildEnv> {
        let variation = variation.clone();
        let pip = match &lock.python {
            Some(p) => store.artifact(&p.pip.integrity.to_string())?,
            None => None,
        };
        if hermetic {
            let tc = toolchain::compose(store, lock)?;
            return Ok(BuildEnv {
                hermetic,
                pip: tc.pip_wheel.clone(),
                toolchain: Some(tc),
                host_tools: vec![],
                source_date_epoch,
                variation,
                executor: Some(executor::select(sandbox)?),
                limits,
            });
        }
        let mut host_tools = Vec::new();
        for (tool, arg) in [("node", "--version"), ("npm", "--version"), ("python3", "--version")] {
            let v = std::process::Command::new(tool)
                .arg(arg)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
            host_tools.push(format!("{tool}={}", v.unwrap_or_else(|| "missing".into())));
        }
        Ok(BuildEnv {
            hermetic,
            toolchain: None,
            pip,
            host_tools,
            source_date_epoch,
            variation,
            executor: None,
            limits,
        })
    }

    pub fn paths(&self) -> scripts::Paths {
        let build = self.variation.build_dir.clone().unwrap_or_else(|| "/build".into());
        scripts::Paths {
            hermetic: self.hermetic,
            build,
            out: "/out".into(),
        }
    }
}
