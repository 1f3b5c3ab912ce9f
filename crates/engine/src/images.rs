//! The `images` target: the app image (Debian runtime + Python, the
//! backend's site-packages and code, the frontend served as static files)
//! and, when the project has models and an Ollama toolchain, the Ollama
//! image (the Ollama release + the models directory). Both are assembled by
//! farm-images from store entries: no container engine, no Dockerfile.
//! Also the deploy files, which reference every image by digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use farm_images::{Compression, ImageSpec, LayerContent, LayerSpec};
use farm_store::{Store, StoreEntry};

use farm_project::config::Config;

/// uid/gid the app runs as in its image.
pub const APP_UID: u32 = 1000;
pub const APP_PORT: u16 = 8000;
pub const OLLAMA_PORT: u16 = 11434;

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
            "images-v1".into(),
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
        crate::build::iso8601(plan.created),
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
pub fn build(plan: &ImagesPlan, out: &Path, deps: &BTreeMap<String, StoreEntry>) -> Result<()> {
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
    if let (Some(backend), Some(python), Some(app)) = (deps.get("backend"), &plan.python, &plan.asgi_app) {
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
        if let Some(front) = deps.get("frontend") {
            spec.layers.push(LayerSpec {
                name: "frontend".into(),
                contents: vec![content(front.path.clone(), "/app/static")],
            });
        }
        for (step, at) in &plan.step_layers {
            let e = deps.get(step).with_context(|| format!("the output of step {step}"))?;
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
            "FARM_STATIC_DIR=/app/static".into(),
        ];
        spec.config.exposed_ports = vec![format!("{APP_PORT}/tcp")];
        spec.config.entrypoint = vec![
            format!("/usr/bin/python{python}"),
            "-m".into(),
            "uvicorn".into(),
            app.clone(),
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
    if let (Some(models), Some(ollama)) = (deps.get("models"), &plan.ollama) {
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
            compose_yaml(&app, mongo.as_deref(), ollama.as_deref()),
        )?;
    }
    if config.deploy.kubernetes {
        let k = out.join("kubernetes");
        std::fs::create_dir_all(&k)?;
        std::fs::write(k.join("app.yaml"), k8s_app(&app, mongo.is_some(), ollama.is_some()))?;
        if let Some(m) = &mongo {
            std::fs::write(k.join("mongodb.yaml"), k8s_mongo(m))?;
        }
        if let Some(o) = &ollama {
            std::fs::write(k.join("ollama.yaml"), k8s_ollama(o))?;
        }
    }
    Ok(())
}

fn compose_yaml(app: &str, mongo: Option<&str>, ollama: Option<&str>) -> String {
    let mut s = String::from("# Generated by farm build; every image is pinned by digest.\nservices:\n");
    s.push_str(&format!(
        "  app:\n    image: \"{app}\"\n    ports:\n      - \"{APP_PORT}:{APP_PORT}\"\n    environment:\n"
    ));
    if mongo.is_some() {
        s.push_str("      MONGODB_URL: \"mongodb://mongodb:27017\"\n");
    }
    if ollama.is_some() {
        s.push_str(&format!("      FARM_OLLAMA_URL: \"http://ollama:{OLLAMA_PORT}\"\n"));
    }
    s.push_str("      FARM_STATIC_DIR: \"/app/static\"\n");
    s.push_str(&format!(
        "    healthcheck:\n      test: [\"CMD\", \"/usr/bin/python3\", \"-c\", \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{APP_PORT}/health')\"]\n      interval: 10s\n      timeout: 5s\n      retries: 5\n"
    ));
    let mut deps = Vec::new();
    if mongo.is_some() {
        deps.push("mongodb");
    }
    if ollama.is_some() {
        deps.push("ollama");
    }
    if !deps.is_empty() {
        s.push_str("    depends_on:\n");
        for d in &deps {
            s.push_str(&format!("      {d}:\n        condition: service_healthy\n"));
        }
    }
    if let Some(m) = mongo {
        s.push_str(&format!(
            "  mongodb:\n    image: \"{m}\"\n    volumes:\n      - mongodb-data:/data/db\n    healthcheck:\n      test: [\"CMD\", \"mongosh\", \"--quiet\", \"--eval\", \"db.adminCommand('ping')\"]\n      interval: 10s\n      timeout: 5s\n      retries: 5\n"
        ));
    }
    if let Some(o) = ollama {
        s.push_str(&format!(
            "  ollama:\n    image: \"{o}\"\n    ports:\n      - \"{OLLAMA_PORT}:{OLLAMA_PORT}\"\n    healthcheck:\n      test: [\"CMD\", \"ollama\", \"list\"]\n      interval: 10s\n      timeout: 5s\n      retries: 5\n"
        ));
    }
    if mongo.is_some() {
        s.push_str("volumes:\n  mongodb-data: {}\n");
    }
    s
}

fn k8s_deployment(name: &str, image: &str, port: u16, extra_container: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {name}\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: {name}\n    spec:\n      containers:\n        - name: {name}\n          image: \"{image}\"\n          ports:\n            - containerPort: {port}\n{extra_container}{extra_spec}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app.kubernetes.io/name: {name}\n  ports:\n    - port: {port}\n      targetPort: {port}\n"
    )
}

fn k8s_app(image: &str, mongo: bool, ollama: bool) -> String {
    let mut env =
        String::from("          env:\n            - name: FARM_STATIC_DIR\n              value: \"/app/static\"\n");
    if mongo {
        env.push_str("            - name: MONGODB_URL\n              value: \"mongodb://mongodb:27017\"\n");
    }
    if ollama {
        env.push_str(&format!(
            "            - name: FARM_OLLAMA_URL\n              value: \"http://ollama:{OLLAMA_PORT}\"\n"
        ));
    }
    let probe = format!(
        "          readinessProbe:\n            httpGet:\n              path: /health\n              port: {APP_PORT}\n          livenessProbe:\n            httpGet:\n              path: /health\n              port: {APP_PORT}\n"
    );
    k8s_deployment("app", image, APP_PORT, &(env + &probe), "")
}

fn k8s_mongo(image: &str) -> String {
    let pvc = "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: mongodb-data\nspec:\n  accessModes:\n    - ReadWriteOnce\n  resources:\n    requests:\n      storage: 1Gi\n";
    let mount = "          volumeMounts:\n            - name: data\n              mountPath: /data/db\n";
    let volumes =
        "      volumes:\n        - name: data\n          persistentVolumeClaim:\n            claimName: mongodb-data\n";
    format!("{}{pvc}", k8s_deployment("mongodb", image, 27017, mount, volumes))
}

fn k8s_ollama(image: &str) -> String {
    k8s_deployment("ollama", image, OLLAMA_PORT, "", "")
}
