//! A build: turn config + lock into steps, run them (in the sandbox
//! with `--hermetic`) with an action cache, and write the output directory
//! and its manifest atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use farm_lockfiles::Lock;
use farm_store::{Store, StoreEntry};

use crate::graph::{Step, StepAction};
use crate::toolchain::{self, Toolchain};
use crate::Context;
use crate::{deps, graph, images, manifest, models, output, scripts, source};
use farm_project::config::Project;

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
    pub rerun: Vec<String>,
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
        ("FARM_BUILD_TIMESTAMP", iso8601(sde)),
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

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC, proleptic Gregorian).
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
    pub ran: Vec<String>,
    pub cached: Vec<String>,
}

pub fn build_project(ctx: &Context, project: &Project, opts: &BuildOptions) -> Result<Built> {
    let started = std::time::Instant::now();
    let root = std::fs::canonicalize(&project.root).with_context(|| project.root.display().to_string())?;
    let lock_path = project.lock_path();
    if !lock_path.exists() {
        bail!(
            "{}: no lock file\nhint: run `farm lock && farm fetch`",
            lock_path.display()
        );
    }
    let lock_bytes = std::fs::read(&lock_path)?;
    let lock = Lock::read(&lock_path)?;
    let stale = farm_project::inputs::stale_inputs(&lock, &farm_project::inputs::current_inputs(project)?);
    if !stale.is_empty() {
        let msg = format!(
            "{} is stale:\n  {}\nhint: run `farm lock`",
            lock_path.display(),
            stale.join("\n  ")
        );
        if opts.hermetic {
            bail!(msg);
        }
        ctx.reporter.warn(&msg);
    }
    let targets = select_targets(project, &opts.targets)?;
    let store = Store::open(&ctx.farm_home)?;
    if opts.hermetic {
        toolchain::require_fetched(&store, &lock)?;
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
    }
    let sde = project.source_date_epoch();
    let env = BuildEnv::new(&store, &lock, opts.hermetic, sde, &opts.variation, ctx.sandbox)?;
    if let Some(b) = &env.backend {
        ctx.reporter
            .info(&format!("hermetic build in the {} sandbox", b.name()));
    }

    let (config, vars) = project.config.for_env(&opts.env).map_err(anyhow::Error::msg)?;
    // What every env-dependent step sees: the environment and its variables.
    let mut env_vars: Vec<(String, String)> = vec![("FARM_ENVIRONMENT".into(), opts.env.clone())];
    env_vars.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));

    let mut sources = BTreeMap::new();
    let mut steps: Vec<Step> = Vec::new();
    if targets.contains(&Target::Backend) {
        let b = config.backend.as_ref().expect("checked");
        let src = source::snapshot(&store, &root.join(&b.path), "backend", &[])?;
        sources.insert("backend".to_string(), src.digest.to_string());
        let wheels = deps::wheelhouse(&store, &lock)?;
        let pip = env
            .pip
            .clone()
            .context("farm.lock has no [python] toolchain\nhint: run `farm lock`")?;
        let script = scripts::backend(&env.paths(), &src, &wheels, &pip, &b.requirements, &b.app);
        steps.push(env.sandboxed("backend", vec![], script, vec![src, wheels, pip], env_vars.clone()));
    }
    if targets.contains(&Target::Models) {
        steps.push(models_step(project, &lock, &store)?);
    }
    let types_on = targets.contains(&Target::Backend)
        && (targets.contains(&Target::Frontend) || targets.contains(&Target::Types))
        && config.frontend.as_ref().is_some_and(|f| f.api_types.is_some());
    if types_on {
        steps.push(types_step(&store, &lock, &env)?);
    }
    if targets.contains(&Target::Frontend) {
        let f = config.frontend.as_ref().expect("checked");
        let src = source::snapshot(&store, &root.join(&f.path), "frontend", &[f.output_dir.as_path()])?;
        sources.insert("frontend".to_string(), src.digest.to_string());
        let nm = deps::node_modules(&store, &lock)?;
        for pkg in &f.allow_scripts {
            if !lock.npm.iter().any(|p| p.path == format!("node_modules/{pkg}")) {
                bail!("frontend.allow-scripts names {pkg:?}, which is not a top-level package of the frontend's package-lock.json");
            }
        }
        let script = scripts::frontend(
            &env.paths(),
            &scripts::FrontendStep {
                src: &src,
                node_modules: &nm,
                script: &f.build_script,
                output_dir: &f.output_dir,
                dev: opts.dev,
                api_types: f.api_types.as_deref().filter(|_| types_on),
                allow_scripts: &f.allow_scripts,
            },
        );
        // After the backend, as in the FARM design (the API types come from it).
        let after = if targets.contains(&Target::Backend) {
            vec!["backend".to_string()]
        } else {
            vec![]
        };
        let mut extra = env_vars.clone();
        extra.extend(build_defines(
            &project.config.project.version,
            &src,
            sde,
            &opts.env,
            opts.dev,
        ));
        extra.push((
            "npm_config_cache".to_string(),
            format!("{}/.npm-cache", env.paths().build),
        ));
        let mut step = env.sandboxed("frontend", after, script, vec![src, nm], extra);
        if types_on {
            step.after.push("types".into());
            step.inputs_from.push("types".into());
        }
        steps.push(step);
    }

    // Custom steps run in full builds (all, or images).
    let full = opts.targets.is_empty() || opts.targets.contains(&Target::All) || targets.contains(&Target::Images);
    if full {
        for cs in &config.steps {
            steps.push(custom_step(cs, &root, &store, &env, &env_vars)?);
        }
    }
    if targets.contains(&Target::Images) {
        let deps: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
        let mut plan = images_plan(project, &config, &lock, &store, opts, sde, &ctx.farm_home)?;
        plan.step_layers = config
            .steps
            .iter()
            .filter_map(|s| s.image_path.clone().map(|p| (s.name.clone(), p)))
            .collect();
        steps.push(Step {
            name: "images".into(),
            after: deps.clone(),
            inputs_from: deps,
            action: StepAction::InProcess {
                key_parts: plan.key_parts(),
                run: Box::new(move |out: &Path, deps| images::build(&plan, out, deps)),
            },
        });
        if config.deploy.compose || config.deploy.kubernetes {
            let (cfg, lk) = (config.clone(), lock.clone());
            let mut key_parts = vec![
                "deploy-v1".to_string(),
                serde_json::to_string(&cfg.deploy)?,
                serde_json::to_string(&cfg.images)?,
            ];
            key_parts.extend(lock.images.iter().map(|i| format!("{}={}", i.name, i.digest)));
            key_parts.push(cfg.project.name.clone());
            steps.push(Step {
                name: "deploy".into(),
                after: vec!["images".into()],
                inputs_from: vec!["images".into()],
                action: StepAction::InProcess {
                    key_parts,
                    run: Box::new(move |out: &Path, deps| {
                        let images = deps.get("images").context("the images step's output")?;
                        images::write_deploy(&cfg, &lk, &images.path, out)
                    }),
                },
            });
        }
    }

    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .max(1);
    let runner = graph::Runner {
        store: &store,
        reporter: &ctx.reporter,
        jobs,
        no_cache: opts.no_cache,
        rerun: opts.rerun.clone(),
        logs_dir: ctx.farm_home.join("logs"),
        timeout: opts.step_timeout,
        reverse_order: opts.variation.reverse_order,
    };
    let record_path = root.join(".farm").join("last-build.json");
    let results = runner.run(&steps, &env);
    graph::write_record(&record_path, &results, &steps, &env)?;
    let results = results.into_result()?;

    // Assemble the output directory beside the old one; swap only when complete.
    let out_dir = opts.out.clone().unwrap_or_else(|| root.join(".farm").join("out"));
    let mut outputs = BTreeMap::new();
    let staging = output::Staging::new(&out_dir)?;
    for r in &results.steps {
        let entry = &r.entry;
        match r.name.as_str() {
            "frontend" => {
                outputs.insert(
                    "frontend".into(),
                    output::place(&entry.path, &staging.path().join("frontend"), "frontend", sde)?,
                );
            }
            "backend" => {
                let mut o = output::place(
                    &entry.path.join("backend"),
                    &staging.path().join("backend"),
                    "backend",
                    sde,
                )?;
                o.metadata.insert(
                    "packages".into(),
                    output::count_dist_infos(&entry.path.join("backend/site-packages")).into(),
                );
                outputs.insert("backend".into(), o);
                let mut api = output::place(
                    &entry.path.join("openapi.json"),
                    &staging.path().join("openapi.json"),
                    "openapi.json",
                    sde,
                )?;
                let (endpoints, schemas) = output::openapi_counts(&entry.path.join("openapi.json"))?;
                api.metadata.insert("endpoints".into(), endpoints.into());
                api.metadata.insert("schemas".into(), schemas.into());
                outputs.insert("openapi".into(), api);
            }
            "models" => {
                let mut o = output::place(&entry.path, &staging.path().join("models"), "models", sde)?;
                let refs: Vec<String> = lock.models.iter().map(|m| m.reference.clone()).collect();
                o.metadata.insert("models".into(), refs.into());
                outputs.insert("models".into(), o);
            }
            "images" => {
                let built: BTreeMap<String, serde_json::Value> =
                    serde_json::from_slice(&std::fs::read(entry.path.join("images.json"))?)?;
                for (name, info) in built {
                    let rel = format!("images/{name}");
                    let mut o = output::place(&entry.path.join(&name), &staging.path().join(&rel), &rel, sde)?;
                    if let serde_json::Value::Object(m) = info {
                        o.metadata = m;
                    }
                    outputs.insert(format!("image.{name}"), o);
                }
            }
            "types" => {
                let ts = entry.path.join("api-types.ts");
                outputs.insert(
                    "api-types".into(),
                    output::place(&ts, &staging.path().join("api-types.ts"), "api-types.ts", sde)?,
                );
                let f = config.frontend.as_ref().expect("types need a frontend");
                let committed_rel = f.path.join(f.api_types.as_ref().expect("types are on"));
                let generated = std::fs::read_to_string(&ts)?;
                if let Err(why) = types_up_to_date(&root.join(&committed_rel), &generated) {
                    let msg = format!("{}: {why}", committed_rel.display());
                    if opts.hermetic && !opts.skip_types_check {
                        bail!(msg);
                    }
                    ctx.reporter.warn(&msg);
                }
            }
            name if config.steps.iter().any(|s| s.name == name) => {
                let rel = format!("steps/{name}");
                outputs.insert(
                    format!("step.{name}"),
                    output::place(&entry.path, &staging.path().join(&rel), &rel, sde)?,
                );
            }
            "deploy" => {
                outputs.insert(
                    "deploy".into(),
                    output::place(&entry.path, &staging.path().join("deploy"), "deploy", sde)?,
                );
            }
            other => bail!("internal: no output mapping for step {other}"),
        }
    }
    if let Some(front) = outputs.get("frontend") {
        let dist = staging.path().join(&front.path);
        if opts.analyze || opts.size_limit.is_some() {
            let report = farm_bundle_report::analyze(&dist)?;
            if opts.analyze {
                std::fs::write(staging.path().join("bundle-report.json"), report.to_json())?;
                std::fs::write(
                    staging.path().join("bundle-report.html"),
                    report.to_html(&project.config.project.name),
                )?;
            }
            if let Some(limit) = opts.size_limit {
                report.check_size_limit(limit).map_err(anyhow::Error::msg)?;
            }
        }
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
    let metrics = results.metrics(started.elapsed());
    std::fs::write(
        staging.path().join(manifest::METRICS_FILE),
        serde_json::to_string_pretty(&metrics)? + "\n",
    )?;
    if let Some(p) = &opts.profile {
        std::fs::write(p, manifest::trace_json(&results.trace())).with_context(|| p.display().to_string())?;
    }
    staging.commit()?;
    let ran = results
        .steps
        .iter()
        .filter(|r| !r.record.cached)
        .map(|r| r.name.clone())
        .collect();
    let cached = results
        .steps
        .iter()
        .filter(|r| r.record.cached)
        .map(|r| r.name.clone())
        .collect();
    Ok(Built {
        manifest,
        out_dir,
        ran,
        cached,
    })
}

fn select_targets(project: &Project, asked: &[Target]) -> Result<Vec<Target>> {
    let c = &project.config;
    let all = asked.is_empty() || asked.contains(&Target::All);
    let images_configured = c.images.app && c.backend.is_some();
    let want_images = asked.contains(&Target::Images) || (all && images_configured);
    let want_types = asked.contains(&Target::Types);
    if want_types && !(c.backend.is_some() && c.frontend.as_ref().is_some_and(|f| f.api_types.is_some())) {
        bail!("target types needs [backend] and frontend.api-types in farm.toml");
    }
    if asked.contains(&Target::Images) && !images_configured {
        bail!("target images needs a [backend] section in farm.toml and images.app = true");
    }
    let mut out = Vec::new();
    for (t, configured, section) in [
        (Target::Backend, c.backend.is_some(), "[backend]"),
        (Target::Models, c.models.is_some(), "[models]"),
        (Target::Frontend, c.frontend.is_some(), "[frontend]"),
    ] {
        // The images contain the other outputs, so they are built too.
        let implied = want_images || (want_types && t == Target::Backend);
        if (all || implied) && configured || asked.contains(&t) {
            if !configured {
                bail!("target {t:?} needs a {section} section in farm.toml");
            }
            out.push(t);
        }
    }
    if want_images {
        out.push(Target::Images);
    }
    if want_types {
        out.push(Target::Types);
    }
    if out.is_empty() {
        bail!("nothing to build: farm.toml has no [frontend], [backend] or [models]");
    }
    Ok(out)
}

/// A `[[steps]]` entry as a sandboxed script step: its inputs are bound and
/// named in `$FARM_INPUT_<NAME>`, its output is `$out`.
fn custom_step(
    cs: &farm_project::config::CustomStep,
    root: &Path,
    store: &Store,
    env: &BuildEnv,
    env_vars: &[(String, String)],
) -> Result<Step> {
    let paths = env.paths();
    let var = |s: &str| {
        let v: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("FARM_INPUT_{v}")
    };
    let mut script = format!("set -eu\nexport out={}\n", scripts::OUT_PLACEHOLDER);
    let mut inputs = Vec::new();
    let mut deps = Vec::new();
    for input in &cs.inputs {
        match input.split_once(':') {
            Some(("step", dep)) => {
                script.push_str(&format!("export {}={}\n", var(dep), scripts::dep(dep)));
                deps.push(dep.to_string());
            }
            Some(("path", rel)) => {
                let snap = source::snapshot(
                    store,
                    &root.join(rel),
                    &format!("{}-{}", cs.name, rel.replace('/', "_")),
                    &[],
                )?;
                script.push_str(&format!("export {}={}\n", var(rel), scripts::q(&paths.store(&snap))));
                inputs.push(snap);
            }
            // Every toolchain of the lock is on PATH in every step.
            _ => {}
        }
    }
    script.push_str(&format!(
        "mkdir -p {b}/step\ncd {b}/step\n",
        b = scripts::BUILD_PLACEHOLDER
    ));
    script.push_str(&format!("(\n{}\n)\n", cs.command));
    for o in &cs.outputs {
        script.push_str(&format!(
            "[ -e \"$out\"/{q} ] || {{ echo \"farm: step {n} did not create $out/{o} (steps.{n}.outputs in farm.toml)\" >&2; exit 1; }}\n",
            q = scripts::q(o),
            n = cs.name,
        ));
    }
    let mut step = env.sandboxed(&cs.name, deps.clone(), script, inputs, env_vars.to_vec());
    step.inputs_from = deps;
    Ok(step)
}

/// `types`: TypeScript types from the backend's OpenAPI schema, by farm's own
/// generator, into an entry the frontend step copies into its build tree.
fn types_step(store: &Store, lock: &Lock, env: &BuildEnv) -> Result<Step> {
    // The app's own generator when its lock has one, run offline in the sandbox.
    if lock.npm.iter().any(|p| p.path == "node_modules/openapi-typescript") {
        let nm = deps::node_modules(store, lock)?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(nm.path.join("openapi-typescript/package.json"))?)?;
        let bin = match &manifest["bin"] {
            serde_json::Value::String(b) => b.clone(),
            serde_json::Value::Object(m) => m
                .get("openapi-typescript")
                .and_then(|b| b.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        if bin.is_empty() {
            bail!("openapi-typescript's package.json names no bin to run");
        }
        let (b, o) = (scripts::BUILD_PLACEHOLDER, scripts::OUT_PLACEHOLDER);
        let script = format!(
            "set -eu\nmkdir -p \"{b}/gen/node_modules\"\ncp -R {nm}/. \"{b}/gen/node_modules/\"\ncd \"{b}/gen\"\nnode {bin} {api}/openapi.json --output \"{o}/api-types.ts\"\n",
            nm = scripts::q(&env.paths().store(&nm)),
            bin = scripts::q(&format!("node_modules/openapi-typescript/{}", bin.trim_start_matches("./"))),
            api = scripts::dep("backend"),
        );
        let mut step = env.sandboxed("types", vec!["backend".into()], script, vec![nm], vec![]);
        step.inputs_from = vec!["backend".into()];
        return Ok(step);
    }
    Ok(Step {
        name: "types".into(),
        after: vec!["backend".into()],
        inputs_from: vec!["backend".into()],
        action: StepAction::InProcess {
            key_parts: vec!["farm-typegen-v2".into()],
            run: Box::new(|out: &Path, deps| {
                let backend = deps.get("backend").context("the backend step's output")?;
                let api: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(backend.path.join("openapi.json"))?)?;
                std::fs::write(out.join("api-types.ts"), farm_typegen::generate(&api)?)?;
                Ok(())
            }),
        },
    })
}

/// Whether the committed types file is what the generator made.
pub fn types_up_to_date(committed: &Path, generated: &str) -> Result<(), String> {
    match std::fs::read_to_string(committed) {
        Ok(text) => farm_typegen::check_text(generated, &text),
        Err(_) => Err("missing: the generated API types have not been written yet".into()),
    }
}

fn images_plan(
    project: &Project,
    config: &farm_project::config::Config,
    lock: &Lock,
    store: &Store,
    opts: &BuildOptions,
    sde: u64,
    farm_home: &Path,
) -> Result<images::ImagesPlan> {
    let ollama = match (&lock.ollama, config.images.ollama && config.models.is_some()) {
        (Some(o), true) => Some(
            store
                .artifact(&o.integrity.to_string())?
                .with_context(|| format!("ollama {} is not in the store\nhint: run `farm fetch`", o.version))?,
        ),
        _ => None,
    };
    let compression = match opts.compression.unwrap_or(config.images.compression) {
        farm_project::config::Compression::Gzip => farm_images::Compression::Gzip,
        farm_project::config::Compression::Zstd => farm_images::Compression::Zstd,
    };
    Ok(images::ImagesPlan {
        project: config.project.name.clone(),
        version: config.project.version.clone(),
        image_name: config
            .images
            .name
            .clone()
            .unwrap_or_else(|| config.project.name.clone()),
        python: lock.python.as_ref().map(|p| p.version.clone()),
        asgi_app: config.backend.as_ref().map(|b| b.app.clone()),
        runtime_root: toolchain::runtime_root(store, lock)?,
        image_files: images::image_files(store)?,
        ollama,
        step_layers: vec![],
        compression,
        created: sde,
        revision: git_revision(&project.root),
        layer_cache: farm_home.join("cache").join("layers"),
    })
}

/// The commit the project is built from, when it is a clean git checkout.
fn git_revision(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let dirty = git(&["status", "--porcelain", "--", "."])?;
    if !dirty.is_empty() {
        return None;
    }
    git(&["rev-parse", "HEAD"]).filter(|r| !r.is_empty())
}

fn models_step(project: &Project, lock: &Lock, store: &Store) -> Result<Step> {
    let m = project.config.models.as_ref().expect("checked");
    let host = match &m.host {
        Some(h) => h.clone(),
        None => {
            let reg = farm_project::endpoints::models_registry(project)?.unwrap_or_default();
            url::Url::parse(&reg)
                .ok()
                .and_then(|u| {
                    u.host_str().map(|h| match u.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_string(),
                    })
                })
                .context("models.host is not set and models.registry is not a URL with a host")?
        }
    };
    let ai_config = m.config.as_ref().map(|c| project.root.join(c));
    let mut key_parts = vec![format!("host={host}")];
    for model in &lock.models {
        key_parts.push(format!("{}={}", model.reference, model.manifest.digest));
    }
    if let Some(cfg) = &ai_config {
        let bytes = std::fs::read(cfg).with_context(|| format!("models.config: {}", cfg.display()))?;
        key_parts.push(format!("ai-config={}", farm_lockfiles::integrity::sha256_of(&bytes)));
    }
    let lock = lock.clone();
    let store_root = store.root().to_path_buf();
    Ok(Step {
        name: "models".into(),
        after: vec![],
        inputs_from: vec![],
        action: StepAction::InProcess {
            key_parts,
            run: Box::new(move |out: &Path, _deps| {
                let store = Store::open(&store_root)?;
                models::write_models_dir(&store, &lock, &host, ai_config.as_deref(), out)?;
                Ok(())
            }),
        },
    })
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
    pub backend: Option<crate::executor::Executor>,
}

impl BuildEnv {
    fn new(
        store: &Store,
        lock: &Lock,
        hermetic: bool,
        source_date_epoch: u64,
        variation: &Variation,
        sandbox: crate::executor::SandboxChoice,
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
                backend: Some(crate::executor::Executor::select(sandbox)?),
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
            backend: None,
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

    fn sandboxed(
        &self,
        name: &str,
        after: Vec<String>,
        script: String,
        inputs: Vec<StoreEntry>,
        extra_env: Vec<(String, String)>,
    ) -> Step {
        Step {
            name: name.into(),
            after,
            inputs_from: vec![],
            action: StepAction::Script {
                script,
                inputs,
                extra_env,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::iso8601;

    #[test]
    fn iso8601_matches_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z", "a leap day");
    }
}
