//! What a release publishes beside its outputs: `farm sbom`, `farm
//! provenance`, `farm sign`, `farm verify-attestation` and `farm keygen`,
//! over farm-attest; and [`release_sboms`], the SBOM files a build writes
//! as outputs. Spec: `spec/attestations.md`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use farm_attest::license::{Declared, Source as LicenseSource};
use farm_attest::provenance::{self, DocumentKind, ProvenanceInputs, RunFacts, SourceRevision};
use farm_attest::sbom::{SbomInputs, Scope};
use farm_attest::verify::Against;
use farm_attest::{cyclonedx, spdx, PrivateKey, PublicKey, Release};
use farm_lockfiles::Lock;
use farm_project::Project;
use farm_store::Store;

pub use farm_attest::verify::{Check, Report};
pub use farm_attest::KeyType;

use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::Context;

/// The directory `farm sign` writes envelopes to, inside the output directory.
pub const ATTESTATIONS_DIR: &str = "attestations";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
}

impl SbomFormat {
    /// The file name suffix farm gives documents of this format.
    pub fn extension(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "spdx.json",
            SbomFormat::Cyclonedx => "cdx.json",
        }
    }
}

/// One SBOM file of a build, for `farm build` to place in the output
/// directory and name in the manifest.
#[derive(Debug, Clone)]
pub struct SbomFile {
    /// The manifest output name: `sbom.spdx`, `sbom.cyclonedx`,
    /// `sbom.image.app.spdx`, … (the `sbom.` prefix keeps them out of
    /// the identity the documents are named by).
    pub output: String,
    /// Path relative to the output directory: `sbom/<project>.spdx.json`,
    /// `sbom/image-app.cdx.json`, …
    pub path: String,
    pub bytes: Vec<u8>,
}

/// What the models and images are called outside: `[models] host` (else
/// the registry's host, as the models step names them) and `[images] registry`.
fn names(project: &Project) -> (Option<String>, Option<String>) {
    let model_host = project.config.models.as_ref().and_then(|m| {
        m.host.clone().or_else(|| {
            let reg = farm_project::endpoints::models_registry(project).ok().flatten()?;
            url::Url::parse(&reg).ok()?.host_str().map(String::from)
        })
    });
    (model_host, project.config.images.registry.clone())
}

fn store_lookup(store: &Store) -> impl Fn(&farm_lockfiles::Integrity) -> Option<PathBuf> + '_ {
    move |i| store.artifact(&i.to_string()).ok().flatten().map(|e| e.path)
}

/// Licenses read from store entries, remembered in the store's action cache
/// (`license-v<detector>:<reader>:<entry file name>`) and in memory: the
/// build writes up to four documents, and reading a license decompresses the
/// artifact's whole archive.
pub(crate) struct StoreLicenses<'a> {
    store: &'a Store,
    seen: std::cell::RefCell<std::collections::HashMap<(LicenseSource, PathBuf), Declared>>,
}

impl<'a> StoreLicenses<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        StoreLicenses {
            store,
            seen: Default::default(),
        }
    }

    /// The action-cache row for `path`, only for an entry of this store
    /// (anything else is read every time: its contents may change).
    fn row(&self, source: LicenseSource, path: &Path) -> Option<String> {
        if path.parent()? != self.store.store_dir() {
            return None;
        }
        let name = path.file_name()?.to_str()?;
        farm_store::parse_file_name(name)?;
        Some(format!(
            "license-v{}:{}:{name}",
            farm_attest::license::DETECTOR_VERSION,
            source.as_str()
        ))
    }
}

impl farm_attest::license::Memo for StoreLicenses<'_> {
    fn get(&self, source: LicenseSource, path: &Path) -> Option<Declared> {
        if let Some(d) = self.seen.borrow().get(&(source, path.to_path_buf())) {
            return Some(d.clone());
        }
        let value = self.store.action_get(&self.row(source, path)?).ok()??;
        let d: Declared = serde_json::from_value(value).ok()?;
        self.seen.borrow_mut().insert((source, path.to_path_buf()), d.clone());
        Some(d)
    }

    fn put(&self, source: LicenseSource, path: &Path, declared: &Declared) {
        self.seen
            .borrow_mut()
            .insert((source, path.to_path_buf()), declared.clone());
        if let (Some(row), Ok(value)) = (self.row(source, path), serde_json::to_value(declared)) {
            // Only a cache: a failed write costs a re-read next time.
            let _ = self.store.action_put(&row, &value);
        }
    }
}

fn document(format: SbomFormat, inputs: &SbomInputs, scope: &Scope) -> Result<Vec<u8>> {
    let sbom = farm_attest::sbom::build(inputs, scope)?;
    Ok(render(format, &sbom))
}

fn render(format: SbomFormat, sbom: &farm_attest::Sbom) -> Vec<u8> {
    match format {
        SbomFormat::Spdx => spdx::to_bytes(sbom),
        SbomFormat::Cyclonedx => cyclonedx::to_bytes(sbom),
    }
}

/// The SBOMs of a build: SPDX and CycloneDX for the release and for each
/// image, made from `lock`, `manifest` (its outputs so far; SBOM outputs
/// and `digest` are ignored) and the store entries licenses are read from.
/// `farm sbom` after the build writes the same bytes.
pub fn release_sboms(store: &Store, project: &Project, lock: &Lock, manifest: &Manifest) -> Result<Vec<SbomFile>> {
    let mut value = serde_json::to_value(manifest)?;
    // The caller may not have sealed it yet; the identity never covers `digest`.
    value.as_object_mut().map(|m| m.remove("digest"));
    let release = Release::from_manifest_value(MANIFEST_FILE, value)?;
    let (model_host, image_registry) = names(project);
    let lookup = store_lookup(store);
    let licenses = StoreLicenses::new(store);
    let inputs = SbomInputs {
        lock,
        release: &release,
        artifact_path: &lookup,
        license_memo: Some(&licenses),
        model_host: model_host.as_deref(),
        image_registry: image_registry.as_deref(),
    };
    let mut scopes = vec![(Scope::Release, "sbom".to_string(), format!("sbom/{}", release.name))];
    for name in release
        .described_outputs()
        .filter_map(|(n, _)| n.strip_prefix("image."))
    {
        scopes.push((
            Scope::Image(name.to_string()),
            format!("sbom.image.{name}"),
            format!("sbom/image-{name}"),
        ));
    }
    let mut files = Vec::new();
    for (scope, output, stem) in scopes {
        let sbom = farm_attest::sbom::build(&inputs, &scope)?;
        for (format, suffix) in [(SbomFormat::Spdx, "spdx"), (SbomFormat::Cyclonedx, "cyclonedx")] {
            files.push(SbomFile {
                output: format!("{output}.{suffix}"),
                path: format!("{stem}.{}", format.extension()),
                bytes: render(format, &sbom),
            });
        }
    }
    Ok(files)
}

/// Writes the build's SBOMs into the staging output directory `dir`,
/// names them in `outputs` (the `sbom.*` outputs), and attaches each
/// image's own SBOMs to its OCI layout as artifacts whose `subject` is the
/// image. The documents describe the outputs as `manifest_of(outputs)`
/// has them before any of this (image outputs record their layout's digest
/// and size from before in `metadata.attestations`), so attaching again —
/// to a layout carried over from the last build — gives the same bytes.
pub fn write_release_sboms(
    store: &Store,
    project: &Project,
    lock: &Lock,
    dir: &Path,
    outputs: &mut std::collections::BTreeMap<String, crate::manifest::Output>,
    manifest_of: &dyn Fn(std::collections::BTreeMap<String, crate::manifest::Output>) -> Manifest,
) -> Result<()> {
    use farm_attest::release::ATTESTATIONS_METADATA;
    // A carried-over layout already holds the last build's SBOMs: describe it as before them.
    outputs.retain(|name, _| !name.starts_with(farm_attest::release::SBOM_OUTPUT_PREFIX));
    for o in outputs.values_mut() {
        if let Some(att) = o.metadata.remove(ATTESTATIONS_METADATA) {
            if let (Some(d), Some(n)) = (att["tree_digest"].as_str(), att["size"].as_u64()) {
                o.digest = d.to_string();
                o.size = n;
            }
            if let Some(i) = att.get("index_digest") {
                o.metadata.insert("index_digest".into(), i.clone());
            }
        }
    }
    let before = manifest_of(outputs.clone());
    let files = release_sboms(store, project, lock, &before)?;
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(before.source_date_epoch);
    for f in &files {
        let path = dir.join(&f.path);
        write_atomic(&path, &f.bytes)?;
        // As placed outputs are: readable by all, dated SOURCE_DATE_EPOCH.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::File::open(&path)?.set_modified(time)?;
        outputs.insert(
            f.output.clone(),
            crate::manifest::Output {
                path: f.path.clone(),
                digest: farm_store::tree_digest(&path)?.to_string(),
                size: f.bytes.len() as u64,
                metadata: Default::default(),
            },
        );
    }
    if let Some(sbom_dir) = files
        .first()
        .and_then(|f| dir.join(&f.path).parent().map(Path::to_path_buf))
    {
        std::fs::File::open(&sbom_dir)?.set_modified(time)?;
    }
    let created = farm_formats::timestamp::rfc3339(before.source_date_epoch);
    for (key, o) in outputs.iter_mut().filter(|(k, _)| k.starts_with("image.")) {
        let name = &key["image.".len()..];
        let attachments: Vec<farm_images::referrers::Attachment> = files
            .iter()
            .filter(|f| f.output.starts_with(&format!("sbom.image.{name}.")))
            .map(|f| farm_images::referrers::Attachment {
                artifact_type: if f.output.ends_with(".spdx") {
                    farm_images::referrers::MEDIA_TYPE_SPDX
                } else {
                    farm_images::referrers::MEDIA_TYPE_CYCLONEDX
                }
                .to_string(),
                title: f.path.rsplit('/').next().unwrap_or(&f.path).to_string(),
                bytes: f.bytes.clone(),
                annotations: Default::default(),
            })
            .collect();
        if attachments.is_empty() {
            continue;
        }
        let layout = dir.join(&o.path);
        let referrers = farm_images::referrers::attach_to_layout(&layout, None, &attachments, &created)
            .with_context(|| format!("attaching the SBOMs of the {name} image to {}", layout.display()))?;
        let mut att = serde_json::json!({
            "tree_digest": o.digest,
            "size": o.size,
            "referrers": referrers.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        });
        o.digest = farm_store::tree_digest(&layout)?.to_string();
        o.size = crate::output::tree_size(&layout)?;
        // index.json now lists the artifacts too.
        if let Some(before) = o.metadata.get("index_digest").cloned() {
            att["index_digest"] = before;
            let index = std::fs::read(layout.join("index.json"))?;
            o.metadata.insert(
                "index_digest".into(),
                farm_lockfiles::integrity::sha256_of(&index).to_string().into(),
            );
        }
        o.metadata.insert(ATTESTATIONS_METADATA.into(), att);
    }
    Ok(())
}

/// What `farm sbom` is asked for.
#[derive(Debug, Clone)]
pub struct SbomOptions {
    pub format: SbomFormat,
    /// One image's SBOM (`app`, `ollama`) instead of the release's.
    pub image: Option<String>,
    /// The build's output directory; `None` is `.farm/out`.
    pub out: Option<PathBuf>,
    /// The lock alone, even when there is a build.
    pub lock_only: bool,
}

/// The project's lock, with its bytes.
fn read_lock(project: &Project) -> Result<(Lock, Vec<u8>)> {
    let path = project.lock_path();
    let bytes = std::fs::read(&path).with_context(|| format!("{}: no lock\nhint: run `farm lock`", path.display()))?;
    let lock = Lock::from_toml(&path.display().to_string(), &String::from_utf8_lossy(&bytes))?;
    Ok((lock, bytes))
}

/// The last build's release when it was built from this lock; the lock
/// alone (no outputs) when there is no build or `lock_only`.
fn release_of(project: &Project, out: &Path, lock_bytes: &[u8], lock_only: bool) -> Result<Release> {
    let manifest = out.join(MANIFEST_FILE);
    if lock_only || !manifest.exists() {
        let toml = std::fs::read(project.root.join(farm_project::CONFIG_FILE)).ok();
        return Ok(Release::unbuilt(
            &project.config.project.name,
            &project.config.project.version,
            project.source_date_epoch(),
            lock_bytes,
            toml.as_deref(),
        ));
    }
    let release = Release::read_manifest(&manifest)?;
    let now = farm_lockfiles::integrity::sha256_of(lock_bytes).to_string();
    if release.lock_digest.as_deref() != Some(now.as_str()) {
        bail!(
            "{}: built from farm.lock {}, and farm.lock is now {now}\nhint: run `farm build` again, or `farm sbom --lock-only` for the lock alone",
            manifest.display(),
            release.lock_digest.as_deref().unwrap_or("(unknown)")
        );
    }
    Ok(release)
}

/// Entry point of `farm sbom`: the document's bytes.
pub fn sbom(ctx: &Context, opts: &SbomOptions) -> Result<Vec<u8>> {
    let project = Project::load(&ctx.project_dir)?;
    let (lock, lock_bytes) = read_lock(&project)?;
    let out = opts.out.clone().unwrap_or_else(|| project.state().out());
    let release = release_of(&project, &out, &lock_bytes, opts.lock_only)?;
    let store = Store::open(&ctx.farm_home)?;
    let (model_host, image_registry) = names(&project);
    let lookup = store_lookup(&store);
    let licenses = StoreLicenses::new(&store);
    let inputs = SbomInputs {
        lock: &lock,
        release: &release,
        artifact_path: &lookup,
        license_memo: Some(&licenses),
        model_host: model_host.as_deref(),
        image_registry: image_registry.as_deref(),
    };
    let scope = match &opts.image {
        Some(i) => Scope::Image(i.clone()),
        None => Scope::Release,
    };
    document(opts.format, &inputs, &scope)
}

/// Entry point of `farm sbom --diff OLD`: the packages added, removed and
/// changed between the SBOM `old` (SPDX or CycloneDX) and the current lock.
pub fn sbom_diff(ctx: &Context, old: &Path) -> Result<farm_attest::diff::Diff> {
    let shown = old.display().to_string();
    let before = std::fs::read(old).with_context(|| format!("--diff {shown}"))?;
    let before = farm_attest::diff::packages(&shown, &before)?;
    let now = sbom(
        ctx,
        &SbomOptions {
            format: SbomFormat::Cyclonedx,
            image: None,
            out: None,
            lock_only: true,
        },
    )?;
    let now = farm_attest::diff::packages("the current lock's SBOM", &now)?;
    Ok(farm_attest::diff::Diff::between(&before, &now))
}

/// What `farm provenance` is asked for.
#[derive(Debug, Clone, Default)]
pub struct ProvenanceOptions {
    /// The build's output directory; `None` is `.farm/out`.
    pub out: Option<PathBuf>,
}

/// The commit the project is at, and whether it has uncommitted changes.
fn git_source(root: &Path) -> Option<SourceRevision> {
    farm_project::git::revision(root).map(|r| SourceRevision {
        revision: r.commit,
        clean: r.clean,
    })
}

/// When the last build finished (its manifest's mtime) and started (that,
/// less the total of farm-metrics.json).
fn run_times(out: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let finished = std::fs::metadata(out.join(MANIFEST_FILE))
        .and_then(|m| m.modified())
        .ok();
    let total = std::fs::read(out.join(crate::manifest::METRICS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("total_ms")?.as_u64());
    let started = match (finished, total) {
        (Some(f), Some(ms)) => f.checked_sub(Duration::from_millis(ms)),
        _ => None,
    };
    (started, finished)
}

struct Built {
    project: Project,
    lock: Lock,
    out: PathBuf,
    release: Release,
}

fn last_build(ctx: &Context, out: Option<&Path>) -> Result<Built> {
    let project = Project::load(&ctx.project_dir)?;
    let (lock, lock_bytes) = read_lock(&project)?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| project.state().out());
    if !out.join(MANIFEST_FILE).exists() {
        bail!(
            "{}: no build here\nhint: run `farm build` first",
            out.join(MANIFEST_FILE).display()
        );
    }
    let release = release_of(&project, &out, &lock_bytes, false)?;
    Ok(Built {
        project,
        lock,
        out,
        release,
    })
}

fn provenance_statement(b: &Built) -> Result<serde_json::Value> {
    let (model_host, _) = names(&b.project);
    let manifest_bytes = std::fs::read(b.out.join(MANIFEST_FILE))?;
    let (started, finished) = run_times(&b.out);
    let inputs = ProvenanceInputs {
        lock: &b.lock,
        release: &b.release,
        out_dir: Some(&b.out),
        manifest_sha256: Some(farm_lockfiles::integrity::sha256_of(&manifest_bytes).hex()),
        source: git_source(&b.project.root),
        // The manifest names what was built, not what was asked for: its outputs.
        targets: b.release.outputs.keys().cloned().collect(),
        run: RunFacts {
            started,
            finished,
            invocation_id: None,
            sandbox: None,
        },
        model_host: model_host.as_deref(),
    };
    Ok(provenance::statement(&inputs)?)
}

/// Entry point of `farm provenance`: the unsigned Statement's bytes.
pub fn provenance(ctx: &Context, opts: &ProvenanceOptions) -> Result<Vec<u8>> {
    let b = last_build(ctx, opts.out.as_deref())?;
    Ok(provenance::to_bytes(&provenance_statement(&b)?))
}

/// What `farm sign` is asked to do.
#[derive(Debug, Clone)]
pub struct SignOptions {
    pub key: PathBuf,
    /// Statements or SBOMs to sign; none signs a fresh provenance and the release's SBOMs.
    pub files: Vec<PathBuf>,
    /// The build's output directory; `None` is `.farm/out`.
    pub out: Option<PathBuf>,
    /// Where envelopes go; `None` is `<out>/attestations` (no files) or beside each file.
    pub output_dir: Option<PathBuf>,
}

/// Writes `bytes` at `path` atomically.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| dir.display().to_string())?;
    std::io::Write::write_all(&mut tmp, bytes).with_context(|| path.display().to_string())?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| path.display().to_string())?;
    Ok(())
}

/// Entry point of `farm sign`: the envelopes written.
pub fn sign(ctx: &Context, opts: &SignOptions) -> Result<Vec<PathBuf>> {
    // The key first: a wrong key fails before anything is computed or written.
    let password = farm_attest::keys::password_from_env();
    let key = PrivateKey::read(&opts.key, password.as_deref())?;
    let b = last_build(ctx, opts.out.as_deref())?;
    // Subjects hash every output: once, from the provenance when there is one.
    let statement = match opts.files.is_empty() {
        true => Some(provenance_statement(&b)?),
        false => None,
    };
    let subjects: Vec<provenance::Subject> = match &statement {
        Some(st) => serde_json::from_value(st["subject"].clone())?,
        None => provenance::subjects(&b.release, Some(&b.out))?,
    };
    let mut envelopes: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    if let Some(statement) = &statement {
        let dir = opts.output_dir.clone().unwrap_or_else(|| b.out.join(ATTESTATIONS_DIR));
        envelopes.push((dir.join("provenance.intoto.jsonl"), provenance::to_bytes(statement)));
        let store = Store::open(&ctx.farm_home)?;
        let (model_host, image_registry) = names(&b.project);
        let lookup = store_lookup(&store);
        let licenses = StoreLicenses::new(&store);
        let inputs = SbomInputs {
            lock: &b.lock,
            release: &b.release,
            artifact_path: &lookup,
            license_memo: Some(&licenses),
            model_host: model_host.as_deref(),
            image_registry: image_registry.as_deref(),
        };
        let sbom = farm_attest::sbom::build(&inputs, &Scope::Release)?;
        for (name, predicate, doc) in [
            ("sbom.spdx", provenance::SPDX_PREDICATE, spdx::document(&sbom)),
            (
                "sbom.cyclonedx",
                provenance::CYCLONEDX_PREDICATE,
                cyclonedx::document(&sbom),
            ),
        ] {
            let st = provenance::sbom_statement(&subjects, predicate, doc);
            envelopes.push((dir.join(format!("{name}.intoto.jsonl")), provenance::to_bytes(&st)));
        }
    } else {
        for file in &opts.files {
            let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", file.display()))?;
            let payload = match provenance::document_kind(&value) {
                Some(DocumentKind::Statement) => bytes,
                Some(DocumentKind::Spdx) => provenance::to_bytes(&provenance::sbom_statement(
                    &subjects,
                    provenance::SPDX_PREDICATE,
                    value,
                )),
                Some(DocumentKind::CycloneDx) => provenance::to_bytes(&provenance::sbom_statement(
                    &subjects,
                    provenance::CYCLONEDX_PREDICATE,
                    value,
                )),
                None => bail!(
                    "{}: neither an in-toto Statement, an SPDX document nor a CycloneDX BOM; farm signs those",
                    file.display()
                ),
            };
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = name.strip_suffix(".json").unwrap_or(&name);
            let dir = opts
                .output_dir
                .clone()
                .unwrap_or_else(|| file.parent().map(Path::to_path_buf).unwrap_or_default());
            envelopes.push((dir.join(format!("{stem}.intoto.jsonl")), payload));
        }
    }
    let mut written = Vec::new();
    for (path, payload) in envelopes {
        let env = farm_attest::Envelope::sign(farm_attest::dsse::INTOTO_PAYLOAD_TYPE, &payload, &key);
        write_atomic(&path, &env.to_line())?;
        written.push(path);
    }
    Ok(written)
}

/// What `farm verify-attestation` is asked to check.
#[derive(Debug, Clone)]
pub struct VerifyAttestationOptions {
    /// The public key (SPKI PEM).
    pub key: PathBuf,
    pub envelopes: Vec<PathBuf>,
    /// The build's output directory; `None` is `.farm/out`.
    pub out: Option<PathBuf>,
}

/// Entry point of `farm verify-attestation`: one report per envelope.
pub fn verify_attestation(ctx: &Context, opts: &VerifyAttestationOptions) -> Result<Vec<Report>> {
    let key = PublicKey::read(&opts.key)?;
    // Without a project the lock checks fail in the report, naming why.
    let project = Project::load(&ctx.project_dir).ok();
    let lock = match &project {
        Some(p) => Some(read_lock(p)?),
        None => None,
    };
    let lock_path = project.as_ref().map(|p| p.lock_path()).unwrap_or_default();
    let out = opts.out.clone().or_else(|| project.as_ref().map(|p| p.state().out()));
    let model_host = project.as_ref().and_then(|p| names(p).0);
    let against = Against {
        key: &key,
        out_dir: out.as_deref(),
        lock: lock.as_ref().map(|(l, b)| (l, b.as_slice(), lock_path.as_path())),
        model_host: model_host.as_deref(),
    };
    let mut reports = Vec::new();
    for e in &opts.envelopes {
        let shown = e.display().to_string();
        let report = match std::fs::read(e) {
            Ok(bytes) => farm_attest::verify::verify(&shown, &bytes, &against),
            Err(err) => Report {
                envelope: shown.clone(),
                predicate_type: None,
                checks: vec![Check {
                    ok: false,
                    what: "envelope".into(),
                    message: format!("{shown}: {err}"),
                }],
            },
        };
        reports.push(report);
    }
    Ok(reports)
}

/// What `farm keygen` is asked to write.
#[derive(Debug, Clone)]
pub struct KeygenOptions {
    pub key_type: KeyType,
    /// `PREFIX.key` and `PREFIX.pub` are written.
    pub output: PathBuf,
    /// Write cosign's encrypted key file, with the password from
    /// FARM_SIGNING_PASSWORD or COSIGN_PASSWORD.
    pub encrypt: bool,
}

/// Entry point of `farm keygen`: the private and public key files written.
pub fn keygen(opts: &KeygenOptions) -> Result<(PathBuf, PathBuf)> {
    let password = if opts.encrypt {
        Some(
            farm_attest::keys::password_from_env()
                .context("--encrypt needs a password: set FARM_SIGNING_PASSWORD (or COSIGN_PASSWORD)")?,
        )
    } else {
        None
    };
    let key = PrivateKey::generate(opts.key_type);
    Ok(farm_attest::keys::write_key_pair(
        &key,
        &opts.output,
        password.as_deref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use farm_attest::license::detect_with;

    fn package(dir: &Path, license: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let json = format!(r#"{{"name":"left-pad","version":"1.3.0","license":"{license}"}}"#);
        std::fs::write(dir.join("package.json"), json).unwrap();
    }

    /// A license read from a store entry is remembered in the store (a new
    /// build does not read the archive again: changing the entry behind the
    /// store's back does not change the answer), while a path outside the
    /// store is read every time.
    #[test]
    fn licenses_of_store_entries_are_remembered_and_others_are_not() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path().join("home")).unwrap();
        let src = home.path().join("src");
        package(&src, "MIT");
        let entry = store.add_tree(&src, "left-pad-1.3.0", "npm").unwrap();
        let mit = Some("MIT".to_string());

        let first = StoreLicenses::new(&store);
        assert_eq!(
            detect_with(Some(&first), LicenseSource::Npm, &entry.path).expression,
            mit
        );

        // Rewrite the entry in place (root can); only a read would notice.
        let manifest = entry.path.join("package.json");
        let mut perms = std::fs::metadata(&entry.path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&entry.path, perms).unwrap();
        let _ = std::fs::remove_file(&manifest);
        package(&entry.path, "GPL-3.0-only");
        let later = StoreLicenses::new(&store);
        assert_eq!(
            detect_with(Some(&later), LicenseSource::Npm, &entry.path).expression,
            mit,
            "the second build read the entry again instead of the remembered answer"
        );
        // Another reader of the same entry is a different question.
        assert_eq!(
            detect_with(Some(&later), LicenseSource::Wheel, &entry.path).expression,
            None
        );

        let outside = home.path().join("outside");
        package(&outside, "MIT");
        assert_eq!(detect_with(Some(&later), LicenseSource::Npm, &outside).expression, mit);
        package(&outside, "Apache-2.0");
        let again = StoreLicenses::new(&store);
        assert_eq!(
            detect_with(Some(&again), LicenseSource::Npm, &outside).expression,
            Some("Apache-2.0".to_string()),
            "a path outside the store must be read every time"
        );
    }
}
