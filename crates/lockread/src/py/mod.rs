//! Python lockfiles: uv.lock, poetry.lock and pylock.toml (PEP 751) read
//! into one target-independent model ([`PyLock`]: packages, their wheel
//! files and the dependency edges with their markers), and
//! [`select_wheels`], which walks it for one target and picks one wheel per
//! package by the wheel tag rules.
//!
//! Wheels served by a package index are locked as `pypi://<project>/<file>`
//! (`farm_lockfiles::pypi::lock_url`), found again in whichever index the
//! fetching machine is configured for.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::str::FromStr;

use farm_lockfiles::integrity::{Algorithm, Integrity};
use farm_lockfiles::lock::{LockedArtifact, PythonWheel, Unpack};
use farm_lockfiles::pypi::normalize_project;
use pep440_rs::{Version, VersionSpecifiers};

use crate::error::{read_text, LockReadError};

pub mod marker;
mod poetry;
mod pylock;
pub mod tags;
mod uv;

pub use marker::{Marker, MarkerContext, MarkerEnv};
pub use poetry::parse_poetry_lock;
pub use pylock::parse_pylock;
pub use uv::parse_uv_lock;

use tags::{parse_wheel_filename, SupportedTags};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyFormat {
    Uv,
    Poetry,
    Pylock,
}

/// A Python lockfile, read but not yet evaluated for a target.
#[derive(Debug, Clone)]
pub struct PyLock {
    pub file: String,
    pub format: PyFormat,
    /// The lock's `requires-python` (PEP 440 specifiers), checked against the target.
    pub requires_python: Option<String>,
    /// Environments the lock was made for; the target must match one (none: any).
    pub environments: Vec<Marker>,
    pub packages: Vec<PyPackage>,
    /// Where selection starts: the project(s) themselves.
    pub roots: Vec<usize>,
    /// Dependency groups selected when the target names none.
    pub default_groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PyPackage {
    /// Normalised (PEP 503) name.
    pub name: String,
    pub version: String,
    pub source: PySource,
    /// 1-based line of the package in the lockfile, for messages.
    pub line: Option<usize>,
    pub wheels: Vec<WheelFile>,
    pub has_sdist: bool,
    pub deps: Vec<PyDep>,
    /// Optional dependencies by (normalised) extra name.
    pub extras: BTreeMap<String, Vec<PyDep>>,
    /// Dependency groups (dev dependencies) by (normalised) name; only a root's count.
    pub groups: BTreeMap<String, Vec<PyDep>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PySource {
    /// A package index: wheels are locked as `pypi://` URLs.
    Index,
    /// Files at URLs of their own (pylock.toml without `index`).
    Url,
    /// A project of the workspace (or the root project): built from source, not downloaded.
    Project { path: String },
    /// A source farm does not lock; refused when the target needs the package.
    Refused { kind: String, detail: String },
}

#[derive(Debug, Clone)]
pub struct PyDep {
    pub package: usize,
    /// Extras asked of the dependency (normalised).
    pub extras: BTreeSet<String>,
    pub marker: Option<Marker>,
}

/// One wheel a lock offers for a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelFile {
    pub filename: String,
    /// `pypi://<project>/<filename>` for index wheels, else the http(s) URL.
    pub url: String,
    pub sha256: Integrity,
    pub size: Option<u64>,
}

/// What [`select_wheels`] installs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyTarget {
    /// `3.11` (read as 3.11.0 for `python_full_version`) or `3.11.2`.
    pub python: String,
    /// The target's glibc, e.g. (2, 36) for Debian bookworm.
    pub glibc: (u32, u32),
    /// Extras of the root project(s).
    pub extras: BTreeSet<String>,
    /// Dependency groups of the root project(s); empty means the lock's
    /// default groups (pylock.toml) or none.
    pub groups: BTreeSet<String>,
    /// Which workspace projects to install for (names); `None` for all.
    pub members: Option<BTreeSet<String>>,
}

impl PyTarget {
    /// CPython `python` on manylinux x86_64 with glibc `glibc`, no extras or groups.
    pub fn cpython(python: &str, glibc: (u32, u32)) -> PyTarget {
        PyTarget {
            python: python.trim().to_string(),
            glibc,
            extras: BTreeSet::new(),
            groups: BTreeSet::new(),
            members: None,
        }
    }

    fn full_version(&self) -> Result<(String, u32), LockReadError> {
        let bad = || LockReadError::Detect {
            dir: "python version".into(),
            message: format!("`{}`: expected 3.MINOR or 3.MINOR.PATCH such as 3.11", self.python),
        };
        let parts: Vec<u32> = self
            .python
            .split('.')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match parts.as_slice() {
            [3, minor] => Ok((format!("3.{minor}.0"), *minor)),
            [3, minor, patch] => Ok((format!("3.{minor}.{patch}"), *minor)),
            _ => Err(bad()),
        }
    }
}

/// Reads a lockfile by its name: `uv.lock`, `poetry.lock` (with the
/// `pyproject.toml` beside it) or `pylock.toml` / `pylock.<name>.toml`.
pub fn read_py_lock(path: &Path) -> Result<PyLock, LockReadError> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    match name {
        "uv.lock" => parse_uv_lock(&file, &text),
        "poetry.lock" => {
            let pyproject = path.with_file_name("pyproject.toml");
            let pp_text = read_text(&pyproject)?;
            parse_poetry_lock(&file, &text, &pyproject.display().to_string(), &pp_text)
        }
        n if n == "pylock.toml" || (n.starts_with("pylock.") && n.ends_with(".toml")) => parse_pylock(&file, &text),
        _ => Err(LockReadError::Detect {
            dir: file,
            message: "is not uv.lock, poetry.lock or pylock.toml".into(),
        }),
    }
}

/// Finds the Python lockfile for `backend_dir`, looking no higher than
/// `project_root`: `pylock.toml`, `uv.lock` or `poetry.lock` in the backend
/// directory, else a `uv.lock` in a directory above (a uv workspace root).
pub fn detect_py_lock(backend_dir: &Path, project_root: &Path) -> Option<std::path::PathBuf> {
    for name in ["pylock.toml", "uv.lock", "poetry.lock"] {
        let p = backend_dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    let mut dir = backend_dir.parent();
    while let Some(d) = dir {
        if !d.starts_with(project_root) {
            break;
        }
        let p = d.join("uv.lock");
        if p.is_file() {
            return Some(p);
        }
        dir = d.parent();
    }
    None
}

/// A `sha256:<hex>` hash as an Integrity.
pub(crate) fn sha256_hash(raw: &str) -> Option<Integrity> {
    let hex = raw.strip_prefix("sha256:").or_else(|| raw.strip_prefix("sha256="))?;
    sha256_hex(hex)
}

pub(crate) fn sha256_hex(hex: &str) -> Option<Integrity> {
    let digest = hex::decode(hex.trim()).ok()?;
    (digest.len() == 32).then_some(Integrity {
        algorithm: Algorithm::Sha256,
        digest,
    })
}

/// Checks a wheel's file name against its package and makes its lock URL:
/// `pypi://` for index wheels, the checked http(s) URL otherwise.
pub(crate) fn wheel_file(
    package: &str,
    filename: &str,
    direct_url: Option<&str>,
    sha256: Integrity,
    size: Option<u64>,
) -> Result<WheelFile, String> {
    let w = parse_wheel_filename(filename)
        .ok_or_else(|| format!("wheel {filename:?} is not a wheel file name (name-version-python-abi-platform.whl)"))?;
    if normalize_project(&w.name) != normalize_project(package) {
        return Err(format!(
            "wheel {filename:?} is a file of `{}`, not of `{package}`",
            w.name
        ));
    }
    let url = match direct_url {
        Some(u) => {
            crate::names::check_download_url(u)?;
            u.to_string()
        }
        None => farm_lockfiles::pypi::lock_url(package, filename),
    };
    Ok(WheelFile {
        filename: filename.to_string(),
        url,
        sha256,
        size,
    })
}

/// The last path segment of a URL, percent-decoded: a wheel's file name.
pub(crate) fn url_filename(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let seg = path.rsplit('/').next().unwrap_or(path);
    let b = seg.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_marker(file: &str, line: Option<usize>, what: &str, m: &str) -> Result<Marker, LockReadError> {
    Marker::from_str(m).map_err(|e| LockReadError::Entry {
        file: file.into(),
        line,
        what: what.into(),
        message: format!("marker {m:?}: {e}"),
    })
}

impl PyLock {
    fn describe(&self, p: &PyPackage) -> String {
        format!("{}=={}", p.name, p.version)
    }
}

/// Walks the lock from its roots for `target` (markers evaluated, the
/// target's extras and groups on the roots) and picks, for each package
/// reached, the wheel with the most specific tag the target supports.
/// Projects of the workspace are not downloads; a reached package farm
/// cannot install from a wheel (sdist only, git, path, …) is an error.
pub fn select_wheels(lock: &PyLock, target: &PyTarget) -> Result<Vec<PythonWheel>, LockReadError> {
    let (full, minor) = target.full_version()?;
    let env = MarkerEnv::linux_cpython_x86_64(&full);
    let version = Version::from_str(&full).expect("built from numbers");
    if let Some(rp) = &lock.requires_python {
        let specs = VersionSpecifiers::from_str(rp).map_err(|e| {
            LockReadError::entry(
                &lock.file,
                "`requires-python`",
                format!("{rp:?} is not a PEP 440 specifier: {e}"),
            )
        })?;
        if !specs.contains(&version) {
            return Err(LockReadError::entry(
                &lock.file,
                "`requires-python`",
                format!("is `{rp}`, which Python {full} does not satisfy; hint: set the backend's Python version in farm.toml to one the lock supports"),
            ));
        }
    }
    let empty = BTreeSet::new();
    let norm = |s: &BTreeSet<String>| s.iter().map(|e| normalize_project(e)).collect::<BTreeSet<String>>();
    let target_extras = norm(&target.extras);
    let groups: BTreeSet<String> = if target.groups.is_empty() {
        lock.default_groups.iter().map(|g| normalize_project(g)).collect()
    } else {
        norm(&target.groups)
    };
    if !lock.environments.is_empty() {
        let ctx = MarkerContext {
            env: &env,
            extras: &empty,
            groups: &empty,
        };
        let mut any = false;
        for m in &lock.environments {
            any |= m
                .evaluate(&ctx)
                .map_err(|e| LockReadError::entry(&lock.file, "`environments`", e))?;
        }
        if !any {
            let listed: Vec<String> = lock.environments.iter().map(|m| m.to_string()).collect();
            return Err(LockReadError::entry(
                &lock.file,
                "`environments`",
                format!(
                    "the lock was made for {}, not for CPython {full} on Linux x86_64; hint: add this environment and lock again",
                    listed.join(" or ")
                ),
            ));
        }
    }

    let mut roots = lock.roots.clone();
    if let Some(members) = &target.members {
        let wanted: BTreeSet<String> = members.iter().map(|m| normalize_project(m)).collect();
        roots.retain(|r| wanted.contains(&lock.packages[*r].name));
        let found: BTreeSet<&String> = roots.iter().map(|r| &lock.packages[*r].name).collect();
        if let Some(missing) = wanted.iter().find(|w| !found.contains(w)) {
            let all: Vec<&str> = lock.roots.iter().map(|r| lock.packages[*r].name.as_str()).collect();
            return Err(LockReadError::entry(
                &lock.file,
                format!("project `{missing}`"),
                format!("is not a project of this lock (it has: {})", all.join(", ")),
            ));
        }
    }
    // Extras and groups the target asks for must exist on some root.
    for (asked, kind) in [(&target_extras, "extra"), (&groups, "group")] {
        for a in asked {
            let known = roots.iter().any(|r| {
                let p = &lock.packages[*r];
                if kind == "extra" {
                    p.extras.contains_key(a)
                } else {
                    p.groups.contains_key(a)
                }
            });
            if !known && lock.format != PyFormat::Pylock {
                let mut have: BTreeSet<&String> = BTreeSet::new();
                for r in &roots {
                    let p = &lock.packages[*r];
                    have.extend(if kind == "extra" {
                        p.extras.keys()
                    } else {
                        p.groups.keys()
                    });
                }
                let have: Vec<&str> = have.into_iter().map(String::as_str).collect();
                return Err(LockReadError::entry(
                    &lock.file,
                    format!("{kind} `{a}`"),
                    format!(
                        "is not defined by the project (it has: {})",
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    ),
                ));
            }
        }
    }

    // package → extras activated so far
    let mut active: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut queue: VecDeque<(usize, BTreeSet<String>, bool)> = VecDeque::new();
    for r in &roots {
        queue.push_back((*r, target_extras.clone(), true));
    }
    while let Some((p, extras, is_root)) = queue.pop_front() {
        let first = !active.contains_key(&p);
        let have = active.entry(p).or_default();
        let new: BTreeSet<String> = extras.difference(have).cloned().collect();
        if !first && new.is_empty() {
            continue;
        }
        have.extend(new.iter().cloned());
        let all_extras = have.clone();
        let pkg = &lock.packages[p];
        let mut edges: Vec<&PyDep> = Vec::new();
        if first {
            edges.extend(&pkg.deps);
            if is_root {
                for g in &groups {
                    edges.extend(pkg.groups.get(g).into_iter().flatten());
                }
            }
        }
        for e in &new {
            edges.extend(pkg.extras.get(e).into_iter().flatten());
        }
        let group_ctx = if is_root { &groups } else { &empty };
        let ctx = MarkerContext {
            env: &env,
            extras: &all_extras,
            groups: group_ctx,
        };
        for edge in edges {
            if let Some(m) = &edge.marker {
                let holds = m.evaluate(&ctx).map_err(|e| LockReadError::Entry {
                    file: lock.file.clone(),
                    line: pkg.line,
                    what: format!("package `{}`", lock.describe(pkg)),
                    message: e,
                })?;
                if !holds {
                    continue;
                }
            }
            queue.push_back((edge.package, edge.extras.clone(), false));
        }
    }

    let tags = SupportedTags::cpython_manylinux_x86_64(minor, target.glibc.1);
    let mut by_name: BTreeMap<&str, &PyPackage> = BTreeMap::new();
    let mut out = Vec::new();
    for &p in active.keys() {
        let pkg = &lock.packages[p];
        let what = format!("package `{}`", lock.describe(pkg));
        match &pkg.source {
            PySource::Project { .. } => continue,
            PySource::Refused { kind, detail } => {
                return Err(LockReadError::Entry {
                    file: lock.file.clone(),
                    line: pkg.line,
                    what,
                    message: format!(
                        "comes from {kind} ({}); farm installs wheels from the package index (or pinned http(s) wheel URLs) only (hint: publish it to your index, or make it a workspace project)",
                        farm_lockfiles::redact::redact_url(detail)
                    ),
                });
            }
            PySource::Index | PySource::Url => {}
        }
        if let Some(other) = by_name.insert(&pkg.name, pkg) {
            return Err(LockReadError::entry(
                &lock.file,
                what,
                format!(
                    "and `{}` are both needed for this target; the lock's markers do not separate them",
                    lock.describe(other)
                ),
            ));
        }
        let best = pkg
            .wheels
            .iter()
            .filter_map(|w| {
                let name = parse_wheel_filename(&w.filename)?;
                tags.rank(&name).map(|r| (r, name.build.clone(), w))
            })
            // Most specific tag first; then the highest build number, as pip does.
            .min_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| build_number(&b.1).cmp(&build_number(&a.1)))
                    .then_with(|| a.2.filename.cmp(&b.2.filename))
            });
        let Some((_, _, wheel)) = best else {
            let message = if pkg.wheels.is_empty() {
                format!(
                    "has {} and no wheel; farm installs wheels only (hint: pick a version that publishes a wheel for {}, or build one and publish it to your index)",
                    if pkg.has_sdist { "only a source distribution" } else { "no files" },
                    tags.best
                )
            } else {
                let names: Vec<&str> = pkg.wheels.iter().map(|w| w.filename.as_str()).collect();
                format!(
                    "has no wheel for CPython {full} on manylinux_2_{} x86_64 (wheels: {}); farm installs wheels only",
                    target.glibc.1,
                    names.join(", ")
                )
            };
            return Err(LockReadError::NoWheel {
                file: lock.file.clone(),
                line: pkg.line,
                package: lock.describe(pkg),
                message,
            });
        };
        out.push(PythonWheel {
            filename: wheel.filename.clone(),
            artifact: LockedArtifact {
                name: pkg.name.clone(),
                version: pkg.version.clone(),
                url: wheel.url.clone(),
                integrity: wheel.sha256.clone(),
                size: wheel.size,
                unpack: Unpack::File,
                strip: 0,
            },
        });
    }
    out.sort_by(|a, b| a.artifact.name.cmp(&b.artifact.name).then(a.filename.cmp(&b.filename)));
    Ok(out)
}

fn build_number(b: &Option<String>) -> (u64, String) {
    match b {
        None => (0, String::new()),
        Some(s) => {
            let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
            (digits.parse().unwrap_or(0), s[digits.len()..].to_string())
        }
    }
}
