//! Store substitution (spec/remote.md): the archives farm.lock names, kept
//! in a REAPI server's CAS so a fetch still works when their upstream no
//! longer serves them. The store keeps archives unpacked, so `farm cache
//! push` downloads each one again (verified as `farm fetch` does) and
//! uploads the bytes; `farm fetch --remote-cache` takes from there what
//! upstream fails to give, after checking it against the lock, never the
//! server.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use farm_lockfiles::http::{Client as HttpClient, ClientOptions};
use farm_lockfiles::Integrity;
use farm_project::{endpoints, Project};
use farm_remote::proto::{self, command, platform};
use farm_remote::{digest_string, encode, BlobData, Client, Digest, RemoteConfig};
use farm_store::Store;
use sha2::Digest as _;

use crate::ops::fetch::{download, registry_for, FetchJob, Sources};
use crate::reporter::{human_bytes, Reporter, Task};
use crate::Context;

/// Names the mapping of a lock entry to an Action; bumped when it changes.
pub const FETCH_MAPPING: &str = "farm-fetch-v1";
/// The one output file of a fetch action: the archive's bytes.
const OUTPUT: &str = "artifact";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The fetch action of the artifact with `integrity`: its digest (the
/// ActionCache key) and the Action and Command blobs. Only the integrity
/// names the artifact, so mirrors and moved URLs share one entry.
pub fn fetch_action(integrity: &Integrity) -> (Digest, Vec<(Digest, Vec<u8>)>) {
    let platform = proto::Platform {
        properties: vec![platform::Property {
            name: "farm-mapping".into(),
            value: FETCH_MAPPING.into(),
        }],
    };
    // Command.platform is deprecated for Action.platform; both are set, as
    // servers of either REAPI version read one.
    #[allow(deprecated)]
    let command = proto::Command {
        arguments: vec![FETCH_MAPPING.into(), integrity.to_string()],
        environment_variables: vec![command::EnvironmentVariable {
            name: "FARM_INTEGRITY".into(),
            value: integrity.to_string(),
        }],
        output_paths: vec![OUTPUT.into()],
        platform: Some(platform.clone()),
        ..Default::default()
    };
    let (command_digest, command_bytes) = encode(&command);
    let (root, root_bytes) = encode(&proto::Directory::default());
    let action = proto::Action {
        command_digest: Some(command_digest.clone()),
        input_root_digest: Some(root.clone()),
        platform: Some(platform),
        ..Default::default()
    };
    let (action_digest, action_bytes) = encode(&action);
    // The empty root Directory is the empty blob, in every CAS already.
    debug_assert!(root_bytes.is_empty());
    (
        action_digest.clone(),
        vec![(action_digest, action_bytes), (command_digest, command_bytes)],
    )
}

/// The archive blob a fetch action's result names, when it is well formed.
fn output_blob(result: &proto::ActionResult) -> Option<Digest> {
    match result.output_files.as_slice() {
        [f] if f.path == OUTPUT && result.exit_code == 0 && result.output_directories.is_empty() => f.digest.clone(),
        _ => None,
    }
}

async fn connect(config: &RemoteConfig) -> Result<Client> {
    Ok(Client::connect(config, CONNECT_TIMEOUT, CALL_TIMEOUT).await?)
}

/// The remote cache has no entry for an artifact (its fetch action).
#[derive(Debug, thiserror::Error)]
#[error("it does not have this artifact (no {FETCH_MAPPING} entry for action {0})")]
struct NoCopy(String);

/// `farm fetch`'s remote cache: connected the first time upstream fails.
pub struct Substitutes {
    config: RemoteConfig,
    reporter: Reporter,
    client: tokio::sync::OnceCell<std::result::Result<Client, String>>,
}

impl Substitutes {
    pub fn new(config: RemoteConfig, reporter: Reporter) -> Substitutes {
        Substitutes {
            config,
            reporter,
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Client> {
        let c = self
            .client
            .get_or_init(|| async { connect(&self.config).await.map_err(|e| format!("{e:#}")) })
            .await;
        c.as_ref().map_err(|e| anyhow!("{e}"))
    }

    /// Writes `job`'s archive to `dest` from the remote cache after its
    /// upstream download failed with `upstream`. The blob is checked
    /// against the lock's integrity before a byte is written; a failure
    /// gives the upstream error and why the cache did not help (the
    /// caller's context names the artifact) and leaves no `dest`.
    pub async fn substitute(&self, job: &FetchJob, upstream: &anyhow::Error, dest: &Path, task: &Task) -> Result<()> {
        let shown = farm_lockfiles::redact::redact_url(&self.config.url);
        match self.read(job, dest, task).await {
            Ok(size) => {
                self.reporter.warn(&format!(
                    "{} ({}): upstream failed ({upstream:#}); took it from the remote cache at {shown} ({}, verified against farm.lock)",
                    job.label,
                    job.integrity,
                    human_bytes(size)
                ));
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(dest);
                let hint = if e.is::<NoCopy>() {
                    format!("while upstream still serves it, `farm cache push --remote-cache {shown}` keeps a copy")
                } else {
                    "the remote cache's copy cannot be used; push it again from a trusted machine while upstream serves it"
                        .to_string()
                };
                // The caller's context names the artifact.
                Err(anyhow!(
                    "neither upstream nor the remote cache gave it:\n  upstream: {upstream:#}\n  remote cache at {shown}: {e:#}\nhint: {hint}"
                ))
            }
        }
    }

    async fn read(&self, job: &FetchJob, dest: &Path, task: &Task) -> Result<u64> {
        let client = self.client().await?;
        let (action, _) = fetch_action(&job.integrity);
        let result = client
            .get_action_result(&action)
            .await?
            .ok_or_else(|| anyhow::Error::new(NoCopy(digest_string(&action))))?;
        let blob = output_blob(&result).ok_or_else(|| {
            anyhow!(
                "its entry for action {} is not a {FETCH_MAPPING} result (expected one output file `{OUTPUT}`)",
                digest_string(&action)
            )
        })?;
        let limit = job.size.unwrap_or(ClientOptions::from_env().max_download_size);
        let size = u64::try_from(blob.size_bytes).unwrap_or(u64::MAX);
        if job.size.is_some_and(|n| n != size) || size > limit {
            bail!(
                "its blob {} has {size} bytes, but farm.lock pins {}; refused",
                digest_string(&blob),
                job.size
                    .map_or(format!("at most {limit} bytes"), |n| format!("{n} bytes"))
            );
        }
        task.progress(0, Some(size));
        let bytes = client.read_blob(&blob).await?;
        task.progress(bytes.len() as u64, Some(size));
        // The server's digest only says the blob is intact; the lock says
        // whether it is the artifact.
        let mut hasher = job.integrity.hasher();
        hasher.update(&bytes);
        let actual = hasher.finish();
        if actual != job.integrity {
            bail!(
                "its blob {} is not the locked artifact: expected {}, found {}; refused, nothing was stored",
                digest_string(&blob),
                job.integrity,
                actual
            );
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        f.write_all(&bytes)
            .with_context(|| format!("writing {}", dest.display()))?;
        Ok(bytes.len() as u64)
    }
}

/// What `farm cache push` did.
#[derive(Debug, Default)]
pub struct PushReport {
    /// Artifacts downloaded from upstream and uploaded.
    pub uploaded: usize,
    /// Artifacts the remote cache already had.
    pub present: usize,
    /// Bytes of the archives uploaded.
    pub bytes: u64,
}

/// `farm cache push`: every artifact of `jobs` into the remote cache at
/// `config`, unless it has it already. Every artifact is tried; the first
/// error is returned after all ran.
pub async fn push(
    ctx: &Context,
    project: &Project,
    jobs: Vec<FetchJob>,
    config: &RemoteConfig,
    parallel: usize,
) -> Result<PushReport> {
    let remote = connect(config).await?;
    let caps = remote.capabilities().await?.cache_capabilities.unwrap_or_default();
    if !caps.action_cache_update_capabilities.is_some_and(|u| u.update_enabled) {
        bail!(
            "remote cache at {}: the server does not let clients write its action cache, so nothing can be pushed\nhint: push from a client the server lets update it (CI)",
            remote.url()
        );
    }
    let http = HttpClient::new(ClientOptions::from_env());
    let mirrors = Arc::new(endpoints::mirrors(project));
    let registry = registry_for(project, &http, &jobs)?;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let (uploaded, present, bytes) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let counter = Arc::new(ctx.reporter.counter("push", jobs.len() as u64));
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let (remote, http, mirrors, registry, semaphore) = (
            remote.clone(),
            http.clone(),
            mirrors.clone(),
            registry.clone(),
            semaphore.clone(),
        );
        let (uploaded, present, bytes, counter) = (uploaded.clone(), present.clone(), bytes.clone(), counter.clone());
        let reporter = ctx.reporter.clone();
        let home = ctx.farm_home.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            let task = reporter.task(&job.label);
            let sources = Sources {
                client: &http,
                mirrors: &mirrors,
                registry: registry.as_deref(),
                remote: None,
            };
            let r = push_one(&remote, &sources, &home, &job, &task).await;
            counter.inc();
            match r {
                Ok(None) => {
                    present.fetch_add(1, Ordering::Relaxed);
                    task.finish("already in the remote cache");
                    Ok(())
                }
                Ok(Some(sent)) => {
                    uploaded.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(sent, Ordering::Relaxed);
                    task.finish(&format!("uploaded {}", human_bytes(sent)));
                    Ok(())
                }
                Err(e) => {
                    task.abandon();
                    Err(e.context(format!("pushing {} ({})", job.label, job.integrity)))
                }
            }
        });
    }
    let mut errors = vec![];
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("push task panicked") {
            errors.push(e);
        }
    }
    if let Ok(c) = Arc::try_unwrap(counter) {
        c.finish();
    }
    let report = PushReport {
        uploaded: uploaded.load(Ordering::Relaxed),
        present: present.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
    };
    if let Some(first) = errors.into_iter().next() {
        let more = format!(
            "{} uploaded, {} already there before this failure",
            report.uploaded, report.present
        );
        return Err(first.context(more));
    }
    Ok(report)
}

/// One artifact: None when the cache has it; else downloaded (verified
/// against the lock), uploaded and recorded, with the bytes sent.
async fn push_one(
    remote: &Client,
    sources: &Sources<'_>,
    home: &Path,
    job: &FetchJob,
    task: &Task,
) -> Result<Option<u64>> {
    let (action, action_blobs) = fetch_action(&job.integrity);
    if let Some(blob) = remote.get_action_result(&action).await?.as_ref().and_then(output_blob) {
        if remote.find_missing(std::slice::from_ref(&blob)).await?.is_empty() {
            return Ok(None);
        }
    }
    let staging = Store::open(home)?.temp_dir()?;
    let dest = staging.path().join("download");
    download(sources, job, &dest, task).await?;
    let path = dest.clone();
    let blob = tokio::task::spawn_blocking(move || file_digest(&path)).await??;
    let mut blobs: Vec<(Digest, BlobData)> = action_blobs.into_iter().map(|(d, b)| (d, BlobData::Bytes(b))).collect();
    let size = blob.size_bytes as u64;
    blobs.push((blob.clone(), BlobData::File(dest)));
    remote.upload(blobs).await?;
    let result = proto::ActionResult {
        output_files: vec![proto::OutputFile {
            path: OUTPUT.into(),
            digest: Some(blob),
            is_executable: false,
            ..Default::default()
        }],
        exit_code: 0,
        execution_metadata: Some(proto::ExecutedActionMetadata {
            worker: format!("farm {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }),
        ..Default::default()
    };
    remote.update_action_result(&action, result).await?;
    drop(staging);
    Ok(Some(size))
}

/// The REAPI digest of a file, read in chunks.
fn file_digest(path: &Path) -> Result<Digest> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let n = std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(Digest {
        hash: hex::encode(h.finalize()),
        size_bytes: n as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use farm_remote::digest_of;

    /// The ActionCache key depends on the integrity alone and differs
    /// between artifacts; a result is used only when it names exactly one
    /// output file `artifact`.
    #[test]
    fn fetch_actions_are_keyed_by_integrity_and_results_are_checked() {
        let a = Integrity::parse("sha256:0000000000000000000000000000000000000000000000000000000000000001").unwrap();
        let b = Integrity::parse("sha256:0000000000000000000000000000000000000000000000000000000000000002").unwrap();
        assert_eq!(fetch_action(&a).0, fetch_action(&a).0);
        assert_ne!(fetch_action(&a).0, fetch_action(&b).0);
        let file = |path: &str| proto::OutputFile {
            path: path.into(),
            digest: Some(digest_of(b"x")),
            ..Default::default()
        };
        let good = proto::ActionResult {
            output_files: vec![file(OUTPUT)],
            ..Default::default()
        };
        assert_eq!(output_blob(&good), Some(digest_of(b"x")));
        for bad in [
            proto::ActionResult {
                output_files: vec![file("other")],
                ..Default::default()
            },
            proto::ActionResult {
                output_files: vec![file(OUTPUT), file(OUTPUT)],
                ..Default::default()
            },
            proto::ActionResult {
                output_files: vec![file(OUTPUT)],
                exit_code: 1,
                ..Default::default()
            },
        ] {
            assert_eq!(output_blob(&bad), None, "{bad:?}");
        }
    }
}
