//! SLSA Provenance v1 (slsa.dev/provenance/v1) as an in-toto Statement v1
//! (github.com/in-toto/attestation): what was built (the subjects: every
//! output of the manifest and every image by manifest digest), from what
//! (farm.toml, the source revision, every lock entry with its integrity),
//! and by what run (farm's version, the sandbox, start and finish times).
//!
//! The provenance is a record of one run, so it is not reproducible and
//! not an output of the build: its run details change from run to run.
//! Its subjects do not: two builds of the same commit give the same ones.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use farm_lockfiles::integrity::Integrity;
use farm_lockfiles::{Lock, LockedArtifact};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::release::Release;
use crate::sbom::clean_url;
use crate::{purl, Error, Result};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// The predicate types cosign and syft give SBOM attestations.
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";
/// farm's build type; spec/attestations.md says what its parameters mean.
pub const BUILD_TYPE: &str = "urn:farm:build-type:v1";
/// A build run by farm on the machine that ran `farm build`.
pub const BUILDER_ID: &str = "urn:farm:builder:local:v1";
/// The DigestSet algorithm of a tree digest (spec/tree-digest.md), lowercase hex.
pub const TREE_ALGORITHM: &str = "farmTree";
/// in-toto's `dirHash`: SHA-256 over `sha256sum` lines of every regular file, sorted by path.
pub const DIR_HASH_ALGORITHM: &str = "dirHash";

/// An in-toto subject (a ResourceDescriptor with name and digest).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

/// The subjects of a release: each output by its path in the output
/// directory (tree digest; with `out_dir`, also `sha256` of a file or
/// `dirHash` of a directory, after checking the tree digest still matches
/// the manifest), and each image by its reference and manifest digest.
pub fn subjects(release: &Release, out_dir: Option<&Path>) -> Result<Vec<Subject>> {
    let mut out = Vec::new();
    for (name, o) in &release.outputs {
        let tree = o
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::Other(format!("output {name}: digest {:?} is not `sha256:<hex>`", o.digest)))?;
        let mut digest = BTreeMap::from([(TREE_ALGORITHM.to_string(), tree.to_string())]);
        if let Some(dir) = out_dir {
            let path = dir.join(&o.path);
            let actual = farm_store::tree_digest(&path)
                .map_err(|e| Error::Other(format!("output {name}: {e}; hint: run `farm build` again")))?;
            if actual.to_hex() != tree {
                return Err(Error::invalid(
                    path.display(),
                    format!(
                        "tree digest is sha256:{}, the manifest says {}: the output changed after the build",
                        actual.to_hex(),
                        o.digest
                    ),
                ));
            }
            let (algo, value) = content_digest(&path)?;
            digest.insert(algo.to_string(), value);
        }
        out.push(Subject {
            name: o.path.clone(),
            digest,
        });
        if let Some((reference, manifest)) = o.image() {
            if let Some(hex) = manifest.strip_prefix("sha256:") {
                out.push(Subject {
                    name: reference.to_string(),
                    digest: BTreeMap::from([("sha256".to_string(), hex.to_string())]),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `sha256` of a regular file's bytes, or `dirHash` of a directory.
pub fn content_digest(path: &Path) -> Result<(&'static str, String)> {
    let meta = path.symlink_metadata().map_err(Error::io(path))?;
    if meta.is_file() {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        return Ok(("sha256", crate::sha256_hex(&bytes)));
    }
    Ok((DIR_HASH_ALGORITHM, dir_hash(path)?))
}

/// in-toto's `dirHash` (Go's dirhash Hash1, hex):
/// `find . -type f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum | sha256sum`.
pub fn dir_hash(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_files(dir, "", &mut files)?;
    files.sort();
    let mut lines = String::new();
    for (rel, full) in files {
        if rel.contains('\n') {
            return Err(Error::invalid(
                full.display(),
                "a file name with a newline has no dirHash",
            ));
        }
        let bytes = std::fs::read(&full).map_err(Error::io(&full))?;
        lines.push_str(&format!("{}  {rel}\n", crate::sha256_hex(&bytes)));
    }
    Ok(crate::sha256_hex(lines.as_bytes()))
}

fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<(String, std::path::PathBuf)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type().map_err(Error::io(&entry.path()))?;
        if ft.is_dir() {
            collect_files(&entry.path(), &rel, out)?;
        } else if ft.is_file() {
            out.push((rel, entry.path()));
        }
    }
    Ok(())
}

fn digest_set(i: &Integrity) -> Value {
    json!({ i.algorithm.name(): i.hex() })
}

fn artifact_dependency(kind: &str, purl: String, a: &LockedArtifact) -> Value {
    json!({
        "name": purl,
        "uri": clean_url(&a.url),
        "digest": digest_set(&a.integrity),
        "annotations": {"farm:lock": kind, "farm:version": a.version},
    })
}

/// Every lock entry as a resolved dependency, named by its purl, sorted.
pub fn lock_dependencies(lock: &Lock, model_host: Option<&str>) -> Vec<Value> {
    let mut deps = Vec::new();
    if let Some(n) = &lock.node {
        deps.push(artifact_dependency(
            "node",
            purl::generic("node", &n.node.version),
            &n.node,
        ));
        deps.push(artifact_dependency("node", purl::npm("npm", &n.npm.version), &n.npm));
    }
    if let Some(p) = &lock.python {
        deps.push(artifact_dependency("python", purl::pypi("pip", &p.pip.version), &p.pip));
    }
    if let Some(d) = &lock.debian {
        for p in &d.packages {
            let a = &p.artifact;
            let arch = a
                .url
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".deb"))
                .and_then(|f| f.rsplit('_').next())
                .unwrap_or(&d.architecture);
            deps.push(artifact_dependency(
                "debian",
                purl::deb(&a.name, &a.version, arch, &d.suite),
                a,
            ));
        }
    }
    if let Some(o) = &lock.ollama {
        deps.push(artifact_dependency("ollama", purl::generic("ollama", &o.version), o));
    }
    for p in &lock.npm {
        deps.push(artifact_dependency(
            "npm",
            purl::npm(&p.artifact.name, &p.artifact.version),
            &p.artifact,
        ));
    }
    for w in &lock.wheels {
        let mut d = artifact_dependency("wheels", purl::pypi(&w.artifact.name, &w.artifact.version), &w.artifact);
        d["annotations"]["farm:wheel"] = json!(w.filename);
        deps.push(d);
    }
    for m in &lock.models {
        let digest = m.manifest.digest.to_string();
        deps.push(json!({
            "name": purl::oci(&m.repository, &digest, model_host, Some(&m.tag)),
            "digest": digest_set(&m.manifest.digest),
            "mediaType": m.manifest.media_type,
            "annotations": {"farm:lock": "models", "farm:version": m.tag},
        }));
    }
    for i in &lock.images {
        let (registry, repo, tag) = purl::split_reference(&i.reference);
        let digest = i.digest.to_string();
        deps.push(json!({
            "name": purl::oci(&repo, &digest, registry.as_deref(), tag.as_deref()),
            "uri": clean_url(&i.reference),
            "digest": digest_set(&i.digest),
            "annotations": {"farm:lock": "images", "farm:version": tag.unwrap_or_default()},
        }));
    }
    deps.sort_by_key(|d| d.to_string());
    deps.dedup();
    deps
}

/// The source the build was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRevision {
    /// `git rev-parse HEAD`.
    pub revision: String,
    /// No uncommitted change under the project (`git status --porcelain`).
    pub clean: bool,
}

/// Facts of one run: kept out of everything reproducible.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    pub started: Option<SystemTime>,
    pub finished: Option<SystemTime>,
    /// Names this run; derived from the release and finish time when None.
    pub invocation_id: Option<String>,
    /// The sandbox choice (`auto`, `native`, `container`).
    pub sandbox: Option<String>,
}

pub struct ProvenanceInputs<'a> {
    pub lock: &'a Lock,
    pub release: &'a Release,
    /// The output directory: subjects get `sha256`/`dirHash` and are checked against the manifest.
    pub out_dir: Option<&'a Path>,
    /// SHA-256 of farm-manifest.json's bytes (a byproduct of the run).
    pub manifest_sha256: Option<String>,
    pub source: Option<SourceRevision>,
    /// What was asked to be built (`all`, `frontend`, …).
    pub targets: Vec<String>,
    pub run: RunFacts,
    pub model_host: Option<&'a str>,
}

/// The provenance Statement.
pub fn statement(inputs: &ProvenanceInputs) -> Result<Value> {
    let release = inputs.release;
    let subjects = subjects(release, inputs.out_dir)?;
    let mut external = json!({
        "environment": release.environment,
        "dev": release.dev,
        "targets": inputs.targets,
    });
    if let Some(d) = &release.farm_toml_digest {
        external["farmToml"] = json!(d);
    }
    if let Some(s) = &inputs.source {
        external["source"] = json!({"revision": s.revision, "clean": s.clean});
    }
    let mut deps = lock_dependencies(inputs.lock, inputs.model_host);
    if let Some(l) = release.lock_digest.as_deref().and_then(|d| d.strip_prefix("sha256:")) {
        deps.push(json!({"name": "farm.lock", "digest": {"sha256": l}, "annotations": {"farm:lock": "file"}}));
    }
    for (name, digest) in &release.sources {
        deps.push(json!({
            "name": format!("source:{name}"),
            "digest": {TREE_ALGORITHM: digest.trim_start_matches("sha256:")},
            "annotations": {"farm:source": name},
        }));
    }
    let mut internal = json!({
        "hermetic": release.hermetic,
        "sourceDateEpoch": release.source_date_epoch,
    });
    if let Some(s) = &inputs.run.sandbox {
        internal["sandbox"] = json!(s);
    }
    let mut metadata = json!({});
    if let Some(t) = inputs.run.started {
        metadata["startedOn"] = json!(crate::time::system_time(t));
    }
    if let Some(t) = inputs.run.finished {
        metadata["finishedOn"] = json!(crate::time::system_time(t));
    }
    let invocation = inputs.run.invocation_id.clone().unwrap_or_else(|| {
        let when = inputs
            .run
            .finished
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "urn:farm:invocation:{}",
            &crate::sha256_hex(format!("{}\n{when}", release.identity).as_bytes())[..32]
        )
    });
    metadata["invocationId"] = json!(invocation);
    let mut run = json!({
        "builder": {"id": BUILDER_ID, "version": {"farm": crate::FARM_VERSION}},
        "metadata": metadata,
    });
    if let Some(m) = &inputs.manifest_sha256 {
        run["byproducts"] = json!([{"name": "farm-manifest.json", "digest": {"sha256": m}}]);
    }
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": deps,
            },
            "runDetails": run,
        },
    }))
}

/// A Statement wrapping an SBOM document: the subjects are the release's.
pub fn sbom_statement(subjects: &[Subject], predicate_type: &str, document: Value) -> Value {
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": predicate_type,
        "predicate": document,
    })
}

/// A Statement's bytes: canonical JSON, two-space indent, a trailing newline.
pub fn to_bytes(statement: &Value) -> Vec<u8> {
    farm_formats::canonical_json::to_vec_pretty(statement).expect("a JSON value serialises")
}

/// What a JSON document is, for `farm sign`: a Statement is signed as it
/// is; an SBOM is wrapped in one first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Statement,
    Spdx,
    CycloneDx,
}

pub fn document_kind(v: &Value) -> Option<DocumentKind> {
    if v.get("_type").and_then(Value::as_str) == Some(STATEMENT_TYPE) {
        Some(DocumentKind::Statement)
    } else if v.get("spdxVersion").is_some() {
        Some(DocumentKind::Spdx)
    } else if v.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        Some(DocumentKind::CycloneDx)
    } else {
        None
    }
}
