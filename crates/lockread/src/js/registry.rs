//! What the lockfile does not record, taken from the npm registry at lock
//! time: the tarball integrity of yarn Berry packages, and the platform of
//! optional packages in yarn.lock v1. The answer is pinned in farm.lock, so
//! later fetches verify against it as against any lockfile's integrity.

use std::collections::{BTreeMap, BTreeSet};

use farm_lockfiles::http::Client;
use farm_lockfiles::integrity::{Algorithm, Integrity};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;

use super::{npm_package, runs_on_target, JsInstall};
use crate::error::LockReadError;

/// Registry requests in flight at once.
const CONCURRENCY: usize = 8;

#[derive(Deserialize)]
struct VersionDoc {
    version: String,
    dist: Dist,
    #[serde(default)]
    os: Vec<String>,
    #[serde(default)]
    cpu: Vec<String>,
    #[serde(default)]
    libc: Vec<String>,
}

#[derive(Deserialize)]
struct Dist {
    #[serde(default)]
    integrity: Option<String>,
}

async fn version_doc(client: &Client, registry: &str, name: &str, version: &str) -> Result<VersionDoc, LockReadError> {
    let package = format!("{name}@{version}");
    let url = format!(
        "{}/{}/{version}",
        registry.trim_end_matches('/'),
        farm_lockfiles::npm::encode_name(name)
    );
    let fetched = client.get_bytes(&url).await.map_err(|e| LockReadError::Registry {
        package: package.clone(),
        message: e.to_string(),
    })?;
    let doc: VersionDoc = serde_json::from_slice(&fetched).map_err(|e| LockReadError::Registry {
        package: package.clone(),
        message: format!(
            "{}: not the version document farm expected: {e}",
            farm_lockfiles::redact::redact_url(&url)
        ),
    })?;
    if doc.version != version {
        return Err(LockReadError::Registry {
            package,
            message: format!("the registry answered with version {}", doc.version),
        });
    }
    Ok(doc)
}

impl JsInstall {
    /// Settles what the lockfile left open, from `registry`'s version
    /// documents (`<registry>/<name>/<version>`): drops optional packages
    /// for another platform than linux/x64/glibc, and pins each unpinned
    /// package by its `dist.integrity` (sha512 required). Afterwards
    /// [`JsInstall::is_settled`] holds and `packages` is the whole install.
    pub async fn pin_from_registry(&mut self, client: &Client, registry: &str) -> Result<(), LockReadError> {
        let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
        for u in &self.unpinned {
            wanted.insert((u.name.clone(), u.version.clone()));
        }
        for path in &self.platform_unknown {
            if let Some(p) = self.packages.iter().find(|p| &p.path == path) {
                wanted.insert((p.artifact.name.clone(), p.artifact.version.clone()));
            } else if let Some(u) = self.unpinned.iter().find(|u| &u.path == path) {
                wanted.insert((u.name.clone(), u.version.clone()));
            }
        }
        let docs: Vec<((String, String), Result<VersionDoc, LockReadError>)> = stream::iter(wanted)
            .map(|(name, version)| async move {
                let doc = version_doc(client, registry, &name, &version).await;
                ((name, version), doc)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut by_id: BTreeMap<(String, String), VersionDoc> = BTreeMap::new();
        for (id, doc) in docs {
            by_id.insert(id, doc?);
        }
        let doc_of = |name: &str, version: &str| by_id.get(&(name.to_string(), version.to_string()));

        let mut dropped: Vec<String> = Vec::new();
        for path in std::mem::take(&mut self.platform_unknown) {
            let id = self
                .packages
                .iter()
                .find(|p| p.path == path)
                .map(|p| (p.artifact.name.clone(), p.artifact.version.clone()))
                .or_else(|| {
                    self.unpinned
                        .iter()
                        .find(|u| u.path == path)
                        .map(|u| (u.name.clone(), u.version.clone()))
                });
            if let Some(doc) = id.and_then(|(n, v)| doc_of(&n, &v)) {
                if !runs_on_target(&doc.os, &doc.cpu, &doc.libc) {
                    dropped.push(path);
                }
            }
        }
        let gone = |p: &str| dropped.iter().any(|d| p == d || p.starts_with(&format!("{d}/")));
        self.packages.retain(|p| !gone(&p.path));
        self.unpinned.retain(|u| !gone(&u.path));
        self.bins.retain(|p, _| !gone(p));

        for u in std::mem::take(&mut self.unpinned) {
            let doc = doc_of(&u.name, &u.version).expect("fetched above");
            let raw = doc.dist.integrity.as_deref().unwrap_or_default();
            let integrity = Integrity::parse(raw)
                .ok()
                .filter(|i| i.algorithm == Algorithm::Sha512)
                .ok_or_else(|| LockReadError::Registry {
                    package: format!("{}@{}", u.name, u.version),
                    message: format!(
                        "`dist.integrity` is {}; expected a sha512 SRI string (hint: the registry may be a mirror that strips `integrity`)",
                        if raw.is_empty() { "missing".to_string() } else { format!("{raw:?}") }
                    ),
                })?;
            self.packages
                .push(npm_package(u.path, &u.name, &u.version, u.url, integrity));
        }
        self.sort();
        Ok(())
    }
}
