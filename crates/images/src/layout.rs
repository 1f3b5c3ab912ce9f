//! Building an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) from layer specs, and reading one back for the
//! archive and push code.
//!
//! Every document is canonical JSON (sorted keys, no whitespace) of
//! oci-spec's types; dates come from the spec's `created` epoch only. The
//! layout appears at its path whole or not at all.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use farm_formats::canonical_json;
use farm_lockfiles::integrity::Integrity;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, Digest, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, ImageIndex,
    ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder,
    RootFsBuilder,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cache::LayerCache;
use crate::compress::{produce_layer, Compression, CompressionSettings, CompressorRuns};
use crate::digest::{blob_path, parse_sha256};
use crate::layer::{LayerPlan, LayerSpec, LowerDirs};
use crate::ImageError;

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Manifests and configs are small; anything larger is not one of ours.
const MAX_DOCUMENT_BYTES: u64 = 16 << 20;

/// What to build: layers bottom to top (put the ones that change least
/// first), the runtime config, and the date everything carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Repository name, e.g. `farm-app`.
    pub name: String,
    pub tag: String,
    pub layers: Vec<LayerSpec>,
    pub config: ImageConfig,
    /// SOURCE_DATE_EPOCH: the config's `created`, every history entry's
    /// `created`, and the ceiling for file mtimes.
    pub created: i64,
    /// Manifest annotations, e.g. `org.opencontainers.image.{revision,source,version}`;
    /// `org.opencontainers.image.created` is added from `created` unless given.
    pub annotations: BTreeMap<String, String>,
    pub compression: Compression,
    /// GOARCH spelling: `amd64`, `arm64`.
    pub architecture: String,
    pub os: String,
}

impl ImageSpec {
    /// A linux/amd64, gzip image with an empty config.
    pub fn new(name: impl Into<String>, tag: impl Into<String>, created: i64) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            tag: tag.into(),
            layers: Vec::new(),
            config: ImageConfig::default(),
            created,
            annotations: BTreeMap::new(),
            compression: Compression::Gzip,
            architecture: "amd64".into(),
            os: "linux".into(),
        }
    }
}

/// The runtime defaults in the image config; empty fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `user`, `uid`, `user:group` or `uid:gid`.
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// `8000/tcp`, `53/udp`.
    pub exposed_ports: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Absolute paths.
    pub volumes: Vec<String>,
}

/// One layer as written, for farm's build manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuiltLayer {
    pub name: String,
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Integrity,
    /// SHA-256 of the compressed blob.
    pub digest: Integrity,
    pub size: u64,
    pub media_type: String,
    /// Whether the blob came from the cache. A fact about this run, not the
    /// image, so it is not serialised (the build manifest must not change
    /// between a cold and a warm build).
    #[serde(skip_serializing)]
    pub reused_from_cache: bool,
}

/// Run-to-run facts about a build; not part of the image's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// How many times the compressor ran (0 when every layer came from the cache).
    pub layers_compressed: usize,
    pub layers_from_cache: usize,
    /// How many times a layer's tar was generated: once per layer, unless
    /// a cache hint proved wrong.
    pub layer_tar_passes: usize,
}

/// The digests of what [`build_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuiltImage {
    /// `name:tag`.
    pub reference: String,
    /// SHA-256 of `index.json`.
    pub index_digest: Integrity,
    /// The image's identity: what a registry reports for it.
    pub manifest_digest: Integrity,
    pub manifest_size: u64,
    pub config_digest: Integrity,
    pub compression: CompressionSettings,
    pub layers: Vec<BuiltLayer>,
    #[serde(skip)]
    pub stats: BuildStats,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("image spec: {field} is {found:?}; expected {expected}")]
    InvalidSpec {
        field: String,
        found: String,
        expected: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("layer cache {path}: {source}; hint: make the cache directory writable, or build without a cache")]
    Cache { path: PathBuf, source: io::Error },
    #[error("{what}: {message}")]
    Document { what: String, message: String },
    #[error("{dir} is not an OCI image layout: {message}; hint: expected `oci-layout`, `index.json` and `blobs/` as build_image writes them")]
    NotALayout { dir: PathBuf, message: String },
    #[error("{dir}: no image {wanted:?} in index.json (it has {available}); hint: pass one of those tags")]
    NoSuchImage {
        dir: PathBuf,
        wanted: String,
        available: String,
    },
    #[error("{path}: expected {expected}, found {found}; the layout was changed after it was written")]
    BlobMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path} exists and is not a directory; hint: remove it or choose another output path")]
    NotADirectory { path: PathBuf },
}

fn invalid(field: impl Into<String>, found: impl Into<String>, expected: &str) -> LayoutError {
    LayoutError::InvalidSpec {
        field: field.into(),
        found: found.into(),
        expected: expected.into(),
    }
}

/// Repository names as the distribution spec allows them: `/`-separated
/// components of lowercase letters and digits joined by `.`, `_`, `__` or dashes.
pub(crate) fn valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            let bytes = part.as_bytes();
            let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
                return false;
            }
            let mut i = 0;
            while i < bytes.len() {
                if alnum(bytes[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < bytes.len() && !alnum(bytes[i]) {
                    i += 1;
                }
                let sep = &part[start..i];
                if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
                    return false;
                }
            }
            true
        })
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn validate(spec: &ImageSpec) -> Result<(), LayoutError> {
    if !valid_repository(&spec.name) {
        return Err(invalid(
            "name",
            &spec.name,
            "a repository name: lowercase letters and digits, separated by `.`, `_`, `-` or `/`",
        ));
    }
    if !valid_tag(&spec.tag) {
        return Err(invalid(
            "tag",
            &spec.tag,
            "up to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`",
        ));
    }
    if spec.created < 0 {
        return Err(invalid(
            "created",
            spec.created.to_string(),
            "SOURCE_DATE_EPOCH: seconds since 1970, not negative",
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, layer) in spec.layers.iter().enumerate() {
        if layer.name.trim().is_empty() || !names.insert(layer.name.as_str()) {
            return Err(invalid(
                format!("layers[{i}].name"),
                &layer.name,
                "a non-empty name used by no other layer",
            ));
        }
    }
    for (i, env) in spec.config.env.iter().enumerate() {
        if !env.contains('=') || env.starts_with('=') {
            return Err(invalid(format!("config.env[{i}]"), env, "`NAME=value`"));
        }
    }
    for (i, port) in spec.config.exposed_ports.iter().enumerate() {
        let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
        if number.parse::<u16>().map_or(true, |n| n == 0) || !matches!(proto, "tcp" | "udp" | "sctp") {
            return Err(invalid(
                format!("config.exposed_ports[{i}]"),
                port,
                "`PORT/tcp`, `PORT/udp` or `PORT/sctp` with PORT in 1..=65535",
            ));
        }
    }
    for (i, volume) in spec.config.volumes.iter().enumerate() {
        if !volume.starts_with('/') {
            return Err(invalid(format!("config.volumes[{i}]"), volume, "an absolute path"));
        }
    }
    if let Some(dir) = spec.config.working_dir.as_deref().filter(|d| !d.starts_with('/')) {
        return Err(invalid("config.working_dir", dir, "an absolute path"));
    }
    for (field, value) in [("architecture", &spec.architecture), ("os", &spec.os)] {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(invalid(field, value, "a GOARCH/GOOS name such as amd64 or linux"));
        }
    }
    Ok(())
}

fn oci_digest(d: &Integrity) -> Digest {
    Digest::from_str(&d.to_string()).expect("sha256 digests are valid OCI digests")
}

fn document_err(what: &str) -> impl Fn(oci_spec::OciSpecError) -> LayoutError + '_ {
    move |e| LayoutError::Document {
        what: what.into(),
        message: e.to_string(),
    }
}

/// Writes `bytes` as a blob of `dir` and returns its digest and size.
fn write_blob(dir: &Path, bytes: &[u8]) -> Result<(Integrity, u64), LayoutError> {
    let digest = farm_lockfiles::integrity::sha256_of(bytes);
    let path = blob_path(dir, &digest);
    write_file(&path, bytes)?;
    Ok((digest, bytes.len() as u64))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let io_err = |source| LayoutError::Io {
        path: path.into(),
        source,
    };
    let mut file = fs::File::create(path).map_err(io_err)?;
    io::Write::write_all(&mut file, bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// Builds `spec` into an OCI image layout at `layout_dir`, replacing what
/// is there as a whole (on failure an existing layout is left untouched).
/// With `cache_dir`, compressed layers are kept there and reused by diffID.
pub fn build_image(spec: &ImageSpec, layout_dir: &Path, cache_dir: Option<&Path>) -> Result<BuiltImage, ImageError> {
    validate(spec)?;
    let epoch = spec.created as u64;
    // Refused above when negative.
    let created = farm_formats::timestamp::rfc3339(spec.created as u64);
    let cache = cache_dir.map(LayerCache::open).transpose()?;

    let parent = match layout_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(|source| LayoutError::Io {
        path: parent.into(),
        source,
    })?;
    let file_name = layout_dir.file_name().map_or("layout".into(), |n| n.to_string_lossy());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.tmp-"))
        .tempdir_in(parent)
        .map_err(|source| LayoutError::Io {
            path: parent.into(),
            source,
        })?;
    let dir = tmp.path();
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|source| LayoutError::Io { path: blobs, source })?;

    // Planning reads only metadata and each layer needs the directories of
    // those below; writing and compressing are independent, so parallel.
    let mut lower = LowerDirs::new();
    let mut plans = Vec::with_capacity(spec.layers.len());
    for layer in &spec.layers {
        let plan = LayerPlan::new(layer, epoch, &lower)?;
        plan.record_dirs(&mut lower);
        plans.push(plan);
    }
    let runs = CompressorRuns::default();
    let produced = plans
        .par_iter()
        .map(|plan| produce_layer(plan, spec.compression, dir, cache.as_ref(), &runs))
        .collect::<Result<Vec<_>, ImageError>>()?;

    let media_type = spec.compression.media_type();
    let layers: Vec<BuiltLayer> = spec
        .layers
        .iter()
        .zip(&produced)
        .map(|(layer, p)| BuiltLayer {
            name: layer.name.clone(),
            diff_id: p.diff_id.clone(),
            digest: p.digest.clone(),
            size: p.size,
            media_type: media_type.into(),
            reused_from_cache: p.reused_from_cache,
        })
        .collect();

    let config_bytes = config_document(spec, &created, &layers)?;
    let (config_digest, config_size) = write_blob(dir, &config_bytes)?;

    let mut annotations: HashMap<String, String> =
        spec.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    annotations
        .entry(ANNOTATION_CREATED.into())
        .or_insert_with(|| created.clone());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            oci_digest(&config_digest),
        ))
        .layers(
            layers
                .iter()
                .map(|l| Descriptor::new(MediaType::from(media_type), l.size, oci_digest(&l.digest)))
                .collect::<Vec<_>>(),
        )
        .annotations(annotations)
        .build()
        .map_err(document_err("image manifest"))?;
    let manifest_bytes = canonical(&manifest, "image manifest")?;
    let (manifest_digest, manifest_size) = write_blob(dir, &manifest_bytes)?;

    let mut descriptor = Descriptor::new(MediaType::ImageManifest, manifest_size, oci_digest(&manifest_digest));
    descriptor.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_string(),
        spec.tag.clone(),
    )])));
    descriptor.set_platform(Some(
        PlatformBuilder::default()
            .architecture(Arch::from(spec.architecture.as_str()))
            .os(Os::from(spec.os.as_str()))
            .build()
            .map_err(document_err("platform"))?,
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()
        .map_err(document_err("image index"))?;
    let index_bytes = canonical(&index, "index.json")?;
    write_file(&dir.join("index.json"), &index_bytes)?;
    let oci_layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(document_err("oci-layout"))?;
    write_file(&dir.join("oci-layout"), &canonical(&oci_layout, "oci-layout")?)?;

    let stats = BuildStats {
        layers_compressed: runs.get(),
        layers_from_cache: layers.iter().filter(|l| l.reused_from_cache).count(),
        layer_tar_passes: runs.tar_passes(),
    };
    let tmp_path = tmp.keep();
    if let Err(e) = replace_dir(&tmp_path, layout_dir) {
        let _ = fs::remove_dir_all(&tmp_path);
        return Err(e.into());
    }
    Ok(BuiltImage {
        reference: format!("{}:{}", spec.name, spec.tag),
        index_digest: farm_lockfiles::integrity::sha256_of(&index_bytes),
        manifest_digest,
        manifest_size,
        config_digest,
        compression: spec.compression.settings(),
        layers,
        stats,
    })
}

fn canonical<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, LayoutError> {
    canonical_json::to_vec(value).map_err(|e| LayoutError::Document {
        what: what.into(),
        message: e.to_string(),
    })
}

fn config_document(spec: &ImageSpec, created: &str, layers: &[BuiltLayer]) -> Result<Vec<u8>, LayoutError> {
    let c = &spec.config;
    let mut runtime = ConfigBuilder::default();
    if let Some(user) = &c.user {
        runtime = runtime.user(user.clone());
    }
    if let Some(dir) = &c.working_dir {
        runtime = runtime.working_dir(dir.clone());
    }
    if !c.env.is_empty() {
        runtime = runtime.env(c.env.clone());
    }
    if !c.exposed_ports.is_empty() {
        let ports: Vec<String> = c
            .exposed_ports
            .iter()
            .map(|p| if p.contains('/') { p.clone() } else { format!("{p}/tcp") })
            .collect();
        runtime = runtime.exposed_ports(ports);
    }
    if !c.entrypoint.is_empty() {
        runtime = runtime.entrypoint(c.entrypoint.clone());
    }
    if !c.cmd.is_empty() {
        runtime = runtime.cmd(c.cmd.clone());
    }
    if !c.labels.is_empty() {
        runtime = runtime.labels(c.labels.clone().into_iter().collect::<HashMap<_, _>>());
    }
    if !c.volumes.is_empty() {
        runtime = runtime.volumes(c.volumes.clone());
    }
    let history = layers
        .iter()
        .map(|l| {
            HistoryBuilder::default()
                .created(created.to_string())
                .created_by(format!("farm layer: {}", l.name))
                .build()
                .map_err(document_err("history"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = ImageConfigurationBuilder::default()
        .created(created.to_string())
        .architecture(Arch::from(spec.architecture.as_str()))
        .os(Os::from(spec.os.as_str()))
        .config(runtime.build().map_err(document_err("image config"))?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>())
                .build()
                .map_err(document_err("rootfs"))?,
        )
        .history(history)
        .build()
        .map_err(document_err("image config"))?;
    canonical(&config, "image config")
}

/// Moves the finished directory `new` to `dest`, swapping atomically with
/// an existing one where the kernel can, and removes the old contents.
fn replace_dir(new: &Path, dest: &Path) -> Result<(), LayoutError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayoutError::Io { path, source }
    };
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return fs::rename(new, dest).map_err(io_err(dest)),
        Err(e) => return Err(io_err(dest)(e)),
        Ok(m) if !m.is_dir() => return Err(LayoutError::NotADirectory { path: dest.into() }),
        Ok(_) => {}
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        if renameat2(AT_FDCWD, new, AT_FDCWD, dest, RenameFlags::RENAME_EXCHANGE).is_ok() {
            // `new` now holds the old layout. The new one is in place, so a
            // failure to delete the old one must not fail the build.
            let _ = fs::remove_dir_all(new);
            return Ok(());
        }
    }
    // No atomic exchange here: move the old one aside, then the new one in.
    let old = new.with_extension("old");
    fs::rename(dest, &old).map_err(io_err(dest))?;
    if let Err(e) = fs::rename(new, dest) {
        let _ = fs::rename(&old, dest);
        return Err(io_err(dest)(e));
    }
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// One image of a layout, its documents read and verified against their digests.
#[derive(Debug)]
pub(crate) struct LayoutImage {
    pub dir: PathBuf,
    pub manifest_digest: Integrity,
    pub manifest_bytes: Vec<u8>,
    pub manifest_media_type: String,
    pub config_digest: Integrity,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfiguration,
    /// `(digest, size, media type)` of each layer, bottom first.
    pub layers: Vec<(Integrity, u64, String)>,
}

impl LayoutImage {
    /// Opens the image tagged `tag` in the layout at `dir`; with no tag, or
    /// when no manifest carries it but there is only one, that one.
    pub(crate) fn open(dir: &Path, tag: Option<&str>) -> Result<LayoutImage, LayoutError> {
        let not_layout = |message: String| LayoutError::NotALayout {
            dir: dir.into(),
            message,
        };
        let marker = fs::read(dir.join("oci-layout")).map_err(|e| not_layout(format!("oci-layout: {e}")))?;
        let marker: serde_json::Value =
            serde_json::from_slice(&marker).map_err(|e| not_layout(format!("oci-layout is not JSON: {e}")))?;
        if marker.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(not_layout("oci-layout does not say imageLayoutVersion 1.0.0".into()));
        }
        let index_bytes = fs::read(dir.join("index.json")).map_err(|e| not_layout(format!("index.json: {e}")))?;
        let index: ImageIndex = serde_json::from_slice(&index_bytes)
            .map_err(|e| not_layout(format!("index.json is not an OCI image index: {e}")))?;
        let manifests: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                (matches!(d.media_type().as_ref(), MEDIA_TYPE_MANIFEST)
                    || d.media_type().as_ref() == farm_lockfiles::oci::DOCKER_MANIFEST_V2)
                    && !crate::referrers::is_artifact(d)
            })
            .collect();
        let ref_name = |d: &Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .cloned()
        };
        let chosen = match tag {
            Some(t) => manifests.iter().find(|d| ref_name(d).as_deref() == Some(t)).copied(),
            None => None,
        };
        let chosen = match (chosen, manifests.as_slice()) {
            (Some(d), _) => d,
            (None, [only]) => only,
            (None, _) => {
                let available: Vec<String> = manifests.iter().filter_map(|d| ref_name(d)).collect();
                return Err(LayoutError::NoSuchImage {
                    dir: dir.into(),
                    wanted: tag.unwrap_or("").into(),
                    available: if available.is_empty() {
                        format!("{} untagged image manifests", manifests.len())
                    } else {
                        available.join(", ")
                    },
                });
            }
        };
        let manifest_digest = descriptor_digest(dir, chosen, "index.json")?;
        let manifest_bytes = read_blob(dir, &manifest_digest, chosen.size())?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| LayoutError::Document {
            what: format!("{}: manifest {manifest_digest}", dir.display()),
            message: e.to_string(),
        })?;
        let config_digest = descriptor_digest(dir, manifest.config(), "the manifest's config")?;
        let config_bytes = read_blob(dir, &config_digest, manifest.config().size())?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| LayoutError::Document {
            what: format!("{}: config {config_digest}", dir.display()),
            message: e.to_string(),
        })?;
        let layers = manifest
            .layers()
            .iter()
            .map(|d| {
                let digest = descriptor_digest(dir, d, "a manifest layer")?;
                Ok((digest, d.size(), d.media_type().to_string()))
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;
        Ok(LayoutImage {
            dir: dir.into(),
            manifest_digest,
            manifest_bytes,
            manifest_media_type: chosen.media_type().to_string(),
            config_digest,
            config_bytes,
            config,
            layers,
        })
    }

    pub(crate) fn blob(&self, digest: &Integrity) -> PathBuf {
        blob_path(&self.dir, digest)
    }
}

fn descriptor_digest(dir: &Path, d: &Descriptor, what: &str) -> Result<Integrity, LayoutError> {
    parse_sha256(d.digest().as_ref()).ok_or_else(|| LayoutError::NotALayout {
        dir: dir.into(),
        message: format!("{what} has digest {}, expected sha256:<64 hex>", d.digest()),
    })
}

/// A small blob, checked against its digest and size.
fn read_blob(dir: &Path, digest: &Integrity, size: u64) -> Result<Vec<u8>, LayoutError> {
    let path = blob_path(dir, digest);
    let len = fs::metadata(&path)
        .map_err(|source| LayoutError::Io {
            path: path.clone(),
            source,
        })?
        .len();
    if len != size || len > MAX_DOCUMENT_BYTES {
        return Err(LayoutError::BlobMismatch {
            path,
            expected: format!("{size} bytes"),
            found: format!("{len} bytes"),
        });
    }
    read_verified(dir, digest)
}

/// A blob's bytes, checked against its digest.
pub(crate) fn read_verified(dir: &Path, digest: &Integrity) -> Result<Vec<u8>, LayoutError> {
    let path = blob_path(dir, digest);
    let bytes = fs::read(&path).map_err(|source| LayoutError::Io {
        path: path.clone(),
        source,
    })?;
    let actual = farm_lockfiles::integrity::sha256_of(&bytes);
    if actual != *digest {
        return Err(LayoutError::BlobMismatch {
            path,
            expected: digest.to_string(),
            found: actual.to_string(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags_follow_the_distribution_rules() {
        for ok in ["farm-app", "team/farm_app", "a.b/c__d", "x1--y2"] {
            assert!(valid_repository(ok), "{ok}");
        }
        for bad in ["", "Farm", "-app", "app-", "a//b", "a/", "a_-b", "a b"] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(valid_tag("0.1.0") && valid_tag("_x") && valid_tag(&"a".repeat(128)));
        assert!(
            !valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag("a:b") && !valid_tag(&"a".repeat(129))
        );
    }

    #[test]
    fn invalid_specs_name_the_field_and_what_was_expected() {
        type Mutation = Box<dyn Fn(&mut ImageSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.name = "Farm".into()), "name"),
            (Box::new(|s| s.tag = ":x".into()), "tag"),
            (Box::new(|s| s.created = -1), "created"),
            (Box::new(|s| s.config.env = vec!["NOEQUALS".into()]), "config.env[0]"),
            (
                Box::new(|s| s.config.exposed_ports = vec!["80/icmp".into()]),
                "config.exposed_ports[0]",
            ),
            (
                Box::new(|s| s.config.working_dir = Some("app".into())),
                "config.working_dir",
            ),
            (
                Box::new(|s| {
                    s.layers = vec![
                        LayerSpec {
                            name: "a".into(),
                            contents: vec![],
                        };
                        2
                    ]
                }),
                "layers[1].name",
            ),
        ];
        for (mutate, field) in cases {
            let mut spec = ImageSpec::new("farm-app", "0.1.0", 1);
            mutate(&mut spec);
            let err = validate(&spec).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains("expected"), "{field}: {err}");
        }
    }
}
