//! The `images` target: the app image (Debian runtime + Python, the
//! backend's site-packages and code, the frontend's files — served by the
//! app itself or by farm's front server in front of it)
//! and, when the project has models and an Ollama toolchain, the Ollama
//! image (the Ollama release + the models directory). Both are assembled by
//! farm-images from store entries: no container engine, no Dockerfile.
//! Also the deploy files, which reference every image by digest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use farm_images::{Compression, ImageSpec, LayerContent, LayerSpec};
use farm_store::{Store, StoreEntry};

use farm_project::config::{Config, ImagesSection, ServeFrontend};

use crate::step::StepId;

/// uid/gid the app runs as in its image.
pub const APP_UID: u32 = 1000;
pub const APP_PORT: u16 = 8000;
pub const OLLAMA_PORT: u16 = 11434;

/// farm's front server (spec/images.md "The app image and serving the
/// frontend"): a standard-library ASGI module the image runs in front of
/// the user's app.
const FRONT_SERVER_PY: &str = include_str!("front_server.py");
/// Its module name, underscored so that it does not shadow an app's module.
const FRONT_SERVER_MODULE: &str = "_farm_front";
/// Where it lives in the image (first on PYTHONPATH).
const FRONT_SERVER_DIR: &str = "/app/farm";
/// Where the frontend's files go in the app image.
const STATIC_DIR: &str = "/app/static";

/// `[images]` settings of the front server.
#[derive(Clone, Debug)]
pub struct FrontConfig {
    pub serve: ServeFrontend,
    pub api_prefixes: Option<Vec<String>>,
}

impl FrontConfig {
    pub fn from_config(images: &ImagesSection) -> FrontConfig {
        FrontConfig {
            serve: images.serve_frontend,
            api_prefixes: images.api_prefixes.clone(),
        }
    }
}

/// What the images step needs besides the other steps' outputs.
#[derive(Clone)]
pub struct ImagesPlan {
    pub project: String,
    pub version: String,
    pub image_name: String,
    pub python: Option<String>,
    pub asgi_app: Option<String>,
    pub runtime_root: StoreEntry,
    pub image_files: StoreEntry,
    pub ollama: Option<StoreEntry>,
    /// Custom steps whose output goes into the app image: (step, absolute path).
    pub step_layers: Vec<(String, String)>,
    pub compression: Compression,
    pub created: u64,
    pub revision: Option<String>,
    pub layer_cache: PathBuf,
    pub front: FrontConfig,
}

impl ImagesPlan {
    pub fn key_parts(&self) -> Vec<String> {
        vec![
            format!("project={} {}", self.project, self.version),
            format!("name={}", self.image_name),
            format!("python={:?} app={:?}", self.python, self.asgi_app),
            format!("root={}", self.runtime_root.file_name()),
            format!("files={}", self.image_files.file_name()),
            format!("ollama={:?}", self.ollama.as_ref().map(|e| e.file_name())),
            format!("step-layers={:?}", self.step_layers),
            format!("compression={:?}", self.compression),
            format!("created={} revision={:?}", self.created, self.revision),
            format!(
                // v1: the decision rules of decide_front_server; bump when they change.
                "front-server-v1={:?} {:?} {}",
                self.front.serve,
                self.front.api_prefixes,
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(FRONT_SERVER_PY))
            ),
            // v2: gzip layers cut into independent 1 MiB blocks (new bytes).
            "images-v2".into(),
        ]
    }
}

/// /etc/passwd and /etc/group for the image's non-root user.
pub fn image_files(store: &Store) -> Result<StoreEntry> {
    store
        .build_entry("image-files", "image", |dir| {
            let etc = dir.join("etc");
            std::fs::create_dir_all(&etc)?;
            std::fs::write(
                etc.join("passwd"),
                format!("root:x:0:0:root:/root:/bin/sh\napp:x:{APP_UID}:{APP_UID}:app:/app:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
            )?;
            std::fs::write(etc.join("group"), format!("root:x:0:\napp:x:{APP_UID}:\nnogroup:x:65534:\n"))?;
            std::fs::create_dir_all(dir.join("tmp"))?;
            Ok(())
        })
        .context("composing the image's /etc files")
}

fn annotations(plan: &ImagesPlan) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(
        "org.opencontainers.image.created".into(),
        farm_formats::timestamp::rfc3339(plan.created),
    );
    a.insert("org.opencontainers.image.version".into(), plan.version.clone());
    a.insert(
        "org.opencontainers.image.source".into(),
        format!("farm:{}", plan.project),
    );
    a.insert("org.opencontainers.image.title".into(), plan.project.clone());
    if let Some(r) = &plan.revision {
        a.insert("org.opencontainers.image.revision".into(), r.clone());
    }
    a
}

/// Builds the images into `out` (`app/` and `ollama/` OCI layouts plus
/// `images.json`, the digests farm-manifest.json records).
pub fn build(plan: &ImagesPlan, out: &Path, deps: &crate::step::StepOutputs) -> Result<()> {
    let mut built = BTreeMap::new();
    let base = LayerSpec {
        name: "base".into(),
        contents: vec![
            LayerContent {
                source: plan.runtime_root.path.clone(),
                target: "/".into(),
                uid: 0,
                gid: 0,
            },
            LayerContent {
                source: plan.image_files.path.clone(),
                target: "/".into(),
                uid: 0,
                gid: 0,
            },
        ],
    };
    if let (Some(backend), Some(python), Some(app)) = (deps.get(&StepId::Backend), &plan.python, &plan.asgi_app) {
        let mut spec = ImageSpec::new(&plan.image_name, &plan.version, plan.created as i64);
        spec.compression = plan.compression;
        spec.annotations = annotations(plan);
        let content = |src: PathBuf, target: &str| LayerContent {
            source: src,
            target: target.into(),
            uid: 0,
            gid: 0,
        };
        spec.layers.push(base.clone());
        spec.layers.push(LayerSpec {
            name: "python-deps".into(),
            contents: vec![content(
                backend.path.join("backend/site-packages"),
                "/app/site-packages",
            )],
        });
        spec.layers.push(LayerSpec {
            name: "app".into(),
            contents: vec![content(backend.path.join("backend/app"), "/app/app")],
        });
        // The optimised frontend output when `[frontend] optimize-images` made one.
        let frontend = deps
            .get(&StepId::OptimizeImages)
            .or_else(|| deps.get(&StepId::Frontend));
        if let Some(front) = frontend {
            spec.layers.push(LayerSpec {
                name: "frontend".into(),
                contents: vec![content(front.path.clone(), STATIC_DIR)],
            });
        }
        let front_server = decide_front_server(&plan.front, &backend.path, app, frontend.is_some())?;
        // The module's directory must outlive build_image below.
        let mut front_dir = None;
        if front_server.is_some() {
            let tmp = front_dir.insert(tempfile::tempdir().context("a temporary directory for the front server")?);
            let dir = tmp.path().join("farm");
            std::fs::create_dir(&dir)?;
            std::fs::write(dir.join(format!("{FRONT_SERVER_MODULE}.py")), FRONT_SERVER_PY)?;
            spec.layers.push(LayerSpec {
                name: "front-server".into(),
                contents: vec![content(dir, FRONT_SERVER_DIR)],
            });
        }
        for (step, at) in &plan.step_layers {
            let e = deps
                .get(&StepId::Custom(step.clone()))
                .with_context(|| format!("the output of step {step}"))?;
            spec.layers.push(LayerSpec {
                name: format!("step-{step}"),
                contents: vec![content(e.path.clone(), at)],
            });
        }
        spec.config.user = Some(format!("{APP_UID}:{APP_UID}"));
        spec.config.working_dir = Some("/app/app".into());
        spec.config.env = vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "LANG=C.UTF-8".into(),
            "PYTHONPATH=/app/app:/app/site-packages".into(),
            "PYTHONDONTWRITEBYTECODE=1".into(),
            "PYTHONUNBUFFERED=1".into(),
            format!("FARM_STATIC_DIR={STATIC_DIR}"),
        ];
        let mut asgi = app.clone();
        if let Some(front) = &front_server {
            spec.config.env[2] = format!("PYTHONPATH={FRONT_SERVER_DIR}:/app/app:/app/site-packages");
            spec.config.env.extend([
                format!("FARM_ASGI_APP={app}"),
                format!("FARM_API_PREFIXES={}", front.api_prefixes.join(" ")),
                format!("FARM_SERVE_FRONTEND={}", front.mode),
            ]);
            asgi = format!("{FRONT_SERVER_MODULE}:app");
        }
        spec.config.exposed_ports = vec![format!("{APP_PORT}/tcp")];
        spec.config.entrypoint = vec![
            format!("/usr/bin/python{python}"),
            "-m".into(),
            "uvicorn".into(),
            asgi,
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            APP_PORT.to_string(),
        ];
        spec.config.labels = spec.annotations.clone();
        let image = farm_images::build_image(&spec, &out.join("app"), Some(&plan.layer_cache))
            .context("building the app image")?;
        built.insert("app".to_string(), image);
    }
    if let (Some(models), Some(ollama)) = (deps.get(&StepId::Models), &plan.ollama) {
        let mut spec = ImageSpec::new(
            format!("{}-ollama", plan.image_name),
            &plan.version,
            plan.created as i64,
        );
        spec.compression = plan.compression;
        spec.annotations = annotations(plan);
        spec.layers.push(base.clone());
        spec.layers.push(LayerSpec {
            name: "ollama".into(),
            contents: vec![LayerContent {
                source: ollama.path.clone(),
                target: "/usr".into(),
                uid: 0,
                gid: 0,
            }],
        });
        spec.layers.push(LayerSpec {
            name: "models".into(),
            contents: vec![LayerContent {
                source: models.path.clone(),
                target: "/models".into(),
                uid: 0,
                gid: 0,
            }],
        });
        spec.config.env = vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "OLLAMA_MODELS=/models".into(),
            format!("OLLAMA_HOST=0.0.0.0:{OLLAMA_PORT}"),
        ];
        spec.config.exposed_ports = vec![format!("{OLLAMA_PORT}/tcp")];
        spec.config.cmd = vec!["ollama".into(), "serve".into()];
        spec.config.labels = spec.annotations.clone();
        let image = farm_images::build_image(&spec, &out.join("ollama"), Some(&plan.layer_cache))
            .context("building the Ollama image")?;
        built.insert("ollama".to_string(), image);
    }
    let mut json = serde_json::to_string_pretty(&serde_json::to_value(&built)?)?;
    json.push('\n');
    std::fs::write(out.join("images.json"), json)?;
    Ok(())
}

/// The front server's settings in an app image that has it.
#[derive(Debug, PartialEq, Eq)]
struct FrontServer {
    api_prefixes: Vec<String>,
    /// `FARM_SERVE_FRONTEND`: `auto` (steps aside at run time when the app
    /// routes `/`) or `true`.
    mode: &'static str,
}

/// Whether the app image gets the front server: `serve-frontend = true`
/// always (it needs a frontend), `false` never, `auto` when there is a
/// frontend and the backend (its step output `backend`) serves none itself —
/// its OpenAPI document has no `/` and the top-level package of its ASGI
/// module (`app` of `app.main:app`; not its tests) never mentions
/// `FARM_STATIC_DIR`, farm's variable for apps that mount the frontend.
fn decide_front_server(
    cfg: &FrontConfig,
    backend: &Path,
    asgi_app: &str,
    frontend: bool,
) -> Result<Option<FrontServer>> {
    let mode = match cfg.serve {
        ServeFrontend::Off => return Ok(None),
        ServeFrontend::On if !frontend => anyhow::bail!(
            "farm.toml: images.serve-frontend = true needs the frontend in the build, found no [frontend] output\n\
             hint: add a [frontend] section, or set images.serve-frontend = \"auto\""
        ),
        ServeFrontend::On => "true",
        ServeFrontend::Auto if !frontend => return Ok(None),
        ServeFrontend::Auto => "auto",
    };
    // The backend step wrote these files: read them without following a link it may have planted.
    let dir = farm_hostfs::Beneath::open_dir(backend)?;
    let bytes = dir
        .read(Path::new("openapi.json"))
        .context("the backend step's openapi.json (the front server's API prefixes)")?;
    let api: serde_json::Value =
        serde_json::from_slice(&bytes).context("the backend step's openapi.json is not JSON")?;
    if mode == "auto" && (api["paths"].get("/").is_some() || package_reads_static_dir(backend, asgi_app)?) {
        return Ok(None);
    }
    let api_prefixes = match &cfg.api_prefixes {
        Some(p) => p.clone(),
        None => derived_api_prefixes(&api),
    };
    Ok(Some(FrontServer { api_prefixes, mode }))
}

/// `/<first segment>` of every OpenAPI path (`/api/notes` → `/api`),
/// skipping path parameters; `/api` when there is none.
fn derived_api_prefixes(api: &serde_json::Value) -> Vec<String> {
    let set: BTreeSet<String> = api["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.keys())
        .filter_map(|p| p.trim_start_matches('/').split('/').next())
        .filter(|first| !first.is_empty() && !first.contains('{'))
        .map(|first| format!("/{first}"))
        .collect();
    if set.is_empty() {
        vec!["/api".into()]
    } else {
        set.into_iter().collect()
    }
}

/// Whether the top-level package (or module) of `asgi_app` in the backend
/// step's output mentions `FARM_STATIC_DIR`.
fn package_reads_static_dir(backend: &Path, asgi_app: &str) -> Result<bool> {
    let top = asgi_app.split([':', '.']).next().unwrap_or_default();
    if top.is_empty() || top.contains('/') {
        return Ok(false);
    }
    let code = backend.join("backend/app");
    let module = code.join(format!("{top}.py"));
    if std::fs::symlink_metadata(&module).is_ok_and(|m| m.is_file()) {
        let text = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
        return Ok(mentions_static_dir(&text));
    }
    reads_static_dir(&code.join(top))
}

fn mentions_static_dir(text: &[u8]) -> bool {
    text.windows(b"FARM_STATIC_DIR".len()).any(|w| w == b"FARM_STATIC_DIR")
}

/// Whether any `.py` file under `dir` mentions `FARM_STATIC_DIR`
/// (symlinks are not followed).
fn reads_static_dir(dir: &Path) -> Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            if reads_static_dir(&path)? {
                return Ok(true);
            }
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "py") {
            let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            if mentions_static_dir(&text) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// An image's digest reference for deploy files: `[registry/]name@sha256:…`.
fn image_ref(registry: Option<&str>, name: &str, digest: &str) -> String {
    match registry {
        Some(r) => format!("{}/{name}@{digest}", r.trim_end_matches('/')),
        None => format!("{name}@{digest}"),
    }
}

/// Writes `docker-compose.yml` and `kubernetes/*.yaml` into `out`.
pub fn write_deploy(config: &Config, lock: &farm_lockfiles::Lock, images: &Path, out: &Path) -> Result<()> {
    let built: serde_json::Value =
        serde_json::from_slice(&std::fs::read(images.join("images.json")).context("images.json of the images step")?)?;
    let registry = config.images.registry.as_deref();
    let name = config
        .images
        .name
        .clone()
        .unwrap_or_else(|| config.project.name.clone());
    let app = built["app"]["manifest_digest"]
        .as_str()
        .map(|d| image_ref(registry, &name, d));
    let ollama = built["ollama"]["manifest_digest"]
        .as_str()
        .map(|d| image_ref(registry, &format!("{name}-ollama"), d));
    let mongo = lock.images.iter().find(|i| i.name == "mongodb").map(|i| {
        let repo = i
            .reference
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map(|(r, _)| r)
            .unwrap_or(&i.reference);
        format!("{repo}@{}", i.digest)
    });
    let app = app.context("the deploy files need the app image (images.app = true and a [backend])")?;
    if config.deploy.compose {
        std::fs::write(
            out.join("docker-compose.yml"),
            deploy::compose_file(&app, mongo.as_deref(), ollama.as_deref())?,
        )?;
    }
    if config.deploy.kubernetes {
        let k = out.join("kubernetes");
        std::fs::create_dir_all(&k)?;
        std::fs::write(
            k.join("app.yaml"),
            deploy::kubernetes_app(&app, mongo.is_some(), ollama.is_some())?,
        )?;
        if let Some(m) = &mongo {
            std::fs::write(k.join("mongodb.yaml"), deploy::kubernetes_mongodb(m)?)?;
        }
        if let Some(o) = &ollama {
            std::fs::write(k.join("ollama.yaml"), deploy::kubernetes_ollama(o)?)?;
        }
    }
    Ok(())
}

/// The deploy files as typed documents that `yaml_serde` writes: quoting
/// and escaping are YAML's own, keys come in the field order below, and the
/// maps whose order is free (services, environment, labels, volumes) are
/// sorted, so the same images always give the same bytes.
mod deploy {
    use std::collections::BTreeMap;

    use anyhow::Result;
    use serde::Serialize;

    use super::{APP_PORT, OLLAMA_PORT};

    const COMPOSE_HEADER: &str = "# Generated by farm build; every image is pinned by digest.\n";
    const MONGODB_PORT: u16 = 27017;
    const NAME_LABEL: &str = "app.kubernetes.io/name";

    /// The app's environment: where its static files are and the services
    /// it talks to, the same in Compose and in Kubernetes.
    fn app_environment(mongo: bool, ollama: bool) -> BTreeMap<&'static str, String> {
        let mut env = BTreeMap::from([("FARM_STATIC_DIR", "/app/static".to_string())]);
        if mongo {
            env.insert("MONGODB_URL", format!("mongodb://mongodb:{MONGODB_PORT}"));
        }
        if ollama {
            env.insert("FARM_OLLAMA_URL", format!("http://ollama:{OLLAMA_PORT}"));
        }
        env
    }

    // -- docker-compose.yml ------------------------------------------------

    #[derive(Serialize)]
    struct ComposeFile {
        services: BTreeMap<&'static str, ComposeService>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        volumes: BTreeMap<&'static str, BTreeMap<String, String>>,
    }

    #[derive(Serialize)]
    struct ComposeService {
        image: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ports: Vec<String>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        environment: BTreeMap<&'static str, String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        volumes: Vec<&'static str>,
        healthcheck: Healthcheck,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        depends_on: BTreeMap<&'static str, DependsOn>,
    }

    impl ComposeService {
        fn new(image: &str, healthcheck: Healthcheck) -> ComposeService {
            ComposeService {
                image: image.to_string(),
                ports: Vec::new(),
                environment: BTreeMap::new(),
                volumes: Vec::new(),
                healthcheck,
                depends_on: BTreeMap::new(),
            }
        }
    }

    #[derive(Serialize)]
    struct Healthcheck {
        test: Vec<String>,
        interval: &'static str,
        timeout: &'static str,
        retries: u32,
    }

    impl Healthcheck {
        /// Runs `command` in the container (no shell).
        fn exec(command: &[&str]) -> Healthcheck {
            Healthcheck {
                test: std::iter::once("CMD")
                    .chain(command.iter().copied())
                    .map(String::from)
                    .collect(),
                interval: "10s",
                timeout: "5s",
                retries: 5,
            }
        }
    }

    #[derive(Serialize)]
    struct DependsOn {
        condition: &'static str,
    }

    const HEALTHY: DependsOn = DependsOn {
        condition: "service_healthy",
    };

    /// `docker-compose.yml`: the app, and MongoDB and Ollama when the build
    /// has them, each started once the services it needs are healthy.
    pub(super) fn compose_file(app: &str, mongo: Option<&str>, ollama: Option<&str>) -> Result<String> {
        let health_url = format!("http://127.0.0.1:{APP_PORT}/health");
        let mut app_service = ComposeService::new(
            app,
            Healthcheck::exec(&[
                "/usr/bin/python3",
                "-c",
                &format!("import urllib.request; urllib.request.urlopen('{health_url}')"),
            ]),
        );
        app_service.ports = vec![format!("{APP_PORT}:{APP_PORT}")];
        app_service.environment = app_environment(mongo.is_some(), ollama.is_some());
        let mut file = ComposeFile {
            services: BTreeMap::new(),
            volumes: BTreeMap::new(),
        };
        if let Some(image) = mongo {
            let mut service = ComposeService::new(
                image,
                Healthcheck::exec(&["mongosh", "--quiet", "--eval", "db.adminCommand('ping')"]),
            );
            service.volumes = vec!["mongodb-data:/data/db"];
            file.services.insert("mongodb", service);
            file.volumes.insert("mongodb-data", BTreeMap::new());
            app_service.depends_on.insert("mongodb", HEALTHY);
        }
        if let Some(image) = ollama {
            let mut service = ComposeService::new(image, Healthcheck::exec(&["ollama", "list"]));
            service.ports = vec![format!("{OLLAMA_PORT}:{OLLAMA_PORT}")];
            file.services.insert("ollama", service);
            app_service.depends_on.insert("ollama", HEALTHY);
        }
        file.services.insert("app", app_service);
        Ok(format!("{COMPOSE_HEADER}{}", yaml_serde::to_string(&file)?))
    }

    // -- kubernetes/*.yaml -------------------------------------------------

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Object<Spec> {
        api_version: &'static str,
        kind: &'static str,
        metadata: Metadata,
        spec: Spec,
    }

    #[derive(Serialize)]
    struct Metadata {
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<&'static str, String>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct DeploymentSpec {
        replicas: u32,
        selector: LabelSelector,
        template: PodTemplate,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct LabelSelector {
        match_labels: BTreeMap<&'static str, String>,
    }

    #[derive(Serialize)]
    struct PodTemplate {
        metadata: Metadata,
        spec: PodSpec,
    }

    #[derive(Serialize)]
    struct PodSpec {
        containers: Vec<Container>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        volumes: Vec<Volume>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Container {
        name: &'static str,
        image: String,
        ports: Vec<ContainerPort>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        env: Vec<EnvVar>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        volume_mounts: Vec<VolumeMount>,
        #[serde(skip_serializing_if = "Option::is_none")]
        readiness_probe: Option<Probe>,
        #[serde(skip_serializing_if = "Option::is_none")]
        liveness_probe: Option<Probe>,
    }

    impl Container {
        fn new(name: &'static str, image: &str, port: u16) -> Container {
            Container {
                name,
                image: image.to_string(),
                ports: vec![ContainerPort { container_port: port }],
                env: Vec::new(),
                volume_mounts: Vec::new(),
                readiness_probe: None,
                liveness_probe: None,
            }
        }
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ContainerPort {
        container_port: u16,
    }

    #[derive(Serialize)]
    struct EnvVar {
        name: &'static str,
        value: String,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct VolumeMount {
        name: &'static str,
        mount_path: &'static str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        http_get: HttpGet,
    }

    #[derive(Serialize)]
    struct HttpGet {
        path: &'static str,
        port: u16,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Volume {
        name: &'static str,
        persistent_volume_claim: ClaimRef,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ClaimRef {
        claim_name: &'static str,
    }

    #[derive(Serialize)]
    struct ServiceSpec {
        selector: BTreeMap<&'static str, String>,
        ports: Vec<ServicePort>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ServicePort {
        port: u16,
        target_port: u16,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ClaimSpec {
        access_modes: Vec<&'static str>,
        resources: ClaimResources,
    }

    #[derive(Serialize)]
    struct ClaimResources {
        requests: BTreeMap<&'static str, &'static str>,
    }

    /// A one-replica Deployment of `container` and the Service in front of
    /// its port, as two YAML documents.
    fn deployment_and_service(container: Container, volumes: Vec<Volume>) -> Result<String> {
        let name = container.name;
        let port = container.ports[0].container_port;
        let labels = || BTreeMap::from([(NAME_LABEL, name.to_string())]);
        let deployment = Object {
            api_version: "apps/v1",
            kind: "Deployment",
            metadata: Metadata {
                name: Some(name.to_string()),
                labels: labels(),
            },
            spec: DeploymentSpec {
                replicas: 1,
                selector: LabelSelector { match_labels: labels() },
                template: PodTemplate {
                    metadata: Metadata {
                        name: None,
                        labels: labels(),
                    },
                    spec: PodSpec {
                        containers: vec![container],
                        volumes,
                    },
                },
            },
        };
        let service = Object {
            api_version: "v1",
            kind: "Service",
            metadata: Metadata {
                name: Some(name.to_string()),
                labels: BTreeMap::new(),
            },
            spec: ServiceSpec {
                selector: labels(),
                ports: vec![ServicePort {
                    port,
                    target_port: port,
                }],
            },
        };
        Ok(documents(&[
            yaml_serde::to_string(&deployment)?,
            yaml_serde::to_string(&service)?,
        ]))
    }

    /// One YAML stream of several documents.
    fn documents(docs: &[String]) -> String {
        docs.join("---\n")
    }

    /// `kubernetes/app.yaml`.
    pub(super) fn kubernetes_app(image: &str, mongo: bool, ollama: bool) -> Result<String> {
        let mut app = Container::new("app", image, APP_PORT);
        app.env = app_environment(mongo, ollama)
            .into_iter()
            .map(|(name, value)| EnvVar { name, value })
            .collect();
        let health = || Probe {
            http_get: HttpGet {
                path: "/health",
                port: APP_PORT,
            },
        };
        app.readiness_probe = Some(health());
        app.liveness_probe = Some(health());
        deployment_and_service(app, Vec::new())
    }

    /// `kubernetes/mongodb.yaml`: MongoDB on a 1 GiB claim.
    pub(super) fn kubernetes_mongodb(image: &str) -> Result<String> {
        let mut mongo = Container::new("mongodb", image, MONGODB_PORT);
        mongo.volume_mounts = vec![VolumeMount {
            name: "data",
            mount_path: "/data/db",
        }];
        let volumes = vec![Volume {
            name: "data",
            persistent_volume_claim: ClaimRef {
                claim_name: "mongodb-data",
            },
        }];
        let claim = Object {
            api_version: "v1",
            kind: "PersistentVolumeClaim",
            metadata: Metadata {
                name: Some("mongodb-data".into()),
                labels: BTreeMap::new(),
            },
            spec: ClaimSpec {
                access_modes: vec!["ReadWriteOnce"],
                resources: ClaimResources {
                    requests: BTreeMap::from([("storage", "1Gi")]),
                },
            },
        };
        Ok(documents(&[
            deployment_and_service(mongo, volumes)?,
            yaml_serde::to_string(&claim)?,
        ]))
    }

    /// `kubernetes/ollama.yaml`.
    pub(super) fn kubernetes_ollama(image: &str) -> Result<String> {
        deployment_and_service(Container::new("ollama", image, OLLAMA_PORT), Vec::new())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const APP: &str = "registry.example:5000/farm-app@sha256:aaaa";
        const MONGO: &str = "mongo@sha256:bbbb";
        const OLLAMA: &str = "farm-app-ollama@sha256:cccc";

        fn parse(text: &str) -> Vec<yaml_serde::Value> {
            use serde::Deserialize;
            yaml_serde::Deserializer::from_str(text)
                .map(|doc| yaml_serde::Value::deserialize(doc).unwrap())
                .collect()
        }

        #[test]
        fn compose_file_is_pinned() {
            assert_eq!(
                compose_file(APP, Some(MONGO), Some(OLLAMA)).unwrap(),
                r#"# Generated by farm build; every image is pinned by digest.
services:
  app:
    image: registry.example:5000/farm-app@sha256:aaaa
    ports:
    - 8000:8000
    environment:
      FARM_OLLAMA_URL: http://ollama:11434
      FARM_STATIC_DIR: /app/static
      MONGODB_URL: mongodb://mongodb:27017
    healthcheck:
      test:
      - CMD
      - /usr/bin/python3
      - -c
      - import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')
      interval: 10s
      timeout: 5s
      retries: 5
    depends_on:
      mongodb:
        condition: service_healthy
      ollama:
        condition: service_healthy
  mongodb:
    image: mongo@sha256:bbbb
    volumes:
    - mongodb-data:/data/db
    healthcheck:
      test:
      - CMD
      - mongosh
      - --quiet
      - --eval
      - db.adminCommand('ping')
      interval: 10s
      timeout: 5s
      retries: 5
  ollama:
    image: farm-app-ollama@sha256:cccc
    ports:
    - 11434:11434
    healthcheck:
      test:
      - CMD
      - ollama
      - list
      interval: 10s
      timeout: 5s
      retries: 5
volumes:
  mongodb-data: {}
"#
            );
        }

        #[test]
        fn compose_without_services_has_only_the_app() {
            let text = compose_file(APP, None, None).unwrap();
            let doc = &parse(&text)[0];
            let services = doc["services"].as_mapping().unwrap();
            assert_eq!(services.len(), 1, "{text}");
            assert_eq!(doc["services"]["app"]["environment"]["FARM_STATIC_DIR"], "/app/static");
            assert!(doc["services"]["app"].get("depends_on").is_none(), "{text}");
            assert!(doc.get("volumes").is_none(), "{text}");
            assert_eq!(
                doc["services"]["app"]["ports"][0], "8000:8000",
                "a string, not a number"
            );
        }

        #[test]
        fn kubernetes_files_are_deployments_and_services_of_the_pinned_images() {
            let app = parse(&kubernetes_app(APP, true, false).unwrap());
            assert_eq!(app.len(), 2);
            assert_eq!(
                (&app[0]["kind"], &app[1]["kind"]),
                (&"Deployment".into(), &"Service".into())
            );
            let container = &app[0]["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(container["image"], APP);
            assert_eq!(container["ports"][0]["containerPort"], APP_PORT);
            let env: Vec<(&str, &str)> = container["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
                .collect();
            assert_eq!(
                env,
                [
                    ("FARM_STATIC_DIR", "/app/static"),
                    ("MONGODB_URL", "mongodb://mongodb:27017")
                ]
            );
            assert_eq!(app[1]["spec"]["ports"][0]["targetPort"], APP_PORT);
            assert_eq!(app[1]["spec"]["selector"]["app.kubernetes.io/name"], "app");

            let mongo = parse(&kubernetes_mongodb(MONGO).unwrap());
            assert_eq!(mongo.len(), 3);
            assert_eq!(mongo[2]["kind"], "PersistentVolumeClaim");
            assert_eq!(mongo[2]["spec"]["resources"]["requests"]["storage"], "1Gi");
            let pod = &mongo[0]["spec"]["template"]["spec"];
            assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "mongodb-data");
            assert_eq!(pod["containers"][0]["volumeMounts"][0]["mountPath"], "/data/db");

            let ollama = parse(&kubernetes_ollama(OLLAMA).unwrap());
            assert_eq!(ollama[0]["spec"]["template"]["spec"]["containers"][0]["image"], OLLAMA);
            assert_eq!(ollama[1]["spec"]["ports"][0]["port"], OLLAMA_PORT);
        }
    }
}

#[cfg(test)]
mod front_server_tests {
    use super::*;

    const APP: &str = "app.main:app";

    /// A backend step output: `openapi.json` with `paths`, and `main.py` in `backend/app/app/`.
    fn backend(paths: &[&str], main_py: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let paths: serde_json::Map<String, serde_json::Value> =
            paths.iter().map(|p| (p.to_string(), serde_json::json!({}))).collect();
        std::fs::write(
            dir.path().join("openapi.json"),
            serde_json::to_vec(&serde_json::json!({ "paths": paths })).unwrap(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("backend/app/app")).unwrap();
        std::fs::write(dir.path().join("backend/app/app/main.py"), main_py).unwrap();
        dir
    }

    fn cfg(serve: ServeFrontend, prefixes: Option<&[&str]>) -> FrontConfig {
        FrontConfig {
            serve,
            api_prefixes: prefixes.map(|p| p.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// `auto` turns the front server on for an app that serves no frontend,
    /// with the API prefixes taken from its OpenAPI paths.
    #[test]
    fn auto_serves_the_frontend_of_an_api_only_app() {
        let b = backend(
            &["/api/notes", "/api/notes/{id}", "/health", "/{slug}"],
            "app = FastAPI()\n",
        );
        let front = decide_front_server(&cfg(ServeFrontend::Auto, None), b.path(), APP, true).unwrap();
        assert_eq!(
            front,
            Some(FrontServer {
                api_prefixes: vec!["/api".into(), "/health".into()],
                mode: "auto"
            }),
            "path parameters are no prefix"
        );
        let empty = backend(&[], "");
        let front = decide_front_server(&cfg(ServeFrontend::Auto, None), empty.path(), APP, true).unwrap();
        assert_eq!(front.unwrap().api_prefixes, ["/api"], "the default without paths");
        let set = decide_front_server(&cfg(ServeFrontend::Auto, Some(&["/v1"])), b.path(), APP, true).unwrap();
        assert_eq!(set.unwrap().api_prefixes, ["/v1"], "farm.toml's prefixes win");
    }

    /// `auto` leaves alone an app that routes `/` or reads FARM_STATIC_DIR
    /// (the example app), and every build without a frontend.
    #[test]
    fn auto_leaves_apps_that_serve_the_frontend_themselves() {
        let auto = cfg(ServeFrontend::Auto, None);
        let root = backend(&["/", "/api/x"], "");
        assert_eq!(decide_front_server(&auto, root.path(), APP, true).unwrap(), None);
        let mounts = backend(&["/api/x"], "import os\nos.environ.get(\"FARM_STATIC_DIR\")\n");
        assert_eq!(decide_front_server(&auto, mounts.path(), APP, true).unwrap(), None);
        let plain = backend(&["/api/x"], "");
        assert_eq!(decide_front_server(&auto, plain.path(), APP, false).unwrap(), None);
        // Only the app's own package counts: its tests may well mention the variable.
        std::fs::create_dir_all(plain.path().join("backend/app/tests")).unwrap();
        std::fs::write(plain.path().join("backend/app/tests/t.py"), "FARM_STATIC_DIR").unwrap();
        assert!(decide_front_server(&auto, plain.path(), APP, true).unwrap().is_some());
        // A single-module app (`main:app`) is its own package.
        std::fs::write(
            plain.path().join("backend/app/main.py"),
            "os.environ['FARM_STATIC_DIR']",
        )
        .unwrap();
        assert_eq!(
            decide_front_server(&auto, plain.path(), "main:app", true).unwrap(),
            None
        );
        // The example app itself.
        let example = tempfile::tempdir().unwrap();
        let app = example.path().join("backend/app");
        std::fs::create_dir_all(&app).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/farm-app/apps/api/app/main.py");
        std::fs::copy(src, app.join("main.py")).unwrap();
        assert!(
            reads_static_dir(&app).unwrap(),
            "the example mounts FARM_STATIC_DIR itself"
        );
    }

    /// `true` forces the front server even over an app's own `/`, and is an
    /// error without a frontend; `false` never adds it.
    #[test]
    fn true_and_false_override_auto() {
        let root = backend(&["/", "/api/x"], "FARM_STATIC_DIR");
        let on = decide_front_server(&cfg(ServeFrontend::On, None), root.path(), APP, true).unwrap();
        assert_eq!(on.unwrap().mode, "true");
        let err = decide_front_server(&cfg(ServeFrontend::On, None), root.path(), APP, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("images.serve-frontend = true needs the frontend"), "{err}");
        let plain = backend(&["/api/x"], "");
        assert_eq!(
            decide_front_server(&cfg(ServeFrontend::Off, None), plain.path(), APP, true).unwrap(),
            None
        );
    }

    /// A symlink in the backend's code is not followed by the scan.
    #[test]
    fn the_scan_does_not_follow_links() {
        let b = backend(&["/api/x"], "");
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.py"), "FARM_STATIC_DIR").unwrap();
        std::os::unix::fs::symlink(outside.path(), b.path().join("backend/app/linked")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.py"), b.path().join("backend/app/l.py")).unwrap();
        assert!(!reads_static_dir(&b.path().join("backend/app")).unwrap());
    }
}
