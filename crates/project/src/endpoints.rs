//! Registry endpoints for this project: farm.toml `[registries]` overrides
//! first, then the user's own npm, pip and apt configuration. Each is looked
//! up only when a command needs it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use farm_lockfiles::mirror::Mirrors;

use crate::config::{expand_env, Project};

pub fn npm_registry(project: &Project) -> Result<String> {
    if let Some(r) = &project.config.registries.npm {
        return expand_env("registries.npm", r).map(trim).map_err(anyhow::Error::msg);
    }
    farm_lockfiles::endpoints::npm_registry(&project.root)
        .map(trim)
        .context("finding the npm registry")
}

pub fn pypi_index(project: &Project) -> Result<String> {
    if let Some(r) = &project.config.registries.pypi {
        return expand_env("registries.pypi", r).map(trim).map_err(anyhow::Error::msg);
    }
    farm_lockfiles::endpoints::pypi_index(&project.root)
        .map(trim)
        .context("finding the Python package index")
}

/// The Debian mirror and the keyring its Release file is checked against
/// (apt's `Signed-By`, else Debian's archive keyring when installed). The
/// suite is the toolchain's; the mirror is whichever apt source serves
/// Debian's archive, whether or not it lists that suite.
pub fn debian_source(project: &Project) -> Result<(String, Option<PathBuf>)> {
    let default_keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    let default_keyring = default_keyring.exists().then(|| default_keyring.to_path_buf());
    if let Some(r) = &project.config.registries.debian {
        let mirror = expand_env("registries.debian", r)
            .map(trim)
            .map_err(anyhow::Error::msg)?;
        return Ok((mirror, default_keyring));
    }
    let etc = farm_lockfiles::endpoints::default_apt_etc();
    let sources = farm_lockfiles::endpoints::apt_sources(&etc).context("reading the apt sources")?;
    let suite = &project.config.toolchains.debian.suite;
    let archive = farm_lockfiles::endpoints::debian_archive_for(&sources, suite).with_context(|| {
        format!(
            "no apt source in {} serves Debian's archive for the suite {suite:?} \
             (looked for a `deb` source with Debian components such as `main` and a Debian suite such as `bookworm`, \
             or one listing {suite:?} itself)\n\
             hint: set [registries] debian = \"<mirror URL>\" in farm.toml",
            etc.display()
        )
    })?;
    Ok((archive.mirror, archive.signed_by.or(default_keyring)))
}

pub fn models_registry(project: &Project) -> Result<Option<String>> {
    match &project.config.models {
        Some(m) => Ok(Some(
            expand_env("models.registry", &m.registry)
                .map(trim)
                .map_err(anyhow::Error::msg)?,
        )),
        None => Ok(None),
    }
}

/// The mirrors a lock's `mirror://` URLs resolve against. Endpoints that
/// cannot be found stay unset; resolving a URL that needs one names it.
pub fn mirrors(project: &Project) -> Mirrors {
    Mirrors {
        npm: npm_registry(project).ok(),
        debian: debian_source(project).ok().map(|(m, _)| m),
        pypi_index: pypi_index(project).ok(),
    }
}

fn trim(s: String) -> String {
    s.trim_end_matches('/').to_string()
}
