//! `farm push` and `farm image load`: hand the images of the last build to
//! a registry (OCI distribution API) or to the local Docker/Podman engine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use farm_lockfiles::http::{Client, ClientOptions};

use crate::Context;
use farm_engine::manifest::{Manifest, MANIFEST_FILE};
use farm_project::Project;

#[derive(clap::Args)]
pub struct PushArgs {
    /// Registry base URL, e.g. https://registry.example or http://127.0.0.1:5000.
    #[arg(long, env = "FARM_PUSH_REGISTRY")]
    registry: String,
    /// Tag to push (repeatable) [default: the project version].
    #[arg(long)]
    tag: Vec<String>,
    /// Mount blobs from this repository of the same registry when possible.
    #[arg(long, value_name = "REPOSITORY")]
    mount_from: Option<String>,
    /// The build's output directory [default: .farm/out].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Images to push (app, ollama) [default: all built].
    images: Vec<String>,
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Load the last build's images into Docker or Podman (DOCKER_HOST or the default socket).
    Load {
        /// The build's output directory [default: .farm/out].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Images to load (app, ollama) [default: all built].
        images: Vec<String>,
    },
}

/// The images of the last build: name → (layout directory, `repo:tag` reference).
fn built_images(ctx: &Context, out: Option<PathBuf>, wanted: &[String]) -> Result<BTreeMap<String, (PathBuf, String)>> {
    let project = Project::load(&ctx.project_dir)?;
    let out = out.unwrap_or_else(|| project.root.join(".farm").join("out"));
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

pub fn run_push(ctx: &Context, args: PushArgs) -> Result<u8> {
    let images = built_images(ctx, args.out.clone(), &args.images)?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = Client::new(ClientOptions::from_env());
    let registry = farm_lockfiles::oci::RegistryClient::new(&client, &args.registry, None)
        .with_context(|| format!("--registry {}", args.registry))?;
    for (name, (layout, reference)) in images {
        let (repo, version) = reference.rsplit_once(':').unwrap_or((reference.as_str(), "latest"));
        let tags = if args.tag.is_empty() {
            vec![version.to_string()]
        } else {
            args.tag.clone()
        };
        let options = farm_images::PushOptions {
            mount_from: args.mount_from.clone(),
            ..Default::default()
        };
        let report = rt
            .block_on(farm_images::push(&layout, &registry, repo, &tags, &options))
            .with_context(|| format!("pushing the {name} image to {}", args.registry))?;
        ctx.reporter.info(&format!(
            "{name}: {} blobs uploaded, {} already there, {} mounted",
            report.pushed_blobs, report.skipped_blobs, report.mounted_blobs
        ));
        for r in &report.references {
            println!("{r}");
        }
    }
    Ok(0)
}

pub fn run_image(ctx: &Context, cmd: ImageCommand) -> Result<u8> {
    let ImageCommand::Load { out, images } = cmd;
    let images = built_images(ctx, out, &images)?;
    let store = farm_store::Store::open(&ctx.farm_home)?;
    let staging = store.temp_dir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let host = std::env::var("DOCKER_HOST").ok();
    for (name, (layout, reference)) in images {
        let archive = staging.path().join(format!("{name}.tar"));
        farm_images::write_docker_archive(&layout, &reference, &archive)
            .with_context(|| format!("writing the {name} image as a docker archive"))?;
        let loaded = rt.block_on(farm_images::load_into_engine(&archive, host.as_deref())).with_context(|| {
            format!(
                "loading the {name} image into {}\nhint: start Docker, or Podman's API service (`podman system service`), or set DOCKER_HOST",
                host.as_deref().unwrap_or("the default engine socket")
            )
        })?;
        for l in loaded {
            println!("{} {}", l.reference, l.id);
        }
        let _ = std::fs::remove_file(&archive);
    }
    Ok(0)
}
