//! `farm lock`: resolve what farm.toml and the dependency lockfiles ask for,
//! and pin it in farm.lock. Like Cargo, an existing lock is kept where its
//! inputs did not change; only stale sections are resolved again.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use farm_lockfiles::http::{Client, ClientOptions};
use farm_lockfiles::lock::{DebianBase, LockedArtifact, PythonToolchain, Unpack};
use farm_lockfiles::pypi::PythonTarget;
use farm_lockfiles::redact::redact_url;
use farm_lockfiles::{Integrity, Lock};
use farm_project::config::PythonDeps;
use farm_project::endpoints;
use farm_project::inputs::{current_inputs, sections_of, Section};
use farm_project::Project;

use crate::Context;

/// What `farm lock` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// Only compare the lock with its inputs; write nothing.
    pub check: bool,
    /// Sections or entries to resolve again even if their inputs did not change.
    pub update: Vec<String>,
}

/// How `farm lock` ended. `Missing` and `Stale` come only from a check.
#[derive(Debug)]
pub enum LockOutcome {
    /// The lock matches its inputs (its recorded inputs may have been refreshed).
    UpToDate { path: PathBuf },
    /// Sections were resolved and this lock written.
    Written { path: PathBuf, lock: Box<Lock> },
    /// There is no lock to check.
    Missing { path: PathBuf },
    /// The lock does not match its inputs: each input that changed, then
    /// each entry that differs from what they pin, one line each.
    Stale { path: PathBuf, stale: Vec<String> },
}

/// Entry point of `farm lock`: resolves the sections whose inputs changed,
/// whose entries differ from what those inputs pin, or that `--update`
/// names, and writes farm.lock; with `check` only says whether the lock
/// matches its inputs (crate::lockcheck), offline.
pub fn lock(ctx: &Context, opts: &LockOptions) -> Result<LockOutcome> {
    let project = Project::load(&ctx.project_dir)?;
    let path = project.lock_path();
    let existing = if path.exists() { Some(Lock::read(&path)?) } else { None };
    let current = current_inputs(&project)?;

    if opts.check {
        let Some(lock) = existing else {
            return Ok(LockOutcome::Missing { path });
        };
        let verdict = crate::lockcheck::check(&project, &lock)?;
        if verdict.is_clean() {
            return Ok(LockOutcome::UpToDate { path });
        }
        return Ok(LockOutcome::Stale {
            path,
            stale: verdict.lines(),
        });
    }

    let mut todo: BTreeSet<Section> = BTreeSet::new();
    match &existing {
        None => {
            for k in current.keys() {
                todo.extend(sections_of(&project, k));
            }
        }
        Some(lock) => {
            for (k, v) in &current {
                if lock.inputs.get(k) != Some(v) {
                    todo.extend(sections_of(&project, k));
                }
            }
            // Entries changed behind the inputs' back are resolved again, so
            // the hint of `lock --check`, fetch and build repairs the lock.
            let verdict = crate::lockcheck::check(&project, lock)?;
            todo.extend(verdict.differences.iter().map(|d| d.section));
        }
    }
    for name in &opts.update {
        todo.extend(update_target(&project, existing.as_ref(), name)?);
    }
    let mut lock = existing.clone().unwrap_or_else(Lock::new);
    drop_removed_sections(&project, &mut lock);
    if todo.is_empty() {
        lock.inputs = current;
        if Some(&lock) != existing.as_ref() {
            lock.write(&path)?;
        }
        return Ok(LockOutcome::UpToDate { path });
    }
    let names: Vec<&str> = todo.iter().map(|s| s.name()).collect();
    ctx.reporter.info(&format!("resolving {}", names.join(", ")));

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(resolve(ctx, &project, &todo, &mut lock))?;
    lock.inputs = current;
    lock.write(&path)?;
    Ok(LockOutcome::Written {
        path,
        lock: Box::new(lock),
    })
}

fn update_target(project: &Project, lock: Option<&Lock>, name: &str) -> Result<Vec<Section>> {
    let by_section = match name {
        "node" | "npm-cli" => Some(Section::Node),
        "python" | "pip" | "debian" | "base" => Some(Section::Debian),
        "ollama" => Some(Section::Ollama),
        "npm" | "frontend" => Some(Section::Npm),
        "wheels" | "pypi" | "backend" => Some(Section::Wheels),
        "models" => Some(Section::Models),
        "images" | "mongodb" => Some(Section::Images),
        _ => None,
    };
    if let Some(s) = by_section {
        return Ok(vec![s]);
    }
    if project
        .config
        .models
        .as_ref()
        .is_some_and(|m| m.models.iter().any(|x| x == name))
    {
        return Ok(vec![Section::Models]);
    }
    if let Some(lock) = lock {
        if lock
            .debian
            .as_ref()
            .is_some_and(|d| d.packages.iter().any(|p| p.artifact.name == name))
        {
            return Ok(vec![Section::Debian]);
        }
        if lock.wheels.iter().any(|w| w.artifact.name.eq_ignore_ascii_case(name)) {
            return Ok(vec![Section::Wheels]);
        }
        if lock.npm.iter().any(|p| p.artifact.name == name) {
            return Ok(vec![Section::Npm]);
        }
    }
    bail!(
        "--update {name}: not a lock section (node, python, debian, ollama, npm, wheels, models, images) nor a package or model in farm.lock"
    )
}

/// Sections whose farm.toml part is gone leave the lock too.
fn drop_removed_sections(project: &Project, lock: &mut Lock) {
    let c = &project.config;
    if c.toolchains.node.is_none() {
        lock.node = None;
    }
    if c.toolchains.python.is_none() {
        lock.python = None;
    }
    if c.toolchains.node.is_none() && c.toolchains.python.is_none() {
        lock.debian = None;
    }
    if c.toolchains.ollama.is_none() {
        lock.ollama = None;
    }
    if c.frontend.is_none() {
        lock.npm.clear();
    }
    if c.backend.is_none() {
        lock.wheels.clear();
    }
    if c.models.is_none() {
        lock.models.clear();
    }
    if !(c.deploy.compose || c.deploy.kubernetes) || c.deploy.mongodb.is_none() {
        lock.images.clear();
    }
}

async fn resolve(ctx: &Context, project: &Project, todo: &BTreeSet<Section>, lock: &mut Lock) -> Result<()> {
    let client = Client::new(ClientOptions::from_env());
    let c = &project.config;
    let mirrors = endpoints::mirrors(project);

    let node = async {
        match (todo.contains(&Section::Node), &c.toolchains.node) {
            (true, Some(n)) => {
                let registry = endpoints::npm_registry(project)?;
                let mut t = farm_lockfiles::npm::resolve_node(&client, &registry, &n.version, &n.npm)
                    .await
                    .with_context(|| format!("locking node {}", n.version))?;
                t.node.url = mirrors.relativize(&t.node.url);
                t.npm.url = mirrors.relativize(&t.npm.url);
                anyhow::Ok(Some(t))
            }
            _ => Ok(None),
        }
    };

    let debian = async {
        if !todo.contains(&Section::Debian) || (c.toolchains.node.is_none() && c.toolchains.python.is_none()) {
            return anyhow::Ok(None);
        }
        let d = &c.toolchains.debian;
        let (mirror, keyring) = endpoints::debian_source(project)?;
        let roots = project.debian_roots();
        let req = farm_lockfiles::debian::DebianRequest {
            mirror: mirror.clone(),
            suite: d.suite.clone(),
            components: d.components.clone(),
            architecture: d.architecture.clone(),
            roots,
            exclude: farm_lockfiles::debian::default_excludes()
                .into_iter()
                .chain(d.exclude.iter().cloned())
                .collect(),
            keyring,
            cache_dir: Some(ctx.farm_home.join("cache").join("debian")),
        };
        let resolved = farm_lockfiles::debian::resolve(&client, &req)
            .await
            .with_context(|| format!("resolving the Debian {} {} base", d.suite, d.architecture))?;
        if let farm_lockfiles::debian::ReleaseTrust::Unchecked { reason } = &resolved.trust {
            ctx.reporter.warn(&format!(
                "{} was not signature-checked ({reason}); its packages are pinned by SHA-256 all the same",
                redact_url(&resolved.release_url)
            ));
        }
        let mut packages = resolved.packages;
        for p in &mut packages {
            p.artifact.url = mirrors.relativize(&p.artifact.url);
        }
        let python = match &c.toolchains.python {
            Some(p) => {
                let package = format!("python{}-minimal", p.version);
                let deb = packages.iter().find(|d| d.artifact.name == package).with_context(|| {
                    format!(
                        "the {} index has no {package} (toolchains.python.version = {:?})",
                        d.suite, p.version
                    )
                })?;
                let index = endpoints::pypi_index(project)?;
                let pip = farm_lockfiles::pypi::resolve_pip(&client, &index, &p.pip)
                    .await
                    .with_context(|| format!("locking pip {}", p.pip))?;
                Some(PythonToolchain {
                    version: p.version.clone(),
                    package,
                    package_version: deb.artifact.version.clone(),
                    pip,
                })
            }
            None => None,
        };
        Ok(Some((
            DebianBase {
                suite: d.suite.clone(),
                architecture: d.architecture.clone(),
                packages,
            },
            python,
        )))
    };

    let ollama = async {
        match (todo.contains(&Section::Ollama), &c.toolchains.ollama) {
            (true, Some(o)) => anyhow::Ok(Some(lock_ollama(ctx, &client, o).await?)),
            _ => Ok(None),
        }
    };

    let npm = async {
        if !todo.contains(&Section::Npm) || c.frontend.is_none() {
            return anyhow::Ok(None);
        }
        anyhow::Ok(Some(lock_npm(ctx, &client, project, &mirrors).await?))
    };

    // Wheels wait for the Debian base: markers are evaluated for the exact
    // interpreter it pins (`python_full_version`), pip's resolver runs with
    // it, and a Python lockfile's wheels are chosen for its glibc.
    let existing_python = lock.python.clone();
    let existing_debian = lock.debian.clone();
    let debian_and_wheels = async {
        let debian = debian.await?;
        let wheels = match (
            todo.contains(&Section::Wheels),
            project.python_deps(),
            &c.toolchains.python,
        ) {
            (true, Some(deps), Some(py)) => {
                let (base, pinned) = match &debian {
                    Some((d, p)) => (Some(d.clone()), p.clone()),
                    None => (existing_debian, existing_python),
                };
                let (Some(base), Some(pinned)) = (base, pinned.filter(|p| p.version == py.version)) else {
                    bail!("the backend's wheels need the locked Python {}, and farm.lock has none\nhint: run `farm lock --update python`", py.version);
                };
                let wheels = match deps {
                    PythonDeps::Requirements(rel) => {
                        let full = farm_lockfiles::debian::upstream_version(&pinned.package_version);
                        let target = PythonTarget::new(&py.version, Some(full))?;
                        resolve_wheels(ctx, project, &rel, &target, &base, &pinned).await?
                    }
                    PythonDeps::Lockfile(rel) => lockfile_wheels(project, &rel, &base, &pinned)?,
                };
                Some(wheels)
            }
            _ => None,
        };
        anyhow::Ok((debian, wheels))
    };

    let models = async {
        match (todo.contains(&Section::Models), &c.models) {
            (true, Some(m)) => {
                let registry = endpoints::models_registry(project)?.expect("models section");
                let shown = redact_url(&registry);
                let rc = farm_lockfiles::oci::RegistryClient::new(&client, &registry, None)
                    .with_context(|| format!("models.registry = {shown:?}"))?;
                let mut out = Vec::new();
                for reference in &m.models {
                    let model = farm_lockfiles::oci::resolve_model(&rc, reference)
                        .await
                        .with_context(|| format!("locking model {reference} from {shown}"))?;
                    out.push(model);
                }
                anyhow::Ok(Some(out))
            }
            _ => Ok(None),
        }
    };

    let images = async {
        if !todo.contains(&Section::Images) || !(c.deploy.compose || c.deploy.kubernetes) {
            return anyhow::Ok(None);
        }
        let Some(reference) = &c.deploy.mongodb else {
            return Ok(None);
        };
        Ok(Some(vec![lock_image(project, "mongodb", reference).await?]))
    };

    let (node, (debian, wheels), ollama, npm, models, images) =
        tokio::try_join!(node, debian_and_wheels, ollama, npm, models, images)?;
    if let Some(n) = node {
        lock.node = Some(n);
    }
    if let Some((d, p)) = debian {
        lock.debian = Some(d);
        lock.python = p;
    }
    if let Some(o) = ollama {
        lock.ollama = Some(o);
    }
    if let Some(n) = npm {
        lock.npm = n;
    }
    if let Some(w) = wheels {
        lock.wheels = w;
    }
    if let Some(m) = models {
        lock.models = m;
    }
    if let Some(i) = images {
        lock.images = i;
    }
    Ok(())
}

/// `[[npm]]`: what the frontend's JS lockfile installs (package-lock.json,
/// pnpm-lock.yaml, yarn.lock or bun.lock; its own or its workspace root's),
/// at install paths relative to the lockfile's directory. What the lockfile
/// leaves open (yarn's tarball integrity, optional packages' platforms) is
/// settled from the registry. Workspace links are checked here, so a bad
/// one fails the lock; they are re-read from the lockfile when building.
async fn lock_npm(
    ctx: &Context,
    client: &Client,
    project: &Project,
    mirrors: &farm_lockfiles::mirror::Mirrors,
) -> Result<Vec<farm_lockfiles::lock::NpmPackage>> {
    let loc = project.js_lock()?.context("farm.toml has no [frontend]")?;
    let shown = project.relative(&loc.lockfile).display().to_string();
    crate::deps::js_layout(project)?;
    let registry = endpoints::npm_registry(project)?;
    let mut install = farm_lockread::js::read_js_lock(&loc, &registry)?;
    if !install.is_settled() {
        ctx.reporter.info(&format!(
            "{shown} does not record the npm tarball integrity or platform of every package; asking {}",
            redact_url(&registry)
        ));
        install
            .pin_from_registry(client, &registry)
            .await
            .with_context(|| format!("pinning the packages of {shown}"))?;
    }
    let mut pkgs = install.packages;
    for p in &mut pkgs {
        p.artifact.url = mirrors.relativize(&p.artifact.url);
    }
    Ok(pkgs)
}

async fn lock_ollama(
    ctx: &Context,
    client: &Client,
    o: &farm_project::config::OllamaToolchainConfig,
) -> Result<LockedArtifact> {
    let integrity = match &o.sha256 {
        Some(s) => Integrity::parse(s)?,
        None => {
            ctx.reporter.info(&format!(
                "downloading {} to compute its SHA-256 (pin it in farm.toml to skip this)",
                redact_url(&o.url)
            ));
            let tmp = tempfile::tempdir()?;
            let dest = tmp.path().join("ollama-archive");
            client
                .download(&o.url, None, &dest, &|_, _| {})
                .await
                .with_context(|| "toolchains.ollama.url".to_string())?
        }
    };
    Ok(LockedArtifact {
        name: "ollama".into(),
        version: o.version.clone(),
        url: o.url.clone(),
        integrity,
        size: None,
        unpack: Unpack::Tar,
        strip: 0,
    })
}

async fn lock_image(project: &Project, name: &str, reference: &str) -> Result<farm_lockfiles::lock::LockedImage> {
    let (base, pinned) = match reference.split_once('@') {
        Some((b, d)) => (
            b.to_string(),
            Some(Integrity::parse(d).with_context(|| format!("deploy.{name}: {reference:?}"))?),
        ),
        None => (reference.to_string(), None),
    };
    if let Some(digest) = pinned {
        return Ok(farm_lockfiles::lock::LockedImage {
            name: name.into(),
            reference: base,
            digest,
        });
    }
    let (registry, repo_ref) =
        split_image_reference(project, &base).with_context(|| format!("deploy.{name} = {reference:?}"))?;
    let client = Client::new(ClientOptions::from_env());
    let rc = farm_lockfiles::oci::RegistryClient::new(&client, &registry, None)?;
    let digest = farm_lockfiles::oci::resolve_image(&rc, &repo_ref).await.with_context(|| {
        format!(
            "resolving deploy.{name} = {reference:?} at {}\nhint: if that registry is unreachable from here, pin the digest in farm.toml: {name} = \"{base}@sha256:<digest>\"",
            redact_url(&registry)
        )
    })?;
    Ok(farm_lockfiles::lock::LockedImage {
        name: name.into(),
        reference: base,
        digest,
    })
}

/// `host[:port]/repo:tag` → (registry URL, `repo:tag`). A reference without a
/// host uses `[registries] containers`.
fn split_image_reference(project: &Project, reference: &str) -> Result<(String, String)> {
    let first = reference.split('/').next().unwrap_or_default();
    let has_host = reference.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        let rest = &reference[first.len() + 1..];
        let scheme = if first.starts_with("127.") || first.starts_with("localhost") {
            "http"
        } else {
            "https"
        };
        return Ok((format!("{scheme}://{first}"), rest.to_string()));
    }
    match &project.config.registries.containers {
        Some(r) => {
            let r = farm_project::config::expand_env("registries.containers", r).map_err(anyhow::Error::msg)?;
            let repo = if reference.contains('/') { reference.to_string() } else { format!("library/{reference}") };
            Ok((r.trim_end_matches('/').to_string(), repo))
        }
        None => bail!("the image reference names no registry\nhint: write it fully qualified (host/repository:tag) or set [registries] containers"),
    }
}

/// The backend's wheels for `target` from a requirements file. The
/// requirements are checked before anything runs; pip's resolver then runs
/// where [`crate::pip_runner::choose`] says: in the sandbox with the locked
/// Python, or (asked for explicitly) with a host `python3`.
async fn resolve_wheels(
    ctx: &Context,
    project: &Project,
    rel: &std::path::Path,
    target: &PythonTarget,
    debian: &DebianBase,
    python: &PythonToolchain,
) -> Result<Vec<farm_lockfiles::lock::PythonWheel>> {
    let root = &project.root;
    let requirements = root.join(rel);
    if let Some(b) = &project.config.backend {
        if !(b.groups.is_empty() && b.extras.is_empty()) {
            bail!(
                "farm.toml: backend.groups/backend.extras choose from a Python lockfile, but the backend's dependencies come from {}\nhint: remove them, or point backend.lockfile at the uv.lock, poetry.lock or pylock.toml",
                rel.display()
            );
        }
    }
    // Refused lines are reported before anything else is looked up or run.
    farm_lockfiles::requirements::read(&requirements, root)?;
    let index = endpoints::pypi_index(project)?;
    let runner = crate::pip_runner::choose(ctx, project, debian, python, &index).await?;
    farm_lockfiles::pypi::resolve_requirements_with(&requirements, root, &index, target, runner.as_ref())
        .await
        .with_context(|| format!("resolving {}", rel.display()))
}

/// The interpreter a Python lockfile's wheels are chosen for: the locked
/// Debian Python's full version and the locked libc6's glibc, with the
/// groups and extras farm.toml names, for the workspace member that is the
/// backend (all projects of the lock when none is).
pub(crate) fn py_target(
    project: &Project,
    lock: &farm_lockread::py::PyLock,
    lock_rel: &std::path::Path,
    debian: &DebianBase,
    python: &PythonToolchain,
) -> Result<farm_lockread::py::PyTarget> {
    let full = farm_lockfiles::debian::upstream_version(&python.package_version);
    let libc = debian.packages.iter().find(|p| p.artifact.name == "libc6").context(
        "farm.lock's Debian base has no libc6, so the target's glibc is unknown\nhint: run `farm lock --update debian`",
    )?;
    let glibc_text = farm_lockfiles::debian::upstream_version(&libc.artifact.version);
    let mut parts = glibc_text.split('.').map(|x| x.parse::<u32>());
    let glibc = match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b),
        _ => bail!(
            "farm.lock: libc6 {}: expected a glibc version such as 2.36",
            libc.artifact.version
        ),
    };
    let mut target = farm_lockread::py::PyTarget::cpython(full, glibc);
    if let Some(b) = &project.config.backend {
        target.groups = b.groups.iter().cloned().collect();
        target.extras = b.extras.iter().cloned().collect();
        // The member whose directory is the backend's, relative to the lock.
        let lock_dir = lock_rel.parent().unwrap_or(std::path::Path::new(""));
        if let Ok(member) = b.path.strip_prefix(lock_dir) {
            let member = member.to_string_lossy().replace('\\', "/");
            let found = lock.roots.iter().map(|r| &lock.packages[*r]).find(|p| {
                matches!(&p.source, farm_lockread::py::PySource::Project { path } if path.trim_end_matches('/') == member)
            });
            if let Some(p) = found {
                target.members = Some([p.name.clone()].into());
            }
        }
    }
    Ok(target)
}

/// The backend's wheels read from its Python lockfile (uv.lock,
/// poetry.lock, pylock.toml) for the locked interpreter: no resolver, no
/// network. `farm lock --check` derives them the same way.
pub(crate) fn lockfile_wheels(
    project: &Project,
    rel: &std::path::Path,
    debian: &DebianBase,
    python: &PythonToolchain,
) -> Result<Vec<farm_lockfiles::lock::PythonWheel>> {
    let path = project.root.join(rel);
    let lock = farm_lockread::py::read_py_lock(&path)?;
    let target = py_target(project, &lock, rel, debian, python)?;
    farm_lockread::py::select_wheels(&lock, &target)
        .with_context(|| format!("choosing the backend's wheels from {}", rel.display()))
}
