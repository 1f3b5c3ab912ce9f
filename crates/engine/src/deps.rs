//! Dependency trees farm lays out itself from verified store entries, the
//! way pnpm and bun do: `node_modules` from the npm tarballs of the lock,
//! and a wheelhouse of the backend's wheels under their real file names.
//! Both are store entries, cached by the set of artifacts they hold.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use farm_archive::{Members, TarOptions, UnpackLimits};
use farm_hostfs::Beneath;
use farm_lockfiles::Lock;
use farm_project::Project;
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

/// `node_modules` for the frontend: every `[[npm]]` tarball unpacked at its
/// install path, which is relative to the directory holding the JS lockfile
/// (`node_modules/vite`, or `frontend/node_modules/x` in a workspace), so
/// the entry is copied over that directory's tree as is; with `.bin` links.
/// For a pnpm app, `layout` adds pnpm's symlinks and `.bin` places
/// ([`crate::pnpm_layout`]). Install scripts do not run.
pub fn node_modules(store: &Store, lock: &Lock, layout: &JsLayout, limits: UnpackLimits) -> Result<StoreEntry> {
    let mut parts: Vec<String> = lock
        .npm
        .iter()
        .map(|p| format!("{}={}", p.path, p.artifact.integrity))
        .collect();
    // pnpm's links are part of what the entry holds (none for hoisted layouts,
    // whose key stays what it was).
    parts.extend(
        layout
            .tree_links
            .iter()
            .map(|l| format!("link:{}>{}", l.key, l.target.display())),
    );
    parts.extend(
        layout
            .bin_dirs
            .iter()
            .map(|b| format!("bin:{}>{}", b.dir.display(), b.package.display())),
    );
    parts.sort();
    let key = key_of("node-modules-v2", parts);
    let shown = layout.lockfile.display().to_string();
    let tree_links = layout.tree_links.clone();
    let bin_dirs = layout.bin_dirs.clone();
    let isolated = !tree_links.is_empty() || !bin_dirs.is_empty();
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
                    unpack_npm_tarball(tgz, &dir.join(lock_path), limits)
                        .with_context(|| format!("unpacking {lock_path}"))?;
                }
                if isolated {
                    let packages = tarballs.iter().map(|(p, _)| PathBuf::from(p)).collect();
                    crate::pnpm_layout::make(dir, &shown, &packages, &tree_links, &bin_dirs)?;
                } else {
                    for (lock_path, _) in &tarballs {
                        link_bins(dir, lock_path)?;
                    }
                }
                Ok(())
            })
            .context("laying out node_modules")
    })
}

/// Where the package at the install path `rel` really is: `rel` itself
/// when farm.lock unpacks a package there, or the package directory a
/// pnpm link at `rel` points at. `None`: nothing is installed there.
pub fn installed_at(lock: &Lock, layout: &JsLayout, rel: &str) -> Option<String> {
    let installed = |p: &str| lock.npm.iter().any(|n| n.path == p);
    if installed(rel) {
        return Some(rel.to_string());
    }
    let target = layout.tree_links.iter().find(|l| l.key == rel)?.target.to_str()?;
    installed(target).then(|| target.to_string())
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
    // The .bin directory of the node_modules that holds this package, where
    // npm links it: `node_modules/.bin` for `node_modules/@scope/cli` too.
    let (holder, _) = bin_holder(rel);
    link_bins_into(root, Path::new(rel), &holder.join(".bin"))
}

/// Links the bins of the package installed at `rel` into `bin_dir` (both
/// relative to `root`), each link relative to `bin_dir`, and makes their
/// files executable. Bins outside the package are skipped; a name already
/// linked keeps its first link.
pub(crate) fn link_bins_into(root: &Path, rel: &Path, bin_dir: &Path) -> Result<()> {
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
    let abs_bin_dir = root.join(bin_dir);
    std::fs::create_dir_all(&abs_bin_dir)?;
    for (bin, target) in bins {
        if bin.contains('/') || bin.is_empty() || bin == "." || bin == ".." {
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
        let link = abs_bin_dir.join(&bin);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        let text = crate::pnpm_layout::relative_text(&bin_dir.join(&bin), &rel.join(target));
        std::os::unix::fs::symlink(text, &link)?;
    }
    Ok(())
}

/// Splits an install path at its last `node_modules` component: the
/// directory whose `.bin` gets the package's bins, and the package's path
/// below it (`node_modules/@s/cli` gives `node_modules` and `@s/cli`). A
/// path without `node_modules` is held by its parent directory.
fn bin_holder(rel: &str) -> (PathBuf, PathBuf) {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.iter().rposition(|c| *c == "node_modules") {
        Some(i) => (parts[..=i].iter().collect(), parts[i + 1..].iter().collect()),
        None => {
            let path = Path::new(rel);
            let holder = path.parent().unwrap_or(Path::new("")).to_path_buf();
            let pkg = path.strip_prefix(&holder).unwrap_or(path).to_path_buf();
            (holder, pkg)
        }
    }
}

/// A symlink the package manager makes in node_modules (a workspace member,
/// a `link:` dependency): `key`, an install path relative to the lockfile's
/// directory (e.g. `node_modules/@acme/ui`), points at `target`, a
/// directory relative to that same directory.
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

/// Where the frontend's JS install lives (spec/lockfiles.md, "Install
/// paths"). The frontend step rebuilds the lockfile's directory (`root`)
/// in its build tree: the root's own files, the frontend at `member`, each
/// linked directory at its place, and node_modules over them, so the
/// relative paths between them are the ones the package manager made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsLayout {
    /// The lockfile, project-relative.
    pub lockfile: PathBuf,
    /// The directory holding the lockfile, project-relative.
    pub root: PathBuf,
    /// The frontend directory relative to `root` (empty when it is `root`).
    pub member: PathBuf,
    /// Workspace members and `link:` dependencies, each checked to be a
    /// directory inside the project.
    pub links: Vec<WorkspaceLink>,
    /// pnpm's symlinks to installed packages (`target` an install path),
    /// made inside the node_modules entry; empty for hoisted layouts.
    pub tree_links: Vec<WorkspaceLink>,
    /// pnpm's `.bin` directories and the package whose bins each gets.
    pub bin_dirs: Vec<crate::pnpm_layout::BinDir>,
}

impl JsLayout {
    /// The linked directories (relative to `root`) the frontend's own
    /// sources do not hold; each is copied into the build tree. A directory
    /// inside another comes with it.
    pub fn linked_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .links
            .iter()
            .map(|l| l.target.clone())
            .filter(|t| !t.as_os_str().is_empty() && !t.starts_with(&self.member) && !self.member.starts_with(t))
            .collect();
        dirs.sort();
        dirs.dedup();
        let all = dirs.clone();
        dirs.retain(|d| !all.iter().any(|o| o != d && d.starts_with(o)));
        dirs
    }
}

/// The frontend's [`JsLayout`], read from its JS lockfile offline (tarball
/// URLs are not needed for it). `None` without a `[frontend]`. A link to a
/// directory that is missing or reached through a symlink is an error
/// naming the lockfile, the package and the path; one outside the
/// project is refused by the lockfile reader already.
pub fn js_layout(project: &Project) -> Result<Option<JsLayout>> {
    let Some(loc) = project.js_lock()? else {
        return Ok(None);
    };
    let lockfile = project.relative(&loc.lockfile);
    let install = farm_lockread::js::read_js_lock(&loc, "mirror://npm")?;
    let root = project.relative(&loc.root);
    let tree = Beneath::open_dir(&project.root)?;
    let mut links = Vec::new();
    for l in &install.links {
        let at = format!("{}: package `{}`", lockfile.display(), l.path);
        let key = Path::new(&l.path);
        if l.path.is_empty() || key.components().any(|c| !matches!(c, Component::Normal(_))) {
            bail!("{at}: the install path is not a plain relative path");
        }
        let target = Path::new(&l.target);
        if target.is_absolute()
            || target
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            bail!(
                "{at} links to {:?}, outside the project directory {}\nhint: farm builds only what the project holds; move the package into the project, or publish it to your registry and depend on it by version",
                l.target,
                project.root.display()
            );
        }
        tree.open_subdir(&root.join(target))
            .with_context(|| format!("{at} links to {:?}", l.target))?;
        links.push(WorkspaceLink {
            key: l.path.clone(),
            target: target.components().collect(),
        });
    }
    let shown = lockfile.display().to_string();
    let mut tree_links = Vec::new();
    for l in &install.tree_links {
        tree_links.push(WorkspaceLink {
            key: l.path.clone(),
            target: crate::pnpm_layout::plain(&format!("{shown}: link `{}`", l.path), &l.target)?,
        });
    }
    let mut bin_dirs = Vec::new();
    for b in &install.bin_dirs {
        let what = format!("{shown}: `.bin` {}", b.dir);
        bin_dirs.push(crate::pnpm_layout::BinDir {
            dir: crate::pnpm_layout::plain(&what, &b.dir)?,
            package: crate::pnpm_layout::plain(&what, &b.package)?,
        });
    }
    Ok(Some(JsLayout {
        lockfile,
        root,
        member: PathBuf::from(&loc.member),
        links,
        tree_links,
        bin_dirs,
    }))
}

/// The frontend step's sources besides the frontend's own, each with its
/// place relative to the workspace root: when the frontend is a workspace
/// member, the root's top-level files (package.json, tsconfig.base.json, …;
/// not farm.toml or farm.lock, which would rebuild the frontend whenever
/// the lock changes), then each linked directory.
pub fn workspace_sources(store: &Store, project: &Project, layout: &JsLayout) -> Result<Vec<(PathBuf, StoreEntry)>> {
    let mut out = Vec::new();
    if !layout.member.as_os_str().is_empty() {
        let dir = Beneath::open_dir(&project.root)?.open_subdir(&layout.root)?;
        let mut skip: Vec<PathBuf> = Vec::new();
        for (name, meta) in dir.read_dir(Path::new(""))? {
            let root_file = meta.kind == farm_hostfs::Kind::File
                && name != farm_project::config::CONFIG_FILE
                && name != farm_lockfiles::lock::LOCK_FILE;
            if !root_file {
                skip.push(PathBuf::from(name));
            }
        }
        let skip: Vec<&Path> = skip.iter().map(|p| p.as_path()).collect();
        let entry = crate::source::snapshot(store, &project.root, &layout.root, "frontend-workspace", &skip)?;
        out.push((PathBuf::new(), entry));
    }
    for dir in layout.linked_dirs() {
        let entry = crate::source::snapshot(store, &project.root, &layout.root.join(&dir), "frontend-link", &[])?;
        out.push((dir, entry));
    }
    Ok(out)
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

    /// A project whose frontend `web` is a member of the npm workspace at
    /// the project root, with the root package-lock.json given.
    fn workspace_project(packages: &str) -> (tempfile::TempDir, Project) {
        let p = tempfile::tempdir().unwrap();
        let root = p.path();
        std::fs::create_dir_all(root.join("web")).unwrap();
        std::fs::create_dir_all(root.join("packages/ui")).unwrap();
        std::fs::write(
            root.join("farm.toml"),
            "[project]\nname = \"t\"\nversion = \"0.1.0\"\n\n[toolchains.node]\nversion = \"22.19.0\"\nnpm = \"10.9.2\"\n\n[frontend]\npath = \"web\"\n",
        )
        .unwrap();
        std::fs::write(root.join("package.json"), r#"{"workspaces":["web","packages/*"]}"#).unwrap();
        std::fs::write(root.join("web/package.json"), r#"{"name":"web"}"#).unwrap();
        std::fs::write(root.join("packages/ui/package.json"), r#"{"name":"@s/ui"}"#).unwrap();
        std::fs::write(
            root.join("package-lock.json"),
            format!(r#"{{"lockfileVersion":3,"packages":{{"":{{"name":"root","workspaces":["web","packages/*"]}},"web":{{"name":"web"}},"packages/ui":{{"name":"@s/ui","version":"1.0.0"}},"node_modules/web":{{"resolved":"web","link":true}}{packages}}}}}"#),
        )
        .unwrap();
        let project = Project::load(root).unwrap();
        (p, project)
    }

    /// A workspace member's lock is the root one: the layout names it, the
    /// frontend's place in it, and each link with its symlink text; linked
    /// directories outside the frontend are the ones copied besides it.
    #[test]
    fn workspace_layout_keeps_the_links_and_their_places() {
        let (_p, project) = workspace_project(r#","node_modules/@s/ui":{"resolved":"packages/ui","link":true}"#);
        let layout = js_layout(&project).unwrap().unwrap();
        assert_eq!(layout.lockfile, Path::new("package-lock.json"));
        assert_eq!(layout.root, Path::new(""));
        assert_eq!(layout.member, Path::new("web"));
        let ui = layout.links.iter().find(|l| l.key == "node_modules/@s/ui").unwrap();
        assert_eq!(ui.target, Path::new("packages/ui"));
        assert_eq!(ui.link_text(), Path::new("../../packages/ui"));
        assert_eq!(layout.linked_dirs(), [PathBuf::from("packages/ui")]);
    }

    /// A link to a directory reached through a symlink is refused naming
    /// the lockfile, the package and the path: the symlink could lead off
    /// the project onto the host.
    #[test]
    fn links_through_symlinks_are_refused_by_name() {
        let host = tempfile::tempdir().unwrap();
        let (p, project) = workspace_project(r#","node_modules/evil":{"resolved":"hostlink","link":true}"#);
        std::os::unix::fs::symlink(host.path(), p.path().join("hostlink")).unwrap();
        let err = format!("{:#}", js_layout(&project).unwrap_err());
        assert!(
            err.contains("package-lock.json: package `node_modules/evil` links to \"hostlink\""),
            "{err}"
        );
    }

    /// A scoped package's bins go into the `.bin` of the node_modules that
    /// holds the scope (where npm puts them and where `npm run` looks), and a
    /// string `bin` is named after the unscoped package name.
    #[test]
    fn scoped_bins_are_linked_into_node_modules_bin() {
        let root = tempfile::tempdir().unwrap();
        let pkg = root.path().join("node_modules/@s/cli");
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::write(pkg.join("bin/cli.js"), "").unwrap();
        std::fs::write(pkg.join("package.json"), r#"{"name":"@s/cli","bin":"./bin/cli.js"}"#).unwrap();
        link_bins(root.path(), "node_modules/@s/cli").unwrap();
        let link = root.path().join("node_modules/.bin/cli");
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../@s/cli/bin/cli.js"));
        assert!(link.exists(), "the link resolves to the bin");
        assert!(!root.path().join("node_modules/@s/.bin").exists());
        assert_eq!(
            bin_holder("web/node_modules/a/node_modules/@s/cli"),
            (
                PathBuf::from("web/node_modules/a/node_modules"),
                PathBuf::from("@s/cli")
            )
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
