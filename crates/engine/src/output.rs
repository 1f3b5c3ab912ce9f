//! The output directory: assembled in a staging directory beside the old
//! one and swapped in only when complete, so a failed build leaves the
//! previous output as it was. Files leave the store writable by the user
//! (0644/0755) with SOURCE_DATE_EPOCH as their time.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, Result};

use crate::manifest::Output;

pub struct Staging {
    target: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Staging {
    pub fn new(target: &Path) -> Result<Staging> {
        let parent = target.parent().context("the output directory has no parent")?;
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        let name = target
            .file_name()
            .context("the output directory has no name")?
            .to_string_lossy()
            .into_owned();
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.new-"))
            .tempdir_in(parent)?;
        Ok(Staging {
            target: target.to_path_buf(),
            dir: Some(dir),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("not committed").path()
    }

    /// Swaps the staging directory in: old → aside, new → target, old removed.
    pub fn commit(mut self) -> Result<()> {
        let dir = self.dir.take().expect("not committed").keep();
        let parent = self.target.parent().expect("checked in new");
        let aside = parent.join(format!(
            ".{}.old-{}",
            self.target.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &aside).with_context(|| format!("moving {} aside", self.target.display()))?;
        }
        if let Err(e) = std::fs::rename(&dir, &self.target) {
            if had_old {
                let _ = std::fs::rename(&aside, &self.target);
            }
            return Err(e).with_context(|| format!("moving the new output into {}", self.target.display()));
        }
        std::fs::set_permissions(&self.target, std::fs::Permissions::from_mode(0o755))?;
        if had_old {
            std::fs::remove_dir_all(&aside).with_context(|| aside.display().to_string())?;
        }
        Ok(())
    }
}

/// Copies `from` (a store path) to `to` and describes it for the manifest.
pub fn place(from: &Path, to: &Path, rel: &str, sde: u64) -> Result<Output> {
    copy_out(from, to, sde).with_context(|| format!("writing {}", to.display()))?;
    let digest = farm_store::tree_digest(to)?;
    Ok(Output {
        path: rel.to_string(),
        digest: digest.to_string(),
        size: tree_size(to)?,
        metadata: Default::default(),
    })
}

fn copy_out(from: &Path, to: &Path, sde: u64) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    let time = UNIX_EPOCH + Duration::from_secs(sde);
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        let mut names: Vec<_> = std::fs::read_dir(from)?.collect::<std::io::Result<_>>()?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            copy_out(&e.path(), &to.join(e.file_name()), sde)?;
        }
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
        std::fs::File::open(to)?.set_modified(time)?;
    } else {
        std::fs::copy(from, to)?;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
        std::fs::File::options().write(true).open(to)?.set_modified(time)?;
    }
    Ok(())
}

pub fn tree_size(p: &Path) -> Result<u64> {
    let meta = std::fs::symlink_metadata(p)?;
    if meta.is_dir() {
        let mut total = 0;
        for e in std::fs::read_dir(p)? {
            total += tree_size(&e?.path())?;
        }
        Ok(total)
    } else if meta.is_file() {
        Ok(meta.len())
    } else {
        Ok(0)
    }
}

/// Installed distributions in a site-packages directory.
pub fn count_dist_infos(site: &Path) -> u64 {
    std::fs::read_dir(site)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".dist-info"))
                .count() as u64
        })
        .unwrap_or(0)
}

/// (operations, component schemas) of an OpenAPI document.
pub fn openapi_counts(path: &Path) -> Result<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)
        .with_context(|| format!("{}: the backend's OpenAPI schema is not JSON", path.display()))?;
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    let ops = v["paths"]
        .as_object()
        .map(|paths| {
            paths
                .values()
                .map(|item| {
                    item.as_object()
                        .map(|m| m.keys().filter(|k| METHODS.contains(&k.as_str())).count())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
        .unwrap_or(0) as u64;
    let schemas = v["components"]["schemas"].as_object().map(|m| m.len()).unwrap_or(0) as u64;
    Ok((ops, schemas))
}
