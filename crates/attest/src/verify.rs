//! `farm verify-attestation`: checks a signed envelope — the signature, the
//! payload type, the Statement, each subject against the build's output
//! directory, and what the predicate says about the lock against farm.lock
//! (a provenance's resolved dependencies, an SBOM's packages). Every check
//! is reported, passed or failed, with what was expected and what was found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component as PathComponent, Path};

use farm_lockfiles::Lock;
use serde_json::Value;

use crate::dsse::{Envelope, INTOTO_PAYLOAD_TYPE};
use crate::keys::PublicKey;
use crate::provenance::{self, DIR_HASH_ALGORITHM, TREE_ALGORITHM};
use crate::release::Release;
use crate::sbom::{self, Hash};

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    /// What was checked: `signature`, `subject frontend`, `dependency pkg:npm/…`.
    pub what: String,
    pub message: String,
}

/// The checks of one envelope.
#[derive(Debug, Clone)]
pub struct Report {
    pub envelope: String,
    pub predicate_type: Option<String>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    fn pass(&mut self, what: impl Into<String>, message: impl Into<String>) {
        self.checks.push(Check {
            ok: true,
            what: what.into(),
            message: message.into(),
        });
    }

    fn fail(&mut self, what: impl Into<String>, message: impl Into<String>) {
        self.checks.push(Check {
            ok: false,
            what: what.into(),
            message: message.into(),
        });
    }
}

/// What envelopes are checked against.
pub struct Against<'a> {
    pub key: &'a PublicKey,
    /// The build's output directory (holding farm-manifest.json).
    pub out_dir: Option<&'a Path>,
    /// farm.lock, its bytes and the path to name it by.
    pub lock: Option<(&'a Lock, &'a [u8], &'a Path)>,
    pub model_host: Option<&'a str>,
}

/// Checks one envelope file's bytes; `shown` names it.
pub fn verify(shown: &str, bytes: &[u8], against: &Against) -> Report {
    let mut r = Report {
        envelope: shown.to_string(),
        predicate_type: None,
        checks: vec![],
    };
    let envelope = match Envelope::from_json(shown, bytes) {
        Ok(e) => e,
        Err(e) => {
            r.fail("envelope", e.to_string());
            return r;
        }
    };
    // Nothing in a payload is looked at before its signature holds.
    let payload = match envelope.verify(against.key) {
        Ok(p) => {
            r.pass(
                "signature",
                format!("{} key {}", against.key.key_type().name(), &against.key.key_id()[..16]),
            );
            p
        }
        Err(why) => {
            r.fail("signature", why);
            return r;
        }
    };
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE {
        r.fail(
            "payload type",
            format!("{:?}; expected {INTOTO_PAYLOAD_TYPE:?}", envelope.payload_type),
        );
        return r;
    }
    let statement: Value = match serde_json::from_slice(&payload) {
        Ok(v) => v,
        Err(e) => {
            r.fail("statement", format!("the payload is not JSON: {e}"));
            return r;
        }
    };
    if statement.get("_type").and_then(Value::as_str) != Some(provenance::STATEMENT_TYPE) {
        r.fail(
            "statement",
            format!(
                "`_type` is {}; expected {:?}",
                statement.get("_type").unwrap_or(&Value::Null),
                provenance::STATEMENT_TYPE
            ),
        );
        return r;
    }
    let predicate_type = statement
        .get("predicateType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    r.pass("statement", format!("in-toto Statement v1, predicate {predicate_type}"));
    r.predicate_type = Some(predicate_type.clone());

    let subjects: Vec<provenance::Subject> = match statement.get("subject").cloned().map(serde_json::from_value) {
        Some(Ok(s)) => s,
        _ => {
            r.fail("subjects", "`subject` is missing or not a list of {name, digest}");
            return r;
        }
    };
    check_subjects(&mut r, &subjects, against.out_dir);

    let predicate = statement.get("predicate").cloned().unwrap_or(Value::Null);
    let Some((lock, lock_bytes, lock_path)) = against.lock else {
        r.fail(
            "farm.lock",
            "no farm.lock to check the attestation's dependencies against; hint: run in the project (--project DIR)",
        );
        return r;
    };
    match predicate_type.as_str() {
        provenance::SLSA_PROVENANCE_V1 => {
            check_provenance_dependencies(&mut r, &predicate, lock, lock_bytes, lock_path, against.model_host)
        }
        provenance::SPDX_PREDICATE => check_sbom(&mut r, &spdx_purls(&predicate), lock, lock_path, against.model_host),
        provenance::CYCLONEDX_PREDICATE => check_sbom(
            &mut r,
            &cyclonedx_purls(&predicate),
            lock,
            lock_path,
            against.model_host,
        ),
        other => r.fail(
            "predicate",
            format!("{other:?}: not a predicate farm checks (SLSA provenance v1, SPDX, CycloneDX)"),
        ),
    }
    r
}

fn check_subjects(r: &mut Report, subjects: &[provenance::Subject], out_dir: Option<&Path>) {
    if subjects.is_empty() {
        r.fail("subjects", "the Statement has no subjects");
        return;
    }
    let Some(out) = out_dir.filter(|d| d.is_dir()) else {
        r.fail(
            "subjects",
            format!(
                "no output directory {}to check the {} subjects against; hint: run `farm build`, or pass --out DIR",
                out_dir.map(|d| format!("({}) ", d.display())).unwrap_or_default(),
                subjects.len()
            ),
        );
        return;
    };
    let manifest = out.join("farm-manifest.json");
    let release = Release::read_manifest(&manifest);
    for s in subjects {
        let what = format!("subject {}", s.name);
        if let Some(tree) = s.digest.get(TREE_ALGORITHM) {
            check_path_subject(r, &what, out, s, tree);
        } else if let Some(sha) = s.digest.get("sha256") {
            match &release {
                Ok(rel) => check_image_subject(r, &what, out, rel, &s.name, sha),
                Err(e) => r.fail(
                    what,
                    format!("an image subject, and the build's manifest cannot be read: {e}"),
                ),
            }
        } else {
            let algos: Vec<&str> = s.digest.keys().map(String::as_str).collect();
            r.fail(
                what,
                format!(
                    "no digest farm checks (has {}; expected {TREE_ALGORITHM} or sha256)",
                    algos.join(", ")
                ),
            );
        }
    }
}

fn check_path_subject(r: &mut Report, what: &str, out: &Path, s: &provenance::Subject, tree: &str) {
    let rel = Path::new(&s.name);
    if s.name.is_empty() || rel.components().any(|c| !matches!(c, PathComponent::Normal(_))) {
        r.fail(what, "the subject's name is not a path inside the output directory");
        return;
    }
    let path = out.join(rel);
    let actual = match farm_store::tree_digest(&path) {
        Ok(d) => d.to_hex(),
        Err(e) => {
            r.fail(what, format!("{e}"));
            return;
        }
    };
    if actual != *tree {
        r.fail(
            what,
            format!(
                "{} has tree digest sha256:{actual}; the attestation says sha256:{tree} (changed after signing)",
                path.display()
            ),
        );
        return;
    }
    for algo in ["sha256", DIR_HASH_ALGORITHM] {
        if let Some(expected) = s.digest.get(algo) {
            match provenance::content_digest(&path) {
                Ok((a, v)) if a == algo && v == *expected => {}
                Ok((a, v)) => {
                    r.fail(
                        what,
                        format!("{} has {a} {v}; the attestation says {algo} {expected}", path.display()),
                    );
                    return;
                }
                Err(e) => {
                    r.fail(what, e.to_string());
                    return;
                }
            }
        }
    }
    r.pass(
        what,
        format!(
            "{} matches (tree digest sha256:{})",
            path.display(),
            &tree[..16.min(tree.len())]
        ),
    );
}

fn check_image_subject(r: &mut Report, what: &str, out: &Path, release: &Release, reference: &str, sha: &str) {
    let Some((name, o)) = release
        .outputs
        .iter()
        .find(|(_, o)| o.image().is_some_and(|(re, _)| re == reference))
    else {
        r.fail(
            what,
            format!(
                "no image {reference} in the build's manifest ({})",
                out.join("farm-manifest.json").display()
            ),
        );
        return;
    };
    let (_, recorded) = o.image().expect("found by its image");
    if recorded.strip_prefix("sha256:") != Some(sha) {
        r.fail(
            what,
            format!("the build's image {reference} ({name}) is {recorded}; the attestation says sha256:{sha}"),
        );
        return;
    }
    // The layout must hold a manifest blob with exactly that digest.
    let blob = out.join(&o.path).join("blobs/sha256").join(sha);
    match std::fs::read(&blob) {
        Ok(bytes) if crate::sha256_hex(&bytes) == sha => r.pass(
            what,
            format!(
                "image manifest sha256:{} in {}",
                &sha[..16.min(sha.len())],
                out.join(&o.path).display()
            ),
        ),
        Ok(_) => r.fail(
            what,
            format!("{} does not hash to its name (changed after the build)", blob.display()),
        ),
        Err(e) => r.fail(what, format!("{}: {e}", blob.display())),
    }
}

/// name → digest set of a provenance's lock-derived dependencies.
fn lock_entries(deps: &[Value]) -> BTreeMap<String, BTreeMap<String, String>> {
    deps.iter()
        .filter(|d| {
            d.pointer("/annotations/farm:lock")
                .and_then(Value::as_str)
                .is_some_and(|k| k != "file")
        })
        .filter_map(|d| {
            let name = d.get("name")?.as_str()?.to_string();
            let digest: BTreeMap<String, String> = serde_json::from_value(d.get("digest")?.clone()).ok()?;
            Some((name, digest))
        })
        .collect()
}

fn show(d: &BTreeMap<String, String>) -> String {
    d.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(", ")
}

fn check_provenance_dependencies(
    r: &mut Report,
    predicate: &Value,
    lock: &Lock,
    lock_bytes: &[u8],
    lock_path: &Path,
    model_host: Option<&str>,
) {
    let Some(deps) = predicate
        .pointer("/buildDefinition/resolvedDependencies")
        .and_then(Value::as_array)
    else {
        r.fail(
            "resolved dependencies",
            "the provenance has no buildDefinition.resolvedDependencies",
        );
        return;
    };
    let lp = lock_path.display();
    let file_digest = deps
        .iter()
        .find(|d| d.get("name").and_then(Value::as_str) == Some("farm.lock"))
        .and_then(|d| d.pointer("/digest/sha256"))
        .and_then(Value::as_str);
    let now = crate::sha256_hex(lock_bytes);
    match file_digest {
        Some(d) if d == now => r.pass(
            "farm.lock",
            format!("{lp} is the lock the build used (sha256:{})", &now[..16]),
        ),
        Some(d) => r.fail(
            "farm.lock",
            format!("{lp} is sha256:{now}; the build used sha256:{d} (the lock changed since)"),
        ),
        None => r.fail(
            "farm.lock",
            "the provenance does not name the farm.lock it was built from",
        ),
    }
    let claimed = lock_entries(deps);
    let current = lock_entries(&provenance::lock_dependencies(lock, model_host));
    let mut bad = 0;
    for (name, digest) in &claimed {
        match current.get(name) {
            None => {
                bad += 1;
                r.fail(
                    format!("dependency {name}"),
                    format!("not in {lp} (removed or changed since the build)"),
                );
            }
            Some(now) if now != digest => {
                bad += 1;
                r.fail(
                    format!("dependency {name}"),
                    format!("{lp} has {}; the provenance says {}", show(now), show(digest)),
                );
            }
            Some(_) => {}
        }
    }
    for name in current.keys().filter(|n| !claimed.contains_key(*n)) {
        bad += 1;
        r.fail(
            format!("dependency {name}"),
            format!("in {lp} but not among the provenance's resolved dependencies"),
        );
    }
    if bad == 0 {
        r.pass(
            "resolved dependencies",
            format!("all {} lock entries match {lp}", claimed.len()),
        );
    }
}

fn hash_of(algorithm: &str, hex: &str) -> Option<Hash> {
    use farm_lockfiles::integrity::Algorithm;
    let algorithm = match algorithm.to_ascii_uppercase().replace('-', "").as_str() {
        "SHA256" => Algorithm::Sha256,
        "SHA512" => Algorithm::Sha512,
        _ => return None,
    };
    Some(Hash {
        algorithm,
        hex: hex.to_ascii_lowercase(),
    })
}

fn spdx_purls(doc: &Value) -> BTreeMap<String, BTreeSet<Hash>> {
    let mut out: BTreeMap<String, BTreeSet<Hash>> = BTreeMap::new();
    for p in doc.get("packages").and_then(Value::as_array).into_iter().flatten() {
        let purl = p
            .get("externalRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r.get("referenceType").and_then(Value::as_str) == Some("purl"))
            .and_then(|r| r.get("referenceLocator").and_then(Value::as_str));
        let Some(purl) = purl else { continue };
        let hashes = p
            .get("checksums")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| hash_of(c.get("algorithm")?.as_str()?, c.get("checksumValue")?.as_str()?));
        out.entry(purl.to_string()).or_default().extend(hashes);
    }
    out
}

fn cyclonedx_purls(doc: &Value) -> BTreeMap<String, BTreeSet<Hash>> {
    let mut out: BTreeMap<String, BTreeSet<Hash>> = BTreeMap::new();
    for c in doc.get("components").and_then(Value::as_array).into_iter().flatten() {
        let Some(purl) = c.get("purl").and_then(Value::as_str) else {
            continue;
        };
        let hashes = c
            .get("hashes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| hash_of(h.get("alg")?.as_str()?, h.get("content")?.as_str()?));
        out.entry(purl.to_string()).or_default().extend(hashes);
    }
    out
}

fn show_hashes(h: &BTreeSet<Hash>) -> String {
    h.iter()
        .map(|h| format!("{}:{}", h.algorithm.name(), h.hex))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_sbom(
    r: &mut Report,
    listed: &BTreeMap<String, BTreeSet<Hash>>,
    lock: &Lock,
    lock_path: &Path,
    model_host: Option<&str>,
) {
    let lp = lock_path.display();
    let locked = sbom::locked_purls(lock, model_host);
    let mut bad = 0;
    for (purl, hashes) in &locked {
        match listed.get(purl) {
            None => {
                bad += 1;
                r.fail(format!("package {purl}"), format!("in {lp} but not in the SBOM"));
            }
            Some(h) if h != hashes => {
                bad += 1;
                r.fail(
                    format!("package {purl}"),
                    format!("{lp} has {}; the SBOM says {}", show_hashes(hashes), show_hashes(h)),
                );
            }
            Some(_) => {}
        }
    }
    // Outputs (farm's own images) have OCI purls the lock does not; anything else must be locked.
    for purl in listed
        .keys()
        .filter(|p| !locked.contains_key(*p) && !p.starts_with("pkg:oci/"))
    {
        bad += 1;
        r.fail(format!("package {purl}"), format!("in the SBOM but not in {lp}"));
    }
    if bad == 0 {
        r.pass(
            "packages",
            format!(
                "all {} locked artifacts are in the SBOM with {lp}'s checksums",
                locked.len()
            ),
        );
    }
}
