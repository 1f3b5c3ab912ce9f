//! Dependency trees farm lays out itself from verified store entries, the
//! way pnpm and bun do: `node_modules` from the npm tarballs of the lock,
//! and a wheelhouse of the backend's wheels under their real file names.
//! Both are store entries, cached by the set of artifacts they hold.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use farm_archive::{Members, TarOptions};
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
pub fn node_modules(store: &Store, lock: &Lock) -> Result<StoreEntry> {
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
                    unpack_npm_tarball(tgz, &dest).with_context(|| format!("unpacking {lock_path}"))?;
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
fn unpack_npm_tarball(tgz: &Path, dest: &Path) -> Result<()> {
    let options = TarOptions {
        strip: 1,
        members: Members::FilesAndDirectories,
    };
    farm_archive::unpack_tar_into(tgz, options, dest)?;
    Ok(())
}

/// `node_modules/.bin/<name>` links for one installed package, as npm makes them.
fn link_bins(root: &Path, rel: &str) -> Result<()> {
    let pkg_dir = root.join(rel);
    let manifest = pkg_dir.join("package.json");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
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
        let file = pkg_dir.join(target);
        if file.is_file() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
        }
        let link = bin_dir.join(&bin);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        std::os::unix::fs::symlink(Path::new("..").join(pkg_in_holder).join(target), &link)?;
    }
    Ok(())
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
