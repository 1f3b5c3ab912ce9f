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
    let python_lock = python_lock_inputs(project);
    // The JS lockfile under its project-relative path (a workspace root's
    // `package-lock.json`, `frontend/pnpm-lock.yaml`, ...).
    for rel in [project.package_lock()?, project.requirements()]
        .into_iter()
        .flatten()
        .chain(python_lock.files)
    {
        let path = project.root.join(&rel);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        inputs.insert(
            rel.to_string_lossy().into_owned(),
            farm_lockfiles::integrity::sha256_of(&bytes),
        );
    }
    inputs.extend(python_lock.selection);
    Ok(inputs)
}

/// The key of what farm.toml chooses from a Python lockfile (groups, extras).
pub const PYTHON_SELECTION_INPUT: &str = "farm.toml#backend.lockfile";

struct PythonLockInputs {
    /// The lockfile, and for poetry.lock the pyproject.toml beside it (which
    /// holds the project's own dependencies and groups).
    files: Vec<std::path::PathBuf>,
    selection: Option<(String, Integrity)>,
}

/// The inputs of wheels read from a Python lockfile: none with a requirements file.
fn python_lock_inputs(project: &Project) -> PythonLockInputs {
    let (Some(lock), Some(b)) = (project.python_lockfile(), project.config.backend.as_ref()) else {
        return PythonLockInputs {
            files: Vec::new(),
            selection: None,
        };
    };
    let mut files = vec![lock.clone()];
    if lock.file_name().is_some_and(|n| n == "poetry.lock") {
        files.push(lock.with_file_name("pyproject.toml"));
    }
    let mut groups = b.groups.clone();
    groups.sort();
    let mut extras = b.extras.clone();
    extras.sort();
    let value = serde_json::json!({
        "lockfile": lock.to_string_lossy(),
        "path": b.path.to_string_lossy(),
        "groups": groups,
        "extras": extras,
    });
    let bytes = farm_formats::canonical_json::to_vec(&value).expect("JSON values serialise");
    PythonLockInputs {
        files,
        selection: Some((
            PYTHON_SELECTION_INPUT.to_string(),
            farm_lockfiles::integrity::sha256_of(&bytes),
        )),
    }
}

pub fn sections_of(project: &Project, input: &str) -> Vec<Section> {
    // A frontend without a lockfile has no key here; current_inputs reports it.
    let pkg_lock = project
        .package_lock()
        .ok()
        .flatten()
        .map(|p| p.to_string_lossy().into_owned());
    let reqs = project.requirements().map(|p| p.to_string_lossy().into_owned());
    let python_lock = python_lock_inputs(project);
    if python_lock.files.iter().any(|f| f.to_string_lossy() == input) || input == PYTHON_SELECTION_INPUT {
        return vec![Section::Wheels];
    }
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
