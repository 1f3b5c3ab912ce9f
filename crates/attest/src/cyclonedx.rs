//! CycloneDX 1.6 JSON (cyclonedx.org/docs/1.6/json) of an [`Sbom`].
//!
//! Components are flat (one per locked artifact and output, the release as
//! `metadata.component`); containment and build relations are all
//! `dependencies` (A depends on what it contains, what it was built from,
//! and its build tools), since CycloneDX has one dependency relation.

use serde_json::{json, Value};

use crate::sbom::{Component, Kind, RelKind, Sbom};
use farm_lockfiles::integrity::Algorithm;

pub const SPEC_VERSION: &str = "1.6";

/// `urn:uuid:` from the release identity: the same document gets the same
/// serial number. The 122 free bits come from SHA-256 of the identity and
/// the document name, with the version-5 and RFC 4122 variant bits set
/// (the schema allows versions 1–5 only).
pub fn serial_number(sbom: &Sbom) -> String {
    let h = crate::sha256_hex(format!("{}\n{}", sbom.identity, sbom.document_name).as_bytes());
    let mut b = hex::decode(&h[..32]).expect("hex");
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn component_type(c: &Component) -> &'static str {
    match c.kind {
        Kind::Release | Kind::Toolchain => "application",
        Kind::Deb | Kind::Npm | Kind::Wheel => "library",
        Kind::Model => "machine-learning-model",
        Kind::Image => "container",
        Kind::Output if c.purl.as_deref().is_some_and(|p| p.starts_with("pkg:oci/")) => "container",
        Kind::Output if c.is_file => "file",
        Kind::Output if c.name == "models" => "data",
        Kind::Output => "application",
    }
}

fn component(c: &Component) -> Value {
    let mut v = json!({
        "type": component_type(c),
        "bom-ref": c.id,
        "name": c.name,
        "version": c.version,
    });
    // npm scopes are CycloneDX groups.
    if c.kind == Kind::Npm
        || (c.kind == Kind::Toolchain && c.purl.as_deref().is_some_and(|p| p.starts_with("pkg:npm/")))
    {
        if let Some((scope, bare)) = c.name.split_once('/').filter(|(s, _)| s.starts_with('@')) {
            v["group"] = json!(scope);
            v["name"] = json!(bare);
        }
    }
    if let Some(p) = &c.purl {
        v["purl"] = json!(p);
    }
    if !c.hashes.is_empty() {
        let hashes: Vec<Value> = c
            .hashes
            .iter()
            .map(|h| {
                let alg = match h.algorithm {
                    Algorithm::Sha256 => "SHA-256",
                    Algorithm::Sha512 => "SHA-512",
                };
                json!({"alg": alg, "content": h.hex})
            })
            .collect();
        v["hashes"] = json!(hashes);
    }
    if let Some(l) = &c.license {
        v["licenses"] = json!([{"expression": l}]);
    }
    if let Some(u) = &c.download {
        v["externalReferences"] = json!([{"type": "distribution", "url": u}]);
    }
    if !c.properties.is_empty() {
        let props: Vec<Value> = c
            .properties
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        v["properties"] = json!(props);
    }
    v
}

/// The document as a JSON value.
pub fn document(sbom: &Sbom) -> Value {
    let root = sbom.component(&sbom.root).expect("the root is a component");
    let components: Vec<Value> = sbom
        .components
        .iter()
        .filter(|c| c.id != sbom.root)
        .map(component)
        .collect();
    // Every component appears in the graph, with what it depends on (possibly nothing).
    let mut deps: std::collections::BTreeMap<&str, Vec<&str>> =
        sbom.components.iter().map(|c| (c.id.as_str(), vec![])).collect();
    for r in &sbom.relations {
        let (from, to) = match r.kind {
            RelKind::Contains | RelKind::GeneratedFrom | RelKind::DependsOn => (&r.from, &r.to),
            // "A is a build tool of B": B depends on A.
            RelKind::BuildToolOf => (&r.to, &r.from),
        };
        deps.entry(from.as_str()).or_default().push(to.as_str());
    }
    let dependencies: Vec<Value> = deps
        .into_iter()
        .map(|(r, mut on)| {
            on.sort();
            on.dedup();
            json!({"ref": r, "dependsOn": on})
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(sbom),
        "version": 1,
        "metadata": {
            "timestamp": sbom.created,
            "lifecycles": [{"phase": "build"}],
            "tools": {"components": [{"type": "application", "name": "farm", "version": sbom.farm_version}]},
            "component": component(root),
        },
        "components": components,
        "dependencies": dependencies,
    })
}

/// The document's bytes: canonical JSON (sorted keys, two-space indent, a
/// trailing newline), arrays in the SBOM's sorted order.
pub fn to_bytes(sbom: &Sbom) -> Vec<u8> {
    farm_formats::canonical_json::to_vec_pretty(&document(sbom)).expect("a JSON value serialises")
}
