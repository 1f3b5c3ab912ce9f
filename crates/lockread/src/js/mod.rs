//! JS lockfiles: where the project's lock is ([`detect_js_lock`]) and what
//! it installs ([`read_js_lock`]): every registry tarball at its install
//! path relative to the lock's directory (the workspace root), workspace
//! members as links, and each package's bins where the format records them.
//!
//! package-lock.json and bun.lock record the node_modules tree itself; for
//! pnpm and yarn (graph-based locks) farm computes npm's hoisted layout
//! ([`hoist`]). Registry tarball URLs are derived from the configured
//! registry (`registry`), as `farm_lockfiles::npm` does, so
//! `Mirrors::relativize` turns them into `mirror://npm/…` in farm.lock.

use std::collections::BTreeMap;
use std::path::Path;

use farm_lockfiles::integrity::Integrity;
use farm_lockfiles::lock::{LockedArtifact, NpmPackage, Unpack};

use crate::error::{read_text, LockReadError};
use crate::names::{check_download_url, join_inside};

mod berry;
mod bun;
pub mod detect;
mod hoist;
mod isolated;
mod npm;
mod pnpm;
mod registry;
pub mod workspace;
mod yarn;

pub use berry::parse_yarn_berry;
pub use bun::parse_bun_lock;
pub use detect::{detect_js_lock, JsLockKind, JsLockLocation};
pub use isolated::PnpmLayout;
pub use npm::parse_package_lock;
pub use pnpm::{parse_pnpm_lock, parse_pnpm_lock_with};
pub use yarn::{parse_yarn_classic, parse_yarn_classic_syntax, YarnEntry, YarnValue};

/// The platform farm builds for: optional packages for another are skipped.
pub use farm_lockfiles::npm::{runs_on_target, TARGET_CPU, TARGET_LIBC, TARGET_OS};

/// What a JS lockfile installs, relative to the directory that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsInstall {
    pub kind: JsLockKind,
    /// Every tarball with a pinned integrity, at its install path
    /// (`node_modules/a`, `frontend/node_modules/b`), sorted by path.
    pub packages: Vec<NpmPackage>,
    /// Registry packages whose npm tarball integrity the lockfile does not
    /// record (yarn Berry records a checksum of its own zip cache only);
    /// [`JsInstall::pin_from_registry`] takes it from the registry.
    pub unpinned: Vec<Unpinned>,
    /// Install paths of optional packages whose platform (`os`/`cpu`/`libc`)
    /// the lockfile does not record (yarn.lock); [`JsInstall::pin_from_registry`]
    /// asks the registry and drops those for another platform.
    pub platform_unknown: Vec<String>,
    /// Symlinks: workspace members and `link:` dependencies.
    pub links: Vec<JsLink>,
    /// Symlinks to installed packages, whose targets are install paths of
    /// `packages` (pnpm's `.pnpm` layout; empty for the hoisted formats).
    pub tree_links: Vec<JsLink>,
    /// `.bin` directories and the package whose bins go in each, when the
    /// layout says (pnpm's); otherwise bins go where npm puts them.
    pub bin_dirs: Vec<JsBinDir>,
    /// `bin` maps (command → file inside the package) by install path, for
    /// the packages that declare bins, when the format records them.
    pub bins: BTreeMap<String, BTreeMap<String, String>>,
    /// Whether the format records bins at all (package-lock.json, Berry and
    /// bun.lock do; pnpm records only `hasBin`, yarn.lock v1 nothing): when
    /// false, bins must be read from each unpacked package.json.
    pub bins_recorded: bool,
}

/// A registry package to be pinned from the registry's `dist.integrity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpinned {
    pub path: String,
    pub name: String,
    pub version: String,
    pub url: String,
}

/// A `.bin` directory (`node_modules/.bin`, relative to the lock's
/// directory) that gets the bins of the package installed at `package`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JsBinDir {
    pub dir: String,
    pub package: String,
}

/// A symlink in node_modules: `path` (install path) → `target` (a directory
/// relative to the lock's directory, never outside it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JsLink {
    pub path: String,
    pub target: String,
}

impl JsInstall {
    fn new(kind: JsLockKind, bins_recorded: bool) -> Self {
        JsInstall {
            kind,
            packages: Vec::new(),
            unpinned: Vec::new(),
            platform_unknown: Vec::new(),
            links: Vec::new(),
            tree_links: Vec::new(),
            bin_dirs: Vec::new(),
            bins: BTreeMap::new(),
            bins_recorded,
        }
    }

    /// Whether every package has its integrity and platform settled, so
    /// `packages` is the whole install.
    pub fn is_settled(&self) -> bool {
        self.unpinned.is_empty() && self.platform_unknown.is_empty()
    }

    fn sort(&mut self) {
        self.packages.sort_by(|a, b| a.path.cmp(&b.path));
        self.unpinned.sort_by(|a, b| a.path.cmp(&b.path));
        self.platform_unknown.sort();
        self.platform_unknown.dedup();
        self.links.sort();
    }
}

/// Reads the lockfile [`detect_js_lock`] found. `registry` is the configured
/// npm registry base URL, used for tarballs the lock names without a URL.
pub fn read_js_lock(loc: &JsLockLocation, registry: &str) -> Result<JsInstall, LockReadError> {
    let text = read_text(&loc.lockfile)?;
    let file = loc.lockfile.display().to_string();
    match loc.kind {
        JsLockKind::Npm => parse_package_lock(&file, &text, registry),
        JsLockKind::Pnpm => {
            let settings = pnpm_settings(&loc.root)?;
            parse_pnpm_lock_with(&file, &text, registry, settings)
        }
        JsLockKind::YarnClassic => {
            let manifests = workspace::yarn_manifests(&loc.root)?;
            parse_yarn_classic(&file, &text, registry, &manifests)
        }
        JsLockKind::YarnBerry => parse_yarn_berry(&file, &text, registry),
        JsLockKind::Bun => parse_bun_lock(&file, &text, registry),
    }
}

/// The layout settings of the workspace's `.npmrc` (pnpm reads the
/// workspace root's); defaults without one. A symlinked `.npmrc` is not
/// followed off the project.
fn pnpm_settings(root: &Path) -> Result<PnpmLayout, LockReadError> {
    let path = root.join(".npmrc");
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {
            let text = read_text(&path)?;
            PnpmLayout::from_npmrc(&path.display().to_string(), &text)
        }
        Ok(_) => Err(LockReadError::entry(
            &path.display().to_string(),
            "the file",
            "is not a regular file (a symlink or directory); farm reads only the project's own .npmrc",
        )),
        Err(_) => Ok(PnpmLayout::default()),
    }
}

/// Reads `path` as the given kind; for tests and callers that know the file.
pub fn read_js_lock_file(path: &Path, kind: JsLockKind, registry: &str) -> Result<JsInstall, LockReadError> {
    let root = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    read_js_lock(
        &JsLockLocation {
            kind,
            lockfile: path.to_path_buf(),
            root,
            member: String::new(),
        },
        registry,
    )
}

/// A downloaded npm tarball as farm.lock records it today (stored as the
/// file; the installer unpacks it).
pub(crate) fn npm_package(path: String, name: &str, version: &str, url: String, integrity: Integrity) -> NpmPackage {
    NpmPackage {
        path,
        artifact: LockedArtifact {
            name: name.into(),
            version: version.into(),
            url,
            integrity,
            size: None,
            unpack: Unpack::File,
            strip: 0,
        },
    }
}

/// The URL farm fetches a registry package from. A `resolved` URL shaped
/// like a registry tarball (`…/<name>/-/<basename>-<version>.tgz`) is
/// rebased onto the configured registry: the lock was written against some
/// registry, the fetching machine uses its own, and the integrity pins the
/// bytes either way. Other http(s) URLs are kept as written.
pub(crate) fn tarball_url(registry: &str, name: &str, version: &str, resolved: Option<&str>) -> Result<String, String> {
    let Some(resolved) = resolved.filter(|r| !r.is_empty()) else {
        return Ok(farm_lockfiles::npm::tarball_url(registry, name, version));
    };
    check_download_url(resolved)?;
    let without_fragment = resolved.split('#').next().unwrap_or(resolved);
    let path = without_fragment.split('?').next().unwrap_or(without_fragment);
    let path = path.replace("%2f", "/").replace("%2F", "/");
    let basename = name.rsplit('/').next().unwrap_or(name);
    if path.ends_with(&format!("/{name}/-/{basename}-{version}.tgz")) {
        return Ok(farm_lockfiles::npm::tarball_url(registry, name, version));
    }
    Ok(without_fragment.to_string())
}

/// Parses an npm `integrity` value (SRI, strongest of several kept).
pub(crate) fn parse_integrity(raw: Option<&str>) -> Result<Integrity, String> {
    let raw = raw
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| "has no `integrity`".to_string())?;
    Integrity::parse(raw).map_err(|_| {
        format!("`integrity` {raw:?} is not a sha256/sha512 SRI string farm can verify (sha1 alone is too weak; hint: reinstall so the package manager records sha512)")
    })
}

/// Checks a `bin` map: command names are single path components, targets
/// stay inside the package. Returns the map with targets normalised.
pub(crate) fn check_bins(bins: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (cmd, target) in bins {
        if cmd.is_empty() || cmd == "." || cmd == ".." || cmd.contains(['/', '\\', '\0']) {
            return Err(format!("bin name {cmd:?} is not a single file name"));
        }
        let norm = join_inside("", target)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("bin `{cmd}` points at {target:?}, outside the package"))?;
        out.insert(cmd.clone(), norm);
    }
    Ok(out)
}

/// The node_modules directory of an install location (`""` is the root).
pub(crate) fn node_modules_of(location: &str) -> String {
    if location.is_empty() {
        "node_modules".into()
    } else {
        format!("{location}/node_modules")
    }
}

/// Splits `name@rest` where `name` may be scoped (`@s/n@1.0.0`).
pub(crate) fn split_name_at(s: &str) -> Option<(&str, &str)> {
    let from = usize::from(s.starts_with('@'));
    let at = s[from..].find('@')? + from;
    Some((&s[..at], &s[at + 1..]))
}
