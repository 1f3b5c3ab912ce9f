//! The output directory: assembled in a staging directory beside the old
//! one and swapped in only when complete, so a failed build leaves the
//! previous output as it was. Files leave the store writable by the user
//! (0644/0755) with SOURCE_DATE_EPOCH as their time.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use farm_hostfs::{self as hostfs, Beneath, Kind, Walk};

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

/// Copies `from` (a path inside the store entry at `entry`; empty for the
/// whole entry) to `to` and describes it for the manifest. What a step
/// wrote is read without following a symlink: an output that is itself a
/// symlink is refused, symlinks inside it are kept only when they resolve
/// inside it (spec/engine.md, "Outputs").
pub fn place(entry: &Path, from: &Path, to: &Path, rel: &str, sde: u64) -> Result<Output> {
    let tree = Beneath::open_dir(entry)?;
    copy_out(&tree, from, to, sde).with_context(|| format!("writing the output {rel}"))?;
    let digest = farm_store::tree_digest(to)?;
    Ok(Output {
        path: rel.to_string(),
        digest: digest.to_string(),
        size: tree_size(to)?,
        metadata: Default::default(),
    })
}

fn copy_out(tree: &Beneath, from: &Path, to: &Path, sde: u64) -> Result<()> {
    let time = UNIX_EPOCH + Duration::from_secs(sde);
    let meta = tree.symlink_metadata(from)?;
    match meta.kind {
        Kind::File => return copy_file(tree.open_file(from)?, &meta, to, time),
        Kind::Dir => {}
        Kind::Symlink => {
            return Err(hostfs::Error::Symlink {
                path: tree.shown(from),
                target: tree.read_link(from)?,
            }
            .into())
        }
        Kind::Other => {
            return Err(hostfs::Error::WrongType {
                path: tree.shown(from),
                expected: "a file or directory",
                found: meta.kind.describe(),
            }
            .into())
        }
    }
    let src = tree.open_subdir(from)?;
    std::fs::create_dir_all(to).with_context(|| to.display().to_string())?;
    let mut dirs = vec![to.to_path_buf()];
    let mut links = Vec::new();
    src.walk(|e| -> Result<Walk> {
        let dest = to.join(&e.rel);
        match e.meta.kind {
            Kind::Dir => {
                std::fs::create_dir(&dest).with_context(|| dest.display().to_string())?;
                dirs.push(dest);
            }
            Kind::File => copy_file(e.open_file()?, &e.meta, &dest, time)?,
            Kind::Symlink => {
                let target = e.link.clone().expect("a symlink has a target");
                std::os::unix::fs::symlink(&target, &dest).with_context(|| dest.display().to_string())?;
                links.push((e.rel.clone(), target));
            }
            Kind::Other => {
                return Err(hostfs::Error::WrongType {
                    path: src.shown(&e.rel),
                    expected: "a file, directory or symlink",
                    found: e.meta.kind.describe(),
                }
                .into())
            }
        }
        Ok(Walk::Descend)
    })?;
    // Checked on the copy, which nothing else writes: a link must land inside this output.
    let copy = Beneath::open_dir(to)?;
    for (link, target) in &links {
        if let Err(e) = copy.check_link(link, target) {
            return Err(match e {
                hostfs::Error::LinkLeaves { target, .. } => anyhow::anyhow!(
                    "{}: is a symlink to {}, which leaves the directory {}\nhint: a step's output may hold symlinks only to files of the same output",
                    src.shown(link).display(),
                    target.display(),
                    src.path().display()
                ),
                other => other.into(),
            });
        }
    }
    for d in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        std::fs::File::open(d)?.set_modified(time)?;
    }
    Ok(())
}

/// Writes an opened step file to `to` (0644, or 0755 when executable) with the build's time.
fn copy_file(mut from: std::fs::File, meta: &hostfs::Meta, to: &Path, time: std::time::SystemTime) -> Result<()> {
    let mut out = std::fs::File::create_new(to).with_context(|| to.display().to_string())?;
    std::io::copy(&mut from, &mut out).with_context(|| to.display().to_string())?;
    let mode = if meta.is_executable() { 0o755 } else { 0o644 };
    out.set_permissions(std::fs::Permissions::from_mode(mode))?;
    out.set_modified(time)?;
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

/// Installed distributions in the site-packages directory `rel` of a step's output.
pub fn count_dist_infos(entry: &Path, rel: &Path) -> Result<u64> {
    let tree = Beneath::open_dir(entry)?;
    let names = match tree.read_dir(rel) {
        Ok(names) => names,
        Err(e) if e.is_not_found() => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(names
        .iter()
        .filter(|(n, _)| n.to_string_lossy().ends_with(".dist-info"))
        .count() as u64)
}

/// (operations, component schemas) of an OpenAPI document; `shown` names it in errors.
pub fn openapi_counts(bytes: &[u8], shown: &str) -> Result<(u64, u64)> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{shown}: the backend's OpenAPI schema is not JSON"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A step output that is a symlink (to a host file) is refused by name
    /// and nothing of the file is copied; a link inside a directory output
    /// is kept when it stays inside, refused when it climbs out.
    #[test]
    fn step_outputs_never_bring_host_files_along() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "HOST-SECRET").unwrap();
        let entry = tempfile::tempdir().unwrap();
        let e = entry.path();
        symlink(host.path().join("secret"), e.join("openapi.json")).unwrap();
        std::fs::create_dir_all(e.join("good/sub")).unwrap();
        std::fs::write(e.join("good/sub/f"), "f").unwrap();
        symlink("sub/f", e.join("good/alias")).unwrap();
        std::fs::create_dir_all(e.join("bad")).unwrap();
        symlink("../../../../../../../../etc/shadow", e.join("bad/esc")).unwrap();
        let out = tempfile::tempdir().unwrap();

        let err = format!(
            "{:#}",
            place(
                e,
                Path::new("openapi.json"),
                &out.path().join("openapi.json"),
                "openapi.json",
                0
            )
            .unwrap_err()
        );
        assert!(err.contains("openapi.json: is a symlink"), "{err}");
        assert!(!out.path().join("openapi.json").exists());

        let o = place(e, Path::new("good"), &out.path().join("good"), "good", 0).unwrap();
        assert_eq!(
            std::fs::read_link(out.path().join("good/alias")).unwrap(),
            Path::new("sub/f")
        );
        assert_eq!(o.size, 1);

        let err = format!(
            "{:#}",
            place(e, Path::new("bad"), &out.path().join("bad"), "bad", 0).unwrap_err()
        );
        assert!(
            err.contains("bad/esc: is a symlink to") && err.contains("leaves the directory"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            place(e, Path::new("../x"), &out.path().join("x"), "x", 0).unwrap_err()
        );
        assert!(err.contains("leaves the directory"), "{err}");
    }
}
