//! `docker load` / `podman load` archives (the docker-archive format) made
//! from an OCI layout: `manifest.json` first, then the config, then each
//! layer uncompressed as `<diffID hex>/layer.tar`, all with fixed metadata.
//!
//! Layers are stored uncompressed because that is what every loader
//! accepts: the archive's layer files must hash to the config's diffIDs.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use farm_lockfiles::integrity::Integrity;
use serde::{Deserialize, Serialize};

use crate::compress::decoder;
use crate::digest::{parse_sha256, HashingWriter};
use crate::json::to_canonical_vec;
use crate::layout::{valid_repository, valid_tag, LayoutImage};
use crate::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("image reference {reference:?}: {message}; expected `name:tag`, e.g. farm-app:0.1.0")]
    BadReference { reference: String, message: String },
    #[error("layer {digest}: media type {media_type:?} is not a tar, tar+gzip or tar+zstd layer")]
    UnknownMediaType { digest: String, media_type: String },
    #[error("{path}: the config lists {diff_ids} diffIDs but the manifest {layers} layers")]
    LayerCount {
        path: PathBuf,
        diff_ids: usize,
        layers: usize,
    },
    #[error("layer {digest} in {path}: uncompressed it hashes to {found}, but the config says {expected}")]
    DiffIdMismatch {
        path: PathBuf,
        digest: String,
        expected: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a docker archive: {message}")]
    NotAnArchive { path: PathBuf, message: String },
}

/// One entry of the archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ArchiveManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Splits `[host[:port]/]path:tag` and checks each part.
fn check_reference(reference: &str) -> Result<(), ArchiveError> {
    let bad = |message: &str| ArchiveError::BadReference {
        reference: reference.into(),
        message: message.into(),
    };
    if reference.contains('@') {
        return Err(bad("a docker archive names images by tag, not digest"));
    }
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => return Err(bad("no tag")),
    };
    if !valid_tag(tag) {
        return Err(bad(
            "the tag may hold only [A-Za-z0-9_.-], up to 128, not starting with `.` or `-`",
        ));
    }
    let path = match name.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => rest,
        _ => name,
    };
    if !valid_repository(path) {
        return Err(bad(
            "the repository must be lowercase letters and digits separated by `.`, `_`, `-` or `/`",
        ));
    }
    Ok(())
}

/// Writes the image of `layout_dir` tagged like `image_ref` (or its only
/// image) as a docker-archive tarball at `out`, which appears whole or not
/// at all. `image_ref` (`name:tag`) is the name the engine will give it.
pub fn write_docker_archive(layout_dir: &Path, image_ref: &str, out: &Path) -> Result<(), ImageError> {
    check_reference(image_ref)?;
    let tag = image_ref.rsplit_once(':').map(|(_, t)| t);
    let image = LayoutImage::open(layout_dir, tag)?;
    let diff_ids = image.config.rootfs().diff_ids();
    if diff_ids.len() != image.layers.len() {
        return Err(ArchiveError::LayerCount {
            path: layout_dir.into(),
            diff_ids: diff_ids.len(),
            layers: image.layers.len(),
        }
        .into());
    }
    let diff_ids = diff_ids
        .iter()
        .map(|d| {
            parse_sha256(d).ok_or_else(|| ArchiveError::NotAnArchive {
                path: layout_dir.into(),
                message: format!("config diffID {d:?} is not sha256:<64 hex>"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { path, source }
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".farm-archive-")
        .tempfile_in(parent)
        .map_err(io_err(parent))?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, tmp.as_file()));

    let config_name = format!("{}.json", image.config_digest.hex());
    let manifest = vec![ArchiveManifest {
        config: config_name.clone(),
        repo_tags: vec![image_ref.to_string()],
        layers: diff_ids.iter().map(|d| format!("{}/layer.tar", d.hex())).collect(),
    }];
    let manifest_json = to_canonical_vec(&manifest).expect("plain strings serialise");
    append(
        &mut tar,
        "manifest.json",
        &manifest_json[..],
        manifest_json.len() as u64,
        out,
    )?;
    append(
        &mut tar,
        &config_name,
        &image.config_bytes[..],
        image.config_bytes.len() as u64,
        out,
    )?;
    let mut written: Vec<&Integrity> = Vec::new();
    for ((digest, _, media_type), diff_id) in image.layers.iter().zip(&diff_ids) {
        if written.contains(&diff_id) {
            continue;
        }
        written.push(diff_id);
        let blob = image.blob(digest);
        let open = || -> Result<Box<dyn Read>, ArchiveError> {
            let file = fs::File::open(&blob).map_err(io_err(&blob))?;
            decoder(media_type, io::BufReader::new(file))
                .map_err(io_err(&blob))?
                .ok_or_else(|| ArchiveError::UnknownMediaType {
                    digest: digest.to_string(),
                    media_type: media_type.clone(),
                })
        };
        // First pass: the uncompressed size (the tar header needs it) and a
        // check against the config's diffID.
        let mut hashed = HashingWriter::new(io::sink());
        io::copy(&mut open()?, &mut hashed).map_err(io_err(&blob))?;
        let (_, found, len) = hashed.finish();
        if found != *diff_id {
            return Err(ArchiveError::DiffIdMismatch {
                path: blob,
                digest: digest.to_string(),
                expected: diff_id.to_string(),
                found: found.to_string(),
            }
            .into());
        }
        let dir = format!("{}/", diff_id.hex());
        tar.append(&header(&dir, tar::EntryType::Directory, 0), io::empty())
            .map_err(io_err(out))?;
        append(&mut tar, &format!("{dir}layer.tar"), open()?, len, out)?;
    }
    let buffered = tar.into_inner().map_err(io_err(out))?;
    buffered.into_inner().map_err(|e| io_err(out)(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_err(out))?;
    tmp.persist(out).map_err(|e| io_err(out)(e.error))?;
    Ok(())
}

fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().expect("ustar").name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    // Sizes over 8 GiB get GNU's base-256 field, which Docker's and Podman's readers accept.
    h.set_size(size);
    h.set_cksum();
    h
}

/// Appends `len` bytes of `data` as `name`, failing if `data` has fewer.
fn append<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: R,
    len: u64,
    out: &Path,
) -> Result<(), ArchiveError> {
    let mut counted = CountingReader { inner: data, n: 0 };
    tar.append(&header(name, tar::EntryType::Regular, len), (&mut counted).take(len))
        .map_err(|source| ArchiveError::Io {
            path: out.into(),
            source,
        })?;
    if counted.n != len {
        return Err(ArchiveError::Io {
            path: out.into(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: expected {len} bytes, read {}", counted.n),
            ),
        });
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// The `RepoTags` of every image in a docker archive's `manifest.json`.
pub(crate) fn archive_repo_tags(path: &Path) -> Result<Vec<String>, ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        path: path.into(),
        source,
    };
    let file = fs::File::open(path).map_err(io_err)?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries_with_seek().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        if entry.path_bytes().as_ref() != b"manifest.json" {
            continue;
        }
        let mut text = Vec::new();
        entry.read_to_end(&mut text).map_err(io_err)?;
        let manifests: Vec<ArchiveManifest> =
            serde_json::from_slice(&text).map_err(|e| ArchiveError::NotAnArchive {
                path: path.into(),
                message: format!("manifest.json: {e}"),
            })?;
        return Ok(manifests.into_iter().flat_map(|m| m.repo_tags).collect());
    }
    Err(ArchiveError::NotAnArchive {
        path: path.into(),
        message: "no manifest.json".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_a_valid_name_and_tag() {
        for ok in ["farm-app:0.1.0", "127.0.0.1:5000/team/app:v1", "localhost/app:latest"] {
            check_reference(ok).unwrap();
        }
        for (bad, why) in [
            ("farm-app", "no tag"),
            ("Farm:1", "repository"),
            ("app:-x", "tag"),
            ("app@sha256:00", "digest"),
        ] {
            let err = check_reference(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("expected `name:tag`"), "{bad}: {err}");
        }
    }
}
