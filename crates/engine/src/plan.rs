//! The plan of a build: which targets the user's request selects, and the
//! steps that build them (frontend, backend, models, types, custom steps,
//! images, deploy files), each with its inputs, script or in-process action.
//! Nothing runs here; the scheduler runs the plan.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use farm_hostfs::Beneath;
use farm_lockfiles::Lock;
use farm_project::config::Config;
use farm_project::Project;
use farm_store::Store;

use crate::build::{BuildEnv, BuildOptions, Target};
use crate::step::{Step, StepAction, StepId};
use crate::{deps, images, models, scripts, source, toolchain};

/// The steps of one build, and the digests of the source snapshots they read.
pub struct Plan {
    pub steps: Vec<Step>,
    /// Tree digest of each source snapshot, by name (`frontend`, `backend`).
    pub sources: BTreeMap<String, String>,
}

/// What planning reads.
pub struct PlanInputs<'a> {
    pub project: &'a Project,
    /// The project root, canonical.
    pub root: &'a Path,
    /// farm.toml with the build environment applied.
    pub config: &'a Config,
    pub lock: &'a Lock,
    pub store: &'a Store,
    pub env: &'a BuildEnv,
    pub opts: &'a BuildOptions,
    pub farm_home: &'a Path,
    /// The selected targets (see [`select_targets`]).
    pub targets: &'a [Target],
    /// What every environment-dependent step sees: the environment's name and variables.
    pub env_vars: &'a [(String, String)],
}

/// The steps that build `inputs.targets`.
pub fn plan(inputs: &PlanInputs) -> Result<Plan> {
    let PlanInputs {
        project,
        root,
        config,
        lock,
        store,
        env,
        opts,
        farm_home,
        targets,
        env_vars,
    } = *inputs;
    let sde = env.source_date_epoch;
    let mut sources = BTreeMap::new();
    let mut steps: Vec<Step> = Vec::new();
    if targets.contains(&Target::Backend) {
        let b = config.backend.as_ref().expect("checked");
        let src = source::snapshot(store, root, &b.path, "backend", &[])?;
        sources.insert("backend".to_string(), src.digest.to_string());
        let wheels = deps::wheelhouse(store, lock)?;
        let pip = env
            .pip
            .clone()
            .context("farm.lock has no [python] toolchain\nhint: run `farm lock`")?;
        // With a Python lockfile the lock's wheels are the whole install.
        let requirements = match project.python_deps() {
            Some(farm_project::config::PythonDeps::Lockfile(_)) => None,
            _ => Some(b.requirements.clone().unwrap_or_else(|| "requirements.txt".into())),
        };
        let script = scripts::backend(&env.paths(), &src, &wheels, &pip, requirements.as_deref(), &b.app);
        let mut extra = env_vars.to_vec();
        if !env.backend_secrets.is_empty() {
            // Names only: the OpenAPI export reads the values from the secret files.
            extra.push(("FARM_BACKEND_SECRETS".into(), env.backend_secrets.join(" ")));
        }
        steps.push(Step::script(
            StepId::Backend,
            vec![],
            script,
            vec![src, wheels, pip],
            extra,
        ));
    }
    if targets.contains(&Target::Models) {
        steps.push(models_step(project, lock, store)?);
    }
    let types_on = targets.contains(&Target::Backend)
        && (targets.contains(&Target::Frontend) || targets.contains(&Target::Types))
        && config.frontend.as_ref().is_some_and(|f| f.api_types.is_some());
    if types_on {
        steps.push(types_step(store, lock, env, project)?);
    }
    if targets.contains(&Target::Frontend) {
        let f = config.frontend.as_ref().expect("checked");
        let src = source::snapshot(store, root, &f.path, "frontend", &[f.output_dir.as_path()])?;
        sources.insert("frontend".to_string(), src.digest.to_string());
        let layout = deps::js_layout(project)?.context("the frontend has no JS lockfile")?;
        let nm = deps::node_modules(store, lock, &layout, crate::ops::fetch::unpack_limits(project))?;
        let workspace = deps::workspace_sources(store, project, &layout)?;
        for pkg in &f.allow_scripts {
            if deps::installed_at(lock, &layout, &format!("node_modules/{pkg}")).is_none() {
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
                member: &layout.member,
                workspace: &workspace,
                links: &layout.links,
            },
        );
        // After the backend, as in the FARM design (the API types come from it).
        let after = if targets.contains(&Target::Backend) {
            vec![StepId::Backend]
        } else {
            vec![]
        };
        let mut extra = env_vars.to_vec();
        extra.extend(crate::build::build_defines(
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
        let mut inputs = vec![src, nm];
        inputs.extend(workspace.into_iter().map(|(_, e)| e));
        let mut step = Step::script(StepId::Frontend, after, script, inputs, extra);
        if types_on {
            step.after.push(StepId::Types);
            step.inputs_from.push(StepId::Types);
        }
        steps.push(step);
        if f.optimize_images {
            steps.push(crate::optimize_step::step(
                env.executor.clone(),
                env.limits,
                sde,
                opts.step_timeout,
            )?);
        }
    }

    // Custom steps run in full builds (all, or images).
    let full = opts.targets.is_empty() || opts.targets.contains(&Target::All) || targets.contains(&Target::Images);
    if full {
        for cs in &config.steps {
            steps.push(custom_step(cs, root, store, env, env_vars)?);
        }
    }
    if targets.contains(&Target::Images) {
        let deps: Vec<StepId> = steps.iter().map(|s| s.id.clone()).collect();
        let mut plan = images_plan(project, config, lock, store, opts, sde, farm_home)?;
        plan.step_layers = config
            .steps
            .iter()
            .filter_map(|s| s.image_path.clone().map(|p| (s.name.clone(), p)))
            .collect();
        steps.push(Step {
            id: StepId::Images,
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
                "deploy-v2".to_string(),
                serde_json::to_string(&cfg.deploy)?,
                serde_json::to_string(&cfg.images)?,
            ];
            key_parts.extend(lock.images.iter().map(|i| format!("{}={}", i.name, i.digest)));
            key_parts.push(cfg.project.name.clone());
            steps.push(Step {
                id: StepId::Deploy,
                after: vec![StepId::Images],
                inputs_from: vec![StepId::Images],
                action: StepAction::InProcess {
                    key_parts,
                    run: Box::new(move |out: &Path, deps| {
                        let images = deps.get(&StepId::Images).context("the images step's output")?;
                        images::write_deploy(&cfg, &lk, &images.path, out)
                    }),
                },
            });
        }
    }

    Ok(Plan { steps, sources })
}

pub fn select_targets(project: &Project, asked: &[Target]) -> Result<Vec<Target>> {
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
                deps.push(StepId::parse(dep));
            }
            Some(("path", rel)) => {
                let snap = source::snapshot(
                    store,
                    root,
                    Path::new(rel),
                    &format!("{}-{}", cs.name, rel.replace('/', "_")),
                    &[],
                )
                .with_context(|| format!("steps.{}.inputs: {input:?}", cs.name))?;
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
    let mut step = Step::script(
        StepId::Custom(cs.name.clone()),
        deps.clone(),
        script,
        inputs,
        env_vars.to_vec(),
    );
    step.inputs_from = deps;
    Ok(step)
}

/// `types`: TypeScript types from the backend's OpenAPI schema, by farm's own
/// generator, into an entry the frontend step copies into its build tree.
fn types_step(store: &Store, lock: &Lock, env: &BuildEnv, project: &Project) -> Result<Step> {
    // The app's own generator when its lock has one, run offline in the sandbox.
    let layout = deps::js_layout(project)?;
    let app_generator = layout
        .as_ref()
        .and_then(|l| Some((l, deps::installed_at(lock, l, "node_modules/openapi-typescript")?)));
    if let Some((layout, real)) = app_generator {
        let nm = deps::node_modules(store, lock, layout, crate::ops::fetch::unpack_limits(project))?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&Beneath::open_dir(&nm.path)?.read(&Path::new(&real).join("package.json"))?)?;
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
            "set -eu\nmkdir -p \"{b}/gen/node_modules\"\ncp -R {nm}/node_modules/. \"{b}/gen/node_modules/\"\ncd \"{b}/gen\"\nnode {bin} {api}/openapi.json --output \"{o}/api-types.ts\"\n",
            nm = scripts::q(&env.paths().store(&nm)),
            bin = scripts::q(&format!("{real}/{}", bin.trim_start_matches("./"))),
            api = scripts::dep("backend"),
        );
        let mut step = Step::script(StepId::Types, vec![StepId::Backend], script, vec![nm], vec![]);
        step.inputs_from = vec![StepId::Backend];
        return Ok(step);
    }
    Ok(Step {
        id: StepId::Types,
        after: vec![StepId::Backend],
        inputs_from: vec![StepId::Backend],
        action: StepAction::InProcess {
            key_parts: vec!["farm-typegen-v2".into()],
            run: Box::new(|out: &Path, deps| {
                let backend = deps.get(&StepId::Backend).context("the backend step's output")?;
                // The backend step wrote this file: read it without following a link it may have planted.
                let bytes = Beneath::open_dir(&backend.path)?
                    .read(Path::new("openapi.json"))
                    .context("the backend step's /out/openapi.json")?;
                let api: serde_json::Value =
                    serde_json::from_slice(&bytes).context("the backend step's /out/openapi.json is not JSON")?;
                std::fs::write(out.join("api-types.ts"), farm_typegen::generate(&api)?)?;
                Ok(())
            }),
        },
    })
}

/// Whether the committed types file `committed` (relative to the project
/// root `root`) is what the generator made. A symlink there is not followed.
pub fn types_up_to_date(root: &Path, committed: &Path, generated: &str) -> Result<(), String> {
    let read = Beneath::open_dir(root).and_then(|p| p.read_to_string(committed));
    match read {
        Ok(text) => farm_typegen::check_text(generated, &text),
        Err(e) if e.is_not_found() => Err("missing: the generated API types have not been written yet".into()),
        Err(e) => Err(e.to_string()),
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
        front: images::FrontConfig::from_config(&config.images),
    })
}

/// The commit the project is built from, when it is a clean git checkout.
fn git_revision(root: &Path) -> Option<String> {
    farm_project::git::revision(root).filter(|r| r.clean).map(|r| r.commit)
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
    let mut key_parts = vec![format!("host={host}")];
    for model in &lock.models {
        key_parts.push(format!("{}={}", model.reference, model.manifest.digest));
    }
    // Read once, without following a link, and hashed and used as read.
    let ai_config = match &m.config {
        Some(c) => {
            let text = Beneath::open_dir(&project.root)
                .and_then(|p| p.read_to_string(c))
                .with_context(|| format!("models.config: {}", c.display()))?;
            key_parts.push(format!(
                "ai-config={}",
                farm_lockfiles::integrity::sha256_of(text.as_bytes())
            ));
            Some((project.root.join(c), text))
        }
        None => None,
    };
    let lock = lock.clone();
    let store_root = store.root().to_path_buf();
    Ok(Step {
        id: StepId::Models,
        after: vec![],
        inputs_from: vec![],
        action: StepAction::InProcess {
            key_parts,
            run: Box::new(move |out: &Path, _deps| {
                let store = Store::open(&store_root)?;
                let cfg = ai_config.as_ref().map(|(p, t)| (p.as_path(), t.as_str()));
                models::write_models_dir(&store, &lock, &host, cfg, out)?;
                Ok(())
            }),
        },
    })
}
