//! The lock's input keys: which files and farm.toml sections a lock was
//! resolved from (with their digests), which lock sections each feeds, and
//! what changed since. `farm lock` decides what to resolve again from it;
//! `farm build`, `fetch` and `lock --check` decide whether a lock is stale.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use farm_lockfiles::{Integrity, Lock};

use crate::Project;

/// The parts of a lock that are resolved together, each from its own inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Node,
    Debian,
    Ollama,
    Npm,
    Wheels,
    Models,
    Images,
}

impl Section {
    pub fn name(self) -> &'static str {
        match self {
            Section::Node => "node",
            Section::Debian => "debian (base and python)",
            Section::Ollama => "ollama",
            Section::Npm => "npm packages",
            Section::Wheels => "python wheels",
            Section::Models => "models",
            Section::Images => "images",
        }
    }
}

/// Every input the lock records, with its digest, and which sections it feeds.
pub fn current_inputs(project: &Project) -> Result<BTreeMap<String, Integrity>> {
    let mut inputs = project.lock_section_digests();
    for rel in [project.package_lock(), project.requirements()].into_iter().flatten() {
        let path = project.root.join(&rel);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        inputs.insert(
            rel.to_string_lossy().into_owned(),
            farm_lockfiles::integrity::sha256_of(&bytes),
        );
    }
    Ok(inputs)
}

pub fn sections_of(project: &Project, input: &str) -> Vec<Section> {
    let pkg_lock = project.package_lock().map(|p| p.to_string_lossy().into_owned());
    let reqs = project.requirements().map(|p| p.to_string_lossy().into_owned());
    match input {
        "farm.toml#toolchains.node" => vec![Section::Node],
        "farm.toml#toolchains.debian" => vec![Section::Debian],
        "farm.toml#toolchains.python" => vec![Section::Debian, Section::Wheels],
        "farm.toml#toolchains.ollama" => vec![Section::Ollama],
        "farm.toml#models" => vec![Section::Models],
        "farm.toml#deploy.mongodb" => vec![Section::Images],
        s if Some(s) == pkg_lock.as_deref() => vec![Section::Npm],
        s if Some(s) == reqs.as_deref() => vec![Section::Wheels],
        _ => vec![],
    }
}

/// What differs between the lock's recorded inputs and the current ones.
pub fn stale_inputs(lock: &Lock, current: &BTreeMap<String, Integrity>) -> Vec<String> {
    let mut stale = Vec::new();
    for (k, v) in current {
        match lock.inputs.get(k) {
            Some(old) if old == v => {}
            Some(_) => stale.push(format!("{k} changed")),
            None => stale.push(format!("{k} is not in the lock")),
        }
    }
    for k in lock.inputs.keys() {
        if !current.contains_key(k) {
            stale.push(format!("{k} was removed"));
        }
    }
    stale
}

/// The sections fed by an input that changed, appeared or went away since
/// the lock was written: their entries are stale, not wrong.
pub fn stale_sections(project: &Project, lock: &Lock, current: &BTreeMap<String, Integrity>) -> BTreeSet<Section> {
    let mut out = BTreeSet::new();
    for (k, v) in current {
        if lock.inputs.get(k) != Some(v) {
            out.extend(sections_of(project, k));
        }
    }
    for k in lock.inputs.keys() {
        if !current.contains_key(k) {
            out.extend(sections_of(project, k));
        }
    }
    out
}
