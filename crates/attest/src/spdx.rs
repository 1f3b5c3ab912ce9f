//! SPDX 2.3 JSON (spdx.github.io/spdx-spec/v2.3) of an [`Sbom`].
//!
//! Packages are not file-analysed (`filesAnalyzed: false`); each carries its
//! purl as a PACKAGE-MANAGER reference, its lock checksum, where it was
//! downloaded from, and the license it declares. Lock URLs in farm's own
//! schemes (`mirror://npm/…`, `pypi://…`) are not URLs SPDX accepts as a
//! download location: those packages say NOASSERTION there and carry the
//! URL as an OTHER reference of type `farm-lock-url`.

use serde_json::{json, Value};

use crate::sbom::{Component, Kind, Sbom, Scope};
use farm_lockfiles::integrity::Algorithm;

pub const SPDX_VERSION: &str = "SPDX-2.3";

/// The `documentNamespace`: unique per release (and image), derived from
/// the release identity, so it is the same every time it is written.
pub fn namespace(sbom: &Sbom) -> String {
    let scope = match &sbom.scope {
        Scope::Release => String::new(),
        Scope::Image(name) => format!(":image:{name}"),
    };
    format!(
        "urn:farm:spdx:{}:{}{scope}",
        sbom.document_name,
        sbom.identity.trim_start_matches("sha256:")
    )
}

pub fn spdx_id(id: &str) -> String {
    format!("SPDXRef-{id}")
}

fn purpose(c: &Component) -> &'static str {
    match c.kind {
        Kind::Release | Kind::Toolchain => "APPLICATION",
        Kind::Deb | Kind::Npm | Kind::Wheel => "LIBRARY",
        Kind::Model => "OTHER",
        Kind::Image => "CONTAINER",
        Kind::Output if c.purl.as_deref().is_some_and(|p| p.starts_with("pkg:oci/")) => "CONTAINER",
        Kind::Output if c.is_file => "FILE",
        Kind::Output => "APPLICATION",
    }
}

/// Whether SPDX (and its reference tools) take `url` as a download location.
fn is_download_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["https://", "http://", "ftp://", "sftp://"]
        .iter()
        .any(|s| lower.starts_with(s))
        && url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|host| host.contains('.'))
        && !url.contains(char::is_whitespace)
}

fn package(c: &Component) -> Value {
    let mut p = json!({
        "SPDXID": spdx_id(&c.id),
        "name": c.name,
        "versionInfo": c.version,
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": c.license.as_deref().unwrap_or("NOASSERTION"),
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "primaryPackagePurpose": purpose(c),
    });
    let mut refs = Vec::new();
    if let Some(purl) = &c.purl {
        refs.push(json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}));
    }
    match &c.download {
        Some(u) if is_download_url(u) => p["downloadLocation"] = json!(u),
        Some(u) => {
            p["downloadLocation"] = json!("NOASSERTION");
            refs.push(json!({"referenceCategory": "OTHER", "referenceType": "farm-lock-url", "referenceLocator": u}));
        }
        None => p["downloadLocation"] = json!("NOASSERTION"),
    }
    if !refs.is_empty() {
        p["externalRefs"] = json!(refs);
    }
    if !c.hashes.is_empty() {
        let sums: Vec<Value> = c
            .hashes
            .iter()
            .map(|h| {
                let algorithm = match h.algorithm {
                    Algorithm::Sha256 => "SHA256",
                    Algorithm::Sha512 => "SHA512",
                };
                json!({"algorithm": algorithm, "checksumValue": h.hex})
            })
            .collect();
        p["checksums"] = json!(sums);
    }
    if !c.properties.is_empty() {
        let text: Vec<String> = c.properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
        p["comment"] = json!(text.join("\n"));
    }
    p
}

/// The document as a JSON value.
pub fn document(sbom: &Sbom) -> Value {
    let packages: Vec<Value> = sbom.components.iter().map(package).collect();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": spdx_id(&sbom.root),
    })];
    relationships.extend(sbom.relations.iter().map(|r| {
        json!({
            "spdxElementId": spdx_id(&r.from),
            "relationshipType": r.kind.spdx(),
            "relatedSpdxElement": spdx_id(&r.to),
        })
    }));
    let mut doc = json!({
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": sbom.document_name,
        "documentNamespace": namespace(sbom),
        "creationInfo": {
            "created": sbom.created,
            "creators": [format!("Tool: farm-{}", sbom.farm_version)],
            "licenseListVersion": license_list_version(),
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !sbom.extracted.is_empty() {
        let infos: Vec<Value> = sbom
            .extracted
            .iter()
            .map(|(id, e)| json!({"licenseId": id, "name": e.name, "extractedText": e.text}))
            .collect();
        doc["hasExtractedLicensingInfos"] = json!(infos);
    }
    doc
}

/// `MAJOR.MINOR` of the SPDX license list the expressions were checked against.
fn license_list_version() -> String {
    let v = spdx::license_version();
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The document's bytes: canonical JSON (sorted keys, two-space indent, a
/// trailing newline), arrays in the SBOM's sorted order.
pub fn to_bytes(sbom: &Sbom) -> Vec<u8> {
    farm_formats::canonical_json::to_vec_pretty(&document(sbom)).expect("a JSON value serialises")
}
