//! `docker load` / `podman load` archives (the docker-archive format) made
//! from an OCI layout: `manifest.json` first, then the config, then each
//! layer uncompressed as `<diffID hex>/layer.tar`, all with fixed metadata.
//!
//! Layers are stored uncompressed because that is what every loader
//! accepts: the archive's layer files must hash to the config's diffIDs.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use farm_archive::{Format, TarEntry, TarError, TarKind, TarWriter};
use farm_formats::canonical_json;
use farm_lockfiles::integrity::Integrity;
use serde::{Deserialize, Serialize};

use crate::compress::decoder;
use crate::digest::{parse_sha256, HashingWriter};
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
    // A layer of 8 GiB or more gets GNU's base-256 size field, which
    // Docker's and Podman's readers accept (spec/images.md).
    let mut tar = TarWriter::new(
        io::BufWriter::with_capacity(1 << 20, tmp.as_file()),
        Format::PaxBase256Numbers,
    );

    let config_name = format!("{}.json", image.config_digest.hex());
    let manifest = vec![ArchiveManifest {
        config: config_name.clone(),
        repo_tags: vec![image_ref.to_string()],
        layers: diff_ids.iter().map(|d| format!("{}/layer.tar", d.hex())).collect(),
    }];
    let manifest_json = canonical_json::to_vec(&manifest).expect("plain strings serialise");
    append(
        &mut tar,
        "manifest.json",
        Path::new("manifest.json"),
        &manifest_json[..],
        manifest_json.len() as u64,
        out,
    )?;
    append(
        &mut tar,
        &config_name,
        &image.blob(&image.config_digest),
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
        let dir = diff_id.hex();
        tar.append(&member(&dir, TarKind::Dir)).map_err(tar_err(out, &dir))?;
        append(&mut tar, &format!("{dir}/layer.tar"), &blob, open()?, len, out)?;
    }
    let buffered = tar.finish().map_err(tar_err(out, "the end of the archive"))?;
    buffered.into_inner().map_err(|e| io_err(out)(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_err(out))?;
    tmp.persist(out).map_err(|e| io_err(out)(e.error))?;
    Ok(())
}

/// A member with the archive's fixed metadata: owner 0:0, mtime 0, mode
/// 0644 (directories 0755).
fn member(name: &str, kind: TarKind) -> TarEntry {
    let mode = if kind == TarKind::Dir { 0o755 } else { 0o644 };
    TarEntry {
        path: name.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
    }
}

/// Appends `len` bytes of `data` (the contents of `source`) as `name`,
/// failing if `data` has more or fewer.
fn append<W: Write, R: Read>(
    tar: &mut TarWriter<W>,
    name: &str,
    source: &Path,
    data: R,
    len: u64,
    out: &Path,
) -> Result<(), ArchiveError> {
    let entry = member(
        name,
        TarKind::File {
            source: source.into(),
            size: len,
        },
    );
    tar.append_reader(&entry, data).map_err(tar_err(out, name))
}

fn tar_err<'a>(out: &'a Path, name: &'a str) -> impl FnOnce(TarError) -> ArchiveError + 'a {
    move |e| match e {
        TarError::Open { path, source } | TarError::Read { path, source } => ArchiveError::Io { path, source },
        TarError::Changed { expected, found, .. } => {
            let kind = if found == "more" {
                io::ErrorKind::InvalidData
            } else {
                io::ErrorKind::UnexpectedEof
            };
            ArchiveError::Io {
                path: out.into(),
                source: io::Error::new(kind, format!("{name}: expected {expected} bytes, read {found}")),
            }
        }
        TarError::Write { source, .. } | TarError::Finish { source } => ArchiveError::Io {
            path: out.into(),
            source,
        },
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
