//! Dependency trees farm lays out itself from verified store entries, the
//! way pnpm and bun do: `node_modules` from the npm tarballs of the lock,
//! and a wheelhouse of the backend's wheels under their real file names.
//! Both are store entries, cached by the set of artifacts they hold.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use farm_archive::{Members, TarOptions, UnpackLimits};
use farm_hostfs::Beneath;
use farm_lockfiles::Lock;
use farm_store::{Store, StoreEntry};
use sha2::Digest as _;

use crate::toolchain::cached_entry;

fn key_of(kind: &str, parts: impl IntoIterator<Item = String>) -> String {
    let mut h = sha2::Sha256::new();
    h.update(kind.as_bytes());
    for p in parts {
        h.update(b"\0");
        h.update(p.as_bytes());
    }
    format!("{kind}:{}", hex::encode(h.finalize()))
}

/// `node_modules` for the frontend: every package-lock entry's tarball
/// unpacked at its lock path, with `.bin` links. Install scripts do not run.
pub fn node_modules(store: &Store, lock: &Lock, limits: UnpackLimits) -> Result<StoreEntry> {
    let mut parts: Vec<String> = lock
        .npm
        .iter()
        .map(|p| format!("{}={}", p.path, p.artifact.integrity))
        .collect();
    parts.sort();
    let key = key_of("node-modules-v1", parts);
    cached_entry(store, &key, || {
        let mut tarballs: Vec<(String, PathBuf)> = Vec::new();
        for p in &lock.npm {
            // The lock is the project's file: a path that climbs out would unpack outside the entry.
            let rel = Path::new(&p.path);
            if p.path.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                bail!(
                    "farm.lock: npm package {} {} has the install path {:?}, which is not a plain relative path (no /, . or ..)",
                    p.artifact.name,
                    p.artifact.version,
                    p.path
                );
            }
            let e = store.artifact(&p.artifact.integrity.to_string())?.with_context(|| {
                format!(
                    "npm package {} {} is not in the store\nhint: run `farm fetch`",
                    p.artifact.name, p.artifact.version
                )
            })?;
            tarballs.push((p.path.clone(), e.path));
        }
        tarballs.sort();
        store
            .build_entry("node-modules", "deps", move |dir| {
                for (lock_path, tgz) in &tarballs {
                    let rel = lock_path.strip_prefix("node_modules/").unwrap_or(lock_path);
                    let dest = dir.join(rel);
                    unpack_npm_tarball(tgz, &dest, limits).with_context(|| format!("unpacking {lock_path}"))?;
                }
                for (lock_path, _) in &tarballs {
                    let rel = lock_path.strip_prefix("node_modules/").unwrap_or(lock_path);
                    link_bins(dir, rel)?;
                }
                Ok(())
            })
            .context("laying out node_modules")
    })
}

/// Unpacks an npm tarball, dropping its single top directory (`package/`
/// for most, but not all, packages). As npm does, only files and
/// directories are installed; like every archive farm unpacks, a member
/// that would land outside `dest` is an error.
fn unpack_npm_tarball(tgz: &Path, dest: &Path, limits: UnpackLimits) -> Result<()> {
    let options = TarOptions {
        strip: 1,
        members: Members::FilesAndDirectories,
        limits,
    };
    farm_archive::unpack_tar_into(tgz, options, dest)?;
    Ok(())
}

/// `node_modules/.bin/<name>` links for one installed package, as npm makes them.
fn link_bins(root: &Path, rel: &str) -> Result<()> {
    let pkg_dir = root.join(rel);
    let manifest = pkg_dir.join("package.json");
    let Ok(pkg_tree) = Beneath::open_dir(&pkg_dir) else {
        return Ok(());
    };
    let Ok(text) = pkg_tree.read_to_string(Path::new("package.json")) else {
        return Ok(());
    };
    let pkg: serde_json::Value = serde_json::from_str(&text).with_context(|| manifest.display().to_string())?;
    let name = pkg.get("name").and_then(|n| n.as_str()).unwrap_or_default();
    let bins: Vec<(String, String)> = match pkg.get("bin") {
        Some(serde_json::Value::String(s)) => {
            vec![(name.rsplit('/').next().unwrap_or(name).to_string(), s.clone())]
        }
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect(),
        _ => vec![],
    };
    if bins.is_empty() {
        return Ok(());
    }
    // The .bin directory of the node_modules that holds this package.
    let holder = Path::new(rel).parent().unwrap_or(Path::new(""));
    let bin_dir = root.join(holder).join(".bin");
    std::fs::create_dir_all(&bin_dir)?;
    let pkg_in_holder = Path::new(rel).strip_prefix(holder).unwrap_or(Path::new(rel));
    for (bin, target) in bins {
        if bin.contains('/') || bin.is_empty() {
            continue;
        }
        let target = target.trim_start_matches("./");
        // A bin outside its package (`../../etc/shadow`) is not linked, and never chmod-ed.
        let inside = !target.is_empty()
            && Path::new(target)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            continue;
        }
        if pkg_tree
            .symlink_metadata(Path::new(target))
            .is_ok_and(|m| m.kind == farm_hostfs::Kind::File)
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(pkg_dir.join(target), std::fs::Permissions::from_mode(0o755))?;
        }
        let link = bin_dir.join(&bin);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        std::os::unix::fs::symlink(Path::new("..").join(pkg_in_holder).join(target), &link)?;
    }
    Ok(())
}

/// A workspace package of the frontend's package-lock.json (`"link": true`):
/// npm links `key` (relative to the frontend directory, e.g.
/// `node_modules/ui`) to `target`, a directory of the frontend's sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceLink {
    pub key: String,
    pub target: PathBuf,
}

impl WorkspaceLink {
    /// The symlink's text: `target` seen from the directory that holds `key`.
    pub fn link_text(&self) -> PathBuf {
        let depth = Path::new(&self.key).components().count().saturating_sub(1);
        let mut t: PathBuf = std::iter::repeat_n("..", depth).collect();
        t.push(&self.target);
        t
    }
}

/// The `"link": true` entries of the frontend's package-lock.json (read
/// without following a symlink). `farm lock` leaves them out of farm.lock:
/// they are source, not downloads. The frontend step sees only the
/// frontend's directory, so a link to anywhere else is refused here, naming
/// the package, the path and why, instead of failing later in the bundler.
pub fn workspace_links(root: &Path, frontend: &Path) -> Result<Vec<WorkspaceLink>> {
    let project = Beneath::open_dir(root)?;
    let lock_rel = frontend.join("package-lock.json");
    let bytes = match project.read(&lock_rel) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let lock: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not valid JSON", lock_rel.display()))?;
    let Some(packages) = lock.get("packages").and_then(|p| p.as_object()) else {
        return Ok(vec![]);
    };
    let mut links = Vec::new();
    for (key, entry) in packages {
        if entry.get("link").and_then(|l| l.as_bool()) != Some(true) {
            continue;
        }
        let name = key.rsplit("node_modules/").next().unwrap_or(key);
        let at = format!("{}: package {name:?} (`{key}`)", lock_rel.display());
        let resolved = entry
            .get("resolved")
            .and_then(|r| r.as_str())
            .with_context(|| format!("{at} is a link (\"link\": true) with no `resolved` path"))?;
        let key_path = Path::new(key);
        if key.is_empty() || key_path.is_absolute() || key_path.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            bail!("{at}: the key is not a plain relative path");
        }
        let target = Path::new(resolved);
        if target.is_absolute() {
            bail!(
                "{at} links to {resolved:?}, an absolute path: outside the project directory {}\nhint: farm builds only what the project holds; publish the package to your registry and depend on it by version",
                root.display()
            );
        }
        // Where the link points, project-relative (npm writes it relative to the lock's directory).
        let mut in_project: Vec<&std::ffi::OsStr> = frontend
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        for c in target.components() {
            match c {
                Component::Normal(n) => in_project.push(n),
                Component::ParentDir => anyhow::ensure!(
                    in_project.pop().is_some(),
                    "{at} links to {resolved:?}, which is outside the project directory {}\nhint: farm builds only what the project holds; move the package into the frontend's directory, or publish it to your registry and depend on it by version",
                    root.display()
                ),
                _ => {}
            }
        }
        let in_project: PathBuf = in_project.iter().collect();
        let Ok(inside) = in_project.strip_prefix(frontend) else {
            bail!(
                "{at} links to {resolved:?} ({} in the project), outside frontend.path {}: the frontend step sees only that directory\nhint: move the package under {}, or publish it to your registry and depend on it by version",
                in_project.display(),
                frontend.display(),
                frontend.display()
            );
        };
        project
            .open_subdir(&in_project)
            .with_context(|| format!("{at} links to {resolved:?}"))?;
        links.push(WorkspaceLink {
            key: key.clone(),
            target: inside.to_path_buf(),
        });
    }
    Ok(links)
}

/// The backend's wheels under their own file names (pip reads tags from them).
pub fn wheelhouse(store: &Store, lock: &Lock) -> Result<StoreEntry> {
    let mut parts: Vec<String> = lock
        .wheels
        .iter()
        .map(|w| format!("{}={}", w.filename, w.artifact.integrity))
        .collect();
    parts.sort();
    let key = key_of("wheelhouse-v1", parts);
    cached_entry(store, &key, || {
        let mut files = Vec::new();
        for w in &lock.wheels {
            let e = store
                .artifact(&w.artifact.integrity.to_string())?
                .with_context(|| format!("wheel {} is not in the store\nhint: run `farm fetch`", w.filename))?;
            if w.filename.contains('/') {
                bail!("farm.lock: wheel file name {:?} contains a slash", w.filename);
            }
            files.push((w.filename.clone(), e.path));
        }
        store
            .build_entry("wheelhouse", "deps", move |dir| {
                for (name, path) in &files {
                    std::fs::copy(path, dir.join(name))?;
                }
                Ok(())
            })
            .context("laying out the wheelhouse")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project_with_lock(packages: &str) -> tempfile::TempDir {
        let p = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(p.path().join("apps/web/packages/ui")).unwrap();
        std::fs::create_dir_all(p.path().join("packages/shared")).unwrap();
        std::fs::write(
            p.path().join("apps/web/package-lock.json"),
            format!(r#"{{"lockfileVersion":3,"packages":{{"":{{"name":"web"}},{packages}}}}}"#),
        )
        .unwrap();
        p
    }

    /// A workspace package inside the frontend is linked; one elsewhere in
    /// the project, outside it, absolute, or reached through a symlink is
    /// refused naming the package, its path and why.
    #[test]
    fn workspace_links_outside_the_frontend_are_refused_by_name() {
        let web = Path::new("apps/web");
        let ok = project_with_lock(
            r#""packages/ui":{"version":"1.0.0"},"node_modules/@s/ui":{"resolved":"packages/ui","link":true}"#,
        );
        let links = workspace_links(ok.path(), web).unwrap();
        assert_eq!(
            links,
            [WorkspaceLink {
                key: "node_modules/@s/ui".into(),
                target: "packages/ui".into()
            }]
        );
        assert_eq!(links[0].link_text(), Path::new("../../packages/ui"));

        for (resolved, why) in [
            ("../../../outside", "outside the project directory"),
            ("/srv/ui", "an absolute path"),
            ("../../packages/shared", "outside frontend.path apps/web"),
        ] {
            let p = project_with_lock(&format!(
                r#""node_modules/evil":{{"resolved":"{resolved}","link":true}}"#
            ));
            let err = format!("{:#}", workspace_links(p.path(), web).unwrap_err());
            assert!(
                err.contains("package \"evil\"") && err.contains(resolved) && err.contains(why),
                "{resolved}: {err}"
            );
        }

        let host = tempfile::tempdir().unwrap();
        let p = project_with_lock(r#""node_modules/evil":{"resolved":"hostlink","link":true}"#);
        std::os::unix::fs::symlink(host.path(), p.path().join("apps/web/hostlink")).unwrap();
        let err = format!("{:#}", workspace_links(p.path(), web).unwrap_err());
        assert!(
            err.contains("package \"evil\"") && err.contains("is a symlink"),
            "{err}"
        );
    }

    /// A package's `bin` that points outside the package is neither linked
    /// nor made executable: the host file it names keeps its mode.
    #[test]
    fn bins_outside_their_package_are_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let nm = tempfile::tempdir().unwrap();
        let pkg = nm.path().join("evil");
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::write(pkg.join("bin/ok.js"), "").unwrap();
        let up = "../".repeat(nm.path().components().count() + 2);
        std::fs::write(
            pkg.join("package.json"),
            format!(
                r#"{{"name":"evil","bin":{{"ok":"./bin/ok.js","esc":"{up}{}"}}}}"#,
                victim.display()
            ),
        )
        .unwrap();
        link_bins(nm.path(), "evil").unwrap();
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(nm.path().join(".bin/esc").symlink_metadata().is_err());
        assert_eq!(
            std::fs::metadata(pkg.join("bin/ok.js")).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(nm.path().join(".bin/ok").symlink_metadata().is_ok());
    }
}
