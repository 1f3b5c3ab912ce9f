//! Which lockfile a frontend uses: the frontend directory's own, or, when
//! a directory above it (up to the project root) is a workspace root whose
//! globs include the frontend, the workspace root's — as the package
//! managers themselves decide.

use std::path::{Component, Path, PathBuf};

use super::workspace::{workspace_patterns, Manifest, Patterns};
use crate::error::LockReadError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JsLockKind {
    /// package-lock.json or npm-shrinkwrap.json (v2/v3)
    Npm,
    /// pnpm-lock.yaml (v6/v9)
    Pnpm,
    /// yarn.lock v1
    YarnClassic,
    /// yarn.lock of yarn 2+ (`__metadata`)
    YarnBerry,
    /// bun.lock (text)
    Bun,
}

impl JsLockKind {
    /// The package manager's name, as `packageManager` spells it.
    pub fn manager(self) -> &'static str {
        match self {
            JsLockKind::Npm => "npm",
            JsLockKind::Pnpm => "pnpm",
            JsLockKind::YarnClassic | JsLockKind::YarnBerry => "yarn",
            JsLockKind::Bun => "bun",
        }
    }
}

/// Where a frontend's lockfile is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsLockLocation {
    pub kind: JsLockKind,
    pub lockfile: PathBuf,
    /// The directory holding the lockfile: install paths are relative to it.
    pub root: PathBuf,
    /// The frontend directory relative to `root` (`""` when it is the root).
    pub member: String,
}

/// Lockfile names in the order npm, pnpm, yarn and bun look for their own.
const LOCKFILES: [(&str, Option<JsLockKind>); 6] = [
    ("npm-shrinkwrap.json", Some(JsLockKind::Npm)),
    ("package-lock.json", Some(JsLockKind::Npm)),
    ("pnpm-lock.yaml", Some(JsLockKind::Pnpm)),
    ("yarn.lock", None),
    ("bun.lock", Some(JsLockKind::Bun)),
    ("bun.lockb", None),
];

/// Finds the lockfile for `frontend_dir`, looking no higher than
/// `project_root` (which must contain it). `Ok(None)`: there is none.
pub fn detect_js_lock(frontend_dir: &Path, project_root: &Path) -> Result<Option<JsLockLocation>, LockReadError> {
    let detect_err = |dir: &Path, message: String| LockReadError::Detect {
        dir: dir.display().to_string(),
        message,
    };
    let rel = frontend_dir.strip_prefix(project_root).map_err(|_| {
        detect_err(
            frontend_dir,
            format!("is not inside the project root {}", project_root.display()),
        )
    })?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(detect_err(frontend_dir, "the frontend path must not use `..`".into())),
        }
    }
    // Nearest workspace root above the frontend that lists it as a member.
    for up in 1..=parts.len() {
        let dir_parts = &parts[..parts.len() - up];
        let dir = dir_parts.iter().fold(project_root.to_path_buf(), |d, p| d.join(p));
        let member = parts[parts.len() - up..].join("/");
        let Some(globs) = workspace_patterns(&dir)? else {
            continue;
        };
        let patterns = Patterns::new(&globs).map_err(|m| detect_err(&dir, m))?;
        if !patterns.matches(&member) {
            continue;
        }
        return match lock_in(&dir)? {
            Some((kind, lockfile)) => Ok(Some(JsLockLocation {
                kind,
                lockfile,
                root: dir,
                member,
            })),
            None => Err(detect_err(
                &dir,
                format!(
                    "is a workspace root whose workspaces include `{member}`, but has no lockfile; hint: run your package manager's install there (npm install, pnpm install, yarn install or bun install) and commit the lockfile"
                ),
            )),
        };
    }
    Ok(lock_in(frontend_dir)?.map(|(kind, lockfile)| JsLockLocation {
        kind,
        lockfile,
        root: frontend_dir.to_path_buf(),
        member: String::new(),
    }))
}

/// The lockfile in `dir`, if any; several are an error unless package.json's
/// `packageManager` names which one is current.
fn lock_in(dir: &Path) -> Result<Option<(JsLockKind, PathBuf)>, LockReadError> {
    let mut found: Vec<(JsLockKind, PathBuf)> = Vec::new();
    let mut binary_bun = false;
    for (name, kind) in LOCKFILES {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        match (name, kind) {
            ("bun.lockb", _) => binary_bun = true,
            (_, Some(k)) => {
                // npm uses npm-shrinkwrap.json over package-lock.json.
                if !(k == JsLockKind::Npm && found.iter().any(|(f, _)| *f == JsLockKind::Npm)) {
                    found.push((k, path));
                }
            }
            (_, None) => found.push((yarn_kind(&path)?, path)),
        }
    }
    if found.is_empty() && binary_bun {
        return Err(LockReadError::Detect {
            dir: dir.display().to_string(),
            message: "has only bun.lockb, bun's binary lockfile, which farm does not read; hint: run `bun install --save-text-lockfile` to write bun.lock (bun 1.2 and newer write it by default)".into(),
        });
    }
    if found.len() > 1 {
        let pm = if dir.join("package.json").is_file() {
            Manifest::read(dir, "")?.package_manager()
        } else {
            None
        };
        if let Some(pm) = pm {
            found.retain(|(k, _)| k.manager() == pm);
        }
        if found.len() != 1 {
            let names: Vec<String> = LOCKFILES
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| *n != "bun.lockb" && dir.join(n).is_file())
                .map(str::to_string)
                .collect();
            return Err(LockReadError::Detect {
                dir: dir.display().to_string(),
                message: format!(
                    "has several lockfiles ({}) and package.json's `packageManager` does not say which is current; hint: delete the stale ones, or set `packageManager`",
                    names.join(", ")
                ),
            });
        }
    }
    Ok(found.pop())
}

/// yarn.lock is Berry's when it has the `__metadata` block.
fn yarn_kind(path: &Path) -> Result<JsLockKind, LockReadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LockReadError::io(path, e))?;
    Ok(if text.lines().any(|l| l.starts_with("__metadata:")) {
        JsLockKind::YarnBerry
    } else {
        JsLockKind::YarnClassic
    })
}
