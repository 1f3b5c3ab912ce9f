//! The license an artifact declares, read from its store entry: npm's
//! `package.json` `license`, a wheel's METADATA (`License-Expression`,
//! else `License` when it is an SPDX expression, else its license
//! classifiers), a Debian package's machine-readable `copyright` file.
//! Everything that goes into a document is a valid SPDX expression (the
//! `spdx` crate's license list); Debian names that have no SPDX identifier
//! become `LicenseRef-` ids whose text the document carries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// What a package declares: an SPDX expression, and the texts of any
/// `LicenseRef-` ids in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declared {
    pub expression: Option<String>,
    pub extracted: BTreeMap<String, Extracted>,
}

/// A license outside the SPDX list, as SPDX's `hasExtractedLicensingInfos` holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extracted {
    /// The name the package gave it (`public-domain`).
    pub name: String,
    pub text: String,
}

/// Which reader an artifact needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Npm,
    Wheel,
    Deb,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Npm => "npm",
            Source::Wheel => "wheel",
            Source::Deb => "deb",
        }
    }
}

/// Changes whenever `detect` may answer differently for the same entry, so
/// that remembered answers (see `Memo`) are not reused across versions.
pub const DETECTOR_VERSION: u32 = 1;

/// Answers of `detect` kept between calls. Reading a license decompresses
/// the whole archive, and a store entry's contents never change under its
/// name, so an answer stays right for as long as the entry exists.
pub trait Memo {
    fn get(&self, source: Source, path: &Path) -> Option<Declared>;
    fn put(&self, source: Source, path: &Path, declared: &Declared);
}

/// `detect`, asking `memo` first and telling it what was read.
pub fn detect_with(memo: Option<&dyn Memo>, source: Source, path: &Path) -> Declared {
    let Some(memo) = memo else {
        return detect(source, path);
    };
    if let Some(d) = memo.get(source, path) {
        return d;
    }
    let d = detect(source, path);
    memo.put(source, path, &d);
    d
}

/// The most of a file read for a license: manifests and copyright files are small.
const MAX_FILE: u64 = 8 << 20;

/// Reads the license `path` (a store entry: file or directory) declares.
/// Unreadable or absent metadata is no license (NOASSERTION), never an error:
/// the SBOM is still right about everything else.
pub fn detect(source: Source, path: &Path) -> Declared {
    let found = match source {
        Source::Npm => npm(path).map(|e| Declared {
            expression: Some(e),
            ..Default::default()
        }),
        Source::Wheel => wheel(path).map(|e| Declared {
            expression: Some(e),
            ..Default::default()
        }),
        Source::Deb => deb(path),
    };
    found.unwrap_or_default()
}

/// A valid SPDX expression for `raw`, canonicalised (`GPL-2.0+` →
/// `GPL-2.0-or-later`, lowercase operators upper-cased), or None.
pub fn spdx_expression(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 512 {
        return None;
    }
    let canon = match spdx::Expression::canonicalize(raw) {
        Ok(Some(c)) => c,
        Ok(None) => raw.to_string(),
        Err(_) => return None,
    };
    spdx::Expression::parse(&canon).ok().map(|_| canon)
}

fn read_small(path: &Path) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_FILE)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn npm(path: &Path) -> Option<String> {
    let manifest = if path.is_dir() {
        read_small(&path.join("package.json"))?
    } else {
        package_json_in_tarball(path)?
    };
    let v: serde_json::Value = serde_json::from_slice(&manifest).ok()?;
    // `license` is a string; old packages use `{ "type": … }` or a `licenses` array.
    let names: Vec<String> = match (v.get("license"), v.get("licenses")) {
        (Some(serde_json::Value::String(s)), _) => vec![s.clone()],
        (Some(serde_json::Value::Object(o)), _) => o
            .get("type")
            .and_then(|t| t.as_str())
            .map(String::from)
            .into_iter()
            .collect(),
        (_, Some(serde_json::Value::Array(a))) => a
            .iter()
            .filter_map(|l| l.get("type").and_then(|t| t.as_str()).or(l.as_str()).map(String::from))
            .collect(),
        _ => vec![],
    };
    let exprs: Vec<String> = names.iter().filter_map(|n| spdx_expression(n)).collect();
    match exprs.len() {
        0 => None,
        1 => exprs.into_iter().next(),
        // The old `licenses` array meant "any of these".
        _ => Some(exprs.iter().map(|e| format!("({e})")).collect::<Vec<_>>().join(" OR ")),
    }
}

/// `package.json` at the top of an npm tarball (`package/package.json`; a
/// few packages use another top directory).
fn package_json_in_tarball(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let p = entry.path().ok()?.into_owned();
        let parts: Vec<_> = p.components().collect();
        if parts.len() == 2 && p.file_name().is_some_and(|n| n == "package.json") {
            let mut out = Vec::new();
            (&mut entry).take(MAX_FILE).read_to_end(&mut out).ok()?;
            return Some(out);
        }
    }
    None
}

fn wheel(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let metadata = crate::zip::read_member(&bytes, |name| {
        let mut parts = name.split('/');
        matches!((parts.next(), parts.next(), parts.next()), (Some(d), Some("METADATA"), None) if d.ends_with(".dist-info"))
    })
    .ok()??;
    wheel_metadata_license(&String::from_utf8_lossy(&metadata))
}

/// The license of a core-metadata file (PEP 566/639): `License-Expression`,
/// else `License` if it is an SPDX expression, else the license classifiers.
pub fn wheel_metadata_license(metadata: &str) -> Option<String> {
    // Headers end at the first blank line; the description follows.
    let headers = metadata.split("\n\n").next().unwrap_or_default();
    let field = |name: &str| -> Vec<String> {
        headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    if let Some(e) = field("License-Expression").iter().find_map(|e| spdx_expression(e)) {
        return Some(e);
    }
    if let Some(e) = field("License").iter().find_map(|e| spdx_expression(e)) {
        return Some(e);
    }
    let ids: BTreeSet<&str> = field("Classifier")
        .iter()
        .filter_map(|c| classifier_license(c))
        .collect();
    match ids.len() {
        0 => None,
        // Several license classifiers conventionally mean a choice.
        _ => Some(ids.into_iter().collect::<Vec<_>>().join(" OR ")),
    }
}

/// The SPDX id of a `License :: …` trove classifier, for the common ones.
fn classifier_license(classifier: &str) -> Option<&'static str> {
    let name = classifier.strip_prefix("License ::")?.trim();
    let name = name.strip_prefix("OSI Approved ::").map(str::trim).unwrap_or(name);
    Some(match name {
        "MIT License" => "MIT",
        "MIT No Attribution License (MIT-0)" => "MIT-0",
        "Apache Software License" => "Apache-2.0",
        "BSD License" => return None, // which BSD is not said
        "ISC License (ISCL)" => "ISC",
        "Python Software Foundation License" => "PSF-2.0",
        "Mozilla Public License 2.0 (MPL 2.0)" => "MPL-2.0",
        "GNU General Public License v2 (GPLv2)" => "GPL-2.0-only",
        "GNU General Public License v2 or later (GPLv2+)" => "GPL-2.0-or-later",
        "GNU General Public License v3 (GPLv3)" => "GPL-3.0-only",
        "GNU General Public License v3 or later (GPLv3+)" => "GPL-3.0-or-later",
        "GNU Lesser General Public License v2 or later (LGPLv2+)" => "LGPL-2.0-or-later",
        "GNU Lesser General Public License v3 (LGPLv3)" => "LGPL-3.0-only",
        "GNU Lesser General Public License v3 or later (LGPLv3+)" => "LGPL-3.0-or-later",
        "GNU Affero General Public License v3" => "AGPL-3.0-only",
        "The Unlicense (Unlicense)" => "Unlicense",
        "Zope Public License" => "ZPL-2.1",
        "Academic Free License (AFL)" => "AFL-3.0",
        "Boost Software License 1.0 (BSL-1.0)" => "BSL-1.0",
        "Eclipse Public License 2.0 (EPL-2.0)" => "EPL-2.0",
        "Historical Permission Notice and Disclaimer (HPND)" => "HPND",
        "Public Domain" | "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication" => "CC0-1.0",
        _ => return None,
    })
}

/// Debian: every `usr/share/doc/*/copyright` in the package that is in the
/// machine-readable format; the package's license is all of its files'
/// licenses (AND), each one mapped to SPDX or to a `LicenseRef-`.
fn deb(path: &Path) -> Option<Declared> {
    let doc = path.join("usr/share/doc");
    let mut dirs: Vec<_> = std::fs::read_dir(&doc)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let mut terms = BTreeSet::new();
    let mut extracted = BTreeMap::new();
    for dir in dirs {
        // A symlinked doc directory belongs to another package.
        if dir.symlink_metadata().map(|m| !m.is_dir()).unwrap_or(true) {
            continue;
        }
        let Some(text) = read_small(&dir.join("copyright")) else {
            continue;
        };
        let Some(parsed) = dep5(&String::from_utf8_lossy(&text)) else {
            continue;
        };
        for (name, expr) in parsed.terms {
            terms.insert(expr.clone());
            for id in license_refs(&expr) {
                let body = parsed
                    .texts
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| format!("License `{name}` as named in usr/share/doc/*/copyright of the Debian package; the file carries no text for it."));
                extracted.entry(id).or_insert(Extracted {
                    name: name.clone(),
                    text: body,
                });
            }
        }
    }
    if terms.is_empty() {
        return None;
    }
    let expression = if terms.len() == 1 {
        terms.into_iter().next()
    } else {
        Some(terms.iter().map(|t| paren(t)).collect::<Vec<_>>().join(" AND "))
    };
    Some(Declared { expression, extracted })
}

fn paren(e: &str) -> String {
    if e.contains(' ') {
        format!("({e})")
    } else {
        e.to_string()
    }
}

fn license_refs(expr: &str) -> Vec<String> {
    expr.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| t.starts_with("LicenseRef-"))
        .map(String::from)
        .collect()
}

struct Dep5 {
    /// (the name as written, its SPDX expression) for each Files paragraph's License.
    terms: Vec<(String, String)>,
    /// Stand-alone License paragraphs: name → text.
    texts: BTreeMap<String, String>,
}

/// A DEP-5 copyright file (copyright-format 1.0); None for free-form files.
fn dep5(text: &str) -> Option<Dep5> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            current.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    let header = paragraphs.first()?;
    let format = header.iter().find(|(k, _)| k == "format")?;
    if !format.1.contains("copyright-format") {
        return None;
    }
    let mut terms = Vec::new();
    let mut texts = BTreeMap::new();
    for (i, p) in paragraphs.iter().enumerate() {
        let Some((_, license)) = p.iter().find(|(k, _)| k == "license") else {
            continue;
        };
        let (name, body) = license.split_once('\n').unwrap_or((license.as_str(), ""));
        let name = name.trim().to_string();
        let is_files = p.iter().any(|(k, _)| k == "files");
        // The header's License is the package's as a whole; each Files paragraph's its files'.
        if (is_files || i == 0) && !name.is_empty() {
            terms.push((name.clone(), dep5_expression(&name)));
        }
        let body = body
            .lines()
            .map(|l| if l == "." { "" } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        if !body.trim().is_empty() {
            texts.entry(name).or_insert(body);
        }
    }
    Some(Dep5 { terms, texts })
}

/// A DEP-5 license name (`GPL-2+`, `LGPL-2.1+ or Artistic`, `Expat`,
/// `public-domain`) as an SPDX expression: known names mapped, the rest
/// `LicenseRef-deb-<name>`.
pub fn dep5_expression(name: &str) -> String {
    let spaced = name.replace('(', " ( ").replace(')', " ) ").replace(',', " and ");
    let mut out = Vec::new();
    let mut words = spaced.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w.to_ascii_lowercase().as_str() {
            "and" => out.push("AND".to_string()),
            "or" => out.push("OR".to_string()),
            "(" | ")" => out.push(w.to_string()),
            "with" => {
                // `GPL-2+ with OpenSSL exception`: the exception's words up to an operator.
                let mut exc = Vec::new();
                while let Some(n) = words.peek() {
                    if ["and", "or", ")"].contains(&n.to_ascii_lowercase().as_str()) {
                        break;
                    }
                    exc.push(words.next().unwrap_or_default());
                }
                let joined = exc.join("-");
                match exception(&joined) {
                    Some(e) => {
                        out.push("WITH".into());
                        out.push(e.to_string());
                    }
                    // No SPDX exception: the license and its exception are one LicenseRef.
                    None => {
                        let last = out.pop().unwrap_or_default();
                        let last = last.strip_prefix("LicenseRef-deb-").unwrap_or(&last);
                        out.push(license_ref(&format!("{last}-with-{joined}")));
                    }
                }
            }
            _ => out.push(dep5_id(w)),
        }
    }
    let expr = out.join(" ").replace("( ", "(").replace(" )", ")");
    spdx_expression(&expr).unwrap_or_else(|| license_ref(name))
}

fn exception(words: &str) -> Option<&'static str> {
    let w = words.to_ascii_lowercase();
    if w.starts_with("openssl") {
        // No SPDX exception id says exactly Debian's OpenSSL exception.
        return None;
    }
    if w.starts_with("classpath") {
        return Some("Classpath-exception-2.0");
    }
    if w.starts_with("gcc-runtime") || w.starts_with("gcc") {
        return Some("GCC-exception-3.1");
    }
    if w.starts_with("autoconf") {
        return Some("Autoconf-exception-3.0");
    }
    None
}

/// One DEP-5 short name as an SPDX id.
fn dep5_id(name: &str) -> String {
    let (base, plus) = match name.strip_suffix('+') {
        Some(b) => (b, true),
        None => (name, false),
    };
    let lower = base.to_ascii_lowercase();
    if let Some(id) = gnu(&lower, plus) {
        return id;
    }
    let or_later = if plus { "+" } else { "" };
    // DEP-5's own short names (copyright-format 1.0, "License specification").
    let mapped = match lower.as_str() {
        "expat" => Some("MIT"),
        "zlib" => Some("Zlib"),
        "isc" => Some("ISC"),
        "artistic" | "artistic-1" | "artistic-1.0" => Some("Artistic-1.0-Perl"),
        "bsd-2-clause" => Some("BSD-2-Clause"),
        "bsd-3-clause" => Some("BSD-3-Clause"),
        "bsd-4-clause" => Some("BSD-4-Clause"),
        "apache-2.0" | "apache-2" => Some("Apache-2.0"),
        "mpl-1.1" => Some("MPL-1.1"),
        "mpl-2.0" => Some("MPL-2.0"),
        "cc0-1.0" | "cc0" => Some("CC0-1.0"),
        _ => None,
    };
    if let Some(id) = mapped {
        return format!("{id}{or_later}");
    }
    match spdx::license_id(base) {
        Some(id) if !id.is_deprecated() => format!("{base}{or_later}"),
        _ => license_ref(name),
    }
}

/// `GPL-2`, `LGPL-2.1`, `AGPL-3`, `GFDL-1.3` (+ for "or later") as SPDX ids.
fn gnu(lower: &str, plus: bool) -> Option<String> {
    for family in ["agpl", "lgpl", "gpl", "gfdl"] {
        if let Some(v) = lower.strip_prefix(family).and_then(|r| r.strip_prefix('-')) {
            let v = if v.contains('.') {
                v.to_string()
            } else {
                format!("{v}.0")
            };
            let id = format!(
                "{}-{v}-{}",
                family.to_ascii_uppercase(),
                if plus { "or-later" } else { "only" }
            );
            return spdx::license_id(&id).map(|_| id);
        }
    }
    None
}

/// `LicenseRef-deb-<name>` with every character SPDX ids do not allow as `-`.
fn license_ref(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
        .collect();
    format!("LicenseRef-deb-{}", clean.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdx_expressions_are_checked_and_canonicalised() {
        assert_eq!(spdx_expression("MIT").as_deref(), Some("MIT"));
        assert_eq!(
            spdx_expression("(MIT OR Apache-2.0)").as_deref(),
            Some("(MIT OR Apache-2.0)")
        );
        assert_eq!(
            spdx_expression("MIT or Apache-2.0").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(spdx_expression("GPL-2.0+").as_deref(), Some("GPL-2.0-or-later"));
        assert_eq!(spdx_expression("SEE LICENSE IN LICENSE.md"), None);
        assert_eq!(spdx_expression(""), None);
    }

    #[test]
    fn debian_names_map_to_spdx_or_a_license_ref() {
        assert_eq!(dep5_expression("GPL-3+"), "GPL-3.0-or-later");
        assert_eq!(dep5_expression("GPL-2"), "GPL-2.0-only");
        assert_eq!(dep5_expression("LGPL-2.1+"), "LGPL-2.1-or-later");
        assert_eq!(dep5_expression("Expat"), "MIT");
        assert_eq!(dep5_expression("BSD-3-clause"), "BSD-3-Clause");
        assert_eq!(
            dep5_expression("GPL-2+ or Artistic"),
            "GPL-2.0-or-later OR Artistic-1.0-Perl"
        );
        assert_eq!(dep5_expression("public-domain"), "LicenseRef-deb-public-domain");
        assert_eq!(
            dep5_expression("GPL-2+ with OpenSSL exception"),
            "LicenseRef-deb-GPL-2.0-or-later-with-OpenSSL-exception"
        );
        assert_eq!(
            dep5_expression("BSD-3-clause-Cambridge with BINARY exception"),
            "LicenseRef-deb-BSD-3-clause-Cambridge-with-BINARY-exception"
        );
        for e in ["GPL-2+ or Artistic", "public-domain", "permissive (see below)"] {
            assert!(
                spdx_expression(&dep5_expression(e)).is_some(),
                "{e} gives a valid expression"
            );
        }
    }

    #[test]
    fn a_dep5_file_gives_every_files_license_and_the_texts() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nSource: x\n\nFiles: *\nCopyright: 1999 A\nLicense: GPL-3+\n\nFiles: lib/x.c\nCopyright: 2000 B\nLicense: public-domain\n\nLicense: public-domain\n This file is in the public domain.\n .\n Really.\n";
        let d = dep5(text).unwrap();
        assert_eq!(
            d.terms,
            vec![
                ("GPL-3+".to_string(), "GPL-3.0-or-later".to_string()),
                ("public-domain".to_string(), "LicenseRef-deb-public-domain".to_string())
            ]
        );
        assert_eq!(
            d.texts["public-domain"],
            "This file is in the public domain.\n\nReally."
        );
        assert!(dep5("This is the Debian prepackaged version of x.\n").is_none());
    }

    #[test]
    fn wheel_metadata_prefers_the_expression_then_license_then_classifiers() {
        let m = "Metadata-Version: 2.4\nName: a\nLicense-Expression: MIT\nLicense: BSD\n\nbody License: GPL\n";
        assert_eq!(wheel_metadata_license(m).as_deref(), Some("MIT"));
        let m = "Metadata-Version: 2.1\nName: a\nLicense: Apache-2.0\n";
        assert_eq!(wheel_metadata_license(m).as_deref(), Some("Apache-2.0"));
        let m = "Metadata-Version: 2.1\nName: a\nLicense: Copyright (c) the authors, all rights\nClassifier: License :: OSI Approved :: MIT License\n";
        assert_eq!(wheel_metadata_license(m).as_deref(), Some("MIT"));
        let m = "Metadata-Version: 2.1\nName: a\nClassifier: License :: OSI Approved :: BSD License\n";
        assert_eq!(wheel_metadata_license(m), None);
    }
}
