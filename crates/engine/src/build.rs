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
    /// `--var` and `--secret`.
    pub settings: BuildSettings,
}

/// Build-time variables and secrets given on the command line
/// (spec/farm-toml.md, "Build-time variables and secrets").
#[derive(Debug, Clone, Default)]
pub struct BuildSettings {
    /// `--var NAME=VALUE`, over the environment's `vars`; part of step keys.
    pub vars: Vec<(String, String)>,
    /// `--secret`: files under /run/secrets in the steps; never in a key.
    pub secrets: Vec<Secret>,
    /// `--remote-cache`: a REAPI server's action cache beside the local one.
    pub remote: Option<crate::remote_cache::RemoteSettings>,
}

/// A secret's name and value. Its `Debug` leaves the value out.
#[derive(Clone)]
pub struct Secret {
    pub name: String,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}, {} bytes)", self.name, self.value.len())
    }
}

/// The variables of environment `env` with `--var`s applied over them, and
/// a check that `backend.vars` and `backend.secrets` are all given.
fn resolve_settings(
    config: &farm_project::Config,
    env: &str,
    env_vars: BTreeMap<String, String>,
    settings: &BuildSettings,
    backend: bool,
) -> Result<BTreeMap<String, String>> {
    let mut vars = env_vars;
    for (k, v) in &settings.vars {
        if !farm_project::config::is_build_var_name(k) {
            bail!("--var {k}: {}", farm_project::config::BUILD_VAR_NAME);
        }
        vars.insert(k.clone(), v.clone());
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &settings.secrets {
        if !farm_project::config::is_build_var_name(&s.name) {
            bail!("--secret {}: {}", s.name, farm_project::config::BUILD_VAR_NAME);
        }
        if !seen.insert(&s.name) {
            bail!("--secret {} is given twice", s.name);
        }
        if vars.contains_key(&s.name) {
            bail!(
                "{} is both a build-time variable and a secret\nhint: a secret must not also be a --var or an [env.{env}.vars] entry",
                s.name
            );
        }
    }
    if let Some(b) = config.backend.as_ref().filter(|_| backend) {
        for name in &b.vars {
            if !vars.contains_key(name) {
                bail!(
                    "farm.toml: backend.vars needs the build-time variable {name}, which is not set for environment {env}\n\
                     hint: pass `--var {name}=VALUE` (or `--var {name}` to take it from your environment), or set it in [env.{env}.vars]"
                );
            }
        }
        for name in &b.secrets {
            if !settings.secrets.iter().any(|s| &s.name == name) {
                bail!(
                    "farm.toml: backend.secrets needs the secret {name}, which was not given\n\
                     hint: pass `--secret {name}` (reads ${name}), `--secret {name}=env:VAR` or `--secret {name}=file:PATH`"
                );
            }
        }
    }
    Ok(vars)
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
    let (config, vars) = project.config.for_env(&opts.env).map_err(anyhow::Error::msg)?;
    let vars = resolve_settings(
        &config,
        &opts.env,
        vars,
        &opts.settings,
        targets.contains(&Target::Backend),
    )?;
    let mut env = BuildEnv::new(
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
    if targets.contains(&Target::Backend) {
        if let (Some(tc), Some(x)) = (&env.toolchain, &env.executor) {
            if let Some(wheel) = &tc.pip_wheel {
                match toolchain::ready_pip(&store, tc, wheel, x.as_ref(), sde, &project.limits()) {
                    Ok(e) => env.pip = Some(e),
                    Err(e) => ctx
                        .reporter
                        .warn(&format!("pip runs from its wheel, which is slower: {e:#}")),
                }
            }
        }
    }
    let container = env.executor.as_ref().is_some_and(|x| x.name() == "container");
    env.secrets = executor::SecretFiles::write(&opts.settings.secrets, container)?;
    env.backend_secrets = config.backend.as_ref().map(|b| b.secrets.clone()).unwrap_or_default();

    // What every env-dependent step sees: the environment and its variables.
    let mut env_vars: Vec<(String, String)> = vec![("FARM_ENVIRONMENT".into(), opts.env.clone())];
    env_vars.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    let snapshots_before = crate::source::Counters::now();
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
    // What the source snapshots read (farm-metrics.json `sources`).
    let snapshots = crate::source::Counters::now().since(&snapshots_before);

    let results = run_steps(ctx, project, opts, &store, &env, &steps)?;

    // Outputs already in place (the same placement and manifest, the
    // directory untouched since) stay as they are; otherwise the directory
    // is assembled beside the old one and swapped in only when complete.
    let out_dir = opts.out.clone().unwrap_or_else(|| project.state().out());
    let planned = plan_outputs(&lock, &results)?;
    check_types(ctx, &root, &config, opts, &results)?;
    let placement = output::placement_key(
        &planned,
        sde,
        &serde_json::json!({ "analyze": opts.analyze, "project": project.config.project.name }),
    );
    let farm_toml = farm_lockfiles::integrity::sha256_of(&std::fs::read(root.join(farm_project::config::CONFIG_FILE))?);
    let make_manifest = |outputs| {
        let mut m = manifest::Manifest {
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
                farm_toml: farm_toml.to_string(),
                sources: sources.clone(),
            },
            outputs,
            digest: String::new(),
        };
        m.seal();
        m
    };
    let previous = output::Marker::read(&out_dir);
    let mut kept = None;
    if let Some(m) = previous.as_ref().filter(|m| m.placement == placement) {
        let manifest = make_manifest(m.outputs.clone());
        if manifest.digest == m.manifest_digest && output::dir_stamp(&out_dir)?.as_deref() == Some(m.stamp.as_str()) {
            kept = Some(manifest);
        }
    }
    let mut placed = output::PlaceStats::default();
    let (manifest, staging) = match kept {
        Some(manifest) => {
            if let (Some(limit), Some(front)) = (opts.size_limit, manifest.outputs.get("frontend")) {
                let report = farm_bundle_report::analyze(&out_dir.join(&front.path))?;
                report.check_size_limit(limit).map_err(anyhow::Error::msg)?;
            }
            (manifest, None)
        }
        None => {
            output::Marker::remove(&out_dir)?;
            let staging = output::Staging::new(&out_dir)?;
            let mut outputs = place_outputs(&planned, staging.path(), sde, &mut placed, previous.as_ref(), &out_dir)?;
            if let Some(front) = outputs.get("frontend") {
                bundle_report(project, opts, staging.path(), &staging.path().join(&front.path))?;
            }
            // The SBOMs are outputs too, and attached to the images' layouts (spec/attestations.md).
            crate::ops::attest::write_release_sboms(
                &store,
                project,
                &lock,
                staging.path(),
                &mut outputs,
                &make_manifest,
            )?;
            let manifest = make_manifest(outputs);
            std::fs::write(staging.path().join(manifest::MANIFEST_FILE), manifest.to_bytes())?;
            (manifest, Some(staging))
        }
    };
    let mut metrics = manifest::metrics_without_host_paths(results.metrics(started.elapsed()), &ctx.farm_home);
    // The build summary `farm build` prints, machine-readable.
    metrics["targets"] = targets.iter().map(|t| format!("{t:?}").to_lowercase()).collect();
    // The SBOMs describe the artifacts; they are not counted among them.
    let built = || {
        manifest
            .outputs
            .iter()
            .filter(|(k, _)| !k.starts_with("sbom."))
            .map(|(_, o)| o)
    };
    metrics["artifacts"] = built().count().into();
    metrics["artifacts_bytes"] = built().map(|o| o.size).sum::<u64>().into();
    metrics["cache_misses"] = results.records.values().filter(|r| !r.cached).count().into();
    metrics["sources"] = snapshots;
    metrics["outputs"] = serde_json::json!({
        "placed": staging.is_some(),
        "carried_over": placed.carried,
        "files_reflinked": placed.reflinked,
        "files_copied": placed.copied,
    });
    let metrics_bytes = serde_json::to_string_pretty(&metrics)? + "\n";
    if let Some(p) = &opts.profile {
        std::fs::write(p, manifest::trace_json(&results.trace())).with_context(|| p.display().to_string())?;
    }
    match staging {
        Some(staging) => {
            std::fs::write(staging.path().join(manifest::METRICS_FILE), metrics_bytes)?;
            staging.commit()?;
            if let Some(stamp) = output::dir_stamp(&out_dir)? {
                let mut parts = BTreeMap::new();
                for p in &planned {
                    if let Some(stamp) = output::path_stamp(&out_dir, Path::new(&p.rel))? {
                        let key = output::part_key(p, sde);
                        parts.insert(p.name.clone(), output::Part { key, stamp });
                    }
                }
                let marker = output::Marker {
                    placement,
                    manifest_digest: manifest.digest.clone(),
                    outputs: manifest.outputs.clone(),
                    stamp,
                    parts,
                };
                // A marker that cannot be written costs the next build a placement, nothing more.
                let _ = marker.write(&out_dir);
            }
        }
        // Only the run-to-run facts change; nothing else in the directory is written.
        None => output::replace_file(&out_dir, manifest::METRICS_FILE, metrics_bytes.as_bytes())?,
    }
    // The build succeeded: trim the store's build products to farm.toml's `[cache]`.
    crate::ops::cache::after_build(ctx, project);
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
    let remote = match &opts.settings.remote {
        Some(s) => crate::remote_cache::RemoteCache::connect(s, &ctx.reporter)?,
        None => None,
    };
    let runner = schedule::Runner {
        remote: remote.as_ref(),
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
    schedule::write_record(&project.state().last_build(), &ctx.farm_home, &results, steps, env)?;
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

/// Every step's outputs: which store entry path goes where in the output
/// directory, with the manifest metadata known before placing (the images'
/// from their step's images.json, the models' from the lock).
fn plan_outputs(lock: &Lock, results: &schedule::Results) -> Result<Vec<output::Planned>> {
    let mut planned = Vec::new();
    for r in &results.steps {
        let mut add = |name: String, from: &str, rel: String, metadata: serde_json::Map<String, serde_json::Value>| {
            planned.push(output::Planned {
                name,
                entry: r.entry.clone(),
                from: from.to_string(),
                rel,
                metadata,
            })
        };
        let none = serde_json::Map::new;
        match &r.id {
            // With optimize-images, the frontend output is that step's (optimised) tree.
            StepId::Frontend if results.steps.iter().any(|s| s.id == StepId::OptimizeImages) => {}
            StepId::Frontend | StepId::OptimizeImages => add("frontend".into(), "", "frontend".into(), none()),
            StepId::Backend => {
                add("backend".into(), "backend", "backend".into(), none());
                add("openapi".into(), "openapi.json", "openapi.json".into(), none());
            }
            StepId::Models => {
                let refs: Vec<String> = lock.models.iter().map(|m| m.reference.clone()).collect();
                let mut m = none();
                m.insert("models".into(), refs.into());
                add("models".into(), "", "models".into(), m);
            }
            StepId::Images => {
                let built: BTreeMap<String, serde_json::Value> = serde_json::from_slice(
                    &farm_hostfs::Beneath::open_dir(&r.entry.path)?.read(Path::new("images.json"))?,
                )?;
                for (name, info) in built {
                    let m = match info {
                        serde_json::Value::Object(m) => m,
                        _ => none(),
                    };
                    add(format!("image.{name}"), &name, format!("images/{name}"), m);
                }
            }
            StepId::Types => add("api-types".into(), "api-types.ts", "api-types.ts".into(), none()),
            StepId::Custom(name) => add(format!("step.{name}"), "", format!("steps/{name}"), none()),
            StepId::Deploy => add("deploy".into(), "", "deploy".into(), none()),
        }
    }
    Ok(planned)
}

/// Places the planned outputs in the staging output directory and
/// describes each for the manifest. An output the previous build placed in
/// `out_dir` from the same entry, untouched since (its part of `previous`),
/// is carried over from there with the description it had.
fn place_outputs(
    planned: &[output::Planned],
    staging: &Path,
    sde: u64,
    stats: &mut output::PlaceStats,
    previous: Option<&output::Marker>,
    out_dir: &Path,
) -> Result<BTreeMap<String, manifest::Output>> {
    let mut outputs = BTreeMap::new();
    for p in planned {
        let to = staging.join(&p.rel);
        if let Some((part, o)) = previous.and_then(|m| Some((m.parts.get(&p.name)?, m.outputs.get(&p.name)?))) {
            if part.key == output::part_key(p, sde)
                && output::path_stamp(out_dir, Path::new(&p.rel))?.as_deref() == Some(part.stamp.as_str())
            {
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
                }
                output::carry_over(out_dir, Path::new(&p.rel), &to, sde)?;
                stats.carried += 1;
                outputs.insert(p.name.clone(), o.clone());
                continue;
            }
        }
        let mut o = output::place(&p.entry.path, Path::new(&p.from), &to, &p.rel, sde, stats)?;
        o.metadata.extend(p.metadata.clone());
        match p.name.as_str() {
            "backend" => {
                let n = output::count_dist_infos(&p.entry.path, Path::new("backend/site-packages"))?;
                o.metadata.insert("packages".into(), n.into());
            }
            "openapi" => {
                // Counted on the placed copy: a regular file farm wrote, not the step's path.
                let (endpoints, schemas) = output::openapi_counts(&std::fs::read(&to)?, "openapi.json")?;
                o.metadata.insert("endpoints".into(), endpoints.into());
                o.metadata.insert("schemas".into(), schemas.into());
            }
            _ => {}
        }
        outputs.insert(p.name.clone(), o);
    }
    Ok(outputs)
}

/// A hermetic build fails when the committed API types differ from the
/// generated ones (read from the types step's store entry); others warn.
fn check_types(
    ctx: &Context,
    root: &Path,
    config: &farm_project::Config,
    opts: &BuildOptions,
    results: &schedule::Results,
) -> Result<()> {
    for r in results.steps.iter().filter(|r| matches!(r.id, StepId::Types)) {
        let f = config.frontend.as_ref().expect("types need a frontend");
        let committed_rel = f.path.join(f.api_types.as_ref().expect("types are on"));
        let generated = farm_hostfs::Beneath::open_dir(&r.entry.path)?.read_to_string(Path::new("api-types.ts"))?;
        if let Err(why) = types_up_to_date(root, &committed_rel, &generated) {
            let msg = format!("{}: {why}", committed_rel.display());
            if opts.hermetic && !opts.skip_types_check {
                bail!(msg);
            }
            ctx.reporter.warn(&msg);
        }
    }
    Ok(())
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
    /// `--secret`s, as files the script steps see under /run/secrets.
    pub secrets: Option<executor::SecretFiles>,
    /// `backend.secrets`: also variables of the backend's OpenAPI export.
    pub backend_secrets: Vec<String>,
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
                secrets: None,
                backend_secrets: vec![],
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
            secrets: None,
            backend_secrets: vec![],
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
