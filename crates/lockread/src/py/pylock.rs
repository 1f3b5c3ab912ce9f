//! pylock.toml (PEP 751, `lock-version = "1.0"`): a flat `[[packages]]`
//! list, each with a `marker` (which may test `extras` and
//! `dependency_groups`), `requires-python`, `index`, and `wheels`
//! (`url` or `path`, `hashes`, `size`). Every package whose marker holds is
//! installed; `vcs`, `directory`, `archive` and path wheels are refused when
//! needed.

use std::collections::BTreeMap;
use std::str::FromStr;

use pep440_rs::VersionSpecifiers;
use serde::Deserialize;
use toml::Spanned;

use super::{parse_marker, sha256_hex, url_filename, wheel_file, Marker, PyDep, PyFormat, PyLock, PyPackage, PySource};
use crate::error::{line_of, toml_error, LockReadError};
use crate::names::is_python_name;
use farm_lockfiles::pypi::normalize_project;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Pylock {
    lock_version: Option<String>,
    #[serde(default)]
    environments: Vec<String>,
    requires_python: Option<String>,
    #[serde(default)]
    default_groups: Vec<String>,
    #[serde(default)]
    packages: Vec<Package>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Package {
    name: Spanned<String>,
    version: Option<String>,
    marker: Option<String>,
    requires_python: Option<String>,
    index: Option<String>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
    archive: Option<toml::Value>,
    sdist: Option<toml::Value>,
    #[serde(default)]
    wheels: Vec<Wheel>,
}

#[derive(Deserialize)]
struct Wheel {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

fn detail(v: &toml::Value) -> String {
    v.get("url")
        .or_else(|| v.get("path"))
        .and_then(|u| u.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Reads a pylock.toml. `file` is only for messages.
pub fn parse_pylock(file: &str, text: &str) -> Result<PyLock, LockReadError> {
    let lock: Pylock = toml::from_str(text).map_err(|e| toml_error(file, text, e))?;
    let version = lock.lock_version.clone().unwrap_or_else(|| "(missing)".into());
    if version.split('.').next() != Some("1") {
        return Err(LockReadError::Version {
            file: file.into(),
            found: format!("lock-version {version}"),
            supported: "lock-version 1.x (PEP 751)".into(),
            hint: String::new(),
        });
    }
    let mut packages = Vec::new();
    let mut root_deps = Vec::new();
    for p in &lock.packages {
        let line = Some(line_of(text, p.name.span().start));
        let name = p.name.get_ref();
        let what = format!("package `{name}`");
        let err = |m: String| LockReadError::Entry {
            file: file.into(),
            line,
            what: what.clone(),
            message: m,
        };
        if !is_python_name(name) {
            return Err(err("is not a valid Python project name".into()));
        }
        let source = if let Some(v) = &p.vcs {
            PySource::Refused {
                kind: "a version control repository (`vcs`)".into(),
                detail: detail(v),
            }
        } else if let Some(v) = &p.directory {
            PySource::Refused {
                kind: "a local directory (`directory`)".into(),
                detail: detail(v),
            }
        } else if let Some(v) = &p.archive {
            PySource::Refused {
                kind: "an archive (`archive`)".into(),
                detail: detail(v),
            }
        } else if let Some(w) = p.wheels.iter().find(|w| w.url.is_none()) {
            PySource::Refused {
                kind: "a local wheel file".into(),
                detail: w.path.clone().unwrap_or_default(),
            }
        } else if p.index.is_some() {
            PySource::Index
        } else {
            PySource::Url
        };
        let mut wheels = Vec::new();
        if matches!(source, PySource::Index | PySource::Url) {
            for w in &p.wheels {
                let url = w.url.as_deref().expect("checked above");
                let filename = w.name.clone().unwrap_or_else(|| url_filename(url));
                crate::names::check_download_url(url).map_err(|m| err(format!("wheel {m}")))?;
                let sha = w.hashes.get("sha256").and_then(|h| sha256_hex(h)).ok_or_else(|| {
                    err(format!(
                        "wheel {filename} has no sha256 in `hashes`; farm pins wheels by sha256"
                    ))
                })?;
                let direct = (source == PySource::Url).then_some(url);
                wheels.push(wheel_file(name, &filename, direct, sha, w.size).map_err(&err)?);
            }
        }
        // The package's own requires-python joins its marker.
        let mut marker_text = p.marker.clone();
        if let Some(rp) = &p.requires_python {
            let specs = VersionSpecifiers::from_str(rp)
                .map_err(|e| err(format!("`requires-python` {rp:?} is not a PEP 440 specifier: {e}")))?;
            let cond: Vec<String> = specs
                .iter()
                .map(|s| {
                    let s = s.to_string();
                    let at = s.find(|c: char| !"<>=!~".contains(c)).unwrap_or(s.len());
                    format!("python_full_version {} '{}'", &s[..at], &s[at..])
                })
                .collect();
            if !cond.is_empty() {
                let cond = cond.join(" and ");
                marker_text = Some(match marker_text {
                    Some(m) => format!("({m}) and {cond}"),
                    None => cond,
                });
            }
        }
        let marker: Option<Marker> = marker_text
            .as_deref()
            .map(|m| parse_marker(file, line, &what, m))
            .transpose()?;
        root_deps.push(PyDep {
            package: packages.len(),
            extras: Default::default(),
            marker,
        });
        packages.push(PyPackage {
            name: normalize_project(name),
            version: p.version.clone().unwrap_or_else(|| "0".into()),
            source,
            line,
            wheels,
            has_sdist: p.sdist.is_some(),
            deps: Vec::new(),
            extras: BTreeMap::new(),
            groups: BTreeMap::new(),
        });
    }
    // The project itself: every listed package, each under its own marker.
    packages.push(PyPackage {
        name: "(project)".into(),
        version: "0".into(),
        source: PySource::Project { path: String::new() },
        line: None,
        wheels: Vec::new(),
        has_sdist: false,
        deps: root_deps,
        extras: BTreeMap::new(),
        groups: BTreeMap::new(),
    });
    let environments = lock
        .environments
        .iter()
        .map(|m| parse_marker(file, None, "`environments`", m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PyLock {
        file: file.into(),
        format: PyFormat::Pylock,
        requires_python: lock.requires_python,
        environments,
        roots: vec![packages.len() - 1],
        packages,
        default_groups: lock.default_groups,
    })
}
