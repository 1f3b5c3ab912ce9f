//! JS workspaces: which directories a root's `package.json` `"workspaces"`
//! (an array, or `{"packages": [...]}`) or `pnpm-workspace.yaml`
//! (`packages:`) names, as globs relative to the root (`packages/*`,
//! `apps/**`, `frontend`, `!packages/legacy`).

use std::collections::BTreeMap;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{json_error, read_text, yaml_error, LockReadError};
use crate::names::is_inside_relative;

/// The deepest directory farm looks at for workspace members.
const MAX_MEMBER_DEPTH: usize = 8;

/// A project's package.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Directory relative to the workspace root (`""` for the root).
    pub dir: String,
    /// The file, for messages.
    pub file: String,
    pub name: Option<String>,
    pub json: serde_json::Value,
}

impl Manifest {
    pub fn read(root: &Path, dir: &str) -> Result<Manifest, LockReadError> {
        let path = if dir.is_empty() {
            root.join("package.json")
        } else {
            root.join(dir).join("package.json")
        };
        let file = path.display().to_string();
        let json: serde_json::Value = serde_json::from_str(&read_text(&path)?).map_err(|e| json_error(&file, e))?;
        let name = json.get("name").and_then(|n| n.as_str()).map(str::to_string);
        Ok(Manifest {
            dir: dir.to_string(),
            file,
            name,
            json,
        })
    }

    /// `(name, range, optional)` of `devDependencies`, `dependencies` and
    /// `optionalDependencies`, one per name (a later list wins, as npm does).
    pub fn dependencies(&self) -> Vec<(String, String, bool)> {
        let mut out: BTreeMap<String, (String, bool)> = BTreeMap::new();
        for (field, optional) in [
            ("devDependencies", false),
            ("dependencies", false),
            ("optionalDependencies", true),
        ] {
            if let Some(map) = self.json.get(field).and_then(|d| d.as_object()) {
                for (k, v) in map {
                    out.insert(k.clone(), (v.as_str().unwrap_or_default().to_string(), optional));
                }
            }
        }
        out.into_iter().map(|(k, (r, o))| (k, r, o)).collect()
    }

    /// The `workspaces` globs, array or `{packages: [...]}` form.
    pub fn workspace_globs(&self) -> Option<Vec<String>> {
        let w = self.json.get("workspaces")?;
        let list = w.as_array().or_else(|| w.get("packages").and_then(|p| p.as_array()))?;
        Some(list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
    }

    /// The `packageManager` field's tool name (`pnpm@9.1.0` → `pnpm`).
    pub fn package_manager(&self) -> Option<String> {
        let pm = self.json.get("packageManager")?.as_str()?;
        Some(pm.split('@').next().unwrap_or(pm).to_string())
    }
}

/// The workspace globs a directory declares: pnpm-workspace.yaml's
/// `packages`, else package.json's `workspaces`; `None` when it is no
/// workspace root.
pub fn workspace_patterns(dir: &Path) -> Result<Option<Vec<String>>, LockReadError> {
    let pnpm = dir.join("pnpm-workspace.yaml");
    if pnpm.is_file() {
        let file = pnpm.display().to_string();
        let doc: yaml_serde::Value = yaml_serde::from_str(&read_text(&pnpm)?).map_err(|e| yaml_error(&file, e))?;
        let list = doc
            .get("packages")
            .and_then(|p| p.as_sequence())
            .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        return Ok(Some(list));
    }
    if dir.join("package.json").is_file() {
        return Ok(Manifest::read(dir, "")?.workspace_globs());
    }
    Ok(None)
}

/// Include and exclude (`!…`) glob sets of a workspace declaration.
pub struct Patterns {
    include: GlobSet,
    exclude: GlobSet,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns, String> {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        for p in patterns {
            let (neg, p) = match p.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, p.as_str()),
            };
            let p = p.trim_start_matches("./").trim_end_matches('/');
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("workspace pattern {p:?}: {e}"))?;
            if neg {
                exclude.add(glob);
            } else {
                include.add(glob);
            }
        }
        Ok(Patterns {
            include: include.build().map_err(|e| e.to_string())?,
            exclude: exclude.build().map_err(|e| e.to_string())?,
        })
    }

    /// Whether the directory `rel` (relative to the root) is a member.
    pub fn matches(&self, rel: &str) -> bool {
        !rel.is_empty() && self.include.is_match(rel) && !self.exclude.is_match(rel)
    }
}

/// Every member directory under `root` (with a package.json, not inside
/// node_modules or a dot-directory, symlinks not followed), sorted.
pub fn member_dirs(root: &Path, patterns: &Patterns) -> Result<Vec<String>, LockReadError> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), 0usize)];
    while let Some((rel, depth)) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| LockReadError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LockReadError::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ft = entry.file_type().map_err(|e| LockReadError::io(&entry.path(), e))?;
            if !ft.is_dir() || name == "node_modules" || name.starts_with('.') {
                continue;
            }
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if patterns.matches(&child) && entry.path().join("package.json").is_file() {
                out.push(child.clone());
            }
            if depth + 1 < MAX_MEMBER_DEPTH {
                stack.push((child, depth + 1));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The root's package.json and each member's, root first: what a yarn.lock
/// v1 reader needs for the projects' own dependencies.
pub fn yarn_manifests(root: &Path) -> Result<Vec<Manifest>, LockReadError> {
    let root_manifest = Manifest::read(root, "")?;
    let mut out = Vec::new();
    if let Some(globs) = root_manifest.workspace_globs() {
        let patterns = Patterns::new(&globs).map_err(|m| LockReadError::Detect {
            dir: root.display().to_string(),
            message: m,
        })?;
        for dir in member_dirs(root, &patterns)? {
            debug_assert!(is_inside_relative(&dir));
            out.push(Manifest::read(root, &dir)?);
        }
    }
    out.insert(0, root_manifest);
    Ok(out)
}
