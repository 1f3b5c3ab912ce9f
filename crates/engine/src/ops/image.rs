//! `farm push` and `farm image load`: hand the images of the last build to
//! a registry (OCI distribution API) or to the local Docker/Podman engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use farm_images::referrers::{Attachment, ANNOTATION_PREDICATE_TYPE, MEDIA_TYPE_DSSE};
use farm_images::{LoadedImage, PushReport};
use farm_lockfiles::http::{Client, ClientOptions};
use farm_lockfiles::redact::redact_url;
use farm_project::Project;

use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::Context;

/// What `farm push` is asked to do.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The registry's base URL.
    pub registry: String,
    /// Tags to push; empty is each image's own (the project version).
    pub tags: Vec<String>,
    /// A repository of the same registry to mount blobs from.
    pub mount_from: Option<String>,
    /// The build's output directory; `None` is `.farm/out`.
    pub out: Option<PathBuf>,
    /// Images to push; empty is every image the build made.
    pub images: Vec<String>,
}

/// What `farm image load` is asked to do.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The build's output directory; `None` is `.farm/out`.
    pub out: Option<PathBuf>,
    /// Images to load; empty is every image the build made.
    pub images: Vec<String>,
}

/// The images of the last build: name → (layout directory, `repo:tag` reference).
fn built_images(ctx: &Context, out: Option<PathBuf>, wanted: &[String]) -> Result<BTreeMap<String, (PathBuf, String)>> {
    let project = Project::load(&ctx.project_dir)?;
    let out = out.unwrap_or_else(|| project.state().out());
    let path = out.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "{}: no build output\nhint: run `farm build --hermetic` first",
            path.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&bytes).with_context(|| path.display().to_string())?;
    let mut images = BTreeMap::new();
    for (key, o) in &manifest.outputs {
        let Some(name) = key.strip_prefix("image.") else {
            continue;
        };
        let reference = o
            .metadata
            .get("reference")
            .and_then(|r| r.as_str())
            .unwrap_or(name)
            .to_string();
        images.insert(name.to_string(), (out.join(&o.path), reference));
    }
    if images.is_empty() {
        bail!(
            "{}: the last build made no images\nhint: run `farm build --hermetic images`",
            path.display()
        );
    }
    for w in wanted {
        if !images.contains_key(w) {
            let known: Vec<&str> = images.keys().map(String::as_str).collect();
            bail!("no image {w:?} in the last build (it has: {})", known.join(", "));
        }
    }
    if !wanted.is_empty() {
        images.retain(|k, _| wanted.contains(k));
    }
    Ok(images)
}

/// Entry point of `farm push`: pushes each image in turn and hands its
/// name and report to `pushed` as soon as it is in the registry.
pub fn push(ctx: &Context, opts: &PushOptions, pushed: &mut dyn FnMut(&str, &PushReport)) -> Result<()> {
    let images = built_images(ctx, opts.out.clone(), &opts.images)?;
    let out = match &opts.out {
        Some(o) => o.clone(),
        None => Project::load(&ctx.project_dir)?.state().out(),
    };
    let created = build_date(&out)?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = Client::new(ClientOptions::from_env());
    // The URL may carry credentials (`https://user:token@host/`): shown redacted only.
    let shown = redact_url(&opts.registry);
    let registry = farm_lockfiles::oci::RegistryClient::new(&client, &opts.registry, None)
        .with_context(|| format!("--registry {shown}"))?;
    for (name, (layout, reference)) in images {
        let (repo, version) = reference.rsplit_once(':').unwrap_or((reference.as_str(), "latest"));
        let tags = if opts.tags.is_empty() {
            vec![version.to_string()]
        } else {
            opts.tags.clone()
        };
        let options = farm_images::PushOptions {
            mount_from: opts.mount_from.clone(),
            ..Default::default()
        };
        let mut report = rt
            .block_on(farm_images::push(&layout, &registry, repo, &tags, &options))
            .with_context(|| format!("pushing the {name} image to {shown}"))?;
        // Then what refers to it: the SBOMs in its layout, the envelopes `farm sign` wrote.
        let extra = signed_attestations(&out, &report.manifest_digest)?;
        let referrers = rt
            .block_on(farm_images::referrers::push_referrers(
                &layout,
                tags.first().map(String::as_str),
                &registry,
                repo,
                &extra,
                &created,
            ))
            .with_context(|| format!("pushing the attestations of the {name} image to {shown}"))?;
        report.referrers = Some(referrers);
        pushed(&name, &report);
    }
    Ok(())
}

/// The build's date (RFC 3339 of its SOURCE_DATE_EPOCH), for the artifact manifests.
fn build_date(out: &Path) -> Result<String> {
    let path = out.join(MANIFEST_FILE);
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).with_context(|| path.display().to_string())?)
        .with_context(|| path.display().to_string())?;
    Ok(farm_formats::timestamp::rfc3339(manifest.source_date_epoch))
}

/// The envelopes in `<out>/attestations` (`farm sign`) whose Statement
/// names the image `digest` among its subjects, as artifacts to attach.
/// The signature is not checked here: whoever reads them checks it.
fn signed_attestations(out: &Path, digest: &farm_lockfiles::integrity::Integrity) -> Result<Vec<Attachment>> {
    let dir = out.join(crate::ops::attest::ATTESTATIONS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".intoto.jsonl"))
        .collect();
    paths.sort();
    let mut found = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let bytes = std::fs::read(&path).with_context(|| shown.clone())?;
        let envelope = farm_attest::Envelope::from_json(&shown, &bytes)?;
        let statement: serde_json::Value = envelope
            .payload_bytes()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .with_context(|| format!("{shown}: the payload is not base64 of a JSON in-toto Statement"))?;
        let names_image = statement["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["digest"]["sha256"].as_str() == Some(digest.hex().as_str()));
        if !names_image {
            continue;
        }
        let mut annotations = BTreeMap::new();
        if let Some(p) = statement["predicateType"].as_str() {
            annotations.insert(ANNOTATION_PREDICATE_TYPE.to_string(), p.to_string());
        }
        found.push(Attachment {
            artifact_type: MEDIA_TYPE_DSSE.into(),
            title: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            annotations,
        });
    }
    Ok(found)
}

/// Entry point of `farm image load`: loads each image in turn and hands
/// what the engine loaded to `loaded` as soon as it has it.
pub fn load(ctx: &Context, opts: &LoadOptions, loaded: &mut dyn FnMut(&[LoadedImage])) -> Result<()> {
    let images = built_images(ctx, opts.out.clone(), &opts.images)?;
    let store = farm_store::Store::open(&ctx.farm_home)?;
    let staging = store.temp_dir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let host = std::env::var("DOCKER_HOST").ok();
    let shown = host.as_deref().map(redact_url);
    for (name, (layout, reference)) in images {
        let archive = staging.path().join(format!("{name}.tar"));
        farm_images::write_docker_archive(&layout, &reference, &archive)
            .with_context(|| format!("writing the {name} image as a docker archive"))?;
        let images = rt.block_on(farm_images::load_into_engine(&archive, host.as_deref())).with_context(|| {
            format!(
                "loading the {name} image into {}\nhint: start Docker, or Podman's API service (`podman system service`), or set DOCKER_HOST",
                shown.as_deref().unwrap_or("the default engine socket")
            )
        })?;
        loaded(&images);
        let _ = std::fs::remove_file(&archive);
    }
    Ok(())
}
