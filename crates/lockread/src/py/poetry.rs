//! poetry.lock (`[metadata] lock-version` 1.1, 2.0 and 2.1) with the
//! project's pyproject.toml.
//!
//! The lock lists `[[package]]` with `files = [{file, hash}]` (or, in 1.1,
//! `[metadata.files]`) and `[package.dependencies]` edges with their
//! markers, but not the project's own dependencies: those come from
//! pyproject.toml (`[tool.poetry.dependencies]` and
//! `[tool.poetry.group.<g>.dependencies]`, or `[project] dependencies` and
//! `[project.optional-dependencies]`). Files carry no URLs: wheels are
//! locked as `pypi://<project>/<file>`. Only the main dependencies are
//! selected unless the target names groups.

use std::collections::BTreeMap;
use std::str::FromStr;

use pep440_rs::{Version, VersionSpecifiers};
use serde::Deserialize;
use toml::Spanned;

use super::{parse_marker, sha256_hash, wheel_file, PyDep, PyFormat, PyLock, PyPackage, PySource};
use crate::error::{line_of, toml_error, LockReadError};
use crate::names::is_python_name;
use farm_lockfiles::pypi::normalize_project;

#[derive(Deserialize)]
struct PoetryLock {
    #[serde(default, rename = "package")]
    packages: Vec<Package>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(rename = "lock-version")]
    lock_version: Option<String>,
    #[serde(rename = "python-versions")]
    python_versions: Option<String>,
    /// lock-version 1.1 keeps the files here, by package name.
    #[serde(default)]
    files: BTreeMap<String, Vec<File>>,
}

#[derive(Deserialize)]
struct Package {
    name: Spanned<String>,
    version: String,
    #[serde(default)]
    files: Vec<File>,
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    extras: BTreeMap<String, Vec<String>>,
    source: Option<Source>,
}

#[derive(Deserialize, Clone)]
struct File {
    file: String,
    hash: String,
}

#[derive(Deserialize)]
struct Source {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: Option<String>,
}

/// One constraint on a dependency, as poetry writes them.
#[derive(Default, Clone)]
struct Spec {
    version: Option<String>,
    markers: Option<String>,
    python: Option<String>,
    extras: Vec<String>,
    optional: bool,
}

fn specs(v: &toml::Value) -> Vec<Spec> {
    let table = |t: &toml::Value| Spec {
        version: t.get("version").and_then(|x| x.as_str()).map(str::to_string),
        markers: t.get("markers").and_then(|x| x.as_str()).map(str::to_string),
        python: t.get("python").and_then(|x| x.as_str()).map(str::to_string),
        extras: t
            .get("extras")
            .and_then(|x| x.as_array())
            .map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        optional: t.get("optional").and_then(|x| x.as_bool()).unwrap_or(false),
    };
    match v {
        toml::Value::String(s) => vec![Spec {
            version: Some(s.clone()),
            ..Default::default()
        }],
        toml::Value::Array(a) => a.iter().map(table).collect(),
        t => vec![table(t)],
    }
}

/// A poetry constraint (`^1.2`, `~1.2.3`, `>=1,<2`, `1.2.*`, `a || b`) as
/// PEP 440 specifier sets, one per `||` alternative; `None` if unreadable.
pub(crate) fn poetry_constraint(c: &str) -> Option<Vec<String>> {
    let mut alts = Vec::new();
    for alt in c.split("||").flat_map(|a| a.split('|')) {
        let mut parts = Vec::new();
        for item in alt.split([',', ' ']).map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                continue;
            }
            let nums = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|n| n.parse().ok()).collect() };
            if let Some(v) = item.strip_prefix('^') {
                let n = nums(v)?;
                let i = n.iter().position(|&x| x != 0).unwrap_or(n.len() - 1);
                let mut upper: Vec<u64> = n[..=i].to_vec();
                upper[i] += 1;
                parts.push(format!(">={v}"));
                parts.push(format!(
                    "<{}",
                    upper.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
                ));
            } else if let Some(v) = item.strip_prefix('~').filter(|v| !v.starts_with('=')) {
                let n = nums(v)?;
                let upper = if n.len() == 1 {
                    vec![n[0] + 1]
                } else {
                    vec![n[0], n[1] + 1]
                };
                parts.push(format!(">={v}"));
                parts.push(format!(
                    "<{}",
                    upper.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
                ));
            } else if item.starts_with(|c: char| c.is_ascii_digit()) {
                parts.push(format!("=={item}"));
            } else {
                parts.push(item.to_string());
            }
        }
        let joined = parts.join(",");
        VersionSpecifiers::from_str(&joined).ok()?;
        alts.push(joined);
    }
    (!alts.is_empty()).then_some(alts)
}

fn satisfies(constraint: &str, version: &str) -> bool {
    let Ok(v) = Version::from_str(version) else {
        return false;
    };
    poetry_constraint(constraint).is_some_and(|alts| {
        alts.iter()
            .any(|a| VersionSpecifiers::from_str(a).is_ok_and(|s| s.contains(&v)))
    })
}

/// A spec's `markers` and `python` as one marker expression.
fn spec_marker(s: &Spec) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(m) = &s.markers {
        parts.push(format!("({m})"));
    }
    if let Some(py) = s.python.as_deref().filter(|p| p.trim() != "*") {
        let alts: Vec<String> = poetry_constraint(py)
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let conds: Vec<String> = a
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| {
                        let at = x.find(|c: char| !"<>=!~".contains(c)).unwrap_or(x.len());
                        format!("python_full_version {} '{}'", &x[..at], &x[at..])
                    })
                    .collect();
                if conds.is_empty() {
                    "python_full_version >= '0'".to_string()
                } else {
                    format!("({})", conds.join(" and "))
                }
            })
            .collect();
        if !alts.is_empty() {
            parts.push(format!("({})", alts.join(" or ")));
        }
    }
    (!parts.is_empty()).then(|| parts.join(" and "))
}

/// A PEP 508 requirement's name, extras and marker (`uvicorn[standard] (>=0.12) ; python_version < "3.12"`).
fn requirement(s: &str) -> Option<(String, Vec<String>, Option<String>)> {
    let (req, marker) = match s.split_once(';') {
        Some((r, m)) => (r, Some(m.trim().to_string())),
        None => (s, None),
    };
    let req = req.trim();
    let end = req
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(req.len());
    let name = &req[..end];
    if !is_python_name(name) {
        return None;
    }
    let rest = req[end..].trim_start();
    let extras = match rest.strip_prefix('[') {
        Some(r) => r
            .split(']')
            .next()?
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        None => Vec::new(),
    };
    Some((name.to_string(), extras, marker))
}

struct Edges<'a> {
    file: &'a str,
    by_name: BTreeMap<String, Vec<usize>>,
    versions: Vec<String>,
}

impl Edges<'_> {
    /// The package a `name = spec` dependency names; `None` when the lock
    /// omits it because its marker never holds (poetry leaves those out).
    fn resolve(
        &self,
        what: &str,
        line: Option<usize>,
        name: &str,
        spec: &Spec,
        extras: Vec<String>,
    ) -> Result<Option<PyDep>, LockReadError> {
        let err = |m: String| LockReadError::Entry {
            file: self.file.into(),
            line,
            what: what.into(),
            message: m,
        };
        let marker_text = spec_marker(spec);
        let candidates = self.by_name.get(&normalize_project(name)).cloned().unwrap_or_default();
        let package = match candidates.as_slice() {
            [] if marker_text.is_some() || spec.optional => return Ok(None),
            [] => {
                return Err(err(format!(
                    "depends on `{name}`, which is not a `[[package]]` of the lock; hint: run `poetry lock`"
                )))
            }
            [one] => *one,
            many => {
                let c = spec.version.as_deref().unwrap_or("*");
                let fits: Vec<usize> = many
                    .iter()
                    .copied()
                    .filter(|&i| satisfies(c, &self.versions[i]))
                    .collect();
                match fits.as_slice() {
                    [one] => *one,
                    _ => {
                        return Err(err(format!(
                            "depends on `{name}` `{c}`, which matches {} of the lock's versions of it",
                            fits.len()
                        )))
                    }
                }
            }
        };
        let marker = marker_text
            .as_deref()
            .map(|m| parse_marker(self.file, line, what, m))
            .transpose()?;
        Ok(Some(PyDep {
            package,
            extras: extras
                .iter()
                .chain(&spec.extras)
                .map(|e| normalize_project(e))
                .collect(),
            marker,
        }))
    }
}

/// Reads a poetry.lock with its project's pyproject.toml. The file names
/// are only for messages.
pub fn parse_poetry_lock(
    file: &str,
    text: &str,
    pyproject_file: &str,
    pyproject_text: &str,
) -> Result<PyLock, LockReadError> {
    let lock: PoetryLock = toml::from_str(text).map_err(|e| toml_error(file, text, e))?;
    let pyproject: toml::Value =
        toml::from_str(pyproject_text).map_err(|e| toml_error(pyproject_file, pyproject_text, e))?;
    let meta = lock
        .metadata
        .ok_or_else(|| LockReadError::syntax(file, None, "has no `[metadata]`; not a poetry.lock"))?;
    let version = meta.lock_version.clone().unwrap_or_else(|| "(missing)".into());
    if !matches!(version.as_str(), "1.1" | "2.0" | "2.1") {
        return Err(LockReadError::Version {
            file: file.into(),
            found: format!("lock-version {version}"),
            supported: "lock-version 1.1, 2.0 and 2.1".into(),
            hint: "; hint: run `poetry lock` with Poetry 1.2 or newer to rewrite it".into(),
        });
    }

    let mut packages = Vec::new();
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
        let source = match &p.source {
            None => PySource::Index,
            Some(s) => match s.kind.as_str() {
                // A secondary index: the fetching machine's configured index must serve it.
                "legacy" | "pypi" => PySource::Index,
                "git" => PySource::Refused {
                    kind: "a git repository".into(),
                    detail: s.url.clone().unwrap_or_default(),
                },
                "url" => PySource::Refused {
                    kind: "a direct URL".into(),
                    detail: s.url.clone().unwrap_or_default(),
                },
                other => PySource::Refused {
                    kind: format!("a local {other}"),
                    detail: s.url.clone().unwrap_or_default(),
                },
            },
        };
        let files = if p.files.is_empty() {
            meta.files
                .get(name)
                .or_else(|| meta.files.get(&normalize_project(name)))
                .cloned()
                .unwrap_or_default()
        } else {
            p.files.clone()
        };
        let mut wheels = Vec::new();
        let mut has_sdist = false;
        if source == PySource::Index {
            for f in &files {
                if !f.file.ends_with(".whl") {
                    has_sdist = true;
                    continue;
                }
                let sha = sha256_hash(&f.hash).ok_or_else(|| {
                    err(format!(
                        "wheel {} has hash {:?}; farm pins wheels by sha256",
                        f.file, f.hash
                    ))
                })?;
                wheels.push(wheel_file(name, &f.file, None, sha, None).map_err(&err)?);
            }
        }
        packages.push(PyPackage {
            name: normalize_project(name),
            version: p.version.clone(),
            source,
            line,
            wheels,
            has_sdist,
            deps: Vec::new(),
            extras: BTreeMap::new(),
            groups: BTreeMap::new(),
        });
    }
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in packages.iter().enumerate() {
        by_name.entry(p.name.clone()).or_default().push(i);
    }
    let edges = Edges {
        file,
        by_name,
        versions: packages.iter().map(|p| p.version.clone()).collect(),
    };
    for (i, p) in lock.packages.iter().enumerate() {
        let line = packages[i].line;
        let what = format!("package `{}`", p.name.get_ref());
        let mut deps = Vec::new();
        let mut optional: BTreeMap<String, Vec<PyDep>> = BTreeMap::new();
        for (dn, v) in &p.dependencies {
            for spec in specs(v) {
                if let Some(edge) = edges.resolve(&what, line, dn, &spec, Vec::new())? {
                    if spec.optional {
                        optional.entry(normalize_project(dn)).or_default().push(edge);
                    } else {
                        deps.push(edge);
                    }
                }
            }
        }
        let mut extras = BTreeMap::new();
        for (extra, reqs) in &p.extras {
            let mut list = Vec::new();
            for r in reqs {
                let Some((rn, rextras, _)) = requirement(r) else {
                    return Err(LockReadError::Entry {
                        file: file.into(),
                        line,
                        what: what.clone(),
                        message: format!("extra `{extra}` lists {r:?}, not a requirement"),
                    });
                };
                for e in optional.get(&normalize_project(&rn)).into_iter().flatten() {
                    let mut e = e.clone();
                    e.extras.extend(rextras.iter().map(|x| normalize_project(x)));
                    list.push(e);
                }
            }
            extras.insert(normalize_project(extra), list);
        }
        packages[i].deps = deps;
        packages[i].extras = extras;
    }

    let root = project_root(&edges, pyproject_file, &pyproject)?;
    packages.push(root);
    let requires_python = meta
        .python_versions
        .as_deref()
        .and_then(poetry_constraint)
        .filter(|alts| alts.len() == 1)
        .map(|mut a| a.remove(0))
        .filter(|s| !s.is_empty());
    Ok(PyLock {
        file: file.into(),
        format: PyFormat::Poetry,
        requires_python,
        environments: Vec::new(),
        roots: vec![packages.len() - 1],
        packages,
        default_groups: Vec::new(),
    })
}

/// The project itself, from pyproject.toml: main dependencies, extras and groups.
fn project_root(edges: &Edges, file: &str, pyproject: &toml::Value) -> Result<PyPackage, LockReadError> {
    let poetry = pyproject.get("tool").and_then(|t| t.get("poetry"));
    let project = pyproject.get("project");
    let name = project
        .and_then(|p| p.get("name"))
        .or_else(|| poetry.and_then(|p| p.get("name")))
        .and_then(|n| n.as_str())
        .unwrap_or("(project)")
        .to_string();
    let what = format!("project `{name}`");
    let mut deps = Vec::new();
    let mut optional: BTreeMap<String, Vec<PyDep>> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<PyDep>> = BTreeMap::new();
    let mut extras: BTreeMap<String, Vec<PyDep>> = BTreeMap::new();

    let table_deps = |t: Option<&toml::Value>| -> Result<Vec<(String, PyDep, bool)>, LockReadError> {
        let mut out = Vec::new();
        for (dn, v) in t.and_then(|t| t.as_table()).into_iter().flatten() {
            if dn == "python" {
                continue;
            }
            for spec in specs(v) {
                if let Some(edge) = edges.resolve(&what, None, dn, &spec, Vec::new())? {
                    out.push((normalize_project(dn), edge, spec.optional));
                }
            }
        }
        Ok(out)
    };
    for (dn, edge, opt) in table_deps(poetry.and_then(|p| p.get("dependencies")))? {
        if opt {
            optional.entry(dn).or_default().push(edge);
        } else {
            deps.push(edge);
        }
    }
    if let Some(gs) = poetry.and_then(|p| p.get("group")).and_then(|g| g.as_table()) {
        for (g, body) in gs {
            let list = table_deps(body.get("dependencies"))?;
            groups.insert(normalize_project(g), list.into_iter().map(|(_, e, _)| e).collect());
        }
    }
    if let Some(dev) = poetry.and_then(|p| p.get("dev-dependencies")) {
        let list = table_deps(Some(dev))?;
        groups
            .entry("dev".into())
            .or_default()
            .extend(list.into_iter().map(|(_, e, _)| e));
    }
    if let Some(ex) = poetry.and_then(|p| p.get("extras")).and_then(|e| e.as_table()) {
        for (extra, names) in ex {
            let mut list = Vec::new();
            for n in names.as_array().into_iter().flatten().filter_map(|n| n.as_str()) {
                list.extend(optional.get(&normalize_project(n)).into_iter().flatten().cloned());
            }
            extras.insert(normalize_project(extra), list);
        }
    }
    // PEP 621 `[project]` (Poetry 2).
    let pep508 = |list: Option<&toml::Value>| -> Result<Vec<PyDep>, LockReadError> {
        let mut out = Vec::new();
        for r in list
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
        {
            let (rn, rextras, marker) = requirement(r).ok_or_else(|| {
                LockReadError::entry(
                    file,
                    what.clone(),
                    format!("dependency {r:?} is not a PEP 508 requirement"),
                )
            })?;
            let spec = Spec {
                markers: marker,
                ..Default::default()
            };
            if let Some(e) = edges.resolve(&what, None, &rn, &spec, rextras)? {
                out.push(e);
            }
        }
        Ok(out)
    };
    deps.extend(pep508(project.and_then(|p| p.get("dependencies")))?);
    if let Some(od) = project
        .and_then(|p| p.get("optional-dependencies"))
        .and_then(|o| o.as_table())
    {
        for (extra, list) in od {
            extras
                .entry(normalize_project(extra))
                .or_default()
                .extend(pep508(Some(list))?);
        }
    }
    Ok(PyPackage {
        name: normalize_project(&name),
        version: "0".into(),
        source: PySource::Project { path: String::new() },
        line: None,
        wheels: Vec::new(),
        has_sdist: false,
        deps,
        extras,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poetry_constraints_become_pep440() {
        assert_eq!(poetry_constraint("^1.2.3").unwrap(), [">=1.2.3,<2"]);
        assert_eq!(poetry_constraint("^0.2.3").unwrap(), [">=0.2.3,<0.3"]);
        assert_eq!(poetry_constraint("~1.2.3").unwrap(), [">=1.2.3,<1.3"]);
        assert_eq!(poetry_constraint(">=3.8,<3.12").unwrap(), [">=3.8,<3.12"]);
        assert_eq!(
            poetry_constraint(">=3.8 <3.12 || >=3.13").unwrap(),
            [">=3.8,<3.12", ">=3.13"]
        );
        assert_eq!(poetry_constraint("1.2.*").unwrap(), ["==1.2.*"]);
        assert!(satisfies("^2.0", "2.7.1") && !satisfies("^2.0", "3.0.0"));
        assert!(poetry_constraint("^x").is_none());
    }

    #[test]
    fn requirements_give_name_extras_and_marker() {
        let (n, e, m) = requirement("uvicorn[standard] (>=0.12) ; python_version < \"3.12\"").unwrap();
        assert_eq!(n, "uvicorn");
        assert_eq!(e, ["standard"]);
        assert_eq!(m.as_deref(), Some("python_version < \"3.12\""));
        assert_eq!(requirement("fastapi>=0.115").unwrap().0, "fastapi");
    }
}
