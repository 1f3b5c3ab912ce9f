//! Handing a docker archive to a Docker or Podman engine through its
//! Docker-compatible API (bollard), so `farm image load` needs no CLI.

use std::path::{Path, PathBuf};

use bollard::query_parameters::ImportImageOptions;
use bollard::Docker;
use farm_lockfiles::redact::{redact_text, RedactedUrl};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::archive::archive_repo_tags;
use crate::ImageError;

/// An image the engine now has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadedImage {
    /// The name it was loaded under (from the archive's `RepoTags`), or its
    /// ID when the archive names none.
    pub reference: String,
    /// The engine's image ID (`sha256:…`, the config digest).
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("container engine at {host}: {message}; hint: start Docker, or run `podman system service --time 0 unix:///PATH/podman.sock` and pass that socket (or set DOCKER_HOST=unix:///PATH/podman.sock)")]
    Connect { host: RedactedUrl, message: String },
    #[error("container engine at {host}: loading {archive}: {message}")]
    Load {
        host: RedactedUrl,
        archive: PathBuf,
        message: String,
    },
    #[error("container engine at {host}: loaded {archive}, but inspecting {reference} failed: {message}")]
    Inspect {
        host: RedactedUrl,
        archive: PathBuf,
        reference: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Loads the docker archive at `archive` into the engine at `docker_host`
/// (`unix:///…`, `tcp://…`), or, when `None`, the one `DOCKER_HOST` names
/// or the default local socket. Returns each loaded image with its ID.
pub async fn load_into_engine(archive: &Path, docker_host: Option<&str>) -> Result<Vec<LoadedImage>, ImageError> {
    let archive_path = archive.to_path_buf();
    let tags = tokio::task::spawn_blocking(move || archive_repo_tags(&archive_path))
        .await
        .expect("reading the archive's manifest does not panic")?;

    let env_host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
    let host = docker_host
        .map(str::to_string)
        .or(env_host)
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    let connect_err = |message: String| EngineError::Connect {
        host: (&host).into(),
        message,
    };
    let docker = Docker::connect_with_host(&host).map_err(|e| connect_err(redact_text(&e.to_string()).into_owned()))?;
    let docker = docker.negotiate_version().await.map_err(|e| {
        connect_err(format!(
            "no answer to the version handshake: {}",
            redact_text(&e.to_string())
        ))
    })?;

    let file = tokio::fs::File::open(archive).await.map_err(|source| EngineError::Io {
        path: archive.into(),
        source,
    })?;
    let body = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let load_err = |message: String| EngineError::Load {
        host: (&host).into(),
        archive: archive.into(),
        message,
    };
    let mut progress = docker.import_image_stream(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        body,
        None,
    );
    let mut loaded_ids: Vec<String> = Vec::new();
    while let Some(message) = progress.next().await {
        let message = message.map_err(|e| load_err(redact_text(&e.to_string()).into_owned()))?;
        if let Some(id) = message
            .stream
            .as_deref()
            .and_then(|s| s.trim().strip_prefix("Loaded image ID: "))
        {
            loaded_ids.push(id.trim().to_string());
        }
    }

    let mut loaded = Vec::new();
    for reference in &tags {
        let inspect = docker
            .inspect_image(reference)
            .await
            .map_err(|e| EngineError::Inspect {
                host: (&host).into(),
                archive: archive.into(),
                reference: reference.clone(),
                message: redact_text(&e.to_string()).into_owned(),
            })?;
        let id = inspect.id.ok_or_else(|| EngineError::Inspect {
            host: (&host).into(),
            archive: archive.into(),
            reference: reference.clone(),
            message: "the engine reported no image ID".into(),
        })?;
        loaded.push(LoadedImage {
            reference: reference.clone(),
            id,
        });
    }
    if tags.is_empty() {
        loaded.extend(loaded_ids.into_iter().map(|id| LoadedImage {
            reference: id.clone(),
            id,
        }));
    }
    if loaded.is_empty() {
        return Err(load_err("the archive names no image and the engine reported none loaded".into()).into());
    }
    Ok(loaded)
}
