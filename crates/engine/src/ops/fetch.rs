//! `farm fetch`: bring every artifact farm.lock names into the store,
//! verified while it streams. Present artifacts are never fetched again, so
//! a second run does no network I/O.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use farm_lockfiles::http::{Client, ClientOptions, Expected};
use farm_lockfiles::lock::{ArtifactKind, Unpack};
use farm_lockfiles::{Integrity, Lock};
use farm_project::endpoints;
use farm_project::Project;
use farm_store::{ArchiveFormat, Store, UnpackLimits};

use crate::reporter::{human_bytes, Task};
use crate::Context;

/// What `farm fetch` is asked to do.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Download nothing: only say what is missing.
    pub offline: bool,
    /// Parallel downloads (at least one runs).
    pub jobs: usize,
    /// Where to take an artifact its upstream no longer serves
    /// (spec/remote.md "Store substitution").
    pub remote: Option<crate::remote_cache::RemoteSettings>,
}

/// How `farm fetch` ended.
#[derive(Debug)]
pub enum FetchOutcome {
    /// Every artifact of the lock (at `lock`) was already in the store.
    AllPresent { lock: PathBuf, artifacts: usize },
    /// Offline: these artifacts of the lock are not in the store.
    Missing { artifacts: usize, missing: Vec<FetchJob> },
    /// The missing artifacts were fetched.
    Fetched { count: usize, bytes: u64 },
}

/// Entry point of `farm fetch`.
pub fn fetch(ctx: &Context, opts: &FetchOptions) -> Result<FetchOutcome> {
    let project = Project::load(&ctx.project_dir)?;
    let lock_path = project.lock_path();
    if !lock_path.exists() {
        bail!("{}: no lock file\nhint: run `farm lock` first", lock_path.display());
    }
    let lock = Lock::read(&lock_path)?;
    crate::lockcheck::refuse_invalid(&project, &lock)?;
    let stale = farm_project::inputs::stale_inputs(&lock, &farm_project::inputs::current_inputs(&project)?);
    if !stale.is_empty() {
        ctx.reporter.warn(&format!(
            "{} is stale ({}); fetching what it names. Run `farm lock` to update it.",
            lock_path.display(),
            stale.join(", ")
        ));
    }
    let store = Store::open(&ctx.farm_home)?;
    let all = jobs(&lock);
    let missing: Vec<FetchJob> = all
        .iter()
        .filter(|j| store.artifact(&j.integrity.to_string()).ok().flatten().is_none())
        .cloned()
        .collect();
    let present = all.len() - missing.len();

    if missing.is_empty() {
        return Ok(FetchOutcome::AllPresent {
            lock: lock_path,
            artifacts: all.len(),
        });
    }
    if opts.offline {
        return Ok(FetchOutcome::Missing {
            artifacts: all.len(),
            missing,
        });
    }
    ctx.reporter.info(&format!(
        "fetching {} artifacts ({} already in the store)",
        missing.len(),
        present
    ));
    let rt = tokio::runtime::Runtime::new()?;
    let remote = opts.remote.as_ref().map(|s| {
        Arc::new(crate::remote_fetch::Substitutes::new(
            s.config.clone(),
            ctx.reporter.clone(),
        ))
    });
    let (count, bytes) = rt.block_on(fetch_all_with(
        ctx,
        &project,
        missing,
        opts.jobs.max(1),
        ClientOptions::from_env(),
        remote,
    ))?;
    Ok(FetchOutcome::Fetched { count, bytes })
}

/// One thing to bring into the store.
#[derive(Debug, Clone)]
pub struct FetchJob {
    pub kind: ArtifactKind,
    pub label: String,
    pub source: Source,
    pub integrity: Integrity,
    /// The exact size the lock pins, when it does: the download stops as
    /// soon as the body passes it.
    pub size: Option<u64>,
    pub unpack: Unpack,
    pub strip: u32,
    pub store_name: String,
}

#[derive(Debug, Clone)]
pub enum Source {
    Url(String),
    /// A blob or manifest of a model in the configured registry.
    Registry {
        repository: String,
        digest: Integrity,
        manifest: bool,
    },
}

/// Every artifact of the lock, deduplicated by integrity.
pub fn jobs(lock: &Lock) -> Vec<FetchJob> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (kind, a) in lock.artifacts() {
        if !seen.insert(a.integrity.clone()) {
            continue;
        }
        out.push(FetchJob {
            kind,
            label: format!("{} {}", a.name, a.version),
            source: Source::Url(a.url.clone()),
            integrity: a.integrity.clone(),
            size: a.size,
            unpack: a.unpack,
            strip: a.strip,
            store_name: a.store_name(),
        });
    }
    for m in &lock.models {
        let blobs = std::iter::once((&m.manifest, true))
            .chain(std::iter::once((&m.config, false)))
            .chain(m.layers.iter().map(|l| (l, false)));
        for (blob, manifest) in blobs {
            if !seen.insert(blob.digest.clone()) {
                continue;
            }
            out.push(FetchJob {
                kind: ArtifactKind::Model,
                label: format!("{} {}", m.reference, short(&blob.digest)),
                source: Source::Registry {
                    repository: m.repository.clone(),
                    digest: blob.digest.clone(),
                    manifest,
                },
                integrity: blob.digest.clone(),
                size: Some(blob.size),
                unpack: Unpack::File,
                strip: 0,
                store_name: format!("model-{}", blob.digest.hex()),
            });
        }
    }
    out
}

fn short(i: &Integrity) -> String {
    format!("{}:{}", i.algorithm.name(), &i.hex()[..12])
}

/// Fetches `jobs` in parallel. Every job runs to its end even when one fails,
/// so a retry only has the failures left; the first error is returned.
pub(crate) async fn fetch_all(
    ctx: &Context,
    project: &Project,
    jobs: Vec<FetchJob>,
    parallel: usize,
    options: ClientOptions,
) -> Result<(usize, u64)> {
    fetch_all_with(ctx, project, jobs, parallel, options, None).await
}

/// [`fetch_all`], taking what upstream fails to serve from `remote`.
pub(crate) async fn fetch_all_with(
    ctx: &Context,
    project: &Project,
    jobs: Vec<FetchJob>,
    parallel: usize,
    options: ClientOptions,
    remote: Option<Arc<crate::remote_fetch::Substitutes>>,
) -> Result<(usize, u64)> {
    let client = Client::new(options);
    let mirrors = Arc::new(endpoints::mirrors(project));
    let registry = registry_for(project, &client, &jobs)?;
    let limits = unpack_limits(project);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(parallel));
    let done = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(ctx.reporter.counter("fetch", jobs.len() as u64));
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let (client, mirrors, registry, semaphore, remote) = (
            client.clone(),
            mirrors.clone(),
            registry.clone(),
            semaphore.clone(),
            remote.clone(),
        );
        let (done, bytes, counter) = (done.clone(), bytes.clone(), counter.clone());
        let reporter = ctx.reporter.clone();
        let home = ctx.farm_home.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            let task = reporter.task(&job.label);
            let sources = Sources {
                client: &client,
                mirrors: &mirrors,
                registry: registry.as_deref(),
                remote: remote.as_deref(),
            };
            let r = fetch_one(&sources, &home, &job, limits, &task).await;
            counter.inc();
            match r {
                Ok(size) => {
                    done.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(size, Ordering::Relaxed);
                    task.finish(&human_bytes(size));
                    Ok(())
                }
                Err(e) => {
                    task.abandon();
                    Err(e.context(format!("fetching {} ({})", job.label, job.integrity)))
                }
            }
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("fetch task panicked") {
            errors.push(e);
        }
    }
    if let Ok(c) = Arc::try_unwrap(counter) {
        c.finish();
    }
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    Ok((done.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed)))
}

/// farm.toml `[limits] unpack-size` / `unpack-ratio` for the archives a fetch unpacks.
pub fn unpack_limits(project: &Project) -> UnpackLimits {
    let limits = project.limits();
    UnpackLimits {
        max_size: limits.unpack_size,
        max_ratio: limits.unpack_ratio,
    }
}

/// The models registry (often `${FARM_OLLAMA_REGISTRY}`), needed only
/// when a model blob of `jobs` must be downloaded.
pub(crate) fn registry_for(
    project: &Project,
    client: &Client,
    jobs: &[FetchJob],
) -> Result<Option<Arc<farm_lockfiles::oci::RegistryClient>>> {
    if !jobs.iter().any(|j| matches!(j.source, Source::Registry { .. })) {
        return Ok(None);
    }
    let url = endpoints::models_registry(project)
        .context("the lock's models are not all in the store, so they must be downloaded")?;
    Ok(match url {
        Some(url) => Some(Arc::new(farm_lockfiles::oci::RegistryClient::new(client, &url, None)?)),
        None => None,
    })
}

/// Where a fetch takes artifacts from.
pub(crate) struct Sources<'a> {
    pub client: &'a Client,
    pub mirrors: &'a farm_lockfiles::mirror::Mirrors,
    pub registry: Option<&'a farm_lockfiles::oci::RegistryClient>,
    /// Asked when upstream fails.
    pub remote: Option<&'a crate::remote_fetch::Substitutes>,
}

async fn fetch_one(
    sources: &Sources<'_>,
    farm_home: &std::path::Path,
    job: &FetchJob,
    limits: UnpackLimits,
    task: &Task,
) -> Result<u64> {
    // Downloads land in the store's own staging area (same filesystem, locked
    // against gc) and only enter the store once verified.
    let staging = Store::open(farm_home)?.temp_dir()?;
    let dest = staging.path().join("download");
    if let Err(upstream) = download(sources, job, &dest, task).await {
        let _ = std::fs::remove_file(&dest);
        match sources.remote {
            Some(remote) => remote.substitute(job, &upstream, &dest, task).await?,
            None => return Err(upstream),
        }
    }
    let size = std::fs::metadata(&dest)?.len();
    let home = farm_home.to_path_buf();
    let job = job.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let store = Store::open(&home)?;
        let kind = job.kind.as_str();
        let entry = match job.unpack {
            Unpack::File => store.adopt_file(&dest, &job.store_name, kind)?,
            Unpack::Tar => store.add_archive(
                &dest,
                ArchiveFormat::Tar { strip: job.strip },
                limits,
                &job.store_name,
                kind,
            )?,
            Unpack::Deb => store.add_archive(&dest, ArchiveFormat::Deb, limits, &job.store_name, kind)?,
        };
        store.record_artifact(&job.integrity.to_string(), &entry)?;
        drop(staging);
        Ok(())
    })
    .await??;
    Ok(size)
}

/// Downloads `job` from upstream (its URL through the mirrors, or the
/// models registry) to `dest`, verified against the lock while it streams.
pub(crate) async fn download(sources: &Sources<'_>, job: &FetchJob, dest: &std::path::Path, task: &Task) -> Result<()> {
    let (client, mirrors, registry) = (sources.client, sources.mirrors, sources.registry);
    match &job.source {
        Source::Url(url) => {
            let url = mirrors.resolve(client, url).await?;
            let expected = Expected {
                integrity: Some(&job.integrity),
                size: job.size,
            };
            client
                .download_expected(&url, expected, dest, &|n, t| task.progress(n, t))
                .await?;
        }
        Source::Registry {
            repository,
            digest,
            manifest,
        } => {
            let registry = registry.context("the lock has models but farm.toml has no [models] registry")?;
            if *manifest {
                let fetched = registry
                    .get_manifest(
                        repository,
                        &digest.to_string(),
                        &farm_lockfiles::oci::MODEL_MANIFEST_TYPES,
                    )
                    .await?;
                let bytes = fetched.bytes;
                if !digest.matches(&bytes) {
                    bail!("manifest {digest} of {repository}: the registry served different bytes");
                }
                std::fs::write(dest, &bytes)?;
            } else {
                registry.get_blob_expected(repository, digest, job.size, dest).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const LOCK: &str = r#"
version = 1

[inputs]

[[npm]]
path = "node_modules/a"
name = "a"
version = "1.0.0"
url = "https://registry.invalid/a/-/a-1.0.0.tgz"
integrity = "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="

[[wheels]]
filename = "w-1.0-py3-none-any.whl"
name = "w"
version = "1.0"
url = "https://files.invalid/w-1.0-py3-none-any.whl"
integrity = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
size = 4321
"#;

    /// Every lock entry's `size` reaches its fetch job (none for npm, whose
    /// lockfiles carry no size), so the download can stop at it.
    #[test]
    fn jobs_carry_the_locked_sizes() {
        let lock = Lock::from_toml("farm.lock", LOCK).unwrap();
        let jobs = jobs(&lock);
        let size_of = |name: &str| jobs.iter().find(|j| j.label.starts_with(name)).unwrap().size;
        assert_eq!(size_of("w "), Some(4321));
        assert_eq!(size_of("a "), None);
    }

    /// A mirror that streams an endless body for a URL artifact whose lock
    /// pins a size (a wheel, a .deb): the fetch stops right after that size,
    /// says so, and leaves nothing in the store or its tmp/.
    #[test]
    fn an_endless_url_artifact_stops_at_its_locked_size_and_leaves_nothing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/w-1.0-py3-none-any.whl", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![0u8; 64 << 10];
            let mut sent = 0u64;
            while sent < 1 << 30 {
                match conn.write(&chunk) {
                    Ok(n) if n > 0 => sent += n as u64,
                    _ => break,
                }
            }
            sent
        });
        let home = tempfile::tempdir().unwrap();
        let job = FetchJob {
            kind: ArtifactKind::Wheel,
            label: "w 1.0".into(),
            source: Source::Url(url),
            integrity: Integrity::parse("sha256:0000000000000000000000000000000000000000000000000000000000000001")
                .unwrap(),
            size: Some(4321),
            unpack: Unpack::File,
            strip: 0,
            store_name: "w-1.0-py3-none-any.whl".into(),
        };
        let client = Client::new(ClientOptions {
            attempts: 1,
            ..ClientOptions::default()
        });
        let reporter = crate::reporter::Reporter::new(true);
        let task = reporter.task(&job.label);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let err = rt
            .block_on(fetch_one(
                &Sources {
                    client: &client,
                    mirrors: &farm_lockfiles::mirror::Mirrors::default(),
                    registry: None,
                    remote: None,
                },
                home.path(),
                &job,
                UnpackLimits::default(),
                &task,
            ))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("w-1.0-py3-none-any.whl")
                && msg.contains("more than 4321 bytes")
                && msg.contains("stopped reading at"),
            "{msg}"
        );
        assert!(server.join().unwrap() < 64 << 20, "the client hung up early");
        let store = Store::open(home.path()).unwrap();
        assert_eq!(store.status().unwrap().entries, 0);
        assert_eq!(
            std::fs::read_dir(store.tmp_dir()).unwrap().count(),
            0,
            "nothing left in tmp/"
        );
    }
}
