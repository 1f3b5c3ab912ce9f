//! The SBOM of a release, independent of format: every locked artifact
//! and every output as a component, and what contains or was built from
//! what. `spdx` and `cyclonedx` write it out.
//!
//! Deterministic by construction: ids are hashes of content (purl and
//! integrity), components and relations are sorted, the only time is the
//! build's SOURCE_DATE_EPOCH. The same lock, manifest and store entries
//! give the same documents, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use farm_lockfiles::integrity::{Algorithm, Integrity};
use farm_lockfiles::{Lock, LockedArtifact};

use crate::license::{self, Extracted, Source};
use crate::release::{Release, ReleaseOutput};
use crate::{purl, Error, Result};

/// What a component is; decides its purl, its SPDX purpose and CycloneDX type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The release itself (the document's root when it describes the release).
    Release,
    /// An output of the build (`frontend`, `backend`, `image.app`, …).
    Output,
    /// A build tool: Node, npm, pip, Ollama.
    Toolchain,
    Deb,
    Npm,
    Wheel,
    Model,
    /// A third-party image the deploy files run (farm.lock's `[[images]]`).
    Image,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Release => "release",
            Kind::Output => "output",
            Kind::Toolchain => "toolchain",
            Kind::Deb => "deb",
            Kind::Npm => "npm",
            Kind::Wheel => "wheel",
            Kind::Model => "model",
            Kind::Image => "image",
        }
    }
}

/// A checksum as both formats write it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hash {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl Hash {
    fn of(i: &Integrity) -> Hash {
        Hash {
            algorithm: i.algorithm,
            hex: i.hex(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Unique in the document; SPDX writes `SPDXRef-<id>`, CycloneDX uses it as `bom-ref`.
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub version: String,
    pub purl: Option<String>,
    pub hashes: Vec<Hash>,
    /// The lock's URL, credentials removed.
    pub download: Option<String>,
    /// A valid SPDX expression, or None for NOASSERTION.
    pub license: Option<String>,
    /// `farm:*` facts: output path and tree digest, npm lock path, Debian roles, wheel file.
    pub properties: BTreeMap<String, String>,
    /// For outputs: a regular file (openapi.json) rather than a directory.
    pub is_file: bool,
}

/// How two components relate, in SPDX's words ("A CONTAINS B").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RelKind {
    Contains,
    /// A was built from B (the frontend bundle from npm packages).
    GeneratedFrom,
    /// A is a tool used to build B.
    BuildToolOf,
    /// A needs B at run time (the deploy files and the images they run).
    DependsOn,
}

impl RelKind {
    pub fn spdx(self) -> &'static str {
        match self {
            RelKind::Contains => "CONTAINS",
            RelKind::GeneratedFrom => "GENERATED_FROM",
            RelKind::BuildToolOf => "BUILD_TOOL_OF",
            RelKind::DependsOn => "DEPENDS_ON",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Relation {
    pub from: String,
    pub kind: RelKind,
    pub to: String,
}

/// What a document covers: the release, or one of its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Release,
    /// An image output by its short name (`app` for `image.app`).
    Image(String),
}

#[derive(Debug, Clone)]
pub struct Sbom {
    /// The document's name: `<project>-<version>`, `-image-<name>` for an image.
    pub document_name: String,
    /// `sha256:` naming the documents (see [`Release::identity`]).
    pub identity: String,
    pub scope: Scope,
    pub created: String,
    pub farm_version: String,
    /// The component the document describes.
    pub root: String,
    /// Sorted by id; the root is one of them.
    pub components: Vec<Component>,
    /// Sorted, without duplicates.
    pub relations: Vec<Relation>,
    /// Texts of the `LicenseRef-` ids used, by id.
    pub extracted: BTreeMap<String, Extracted>,
}

impl Sbom {
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components
            .binary_search_by(|c| c.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.components[i])
    }
}

/// Where a locked artifact is in the store (licenses are read from there);
/// None when it is not there.
pub type ArtifactPath<'a> = &'a dyn Fn(&Integrity) -> Option<PathBuf>;

/// Everything an SBOM is made from.
pub struct SbomInputs<'a> {
    pub lock: &'a Lock,
    pub release: &'a Release,
    pub artifact_path: ArtifactPath<'a>,
    /// Licenses read before (the store keeps them): None reads every archive.
    pub license_memo: Option<&'a dyn license::Memo>,
    /// farm.toml's `[models] host`: the registry name Ollama knows the models by.
    pub model_host: Option<&'a str>,
    /// farm.toml's `[images] registry`, the home of farm's own images.
    pub image_registry: Option<&'a str>,
}

/// A URL fit for a document: no userinfo, credential-looking parameters masked.
pub fn clean_url(url: &str) -> String {
    farm_lockfiles::redact::redact_url(&farm_lockfiles::redact::without_userinfo(url))
}

/// A stable id: the kind and 16 hex digits of SHA-256 over what names the thing.
fn id_of(kind: Kind, naming: &str) -> String {
    format!("{}-{}", kind.prefix(), &crate::sha256_hex(naming.as_bytes())[..16])
}

fn artifact_component(
    kind: Kind,
    a: &LockedArtifact,
    purl: String,
    source: Option<Source>,
    inputs: &SbomInputs,
    extracted: &mut BTreeMap<String, Extracted>,
) -> Component {
    let mut license = None;
    if let (Some(src), Some(path)) = (source, (inputs.artifact_path)(&a.integrity)) {
        let d = license::detect_with(inputs.license_memo, src, &path);
        license = d.expression;
        extracted.extend(d.extracted);
    }
    Component {
        id: id_of(kind, &format!("{purl}\n{}", a.integrity)),
        kind,
        name: a.name.clone(),
        version: a.version.clone(),
        purl: Some(purl),
        hashes: vec![Hash::of(&a.integrity)],
        download: Some(clean_url(&a.url)),
        license,
        properties: BTreeMap::new(),
        is_file: false,
    }
}

/// The architecture of a Debian package, from its file name
/// (`name_version_arch.deb`); `all` packages are not the base's architecture.
fn deb_arch<'a>(a: &'a LockedArtifact, fallback: &'a str) -> &'a str {
    a.url
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_suffix(".deb"))
        .and_then(|f| f.rsplit('_').next())
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback)
}

fn output_component(name: &str, o: &ReleaseOutput, version: &str, image_registry: Option<&str>) -> Component {
    let mut properties = BTreeMap::from([
        ("farm:output".to_string(), name.to_string()),
        ("farm:path".to_string(), o.path.clone()),
        ("farm:tree-digest".to_string(), o.digest.clone()),
    ]);
    let (mut purl, mut hashes) = (None, vec![]);
    if let Some((reference, digest)) = o.image() {
        let (_, repo, tag) = purl::split_reference(reference);
        purl = Some(purl::oci(&repo, digest, image_registry, tag.as_deref()));
        if let Some(hex) = digest.strip_prefix("sha256:") {
            hashes.push(Hash {
                algorithm: Algorithm::Sha256,
                hex: hex.to_string(),
            });
        }
        properties.insert("farm:image-reference".into(), reference.to_string());
    }
    Component {
        id: format!("output-{}", sanitize(name)),
        kind: Kind::Output,
        name: name.to_string(),
        version: version.to_string(),
        purl,
        hashes,
        download: None,
        license: None,
        properties,
        // Directories' paths have no extension; the file outputs do (openapi.json, api-types.ts).
        is_file: o.image().is_none() && !o.path.contains('/') && o.path.contains('.'),
    }
}

/// Only the characters SPDX ids allow (`A-Za-z0-9.-`).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Builds the SBOM of `scope`.
pub fn build(inputs: &SbomInputs, scope: &Scope) -> Result<Sbom> {
    let lock = inputs.lock;
    let release = inputs.release;
    let mut components: Vec<Component> = Vec::new();
    let mut relations: BTreeSet<Relation> = BTreeSet::new();
    let mut extracted = BTreeMap::new();

    let root_id = "release".to_string();
    components.push(Component {
        id: root_id.clone(),
        kind: Kind::Release,
        name: release.name.clone(),
        version: release.version.clone(),
        purl: None,
        hashes: vec![],
        download: None,
        license: None,
        properties: BTreeMap::from([("farm:identity".to_string(), release.identity.clone())]),
        is_file: false,
    });

    let outputs: BTreeMap<&str, Component> = release
        .described_outputs()
        .map(|(n, o)| {
            (
                n.as_str(),
                output_component(n, o, &release.version, inputs.image_registry),
            )
        })
        .collect();
    let out_id = |name: &str| outputs.get(name).map(|c| c.id.clone());
    for c in outputs.values() {
        relations.insert(Relation {
            from: root_id.clone(),
            kind: RelKind::Contains,
            to: c.id.clone(),
        });
    }
    let images: Vec<String> = outputs
        .keys()
        .filter(|n| n.starts_with("image."))
        .map(|n| n.to_string())
        .collect();
    let (frontend, backend, models, deploy) = (
        out_id("frontend"),
        out_id("backend"),
        out_id("models"),
        out_id("deploy"),
    );
    let (app, ollama) = (out_id("image.app"), out_id("image.ollama"));
    // The images contain the outputs they are assembled from (crates/engine images.rs).
    for (image, parts) in [(&app, vec![&backend, &frontend]), (&ollama, vec![&models])] {
        for part in parts {
            if let (Some(i), Some(p)) = (image, part) {
                relations.insert(Relation {
                    from: i.clone(),
                    kind: RelKind::Contains,
                    to: p.clone(),
                });
            }
        }
    }

    // Every relation of a lock artifact, or the release depending on it when
    // nothing built says where it went (`farm sbom` before a build).
    let link = |c: &Component, rels: Vec<(Option<String>, RelKind, bool)>, relations: &mut BTreeSet<Relation>| {
        let mut any = false;
        for (other, kind, artifact_first) in rels {
            let Some(other) = other else { continue };
            any = true;
            let (from, to) = if artifact_first {
                (c.id.clone(), other)
            } else {
                (other, c.id.clone())
            };
            relations.insert(Relation { from, kind, to });
        }
        if !any {
            relations.insert(Relation {
                from: root_id.clone(),
                kind: RelKind::DependsOn,
                to: c.id.clone(),
            });
        }
    };

    if let Some(n) = &lock.node {
        let node = artifact_component(
            Kind::Toolchain,
            &n.node,
            purl::generic("node", &n.node.version),
            Some(Source::Npm),
            inputs,
            &mut extracted,
        );
        let npm = artifact_component(
            Kind::Toolchain,
            &n.npm,
            purl::npm("npm", &n.npm.version),
            Some(Source::Npm),
            inputs,
            &mut extracted,
        );
        for c in [node, npm] {
            link(&c, vec![(frontend.clone(), RelKind::BuildToolOf, true)], &mut relations);
            components.push(c);
        }
    }
    if let Some(p) = &lock.python {
        let mut c = artifact_component(
            Kind::Toolchain,
            &p.pip,
            purl::pypi("pip", &p.pip.version),
            Some(Source::Wheel),
            inputs,
            &mut extracted,
        );
        c.properties
            .insert("farm:python".into(), format!("{} {}", p.package, p.package_version));
        link(&c, vec![(backend.clone(), RelKind::BuildToolOf, true)], &mut relations);
        components.push(c);
    }
    if let Some(d) = &lock.debian {
        for p in &d.packages {
            let a = &p.artifact;
            let arch = deb_arch(a, &d.architecture);
            let mut c = artifact_component(
                Kind::Deb,
                a,
                purl::deb(&a.name, &a.version, arch, &d.suite),
                Some(Source::Deb),
                inputs,
                &mut extracted,
            );
            c.properties.insert("farm:deb-roles".into(), p.roles.join(","));
            // The runtime root is every image's base layer.
            let rels = images.iter().map(|i| (out_id(i), RelKind::Contains, false)).collect();
            link(&c, rels, &mut relations);
            components.push(c);
        }
    }
    if let Some(o) = &lock.ollama {
        let c = artifact_component(
            Kind::Toolchain,
            o,
            purl::generic("ollama", &o.version),
            None,
            inputs,
            &mut extracted,
        );
        link(&c, vec![(ollama.clone(), RelKind::Contains, false)], &mut relations);
        components.push(c);
    }
    for p in &lock.npm {
        let mut c = artifact_component(
            Kind::Npm,
            &p.artifact,
            purl::npm(&p.artifact.name, &p.artifact.version),
            Some(Source::Npm),
            inputs,
            &mut extracted,
        );
        c.properties.insert("farm:npm-path".into(), p.path.clone());
        link(
            &c,
            vec![(frontend.clone(), RelKind::GeneratedFrom, false)],
            &mut relations,
        );
        components.push(c);
    }
    for w in &lock.wheels {
        let mut c = artifact_component(
            Kind::Wheel,
            &w.artifact,
            purl::pypi(&w.artifact.name, &w.artifact.version),
            Some(Source::Wheel),
            inputs,
            &mut extracted,
        );
        c.properties.insert("farm:wheel".into(), w.filename.clone());
        let rels = vec![
            (backend.clone(), RelKind::Contains, false),
            (app.clone(), RelKind::Contains, false),
        ];
        link(&c, rels, &mut relations);
        components.push(c);
    }
    for m in &lock.models {
        let digest = m.manifest.digest.to_string();
        let p = purl::oci(&m.repository, &digest, inputs.model_host, Some(&m.tag));
        let mut hashes = vec![Hash::of(&m.manifest.digest)];
        hashes.dedup();
        let c = Component {
            id: id_of(Kind::Model, &format!("{p}\n{digest}")),
            kind: Kind::Model,
            name: m.reference.clone(),
            version: m.tag.clone(),
            purl: Some(p),
            hashes,
            download: None,
            license: None,
            properties: BTreeMap::from([
                ("farm:media-type".to_string(), m.manifest.media_type.clone()),
                (
                    "farm:layers".to_string(),
                    m.layers
                        .iter()
                        .map(|l| l.digest.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            ]),
            is_file: false,
        };
        let rels = vec![
            (models.clone(), RelKind::Contains, false),
            (ollama.clone(), RelKind::Contains, false),
        ];
        link(&c, rels, &mut relations);
        components.push(c);
    }
    for i in &lock.images {
        let (registry, repo, tag) = purl::split_reference(&i.reference);
        let digest = i.digest.to_string();
        let p = purl::oci(&repo, &digest, registry.as_deref(), tag.as_deref());
        let c = Component {
            id: id_of(Kind::Image, &format!("{p}\n{digest}")),
            kind: Kind::Image,
            name: i.name.clone(),
            version: tag.unwrap_or_else(|| digest.clone()),
            purl: Some(p),
            hashes: vec![Hash::of(&i.digest)],
            download: None,
            license: None,
            properties: BTreeMap::from([("farm:image-reference".to_string(), clean_url(&i.reference))]),
            is_file: false,
        };
        link(&c, vec![(deploy.clone(), RelKind::DependsOn, false)], &mut relations);
        components.push(c);
    }
    components.extend(outputs.into_values());

    // Two lock entries can be one artifact (an npm package at two paths).
    components.sort_by(|a, b| a.id.cmp(&b.id));
    components.dedup_by(|a, b| a.id == b.id);

    let (root, document_name) = match scope {
        Scope::Release => (root_id, format!("{}-{}", release.name, release.version)),
        Scope::Image(name) => {
            let key = format!("output-{}", sanitize(&format!("image.{name}")));
            if components.binary_search_by(|c| c.id.as_str().cmp(&key)).is_err() {
                let known: Vec<&str> = images.iter().map(|i| i.trim_start_matches("image.")).collect();
                return Err(Error::Other(format!(
                    "no image {name:?} in the build; its images: {}",
                    if known.is_empty() {
                        "none (build the images target first)".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            (key, format!("{}-{}-image-{name}", release.name, release.version))
        }
    };
    let mut relations: Vec<Relation> = relations.into_iter().collect();
    if let Scope::Image(_) = scope {
        // What the image holds: everything it contains or was built from, transitively.
        let mut keep = BTreeSet::from([root.clone()]);
        let mut frontier = vec![root.clone()];
        while let Some(id) = frontier.pop() {
            for r in relations
                .iter()
                .filter(|r| r.from == id && matches!(r.kind, RelKind::Contains | RelKind::GeneratedFrom))
            {
                if keep.insert(r.to.clone()) {
                    frontier.push(r.to.clone());
                }
            }
        }
        components.retain(|c| keep.contains(&c.id));
        relations.retain(|r| keep.contains(&r.from) && keep.contains(&r.to) && r.kind != RelKind::BuildToolOf);
    }
    let used: BTreeSet<String> = components
        .iter()
        .filter_map(|c| c.license.as_deref())
        .flat_map(|l| {
            l.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|t| t.starts_with("LicenseRef-"))
        .collect();
    extracted.retain(|id, _| used.contains(id));

    Ok(Sbom {
        document_name,
        identity: release.identity.clone(),
        scope: scope.clone(),
        created: crate::iso8601(release.source_date_epoch),
        farm_version: crate::FARM_VERSION.to_string(),
        root,
        components,
        relations,
        extracted,
    })
}

/// `(purl, hashes)` of every locked artifact, as an SBOM made from `lock`
/// lists them: what `farm verify-attestation` compares an SBOM with.
pub fn locked_purls(lock: &Lock, model_host: Option<&str>) -> BTreeMap<String, BTreeSet<Hash>> {
    let release = Release::unbuilt("x", "0", 0, b"", None);
    let none = |_: &Integrity| None;
    let inputs = SbomInputs {
        lock,
        release: &release,
        artifact_path: &none,
        license_memo: None,
        model_host,
        image_registry: None,
    };
    let sbom = build(&inputs, &Scope::Release).expect("a release-scoped SBOM of a lock always builds");
    let mut out: BTreeMap<String, BTreeSet<Hash>> = BTreeMap::new();
    for c in sbom.components {
        if let Some(p) = c.purl {
            out.entry(p).or_default().extend(c.hashes);
        }
    }
    out
}
