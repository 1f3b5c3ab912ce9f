//! The remote cache: a step as a REAPI `Action` (spec/remote.md), looked
//! up in a Remote Execution API server's ActionCache before the step runs
//! and written there (outputs to the CAS, then the ActionResult) after it
//! ran here. A hit is checked blob by blob and the output tree recomputed
//! from the files written: a result that fails is reported, ignored and
//! the step built here. A server that cannot be reached never fails a
//! build: farm says so once and builds locally.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use farm_remote::proto::{self, command, platform, Directory, DirectoryNode, FileNode};
use farm_remote::tree::{self, MerkleTree};
use farm_remote::{digest_string, encode, BlobData, Client, Digest, RemoteConfig};
use farm_store::{Store, StoreEntry};

use crate::build::BuildEnv;
use crate::reporter::Reporter;
use crate::step::{sees_secrets, Step, StepAction, StepKey, StepOutputs};
use crate::{executor, scripts};

/// Bumped when the mapping of a step to an Action changes (spec/remote.md).
const MAPPING_VERSION: &str = "farm-reapi-v2";
/// How long connecting may take before the server counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// `--remote-cache` / `--remote-executor` and their options, resolved
/// from the command line, FARM_REMOTE_CACHE / FARM_REMOTE_EXECUTOR and
/// farm.toml's `[remote]`.
#[derive(Debug, Clone, Default)]
pub struct RemoteSettings {
    pub config: RemoteConfig,
    /// Look up results but never write any (`--remote-cache-read-only`).
    pub read_only: bool,
    /// Send hermetic steps to the server's Execution service (`--remote-executor`).
    pub execute: bool,
}

/// The token's variable when `[remote] token-env` names none.
pub const DEFAULT_TOKEN_ENV: &str = "FARM_REMOTE_TOKEN";

impl RemoteSettings {
    /// The remote cache of a build: `url` (`--remote-cache`, which also
    /// reads FARM_REMOTE_CACHE) over farm.toml's `[remote] cache`, else the
    /// executor's server; None when nothing names one. `executor`
    /// (`--remote-executor`, FARM_REMOTE_EXECUTOR) over `[remote] executor`
    /// sends steps there too: farm talks to one server, so a cache and an
    /// executor that differ are an error. Options not given on the command
    /// line come from `[remote]`; the token from the environment only.
    pub fn resolve(
        url: Option<&str>,
        executor: Option<&str>,
        instance: Option<&str>,
        read_only: bool,
        project: &farm_project::Project,
    ) -> Result<Option<RemoteSettings>> {
        let section = project.config.remote.clone().unwrap_or_default();
        let executor = executor.filter(|u| !u.is_empty()).or(section.executor.as_deref());
        let cache = url.filter(|u| !u.is_empty()).or(section.cache.as_deref());
        let url = match (cache, executor) {
            (Some(c), Some(e)) if c != e => anyhow::bail!(
                "the remote cache ({}) and the remote executor ({}) differ; farm uses one server for both\nhint: give only --remote-executor: its server is the cache too",
                farm_lockfiles::redact::redact_url(c),
                farm_lockfiles::redact::redact_url(e)
            ),
            (Some(u), _) | (None, Some(u)) => u,
            (None, None) => {
                if read_only || instance.is_some() {
                    anyhow::bail!(
                        "--remote-cache-read-only and --remote-instance need a remote cache\nhint: add --remote-cache grpc://HOST:PORT, set FARM_REMOTE_CACHE or [remote] cache in farm.toml"
                    );
                }
                return Ok(None);
            }
        };
        let token_env = section.token_env.as_deref().unwrap_or(DEFAULT_TOKEN_ENV);
        let token = match std::env::var(token_env) {
            Ok(t) if !t.is_empty() => Some(t),
            Ok(_) | Err(std::env::VarError::NotPresent) => None,
            Err(_) => anyhow::bail!("environment variable {token_env} (the remote cache token) is not UTF-8"),
        };
        let path = |p: &Option<String>| p.as_ref().map(|p| project.root.join(p));
        Ok(Some(RemoteSettings {
            config: RemoteConfig {
                url: url.to_string(),
                instance: instance.or(section.instance.as_deref()).unwrap_or("").to_string(),
                token,
                ca_cert: path(&section.ca_cert),
                client_cert: path(&section.client_cert),
                client_key: path(&section.client_key),
            },
            read_only: read_only || section.read_only,
            execute: executor.is_some(),
        }))
    }
}

/// A connected remote cache for one build.
pub struct RemoteCache {
    client: Client,
    rt: tokio::runtime::Runtime,
    read_only: bool,
    /// Hermetic steps go to the server's Execution service.
    execute: bool,
    reporter: Reporter,
    /// Set after the server stopped answering: the rest of the build is local.
    down: AtomicBool,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Steps the remote executor ran.
    pub executed: AtomicU64,
}

/// Whether an error means the server is not there (as opposed to a bad
/// answer from a server that is).
fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<farm_remote::Error>(),
            Some(farm_remote::Error::Unreachable { .. })
        )
    })
}

impl RemoteCache {
    /// Connects and asks the server for its capabilities. A server that
    /// cannot be reached gives a warning and `None` (the build is local);
    /// a malformed address, refused credentials or a server without a
    /// SHA-256 CAS are errors.
    pub fn connect(settings: &RemoteSettings, reporter: &Reporter) -> Result<Option<RemoteCache>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the remote cache's runtime")?;
        let client = rt.block_on(async {
            let c = Client::connect(&settings.config, CONNECT_TIMEOUT, CALL_TIMEOUT).await?;
            let caps = c.capabilities().await?;
            Ok::<_, farm_remote::Error>((c, caps))
        });
        let (client, caps) = match client {
            Ok(c) => c,
            Err(e @ farm_remote::Error::Unreachable { .. }) => {
                reporter.warn(&format!("{e}\nremote cache: not used; every step is built here"));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let cache = caps.cache_capabilities.unwrap_or_default();
        let sha256 = proto::digest_function::Value::Sha256 as i32;
        if !cache.digest_functions.is_empty() && !cache.digest_functions.contains(&sha256) {
            anyhow::bail!(
                "remote cache at {}: the server's CAS does not take SHA-256 digests (it offers {:?})\nhint: farm's actions are SHA-256; configure the instance for it",
                client.url(),
                cache.digest_functions
            );
        }
        let updates = cache.action_cache_update_capabilities.is_some_and(|u| u.update_enabled);
        let read_only = settings.read_only || !updates;
        if !settings.read_only && !updates {
            reporter.warn(&format!(
                "remote cache at {}: the server does not let clients write its action cache; using it read-only",
                client.url()
            ));
        }
        if settings.execute {
            let exec = caps.execution_capabilities.unwrap_or_default();
            if !exec.exec_enabled {
                anyhow::bail!(
                    "remote executor at {}: the server has no Execution service for instance {:?}\nhint: use it with --remote-cache only, or name an instance that executes",
                    client.url(),
                    settings.config.instance
                );
            }
            reporter.info(&format!(
                "remote executor: {} (hermetic steps run there; its cache is used too{})",
                client.url(),
                if read_only { ", read-only" } else { "" }
            ));
        } else {
            reporter.info(&format!(
                "remote cache: {}{}",
                client.url(),
                if read_only { " (read-only)" } else { "" }
            ));
        }
        Ok(Some(RemoteCache {
            client,
            rt,
            read_only,
            execute: settings.execute,
            reporter: reporter.clone(),
            down: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            executed: AtomicU64::new(0),
        }))
    }

    fn usable(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// A failure of the remote side, reported; an unreachable server turns
    /// the cache off for the rest of the build.
    fn report(&self, step: &Step, what: &str, e: &anyhow::Error) {
        if is_unreachable(e) {
            if !self.down.swap(true, Ordering::Relaxed) {
                self.reporter.warn(&format!(
                    "{e:#}\nremote cache: the server stopped answering; the rest of the build is local"
                ));
            }
            return;
        }
        self.reporter
            .warn(&format!("remote cache: {what} for step {}: {e:#}", step.id));
    }

    /// The step's output from the remote cache, in the store and recorded
    /// in the local action cache; None on a miss, an unusable server or a
    /// result that fails verification (reported).
    pub fn fetch(
        &self,
        store: &Store,
        step: &Step,
        key: &StepKey,
        env: &BuildEnv,
        deps: &StepOutputs,
        log: &Path,
    ) -> Option<(StoreEntry, Digest)> {
        if !self.usable() {
            return None;
        }
        let action = match step_action(store, step, key, env, deps) {
            Ok(a) => a,
            Err(e) => {
                self.report(step, "mapping the step to an action", &e);
                return None;
            }
        };
        let result = match self.rt.block_on(self.client.get_action_result(&action.digest)) {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(e) => {
                self.report(step, "looking up the action", &e.into());
                return None;
            }
        };
        match self.materialize(store, step, &result, log) {
            Ok(entry) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some((entry, action.digest))
            }
            Err(e) if is_unreachable(&e) => {
                self.report(step, "fetching outputs", &e);
                None
            }
            Err(e) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.reporter.warn(&format!(
                    "remote cache: the result of step {} (action {}) failed verification and is ignored: {e:#}\nthe step is built here{}",
                    step.id,
                    digest_string(&action.digest),
                    if self.read_only { "" } else { " and its result replaces the bad one" }
                ));
                None
            }
        }
    }

    /// Checks `result` and writes its output into a new store entry.
    fn materialize(&self, store: &Store, step: &Step, result: &proto::ActionResult, log: &Path) -> Result<StoreEntry> {
        if result.exit_code != 0 {
            anyhow::bail!("it records exit code {}", result.exit_code);
        }
        let [out] = result.output_directories.as_slice() else {
            anyhow::bail!(
                "it has {} output directories, farm writes exactly one (\"out\")",
                result.output_directories.len()
            );
        };
        if out.path != "out" || !result.output_files.is_empty() || !result.output_symlinks.is_empty() {
            anyhow::bail!("its outputs are not farm's single \"out\" directory");
        }
        let tree_digest = out
            .tree_digest
            .as_ref()
            .context("the output directory has no tree digest")?;
        let root = out
            .root_directory_digest
            .as_ref()
            .context("the output directory has no root directory digest")?;
        let tree_bytes = self.rt.block_on(self.client.read_blob(tree_digest))?;
        let tree: proto::Tree = farm_remote::decode(&tree_bytes, "the output Tree")?;
        let layout = tree::layout(&tree, root)?;
        let staging = store.temp_dir()?;
        let dir = staging.path().join("out");
        for d in &layout.dirs {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let digests: Vec<Digest> = layout.files.iter().map(|(_, d, _)| d.clone()).collect();
        let mut down = 0u64;
        for (chunk_files, chunk) in layout.files.chunks(256).zip(digests.chunks(256)) {
            let blobs = self.rt.block_on(self.client.read_blobs(chunk))?;
            for ((path, d, exec), data) in chunk_files.iter().zip(blobs) {
                let p = dir.join(path);
                std::fs::write(&p, &data).with_context(|| format!("writing {}", p.display()))?;
                let mode = if *exec { 0o755 } else { 0o644 };
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
                down += d.size_bytes as u64;
            }
        }
        for (path, target) in &layout.symlinks {
            std::os::unix::fs::symlink(target, dir.join(path))?;
        }
        // The files as written must make the tree the result names.
        let written = MerkleTree::of(&dir)?;
        if written.root != *root {
            anyhow::bail!(
                "the files fetched make the tree {}, the result names {}",
                digest_string(&written.root),
                digest_string(root)
            );
        }
        down += self.write_log(result, log)?;
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
        let entry = store.adopt_tree(&dir, &format!("out-{}", step.id), "output")?;
        Ok(entry)
    }

    /// Writes the log of the run that made `result` (its stdout, then its
    /// stderr) to `log`, when the result carries one; the bytes read.
    fn write_log(&self, result: &proto::ActionResult, log: &Path) -> Result<u64> {
        let mut text = vec![];
        for d in [&result.stdout_digest, &result.stderr_digest].into_iter().flatten() {
            if d.size_bytes > 0 {
                if let Ok(part) = self.rt.block_on(self.client.read_blob(d)) {
                    text.extend(part);
                }
            }
        }
        if text.is_empty() {
            return Ok(0);
        }
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(log, &text)?;
        Ok(text.len() as u64)
    }

    /// Whether hermetic steps go to the remote executor.
    pub fn executes(&self) -> bool {
        self.execute && self.usable()
    }

    /// Runs `step` on the remote executor: its inputs uploaded (what the
    /// CAS lacks), `Execute` (with the server's cache lookup unless
    /// `skip_cache`), the result verified and written into the store as a
    /// hit's is; `cached` tells whether the server answered from its cache.
    /// `Ok(None)` when the server cannot be reached (reported; the caller
    /// builds here); an error when the step failed there (its log written
    /// to `log`) or the server refused it.
    #[allow(clippy::too_many_arguments)]
    pub fn execute_step(
        &self,
        store: &Store,
        step: &Step,
        key: &StepKey,
        env: &BuildEnv,
        deps: &StepOutputs,
        log: &Path,
        timeout: Duration,
        skip_cache: bool,
    ) -> Result<Option<RemoteRun>> {
        if !self.executes() {
            return Ok(None);
        }
        let action = step_action(store, step, key, env, deps)?;
        let digest = action.digest.clone();
        let blobs = action.executable_blobs()?;
        let sent = match self.rt.block_on(self.client.upload(blobs)) {
            Ok(n) => n,
            Err(e) => {
                let e = anyhow::Error::from(e);
                if is_unreachable(&e) {
                    self.report(step, "uploading the inputs", &e);
                    return Ok(None);
                }
                return Err(e.context(format!(
                    "uploading the inputs of step {} to the remote executor",
                    step.id
                )));
            }
        };
        self.bytes_up.fetch_add(sent, Ordering::Relaxed);
        let resp = match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, self.client.execute(&digest, skip_cache)).await })
        {
            Err(_) => anyhow::bail!(
                "step {}: no result from the remote executor {} within {}s (action {})\nhint: is a worker serving this platform (OSFamily linux, ISA {}, farm-sandbox hermetic)? `farm worker --server URL` is one",
                step.id,
                self.client.url(),
                timeout.as_secs(),
                digest_string(&digest),
                isa()
            ),
            Ok(Err(e)) => {
                let e = anyhow::Error::from(e);
                if is_unreachable(&e) {
                    self.report(step, "executing it", &e);
                    return Ok(None);
                }
                return Err(e.context(format!("step {}: the remote executor failed", step.id)));
            }
            Ok(Ok(r)) => r,
        };
        if let Some(st) = resp.status.as_ref().filter(|s| s.code != 0) {
            if let Some(r) = &resp.result {
                let _ = self.write_log(r, log);
            }
            anyhow::bail!(
                "step {} could not run on the remote executor {} (action {}): status {}: {}",
                step.id,
                self.client.url(),
                digest_string(&digest),
                st.code,
                st.message
            );
        }
        let result = resp
            .result
            .with_context(|| format!("step {}: the remote executor's response has no result", step.id))?;
        if result.exit_code != 0 {
            self.write_log(&result, log)?;
            let worker = result
                .execution_metadata
                .as_ref()
                .map(|m| m.worker.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "a worker".into());
            anyhow::bail!(
                "step {} failed on the remote executor ({worker}) with exit status {}",
                step.id,
                result.exit_code
            );
        }
        let entry = self.materialize(store, step, &result, log).with_context(|| {
            format!(
                "step {}: the remote executor's result (action {}) failed verification",
                step.id,
                digest_string(&digest)
            )
        })?;
        // A result the server took from its cache ran nowhere this time.
        if resp.cached_result {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.executed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(RemoteRun {
            entry,
            action: digest,
            cached: resp.cached_result,
        }))
    }

    /// Uploads a step's output and records its ActionResult (not with
    /// `--remote-cache-read-only`); the action's digest when it was stored.
    /// Failures are reported, never fatal.
    #[allow(clippy::too_many_arguments)]
    pub fn upload(
        &self,
        store: &Store,
        step: &Step,
        key: &StepKey,
        env: &BuildEnv,
        deps: &StepOutputs,
        entry: &StoreEntry,
        log: &Path,
    ) -> Option<String> {
        if self.read_only || !self.usable() {
            return None;
        }
        match self.try_upload(store, step, key, env, deps, entry, log) {
            Ok(d) => Some(digest_string(&d)),
            Err(e) => {
                self.report(step, "storing the result", &e);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn try_upload(
        &self,
        store: &Store,
        step: &Step,
        key: &StepKey,
        env: &BuildEnv,
        deps: &StepOutputs,
        entry: &StoreEntry,
        log: &Path,
    ) -> Result<Digest> {
        let action = step_action(store, step, key, env, deps)?;
        let out = MerkleTree::of(&entry.path)?;
        let (tree_digest, tree_bytes) = encode(&out.to_tree());
        let mut blobs: Vec<(Digest, BlobData)> = action.blobs;
        blobs.push((tree_digest.clone(), BlobData::Bytes(tree_bytes)));
        for (d, bytes, _) in &out.directories {
            blobs.push((d.clone(), BlobData::Bytes(bytes.clone())));
        }
        for (d, p) in &out.files {
            blobs.push((d.clone(), BlobData::File(p.clone())));
        }
        let log_digest = match std::fs::read(log) {
            Ok(text) => {
                let d = farm_remote::digest_of(&text);
                blobs.push((d.clone(), BlobData::Bytes(text)));
                Some(d)
            }
            Err(_) => None,
        };
        let sent = self.rt.block_on(self.client.upload(blobs))?;
        self.bytes_up.fetch_add(sent, Ordering::Relaxed);
        let result = proto::ActionResult {
            output_directories: vec![proto::OutputDirectory {
                path: "out".into(),
                tree_digest: Some(tree_digest),
                is_topologically_sorted: false,
                root_directory_digest: Some(out.root.clone()),
            }],
            exit_code: 0,
            stdout_digest: log_digest,
            execution_metadata: Some(proto::ExecutedActionMetadata {
                worker: format!("farm {}", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.rt
            .block_on(self.client.update_action_result(&action.digest, result))?;
        Ok(action.digest)
    }

    /// `farm-metrics.json`'s `remote_cache` object.
    pub fn metrics(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.client.url(),
            "hits": self.hits.load(Ordering::Relaxed),
            "misses": self.misses.load(Ordering::Relaxed),
            "bytes_up": self.bytes_up.load(Ordering::Relaxed),
            "bytes_down": self.bytes_down.load(Ordering::Relaxed),
            "executed_remotely": self.executed.load(Ordering::Relaxed),
            "executor": self.execute,
        })
    }
}

/// What the remote executor gave for a step.
pub struct RemoteRun {
    /// The step's output, in the store.
    pub entry: StoreEntry,
    pub action: Digest,
    /// The server answered from its action cache (nothing ran).
    pub cached: bool,
}

/// A step as a REAPI Action: its digest, and the Action, Command and
/// input-root Directory messages (the store entries' own trees are named
/// by digest, not included).
pub struct RemoteAction {
    pub digest: Digest,
    pub command: proto::Command,
    pub input_root: Digest,
    blobs: Vec<(Digest, BlobData)>,
    /// The store entries under `farm/store` in the input root.
    pub inputs: Vec<StoreEntry>,
}

impl RemoteAction {
    /// Every blob a server needs to run this Action: the Action, Command
    /// and input-root Directory messages plus each input entry's files and
    /// Directory messages (what the remote cache alone never uploads).
    pub fn executable_blobs(self) -> Result<Vec<(Digest, BlobData)>> {
        let mut blobs = self.blobs;
        blobs.extend(entry_blobs(&self.inputs)?);
        Ok(blobs)
    }
}

/// The blobs of store entries as the input root names them: a directory
/// entry's Directory messages and files, a file entry's contents.
pub fn entry_blobs(entries: &[StoreEntry]) -> Result<Vec<(Digest, BlobData)>> {
    let mut blobs = vec![];
    for e in entries {
        let meta = std::fs::symlink_metadata(&e.path).with_context(|| e.path.display().to_string())?;
        if meta.is_dir() {
            let t = MerkleTree::of(&e.path)?;
            for (d, bytes, _) in t.directories {
                blobs.push((d, BlobData::Bytes(bytes)));
            }
            blobs.extend(t.files.into_iter().map(|(d, p)| (d, BlobData::File(p))));
        } else {
            blobs.push((tree::file_digest(&e.path)?, BlobData::File(e.path.clone())));
        }
    }
    Ok(blobs)
}

impl RemoteCache {
    /// Uploads what `step`'s Action needs to run on a remote executor
    /// (FindMissingBlobs first, so entries already there cost one call);
    /// the Action's digest and the bytes sent.
    pub fn upload_inputs(
        &self,
        store: &Store,
        step: &Step,
        key: &StepKey,
        env: &BuildEnv,
        deps: &StepOutputs,
    ) -> Result<(Digest, u64)> {
        let action = step_action(store, step, key, env, deps)?;
        let digest = action.digest.clone();
        let sent = self.rt.block_on(self.client.upload(action.executable_blobs()?))?;
        self.bytes_up.fetch_add(sent, Ordering::Relaxed);
        Ok((digest, sent))
    }
}

/// The Action of `step` (spec/remote.md, "A step as an Action").
pub fn step_action(
    store: &Store,
    step: &Step,
    key: &StepKey,
    env: &BuildEnv,
    deps: &StepOutputs,
) -> Result<RemoteAction> {
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    props.insert("OSFamily".into(), "linux".into());
    props.insert("ISA".into(), isa().into());
    props.insert("farm-mapping".into(), MAPPING_VERSION.into());
    props.insert("farm-key".into(), key.0.clone());
    let mut inputs: Vec<StoreEntry> = deps.values().cloned().collect();
    let (arguments, mut env_vars) = match &step.action {
        StepAction::InProcess { .. } => {
            props.insert("farm-sandbox".into(), "in-process".into());
            (vec!["farm".into(), "in-process".into(), step.id.to_string()], vec![])
        }
        StepAction::Script {
            script,
            inputs: step_inputs,
            extra_env,
        } => {
            inputs.extend(step_inputs.iter().cloned());
            // Dependencies at their in-sandbox paths, whatever the build ran in.
            let rendered = scripts::render(&scripts::render_deps(script, deps, true), &env.paths());
            let mut vars: Vec<(String, String)> = match &env.toolchain {
                Some(tc) if env.hermetic => {
                    props.insert("farm-sandbox".into(), "hermetic".into());
                    props.insert("farm-toolchain-root".into(), tc.root.file_name());
                    // The root too, so that a worker has everything the step sees.
                    inputs.push(tc.root.clone());
                    inputs.extend(tc.inputs.iter().cloned());
                    tc.env(env.source_date_epoch)
                }
                _ => {
                    props.insert("farm-sandbox".into(), "host".into());
                    props.insert("farm-host-tools".into(), env.host_tools.join(","));
                    vec![("SOURCE_DATE_EPOCH".into(), env.source_date_epoch.to_string())]
                }
            };
            vars.extend(
                extra_env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.replace(scripts::BUILD_PLACEHOLDER, &env.paths().build))),
            );
            if env.secrets.is_some() && sees_secrets(&step.id) {
                vars.push(("FARM_SECRETS_DIR".into(), executor::SECRETS_DIR.into()));
            }
            (vec!["/bin/sh".into(), "-c".into(), rendered], vars)
        }
    };
    // REAPI wants variables sorted by name; the last value of a name wins, as in the sandbox.
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in env_vars.drain(..) {
        by_name.insert(k, v);
    }
    let platform = proto::Platform {
        properties: props
            .into_iter()
            .map(|(name, value)| platform::Property { name, value })
            .collect(),
    };
    // Servers older than REAPI 2.2 read the platform from the Command.
    #[allow(deprecated)]
    let command = proto::Command {
        arguments,
        environment_variables: by_name
            .into_iter()
            .map(|(name, value)| command::EnvironmentVariable { name, value })
            .collect(),
        output_paths: vec!["out".into()],
        platform: Some(platform.clone()),
        working_directory: String::new(),
        ..Default::default()
    };
    let (command_digest, command_bytes) = encode(&command);
    // The input root: every entry at farm/store/<file name> (toolchain::SANDBOX_STORE).
    let mut store_dir = Directory::default();
    inputs.sort_by_key(StoreEntry::file_name);
    inputs.dedup_by_key(|e| e.file_name());
    for e in &inputs {
        let (d, is_dir, exec) = entry_digest(store, e)?;
        if is_dir {
            store_dir.directories.push(DirectoryNode {
                name: e.file_name(),
                digest: Some(d),
            });
        } else {
            store_dir.files.push(FileNode {
                name: e.file_name(),
                digest: Some(d),
                is_executable: exec,
                node_properties: None,
            });
        }
    }
    // farm/store/…: two directories that each hold only the next one.
    let only = |name: &str, digest: &Digest| Directory {
        directories: vec![DirectoryNode {
            name: name.into(),
            digest: Some(digest.clone()),
        }],
        ..Default::default()
    };
    let (store_digest, store_bytes) = encode(&store_dir);
    let (farm_digest, farm_bytes) = encode(&only("store", &store_digest));
    let (root_digest, root_bytes) = encode(&only("farm", &farm_digest));
    let action = proto::Action {
        command_digest: Some(command_digest.clone()),
        input_root_digest: Some(root_digest.clone()),
        timeout: None,
        do_not_cache: false,
        salt: vec![],
        platform: Some(platform),
    };
    let (digest, action_bytes) = encode(&action);
    Ok(RemoteAction {
        digest: digest.clone(),
        command,
        input_root: root_digest.clone(),
        blobs: vec![
            (digest, BlobData::Bytes(action_bytes)),
            (command_digest, BlobData::Bytes(command_bytes)),
            (root_digest, BlobData::Bytes(root_bytes)),
            (farm_digest, BlobData::Bytes(farm_bytes)),
            (store_digest, BlobData::Bytes(store_bytes)),
        ],
        inputs,
    })
}

/// The REAPI digest of a store entry's tree (or file), remembered in the
/// store's action cache: entries never change.
fn entry_digest(store: &Store, e: &StoreEntry) -> Result<(Digest, bool, bool)> {
    let row = format!("reapi-digest:{}", e.file_name());
    if let Some(v) = store.action_get(&row)? {
        if let (Some(d), Some(is_dir)) = (
            v["digest"].as_str().and_then(farm_remote::parse_digest),
            v["dir"].as_bool(),
        ) {
            return Ok((d, is_dir, v["exec"].as_bool().unwrap_or(false)));
        }
    }
    let meta = std::fs::symlink_metadata(&e.path).with_context(|| e.path.display().to_string())?;
    let (d, is_dir, exec) = if meta.is_dir() {
        (MerkleTree::of(&e.path)?.root, true, false)
    } else {
        (
            tree::file_digest(&e.path)?,
            false,
            meta.permissions().mode() & 0o111 != 0,
        )
    };
    store.action_put(
        &row,
        &serde_json::json!({"digest": digest_string(&d), "dir": is_dir, "exec": exec}),
    )?;
    Ok((d, is_dir, exec))
}

/// REAPI's ISA name of this machine.
pub(crate) fn isa() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "aarch64",
        other => other,
    }
}
