//! package-lock.json / npm-shrinkwrap.json, lockfileVersion 2 and 3: the
//! `packages` map is the node_modules tree, keyed by install path relative
//! to the lock (`node_modules/x`, `frontend/node_modules/y`); workspace
//! members are `link: true` entries whose `resolved` is the member directory.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{check_bins, npm_package, parse_integrity, runs_on_target, tarball_url, JsInstall, JsLink, JsLockKind};
use crate::error::{json_error, LockReadError};
use crate::names::{install_path_name, is_inside_relative, is_npm_name, is_version, join_inside};

#[derive(Deserialize)]
struct PackageLock {
    #[serde(rename = "lockfileVersion", default)]
    lockfile_version: Option<serde_json::Value>,
    #[serde(default)]
    packages: Option<BTreeMap<String, Entry>>,
}

#[derive(Deserialize)]
struct Entry {
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
    #[serde(default)]
    bin: Option<serde_json::Value>,
}

/// Reads a package-lock.json (v2/v3) into what it installs, relative to
/// the lock's directory. `file` is only for messages.
pub fn parse_package_lock(file: &str, text: &str, registry: &str) -> Result<JsInstall, LockReadError> {
    let lock: PackageLock = serde_json::from_str(text).map_err(|e| json_error(file, e))?;
    let version = lock
        .lockfile_version
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "(missing)".into());
    let packages = match (version.as_str(), lock.packages) {
        ("2" | "3", Some(p)) => p,
        _ => {
            return Err(LockReadError::Version {
                file: file.into(),
                found: format!("lockfileVersion {version}"),
                supported: "lockfileVersion 2 and 3 (with a `packages` map)".into(),
                hint: "; hint: run `npm install --lockfile-version 3` to rewrite it".into(),
            })
        }
    };
    let mut out = JsInstall::new(JsLockKind::Npm, true);
    // Packages for another platform; what is nested inside them goes too.
    let mut skipped: Vec<String> = Vec::new();
    for (key, entry) in packages {
        let what = format!("entry `{key}`");
        let err = |message: String| LockReadError::entry(file, what.clone(), message);
        if key.is_empty() {
            continue;
        }
        if !key.contains("node_modules/") && !key.starts_with("node_modules") {
            // A workspace member's (or linked folder's) own package.json: source, not a download.
            if !is_inside_relative(&key) {
                return Err(err("is not a directory inside the project".into()));
            }
            continue;
        }
        let path_name = install_path_name(&key).map_err(|m| err(format!("install path {m}")))?;
        if entry.link {
            let resolved = entry.resolved.as_deref().unwrap_or_default();
            let target = join_inside("", resolved).filter(|t| !t.is_empty()).ok_or_else(|| {
                err(format!(
                    "links to {resolved:?}, outside the project; farm installs only links to directories inside it"
                ))
            })?;
            out.links.push(JsLink {
                path: key.clone(),
                target,
            });
            continue;
        }
        // Bundled dependencies ship inside their parent's tarball.
        if entry.in_bundle {
            continue;
        }
        if skipped.iter().any(|s| key.starts_with(&format!("{s}/"))) {
            continue;
        }
        if (entry.optional || entry.dev_optional) && !runs_on_target(&entry.os, &entry.cpu, &entry.libc) {
            skipped.push(key.clone());
            continue;
        }
        let name = entry.name.clone().unwrap_or_else(|| path_name.to_string());
        if !is_npm_name(&name) {
            return Err(err(format!("`name` {name:?} is not a valid npm package name")));
        }
        let version = entry.version.clone().ok_or_else(|| err("has no `version`".into()))?;
        if !is_version(&version) {
            return Err(err(format!("`version` {version:?} is not a package version")));
        }
        let integrity = parse_integrity(entry.integrity.as_deref()).map_err(|m| {
            err(format!(
                "{m}; hint: run `npm install` so npm records it, then `farm lock` again"
            ))
        })?;
        if let Some(r) = entry.resolved.as_deref() {
            if !(r.starts_with("https://") || r.starts_with("http://")) {
                return Err(err(format!(
                    "`resolved` is {:?}, not a registry tarball; farm locks only registry packages (hint: publish it to your registry, or make it a workspace member)",
                    farm_lockfiles::redact::redact_url(r)
                )));
            }
        }
        let url = tarball_url(registry, &name, &version, entry.resolved.as_deref())
            .map_err(|m| err(format!("`resolved` {m}")))?;
        if let Some(bin) = &entry.bin {
            let map: BTreeMap<String, String> = serde_json::from_value(bin.clone())
                .map_err(|_| err("`bin` is not a map of command names to files".into()))?;
            let map = check_bins(&map).map_err(&err)?;
            if !map.is_empty() {
                out.bins.insert(key.clone(), map);
            }
        }
        out.packages
            .push(npm_package(key.clone(), &name, &version, url, integrity));
    }
    out.sort();
    Ok(out)
}
