//! Uploading a layout's image to an OCI registry through farm's registry
//! client: blobs the registry already has are skipped, blobs another
//! repository has are mounted, the rest are uploaded (in chunks when
//! large), then the manifest is put under each tag.

use std::path::{Path, PathBuf};

use farm_lockfiles::integrity::Integrity;
use farm_lockfiles::oci::{OciError, RegistryClient};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::layout::{valid_repository, valid_tag, LayoutImage};
use crate::ImageError;

/// How to push; the defaults suit any registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOptions {
    /// A repository on the same registry to mount blobs from (cross-repository
    /// blob mount) before uploading them.
    pub mount_from: Option<String>,
    /// Blobs larger than this go up in `PATCH` chunks of this size; smaller
    /// ones in one `PUT`.
    pub chunk_size: u64,
    /// Blobs uploaded at once.
    pub concurrency: usize,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            mount_from: None,
            chunk_size: 32 << 20,
            concurrency: 3,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    pub pushed_blobs: usize,
    pub skipped_blobs: usize,
    pub mounted_blobs: usize,
    pub manifest_digest: Integrity,
    /// `host/repo@sha256:…`, then `host/repo:tag` for each tag.
    pub references: Vec<String>,
    /// The artifacts referring to the image that were pushed after it
    /// ([`crate::referrers::push_referrers`]); `None` when not asked to.
    pub referrers: Option<crate::referrers::ReferrersReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("pushing {what} to {target}: {source}")]
    Registry {
        what: String,
        target: String,
        source: Box<OciError>,
    },
    #[error("{field} {value:?}: {message}")]
    BadName {
        field: &'static str,
        value: String,
        message: &'static str,
    },
    #[error("{target}: the registry stored the manifest as {found}, but the layout's is {expected}")]
    DigestMismatch {
        target: String,
        expected: String,
        found: String,
    },
}

enum Outcome {
    Pushed,
    Skipped,
    Mounted,
}

/// Pushes the image in `layout_dir` (its only one, as [`crate::build_image`]
/// writes; in a layout with several, the one whose ref name is `tags[0]`)
/// to `repository` on `client`'s registry and tags it with each of `tags`
/// (with none, the manifest is put by digest only).
pub async fn push(
    layout_dir: &Path,
    client: &RegistryClient,
    repository: &str,
    tags: &[String],
    options: &PushOptions,
) -> Result<PushReport, ImageError> {
    if !valid_repository(repository) {
        return Err(PushError::BadName {
            field: "repository",
            value: repository.into(),
            message: "expected lowercase letters and digits separated by `.`, `_`, `-` or `/`",
        }
        .into());
    }
    if let Some(tag) = tags.iter().find(|t| !valid_tag(t)) {
        return Err(PushError::BadName {
            field: "tag",
            value: tag.clone(),
            message: "expected up to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`",
        }
        .into());
    }
    // A layout from build_image holds one image; with several, the first tag picks it.
    let image = LayoutImage::open(layout_dir, tags.first().map(String::as_str))?;
    let target = format!("{}/{repository}", client.host());

    let mut blobs: Vec<(Integrity, u64, PathBuf, String)> = vec![(
        image.config_digest.clone(),
        image.config_bytes.len() as u64,
        image.blob(&image.config_digest),
        format!("config {}", image.config_digest),
    )];
    for (digest, size, _) in &image.layers {
        if !blobs.iter().any(|(d, ..)| d == digest) {
            blobs.push((digest.clone(), *size, image.blob(digest), format!("layer {digest}")));
        }
    }

    let outcomes: Vec<Result<Outcome, PushError>> = stream::iter(blobs)
        .map(|(digest, size, path, what)| {
            let target = &target;
            async move {
                let fail = |source| PushError::Registry {
                    what: what.clone(),
                    target: target.clone(),
                    source: Box::new(source),
                };
                if client.blob_exists(repository, &digest).await.map_err(fail)?.is_some() {
                    return Ok(Outcome::Skipped);
                }
                if let Some(from) = options.mount_from.as_deref() {
                    if client.mount_blob(repository, &digest, from).await.map_err(fail)? {
                        return Ok(Outcome::Mounted);
                    }
                }
                let chunk = (options.chunk_size > 0 && size > options.chunk_size).then_some(options.chunk_size);
                let sent = client
                    .push_blob(repository, &digest, &path, chunk)
                    .await
                    .map_err(fail)?;
                Ok(if sent { Outcome::Pushed } else { Outcome::Skipped })
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    let (mut pushed_blobs, mut skipped_blobs, mut mounted_blobs) = (0, 0, 0);
    for outcome in outcomes {
        match outcome? {
            Outcome::Pushed => pushed_blobs += 1,
            Outcome::Skipped => skipped_blobs += 1,
            Outcome::Mounted => mounted_blobs += 1,
        }
    }

    let digest_ref = image.manifest_digest.to_string();
    let references_to_put: Vec<&str> = if tags.is_empty() {
        vec![digest_ref.as_str()]
    } else {
        tags.iter().map(String::as_str).collect()
    };
    for reference in references_to_put {
        let stored = client
            .put_manifest(repository, reference, &image.manifest_bytes, &image.manifest_media_type)
            .await
            .map_err(|source| PushError::Registry {
                what: format!("manifest {} as {reference}", image.manifest_digest),
                target: target.clone(),
                source: Box::new(source),
            })?;
        if stored != image.manifest_digest {
            return Err(PushError::DigestMismatch {
                target: format!("{target}:{reference}"),
                expected: image.manifest_digest.to_string(),
                found: stored.to_string(),
            }
            .into());
        }
    }
    let mut references = vec![format!("{target}@{}", image.manifest_digest)];
    references.extend(tags.iter().map(|t| format!("{target}:{t}")));
    Ok(PushReport {
        pushed_blobs,
        skipped_blobs,
        mounted_blobs,
        manifest_digest: image.manifest_digest,
        references,
        referrers: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use farm_lockfiles::http::{Client, ClientOptions};
    use std::io::{Read, Write};

    /// A registry that refuses every request with `status`.
    fn refusing_registry(status: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        format!("http://ci-bot:hunter2@{addr}")
    }

    #[tokio::test]
    async fn push_errors_never_show_the_password_of_the_registry_url() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        crate::build_image(&crate::ImageSpec::new("app", "1", 0), &layout, None).unwrap();
        let http = Client::new(ClientOptions {
            attempts: 1,
            ..Default::default()
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for registry in [
            refusing_registry("401 Unauthorized"),
            refusing_registry("500 Internal Server Error"),
            format!("http://ci-bot:hunter2@{closed}"),
        ] {
            let client = RegistryClient::anonymous(&http, &registry).unwrap();
            let err = push(&layout, &client, "team/app", &["1".into()], &PushOptions::default())
                .await
                .unwrap_err();
            for shown in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
                assert!(!shown.contains("hunter2"), "{shown}");
            }
            assert!(
                err.to_string().contains("ci-bot:***@"),
                "the error still names the URL: {err}"
            );
        }
    }
}
