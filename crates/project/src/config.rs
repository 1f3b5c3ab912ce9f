//! `farm.toml`, the project file: its schema, parsing with precise errors,
//! defaults, and the per-section digests `farm.lock` records. Spec:
//! `spec/farm-toml.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "farm.toml";

/// SOURCE_DATE_EPOCH used when neither farm.toml nor git gives one:
/// 1980-01-01, the earliest date a ZIP (and so a wheel) can hold.
pub const FALLBACK_SOURCE_DATE_EPOCH: u64 = 315_532_800;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub project: ProjectSection,
    #[serde(default)]
    pub toolchains: Toolchains,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<FrontendSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelsSection>,
    #[serde(default)]
    pub images: ImagesSection,
    #[serde(default)]
    pub deploy: DeploySection,
    #[serde(default)]
    pub registries: RegistriesSection,
    /// Resource limits of steps and of what farm unpacks (`[limits]`).
    #[serde(default, skip_serializing_if = "LimitsSection::is_unset")]
    pub limits: LimitsSection,
    /// How big and how old the store's build products may grow (`[cache]`).
    #[serde(default, skip_serializing_if = "CacheSection::is_unset")]
    pub cache: CacheSection,
    /// A Remote Execution API server's cache (`[remote]`, spec/remote.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSection>,
    /// Custom build steps (`[[steps]]`), run in the sandbox like the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CustomStep>,
    /// Named build environments (`farm build --env NAME`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvSection>,
}

/// `[[steps]]`: a step of the project's own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CustomStep {
    pub name: String,
    /// A shell script (`/bin/sh -c`); inputs are in `$FARM_INPUT_<NAME>`, the output directory is `$out`.
    pub command: String,
    /// `step:<name>` (frontend, backend, models or a custom step), `path:<dir in the project>`,
    /// `toolchain:<node|python>`.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Paths the command must create under `$out`.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Only `false`: build steps never have network.
    #[serde(default)]
    pub network: bool,
    /// Put the output into the app image at this absolute path (a layer of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_path: Option<String>,
}

/// `[env.NAME]`: what a build environment changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EnvSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<FrontendOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendOverride>,
    /// Build-time variables given to the frontend and backend steps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FrontendOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BackendOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// The environment a build runs for.
pub const DEFAULT_ENV: &str = "production";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProjectSection {
    pub name: String,
    pub version: String,
    /// Seconds since the epoch used for every timestamp a build writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Toolchains {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeToolchainConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonToolchainConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama: Option<OllamaToolchainConfig>,
    #[serde(default)]
    pub debian: DebianConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeToolchainConfig {
    /// Node version: exact (`22.19.0`), or a major or major.minor (`24`,
    /// `22.19`) that `farm lock` resolves to the newest release and pins.
    pub version: String,
    /// npm version: exact, or a prefix (`10`, `10.9`) resolved to the newest match at lock time.
    #[serde(default = "default_npm")]
    pub npm: String,
}

fn default_npm() -> String {
    "10".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PythonToolchainConfig {
    /// `MAJOR.MINOR`; the interpreter comes from the Debian suite's `python3.X` packages.
    pub version: String,
    /// pip's version, run from its wheel to install the backend offline.
    #[serde(default = "default_pip")]
    pub pip: String,
}

fn default_pip() -> String {
    "24.3.1".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OllamaToolchainConfig {
    pub version: String,
    /// The release archive (any URL: mirror, `file://`).
    pub url: String,
    /// `sha256:<hex>`; computed by downloading when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DebianConfig {
    #[serde(default = "default_suite")]
    pub suite: String,
    #[serde(default = "default_arch")]
    pub architecture: String,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Packages added to the base beside farm's defaults.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages never added, even when something depends on them.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl Default for DebianConfig {
    fn default() -> Self {
        DebianConfig {
            suite: default_suite(),
            architecture: default_arch(),
            components: default_components(),
            packages: vec![],
            exclude: vec![],
        }
    }
}

fn default_suite() -> String {
    "bookworm".into()
}
fn default_arch() -> String {
    "amd64".into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FrontendSection {
    pub path: PathBuf,
    #[serde(default = "default_build_script")]
    pub build_script: String,
    #[serde(default = "default_output_dir")]
    pub output_dir: PathBuf,
    /// Packages whose install scripts may run (none by default).
    #[serde(default)]
    pub allow_scripts: Vec<String>,
    /// Where the TypeScript types generated from the backend's OpenAPI schema
    /// live, relative to `path` (e.g. `src/api-types.ts`). Set it to turn the
    /// `types` step on; `farm types sync` writes the file, builds check it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_types: Option<PathBuf>,
    /// Losslessly optimise the images of the build's output (the
    /// `optimize-images` step, spec/optimize.md "As a build step").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optimize_images: bool,
}

fn default_build_script() -> String {
    "build".into()
}
fn default_output_dir() -> PathBuf {
    "dist".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BackendSection {
    pub path: PathBuf,
    /// The requirements file, relative to `path` (default `requirements.txt`
    /// when the backend has no Python lockfile). Exclusive with `lockfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<PathBuf>,
    /// The Python lockfile (`uv.lock`, `poetry.lock`, `pylock.toml`),
    /// project-relative since a uv workspace's lock sits above its members.
    /// Default: the one [`python_lockfile_in`] finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockfile: Option<PathBuf>,
    /// Dependency groups of the backend's project installed from the lockfile
    /// (none by default, so dev groups stay out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extras of the backend's project installed from the lockfile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extras: Vec<String>,
    /// The ASGI application, `module:attribute`.
    pub app: String,
    /// Build-time variables the app needs to be imported (for its OpenAPI
    /// schema): each must be set by `--var` or the environment's `vars`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<String>,
    /// Secrets the app needs to be imported: each must be passed with
    /// `farm build --secret NAME`; the OpenAPI export sees it as a variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// Where the backend's Python dependencies are pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonDeps {
    /// A requirements file (project-relative), resolved by pip's resolver.
    Requirements(PathBuf),
    /// A uv.lock, poetry.lock or pylock.toml (project-relative), read as is.
    Lockfile(PathBuf),
}

/// The Python lockfile of the backend directory `backend` (project-relative):
/// `pylock.toml`, `uv.lock` or `poetry.lock` in it, else a `uv.lock` in a
/// directory above it up to the project root (a uv workspace). The same
/// rule as `farm_lockread::py::detect_py_lock`.
pub fn python_lockfile_in(root: &Path, backend: &Path) -> Option<PathBuf> {
    for name in ["pylock.toml", "uv.lock", "poetry.lock"] {
        let rel = backend.join(name);
        if root.join(&rel).is_file() {
            return Some(rel);
        }
    }
    let mut dir = backend.parent();
    while let Some(d) = dir {
        let rel = d.join("uv.lock");
        if root.join(&rel).is_file() {
            return Some(rel);
        }
        dir = d.parent();
    }
    None
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ModelsSection {
    /// Ollama/OCI registry base URL; `${VAR}` is replaced from the environment.
    pub registry: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Host part of the Ollama models directory (`manifests/<host>/…`), the
    /// name Ollama will know the models by. Default: the registry's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The app's AI deployment config (providers, models, routing), project-relative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImagesSection {
    #[serde(default = "yes")]
    pub app: bool,
    #[serde(default = "yes")]
    pub ollama: bool,
    /// Repository name of the app image; defaults to the project name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub compression: Compression,
    /// Registry prefix the deploy files use for farm's images
    /// (`<registry>/<name>@sha256:…`); without it they name the bare repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Whether the app image puts farm's front server (the frontend's files
    /// at `/`) in front of the backend (spec/images.md "Serving the frontend").
    /// Skipped when `auto` so existing configs serialize as before.
    #[serde(default, skip_serializing_if = "ServeFrontend::is_auto")]
    pub serve_frontend: ServeFrontend,
    /// Path prefixes that always belong to the backend (`/api`); default:
    /// the first segments of the backend's OpenAPI paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_prefixes: Option<Vec<String>>,
}

impl Default for ImagesSection {
    fn default() -> Self {
        ImagesSection {
            app: true,
            ollama: true,
            name: None,
            compression: Compression::default(),
            registry: None,
            serve_frontend: ServeFrontend::Auto,
            api_prefixes: None,
        }
    }
}

impl ImagesSection {
    /// Checks `api-prefixes`: `(field, message)` on the first bad entry.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, p) in self.api_prefixes.iter().flatten().enumerate() {
            let ok = p.len() > 1
                && p.starts_with('/')
                && !p.ends_with('/')
                && !p.contains("//")
                && p.split('/').all(|s| s != "." && s != "..")
                && p.chars().all(|c| c.is_ascii_graphic() && !"?#%\\".contains(c));
            if !ok {
                return Err((
                    format!("images.api-prefixes[{i}]"),
                    format!(
                        "expected a path prefix like \"/api\" (starts with /, no trailing /, no . or .. segments, no ? # % \\ or spaces), found {p:?}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `images.serve-frontend`: `"auto"` (default), `true` or `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServeFrontend {
    /// On when the backend neither routes `/` in its OpenAPI document nor
    /// reads `FARM_STATIC_DIR`; the front server also steps aside at run time
    /// when the app has a route or mount at `/`.
    #[default]
    Auto,
    On,
    Off,
}

impl ServeFrontend {
    pub fn is_auto(&self) -> bool {
        *self == ServeFrontend::Auto
    }
}

impl Serialize for ServeFrontend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServeFrontend::Auto => s.serialize_str("auto"),
            ServeFrontend::On => s.serialize_bool(true),
            ServeFrontend::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for ServeFrontend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ServeFrontend;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\", true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<ServeFrontend, E> {
                Ok(if b { ServeFrontend::On } else { ServeFrontend::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ServeFrontend, E> {
                match v {
                    "auto" => Ok(ServeFrontend::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeploySection {
    #[serde(default)]
    pub compose: bool,
    #[serde(default)]
    pub kubernetes: bool,
    /// MongoDB image: a fully qualified reference, optionally pinned with `@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<String>,
}

/// Overrides of the endpoints read from the user's npm, pip and apt configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegistriesSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pypi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debian: Option<String>,
    /// OCI registry for base images named without a registry host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<String>,
}

/// `[limits]`: what a step may use and how large an unpacked archive may
/// grow. Sizes are strings in spec/sizes.md's syntax ("8GiB", "512M").
/// Defaults (`LimitsSection::*_DEFAULT`) apply to every project; a value of
/// "none" (sizes) or 0 (processes) turns a limit off.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitsSection {
    /// Memory of one step (cgroup memory.max, else RLIMIT_AS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Processes and threads of one step (cgroup pids.max, else RLIMIT_NPROC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// Bytes one archive may unpack to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack_size: Option<String>,
    /// Unpacked bytes per archive byte above which unpacking stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack_ratio: Option<u64>,
}

/// `[remote]`: the remote cache `farm build` uses when the command line
/// and FARM_REMOTE_CACHE name none. The token never stands here: only the
/// name of the variable that holds it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RemoteSection {
    /// `grpc://HOST:PORT` or `grpcs://HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// A REAPI Execution server the build sends hermetic steps to (it is
    /// also the cache when `cache` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// The REAPI instance name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Look up results, never write any.
    #[serde(default)]
    pub read_only: bool,
    /// The environment variable with the bearer token [default: FARM_REMOTE_TOKEN].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// PEM CA certificates to trust for grpcs:// (relative to the project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// PEM client certificate and key for mutual TLS (relative to the project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

/// The `[limits]` values with defaults applied. `None` means "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub unpack_size: Option<u64>,
    pub unpack_ratio: Option<u64>,
}

impl LimitsSection {
    /// 8 GiB: above what a Vite build of thousands of modules or a pip
    /// install of a large wheel set uses, well below this class of machine.
    pub const MEMORY_DEFAULT: u64 = 8 << 30;
    pub const PROCESSES_DEFAULT: u64 = 4096;
    /// 20 GiB per archive, the same bound as a single download.
    pub const UNPACK_SIZE_DEFAULT: u64 = 20 << 30;
    /// Real packages compress at most ~20:1 (minified JS, text); 1000:1 only
    /// happens on purpose.
    pub const UNPACK_RATIO_DEFAULT: u64 = 1000;

    fn is_unset(&self) -> bool {
        self.memory.is_none() && self.processes.is_none() && self.unpack_size.is_none() && self.unpack_ratio.is_none()
    }

    /// The effective limits; `field` errors name `limits.<field>`.
    pub fn resolve(&self) -> Result<Limits, (String, String)> {
        let size = |field: &str, v: &Option<String>, default: u64| -> Result<Option<u64>, (String, String)> {
            match v.as_deref().map(str::trim) {
                None => Ok(Some(default)),
                Some("none") => Ok(None),
                Some(s) => match farm_formats::size::parse_size(s) {
                    Ok(0) => Err((format!("limits.{field}"), "expected a size above 0, or \"none\"".into())),
                    Ok(n) => Ok(Some(n)),
                    Err(e) => Err((format!("limits.{field}"), format!("{e} (or \"none\" for no limit)"))),
                },
            }
        };
        let count = |v: Option<u64>, default: u64| match v {
            None => Some(default),
            Some(0) => None,
            Some(n) => Some(n),
        };
        Ok(Limits {
            memory: size("memory", &self.memory, Self::MEMORY_DEFAULT)?,
            processes: count(self.processes, Self::PROCESSES_DEFAULT),
            unpack_size: size("unpack-size", &self.unpack_size, Self::UNPACK_SIZE_DEFAULT)?,
            unpack_ratio: count(self.unpack_ratio, Self::UNPACK_RATIO_DEFAULT),
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        LimitsSection::default().resolve().expect("defaults are valid")
    }
}

/// `[cache]`: the policy farm applies to the store's build products (step
/// outputs, toolchain roots, dependency trees, source snapshots, the action
/// cache) after each successful build and on `farm cache gc`. Sizes as in
/// spec/sizes.md, durations as `7d`, `12h`; "none" turns one limit off.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CacheSection {
    /// Bytes of build products above which the least recently used go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
    /// Build products and action-cache rows unused for this long go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// The `[cache]` policy with defaults applied. `None` means "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub max_size: Option<u64>,
    pub ttl: Option<std::time::Duration>,
}

impl CacheSection {
    /// 5 GiB of build products: several variants of a large app's outputs
    /// and toolchains, small beside the fetched artifacts the lock pins.
    pub const MAX_SIZE_DEFAULT: u64 = 5 << 30;
    /// A week: a project built on weekdays keeps its cache over a weekend.
    pub const TTL_DEFAULT: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

    fn is_unset(&self) -> bool {
        self.max_size.is_none() && self.ttl.is_none()
    }

    /// The effective policy; errors name `cache.<field>` and what was found.
    pub fn resolve(&self) -> Result<CachePolicy, (String, String)> {
        let max_size = match self.max_size.as_deref().map(str::trim) {
            None => Some(Self::MAX_SIZE_DEFAULT),
            Some("none") => None,
            Some(s) => Some(
                farm_formats::size::parse_size(s)
                    .map_err(|e| ("cache.max-size".to_string(), format!("{e} (or \"none\" for no limit)")))?,
            ),
        };
        let ttl = match self.ttl.as_deref().map(str::trim) {
            None => Some(Self::TTL_DEFAULT),
            Some("none") => None,
            Some(s) => match farm_formats::duration::parse_duration(s) {
                Ok(d) if d.is_zero() => {
                    return Err((
                        "cache.ttl".into(),
                        format!("found `{s}`; expected a duration above 0, or \"none\" for no limit"),
                    ))
                }
                Ok(d) => Some(d),
                Err(e) => return Err(("cache.ttl".into(), format!("{e} (or \"none\" for no limit)"))),
            },
        };
        Ok(CachePolicy { max_size, ttl })
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        CacheSection::default().resolve().expect("defaults are valid")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}\nhint: run farm in a directory with a farm.toml, or pass --project DIR")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

/// A loaded project: its root directory and parsed farm.toml.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub config: Config,
}

impl Project {
    pub fn load(root: &Path) -> Result<Project, ConfigError> {
        let path = root.join(CONFIG_FILE);
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config = parse(&shown, &text)?;
        validate(&shown, &config)?;
        Ok(Project {
            root: root.to_path_buf(),
            config,
        })
    }

    /// `[limits]` with defaults applied (validated when farm.toml was loaded).
    pub fn limits(&self) -> Limits {
        self.config.limits.resolve().unwrap_or_default()
    }

    /// `[cache]` with defaults applied (validated when farm.toml was loaded).
    pub fn cache_policy(&self) -> CachePolicy {
        self.config.cache.resolve().unwrap_or_default()
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join(farm_lockfiles::lock::LOCK_FILE)
    }

    /// Where the frontend's JS lockfile is: its own directory's, or that of
    /// the workspace root above it whose workspaces include it (npm, pnpm,
    /// yarn and bun decide the same way; spec/lockfiles.md). `None` without
    /// a `[frontend]`; an error when the frontend has no lockfile at all.
    pub fn js_lock(&self) -> anyhow::Result<Option<farm_lockread::js::JsLockLocation>> {
        let Some(f) = &self.config.frontend else {
            return Ok(None);
        };
        match farm_lockread::js::detect_js_lock(&self.root.join(&f.path), &self.root)? {
            Some(loc) => Ok(Some(loc)),
            None => anyhow::bail!(
                "{}: frontend.path has no JS lockfile (package-lock.json, npm-shrinkwrap.json, pnpm-lock.yaml, yarn.lock or bun.lock), nor does a workspace root above it that lists it\nhint: run your package manager's install there (npm install, pnpm install, yarn install or bun install) and commit the lockfile",
                self.root.join(&f.path).display()
            ),
        }
    }

    /// The frontend's JS lockfile ([`Project::js_lock`]), project-relative:
    /// the key it has in the lock's `[inputs]`.
    pub fn package_lock(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(self.js_lock()?.map(|loc| self.relative(&loc.lockfile)))
    }

    /// `path` (below the project root) relative to the project root.
    pub fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root).unwrap_or(path).to_path_buf()
    }

    /// Where the backend's Python dependencies are pinned: `lockfile`, else
    /// `requirements`, else a detected Python lockfile, else
    /// `requirements.txt` (spec/farm-toml.md, `[backend]`).
    pub fn python_deps(&self) -> Option<PythonDeps> {
        let b = self.config.backend.as_ref()?;
        if let Some(l) = &b.lockfile {
            return Some(PythonDeps::Lockfile(l.clone()));
        }
        if let Some(r) = &b.requirements {
            return Some(PythonDeps::Requirements(b.path.join(r)));
        }
        Some(match python_lockfile_in(&self.root, &b.path) {
            Some(l) => PythonDeps::Lockfile(l),
            None => PythonDeps::Requirements(b.path.join("requirements.txt")),
        })
    }

    /// The backend's requirements file, project-relative, when its
    /// dependencies are pinned by one (not by a Python lockfile).
    pub fn requirements(&self) -> Option<PathBuf> {
        match self.python_deps()? {
            PythonDeps::Requirements(r) => Some(r),
            PythonDeps::Lockfile(_) => None,
        }
    }

    /// The backend's Python lockfile, project-relative, when it has one.
    pub fn python_lockfile(&self) -> Option<PathBuf> {
        match self.python_deps()? {
            PythonDeps::Lockfile(l) => Some(l),
            PythonDeps::Requirements(_) => None,
        }
    }

    /// SOURCE_DATE_EPOCH: farm.toml, else the last commit's time, else 1980-01-01.
    pub fn source_date_epoch(&self) -> u64 {
        if let Some(e) = self.config.project.source_date_epoch {
            return e;
        }
        crate::git::commit_time(&self.root).unwrap_or(FALLBACK_SOURCE_DATE_EPOCH)
    }

    /// The packages the Debian base is resolved from, each with its role:
    /// farm's minimal base, the extra packages, Python's interpreter, and
    /// libfaketime, which `farm check` preloads to move the clock.
    pub fn debian_roots(&self) -> Vec<(String, String)> {
        let c = &self.config;
        let mut roots: Vec<(String, String)> = farm_lockfiles::debian::default_base_roots()
            .into_iter()
            .map(|p| (p, "base".to_string()))
            .collect();
        roots.extend(
            c.toolchains
                .debian
                .packages
                .iter()
                .map(|p| (p.clone(), "base".to_string())),
        );
        if let Some(p) = &c.toolchains.python {
            roots.extend(
                farm_lockfiles::debian::python_roots(&p.version)
                    .into_iter()
                    .map(|r| (r, "python".to_string())),
            );
        }
        roots.push(("libfaketime".to_string(), "check".to_string()));
        roots
    }

    /// Digest of each lock-relevant farm.toml section, keyed `farm.toml#<section>`.
    /// A change in one section marks only what depends on it stale.
    pub fn lock_section_digests(&self) -> BTreeMap<String, farm_lockfiles::Integrity> {
        let c = &self.config;
        let mut out = BTreeMap::new();
        let mut put = |section: &str, value: serde_json::Value| {
            // `json!` inserts keys in the order written once serde_json's
            // `preserve_order` is on; canonical JSON keeps these digests (and
            // so every existing farm.lock) independent of that.
            let bytes = farm_formats::canonical_json::to_vec(&value).expect("JSON values serialise");
            out.insert(
                format!("farm.toml#{section}"),
                farm_lockfiles::integrity::sha256_of(&bytes),
            );
        };
        if let Some(n) = &c.toolchains.node {
            put(
                "toolchains.node",
                serde_json::json!({"version": n.version, "npm": n.npm}),
            );
        }
        // The Debian closure depends on the Python version too (python3.X roots).
        put(
            "toolchains.debian",
            serde_json::json!({
                "suite": c.toolchains.debian.suite,
                "architecture": c.toolchains.debian.architecture,
                "components": c.toolchains.debian.components,
                "packages": c.toolchains.debian.packages,
                "exclude": c.toolchains.debian.exclude,
                "python": c.toolchains.python.as_ref().map(|p| &p.version),
                // farm's own defaults are inputs too: a new farm with other defaults re-resolves.
                "roots": self.debian_roots(),
            }),
        );
        if let Some(p) = &c.toolchains.python {
            put(
                "toolchains.python",
                serde_json::json!({"version": p.version, "pip": p.pip}),
            );
        }
        if let Some(o) = &c.toolchains.ollama {
            put(
                "toolchains.ollama",
                serde_json::json!({"version": o.version, "url": o.url, "sha256": o.sha256}),
            );
        }
        if let Some(m) = &c.models {
            let mut models = m.models.clone();
            models.sort();
            put("models", serde_json::json!({"models": models}));
        }
        if let Some(mongo) = &c.deploy.mongodb {
            if c.deploy.compose || c.deploy.kubernetes {
                put("deploy.mongodb", serde_json::json!({"mongodb": mongo}));
            }
        }
        out
    }
}

/// Parses farm.toml text; errors carry file:line:column.
pub fn parse(path: &str, text: &str) -> Result<Config, ConfigError> {
    toml::from_str::<Config>(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError::Syntax {
            path: path.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

fn validate(path: &str, c: &Config) -> Result<(), ConfigError> {
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        path: path.into(),
        field: field.into(),
        message,
    };
    validate_steps(c).map_err(|(field, message)| invalid(&field, message))?;
    c.images
        .validate()
        .map_err(|(field, message)| invalid(&field, message))?;
    c.limits
        .resolve()
        .map_err(|(field, message)| invalid(&field, message))?;
    c.cache.resolve().map_err(|(field, message)| invalid(&field, message))?;
    for (name, e) in &c.env {
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err(invalid(
                &format!("env.{name}"),
                "expected a name of letters, digits, - and _".into(),
            ));
        }
        for k in e.vars.keys() {
            if !is_build_var_name(k) {
                return Err(invalid(&format!("env.{name}.vars.{k}"), BUILD_VAR_NAME.into()));
            }
        }
        if e.frontend.is_some() && c.frontend.is_none() {
            return Err(invalid(
                &format!("env.{name}.frontend"),
                "overrides a [frontend] that farm.toml does not have".into(),
            ));
        }
        if e.backend.is_some() && c.backend.is_none() {
            return Err(invalid(
                &format!("env.{name}.backend"),
                "overrides a [backend] that farm.toml does not have".into(),
            ));
        }
    }
    if c.project.name.is_empty() {
        return Err(invalid("project.name", "expected a non-empty name".into()));
    }
    if let Some(p) = &c.toolchains.python {
        let ok = p.version.split('.').count() == 2 && p.version.split('.').all(|x| x.parse::<u32>().is_ok());
        if !ok {
            return Err(invalid(
                "toolchains.python.version",
                format!("expected MAJOR.MINOR such as \"3.11\", found {:?}", p.version),
            ));
        }
    }
    if let Some(n) = &c.toolchains.node {
        let v = n.version.trim().trim_start_matches('v');
        let v = v.strip_suffix(".x").unwrap_or(v);
        if v.split('.').count() > 3 || !v.split('.').all(|x| x.parse::<u32>().is_ok()) {
            return Err(invalid(
                "toolchains.node.version",
                format!(
                    "expected an exact version such as \"22.19.0\", or a major such as \"24\" (the newest release, pinned by `farm lock`), found {:?}",
                    n.version
                ),
            ));
        }
    }
    if let Some(b) = &c.backend {
        let ok = b
            .app
            .split_once(':')
            .is_some_and(|(m, a)| !m.is_empty() && !a.is_empty());
        if !ok {
            return Err(invalid(
                "backend.app",
                format!(
                    "expected `module:attribute` such as \"app.main:app\", found {:?}",
                    b.app
                ),
            ));
        }
        for (field, names) in [("backend.vars", &b.vars), ("backend.secrets", &b.secrets)] {
            if let Some(bad) = names.iter().find(|n| !is_build_var_name(n)) {
                return Err(invalid(field, format!("{BUILD_VAR_NAME}, found {bad:?}")));
            }
        }
        if b.lockfile.is_some() && b.requirements.is_some() {
            return Err(invalid(
                "backend.lockfile",
                "set together with backend.requirements; the backend's dependencies come from one of them\nhint: keep `lockfile` for a uv.lock, poetry.lock or pylock.toml, `requirements` for a requirements file".into(),
            ));
        }
        if let Some(l) = &b.lockfile {
            let name = l.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let known = matches!(name, "uv.lock" | "poetry.lock" | "pylock.toml")
                || (name.starts_with("pylock.") && name.ends_with(".toml"));
            if !known {
                return Err(invalid(
                    "backend.lockfile",
                    format!(
                        "expected a uv.lock, poetry.lock or pylock.toml (pylock.<name>.toml), found {:?}",
                        l.display()
                    ),
                ));
            }
        }
        // A requirements file has no groups or extras to choose from.
        if b.requirements.is_some() && !(b.groups.is_empty() && b.extras.is_empty()) {
            let field = if b.groups.is_empty() {
                "backend.extras"
            } else {
                "backend.groups"
            };
            return Err(invalid(
                field,
                "chooses from a Python lockfile, but the backend's dependencies come from backend.requirements".into(),
            ));
        }
        if c.toolchains.python.is_none() {
            return Err(invalid(
                "toolchains.python",
                "the backend needs a Python toolchain; add [toolchains.python] version = \"3.11\"".into(),
            ));
        }
    }
    if c.frontend.is_some() && c.toolchains.node.is_none() {
        return Err(invalid(
            "toolchains.node",
            "the frontend needs a Node toolchain; add [toolchains.node] version = \"22.19.0\"".into(),
        ));
    }
    for (field, p) in [
        ("frontend.path", c.frontend.as_ref().map(|f| &f.path)),
        ("backend.path", c.backend.as_ref().map(|b| &b.path)),
        ("backend.lockfile", c.backend.as_ref().and_then(|b| b.lockfile.as_ref())),
        ("models.config", c.models.as_ref().and_then(|m| m.config.as_ref())),
    ] {
        if let Some(p) = p {
            if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(invalid(
                    field,
                    format!("expected a path inside the project, found {:?}", p.display()),
                ));
            }
        }
    }
    if let Some(s) = &c.toolchains.ollama.as_ref().and_then(|o| o.sha256.clone()) {
        if farm_lockfiles::Integrity::parse(s).is_err() || !s.starts_with("sha256:") {
            return Err(invalid(
                "toolchains.ollama.sha256",
                format!("expected \"sha256:<64 hex digits>\", found {s:?}"),
            ));
        }
    }
    if let Some(m) = &c.models {
        for model in &m.models {
            if model.is_empty() || model.contains(char::is_whitespace) {
                return Err(invalid(
                    "models.models",
                    format!("expected model references such as \"llama3.2:1b\", found {model:?}"),
                ));
            }
        }
        if let Some(d) = &m.default {
            if !m.models.contains(d) {
                return Err(invalid(
                    "models.default",
                    format!("{d:?} is not one of models.models {:?}", m.models),
                ));
            }
        }
    }
    Ok(())
}

impl Config {
    /// The configuration as environment `name` sees it. `production` need not
    /// be declared; any other name must be.
    pub fn for_env(&self, name: &str) -> Result<(Config, BTreeMap<String, String>), String> {
        let Some(e) = self.env.get(name) else {
            if name == DEFAULT_ENV {
                return Ok((self.clone(), BTreeMap::new()));
            }
            let known: Vec<&str> = self.env.keys().map(String::as_str).collect();
            return Err(format!(
                "--env {name}: farm.toml has no [env.{name}] (declared: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        let mut c = self.clone();
        if let (Some(f), Some(o)) = (c.frontend.as_mut(), &e.frontend) {
            if let Some(s) = &o.build_script {
                f.build_script = s.clone();
            }
            if let Some(d) = &o.output_dir {
                f.output_dir = d.clone();
            }
        }
        if let (Some(b), Some(o)) = (c.backend.as_mut(), &e.backend) {
            if let Some(a) = &o.app {
                b.app = a.clone();
            }
        }
        // `${VAR}` in a value comes from the caller's environment, now.
        let mut vars = BTreeMap::new();
        for (k, v) in &e.vars {
            let value = expand_env(&format!("env.{name}.vars.{k}"), v).map_err(|m| format!("{CONFIG_FILE}: {m}"))?;
            vars.insert(k.clone(), value);
        }
        Ok((c, vars))
    }
}

/// Names, references and the absence of cycles among `[[steps]]`.
fn validate_steps(c: &Config) -> Result<(), (String, String)> {
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in c.steps.iter().enumerate() {
        let field = format!("steps[{i}]");
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err((
                format!("{field}.name"),
                format!("expected letters, digits, - and _, found {:?}", s.name),
            ));
        }
        if crate::StepId::is_builtin(&s.name) {
            return Err((
                format!("{field}.name"),
                format!("{:?} is a built-in step's name", s.name),
            ));
        }
        if !names.insert(s.name.clone()) {
            return Err((format!("{field}.name"), format!("a second step named {:?}", s.name)));
        }
        if s.network {
            return Err((
                format!("steps.{}.network", s.name),
                "build steps never have network; only `farm fetch` does (pin what you need in farm.lock)".into(),
            ));
        }
        for o in &s.outputs {
            let p = Path::new(o);
            // Checked against $out by the step's script; a path leaving $out would be checked elsewhere.
            if o.is_empty() || p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err((
                    format!("steps.{}.outputs", s.name),
                    format!("expected a relative path inside the step's $out (no leading /, no ..), found {o:?}"),
                ));
            }
        }
        if let Some(p) = &s.image_path {
            if !p.starts_with('/') {
                return Err((
                    format!("steps.{}.image-path", s.name),
                    format!("expected an absolute path, found {p:?}"),
                ));
            }
        }
    }
    let custom: std::collections::BTreeMap<&str, &CustomStep> = c.steps.iter().map(|s| (s.name.as_str(), s)).collect();
    for s in &c.steps {
        for input in &s.inputs {
            let field = format!("steps.{}.inputs", s.name);
            match input.split_once(':') {
                Some(("step", dep)) => {
                    let builtin = match crate::StepId::parse(dep) {
                        crate::StepId::Frontend => c.frontend.is_some(),
                        crate::StepId::OptimizeImages => c.frontend.as_ref().is_some_and(|f| f.optimize_images),
                        crate::StepId::Backend => c.backend.is_some(),
                        crate::StepId::Models => c.models.is_some(),
                        _ => false,
                    };
                    if !builtin && !custom.contains_key(dep) {
                        return Err((
                            field,
                            format!(
                                "step {:?} takes the output of {dep:?}, which is no step of this project",
                                s.name
                            ),
                        ));
                    }
                }
                Some(("path", rel)) => {
                    let p = Path::new(rel);
                    if rel.is_empty()
                        || p.is_absolute()
                        || p.components().any(|c| matches!(c, std::path::Component::ParentDir))
                    {
                        return Err((field, format!("expected a path inside the project, found {rel:?}")));
                    }
                }
                Some(("toolchain", "node" | "python")) => {}
                _ => {
                    return Err((
                        field,
                        format!("expected step:<name>, path:<dir> or toolchain:<node|python>, found {input:?}"),
                    ));
                }
            }
        }
    }
    // A cycle among custom steps, named step by step.
    fn visit<'a>(
        n: &'a str,
        custom: &std::collections::BTreeMap<&'a str, &'a CustomStep>,
        stack: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Result<(), String> {
        if done.contains(n) {
            return Ok(());
        }
        if let Some(i) = stack.iter().position(|s| *s == n) {
            let mut cycle: Vec<&str> = stack[i..].to_vec();
            cycle.push(n);
            return Err(cycle.join(" -> "));
        }
        stack.push(n);
        for input in &custom[n].inputs {
            if let Some(("step", dep)) = input.split_once(':') {
                if custom.contains_key(dep) {
                    visit(dep, custom, stack, done)?;
                }
            }
        }
        stack.pop();
        done.insert(n);
        Ok(())
    }
    let mut done = std::collections::BTreeSet::new();
    for n in custom.keys() {
        visit(n, &custom, &mut Vec::new(), &mut done)
            .map_err(|cycle| ("steps".to_string(), format!("the steps form a cycle: {cycle}")))?;
    }
    Ok(())
}

/// What [`is_build_var_name`] accepts, for messages.
pub const BUILD_VAR_NAME: &str =
    "expected an environment variable name (letters, digits, _; not starting with a digit or FARM_)";

/// A name a build-time variable or secret may have: an environment
/// variable's, outside farm's own `FARM_` namespace.
pub fn is_build_var_name(k: &str) -> bool {
    !k.is_empty()
        && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !k.starts_with(|ch: char| ch.is_ascii_digit())
        && !k.starts_with("FARM_")
}

/// Replaces `${VAR}` and `${VAR:-default}` from the caller's environment;
/// an unset variable without a default is an error naming `field` and it.
pub fn expand_env(field: &str, value: &str) -> Result<String, String> {
    expand_with(field, value, |name| std::env::var(name).ok())
}

/// [`expand_env`] with the variables from `lookup`. As in the shell, `:-`
/// also replaces a variable set to the empty string.
pub fn expand_with(field: &str, value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{field}: unclosed `${{` in {value:?}"))?;
        let (name, default) = match after[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&after[..end], None),
        };
        if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            return Err(format!(
                "{field}: expected `${{NAME}}` or `${{NAME:-default}}` with NAME of letters, digits and _, found `${{{}}}`",
                &after[..end]
            ));
        }
        let v = match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => d.to_string(),
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => {
                return Err(format!(
                    "{field}: environment variable {name} is not set (farm.toml uses ${{{name}}})\n\
                     hint: set {name} in the environment farm runs in, or give a default: ${{{name}:-VALUE}}"
                ))
            }
        };
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[project]\nname = \"x\"\nversion = \"1\"\n";

    #[test]
    fn unknown_key_names_line_column_and_expected_keys() {
        let text = format!("{MINIMAL}\n[frontend]\npath = \"web\"\nbulid-script = \"build\"\n");
        let err = parse("farm.toml", &text).unwrap_err().to_string();
        assert!(err.starts_with("farm.toml:7:1: unknown field `bulid-script`"), "{err}");
        assert!(err.contains("build-script"), "the expected keys are listed: {err}");
    }

    #[test]
    fn wrong_type_names_position_and_expected_type() {
        let text = "[project]\nname = \"x\"\nversion = \"1\"\nsource-date-epoch = \"yesterday\"\n";
        let err = parse("farm.toml", text).unwrap_err().to_string();
        assert!(err.starts_with("farm.toml:4:21:"), "{err}");
        assert!(err.contains("u64") || err.contains("integer"), "{err}");
    }

    /// Proves where the backend's wheels come from: `lockfile`, else
    /// `requirements`, else a detected Python lockfile (in the backend, or
    /// a uv.lock above it), else requirements.txt; and that `lockfile` with
    /// `requirements`, an unknown lockfile name and groups with a
    /// requirements file are refused naming the field.
    #[test]
    fn backend_dependencies_come_from_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("apps/api")).unwrap();
        let py = "[toolchains.python]\nversion = \"3.11\"\n";
        let load = |backend: &str| {
            std::fs::write(
                root.join(CONFIG_FILE),
                format!("{MINIMAL}{py}[backend]\npath = \"apps/api\"\napp = \"m:app\"\n{backend}"),
            )
            .unwrap();
            Project::load(root)
        };
        let deps = |backend: &str| load(backend).unwrap().python_deps().unwrap();
        assert_eq!(deps(""), PythonDeps::Requirements("apps/api/requirements.txt".into()));
        std::fs::write(root.join("uv.lock"), "version = 1\n").unwrap();
        assert_eq!(
            deps(""),
            PythonDeps::Lockfile("uv.lock".into()),
            "a uv workspace root above"
        );
        std::fs::write(root.join("apps/api/poetry.lock"), "").unwrap();
        assert_eq!(
            deps(""),
            PythonDeps::Lockfile("apps/api/poetry.lock".into()),
            "the backend's own first"
        );
        assert_eq!(
            deps("requirements = \"req.txt\"\n"),
            PythonDeps::Requirements("apps/api/req.txt".into())
        );
        assert_eq!(
            deps("lockfile = \"uv.lock\"\ngroups = [\"dev\"]\n"),
            PythonDeps::Lockfile("uv.lock".into())
        );
        for (backend, field, says) in [
            (
                "lockfile = \"uv.lock\"\nrequirements = \"r.txt\"\n",
                "backend.lockfile",
                "set together with backend.requirements",
            ),
            (
                "lockfile = \"Pipfile.lock\"\n",
                "backend.lockfile",
                "expected a uv.lock, poetry.lock or pylock.toml",
            ),
            ("lockfile = \"../uv.lock\"\n", "backend.lockfile", "inside the project"),
            (
                "requirements = \"r.txt\"\ngroups = [\"dev\"]\n",
                "backend.groups",
                "chooses from a Python lockfile",
            ),
            (
                "requirements = \"r.txt\"\nextras = [\"pg\"]\n",
                "backend.extras",
                "chooses from a Python lockfile",
            ),
        ] {
            let err = load(backend).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(says), "{backend}: {err}");
        }
    }

    /// `images.serve-frontend` takes "auto", true or false and nothing else;
    /// `images.api-prefixes` entries must be plain path prefixes.
    #[test]
    fn images_serve_frontend_and_api_prefixes() {
        let c = parse("farm.toml", MINIMAL).unwrap();
        assert_eq!(c.images.serve_frontend, ServeFrontend::Auto);
        assert!(
            !serde_json::to_string(&c.images).unwrap().contains("serve"),
            "the default serializes as before"
        );
        for (v, want) in [
            ("\"auto\"", ServeFrontend::Auto),
            ("true", ServeFrontend::On),
            ("false", ServeFrontend::Off),
        ] {
            let c = parse("farm.toml", &format!("{MINIMAL}[images]\nserve-frontend = {v}\n")).unwrap();
            assert_eq!(c.images.serve_frontend, want, "{v}");
        }
        let err = parse("farm.toml", &format!("{MINIMAL}[images]\nserve-frontend = \"yes\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"auto\", true or false"), "{err}");
        let ok = parse(
            "farm.toml",
            &format!("{MINIMAL}[images]\napi-prefixes = [\"/api\", \"/openapi.json\"]\n"),
        )
        .unwrap();
        validate("farm.toml", &ok).unwrap();
        assert_eq!(ok.images.api_prefixes.unwrap(), ["/api", "/openapi.json"]);
        for bad in ["api", "/", "/api/", "/a/../b", "/a b", "/a?x"] {
            let c = parse(
                "farm.toml",
                &format!("{MINIMAL}[images]\napi-prefixes = [\"/x\", {bad:?}]\n"),
            )
            .unwrap();
            let err = validate("farm.toml", &c).unwrap_err().to_string();
            assert!(
                err.contains("images.api-prefixes[1]") && err.contains("expected a path prefix"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn defaults_fill_the_debian_base_and_npm() {
        let text = format!("{MINIMAL}[toolchains.node]\nversion = \"22.19.0\"\n");
        let c = parse("farm.toml", &text).unwrap();
        assert_eq!(c.toolchains.debian.suite, "bookworm");
        assert_eq!(c.toolchains.node.unwrap().npm, "10");
    }

    #[test]
    fn validation_rejects_a_bad_asgi_path_and_escaping_paths() {
        let text =
            format!("{MINIMAL}[toolchains.python]\nversion = \"3.11\"\n[backend]\npath = \"../api\"\napp = \"main\"\n");
        let c = parse("farm.toml", &text).unwrap();
        let err = validate("farm.toml", &c).unwrap_err().to_string();
        assert!(err.contains("backend.app") && err.contains("module:attribute"), "{err}");
    }

    #[test]
    fn env_expansion_names_the_missing_variable() {
        std::env::set_var("FARM_TEST_EXPAND_A", "http://127.0.0.1:1");
        assert_eq!(
            expand_env("models.registry", "${FARM_TEST_EXPAND_A}/x").unwrap(),
            "http://127.0.0.1:1/x"
        );
        let err = expand_env("models.registry", "${FARM_TEST_EXPAND_MISSING}").unwrap_err();
        assert!(err.contains("FARM_TEST_EXPAND_MISSING"), "{err}");
    }

    /// `${VAR:-default}` takes the default when VAR is unset or empty, a
    /// malformed reference is refused, and `[env.*.vars]` values expand at
    /// `for_env`, an unset one naming the field and the variable.
    #[test]
    fn env_vars_expand_with_defaults_and_name_the_field() {
        let env = |n: &str| match n {
            "SET" => Some("v".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            expand_with("f", "a${SET}b${UNSET:-d}c${EMPTY:-e}", env).unwrap(),
            "avbdce"
        );
        assert_eq!(expand_with("f", "${SET:-d}", env).unwrap(), "v");
        assert!(expand_with("f", "${A B}", env).unwrap_err().contains("NAME"));

        std::env::set_var("FARM_TEST_EXPAND_TITLE", "Demo");
        let text = format!(
            "{MINIMAL}[env.staging.vars]\nTITLE = \"${{FARM_TEST_EXPAND_TITLE}} app\"\n\
             [env.broken.vars]\nKEY = \"${{FARM_TEST_EXPAND_UNSET_9}}\"\n"
        );
        let c = parse("farm.toml", &text).unwrap();
        validate("farm.toml", &c).unwrap();
        assert_eq!(c.for_env("staging").unwrap().1["TITLE"], "Demo app");
        let err = c.for_env("broken").unwrap_err();
        assert!(
            err.contains("farm.toml: env.broken.vars.KEY") && err.contains("FARM_TEST_EXPAND_UNSET_9"),
            "{err}"
        );
    }

    /// backend.vars and backend.secrets hold variable names outside FARM_.
    #[test]
    fn backend_vars_and_secrets_must_be_variable_names() {
        let base =
            format!("{MINIMAL}[toolchains.python]\nversion = \"3.11\"\n[backend]\npath = \"api\"\napp = \"m:app\"\n");
        let ok = format!("{base}vars = [\"PROJECT_NAME\"]\nsecrets = [\"SECRET_KEY\"]\n");
        let c = parse("farm.toml", &ok).unwrap();
        validate("farm.toml", &c).unwrap();
        assert_eq!(c.backend.unwrap().secrets, ["SECRET_KEY"]);
        for (field, bad) in [
            ("backend.secrets", "FARM_X"),
            ("backend.vars", "1X"),
            ("backend.secrets", "a/b"),
        ] {
            let key = field.rsplit('.').next().unwrap();
            let text = format!("{base}{key} = [{bad:?}]\n");
            let err = validate("farm.toml", &parse("farm.toml", &text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(field) && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn section_digests_change_only_with_their_section() {
        let a = format!("{MINIMAL}[toolchains.node]\nversion = \"22.19.0\"\n[toolchains.python]\nversion = \"3.11\"\n");
        let b = a.replace("3.11", "3.12");
        let pa = Project {
            root: ".".into(),
            config: parse("a", &a).unwrap(),
        };
        let pb = Project {
            root: ".".into(),
            config: parse("b", &b).unwrap(),
        };
        let (da, db) = (pa.lock_section_digests(), pb.lock_section_digests());
        assert_eq!(da["farm.toml#toolchains.node"], db["farm.toml#toolchains.node"]);
        assert_ne!(da["farm.toml#toolchains.python"], db["farm.toml#toolchains.python"]);
        assert_ne!(
            da["farm.toml#toolchains.debian"], db["farm.toml#toolchains.debian"],
            "python roots are part of the closure"
        );
    }

    #[test]
    fn env_variables_and_steps_are_validated() {
        let bad_var = format!("{MINIMAL}[env.staging.vars]\nFARM_X = \"1\"\n");
        let c = parse("farm.toml", &bad_var).unwrap();
        let err = validate("farm.toml", &c).unwrap_err().to_string();
        assert!(err.contains("env.staging.vars.FARM_X"), "{err}");

        let cycle = format!(
            "{MINIMAL}[[steps]]\nname = \"a\"\ncommand = \"true\"\ninputs = [\"step:b\"]\n[[steps]]\nname = \"b\"\ncommand = \"true\"\ninputs = [\"step:a\"]\n"
        );
        let c = parse("farm.toml", &cycle).unwrap();
        let err = validate("farm.toml", &c).unwrap_err().to_string();
        assert!(err.contains("a -> b -> a"), "{err}");

        let builtin = format!("{MINIMAL}[[steps]]\nname = \"frontend\"\ncommand = \"true\"\n");
        let c = parse("farm.toml", &builtin).unwrap();
        assert!(validate("farm.toml", &c).unwrap_err().to_string().contains("built-in"));
    }

    /// A step's outputs must stay inside its $out: absolute paths, `..` and
    /// empty paths are refused naming the field and the value.
    #[test]
    fn step_outputs_must_stay_inside_out() {
        for bad in ["../../x", "/etc/passwd", "", "a/../../b"] {
            let text = format!("{MINIMAL}[[steps]]\nname = \"s\"\ncommand = \"true\"\noutputs = [\"ok\", {bad:?}]\n");
            let c = parse("farm.toml", &text).unwrap();
            let err = validate("farm.toml", &c).unwrap_err().to_string();
            assert!(
                err.contains("steps.s.outputs") && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
        let good = format!("{MINIMAL}[[steps]]\nname = \"s\"\ncommand = \"true\"\noutputs = [\"a/b\", \"./c\"]\n");
        validate("farm.toml", &parse("farm.toml", &good).unwrap()).unwrap();
    }

    /// farm.lock records these digests; a change here would mark every
    /// existing lock stale. They hash `{"npm":"10","version":"22.19.0"}` and
    /// `{"pip":"24.3.1","version":"3.11"}`: canonical JSON, sorted keys.
    #[test]
    fn section_digests_are_pinned() {
        let text = format!(
            "{MINIMAL}[toolchains.node]\nversion = \"22.19.0\"\nnpm = \"10\"\n\
             [toolchains.python]\nversion = \"3.11\"\npip = \"24.3.1\"\n"
        );
        let p = Project {
            root: ".".into(),
            config: parse("farm.toml", &text).unwrap(),
        };
        let d = p.lock_section_digests();
        assert_eq!(
            d["farm.toml#toolchains.node"].to_string(),
            "sha256:66ffab0f3483112331d48dd88056dda620a67dc071cd288684219df64c857d9f"
        );
        assert_eq!(
            d["farm.toml#toolchains.python"].to_string(),
            "sha256:143cce95613c1c311add3cbaf9bbf10e3b7d1da0e2443cc0bb0e4e63466b65d8"
        );
    }
}
