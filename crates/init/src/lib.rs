//! What `farm init` does: look at an existing FARM framework app (apps/web + apps/api,
//! a `farm.config.ts`) or a plain Vite + FastAPI repository and write a
//! commented farm.toml for it. Everything is read statically: no JavaScript
//! or Python runs and nothing is fetched, so init works before `farm lock`.
//! It is not a validator of the app: `farm lock` and `farm build` are.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use farm_project::config::{self, CONFIG_FILE};
use pep440_rs::{Version, VersionSpecifiers};
use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// Node used when the project pins none.
pub const DEFAULT_NODE: &str = "22.19.0";
/// The MongoDB release written when farm.config's `database` names none.
pub const DEFAULT_MONGODB: &str = "7.0";
/// `[registries] containers` as init writes it: from the environment.
const CONTAINERS_REGISTRY: &str = "${FARM_CONTAINER_REGISTRY}";
/// Python used when neither pyproject.toml, .python-version nor runtime.txt says.
pub const DEFAULT_PYTHON: &str = "3.11";
/// Where the models are pulled from: always the user's, never a public default.
pub const MODELS_REGISTRY: &str = "${FARM_OLLAMA_REGISTRY}";

const FARM_CONFIG_FILES: [&str; 5] = [
    "farm.config.ts",
    "farm.config.mts",
    "farm.config.js",
    "farm.config.mjs",
    "farm.config.cjs",
];
const VITE_CONFIG_FILES: [&str; 6] = [
    "vite.config.ts",
    "vite.config.js",
    "vite.config.mjs",
    "vite.config.mts",
    "vite.config.cjs",
    "vite.config.cts",
];
const AI_CONFIG_FILE: &str = "ai-config.json";
/// Directories that never hold an app's own sources.
const SKIP_DIRS: [&str; 10] = [
    "node_modules",
    "__pycache__",
    "site-packages",
    "venv",
    "env",
    "dist",
    "build",
    "target",
    "tests",
    "test",
];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("farm.toml already exists; use --force to replace it ({})", path.display())]
    Exists { path: PathBuf },
    #[error("{}: expected a project directory, found {found}", path.display())]
    NotADirectory { path: PathBuf, found: &'static str },
    #[error(
        "{}: found neither a Vite frontend (a package.json depending on vite) nor a FastAPI backend \
         (requirements.txt or pyproject.toml beside a module with `app = FastAPI(...)`)\n\
         hint: run farm init at the root of the app, or pass --project DIR",
        dir.display()
    )]
    NothingToBuild { dir: PathBuf },
    #[error(
        "{path}: scripts has no \"build\" (found: {found})\n\
         hint: add \"build\": \"vite build\" to scripts, then run farm init again"
    )]
    NoBuildScript { path: String, found: String },
    #[error(
        "{path}: expected a Node version such as \"{DEFAULT_NODE}\" or a major such as \"24\", found {found:?}\n\
         hint: init does not use the network to resolve aliases such as lts/*; write the version or \
         major into {path} (farm lock pins the newest release of a major)"
    )]
    NodeVersion { path: String, found: String },
    #[error("{path}: {field} {found:?} allows no Python 3.8 to 3.14 release\nhint: fix {field}, or set [toolchains.python] version in farm.toml by hand")]
    PythonVersion { path: String, field: String, found: String },
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: expected JSON: {message}")]
    Json { path: String, message: String },
    #[error("{path}: expected TOML: {message}")]
    Toml { path: String, message: String },
    #[error("{path}: could not write farm.toml: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("farm init generated a farm.toml that farm itself rejects (a bug in farm init): {message}\n--- generated:\n{text}")]
    Generated { message: String, text: String },
}

/// A detected value and where it came from, for the printed summary and the
/// comments in the written file.
#[derive(Debug, Clone, PartialEq)]
pub struct Found<T> {
    pub value: T,
    pub source: String,
}

fn found<T>(value: T, source: impl Into<String>) -> Found<T> {
    Found {
        value,
        source: source.into(),
    }
}

#[derive(Debug, Clone)]
pub struct FrontendFound {
    /// Project-relative; empty for the project root.
    pub path: PathBuf,
    pub why: String,
    pub build_script: Found<String>,
    pub output_dir: Found<String>,
    /// A TypeScript file farm generated from the backend's API before.
    pub api_types: Option<Found<String>>,
    /// The lockfile farm lock reads and the package manager that wrote it
    /// (`packageManager` when it names one), for the comment in farm.toml.
    pub packages: Option<Found<String>>,
    /// `toolchains.node.npm` when `packageManager` pins npm.
    pub npm: Option<Found<String>>,
}

#[derive(Debug, Clone)]
pub struct BackendFound {
    pub path: PathBuf,
    pub why: String,
    pub requirements: String,
    /// The Python lockfile pinning the backend (uv.lock, poetry.lock,
    /// pylock.toml), project-relative; `requirements` is then not written.
    pub lockfile: Option<String>,
    /// Dependency groups the lockfile defines, for the note beside `lockfile`.
    pub lock_groups: Vec<String>,
    /// The ASGI path, `module:attribute`.
    pub app: Found<String>,
}

#[derive(Debug, Clone)]
pub struct ModelsFound {
    pub models: Vec<String>,
    pub default: Option<String>,
    pub source: String,
    pub config: Option<String>,
}

/// Everything `farm init` found, and what it wants the user to know.
#[derive(Debug, Clone)]
pub struct Detection {
    pub name: Found<String>,
    pub version: Found<String>,
    pub frontend: Option<FrontendFound>,
    pub backend: Option<BackendFound>,
    pub node: Option<Found<String>>,
    pub python: Option<Found<String>>,
    pub models: Option<ModelsFound>,
    /// `[deploy] mongodb`: the image reference, from farm.config's `database`.
    pub mongodb: Option<Found<String>>,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// What `farm init` wrote and what the user should read.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub written: PathBuf,
    pub detection: Detection,
    /// One paragraph of what was found.
    pub summary: String,
    /// The commands to run next.
    pub next: String,
}

/// Detects the app at `root` and writes its farm.toml (replacing one only with `force`).
pub fn init(root: &Path, force: bool) -> Result<InitReport, InitError> {
    let target = root.join(CONFIG_FILE);
    if target.exists() && !force {
        return Err(InitError::Exists { path: target });
    }
    let detection = detect(root)?;
    let text = render(&detection);
    check_generated(&text)?;
    write_config(&target, &text, force)?;
    let next = "farm lock && farm fetch && farm build --hermetic";
    let next = if detection.models.is_some() {
        format!("set FARM_OLLAMA_REGISTRY to the Ollama/OCI registry to pull models from, then\n  {next}")
    } else {
        next.to_string()
    };
    Ok(InitReport {
        written: target,
        summary: summary(&detection),
        detection,
        next,
    })
}

/// Reads the project at `root` and decides every farm.toml value.
pub fn detect(root: &Path) -> Result<Detection, InitError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(InitError::NotADirectory {
                path: root.into(),
                found: "a file",
            })
        }
        Err(_) => {
            return Err(InitError::NotADirectory {
                path: root.into(),
                found: "nothing",
            })
        }
    }
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let farm_config = read_farm_config(root, &mut warnings)?;
    let hint = |app: &str| {
        farm_config.as_ref().and_then(|(_, c)| {
            let v = c.path(&["apps", app])?;
            let p = v.as_str().or_else(|| v.get("path").and_then(JsValue::as_str))?;
            let p = clean_rel(p)?;
            root.join(&p).is_dir().then_some(p)
        })
    };
    let frontend = find_frontend(root, hint("web"), &mut warnings)?;
    let backend = find_backend(root, hint("api"), &mut notes, &mut warnings)?;
    if frontend.is_none() && backend.is_none() {
        return Err(InitError::NothingToBuild { dir: root.into() });
    }
    let node = match &frontend {
        Some(f) => Some(node_version(root, &f.path)?),
        None => None,
    };
    let python = match &backend {
        Some(b) => Some(python_version(root, &b.path, &mut warnings)?),
        None => None,
    };
    let models = find_models(root, farm_config.as_ref(), &mut notes, &mut warnings)?;
    let mongodb = farm_config
        .as_ref()
        .and_then(|(file, c)| find_database(file, c, &mut notes, &mut warnings));
    let (name, version) = name_and_version(root, farm_config.as_ref(), frontend.as_ref())?;
    Ok(Detection {
        name,
        version,
        frontend,
        backend,
        node,
        python,
        models,
        mongodb,
        notes,
        warnings,
    })
}

/// The farm.toml text for a detection, with a comment on where each value came from.
/// A `.ts` file under `src/` that starts with farm's generated-types header.
fn find_api_types(frontend: &Path) -> Option<Found<String>> {
    let mut entries = farm_archive::walk(&frontend.join("src"));
    let mut first = None;
    while let Some(entry) = entries.next() {
        // What cannot be read is passed over: detection reports what it finds.
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_dir() {
            if entry.file_name() == "node_modules" {
                entries.skip_current_dir();
            }
            continue;
        }
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "ts") {
            let head = std::fs::read_to_string(p)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_owned));
            if head.as_deref() == Some(farm_typegen::HEADER) {
                first = Some(p.strip_prefix(frontend).unwrap_or(p).to_path_buf());
                break;
            }
        }
    }
    let first = first?;
    let value = first.display().to_string();
    Some(Found {
        source: format!("{value} starts with farm's generated-types header"),
        value,
    })
}

/// The farm.toml text for what was detected: every value with a comment
/// saying where it came from. Written through `toml_edit`, so quoting is
/// TOML's own and comments sit where a person would put them.
pub fn render(d: &Detection) -> String {
    let mut doc = DocumentMut::new();
    let mut t = Section::new(&mut doc, &["project"]);
    t.table.decor_mut().set_prefix(
        "# Written by `farm init` from what it read in this repository; every key is\n\
         # described in farm's spec/farm-toml.md. Review it, then:\n\
         #   farm lock && farm fetch && farm build --hermetic\n\n",
    );
    t.kv("name", &d.name.value, &d.name.source);
    t.kv("version", &d.version.value, &d.version.source);
    if let Some(n) = &d.node {
        let mut t = Section::new(&mut doc, &["toolchains", "node"]);
        t.kv("version", &n.value, &n.source);
        match d.frontend.as_ref().and_then(|f| f.npm.as_ref()) {
            Some(npm) => t.kv("npm", &npm.value, &npm.source),
            None => t.kv("npm", "10", "the newest npm 10.x, pinned by `farm lock`"),
        }
    }
    if let Some(p) = &d.python {
        let mut t = Section::new(&mut doc, &["toolchains", "python"]);
        t.kv("version", &p.value, &p.source);
        t.kv("pip", "24.3.1", "installs the backend's wheels offline");
    }
    let mut t = Section::new(&mut doc, &["toolchains", "debian"]);
    t.comment("The base every build step runs on; Python comes from its python3.X packages.");
    t.kv("suite", "bookworm", "");
    t.kv("architecture", "amd64", "");
    if let Some(f) = &d.frontend {
        let mut t = Section::new(&mut doc, &["frontend"]);
        if let Some(p) = &f.packages {
            t.comment(&format!("Packages: {} ({}).", p.value, p.source));
        }
        t.kv("path", rel_str(&f.path), &f.why);
        t.kv("build-script", &f.build_script.value, &f.build_script.source);
        t.kv("output-dir", &f.output_dir.value, &f.output_dir.source);
        if let Some(a) = &f.api_types {
            t.kv("api-types", &a.value, &a.source);
        }
    }
    if let Some(b) = &d.backend {
        let mut t = Section::new(&mut doc, &["backend"]);
        t.kv("path", rel_str(&b.path), &b.why);
        match &b.lockfile {
            Some(l) => {
                let groups = if b.lock_groups.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; its groups ({}) are not installed unless `groups` names them",
                        b.lock_groups.join(", ")
                    )
                };
                t.kv(
                    "lockfile",
                    l,
                    &format!("the wheels it pins for the locked Python are installed{groups}"),
                );
            }
            None => t.kv(
                "requirements",
                &b.requirements,
                "exact `==` pins, resolved by `farm lock`",
            ),
        }
        t.kv("app", &b.app.value, &b.app.source);
    }
    if let Some(m) = &d.models {
        let mut t = Section::new(&mut doc, &["models"]);
        t.comment("The Ollama/OCI registry the models are pulled from, read from the environment");
        t.comment("so no registry is built into the project.");
        t.kv("registry", MODELS_REGISTRY, "");
        t.comment("The name Ollama knows the models by (manifests/<host>/...): fixed, so the");
        t.comment("models directory does not depend on where the registry runs.");
        t.kv("host", format!("models.{}.internal", d.name.value), "");
        t.kv("models", m.models.iter().collect::<Array>(), &m.source);
        if let Some(def) = &m.default {
            t.kv("default", def, "");
        }
        if let Some(c) = &m.config {
            t.kv("config", c, "secrets are stripped from the build output");
        }
    }
    if let Some(m) = &d.mongodb {
        let mut t = Section::new(&mut doc, &["deploy"]);
        t.kv(
            "compose",
            true,
            "docker-compose.yml runs MongoDB beside the app, which gets MONGODB_URL",
        );
        t.kv("mongodb", &m.value, &m.source);
        let mut t = Section::new(&mut doc, &["registries"]);
        t.comment("The registry `mongodb` is pulled from (it names no host), read from the");
        t.comment("environment so no registry is built into the project.");
        t.kv("containers", CONTAINERS_REGISTRY, "");
    }
    doc.to_string()
}

/// One `[table]` of the farm.toml being written, keys in the order added.
struct Section<'a> {
    table: &'a mut Table,
    /// Comment lines for the next key.
    comments: String,
}

impl<'a> Section<'a> {
    /// Adds the table at `path` after those added before it; its parents
    /// (`[toolchains]`) are implicit, so only `[toolchains.node]` is written.
    fn new(doc: &'a mut DocumentMut, path: &[&str]) -> Section<'a> {
        let (last, parents) = path.split_last().expect("a table path");
        let mut table = doc.as_table_mut();
        for parent in parents {
            table = table
                .entry(parent)
                .or_insert_with(|| {
                    let mut implicit = Table::new();
                    implicit.set_implicit(true);
                    Item::Table(implicit)
                })
                .as_table_mut()
                .expect("farm init's tables nest");
        }
        let table = table
            .entry(last)
            .or_insert(Item::Table(Table::new()))
            .as_table_mut()
            .expect("farm init's tables nest");
        Section {
            table,
            comments: String::new(),
        }
    }

    /// A comment line above the next key.
    fn comment(&mut self, text: &str) {
        self.comments.push_str(&format!("# {}\n", one_line(text)));
    }

    /// `key = value`, with `comment` after it on the same line unless empty.
    fn kv(&mut self, key: &str, value: impl Into<Value>, comment: &str) {
        let mut value = value.into();
        if !comment.is_empty() {
            value.decor_mut().set_suffix(format!("  # {}", one_line(comment)));
        }
        self.table.insert(key, Item::Value(value));
        if !self.comments.is_empty() {
            let mut key = self.table.key_mut(key).expect("just inserted");
            key.leaf_decor_mut().set_prefix(std::mem::take(&mut self.comments));
        }
    }
}

/// The generated text must be a farm.toml farm accepts: parsed, then loaded
/// with the full validation `farm lock` applies.
fn check_generated(text: &str) -> Result<(), InitError> {
    let generated = |message: String| InitError::Generated {
        message,
        text: text.to_string(),
    };
    config::parse(CONFIG_FILE, text).map_err(|e| generated(e.to_string()))?;
    let dir = tempfile::tempdir().map_err(|e| generated(e.to_string()))?;
    std::fs::write(dir.path().join(CONFIG_FILE), text).map_err(|e| generated(e.to_string()))?;
    config::Project::load(dir.path()).map_err(|e| generated(e.to_string()))?;
    Ok(())
}

/// Writes through a temporary file so a crash never leaves half a farm.toml;
/// without `force` the final link refuses to replace a file created meanwhile.
fn write_config(target: &Path, text: &str, force: bool) -> Result<(), InitError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let write_err = |source: std::io::Error| InitError::Write {
        path: target.display().to_string(),
        source,
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".farm.toml.")
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.write_all(text.as_bytes()).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    // tempfile creates 0600; a project file is world-readable like the rest of the tree.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(write_err)?;
    if force {
        tmp.persist(target).map_err(|e| write_err(e.error))?;
    } else {
        tmp.persist_noclobber(target).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                InitError::Exists { path: target.into() }
            } else {
                write_err(e.error)
            }
        })?;
    }
    Ok(())
}

fn summary(d: &Detection) -> String {
    let mut rows: Vec<(&str, String, String)> = vec![(
        "project",
        format!("{} {}", d.name.value, d.version.value),
        format!("{}; {}", d.name.source, d.version.source),
    )];
    if let Some(f) = &d.frontend {
        rows.push(("frontend", rel_str(&f.path), f.why.clone()));
        rows.push((
            "  build",
            format!("npm run {}", f.build_script.value),
            f.build_script.source.clone(),
        ));
        rows.push(("  output", f.output_dir.value.clone(), f.output_dir.source.clone()));
    }
    if let Some(n) = &d.node {
        rows.push(("node", n.value.clone(), n.source.clone()));
    }
    if let Some(b) = &d.backend {
        rows.push(("backend", rel_str(&b.path), b.why.clone()));
        rows.push(("  app", b.app.value.clone(), b.app.source.clone()));
    }
    if let Some(p) = &d.python {
        rows.push(("python", p.value.clone(), p.source.clone()));
    }
    if let Some(m) = &d.models {
        rows.push(("models", m.models.join(", "), m.source.clone()));
        if let Some(def) = &m.default {
            rows.push(("  default", def.clone(), m.source.clone()));
        }
        if let Some(c) = &m.config {
            rows.push(("  config", c.clone(), "AI deployment config".into()));
        }
    }
    let w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = String::from("detected:");
    for (k, v, src) in rows {
        out.push_str(&format!("\n  {k:<9} {v:<w$}  ({src})"));
    }
    out
}

// ---------------------------------------------------------------------------
// Frontend

fn find_frontend(
    root: &Path,
    hint: Option<PathBuf>,
    warnings: &mut Vec<String>,
) -> Result<Option<FrontendFound>, InitError> {
    for rel in candidate_dirs(root, hint, &["apps/web", "web", "frontend", "client"]) {
        let pj_rel = rel.join("package.json");
        let Some(text) = read_opt(root, &pj_rel)? else {
            continue;
        };
        let pj: serde_json::Value = serde_json::from_str(&text).map_err(|e| InitError::Json {
            path: rel_str(&pj_rel),
            message: e.to_string(),
        })?;
        let dep_kind = ["devDependencies", "dependencies"]
            .into_iter()
            .find(|k| pj.get(k).and_then(|d| d.get("vite")).is_some());
        let Some(dep_kind) = dep_kind else {
            continue;
        };
        let scripts: Vec<String> = pj
            .get("scripts")
            .and_then(|s| s.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        if !scripts.iter().any(|s| s == "build") {
            return Err(InitError::NoBuildScript {
                path: rel_str(&pj_rel),
                found: if scripts.is_empty() {
                    "no scripts".into()
                } else {
                    scripts.join(", ")
                },
            });
        }
        let build_cmd = pj["scripts"]["build"].as_str().unwrap_or("").to_string();
        let output_dir = match react_router_output_dir(root, &rel, &pj, warnings)? {
            Some(dir) => dir,
            None => vite_output_dir(root, &rel, warnings)?,
        };
        let manager = package_manager(root, &rel, warnings)?;
        // The lockfile farm lock will read: the frontend's own, or its workspace root's.
        let mut packages = None;
        match farm_lockread::js::detect_js_lock(&root.join(&rel), root) {
            Ok(Some(loc)) => {
                let lockfile = rel_str(loc.lockfile.strip_prefix(root).unwrap_or(&loc.lockfile));
                let kind = loc.kind.manager();
                packages = Some(match &manager {
                    Some(m) if m.value.0 == kind => found(
                        format!("{lockfile}, laid out as {kind} {} does", m.value.1),
                        m.source.clone(),
                    ),
                    Some(m) => {
                        warnings.push(format!(
                            "{}: packageManager is {}@{}, but the lockfile here is {lockfile}, which {kind} writes; farm lock reads {lockfile}\nhint: remove the stale lockfile, or correct packageManager",
                            m.source, m.value.0, m.value.1
                        ));
                        found(format!("{lockfile}, laid out as {kind} does"), "its file name")
                    }
                    None => found(format!("{lockfile}, laid out as {kind} does"), "its file name"),
                });
            }
            Ok(None) => {
                let install = match manager.as_ref().map(|m| m.value.0.as_str()) {
                    Some("pnpm") => "pnpm install --lockfile-only",
                    Some("yarn") => "yarn install --mode update-lockfile",
                    Some("bun") => "bun install --lockfile-only",
                    _ => "npm install --package-lock-only",
                };
                warnings.push(format!(
                    "{}: no JS lockfile (package-lock.json, pnpm-lock.yaml, yarn.lock or bun.lock) here or in a workspace root above; farm lock pins the frontend's packages from it\nhint: run `{install}` in {}",
                    rel_str(&rel),
                    rel_str(&rel)
                ))
            }
            Err(e) => warnings.push(format!(
                "{e}\nhint: farm lock reads the same lockfile and fails the same way"
            )),
        }
        let npm = manager
            .as_ref()
            .filter(|m| m.value.0 == "npm")
            .map(|m| found(m.value.1.clone(), m.source.clone()));
        return Ok(Some(FrontendFound {
            why: format!("{} has vite in {dep_kind}", rel_str(&pj_rel)),
            build_script: found(
                "build".to_string(),
                format!("{} scripts.build: {build_cmd}", rel_str(&pj_rel)),
            ),
            output_dir,
            api_types: find_api_types(&root.join(&rel)),
            packages,
            npm,
            path: rel,
        }));
    }
    Ok(None)
}

const REACT_ROUTER_CONFIG_FILES: [&str; 4] = [
    "react-router.config.ts",
    "react-router.config.js",
    "react-router.config.mts",
    "react-router.config.mjs",
];

/// A React Router (framework mode) app writes its browser build to
/// `<buildDirectory>/client` (`build/client` by default), not Vite's
/// `dist`. `None` when the frontend is not one: no `@react-router/dev`
/// dependency and no react-router.config.
fn react_router_output_dir(
    root: &Path,
    rel: &Path,
    pj: &serde_json::Value,
    warnings: &mut Vec<String>,
) -> Result<Option<Found<String>>, InitError> {
    let dep = ["devDependencies", "dependencies"]
        .into_iter()
        .find(|k| pj.get(k).and_then(|d| d.get("@react-router/dev")).is_some());
    for name in REACT_ROUTER_CONFIG_FILES {
        let file = rel.join(name);
        let Some(text) = read_opt(root, &file)? else {
            continue;
        };
        let shown = rel_str(&file);
        let toks = js::tokenize(&text);
        let build_dir = js::exported_config(&toks).and_then(|c| c.get("buildDirectory").cloned());
        return Ok(Some(match build_dir {
            None => found(
                "build/client".to_string(),
                format!("React Router's default; {shown} sets no buildDirectory"),
            ),
            Some(JsValue::Str(d)) => match clean_rel(&d) {
                Some(p) if !p.as_os_str().is_empty() => found(
                    rel_str(&p.join("client")),
                    format!("{shown} buildDirectory {d:?}, client build"),
                ),
                _ => {
                    warnings.push(format!(
                        "{shown}: buildDirectory {d:?} is outside {}; farm takes the build output from inside the frontend directory\nhint: point buildDirectory inside it",
                        rel_str(rel)
                    ));
                    found(
                        "build/client".to_string(),
                        format!("React Router's default; {shown} buildDirectory is outside the frontend"),
                    )
                }
            },
            Some(_) => {
                warnings.push(format!(
                    "{shown}: buildDirectory is not a string literal, so farm init cannot read it; using \"build/client\"\nhint: set [frontend] output-dir in farm.toml to the directory the client build writes"
                ));
                found(
                    "build/client".to_string(),
                    format!("React Router's default; {shown} computes buildDirectory"),
                )
            }
        }));
    }
    Ok(dep.map(|k| {
        found(
            "build/client".to_string(),
            format!(
                "React Router's default ({} has @react-router/dev in {k})",
                rel_str(&rel.join("package.json"))
            ),
        )
    }))
}

/// `build.outDir` of the frontend's vite config when it is a string literal; Vite's default otherwise.
fn vite_output_dir(root: &Path, rel: &Path, warnings: &mut Vec<String>) -> Result<Found<String>, InitError> {
    for name in VITE_CONFIG_FILES {
        let file = rel.join(name);
        let Some(text) = read_opt(root, &file)? else {
            continue;
        };
        let shown = rel_str(&file);
        let fallback = |why: &str| found("dist".to_string(), format!("Vite's default; {shown} {why}"));
        let out_dir = match read_vite_out_dir(&text) {
            ViteOutDir::Literal(s) => s,
            ViteOutDir::Absent => return Ok(fallback("sets no build.outDir")),
            ViteOutDir::Dynamic => {
                warnings.push(format!(
                    "{shown}: build.outDir is not a string literal, so farm init cannot read it; using \"dist\"\nhint: set [frontend] output-dir in farm.toml to the directory the build writes"
                ));
                return Ok(fallback("computes build.outDir"));
            }
        };
        return Ok(match clean_rel(&out_dir) {
            Some(p) if !p.as_os_str().is_empty() => found(rel_str(&p), format!("{shown} build.outDir")),
            _ => {
                warnings.push(format!(
                    "{shown}: build.outDir {out_dir:?} is outside {}; farm takes the build output from inside the frontend directory, so farm.toml says \"dist\"\nhint: point build.outDir inside {} (farm puts the frontend into the app image itself)",
                    rel_str(rel),
                    rel_str(rel)
                ));
                fallback(&format!(
                    "writes outside the frontend ({out_dir:?}): change build.outDir"
                ))
            }
        });
    }
    Ok(found("dist".to_string(), "Vite's default; no vite.config found"))
}

#[derive(Debug, PartialEq)]
enum ViteOutDir {
    Literal(String),
    Dynamic,
    Absent,
}

fn read_vite_out_dir(text: &str) -> ViteOutDir {
    let toks = js::tokenize(text);
    if let Some(config) = js::exported_config(&toks) {
        return match config.get("build") {
            None => ViteOutDir::Absent,
            Some(JsValue::Object(_)) => match config.path(&["build", "outDir"]) {
                None => ViteOutDir::Absent,
                Some(JsValue::Str(s)) => ViteOutDir::Literal(s.clone()),
                Some(_) => ViteOutDir::Dynamic,
            },
            Some(_) => ViteOutDir::Dynamic,
        };
    }
    // A config function (`defineConfig(({ mode }) => ({ ... }))`): look at every `build: {…}` it holds.
    let mut literals: Vec<String> = Vec::new();
    let mut dynamic = false;
    for build in js::objects_under_key(&toks, "build") {
        match build.get("outDir") {
            Some(JsValue::Str(s)) if !literals.contains(s) => literals.push(s.clone()),
            Some(JsValue::Str(_)) => {}
            Some(_) => dynamic = true,
            None => {}
        }
    }
    match (literals.len(), dynamic) {
        (1, false) => ViteOutDir::Literal(literals.remove(0)),
        (0, false) => ViteOutDir::Absent,
        _ => ViteOutDir::Dynamic,
    }
}

// ---------------------------------------------------------------------------
// Backend

fn find_backend(
    root: &Path,
    hint: Option<PathBuf>,
    notes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<BackendFound>, InitError> {
    let mut without_app = Vec::new();
    for rel in candidate_dirs(root, hint, &["apps/api", "api", "backend", "server"]) {
        let dir = root.join(&rel);
        let has_requirements = dir.join("requirements.txt").is_file();
        let has_pyproject = dir.join("pyproject.toml").is_file();
        if !has_requirements && !has_pyproject {
            continue;
        }
        let mut apps = scan_fastapi_apps(&dir)?;
        if apps.is_empty() {
            without_app.push(rel_str(&rel));
            continue;
        }
        apps.sort_by_key(|a| a.rank());
        let best = apps.remove(0);
        if !apps.is_empty() {
            let others: Vec<String> = apps.iter().map(|a| a.asgi()).collect();
            notes.push(format!(
                "{}: chose {} among FastAPI apps {}",
                rel_str(&rel),
                best.asgi(),
                others.join(", ")
            ));
        }
        // A Python lockfile pins the backend as the app's own tool made it.
        let lockfile = farm_project::config::python_lockfile_in(root, &rel);
        let marker = match &lockfile {
            Some(l) => l.file_name().and_then(|n| n.to_str()).unwrap_or("uv.lock").to_string(),
            None if has_requirements => "requirements.txt".into(),
            None => "pyproject.toml".into(),
        };
        let lock_groups = match &lockfile {
            Some(l) => python_lock_groups(root, l, &rel),
            None => Vec::new(),
        };
        if lockfile.is_some() {
            notes.push(format!(
                "{}: the backend's wheels come from {} (its dev groups are left out)",
                rel_str(&rel),
                rel_str(lockfile.as_deref().unwrap_or(Path::new("")))
            ));
        } else if !has_requirements {
            warnings.push(format!(
                "{}: missing; farm installs the backend from exact `==` pins in requirements.txt, and {} alone does not pin them\nhint: export the pins, e.g. `uv export --no-hashes -o requirements.txt` or `pip-compile -o requirements.txt pyproject.toml`",
                rel_str(&rel.join("requirements.txt")),
                rel_str(&rel.join("pyproject.toml"))
            ));
        }
        let why_file = match &lockfile {
            Some(l) if l.parent() != Some(rel.as_path()) => rel_str(l),
            _ => rel_str(&rel.join(&marker)),
        };
        return Ok(Some(BackendFound {
            why: format!("{why_file} and a FastAPI app"),
            requirements: "requirements.txt".into(),
            lockfile: lockfile.as_deref().map(rel_str),
            lock_groups,
            app: found(
                best.asgi(),
                format!(
                    "{}:{}: `{} = FastAPI(...)`",
                    rel_str(&rel.join(&best.file)),
                    best.line,
                    best.attr
                ),
            ),
            path: rel,
        }));
    }
    for dir in without_app {
        warnings.push(format!(
            "{dir}: has Python dependencies but no module-level `<name> = FastAPI(...)`, so it is not used as the backend"
        ));
    }
    Ok(None)
}

/// The dependency groups a Python lockfile's projects define (uv.lock's
/// `[package.dev-dependencies]` of the backend's member, poetry's
/// `[tool.poetry.group.*]` / `dev-dependencies` and PEP 735
/// `[dependency-groups]` in the pyproject.toml beside it), for the note
/// farm init writes; an unreadable file gives none.
fn python_lock_groups(root: &Path, lockfile: &Path, backend: &Path) -> Vec<String> {
    let mut groups = std::collections::BTreeSet::new();
    let pyproject = |dir: &Path| -> Option<toml::Table> {
        toml::from_str(&std::fs::read_to_string(root.join(dir).join("pyproject.toml")).ok()?).ok()
    };
    for dir in [backend, lockfile.parent().unwrap_or(Path::new(""))] {
        let Some(doc) = pyproject(dir) else { continue };
        if let Some(t) = doc.get("dependency-groups").and_then(|g| g.as_table()) {
            groups.extend(t.keys().cloned());
        }
        let poetry = doc.get("tool").and_then(|t| t.get("poetry"));
        if let Some(t) = poetry.and_then(|p| p.get("group")).and_then(|g| g.as_table()) {
            groups.extend(t.keys().cloned());
        }
        if poetry.is_some_and(|p| p.get("dev-dependencies").is_some()) {
            groups.insert("dev".into());
        }
        if let Some(t) = doc
            .get("tool")
            .and_then(|t| t.get("uv"))
            .and_then(|u| u.get("dev-dependencies"))
        {
            if t.as_array().is_some_and(|a| !a.is_empty()) {
                groups.insert("dev".into());
            }
        }
    }
    groups.into_iter().collect()
}

#[derive(Debug, Clone, PartialEq)]
struct FastApiApp {
    module: String,
    attr: String,
    /// Relative to the backend directory.
    file: PathBuf,
    line: usize,
}

impl FastApiApp {
    fn asgi(&self) -> String {
        format!("{}:{}", self.module, self.attr)
    }
    /// `app` first, then the shallowest module, then conventional entry-point names.
    fn rank(&self) -> (bool, usize, bool, String) {
        let leaf = self.module.rsplit('.').next().unwrap_or("");
        (
            self.attr != "app",
            self.module.matches('.').count(),
            !matches!(leaf, "main" | "app" | "asgi" | "server" | "api"),
            self.module.clone(),
        )
    }
}

/// Module-level `<name> = FastAPI(` in the `.py` files under `dir` (tests and
/// virtual environments skipped). Only importable module paths count.
fn scan_fastapi_apps(dir: &Path) -> Result<Vec<FastApiApp>, InitError> {
    const MAX_DEPTH: usize = 6;
    const MAX_FILES: usize = 5000;
    let mut out = Vec::new();
    let mut seen_files = 0;
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    while let Some((rel, depth)) = stack.pop() {
        let mut entries = list_dir(&dir.join(&rel))?;
        entries.reverse(); // popped in name order
        for (name, is_dir) in entries {
            let child = rel.join(&name);
            if is_dir {
                if depth < MAX_DEPTH && !skipped_dir(&name) {
                    stack.push((child, depth + 1));
                }
                continue;
            }
            let is_test = name.starts_with("test_") || name.ends_with("_test.py") || name == "conftest.py";
            if !name.ends_with(".py") || is_test {
                continue;
            }
            seen_files += 1;
            if seen_files > MAX_FILES {
                return Ok(out);
            }
            let Some(module) = module_path(&child) else {
                continue;
            };
            let bytes = std::fs::read(dir.join(&child)).map_err(|source| InitError::Read {
                path: dir.join(&child).display().to_string(),
                source,
            })?;
            for (line, attr) in fastapi_assignments(&String::from_utf8_lossy(&bytes)) {
                out.push(FastApiApp {
                    module: module.clone(),
                    attr,
                    file: child.clone(),
                    line,
                });
            }
        }
    }
    Ok(out)
}

/// `app/main.py` → `app.main`; `app/__init__.py` → `app`; None when not importable.
fn module_path(rel: &Path) -> Option<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_str().map(str::to_string))
        .collect::<Option<_>>()?;
    let last = parts.pop()?;
    let stem = last.strip_suffix(".py")?;
    if stem != "__init__" {
        parts.push(stem.to_string());
    }
    (!parts.is_empty() && parts.iter().all(|p| is_python_identifier(p))).then(|| parts.join("."))
}

fn is_python_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next().is_some_and(|c| c == '_' || c.is_alphabetic()) && cs.all(|c| c == '_' || c.is_alphanumeric())
}

/// Lines (1-based) and names of module-level `name = FastAPI(` and
/// `name: FastAPI = fastapi.FastAPI(`, outside triple-quoted strings.
fn fastapi_assignments(src: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_string: Option<&str> = None;
    for (i, line) in src.lines().enumerate() {
        if let Some(q) = in_string {
            if line.contains(q) {
                in_string = None;
            }
            continue;
        }
        if let Some(name) = fastapi_assignment(line) {
            out.push((i + 1, name));
        }
        for q in ["\"\"\"", "'''"] {
            if line.matches(q).count() % 2 == 1 {
                in_string = Some(q);
                break;
            }
        }
    }
    out
}

fn fastapi_assignment(line: &str) -> Option<String> {
    // Indented lines are inside a def/class/if: not an attribute of the module.
    if line.starts_with(char::is_whitespace) {
        return None;
    }
    let (lhs, rhs) = line.split_once('=')?;
    if rhs.starts_with('=') {
        return None;
    }
    let name = lhs.split(':').next()?.trim();
    if !is_python_identifier(name) {
        return None;
    }
    let rhs = rhs.trim_start();
    let call = rhs.strip_prefix("fastapi.").unwrap_or(rhs);
    let after = call.strip_prefix("FastAPI")?;
    after.trim_start().starts_with('(').then(|| name.to_string())
}

/// `packageManager` of the frontend's package.json, else of the root's
/// (corepack's field: `name@version`, maybe `+sha…`): `(name, version)`.
/// One farm cannot use is a warning, not an error: the lockfile decides.
fn package_manager(
    root: &Path,
    frontend: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<Found<(String, String)>>, InitError> {
    for dir in dedup(vec![frontend.to_path_buf(), PathBuf::new()]) {
        let rel = dir.join("package.json");
        let Some(text) = read_opt(root, &rel)? else {
            continue;
        };
        let pj: serde_json::Value = serde_json::from_str(&text).map_err(|e| InitError::Json {
            path: rel_str(&rel),
            message: e.to_string(),
        })?;
        let Some(raw) = pj.get("packageManager") else {
            continue;
        };
        let at = format!("{} packageManager", rel_str(&rel));
        let parsed = raw.as_str().and_then(|s| {
            let (name, version) = s.split_once('@')?;
            let version = version.split('+').next()?;
            let exact = version.split('.').count() == 3
                && version
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            (["npm", "pnpm", "yarn", "bun"].contains(&name) && exact).then(|| (name.to_string(), version.to_string()))
        });
        match parsed {
            Some(v) => return Ok(Some(found(v, at))),
            None => {
                warnings.push(format!(
                    "{at}: expected npm, pnpm, yarn or bun with an exact version (\"pnpm@9.12.0\"), found {raw}; ignored"
                ));
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// The MongoDB image farm.config's `database` asks for (`"mongodb"` or
/// `{ type: "mongodb", version?: "7.0" }`); other databases are noted, as
/// farm deploys only MongoDB.
fn find_database(
    file: &str,
    config: &JsValue,
    notes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Found<String>> {
    let db = config.get("database")?;
    let (kind, at) = match db {
        JsValue::Str(s) => (s.as_str(), format!("{file} database")),
        JsValue::Object(_) => match db.get("type") {
            Some(JsValue::Str(s)) => (s.as_str(), format!("{file} database.type")),
            _ => {
                warnings.push(format!(
                    "{file} database.type: not a string literal; no [deploy] database written"
                ));
                return None;
            }
        },
        _ => {
            warnings.push(format!(
                "{file} database: not a string or object literal; no [deploy] database written"
            ));
            return None;
        }
    };
    if db.get("enabled") == Some(&JsValue::Bool(false)) {
        notes.push(format!(
            "{file} database: disabled, so farm.toml gets no [deploy] database"
        ));
        return None;
    }
    if !kind.eq_ignore_ascii_case("mongodb") && !kind.eq_ignore_ascii_case("mongo") {
        notes.push(format!(
            "{at} is {kind:?}; farm deploys MongoDB only, so farm.toml gets no database (run it yourself)"
        ));
        return None;
    }
    let version = match db.get("version") {
        Some(JsValue::Str(v))
            if !v.is_empty()
                && v.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) =>
        {
            v.clone()
        }
        Some(_) => {
            warnings.push(format!(
                "{file} database.version: not a version literal such as \"7.0\"; MongoDB {DEFAULT_MONGODB} written"
            ));
            DEFAULT_MONGODB.to_string()
        }
        None => DEFAULT_MONGODB.to_string(),
    };
    Some(found(
        format!("library/mongo:{version}"),
        format!("{at} {kind:?}; pinned to a digest by `farm lock`"),
    ))
}

// ---------------------------------------------------------------------------
// Toolchain versions

fn node_version(root: &Path, frontend: &Path) -> Result<Found<String>, InitError> {
    let dirs = dedup(vec![frontend.to_path_buf(), PathBuf::new()]);
    for dir in &dirs {
        for name in [".nvmrc", ".node-version"] {
            let rel = dir.join(name);
            if let Some(text) = read_opt(root, &rel)? {
                return node_from_version_file(&rel_str(&rel), &text);
            }
        }
    }
    for dir in &dirs {
        let rel = dir.join("package.json");
        let Some(text) = read_opt(root, &rel)? else {
            continue;
        };
        let pj: serde_json::Value = serde_json::from_str(&text).map_err(|e| InitError::Json {
            path: rel_str(&rel),
            message: e.to_string(),
        })?;
        if let Some(range) = pj.pointer("/engines/node").and_then(|v| v.as_str()) {
            if let Some(v) = exact_node(range.trim().trim_start_matches('=')) {
                return Ok(found(v, format!("{} engines.node", rel_str(&rel))));
            }
            if let Some(v) = node_for_range(range) {
                return Ok(found(
                    v.clone(),
                    format!(
                        "{} engines.node {range:?}: the newest Node {v} release, pinned by `farm lock`",
                        rel_str(&rel)
                    ),
                ));
            }
            return Ok(found(
                DEFAULT_NODE.to_string(),
                format!(
                    "farm's default; {} engines.node {range:?} is a range, not a pin",
                    rel_str(&rel)
                ),
            ));
        }
    }
    Ok(found(
        DEFAULT_NODE.to_string(),
        "farm's default; no .nvmrc, .node-version or engines.node",
    ))
}

fn node_from_version_file(path: &str, text: &str) -> Result<Found<String>, InitError> {
    let raw = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if let Some(v) = exact_node(raw) {
        return Ok(found(v, path.to_string()));
    }
    let bare = raw.trim_start_matches(['v', 'V']);
    let prefix = bare
        .strip_suffix(".x")
        .or_else(|| bare.strip_suffix(".*"))
        .unwrap_or(bare);
    // A major or major.minor: written as is, `farm lock` pins its newest release.
    let numeric = !prefix.is_empty()
        && prefix.split('.').count() < 3
        && prefix
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if numeric {
        return Ok(found(
            prefix.to_string(),
            format!("{path} says {raw:?}: the newest Node {prefix} release, pinned by `farm lock`"),
        ));
    }
    Err(InitError::NodeVersion {
        path: path.to_string(),
        found: raw.to_string(),
    })
}

/// An npm range (`engines.node`) as the major or major.minor farm.toml
/// takes, whose newest release `farm lock` pins: `^20.11` and `20.x` give
/// `20`, `~20.11.1` gives `20.11`; an open range (`>=18`) gives the major of
/// farm's default Node when the range allows it, else its own lowest
/// major; of `||` alternatives the highest wins. `None`: not understood.
fn node_for_range(range: &str) -> Option<String> {
    let default_major: u64 = DEFAULT_NODE.split('.').next()?.parse().ok()?;
    let num = |s: &str| -> Option<Vec<u64>> {
        let s = s.trim_start_matches(['v', 'V']);
        let parts: Vec<&str> = s.split('.').filter(|p| !matches!(*p, "x" | "X" | "*")).collect();
        (!parts.is_empty() && parts.len() <= 3)
            .then(|| {
                parts
                    .iter()
                    .map(|p| p.parse::<u64>().ok())
                    .collect::<Option<Vec<u64>>>()
            })
            .flatten()
    };
    let mut best: Option<(u64, Option<u64>)> = None;
    for alt in range.split("||") {
        // `>= 18` is `>=18`.
        let mut tokens: Vec<String> = Vec::new();
        for t in alt.split_whitespace() {
            match tokens.last_mut() {
                Some(last) if matches!(last.as_str(), ">=" | ">" | "<=" | "<" | "^" | "~" | "=") => last.push_str(t),
                _ => tokens.push(t.to_string()),
            }
        }
        let mut low: Option<Vec<u64>> = None;
        // The upper bound and whether it is inclusive.
        let mut high: Option<(Vec<u64>, bool)> = None;
        let mut pick: Option<(u64, Option<u64>)> = None;
        match tokens.as_slice() {
            [a, dash, b] if dash == "-" => {
                low = Some(num(a)?);
                high = Some((num(b)?, true));
            }
            _ => {
                for t in &tokens {
                    if let Some(v) = t.strip_prefix(">=").or_else(|| t.strip_prefix('>')) {
                        low = Some(num(v)?);
                    } else if let Some(v) = t.strip_prefix("<=") {
                        high = Some((num(v)?, true));
                    } else if let Some(v) = t.strip_prefix('<') {
                        high = Some((num(v)?, false));
                    } else if let Some(v) = t.strip_prefix('^') {
                        pick = Some((*num(v)?.first()?, None));
                    } else if let Some(v) = t.strip_prefix('~') {
                        let v = num(v)?;
                        pick = Some((v[0], v.get(1).copied()));
                    } else {
                        let v = num(t.trim_start_matches('='))?;
                        pick = Some((v[0], v.get(1).copied()));
                    }
                }
            }
        }
        let candidate = match pick {
            Some(p) => p,
            None => {
                let lowest = low.as_ref().and_then(|l| l.first().copied()).unwrap_or(0);
                // The highest major the upper bound lets in (`<21` and `<21.0.0` stop at 20).
                let highest = match &high {
                    None => u64::MAX,
                    Some((h, inclusive)) => {
                        let rest_zero = h.iter().skip(1).all(|x| *x == 0);
                        if !inclusive && rest_zero {
                            h[0].checked_sub(1)?
                        } else {
                            h[0]
                        }
                    }
                };
                if lowest > highest {
                    return None;
                }
                let major = if (lowest..=highest).contains(&default_major) {
                    default_major
                } else if highest == u64::MAX {
                    lowest
                } else {
                    highest
                };
                (major, None)
            }
        };
        if candidate.0 == 0 {
            return None;
        }
        if best.is_none_or(|b| candidate > b) {
            best = Some(candidate);
        }
    }
    let (major, minor) = best?;
    Some(match minor {
        Some(m) => format!("{major}.{m}"),
        None => major.to_string(),
    })
}

/// `22.19.0` or `v22.19.0` → `22.19.0`.
fn exact_node(s: &str) -> Option<String> {
    let v = s.trim().strip_prefix(['v', 'V']).unwrap_or(s.trim());
    let parts: Vec<&str> = v.split('.').collect();
    (parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
    .then(|| v.to_string())
}

fn python_version(root: &Path, backend: &Path, warnings: &mut Vec<String>) -> Result<Found<String>, InitError> {
    let dirs = dedup(vec![backend.to_path_buf(), PathBuf::new()]);
    for dir in &dirs {
        let rel = dir.join("pyproject.toml");
        let Some(text) = read_opt(root, &rel)? else {
            continue;
        };
        let doc: toml::Table = toml::from_str(&text).map_err(|e| InitError::Toml {
            path: rel_str(&rel),
            message: e.message().to_string(),
        })?;
        let spec = doc
            .get("project")
            .and_then(|p| p.get("requires-python"))
            .and_then(|v| v.as_str())
            .map(|s| ("requires-python", s.to_string()))
            .or_else(|| {
                let poetry = doc.get("tool")?.get("poetry")?.get("dependencies")?.get("python")?;
                Some(("tool.poetry.dependencies.python", poetry.as_str()?.to_string()))
            });
        if let Some((field, spec)) = spec {
            let version = python_for_specifier(&spec).ok_or_else(|| InitError::PythonVersion {
                path: rel_str(&rel),
                field: field.to_string(),
                found: spec.clone(),
            })?;
            return Ok(debian_note(
                found(version, format!("{} {field} {spec:?}", rel_str(&rel))),
                warnings,
            ));
        }
    }
    for (name, prefix) in [(".python-version", ""), ("runtime.txt", "python-")] {
        for dir in &dirs {
            let rel = dir.join(name);
            let Some(text) = read_opt(root, &rel)? else {
                continue;
            };
            let raw = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
            match major_minor(raw.strip_prefix(prefix).unwrap_or(raw)) {
                Some(v) => return Ok(debian_note(found(v, format!("{} {raw:?}", rel_str(&rel))), warnings)),
                None => warnings.push(format!(
                    "{}: expected a CPython version such as \"3.11\", found {raw:?}; ignored",
                    rel_str(&rel)
                )),
            }
        }
    }
    Ok(found(
        DEFAULT_PYTHON.to_string(),
        "farm's default; no requires-python, .python-version or runtime.txt",
    ))
}

fn debian_note(v: Found<String>, warnings: &mut Vec<String>) -> Found<String> {
    if v.value != DEFAULT_PYTHON {
        warnings.push(format!(
            "Python {} ({}): Debian bookworm, farm's default base, ships python{DEFAULT_PYTHON} only\nhint: set [toolchains.debian] suite to a suite that has python{} (trixie has python3.13)",
            v.value, v.source, v.value
        ));
    }
    v
}

/// `3.11.4` → `3.11`.
fn major_minor(s: &str) -> Option<String> {
    let mut it = s.trim().split(['.', '-', '+']);
    let (ma, mi) = (it.next()?, it.next()?);
    let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    (ok(ma) && ok(mi)).then(|| format!("{ma}.{mi}"))
}

/// The Python `MAJOR.MINOR` farm uses for a version specifier (PEP 440, or
/// Poetry's `^3.11`, `~3.11`, `3.11`): its default when allowed (it is what
/// the default Debian base ships), else the oldest allowed.
fn python_for_specifier(spec: &str) -> Option<String> {
    let specifiers = VersionSpecifiers::from_str(&pep440_from_poetry(spec)?).ok()?;
    let allows = |minor: u64| (0..=40).any(|patch| specifiers.contains(&Version::new([3, minor, patch])));
    let default_minor: u64 = DEFAULT_PYTHON.split('.').nth(1)?.parse().ok()?;
    if allows(default_minor) {
        return Some(DEFAULT_PYTHON.to_string());
    }
    (8..=14).find(|m| allows(*m)).map(|m| format!("3.{m}"))
}

/// Poetry's constraint syntax (`tool.poetry.dependencies.python`) in PEP
/// 440 terms, clause by clause: `^3.11` is `>=3.11,<4`, `~3.11` is
/// `>=3.11,<3.12`, and a bare or `=` version like `3.11` means that release
/// series, `==3.11.*`. PEP 440 clauses, and so any `requires-python`, pass
/// through unchanged.
fn pep440_from_poetry(spec: &str) -> Option<String> {
    let mut clauses = Vec::new();
    for clause in spec.split(',').map(str::trim).filter(|c| !c.is_empty() && *c != "*") {
        let release = |v: &str| -> Option<Vec<u64>> {
            let parts = v
                .trim()
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            (!parts.is_empty()).then_some(parts)
        };
        let join = |parts: &[u64]| parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        if let Some(v) = clause.strip_prefix('^') {
            let lower = release(v)?;
            // The first non-zero part may not change: ^3.11 → <4, ^0.2 → <0.3.
            let keep = lower.iter().position(|&p| p != 0).unwrap_or(lower.len() - 1);
            let mut upper = lower[..=keep].to_vec();
            upper[keep] += 1;
            clauses.push(format!(">={},<{}", join(&lower), join(&upper)));
        } else if let Some(v) = clause.strip_prefix('~').filter(|v| !v.starts_with('=')) {
            let lower = release(v)?;
            // ~3.11 and ~3.11.2 allow patch releases, ~3 minor ones.
            let keep = lower.len().min(2) - 1;
            let mut upper = lower[..=keep].to_vec();
            upper[keep] += 1;
            clauses.push(format!(">={},<{}", join(&lower), join(&upper)));
        } else if clause.starts_with(|c: char| c.is_ascii_digit())
            || (clause.starts_with('=') && !clause.starts_with("=="))
        {
            let v = release(clause.trim_start_matches('='))?;
            let series = if v.len() < 3 { ".*" } else { "" };
            clauses.push(format!("=={}{series}", join(&v)));
        } else {
            clauses.push(clause.to_string());
        }
    }
    Some(clauses.join(","))
}

// ---------------------------------------------------------------------------
// Models and project identity

/// `farm.config.*` read statically.
///
/// The FARM framework evaluates this file with Node. Doing the same would
/// need the project's pinned Node, which is only in the store after
/// `farm lock && farm fetch`, and init runs before both; so init reads the
/// object literal instead, and only literal values count.
fn read_farm_config(root: &Path, warnings: &mut Vec<String>) -> Result<Option<(String, JsValue)>, InitError> {
    for name in FARM_CONFIG_FILES {
        let Some(text) = read_opt(root, Path::new(name))? else {
            continue;
        };
        match js::exported_config(&js::tokenize(&text)) {
            Some(v @ JsValue::Object(_)) => return Ok(Some((name.to_string(), v))),
            _ => {
                warnings.push(format!(
                    "{name}: its default export is not an object literal farm init can read without running it; ignored\nhint: write `export default defineConfig({{ ... }})` with literal values, or fill in farm.toml by hand"
                ));
                return Ok(None);
            }
        }
    }
    Ok(None)
}

fn find_models(
    root: &Path,
    farm_config: Option<&(String, JsValue)>,
    notes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<ModelsFound>, InitError> {
    let ai_config = root.join(AI_CONFIG_FILE).is_file().then(|| AI_CONFIG_FILE.to_string());
    let mut from = |file: &str, ollama: &JsValue, fallback_default: Option<&JsValue>| {
        let at = format!("{file} ai.providers.ollama");
        ollama_models(&at, ollama, fallback_default, notes, warnings).map(|(models, default)| ModelsFound {
            models,
            default,
            source: at.clone(),
            config: ai_config.clone(),
        })
    };
    if let Some((file, config)) = farm_config {
        if let Some(ollama) = config.path(&["ai", "providers", "ollama"]) {
            return Ok(from(file, ollama, None));
        }
    }
    let Some(text) = read_opt(root, Path::new(AI_CONFIG_FILE))? else {
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| InitError::Json {
        path: AI_CONFIG_FILE.into(),
        message: e.to_string(),
    })?;
    let value = JsValue::from_json(&json);
    let Some(ollama) = value.path(&["providers", "ollama"]) else {
        return Ok(None);
    };
    let top_default = (value.get("defaultProvider").and_then(JsValue::as_str) == Some("ollama"))
        .then(|| value.get("defaultModel"))
        .flatten();
    let found = from(AI_CONFIG_FILE, ollama, top_default);
    Ok(found.map(|mut m| {
        m.source = format!("{AI_CONFIG_FILE} providers.ollama");
        m
    }))
}

/// Models (`models`, then `autoPull`, then `defaultModel`) of an enabled Ollama provider.
fn ollama_models(
    at: &str,
    ollama: &JsValue,
    fallback_default: Option<&JsValue>,
    notes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<(Vec<String>, Option<String>)> {
    if !matches!(ollama, JsValue::Object(_)) {
        warnings.push(format!(
            "{at}: not an object literal farm init can read without running it; no [models] written"
        ));
        return None;
    }
    if ollama.get("enabled") == Some(&JsValue::Bool(false)) {
        notes.push(format!("{at}: disabled, so farm.toml gets no [models]"));
        return None;
    }
    let mut models: Vec<String> = Vec::new();
    for key in ["models", "autoPull"] {
        match ollama.get(key) {
            None => {}
            Some(JsValue::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(m) if !models.iter().any(|x| x == m) => models.push(m.to_string()),
                        Some(_) => {}
                        None => warnings.push(format!("{at}.{key}[{i}]: not a string literal; skipped")),
                    }
                }
            }
            Some(_) => warnings.push(format!("{at}.{key}: not an array of string literals; skipped")),
        }
    }
    let default = match ollama.get("defaultModel").or(fallback_default) {
        Some(JsValue::Str(d)) => Some(d.clone()),
        Some(_) => {
            warnings.push(format!("{at}.defaultModel: not a string literal; no default written"));
            None
        }
        None => None,
    };
    if let Some(d) = &default {
        if !models.contains(d) {
            models.push(d.clone());
        }
    }
    if models.is_empty() {
        notes.push(format!("{at}: lists no models, so farm.toml gets no [models]"));
        return None;
    }
    Some((models, default))
}

fn name_and_version(
    root: &Path,
    farm_config: Option<&(String, JsValue)>,
    frontend: Option<&FrontendFound>,
) -> Result<(Found<String>, Found<String>), InitError> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut versions: Vec<(String, String)> = Vec::new();
    if let Some((file, c)) = farm_config {
        if let Some(n) = c.get("name").and_then(JsValue::as_str) {
            names.push((n.to_string(), format!("{file} name")));
        }
        if let Some(v) = c.get("version").and_then(JsValue::as_str) {
            versions.push((v.to_string(), format!("{file} version")));
        }
    }
    let mut package_jsons = vec![PathBuf::from("package.json")];
    if let Some(f) = frontend {
        package_jsons.push(f.path.join("package.json"));
    }
    for (i, rel) in dedup(package_jsons).into_iter().enumerate() {
        let Some(text) = read_opt(root, &rel)? else {
            continue;
        };
        let pj: serde_json::Value = serde_json::from_str(&text).map_err(|e| InitError::Json {
            path: rel_str(&rel),
            message: e.to_string(),
        })?;
        // The frontend's package name names the frontend, not the project.
        if i == 0 {
            if let Some(n) = pj.get("name").and_then(|v| v.as_str()) {
                names.push((n.to_string(), format!("{} name", rel_str(&rel))));
            }
        }
        if let Some(v) = pj.get("version").and_then(|v| v.as_str()) {
            versions.push((v.to_string(), format!("{} version", rel_str(&rel))));
        }
    }
    let dir_name = std::fs::canonicalize(root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if let Some(d) = dir_name {
        names.push((d, "the project directory's name".into()));
    }
    let name = names
        .into_iter()
        .find_map(|(n, src)| {
            let clean = image_name(&n)?;
            let src = if clean == n {
                src
            } else {
                format!("{src} {n:?}, made a valid image name")
            };
            Some(found(clean, src))
        })
        .unwrap_or_else(|| found("app".to_string(), "farm's default"));
    let version = versions
        .into_iter()
        .find(|(v, _)| !v.trim().is_empty())
        .map(|(v, src)| found(v, src))
        .unwrap_or_else(|| found("0.1.0".to_string(), "farm's default"));
    Ok((name, version))
}

/// The project name doubles as the app image's repository name: lower case,
/// `[a-z0-9._-]`, no npm scope.
fn image_name(raw: &str) -> Option<String> {
    let unscoped = raw.rsplit('/').next().unwrap_or(raw);
    let mut out = String::new();
    for c in unscoped.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trimmed = out.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    (!trimmed.is_empty()).then_some(trimmed)
}

// ---------------------------------------------------------------------------
// Files and paths

/// Where to look for an app, most likely first: the FARM config's hint, the
/// conventional names, every top-level and apps/*, packages/* directory, the root.
fn candidate_dirs(root: &Path, hint: Option<PathBuf>, preferred: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = hint.into_iter().collect();
    out.extend(preferred.iter().map(PathBuf::from));
    let children = |rel: &Path| -> Vec<PathBuf> {
        list_dir(&root.join(rel))
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, is_dir)| *is_dir && !skipped_dir(name))
            .map(|(name, _)| rel.join(name))
            .collect()
    };
    out.extend(children(Path::new("")));
    for group in ["apps", "packages"] {
        out.extend(children(Path::new(group)));
    }
    out.push(PathBuf::new());
    dedup(out).into_iter().filter(|rel| root.join(rel).is_dir()).collect()
}

fn skipped_dir(name: &str) -> bool {
    name.starts_with('.') || SKIP_DIRS.contains(&name)
}

/// Entries of a directory sorted by name, with whether each is a directory
/// (symlinks followed); an absent directory has none.
fn list_dir(dir: &Path) -> Result<Vec<(String, bool)>, InitError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(vec![])
        }
        Err(source) => {
            return Err(InitError::Read {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let is_dir = std::fs::metadata(e.path()).map(|m| m.is_dir()).unwrap_or(false);
        out.push((name, is_dir));
    }
    out.sort();
    Ok(out)
}

/// A project file's text, or None when it does not exist.
fn read_opt(root: &Path, rel: &Path) -> Result<Option<String>, InitError> {
    let path = root.join(rel);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(InitError::Read {
            path: rel_str(rel),
            source,
        }),
    }
}

/// `./apps/web/` → `apps/web`; None for absolute paths or ones leaving the base.
fn clean_rel(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// A project-relative path as farm.toml writes it; the root is ".".
fn rel_str(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.is_empty() {
        ".".into()
    } else {
        s.into_owned()
    }
}

fn dedup(v: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in v {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Comments hold text from the user's files: keep them on one line.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

use js::JsValue;

/// Just enough of JavaScript/TypeScript to read literal values out of a
/// config file's exported object without running it: tokens (strings,
/// templates, regexes and comments handled so they cannot fake structure),
/// and object/array literals. Anything computed reads as `Unknown`.
mod js {
    #[derive(Debug, Clone, PartialEq)]
    pub enum Tok {
        Ident(String),
        Str(String),
        Num(String),
        /// A template literal: its text when it has no `${}`.
        Template(Option<String>),
        Regex,
        Punct(char),
    }

    #[derive(Debug, Clone, PartialEq)]
    pub enum JsValue {
        Object(Vec<(String, JsValue)>),
        Array(Vec<JsValue>),
        Str(String),
        Num(String),
        Bool(bool),
        Null,
        /// Computed, referenced or otherwise not a literal.
        Unknown,
    }

    /// Key recorded for `...spread` entries: they may override what came before.
    const SPREAD: &str = "...";

    impl JsValue {
        /// An object's property; Unknown when a later spread may override it.
        pub fn get(&self, key: &str) -> Option<&JsValue> {
            let JsValue::Object(entries) = self else {
                return None;
            };
            let idx = entries.iter().rposition(|(k, _)| k == key);
            let spread_after = entries
                .iter()
                .rposition(|(k, _)| k == SPREAD)
                .is_some_and(|s| idx.is_none_or(|i| s > i));
            if spread_after {
                return Some(&JsValue::Unknown);
            }
            idx.map(|i| &entries[i].1)
        }

        pub fn path(&self, keys: &[&str]) -> Option<&JsValue> {
            keys.iter().try_fold(self, |v, k| v.get(k))
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                JsValue::Str(s) => Some(s),
                _ => None,
            }
        }

        pub fn from_json(v: &serde_json::Value) -> JsValue {
            use serde_json::Value as J;
            match v {
                J::Null => JsValue::Null,
                J::Bool(b) => JsValue::Bool(*b),
                J::Number(n) => JsValue::Num(n.to_string()),
                J::String(s) => JsValue::Str(s.clone()),
                J::Array(a) => JsValue::Array(a.iter().map(JsValue::from_json).collect()),
                J::Object(o) => JsValue::Object(o.iter().map(|(k, v)| (k.clone(), JsValue::from_json(v))).collect()),
            }
        }
    }

    pub fn tokenize(src: &str) -> Vec<Tok> {
        let cs: Vec<char> = src.chars().collect();
        let mut out: Vec<Tok> = Vec::new();
        let mut i = 0;
        while i < cs.len() {
            let c = cs[i];
            let next = cs.get(i + 1).copied();
            if c.is_whitespace() {
                i += 1;
            } else if c == '/' && next == Some('/') {
                while i < cs.len() && cs[i] != '\n' {
                    i += 1;
                }
            } else if c == '/' && next == Some('*') {
                i += 2;
                while i < cs.len() && !(cs[i] == '*' && cs.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            } else if c == '\'' || c == '"' {
                let (s, end) = quoted(&cs, i);
                out.push(Tok::Str(s));
                i = end;
            } else if c == '`' {
                let (s, end) = template(&cs, i);
                out.push(Tok::Template(s));
                i = end;
            } else if c == '/' && regex_allowed(out.last()) {
                i = regex_end(&cs, i);
                out.push(Tok::Regex);
            } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
                let start = i;
                while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '.' || cs[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Num(cs[start..i].iter().collect()));
            } else if c.is_alphabetic() || c == '_' || c == '$' {
                let start = i;
                while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_' || cs[i] == '$') {
                    i += 1;
                }
                out.push(Tok::Ident(cs[start..i].iter().collect()));
            } else {
                out.push(Tok::Punct(c));
                i += 1;
            }
        }
        out
    }

    /// A '…' or "…" string starting at `i`: its value and the index after it.
    /// Unterminated strings end at the line's end, as JavaScript would reject them there.
    fn quoted(cs: &[char], i: usize) -> (String, usize) {
        let q = cs[i];
        let mut s = String::new();
        let mut j = i + 1;
        while j < cs.len() {
            match cs[j] {
                c if c == q => return (s, j + 1),
                '\n' => return (s, j),
                '\\' => j = escape(cs, j, &mut s),
                c => {
                    s.push(c);
                    j += 1;
                }
            }
        }
        (s, j)
    }

    /// A template literal starting at `i`; None as value when it has substitutions.
    fn template(cs: &[char], i: usize) -> (Option<String>, usize) {
        let mut s = String::new();
        let mut literal = true;
        let mut j = i + 1;
        while j < cs.len() {
            match cs[j] {
                '`' => return (literal.then_some(s), j + 1),
                '\\' => j = escape(cs, j, &mut s),
                '$' if cs.get(j + 1) == Some(&'{') => {
                    literal = false;
                    j += 2;
                    let mut depth = 1;
                    while j < cs.len() && depth > 0 {
                        match cs[j] {
                            '{' => {
                                depth += 1;
                                j += 1;
                            }
                            '}' => {
                                depth -= 1;
                                j += 1;
                            }
                            '\'' | '"' => j = quoted(cs, j).1,
                            '`' => j = template(cs, j).1,
                            _ => j += 1,
                        }
                    }
                }
                c => {
                    s.push(c);
                    j += 1;
                }
            }
        }
        (literal.then_some(s), j)
    }

    /// Decodes the escape at `cs[j] == '\\'` into `s`; returns the index after it.
    fn escape(cs: &[char], j: usize, s: &mut String) -> usize {
        let Some(&e) = cs.get(j + 1) else {
            return j + 1;
        };
        let hex = |from: usize, len: usize| -> Option<char> {
            let h: String = cs.get(from..from + len)?.iter().collect();
            char::from_u32(u32::from_str_radix(&h, 16).ok()?)
        };
        match e {
            'n' => s.push('\n'),
            't' => s.push('\t'),
            'r' => s.push('\r'),
            'b' => s.push('\u{8}'),
            'f' => s.push('\u{c}'),
            'v' => s.push('\u{b}'),
            '0' => s.push('\0'),
            '\n' => {}
            'x' => {
                if let Some(c) = hex(j + 2, 2) {
                    s.push(c);
                    return j + 4;
                }
            }
            'u' if cs.get(j + 2) == Some(&'{') => {
                if let Some(close) = cs[j + 3..].iter().position(|c| *c == '}') {
                    if let Some(c) = hex(j + 3, close) {
                        s.push(c);
                    }
                    return j + 4 + close;
                }
            }
            'u' => {
                if let Some(c) = hex(j + 2, 4) {
                    s.push(c);
                    return j + 6;
                }
            }
            c => s.push(c),
        }
        j + 2
    }

    /// Whether a `/` after `prev` starts a regular expression rather than a division.
    fn regex_allowed(prev: Option<&Tok>) -> bool {
        match prev {
            None => true,
            Some(Tok::Punct(c)) => "(,=:[!&|?{};+-*%<>~^".contains(*c),
            Some(Tok::Ident(k)) => matches!(
                k.as_str(),
                "return" | "typeof" | "case" | "do" | "else" | "in" | "of" | "new" | "delete" | "void" | "throw"
            ),
            _ => false,
        }
    }

    fn regex_end(cs: &[char], i: usize) -> usize {
        let mut j = i + 1;
        let mut class = false;
        while j < cs.len() && cs[j] != '\n' {
            match cs[j] {
                '\\' => j += 1,
                '[' => class = true,
                ']' => class = false,
                '/' if !class => {
                    j += 1;
                    while j < cs.len() && cs[j].is_alphanumeric() {
                        j += 1;
                    }
                    return j;
                }
                _ => {}
            }
            j += 1;
        }
        j
    }

    struct Parser<'a> {
        toks: &'a [Tok],
        pos: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<&Tok> {
            self.toks.get(self.pos)
        }

        fn at_delimiter(&self) -> bool {
            matches!(self.peek(), None | Some(Tok::Punct(',' | ')' | ']' | '}' | ';')))
        }

        /// Skips the rest of an expression: to the next `,`, `;` or unmatched closer.
        fn skip_expression(&mut self) {
            let mut depth = 0usize;
            while let Some(t) = self.peek() {
                match t {
                    Tok::Punct('(' | '[' | '{') => depth += 1,
                    Tok::Punct(')' | ']' | '}') => {
                        if depth == 0 {
                            return;
                        }
                        depth -= 1;
                    }
                    Tok::Punct(',' | ';') if depth == 0 => return,
                    _ => {}
                }
                self.pos += 1;
            }
        }

        fn value(&mut self) -> JsValue {
            let v = match self.peek() {
                Some(Tok::Punct('{')) => {
                    self.pos += 1;
                    self.object()
                }
                Some(Tok::Punct('[')) => {
                    self.pos += 1;
                    self.array()
                }
                Some(Tok::Str(s)) | Some(Tok::Template(Some(s))) => {
                    let v = JsValue::Str(s.clone());
                    self.pos += 1;
                    v
                }
                Some(Tok::Num(n)) => {
                    let v = JsValue::Num(n.clone());
                    self.pos += 1;
                    v
                }
                Some(Tok::Ident(k)) => {
                    let v = match k.as_str() {
                        "true" => JsValue::Bool(true),
                        "false" => JsValue::Bool(false),
                        "null" | "undefined" => JsValue::Null,
                        _ => JsValue::Unknown,
                    };
                    self.pos += 1;
                    v
                }
                _ => JsValue::Unknown,
            };
            // TypeScript assertions keep the value: `{ ... } as const`, `x satisfies T`.
            if matches!(self.peek(), Some(Tok::Ident(k)) if k == "as" || k == "satisfies") {
                self.skip_expression();
                return v;
            }
            if !self.at_delimiter() {
                // `'a' + b`, `process.env.X || 'y'`, `fn()`, arrow functions: not literals.
                self.skip_expression();
                return JsValue::Unknown;
            }
            v
        }

        /// An object literal; the opening `{` is consumed.
        fn object(&mut self) -> JsValue {
            let mut entries = Vec::new();
            loop {
                let start = self.pos;
                match self.peek() {
                    None | Some(Tok::Punct(')' | ']')) => return JsValue::Object(entries),
                    Some(Tok::Punct('}')) => {
                        self.pos += 1;
                        return JsValue::Object(entries);
                    }
                    Some(Tok::Punct(',')) => {
                        self.pos += 1;
                        continue;
                    }
                    Some(Tok::Punct('.')) => {
                        self.skip_expression();
                        entries.push((SPREAD.to_string(), JsValue::Unknown));
                    }
                    Some(Tok::Ident(k)) | Some(Tok::Str(k)) | Some(Tok::Num(k)) => {
                        let key = k.clone();
                        self.pos += 1;
                        match self.peek() {
                            Some(Tok::Punct(':')) => {
                                self.pos += 1;
                                let v = self.value();
                                entries.push((key, v));
                            }
                            // Shorthand `{ name }` and methods `name() {}`: not literals.
                            Some(Tok::Punct(',' | '}' | '(')) => {
                                self.skip_expression();
                                entries.push((key, JsValue::Unknown));
                            }
                            // `get x() {}`, `async x() {}`: accessors and methods.
                            _ => self.skip_expression(),
                        }
                    }
                    // Computed keys `[k]: v` may be anything.
                    _ => {
                        self.skip_expression();
                        entries.push((SPREAD.to_string(), JsValue::Unknown));
                    }
                }
                if self.pos == start {
                    self.pos += 1;
                }
            }
        }

        /// An array literal; the opening `[` is consumed.
        fn array(&mut self) -> JsValue {
            let mut items = Vec::new();
            loop {
                let start = self.pos;
                match self.peek() {
                    None | Some(Tok::Punct(')' | '}')) => return JsValue::Array(items),
                    Some(Tok::Punct(']')) => {
                        self.pos += 1;
                        return JsValue::Array(items);
                    }
                    Some(Tok::Punct(',')) => {
                        self.pos += 1;
                        continue;
                    }
                    Some(Tok::Punct('.')) => {
                        self.skip_expression();
                        items.push(JsValue::Unknown);
                    }
                    _ => items.push(self.value()),
                }
                if self.pos == start {
                    self.pos += 1;
                }
            }
        }
    }

    /// The object a config module exports: `export default {…}`,
    /// `export default defineConfig({…})`, `module.exports = …`, or a
    /// `const config = {…}` those name. None for config functions.
    pub fn exported_config(toks: &[Tok]) -> Option<JsValue> {
        let ident = |i: usize, s: &str| matches!(toks.get(i), Some(Tok::Ident(k)) if k == s);
        let punct = |i: usize, c: char| toks.get(i) == Some(&Tok::Punct(c));
        (0..toks.len()).find_map(|i| {
            if ident(i, "export") && ident(i + 1, "default") {
                resolve(toks, i + 2, 0)
            } else if ident(i, "module") && punct(i + 1, '.') && ident(i + 2, "exports") && punct(i + 3, '=') {
                resolve(toks, i + 4, 0)
            } else {
                None
            }
        })
    }

    fn resolve(toks: &[Tok], at: usize, depth: usize) -> Option<JsValue> {
        if depth > 8 {
            return None;
        }
        let punct = |i: usize, c: char| toks.get(i) == Some(&Tok::Punct(c));
        match toks.get(at)? {
            Tok::Punct('{') => {
                let mut p = Parser { toks, pos: at + 1 };
                let v = p.object();
                // `({ mode }) => …` and `{ mode } => …`: a parameter pattern, not the config.
                let arrow = |i: usize| punct(i, '=') && punct(i + 1, '>');
                if arrow(p.pos) || (punct(p.pos, ')') && arrow(p.pos + 1)) {
                    return None;
                }
                Some(v)
            }
            Tok::Punct('(') => resolve(toks, at + 1, depth + 1),
            Tok::Ident(name) if punct(at + 1, '(') => {
                // A wrapper call such as defineConfig(…): its first argument.
                let _ = name;
                resolve(toks, at + 2, depth + 1)
            }
            Tok::Ident(name) => {
                let decl = (0..toks.len().saturating_sub(1)).find(|&i| {
                    matches!(&toks[i], Tok::Ident(k) if k == "const" || k == "let" || k == "var")
                        && matches!(&toks[i + 1], Tok::Ident(n) if n == name)
                })?;
                let mut j = decl + 2;
                if punct(j, ':') {
                    // A type annotation: up to the `=` that is not part of `=>`.
                    while j < toks.len() && (!punct(j, '=') || punct(j + 1, '>')) {
                        j += 1;
                    }
                }
                if !punct(j, '=') {
                    return None;
                }
                resolve(toks, j + 1, depth + 1)
            }
            _ => None,
        }
    }

    /// Every object literal written as `key: {…}` anywhere in the file.
    pub fn objects_under_key(toks: &[Tok], key: &str) -> Vec<JsValue> {
        let mut out = Vec::new();
        for i in 0..toks.len() {
            let named = matches!(&toks[i], Tok::Ident(k) | Tok::Str(k) if k == key);
            if named && toks.get(i + 1) == Some(&Tok::Punct(':')) && toks.get(i + 2) == Some(&Tok::Punct('{')) {
                let mut p = Parser { toks, pos: i + 3 };
                out.push(p.object());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(src: &str) -> JsValue {
        js::exported_config(&js::tokenize(src)).expect("an exported object")
    }

    #[test]
    fn farm_config_models_are_read_through_comments_expressions_and_type_assertions() {
        let src = r#"
            import { defineConfig } from '@farm-framework/core';
            // models: ['commented-out:latest']
            export default defineConfig({
              name: 'my-app', /* version: '9.9.9', */
              database: { type: 'mongodb', url: process.env.DATABASE_URL || 'mongodb://localhost:27017/x' },
              ai: {
                providers: {
                  ollama: {
                    enabled: true,
                    url: `http://localhost:${port}`,
                    models: ['llama3.2:1b', "farm-tiny:latest",],
                    defaultModel: 'farm-tiny:latest',
                    autoPull: ['llama3.2:1b'] as const,
                  },
                  openai: { enabled: false, apiKey: process.env.OPENAI_API_KEY, models: ['gpt-4o-mini'] },
                },
              },
              plugins: [react(), ['x', { a: /["'}]/g }]],
            });
        "#;
        let c = config_of(src);
        assert_eq!(c.get("name"), Some(&JsValue::Str("my-app".into())));
        assert_eq!(c.get("version"), None, "a commented-out key is not read");
        assert_eq!(c.path(&["database", "url"]), Some(&JsValue::Unknown));
        let o = c.path(&["ai", "providers", "ollama"]).unwrap();
        assert_eq!(
            o.get("url"),
            Some(&JsValue::Unknown),
            "templates with ${{}} are not literals"
        );
        assert_eq!(
            o.get("models"),
            Some(&JsValue::Array(vec![
                JsValue::Str("llama3.2:1b".into()),
                JsValue::Str("farm-tiny:latest".into())
            ]))
        );
        assert_eq!(
            o.get("defaultModel").and_then(JsValue::as_str),
            Some("farm-tiny:latest")
        );
        let (mut notes, mut warnings) = (vec![], vec![]);
        let (models, default) = ollama_models("f", o, None, &mut notes, &mut warnings).unwrap();
        assert_eq!(models, ["llama3.2:1b", "farm-tiny:latest"]);
        assert_eq!(default.as_deref(), Some("farm-tiny:latest"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            c.path(&["ai", "providers", "openai", "enabled"]),
            Some(&JsValue::Bool(false))
        );
    }

    #[test]
    fn config_named_by_a_const_is_found_and_a_later_spread_hides_earlier_keys() {
        let c =
            config_of("const config: FarmConfig = { name: 'a', build: { outDir: 'out' } };\nexport default config;");
        assert_eq!(c.path(&["build", "outDir"]).and_then(JsValue::as_str), Some("out"));
        let c = config_of("export default { name: 'a', ...base, version: '2' }");
        assert_eq!(c.get("name"), Some(&JsValue::Unknown), "base may override name");
        assert_eq!(c.get("version").and_then(JsValue::as_str), Some("2"));
        let c = config_of("module.exports = { name: 'cjs' }");
        assert_eq!(c.get("name").and_then(JsValue::as_str), Some("cjs"));
    }

    #[test]
    fn disabled_ollama_gives_no_models() {
        let o = config_of("export default { enabled: false, models: ['a:1'] }");
        let (mut notes, mut warnings) = (vec![], vec![]);
        assert!(ollama_models("f", &o, None, &mut notes, &mut warnings).is_none());
        assert!(notes[0].contains("disabled"), "{notes:?}");
    }

    #[test]
    fn vite_out_dir_literal_dynamic_absent_and_inside_a_config_function() {
        assert_eq!(
            read_vite_out_dir("export default defineConfig({ build: { outDir: 'build' } })"),
            ViteOutDir::Literal("build".into())
        );
        assert_eq!(
            read_vite_out_dir("export default defineConfig({ build: { outDir: process.env.OUT } })"),
            ViteOutDir::Dynamic
        );
        assert_eq!(
            read_vite_out_dir("export default defineConfig({ base: './', build: { sourcemap: true } })"),
            ViteOutDir::Absent
        );
        assert_eq!(
            read_vite_out_dir(
                "export default defineConfig(({ mode }) => ({ build: { outDir: \"www\", minify: mode !== 'dev' } }))"
            ),
            ViteOutDir::Literal("www".into())
        );
        assert_eq!(
            read_vite_out_dir("export default defineConfig(({ mode }) => ({ build: { outDir: mode } }))"),
            ViteOutDir::Dynamic
        );
    }

    #[test]
    fn fastapi_assignments_are_module_level_and_outside_docstrings() {
        let src = "\"\"\"Docs.\napp = FastAPI()\n\"\"\"\nfrom fastapi import FastAPI\n\
                   def make():\n    inner = FastAPI()\napi: FastAPI = fastapi.FastAPI(title='x')\nx == FastAPI(\n";
        assert_eq!(fastapi_assignments(src), vec![(7, "api".to_string())]);
        assert_eq!(module_path(Path::new("app/main.py")).as_deref(), Some("app.main"));
        assert_eq!(module_path(Path::new("app/__init__.py")).as_deref(), Some("app"));
        assert_eq!(module_path(Path::new("my-app/main.py")), None, "not importable");
    }

    #[test]
    fn python_version_from_specifiers() {
        assert_eq!(python_for_specifier(">=3.11").as_deref(), Some("3.11"));
        assert_eq!(python_for_specifier(">=3.9,<3.13").as_deref(), Some("3.11"));
        assert_eq!(python_for_specifier(">=3.12").as_deref(), Some("3.12"));
        assert_eq!(python_for_specifier("~=3.10.2").as_deref(), Some("3.10"));
        assert_eq!(python_for_specifier("==3.13.*").as_deref(), Some("3.13"));
        assert_eq!(python_for_specifier("^3.12").as_deref(), Some("3.12"));
        assert_eq!(python_for_specifier(">=3.11.4").as_deref(), Some("3.11"));
        assert_eq!(python_for_specifier(">=4"), None);
        assert_eq!(python_for_specifier(">=3.10,<3.13").as_deref(), Some("3.11"));
        assert_eq!(python_for_specifier(">=3.12, <3.14").as_deref(), Some("3.12"));
        assert_eq!(
            python_for_specifier(">3.11").as_deref(),
            Some("3.11"),
            "3.11.1 is above 3.11"
        );
        assert_eq!(python_for_specifier("!=3.11.*,>=3.10").as_deref(), Some("3.10"));
        assert_eq!(python_for_specifier("<3.11").as_deref(), Some("3.8"));
        assert_eq!(python_for_specifier("==3.12").as_deref(), Some("3.12"));
        assert_eq!(python_for_specifier("*").as_deref(), Some("3.11"));
        assert_eq!(python_for_specifier("~3.12").as_deref(), Some("3.12"), "Poetry's tilde");
        assert_eq!(
            python_for_specifier("3.13").as_deref(),
            Some("3.13"),
            "Poetry's bare version"
        );
        assert_eq!(python_for_specifier("^3.12,<3.13").as_deref(), Some("3.12"));
        assert_eq!(python_for_specifier(">=3.10 and <4"), None, "not a specifier");
        assert_eq!(python_for_specifier(">=3.1x"), None);
        assert_eq!(
            pep440_from_poetry("^3.11, ~3.12.1, 3.13, =3.9, >=3.8").as_deref(),
            Some(">=3.11,<4,>=3.12.1,<3.13,==3.13.*,==3.9.*,>=3.8")
        );
        assert_eq!(major_minor("3.11.4").as_deref(), Some("3.11"));
        assert_eq!(major_minor("pypy3.10"), None);
    }

    /// React Router apps build into `<buildDirectory>/client`: the default
    /// `build/client`, the config's literal `buildDirectory`, or the default
    /// for a dependency on @react-router/dev alone; other apps are not theirs.
    #[test]
    fn react_router_builds_into_build_client() {
        let p = tempfile::tempdir().unwrap();
        let root = p.path();
        std::fs::create_dir_all(root.join("web")).unwrap();
        let pj: serde_json::Value = serde_json::json!({"devDependencies": {"@react-router/dev": "7.0.0"}});
        let mut w = Vec::new();
        let dir = |pj: &serde_json::Value, w: &mut Vec<String>| {
            react_router_output_dir(root, Path::new("web"), pj, w)
                .unwrap()
                .map(|f| f.value)
        };
        assert_eq!(dir(&pj, &mut w).as_deref(), Some("build/client"));
        assert_eq!(dir(&serde_json::json!({}), &mut w), None);
        std::fs::write(
            root.join("web/react-router.config.ts"),
            "import type { Config } from \"@react-router/dev/config\";\nexport default { ssr: false, buildDirectory: \"out\" } satisfies Config;\n",
        )
        .unwrap();
        assert_eq!(dir(&serde_json::json!({}), &mut w).as_deref(), Some("out/client"));
        std::fs::write(
            root.join("web/react-router.config.ts"),
            "export default { ssr: false };\n",
        )
        .unwrap();
        assert_eq!(dir(&serde_json::json!({}), &mut w).as_deref(), Some("build/client"));
        assert!(w.is_empty(), "{w:?}");
    }

    /// An exact version is kept; a major (any, `24` too) or major.minor is
    /// written as is for `farm lock` to pin its newest release; an alias
    /// init cannot resolve offline is refused with the file and a hint.
    #[test]
    fn node_versions_exact_major_and_refused() {
        assert_eq!(node_from_version_file(".nvmrc", "v22.19.0\n").unwrap().value, "22.19.0");
        assert_eq!(node_from_version_file(".nvmrc", "20\n").unwrap().value, "20");
        assert_eq!(node_from_version_file(".nvmrc", "24\n").unwrap().value, "24");
        assert_eq!(node_from_version_file(".nvmrc", "v24.x\n").unwrap().value, "24");
        assert_eq!(node_from_version_file(".node-version", "22.19").unwrap().value, "22.19");
        let err = node_from_version_file(".nvmrc", "lts/iron\n").unwrap_err().to_string();
        assert!(
            err.contains(".nvmrc") && err.contains("\"lts/iron\"") && err.contains("hint"),
            "{err}"
        );
        assert!(node_from_version_file(".node-version", "lts/*").is_err());
    }

    #[test]
    fn names_become_image_names() {
        assert_eq!(image_name("@acme/My App").as_deref(), Some("my-app"));
        assert_eq!(image_name("farm-app").as_deref(), Some("farm-app"));
        assert_eq!(image_name("---"), None);
    }

    /// engines.node ranges become the major (or major.minor) whose newest
    /// release satisfies them; what is not a range is not guessed at.
    #[test]
    fn engines_node_ranges_become_a_major() {
        let default_major = DEFAULT_NODE.split('.').next().unwrap();
        for (range, expected) in [
            ("^20.11.0", Some("20")),
            ("20.x", Some("20")),
            ("20", Some("20")),
            ("~20.11.1", Some("20.11")),
            (">=18", Some(default_major)),
            (">= 18.0.0", Some(default_major)),
            (">=18 <21", Some("20")),
            (">=18 <=20", Some("20")),
            ("^18 || ^20 || ^24", Some("24")),
            ("18 - 20", Some("20")),
            ("lts/*", None),
            (">=30 <20", None),
        ] {
            assert_eq!(node_for_range(range).as_deref(), expected, "{range}");
        }
    }

    #[test]
    fn rendered_config_parses_and_quotes_odd_values() {
        let d = Detection {
            name: found("x".to_string(), "a \"quoted\"\nsource"),
            version: found("1.0.0-\"rc\"".to_string(), ""),
            frontend: None,
            backend: Some(BackendFound {
                path: "api".into(),
                why: "w".into(),
                requirements: "requirements.txt".into(),
                lockfile: None,
                lock_groups: vec![],
                app: found("main:app".to_string(), "s"),
            }),
            node: None,
            python: Some(found("3.11".to_string(), "d")),
            models: None,
            mongodb: None,
            notes: vec![],
            warnings: vec![],
        };
        let text = render(&d);
        let c = config::parse("farm.toml", &text).unwrap();
        assert_eq!(c.project.version, "1.0.0-\"rc\"");
        assert_eq!(c.backend.unwrap().app, "main:app");
        assert!(c.models.is_none() && c.frontend.is_none());
        check_generated(&text).unwrap();
        assert!(
            text.contains("version = '1.0.0-\"rc\"'\n"),
            "a value with quotes is a literal string: {text}"
        );
        assert!(
            text.contains("name = \"x\"  # a \"quoted\" source\n"),
            "a comment stays on one line: {text}"
        );
    }

    #[test]
    fn rendered_text_is_pinned() {
        let d = Detection {
            name: found("farm-app".to_string(), "farm.config.ts name"),
            version: found("0.1.0".to_string(), "farm.config.ts version"),
            frontend: Some(FrontendFound {
                path: "apps/web".into(),
                why: "apps/web/package.json has vite in devDependencies".into(),
                build_script: found("build".to_string(), "apps/web/package.json scripts.build: vite build"),
                output_dir: found("dist".to_string(), "apps/web/vite.config.js build.outDir"),
                api_types: None,
                packages: Some(found(
                    "pnpm-lock.yaml, laid out as pnpm 9.12.0 does".to_string(),
                    "package.json packageManager",
                )),
                npm: None,
            }),
            backend: Some(BackendFound {
                path: "apps/api".into(),
                why: "apps/api/requirements.txt and a FastAPI app".into(),
                requirements: "requirements.txt".into(),
                lockfile: None,
                lock_groups: vec![],
                app: found(
                    "app.main:app".to_string(),
                    "apps/api/app/main.py:21: `app = FastAPI(...)`",
                ),
            }),
            node: Some(found("22.19.0".to_string(), ".nvmrc")),
            python: None,
            models: Some(ModelsFound {
                models: vec!["farm-tiny:latest".into(), "llama3.2:1b".into()],
                default: Some("farm-tiny:latest".into()),
                source: "farm.config.ts ai.providers.ollama".into(),
                config: None,
            }),
            mongodb: Some(found(
                "library/mongo:7.0".to_string(),
                "farm.config.ts database.type \"mongodb\"; pinned to a digest by `farm lock`",
            )),
            notes: vec![],
            warnings: vec![],
        };
        assert_eq!(
            render(&d),
            r#"# Written by `farm init` from what it read in this repository; every key is
# described in farm's spec/farm-toml.md. Review it, then:
#   farm lock && farm fetch && farm build --hermetic

[project]
name = "farm-app"  # farm.config.ts name
version = "0.1.0"  # farm.config.ts version

[toolchains.node]
version = "22.19.0"  # .nvmrc
npm = "10"  # the newest npm 10.x, pinned by `farm lock`

[toolchains.debian]
# The base every build step runs on; Python comes from its python3.X packages.
suite = "bookworm"
architecture = "amd64"

[frontend]
# Packages: pnpm-lock.yaml, laid out as pnpm 9.12.0 does (package.json packageManager).
path = "apps/web"  # apps/web/package.json has vite in devDependencies
build-script = "build"  # apps/web/package.json scripts.build: vite build
output-dir = "dist"  # apps/web/vite.config.js build.outDir

[backend]
path = "apps/api"  # apps/api/requirements.txt and a FastAPI app
requirements = "requirements.txt"  # exact `==` pins, resolved by `farm lock`
app = "app.main:app"  # apps/api/app/main.py:21: `app = FastAPI(...)`

[models]
# The Ollama/OCI registry the models are pulled from, read from the environment
# so no registry is built into the project.
registry = "${FARM_OLLAMA_REGISTRY}"
# The name Ollama knows the models by (manifests/<host>/...): fixed, so the
# models directory does not depend on where the registry runs.
host = "models.farm-app.internal"
models = ["farm-tiny:latest", "llama3.2:1b"]  # farm.config.ts ai.providers.ollama
default = "farm-tiny:latest"

[deploy]
compose = true  # docker-compose.yml runs MongoDB beside the app, which gets MONGODB_URL
mongodb = "library/mongo:7.0"  # farm.config.ts database.type "mongodb"; pinned to a digest by `farm lock`

[registries]
# The registry `mongodb` is pulled from (it names no host), read from the
# environment so no registry is built into the project.
containers = "${FARM_CONTAINER_REGISTRY}"
"#
        );
    }
}
