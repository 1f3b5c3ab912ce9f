//! `farm sbom --diff`: the packages two SBOMs (SPDX or CycloneDX JSON, as
//! farm writes them) differ in — added, removed, and changed version.
//! Packages are matched by their purl without version and qualifiers
//! (`pkg:npm/%40scope/ui`), or by name when they have no purl; the build's
//! outputs and the release itself are not packages.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use crate::{Error, Result};

/// Every package of a document: its key (purl without version, or
/// `name:<name>`) → the versions it is present in.
pub type Packages = BTreeMap<String, BTreeSet<String>>;

/// The packages of the SBOM `bytes`; `shown` names the file in errors.
pub fn packages(shown: &str, bytes: &[u8]) -> Result<Packages> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid(
            shown,
            format!("not JSON ({e}); expected an SPDX 2.3 or CycloneDX 1.6 JSON SBOM as `farm sbom` writes"),
        )
    })?;
    let mut out = Packages::new();
    let mut add = |id: &str, name: Option<&str>, version: Option<&str>, purl: Option<&str>| {
        // The release (root) and the build's outputs are what was made, not what went in.
        let id = id.strip_prefix("SPDXRef-").unwrap_or(id);
        if id == "release" || id == "DOCUMENT" || id.starts_with("output-") {
            return;
        }
        let key = match purl {
            Some(p) => purl_key(p),
            None => match name {
                Some(n) => format!("name:{n}"),
                None => return,
            },
        };
        let version = version
            .map(str::to_string)
            .or_else(|| purl.and_then(purl_version))
            .unwrap_or_default();
        out.entry(key).or_default().insert(version);
    };
    if doc.get("spdxVersion").and_then(Value::as_str).is_some() {
        let list = doc.get("packages").and_then(Value::as_array).ok_or_else(|| {
            Error::invalid(
                shown,
                "an SPDX document without a `packages` array; expected one as `farm sbom` writes",
            )
        })?;
        for p in list {
            let purl = p
                .get("externalRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|r| r["referenceType"] == "purl")
                .and_then(|r| r["referenceLocator"].as_str());
            add(
                p["SPDXID"].as_str().unwrap_or_default(),
                p["name"].as_str(),
                p["versionInfo"].as_str(),
                purl,
            );
        }
    } else if doc.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        let mut stack: Vec<&Value> = doc
            .get("components")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        while let Some(c) = stack.pop() {
            stack.extend(c.get("components").and_then(Value::as_array).into_iter().flatten());
            add(
                c["bom-ref"].as_str().unwrap_or_default(),
                c["name"].as_str(),
                c["version"].as_str(),
                c["purl"].as_str(),
            );
        }
    } else {
        return Err(Error::invalid(
            shown,
            "not an SBOM: expected an SPDX document (`spdxVersion`) or a CycloneDX BOM (`\"bomFormat\": \"CycloneDX\"`)",
        ));
    }
    Ok(out)
}

/// `pkg:type/ns/name@version?q#s` → `pkg:type/ns/name`.
fn purl_key(purl: &str) -> String {
    let end = purl.find(['@', '?', '#']).unwrap_or(purl.len());
    purl[..end].to_string()
}

fn purl_version(purl: &str) -> Option<String> {
    let at = purl.find('@')?;
    let rest = &purl[at + 1..];
    Some(rest[..rest.find(['?', '#']).unwrap_or(rest.len())].to_string())
}

/// What changed from `old` to `new`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<(String, BTreeSet<String>)>,
    pub removed: Vec<(String, BTreeSet<String>)>,
    /// Key, versions before, versions after.
    pub changed: Vec<(String, BTreeSet<String>, BTreeSet<String>)>,
}

impl Diff {
    pub fn between(old: &Packages, new: &Packages) -> Diff {
        let mut d = Diff::default();
        for (k, v) in new {
            match old.get(k) {
                None => d.added.push((k.clone(), v.clone())),
                Some(o) if o != v => d.changed.push((k.clone(), o.clone(), v.clone())),
                Some(_) => {}
            }
        }
        for (k, v) in old {
            if !new.contains_key(k) {
                d.removed.push((k.clone(), v.clone()));
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// One line per package — `+ key version`, `- key version`,
    /// `~ key old -> new` — sorted by key, then a count.
    pub fn to_text(&self) -> String {
        let join = |v: &BTreeSet<String>| v.iter().cloned().collect::<Vec<_>>().join(", ");
        let mut lines: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.added {
            lines.push((k.clone(), format!("+ {k} {}", join(v))));
        }
        for (k, v) in &self.removed {
            lines.push((k.clone(), format!("- {k} {}", join(v))));
        }
        for (k, o, n) in &self.changed {
            lines.push((k.clone(), format!("~ {k} {} -> {}", join(o), join(n))));
        }
        lines.sort();
        let mut s = String::new();
        for (_, l) in &lines {
            s.push_str(l);
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "{} added, {} removed, {} changed",
            self.added.len(),
            self.removed.len(),
            self.changed.len()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both formats give the same packages; outputs and the release are
    /// left out; a version change, an addition and a removal are each
    /// reported once; a JSON file that is no SBOM is refused by name.
    #[test]
    fn diffs_spdx_against_cyclonedx_and_refuses_non_sboms() {
        let spdx = serde_json::json!({"spdxVersion": "SPDX-2.3", "packages": [
            {"SPDXID": "SPDXRef-release", "name": "shop", "versionInfo": "1"},
            {"SPDXID": "SPDXRef-output-frontend", "name": "frontend", "versionInfo": "1"},
            {"SPDXID": "SPDXRef-npm-1", "name": "@scope/ui", "versionInfo": "1.2.3",
             "externalRefs": [{"referenceType": "purl", "referenceLocator": "pkg:npm/%40scope/ui@1.2.3"}]},
            {"SPDXID": "SPDXRef-deb-1", "name": "libc6", "versionInfo": "2.36-9",
             "externalRefs": [{"referenceType": "purl", "referenceLocator": "pkg:deb/debian/libc6@2.36-9?arch=amd64"}]},
        ]});
        let cdx = serde_json::json!({"bomFormat": "CycloneDX", "components": [
            {"bom-ref": "output-frontend", "name": "frontend", "version": "2"},
            {"bom-ref": "npm-2", "name": "ui", "version": "1.2.4", "purl": "pkg:npm/%40scope/ui@1.2.4"},
            {"bom-ref": "pypi-1", "name": "flask", "version": "3.0.0", "purl": "pkg:pypi/flask@3.0.0"},
        ]});
        let old = packages("old.spdx.json", spdx.to_string().as_bytes()).unwrap();
        let new = packages("new.cdx.json", cdx.to_string().as_bytes()).unwrap();
        assert_eq!(old.len(), 2, "{old:?}");
        let d = Diff::between(&old, &new);
        assert_eq!(
            d.to_text(),
            "- pkg:deb/debian/libc6 2.36-9\n~ pkg:npm/%40scope/ui 1.2.3 -> 1.2.4\n+ pkg:pypi/flask 3.0.0\n1 added, 1 removed, 1 changed\n"
        );
        assert!(Diff::between(&new, &new).is_empty());
        let err = packages("farm.lock.json", br#"{"version": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("farm.lock.json") && err.contains("not an SBOM"), "{err}");
        let err = packages("x.json", b"version = 1").unwrap_err().to_string();
        assert!(err.contains("x.json") && err.contains("not JSON"), "{err}");
    }
}
