//! What a build produced, as its `farm-manifest.json` says, and the
//! identity every document about it is named by.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Outputs whose name starts with this are the SBOMs themselves: a document
/// cannot list its own digest, so they are left out of the documents and
/// of the identity that names them.
pub const SBOM_OUTPUT_PREFIX: &str = "sbom.";

/// Metadata of an image output whose layout holds artifacts referring to
/// the image (its SBOMs): `{"tree_digest", "size", "referrers",
/// "index_digest"}`, the layout's digest, size and index.json digest
/// before they were attached. The documents
/// describe the image by those, as they cannot contain themselves.
pub const ATTESTATIONS_METADATA: &str = "attestations";

/// One output of the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReleaseOutput {
    /// Path in the output directory.
    pub path: String,
    /// Tree digest (`sha256:<hex>`, spec/tree-digest.md) of that path.
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl ReleaseOutput {
    /// `(reference, manifest digest)` of an image output.
    pub fn image(&self) -> Option<(&str, &str)> {
        let reference = self.metadata.get("reference")?.as_str()?;
        let digest = self.metadata.get("manifest_digest")?.as_str()?;
        Some((reference, digest))
    }
}

/// A release: the project, the build's settings and every output.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub name: String,
    pub version: String,
    /// Every document's creation time.
    pub source_date_epoch: u64,
    pub hermetic: bool,
    pub environment: String,
    pub dev: bool,
    /// `sha256:` of farm.lock's and farm.toml's bytes, as the build saw them.
    pub lock_digest: Option<String>,
    pub farm_toml_digest: Option<String>,
    /// Tree digest of each source snapshot, by name.
    pub sources: BTreeMap<String, String>,
    /// Every output by name, the SBOM outputs included, as the manifest has it.
    pub outputs: BTreeMap<String, ReleaseOutput>,
    /// The outputs the SBOMs describe: all but the SBOMs, image layouts as
    /// they were before the SBOMs were attached to them.
    pub described: BTreeMap<String, ReleaseOutput>,
    /// The manifest's own `digest`, when there is a manifest.
    pub manifest_digest: Option<String>,
    /// `sha256:` naming the documents: of the manifest without its
    /// `digest`, without the SBOM outputs and with image layouts as before
    /// the SBOMs were attached (so the SBOMs a build writes and `farm sbom`
    /// after it agree); of the lock when nothing was built.
    pub identity: String,
}

#[derive(Deserialize)]
struct ManifestView {
    project: ProjectView,
    #[serde(default)]
    hermetic: bool,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    dev: bool,
    source_date_epoch: u64,
    inputs: InputsView,
    outputs: BTreeMap<String, ReleaseOutput>,
    #[serde(default)]
    digest: String,
}

#[derive(Deserialize)]
struct ProjectView {
    name: String,
    version: String,
}

#[derive(Deserialize)]
struct InputsView {
    lock: String,
    farm_toml: String,
    #[serde(default)]
    sources: BTreeMap<String, String>,
}

impl Release {
    /// Reads `farm-manifest.json`; a manifest whose `digest` does not match
    /// its contents is refused, as `farm verify` refuses it.
    pub fn read_manifest(path: &Path) -> Result<Release> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        Release::from_manifest_json(&path.display().to_string(), &bytes)
    }

    /// A manifest's bytes; `shown` names it in errors.
    pub fn from_manifest_json(shown: &str, bytes: &[u8]) -> Result<Release> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(shown, format!("not a farm-manifest.json: {e}")))?;
        Release::from_manifest_value(shown, value)
    }

    /// A manifest as a JSON value (`serde_json::to_value(&manifest)` in the engine).
    pub fn from_manifest_value(shown: &str, value: Value) -> Result<Release> {
        let view: ManifestView = serde_json::from_value(value.clone())
            .map_err(|e| Error::invalid(shown, format!("not a farm-manifest.json: {e}")))?;
        let Value::Object(mut whole) = value else {
            return Err(Error::invalid(shown, "not a JSON object"));
        };
        whole.remove("digest");
        if !view.digest.is_empty() {
            let computed = crate::sha256_prefixed(&canonical(&Value::Object(whole.clone())));
            if computed != view.digest {
                return Err(Error::invalid(
                    shown,
                    format!(
                        "its digest field says {} but its contents hash to {computed}: the manifest was edited",
                        view.digest
                    ),
                ));
            }
        }
        if let Some(Value::Object(outputs)) = whole.get_mut("outputs") {
            outputs.retain(|name, _| !name.starts_with(SBOM_OUTPUT_PREFIX));
            for (name, o) in outputs.iter_mut() {
                before_attestations(shown, name, o)?;
            }
        }
        let described: BTreeMap<String, ReleaseOutput> = serde_json::from_value(whole["outputs"].clone())
            .map_err(|e| Error::invalid(shown, format!("not a farm-manifest.json: {e}")))?;
        let identity = crate::sha256_prefixed(&canonical(&Value::Object(whole)));
        Ok(Release {
            name: view.project.name,
            version: view.project.version,
            source_date_epoch: view.source_date_epoch,
            hermetic: view.hermetic,
            environment: view.environment,
            dev: view.dev,
            lock_digest: Some(view.inputs.lock),
            farm_toml_digest: Some(view.inputs.farm_toml),
            sources: view.inputs.sources,
            outputs: view.outputs,
            described,
            manifest_digest: (!view.digest.is_empty()).then_some(view.digest),
            identity,
        })
    }

    /// A project that has a lock and no build (`farm sbom` before `farm
    /// build`): the documents list the lock alone and are named by it.
    pub fn unbuilt(
        name: &str,
        version: &str,
        source_date_epoch: u64,
        lock_bytes: &[u8],
        farm_toml: Option<&[u8]>,
    ) -> Release {
        let lock_digest = crate::sha256_prefixed(lock_bytes);
        Release {
            name: name.to_string(),
            version: version.to_string(),
            source_date_epoch,
            hermetic: false,
            environment: String::new(),
            dev: false,
            identity: crate::sha256_prefixed(
                format!("farm unbuilt release\n{name}\n{version}\n{lock_digest}\n").as_bytes(),
            ),
            lock_digest: Some(lock_digest),
            farm_toml_digest: farm_toml.map(crate::sha256_prefixed),
            sources: BTreeMap::new(),
            outputs: BTreeMap::new(),
            described: BTreeMap::new(),
            manifest_digest: None,
        }
    }

    /// The outputs the SBOMs describe: all but the SBOMs.
    pub fn described_outputs(&self) -> impl Iterator<Item = (&String, &ReleaseOutput)> {
        self.described.iter()
    }

    /// The identity's hex digits.
    pub fn identity_hex(&self) -> &str {
        self.identity.strip_prefix("sha256:").unwrap_or(&self.identity)
    }
}

/// Output `o` (a manifest entry) as it was before artifacts were attached
/// to its layout: digest and size from its `attestations` metadata, which
/// is removed.
fn before_attestations(shown: &str, name: &str, o: &mut Value) -> Result<()> {
    let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let Some(att) = meta.remove(ATTESTATIONS_METADATA) else {
        return Ok(());
    };
    if meta.is_empty() {
        o.as_object_mut().map(|m| m.remove("metadata"));
    }
    let (Some(digest), Some(size)) = (att.get("tree_digest").cloned(), att.get("size").cloned()) else {
        return Err(Error::invalid(
            shown,
            format!("outputs.{name}.metadata.{ATTESTATIONS_METADATA}: expected `tree_digest` and `size`"),
        ));
    };
    o["digest"] = digest;
    o["size"] = size;
    if let Some(index) = att.get("index_digest") {
        o["metadata"]["index_digest"] = index.clone();
    }
    Ok(())
}

fn canonical(v: &Value) -> Vec<u8> {
    farm_formats::canonical_json::to_vec(v).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(outputs: Value) -> Value {
        serde_json::json!({
            "schema": 1, "project": {"name": "a", "version": "1"}, "hermetic": true,
            "environment": "production", "dev": false, "source_date_epoch": 315532800,
            "inputs": {"lock": "sha256:11", "farm_toml": "sha256:22", "sources": {}},
            "outputs": outputs,
        })
    }

    fn sealed(mut v: Value) -> Value {
        let digest = crate::sha256_prefixed(&canonical(&v));
        v.as_object_mut().unwrap().insert("digest".into(), digest.into());
        v
    }

    /// The identity is the manifest digest when there are no SBOM outputs,
    /// ignores SBOM outputs when there are, and an edited manifest is refused.
    #[test]
    fn identity_leaves_out_the_sboms_and_edits_are_refused() {
        let front = serde_json::json!({"frontend": {"path": "frontend", "digest": "sha256:00", "size": 1}});
        let plain = sealed(manifest(front.clone()));
        let r = Release::from_manifest_value("m", plain.clone()).unwrap();
        assert_eq!(Some(r.identity.clone()), r.manifest_digest);

        let mut with_sbom = front.clone();
        with_sbom.as_object_mut().unwrap().insert(
            "sbom.spdx".into(),
            serde_json::json!({"path": "sbom/a.spdx.json", "digest": "sha256:99", "size": 2}),
        );
        let r2 = Release::from_manifest_value("m", sealed(manifest(with_sbom))).unwrap();
        assert_eq!(r2.identity, r.identity, "SBOM outputs do not change the identity");
        assert_ne!(r2.manifest_digest, r.manifest_digest);
        assert_eq!(r2.described_outputs().count(), 1);

        // An image whose layout holds its SBOMs is described, and named, as before they were attached.
        let image = serde_json::json!({"path": "images/app", "digest": "sha256:aa", "size": 5,
            "metadata": {"reference": "app:1", "manifest_digest": "sha256:bb", "index_digest": "sha256:ee"}});
        let mut before = front.clone();
        before
            .as_object_mut()
            .unwrap()
            .insert("image.app".into(), image.clone());
        let mut after = before.clone();
        after["image.app"]["digest"] = "sha256:cc".into();
        after["image.app"]["size"] = 9.into();
        after["image.app"]["metadata"]["index_digest"] = "sha256:ff".into();
        after["image.app"]["metadata"][ATTESTATIONS_METADATA] = serde_json::json!(
            {"tree_digest": "sha256:aa", "size": 5, "index_digest": "sha256:ee", "referrers": ["sha256:dd"]}
        );
        let rb = Release::from_manifest_value("m", sealed(manifest(before))).unwrap();
        let ra = Release::from_manifest_value("m", sealed(manifest(after))).unwrap();
        assert_eq!(ra.identity, rb.identity);
        assert_eq!(ra.described, rb.described);
        assert_eq!(
            ra.outputs["image.app"].digest, "sha256:cc",
            "outputs stay as the manifest has them"
        );

        let mut edited = plain;
        edited["outputs"]["frontend"]["size"] = 2.into();
        let err = Release::from_manifest_value("farm-manifest.json", edited).unwrap_err();
        assert!(err.to_string().contains("the manifest was edited"), "{err}");
    }
}
