//! uv.lock (`version = 1`): `[[package]]` tables with `source`,
//! `dependencies`, `[package.optional-dependencies]`,
//! `[package.dev-dependencies]`, `sdist` and `wheels` (`url`, `hash`,
//! `size`). Workspace members (`[manifest] members`, or the root project's
//! `editable`/`virtual = "."`) are the roots and are not downloaded;
//! packages from git, a URL, a path, a directory, a local registry or an
//! editable install outside the workspace are refused when needed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use toml::Spanned;

use super::{parse_marker, sha256_hash, url_filename, wheel_file, PyDep, PyFormat, PyLock, PyPackage, PySource};
use crate::error::{line_of, toml_error, LockReadError};
use crate::names::{is_python_name, join_inside};
use farm_lockfiles::pypi::normalize_project;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UvLock {
    version: Option<u32>,
    requires_python: Option<String>,
    #[serde(default)]
    supported_markers: Vec<String>,
    manifest: Option<Manifest>,
    #[serde(default, rename = "package")]
    packages: Vec<UvPackage>,
}

#[derive(Deserialize, Default)]
struct Manifest {
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UvPackage {
    name: Spanned<String>,
    version: Option<String>,
    #[serde(default)]
    source: BTreeMap<String, toml::Value>,
    #[serde(default)]
    dependencies: Vec<UvDep>,
    #[serde(default)]
    optional_dependencies: BTreeMap<String, Vec<UvDep>>,
    #[serde(default)]
    dev_dependencies: BTreeMap<String, Vec<UvDep>>,
    sdist: Option<toml::Value>,
    #[serde(default)]
    wheels: Vec<UvWheel>,
}

#[derive(Deserialize)]
struct UvDep {
    name: String,
    version: Option<String>,
    source: Option<BTreeMap<String, toml::Value>>,
    #[serde(default)]
    extra: Vec<String>,
    marker: Option<String>,
}

#[derive(Deserialize)]
struct UvWheel {
    url: Option<String>,
    path: Option<String>,
    filename: Option<String>,
    hash: Option<String>,
    size: Option<u64>,
}

fn source_text(s: &BTreeMap<String, toml::Value>) -> String {
    s.iter()
        .map(|(k, v)| {
            format!(
                "{k} = {}",
                v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a uv.lock. `file` is only for messages.
pub fn parse_uv_lock(file: &str, text: &str) -> Result<PyLock, LockReadError> {
    let lock: UvLock = toml::from_str(text).map_err(|e| toml_error(file, text, e))?;
    match lock.version {
        Some(1) => {}
        other => {
            return Err(LockReadError::Version {
                file: file.into(),
                found: format!(
                    "version {}",
                    other.map(|v| v.to_string()).unwrap_or_else(|| "(missing)".into())
                ),
                supported: "uv.lock version 1".into(),
                hint: "; hint: run `uv lock` with a uv release that writes version 1".into(),
            })
        }
    }
    let members: BTreeSet<String> = lock
        .manifest
        .unwrap_or_default()
        .members
        .iter()
        .map(|m| normalize_project(m))
        .collect();

    let mut packages = Vec::new();
    let mut roots = Vec::new();
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
        let norm = normalize_project(name);
        let (kind, value) = p
            .source
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default().to_string()))
            .ok_or_else(|| err("has no `source`".into()))?;
        let is_member = members.contains(&norm) || (members.is_empty() && value == ".");
        let source = match kind {
            "registry" if value.starts_with("https://") || value.starts_with("http://") => PySource::Index,
            "registry" => PySource::Refused {
                kind: "a local package directory (find-links)".into(),
                detail: value.clone(),
            },
            "editable" | "virtual" | "directory" if is_member => {
                let path = join_inside("", if value == "." { "" } else { &value })
                    .ok_or_else(|| err(format!("workspace member path {value:?} is outside the project")))?;
                PySource::Project { path }
            }
            "editable" => PySource::Refused {
                kind: "an editable path outside the workspace".into(),
                detail: value.clone(),
            },
            "git" => PySource::Refused {
                kind: "a git repository".into(),
                detail: value.clone(),
            },
            "url" => PySource::Refused {
                kind: "a direct URL".into(),
                detail: value.clone(),
            },
            "path" | "directory" | "virtual" => PySource::Refused {
                kind: format!("a local {kind}"),
                detail: value.clone(),
            },
            other => PySource::Refused {
                kind: format!("an unknown source `{other}`"),
                detail: source_text(&p.source),
            },
        };
        let version = p.version.clone().unwrap_or_else(|| "0".into());
        let mut wheels = Vec::new();
        if source == PySource::Index {
            for w in &p.wheels {
                let url = w.url.as_deref().ok_or_else(|| {
                    err(format!(
                        "has a wheel without `url` ({}); farm locks index wheels by URL",
                        w.path.as_deref().or(w.filename.as_deref()).unwrap_or("?")
                    ))
                })?;
                let filename = w.filename.clone().unwrap_or_else(|| url_filename(url));
                crate::names::check_download_url(url).map_err(|m| err(format!("wheel {m}")))?;
                let sha = w.hash.as_deref().and_then(sha256_hash).ok_or_else(|| {
                    err(format!(
                        "wheel {filename} has no sha256 `hash`; farm pins wheels by sha256"
                    ))
                })?;
                wheels.push(wheel_file(name, &filename, None, sha, w.size).map_err(&err)?);
            }
        }
        if matches!(source, PySource::Project { .. }) {
            roots.push(packages.len());
        }
        packages.push(PyPackage {
            name: norm,
            version,
            source,
            line,
            wheels,
            has_sdist: p.sdist.is_some(),
            deps: Vec::new(),
            extras: BTreeMap::new(),
            groups: BTreeMap::new(),
        });
    }
    if roots.is_empty() {
        return Err(LockReadError::syntax(
            file,
            None,
            "names no project of the workspace (no `[manifest] members` and no package with `source = { editable = \".\" }` or `virtual = \".\"`)",
        ));
    }

    // Edges, now that every package has an index.
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in packages.iter().enumerate() {
        by_name.entry(p.name.clone()).or_default().push(i);
    }
    for (i, p) in lock.packages.iter().enumerate() {
        let line = packages[i].line;
        let what = format!("package `{}`", p.name.get_ref());
        let edge = |d: &UvDep| -> Result<PyDep, LockReadError> {
            let err = |m: String| LockReadError::Entry {
                file: file.into(),
                line,
                what: what.clone(),
                message: m,
            };
            let dn = normalize_project(&d.name);
            let candidates = by_name.get(&dn).cloned().unwrap_or_default();
            let mut matching: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&c| d.version.as_ref().is_none_or(|v| &packages[c].version == v))
                .collect();
            if matching.len() > 1 {
                if let Some(src) = &d.source {
                    matching.retain(|&c| lock.packages[c].source == *src);
                }
            }
            let package = match matching.as_slice() {
                [one] => *one,
                [] => {
                    return Err(err(format!(
                        "depends on `{}`{}, which is not a `[[package]]` of the lock; hint: run `uv lock`",
                        d.name,
                        d.version.as_ref().map(|v| format!(" {v}")).unwrap_or_default()
                    )))
                }
                _ => {
                    return Err(err(format!(
                        "depends on `{}`, of which the lock has several versions, without saying which",
                        d.name
                    )))
                }
            };
            let marker = d
                .marker
                .as_deref()
                .map(|m| parse_marker(file, line, &what, m))
                .transpose()?;
            Ok(PyDep {
                package,
                extras: d.extra.iter().map(|e| normalize_project(e)).collect(),
                marker,
            })
        };
        let deps = p.dependencies.iter().map(&edge).collect::<Result<Vec<_>, _>>()?;
        let mut extras = BTreeMap::new();
        for (e, list) in &p.optional_dependencies {
            extras.insert(
                normalize_project(e),
                list.iter().map(&edge).collect::<Result<Vec<_>, _>>()?,
            );
        }
        let mut groups = BTreeMap::new();
        for (g, list) in &p.dev_dependencies {
            groups.insert(
                normalize_project(g),
                list.iter().map(&edge).collect::<Result<Vec<_>, _>>()?,
            );
        }
        packages[i].deps = deps;
        packages[i].extras = extras;
        packages[i].groups = groups;
    }
    let environments = lock
        .supported_markers
        .iter()
        .map(|m| parse_marker(file, None, "`supported-markers`", m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PyLock {
        file: file.into(),
        format: PyFormat::Uv,
        requires_python: lock.requires_python,
        environments,
        packages,
        roots,
        default_groups: Vec::new(),
    })
}
