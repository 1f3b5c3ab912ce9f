//! Artifacts that refer to an image (OCI 1.1): SBOMs and signed
//! attestations as image manifests whose `subject` is the image's manifest.
//! In a layout they sit in `index.json` beside the image, marked by their
//! `artifactType`; in a registry they are found through the referrers API
//! (`GET /v2/<name>/referrers/<digest>`) or, where the registry has none,
//! through the referrers tag schema (tag `sha256-<hex>` holding an index).
//! Spec: `spec/images.md`, "Referrers".

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::Path;

use farm_formats::canonical_json;
use farm_lockfiles::integrity::Integrity;
use farm_lockfiles::oci::{OciError, RegistryClient, OCI_INDEX, OCI_MANIFEST};
use serde::Serialize;
use serde_json::{json, Value};

use crate::digest::{blob_path, parse_sha256};
use crate::layout::{read_verified, LayoutError, LayoutImage, ANNOTATION_CREATED, ANNOTATION_REF_NAME};
use crate::push::PushError;
use crate::ImageError;

/// The empty config every artifact manifest carries (OCI 1.1 guidance).
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONFIG: &[u8] = b"{}";
pub const MEDIA_TYPE_SPDX: &str = "application/spdx+json";
pub const MEDIA_TYPE_CYCLONEDX: &str = "application/vnd.cyclonedx+json";
pub const MEDIA_TYPE_DSSE: &str = "application/vnd.dsse.envelope.v1+json";
/// The title a blob is saved under by `oras pull` and similar clients.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// The in-toto predicate type of a signed attestation, as cosign annotates it.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// One document to attach: it becomes the single layer of an artifact manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The manifest's `artifactType`, and the layer's media type.
    pub artifact_type: String,
    /// File name (`org.opencontainers.image.title`).
    pub title: String,
    pub bytes: Vec<u8>,
    /// Extra manifest annotations (e.g. the predicate type).
    pub annotations: BTreeMap<String, String>,
}

/// The image an artifact refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    pub digest: Integrity,
    pub size: u64,
}

/// An artifact manifest, ready to store or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactManifest {
    pub artifact_type: String,
    pub bytes: Vec<u8>,
    pub digest: Integrity,
    pub annotations: BTreeMap<String, String>,
    /// `(digest, bytes)` of its config and layer.
    pub blobs: Vec<(Integrity, Vec<u8>)>,
}

impl ArtifactManifest {
    /// The artifact manifest of `a` referring to `subject`; `created`
    /// (RFC 3339) is the build's date, so the same inputs give the same bytes.
    pub fn new(a: &Attachment, subject: &Subject, created: &str) -> ArtifactManifest {
        let empty = farm_lockfiles::integrity::sha256_of(EMPTY_CONFIG);
        let layer = farm_lockfiles::integrity::sha256_of(&a.bytes);
        let mut annotations = a.annotations.clone();
        annotations.insert(ANNOTATION_CREATED.into(), created.into());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": a.artifact_type,
            "config": {"mediaType": MEDIA_TYPE_EMPTY, "digest": empty.to_string(), "size": EMPTY_CONFIG.len(), "data": "e30="},
            "layers": [{
                "mediaType": a.artifact_type,
                "digest": layer.to_string(),
                "size": a.bytes.len(),
                "annotations": {ANNOTATION_TITLE: a.title},
            }],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size},
            "annotations": annotations,
        });
        let bytes = canonical_json::to_vec(&manifest).expect("a JSON value serialises");
        ArtifactManifest {
            artifact_type: a.artifact_type.clone(),
            digest: farm_lockfiles::integrity::sha256_of(&bytes),
            bytes,
            annotations,
            blobs: vec![(empty, EMPTY_CONFIG.to_vec()), (layer, a.bytes.clone())],
        }
    }

    /// Its descriptor in an index: the referrers list, the layout's index.json.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
            "artifactType": self.artifact_type,
            "annotations": self.annotations,
        })
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.into(),
        source,
    }
}

/// Writes `bytes` at `path` as a new file (never in place: output
/// directories hard-link files from the previous build).
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let dir = path.parent().expect("layout files have a parent");
    let mut tmp = tempfile::Builder::new()
        .prefix(".farm-tmp-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    let mode = <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644);
    fs::set_permissions(tmp.path(), mode).map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

fn read_index(dir: &Path) -> Result<serde_json::Map<String, Value>, LayoutError> {
    let path = dir.join("index.json");
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(LayoutError::NotALayout {
            dir: dir.into(),
            message: "index.json is not a JSON object".into(),
        }),
    }
}

fn digest_of(d: &Value) -> Option<Integrity> {
    parse_sha256(d.get("digest")?.as_str()?)
}

/// The artifacts in the layout at `dir` that refer to its image (the one
/// tagged `tag`, or its only one): each manifest with its blobs, read and
/// checked against their digests.
pub fn layout_artifacts(dir: &Path, tag: Option<&str>) -> Result<Vec<ArtifactManifest>, ImageError> {
    let image = LayoutImage::open(dir, tag)?;
    let index = read_index(dir)?;
    let mut out = Vec::new();
    for d in index.get("manifests").and_then(Value::as_array).into_iter().flatten() {
        let Some(artifact_type) = d.get("artifactType").and_then(Value::as_str) else {
            continue;
        };
        let bad = |message: String| LayoutError::NotALayout {
            dir: dir.into(),
            message,
        };
        let digest = digest_of(d).ok_or_else(|| bad(format!("artifact {artifact_type} has no sha256 digest")))?;
        let bytes = read_verified(dir, &digest)?;
        let m: Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("artifact manifest {digest} is not JSON: {e}")))?;
        if m.pointer("/subject/digest").and_then(Value::as_str) != Some(image.manifest_digest.to_string().as_str()) {
            continue;
        }
        let mut blobs = Vec::new();
        for b in std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten()) {
            let bd =
                digest_of(b).ok_or_else(|| bad(format!("artifact manifest {digest}: a blob has no sha256 digest")))?;
            blobs.push((bd.clone(), read_verified(dir, &bd)?));
        }
        let annotations = m
            .get("annotations")
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .unwrap_or_default();
        out.push(ArtifactManifest {
            artifact_type: artifact_type.into(),
            bytes,
            digest,
            annotations,
            blobs,
        });
    }
    Ok(out)
}

/// Makes `attachments` the artifacts referring to the image in the layout
/// at `dir` (its only image, or the one tagged `tag`): artifacts attached
/// before are removed with their blobs, the new ones written and listed in
/// index.json after the image. Attaching the same documents again gives
/// the same bytes. Returns the artifact manifests' digests.
pub fn attach_to_layout(
    dir: &Path,
    tag: Option<&str>,
    attachments: &[Attachment],
    created: &str,
) -> Result<Vec<Integrity>, ImageError> {
    let image = LayoutImage::open(dir, tag)?;
    let subject = Subject {
        media_type: image.manifest_media_type.clone(),
        digest: image.manifest_digest.clone(),
        size: image.manifest_bytes.len() as u64,
    };
    // What the image itself needs is never removed.
    let mut keep: BTreeSet<String> = BTreeSet::from([image.manifest_digest.hex(), image.config_digest.hex()]);
    keep.extend(image.layers.iter().map(|(d, ..)| d.hex()));
    let old = layout_artifacts(dir, tag)?;
    let new: Vec<ArtifactManifest> = attachments
        .iter()
        .map(|a| ArtifactManifest::new(a, &subject, created))
        .collect();
    for m in &new {
        keep.insert(m.digest.hex());
        keep.extend(m.blobs.iter().map(|(d, _)| d.hex()));
        for (d, bytes) in std::iter::once((&m.digest, &m.bytes)).chain(m.blobs.iter().map(|(d, b)| (d, b))) {
            let path = blob_path(dir, d);
            if fs::metadata(&path).map(|m| m.len()).ok() != Some(bytes.len() as u64) {
                replace_file(&path, bytes)?;
            }
        }
    }
    let mut index = read_index(dir)?;
    let mut manifests: Vec<Value> = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    manifests.retain(|d| d.get("artifactType").is_none());
    manifests.extend(new.iter().map(ArtifactManifest::descriptor));
    index.insert("manifests".into(), Value::Array(manifests));
    let bytes = canonical_json::to_vec(&Value::Object(index)).expect("a JSON value serialises");
    replace_file(&dir.join("index.json"), &bytes)?;
    for m in &old {
        for d in std::iter::once(&m.digest).chain(m.blobs.iter().map(|(d, _)| d)) {
            if !keep.contains(&d.hex()) {
                let path = blob_path(dir, d);
                fs::remove_file(&path).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(io_err(&path)(e)),
                })?;
            }
        }
    }
    Ok(new.into_iter().map(|m| m.digest).collect())
}

/// How a registry was told about the artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferrersVia {
    /// The registry has the referrers API and lists them itself.
    Api,
    /// It has not: the `sha256-<hex>` tag holds an index of them.
    TagSchema,
}

/// What [`push_referrers`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReferrersReport {
    /// `(artifactType, manifest digest)` of each artifact pushed.
    pub artifacts: Vec<(String, Integrity)>,
    pub via: ReferrersVia,
    /// The referrers tag, when the tag schema was used.
    pub tag: Option<String>,
}

/// The referrers tag of `digest`: `<algorithm>-<hex>`.
pub fn referrers_tag(digest: &Integrity) -> String {
    format!("{}-{}", digest.algorithm.name(), digest.hex())
}

/// Pushes the artifacts that refer to the image in `layout_dir` (those in
/// the layout, then `extra` built here with the layout image as subject)
/// to `repository`, after the image itself is there. Where the registry
/// has no referrers API the referrers tag's index is updated: descriptors
/// already there are kept, ours replace any with the same digest.
pub async fn push_referrers(
    layout_dir: &Path,
    tag: Option<&str>,
    client: &RegistryClient,
    repository: &str,
    extra: &[Attachment],
    created: &str,
) -> Result<ReferrersReport, ImageError> {
    let image = LayoutImage::open(layout_dir, tag)?;
    let subject = Subject {
        media_type: image.manifest_media_type.clone(),
        digest: image.manifest_digest.clone(),
        size: image.manifest_bytes.len() as u64,
    };
    let mut artifacts = layout_artifacts(layout_dir, tag)?;
    artifacts.extend(extra.iter().map(|a| ArtifactManifest::new(a, &subject, created)));
    let target = format!("{}/{repository}", client.host());
    let fail = |what: String| {
        let target = target.clone();
        move |source: OciError| PushError::Registry {
            what,
            target,
            source: Box::new(source),
        }
    };
    for m in &artifacts {
        for (d, bytes) in &m.blobs {
            client
                .push_blob_bytes(repository, bytes)
                .await
                .map_err(fail(format!("blob {d} of the {} artifact", m.artifact_type)))?;
        }
        let stored = client
            .put_manifest(repository, &m.digest.to_string(), &m.bytes, OCI_MANIFEST)
            .await
            .map_err(fail(format!("the {} artifact {}", m.artifact_type, m.digest)))?;
        if stored != m.digest {
            return Err(PushError::DigestMismatch {
                target: format!("{target}@{}", m.digest),
                expected: m.digest.to_string(),
                found: stored.to_string(),
            }
            .into());
        }
    }
    let listed = artifacts
        .iter()
        .map(|m| (m.artifact_type.clone(), m.digest.clone()))
        .collect();
    let api = client
        .referrers(repository, &subject.digest)
        .await
        .map_err(fail(format!("the referrers of {}", subject.digest)))?;
    if api.is_some() {
        return Ok(ReferrersReport {
            artifacts: listed,
            via: ReferrersVia::Api,
            tag: None,
        });
    }
    let rtag = referrers_tag(&subject.digest);
    let mut manifests: Vec<Value> = match client.get_manifest(repository, &rtag, &[OCI_INDEX]).await {
        Ok(fetched) => serde_json::from_slice::<Value>(&fetched.bytes)
            .ok()
            .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
            .unwrap_or_default(),
        Err(OciError::Status { status: 404, .. }) => Vec::new(),
        Err(e) => return Err(fail(format!("the referrers tag {rtag}"))(e).into()),
    };
    let ours: BTreeSet<String> = artifacts.iter().map(|m| m.digest.to_string()).collect();
    manifests.retain(|d| {
        d.get("digest")
            .and_then(Value::as_str)
            .is_none_or(|s| !ours.contains(s))
    });
    manifests.extend(artifacts.iter().map(ArtifactManifest::descriptor));
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let bytes = canonical_json::to_vec(&index).expect("a JSON value serialises");
    client
        .put_manifest(repository, &rtag, &bytes, OCI_INDEX)
        .await
        .map_err(fail(format!("the referrers tag {rtag}")))?;
    Ok(ReferrersReport {
        artifacts: listed,
        via: ReferrersVia::TagSchema,
        tag: Some(rtag),
    })
}

/// The layout's artifacts are not images: readers of the layout skip them.
pub(crate) fn is_artifact(d: &oci_spec::image::Descriptor) -> bool {
    d.artifact_type().is_some()
        && d.annotations()
            .as_ref()
            .is_none_or(|a| !a.contains_key(ANNOTATION_REF_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(t: &str, title: &str, body: &str) -> Attachment {
        Attachment {
            artifact_type: t.into(),
            title: title.into(),
            bytes: body.as_bytes().to_vec(),
            annotations: Default::default(),
        }
    }

    fn blobs(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Attaching lists the artifacts after the image, each referring to it;
    /// the image still opens as the layout's only one; attaching other
    /// documents removes the old ones' blobs and leaves the image's; the
    /// same documents give the same bytes.
    #[test]
    fn attach_replaces_what_was_attached_and_keeps_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        crate::build_image(&crate::ImageSpec::new("app", "1", 0), &dir, None).unwrap();
        let image_blobs = blobs(&dir);
        let plain_index = fs::read(dir.join("index.json")).unwrap();
        let first = [
            doc(MEDIA_TYPE_SPDX, "a.spdx.json", "{\"a\":1}"),
            doc(MEDIA_TYPE_CYCLONEDX, "a.cdx.json", "{}"),
        ];
        let digests = attach_to_layout(&dir, None, &first, "1970-01-01T00:00:00Z").unwrap();
        let index_once = fs::read(dir.join("index.json")).unwrap();
        let image = LayoutImage::open(&dir, None).unwrap();
        let found = layout_artifacts(&dir, None).unwrap();
        assert_eq!(found.iter().map(|m| m.digest.clone()).collect::<Vec<_>>(), digests);
        for m in &found {
            let v: Value = serde_json::from_slice(&m.bytes).unwrap();
            assert_eq!(v["subject"]["digest"], image.manifest_digest.to_string());
        }
        // Again with the same documents: nothing changes.
        attach_to_layout(&dir, None, &first, "1970-01-01T00:00:00Z").unwrap();
        assert_eq!(fs::read(dir.join("index.json")).unwrap(), index_once);
        // Other documents: the first ones' blobs are gone, the image's stay.
        let second = [doc(MEDIA_TYPE_SPDX, "b.spdx.json", "{\"b\":2}")];
        attach_to_layout(&dir, None, &second, "1970-01-01T00:00:00Z").unwrap();
        let now = blobs(&dir);
        assert!(image_blobs.is_subset(&now));
        assert_eq!(
            now.len(),
            image_blobs.len() + 3,
            "manifest, empty config, document: {now:?}"
        );
        for d in &digests {
            assert!(!now.contains(&d.hex()), "the old artifact {d} is left behind");
        }
        // Nothing attached: the layout is as build_image wrote it.
        attach_to_layout(&dir, None, &[], "1970-01-01T00:00:00Z").unwrap();
        assert_eq!(fs::read(dir.join("index.json")).unwrap(), plain_index);
        assert_eq!(blobs(&dir), image_blobs);
    }
}
