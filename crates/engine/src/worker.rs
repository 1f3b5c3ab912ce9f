//! A remote-execution worker for servers that speak the Remote Workers API
//! (BuildGrid's Bots service): each bot session polls for a lease, writes
//! the leased Action's input root out of the CAS, runs its Command in
//! farm's sandbox with the network off — the way a step runs locally, the
//! input root's `farm/store` entries read-only at `/farm/store`, a fresh
//! `/out` — then uploads `out`, the log and the ActionResult and completes
//! the lease with it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use farm_remote::bots::{self, Any, BotSession, BotStatus, BotsClient, Device, LeaseState, Property, Worker};
use farm_remote::proto::{self, Action, Command};
use farm_remote::tree::MerkleTree;
use farm_remote::{decode, digest_string, encode, BlobData, Client, Digest, RemoteConfig};
use farm_sandbox::{Bind, RootSpec, Stdio, StepSpec};

use crate::executor::Executor;

/// How long one UpdateBotSession may be held by the server (it answers
/// at 80% of this when there is no work).
const POLL: Duration = Duration::from_secs(10);
/// Host directories a `farm-sandbox=host` step sees read-only, as the
/// local build's host tools.
const HOST_ROOT: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc"];

/// What a worker is and where it works.
pub struct WorkerOptions {
    pub server: RemoteConfig,
    /// Bot sessions run side by side (`--jobs`).
    pub jobs: usize,
    /// Prefix of the bot ids (one per job).
    pub name: String,
    /// Where leases are materialised (a temp dir per lease below it).
    pub work_dir: PathBuf,
    pub executor: Arc<dyn Executor>,
}

/// Serves leases until `stop` is set (checked between polls).
pub fn serve(opts: &WorkerOptions, stop: &AtomicBool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the worker's runtime")?;
    std::fs::create_dir_all(&opts.work_dir).with_context(|| opts.work_dir.display().to_string())?;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.jobs.max(1))
            .map(|i| {
                let rt = &rt;
                s.spawn(move || bot(rt, opts, &format!("{}-{i}", opts.name), stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}

fn device(bot_id: &str) -> Worker {
    let p = |k: &str, v: &str| Property {
        key: k.into(),
        value: v.into(),
    };
    Worker {
        devices: vec![Device {
            handle: bot_id.into(),
            properties: vec![
                p("OSFamily", "linux"),
                p("ISA", crate::remote_cache::isa()),
                p("farm-sandbox", "host"),
                p("farm-sandbox", "hermetic"),
            ],
        }],
        properties: vec![],
    }
}

/// One bot session: connect (again after the server went away), poll,
/// run each new lease, report it.
fn bot(rt: &tokio::runtime::Runtime, opts: &WorkerOptions, bot_id: &str, stop: &AtomicBool) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let r = rt.block_on(async {
            let client = Client::connect(&opts.server, Duration::from_secs(5), POLL).await?;
            let mut bots_client = BotsClient::new(&client);
            let mut session = bots_client
                .create(
                    &opts.server.instance,
                    BotSession {
                        bot_id: bot_id.into(),
                        status: BotStatus::Ok as i32,
                        worker: Some(device(bot_id)),
                        ..Default::default()
                    },
                )
                .await?;
            while !stop.load(Ordering::Relaxed) {
                let mut ran = false;
                for lease in session.leases.iter_mut() {
                    let new = lease.state == LeaseState::Pending as i32 || lease.state == LeaseState::Active as i32;
                    if !new || lease.result.is_some() {
                        continue;
                    }
                    let outcome = run_lease(&client, opts, lease.payload.as_ref()).await;
                    match outcome {
                        Ok(result) => {
                            lease.result = Some(Any {
                                type_url: bots::type_url(bots::ACTION_RESULT_TYPE),
                                value: encode(&result).1,
                            });
                            lease.status = Some(bots::Status::default());
                        }
                        Err(e) => {
                            lease.status = Some(bots::Status {
                                // google.rpc.Code INTERNAL
                                code: 13,
                                message: format!("farm worker {bot_id}: {e:#}"),
                                details: vec![],
                            });
                        }
                    }
                    lease.state = LeaseState::Completed as i32;
                    ran = true;
                }
                session = bots_client.update(session).await?;
                if ran {
                    // Completed leases are dropped once the server has them.
                    session.leases.retain(|l| l.state != LeaseState::Completed as i32);
                }
            }
            Ok::<_, anyhow::Error>(())
        });
        if let Err(e) = r {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            eprintln!("farm worker {bot_id}: {e:#}; reconnecting");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(())
}

/// The Action a lease carries (packed, or by digest).
async fn lease_action(client: &Client, payload: Option<&Any>) -> Result<Action> {
    let payload = payload.context("the lease has no payload")?;
    if payload.type_url == bots::type_url(bots::ACTION_TYPE) {
        return Ok(decode(&payload.value, "the lease's Action")?);
    }
    if payload.type_url == bots::type_url(bots::DIGEST_TYPE) {
        let d: Digest = decode(&payload.value, "the lease's Action digest")?;
        return Ok(decode(&client.read_blob(&d).await?, "the Action")?);
    }
    anyhow::bail!("the lease's payload is a {}, expected an Action", payload.type_url)
}

async fn run_lease(client: &Client, opts: &WorkerOptions, payload: Option<&Any>) -> Result<proto::ActionResult> {
    let action = lease_action(client, payload).await?;
    let command_digest = action
        .command_digest
        .clone()
        .context("the Action has no command digest")?;
    let command: Command = decode(&client.read_blob(&command_digest).await?, "the Command")?;
    let root = action
        .input_root_digest
        .clone()
        .context("the Action has no input root")?;
    let tmp = tempfile::tempdir_in(&opts.work_dir)?;
    let input = tmp.path().join("in");
    client
        .materialize(&root, &input)
        .await
        .with_context(|| format!("writing the input root {}", digest_string(&root)))?;
    let out = tmp.path().join("out");
    std::fs::create_dir(&out)?;
    let log = tmp.path().join("log");
    let spec = step_spec(&action, &command, &input, &out, &log)?;
    let executor = opts.executor.clone();
    let outcome = tokio::task::spawn_blocking(move || executor.run(&spec)).await??;
    let exit_code = if outcome.timed_out { 124 } else { outcome.status };
    let mut blobs: Vec<(Digest, BlobData)> = vec![];
    let text = std::fs::read(&log).unwrap_or_default();
    let (log_digest, log_bytes) = (farm_remote::digest_of(&text), text);
    blobs.push((log_digest.clone(), BlobData::Bytes(log_bytes)));
    let mut result = proto::ActionResult {
        exit_code,
        stdout_digest: Some(log_digest),
        execution_metadata: Some(proto::ExecutedActionMetadata {
            worker: format!("farm worker {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }),
        ..Default::default()
    };
    if exit_code == 0 {
        let tree = MerkleTree::of(&out)?;
        let (tree_digest, tree_bytes) = encode(&tree.to_tree());
        blobs.push((tree_digest.clone(), BlobData::Bytes(tree_bytes)));
        for (d, bytes, _) in &tree.directories {
            blobs.push((d.clone(), BlobData::Bytes(bytes.clone())));
        }
        for (d, p) in &tree.files {
            blobs.push((d.clone(), BlobData::File(p.clone())));
        }
        result.output_directories = vec![proto::OutputDirectory {
            path: "out".into(),
            tree_digest: Some(tree_digest),
            is_topologically_sorted: false,
            root_directory_digest: Some(tree.root.clone()),
        }];
    }
    client.upload(blobs).await?;
    Ok(result)
}

/// The sandbox of a leased Command, as a local step's: the root the
/// `farm-sandbox` property names, the input root's store entries read-only
/// at `/farm/store`, `/out` writable, no network.
fn step_spec(action: &Action, command: &Command, input: &Path, out: &Path, log: &Path) -> Result<StepSpec> {
    let prop = |name: &str| {
        action
            .platform
            .iter()
            .flat_map(|p| &p.properties)
            .find(|p| p.name == name)
            .map(|p| p.value.clone())
    };
    let store = input.join("farm/store");
    let root = match prop("farm-sandbox").as_deref() {
        Some("hermetic") => {
            let name = prop("farm-toolchain-root").context("a hermetic action names no farm-toolchain-root")?;
            let dir = store.join(&name);
            anyhow::ensure!(
                dir.is_dir(),
                "the toolchain root {name} is not in the action's input root (farm/store/{name})"
            );
            RootSpec::Dir(dir)
        }
        Some("host") | None => {
            RootSpec::HostPaths(HOST_ROOT.iter().map(PathBuf::from).filter(|p| p.exists()).collect())
        }
        Some(other) => anyhow::bail!("farm-sandbox {other:?} is not a sandbox this worker runs"),
    };
    anyhow::ensure!(!command.arguments.is_empty(), "the Command has no arguments");
    let mut spec = StepSpec::new(
        root,
        command.arguments.clone(),
        Stdio::Capture {
            log: log.to_path_buf(),
            stream: false,
        },
    );
    if store.is_dir() {
        for e in std::fs::read_dir(&store)? {
            let e = e?;
            spec.binds.push(Bind::read_only(
                e.path(),
                Path::new(crate::toolchain::SANDBOX_STORE).join(e.file_name()),
            ));
        }
    }
    spec.binds.sort_by(|a, b| a.target.cmp(&b.target));
    // The sandbox maps its build user to ours: /out is ours, as a local step's.
    spec.binds.push(Bind::writable(out, farm_sandbox::OUT_DIR));
    spec.env = command
        .environment_variables
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    spec.hostname = "farm".into();
    spec.network = farm_sandbox::Network::None;
    Ok(spec)
}
