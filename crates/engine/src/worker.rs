//! `farm worker`: a remote-execution worker for servers that speak the
//! Remote Workers API (BuildGrid's Bots service). Each bot session polls
//! for a lease, takes the leased Action's input root (`farm/store/<entry>`)
//! into the worker's own store — an entry it already holds costs nothing,
//! a new one is written out of the CAS and checked against its name's store
//! digest — and runs the Command in farm's sandbox with the network off,
//! the way a step runs locally: the toolchain root as `/`, the other
//! entries read-only at `/farm/store`, a fresh `/out`. It then uploads
//! `out`, the log and the ActionResult and completes the lease. While a
//! step runs the session is kept alive; a lease the server cancels kills
//! the step.

use std::os::unix::fs::PermissionsExt as _;
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
use farm_store::{Store, StoreEntry};

use crate::executor::Executor;

/// How long one UpdateBotSession may be held by the server (it answers
/// at 80% of this when there is no work).
const POLL: Duration = Duration::from_secs(10);
/// How often a worker running a step tells the server it is still alive.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// The kind of the worker's store entries written from input roots.
const INPUT_KIND: &str = "remote-input";
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
    /// The worker's own store: input entries are written here once and
    /// found again by their REAPI digest; steps run in its staging dirs.
    pub store: Store,
    pub executor: Arc<dyn Executor>,
    /// A step's limit when its Action names none.
    pub timeout: Duration,
    /// The store's bound: after a lease, at most every GC_EVERY, the least
    /// recently used entries beyond it go (none used in the last hour).
    pub max_size: Option<u64>,
    /// Entries not used for this long go too.
    pub ttl: Option<Duration>,
}

/// How often a busy worker trims its store.
const GC_EVERY: Duration = Duration::from_secs(600);
/// Entries used this recently are never trimmed: a lease may be using them.
const GC_GRACE: Duration = Duration::from_secs(3600);

/// When this process last trimmed a worker store.
static LAST_GC: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Trims the worker's store to `max_size` / `ttl` when the last trim is
/// older than GC_EVERY (or there was none). A failure is reported, never fatal.
fn trim_store(opts: &WorkerOptions) {
    if opts.max_size.is_none() && opts.ttl.is_none() {
        return;
    }
    {
        let mut last = LAST_GC.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < GC_EVERY) {
            return;
        }
        *last = Some(std::time::Instant::now());
    }
    let gc = farm_store::GcOptions {
        max_size: opts.max_size,
        older_than: opts.ttl,
        keep: Default::default(),
        build_products_only: false,
        spare_used_within: Some(GC_GRACE),
        dry_run: false,
    };
    match opts.store.gc(&gc) {
        Ok(r) if !r.removed.is_empty() => eprintln!(
            "farm worker {}: trimmed the store: {} entries ({} bytes) removed, {} bytes left",
            opts.name,
            r.removed.len(),
            r.freed,
            r.remaining
        ),
        Ok(_) => {}
        Err(e) => eprintln!("farm worker {}: trimming the store failed: {e}", opts.name),
    }
}

/// Serves leases until `stop` is set (checked between polls).
pub fn serve(opts: &WorkerOptions, stop: &AtomicBool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.jobs.clamp(1, 4))
        .enable_all()
        .build()
        .context("starting the worker's runtime")?;
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
/// run each new lease while telling the server it is active, report it.
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
            eprintln!("farm worker {bot_id}: connected to {}", client.url());
            while !stop.load(Ordering::Relaxed) {
                let next = session.leases.iter().position(|l| {
                    (l.state == LeaseState::Pending as i32 || l.state == LeaseState::Active as i32)
                        && l.result.is_none()
                });
                if let Some(i) = next {
                    session.leases[i].state = LeaseState::Active as i32;
                    let id = session.leases[i].id.clone();
                    let payload = session.leases[i].payload.clone();
                    let cancel = Arc::new(AtomicBool::new(false));
                    // While the step runs, a task of its own updates the
                    // session every KEEPALIVE (the step's work blocks this
                    // thread): the server keeps the lease ours, and a lease
                    // it cancels stops the step.
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                    let keepalive = tokio::spawn(keep_alive(
                        bots_client.clone(),
                        session.clone(),
                        id.clone(),
                        cancel.clone(),
                        bot_id.to_string(),
                        done_rx,
                    ));
                    let outcome = run_lease(&client, opts, payload.as_ref(), cancel.clone(), bot_id, &id).await;
                    let _ = done_tx.send(());
                    if let Ok(s) = keepalive.await {
                        session = s;
                    }
                    trim_store(opts);
                    let Some(lease) = session.leases.iter_mut().find(|l| l.id == id) else {
                        continue;
                    };
                    match outcome {
                        Ok(None) => lease.state = LeaseState::Cancelled as i32,
                        Ok(Some(result)) => {
                            lease.result = Some(Any {
                                type_url: bots::type_url(bots::ACTION_RESULT_TYPE),
                                value: encode(&result).1,
                            });
                            lease.status = Some(bots::Status::default());
                            lease.state = LeaseState::Completed as i32;
                        }
                        Err(e) => {
                            eprintln!("farm worker {bot_id}: lease {id}: {e:#}");
                            lease.status = Some(bots::Status {
                                // google.rpc.Code INTERNAL
                                code: 13,
                                message: format!("farm worker {bot_id}: {e:#}"),
                                details: vec![],
                            });
                            lease.state = LeaseState::Completed as i32;
                        }
                    }
                }
                let sent_done: Vec<String> = session
                    .leases
                    .iter()
                    .filter(|l| l.state == LeaseState::Completed as i32 || l.state == LeaseState::Cancelled as i32)
                    .map(|l| l.id.clone())
                    .collect();
                session = bots_client.update(session).await?;
                // Finished leases are dropped once the server has them.
                session.leases.retain(|l| !sent_done.contains(&l.id));
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

/// Updates `session` every KEEPALIVE until `done` fires; sets `cancel`
/// when the server has cancelled (or forgotten) lease `id`. Returns the
/// session as the server last returned it.
async fn keep_alive(
    mut bots_client: BotsClient,
    mut session: BotSession,
    id: String,
    cancel: Arc<AtomicBool>,
    bot_id: String,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> BotSession {
    loop {
        tokio::select! {
            _ = &mut done => return session,
            _ = tokio::time::sleep(KEEPALIVE) => {}
        }
        match bots_client.update(session.clone()).await {
            Ok(s) => {
                let gone = s
                    .leases
                    .iter()
                    .find(|l| l.id == id)
                    .is_none_or(|l| l.state == LeaseState::Cancelled as i32);
                if gone && !cancel.swap(true, Ordering::Relaxed) {
                    eprintln!("farm worker {bot_id}: lease {id} was cancelled; stopping its step");
                }
                session = keep_active(s, &id);
            }
            // The server may be restarting: the step goes on.
            Err(e) => eprintln!("farm worker {bot_id}: {e}"),
        }
    }
}

/// The session as the server returned it, with lease `id` still marked
/// active (the server echoes what it last heard).
fn keep_active(mut s: BotSession, id: &str) -> BotSession {
    for l in s.leases.iter_mut().filter(|l| l.id == id) {
        if l.state == LeaseState::Pending as i32 {
            l.state = LeaseState::Active as i32;
        }
    }
    s
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

/// Runs a lease's Action; None when it was cancelled while running.
async fn run_lease(
    client: &Client,
    opts: &WorkerOptions,
    payload: Option<&Any>,
    cancel: Arc<AtomicBool>,
    bot_id: &str,
    lease_id: &str,
) -> Result<Option<proto::ActionResult>> {
    let action = lease_action(client, payload).await?;
    let started = std::time::Instant::now();
    let action_digest = digest_string(&encode(&action).0);
    eprintln!("farm worker {bot_id}: lease {lease_id}: running action {action_digest}");
    let command_digest = action
        .command_digest
        .clone()
        .context("the Action has no command digest")?;
    let command: Command = decode(&client.read_blob(&command_digest).await?, "the Command")?;
    let root = action
        .input_root_digest
        .clone()
        .context("the Action has no input root")?;
    let inputs = stage_inputs(client, &opts.store, &root).await.with_context(|| {
        format!(
            "writing the input root {} into the worker's store",
            digest_string(&root)
        )
    })?;
    let staging = opts.store.temp_dir()?;
    let out = staging.path().join("out");
    std::fs::create_dir(&out)?;
    let log = staging.path().join("log");
    let mut spec = step_spec(&action, &command, &inputs, &out, &log)?;
    spec.timeout = Some(
        action
            .timeout
            .as_ref()
            .filter(|t| t.seconds > 0)
            .map_or(opts.timeout, |t| Duration::from_secs(t.seconds as u64)),
    );
    let executor = opts.executor.clone();
    let flag = cancel.clone();
    let outcome = tokio::task::spawn_blocking(move || executor.run_cancellable(&spec, &flag)).await??;
    if cancel.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let exit_code = if outcome.timed_out { 124 } else { outcome.status };
    let mut blobs: Vec<(Digest, BlobData)> = vec![];
    let text = std::fs::read(&log).unwrap_or_default();
    let log_digest = farm_remote::digest_of(&text);
    blobs.push((log_digest.clone(), BlobData::Bytes(text)));
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
        let tree = MerkleTree::of(&out).context("reading the step's /out")?;
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
    eprintln!(
        "farm worker {bot_id}: lease {lease_id}: action {action_digest} exited {exit_code} after {} ms",
        started.elapsed().as_millis()
    );
    Ok(Some(result))
}

/// The store entries of an input root (`farm/store/<entry>` and nothing
/// else, as farm's actions are made), each from the worker's store when it
/// already holds it, else written out of the CAS, checked against its
/// name's store digest and added. Returns (entry, its name in the root).
async fn stage_inputs(client: &Client, store: &Store, root: &Digest) -> Result<Vec<StoreEntry>> {
    let dir = |d: Digest, what: String| async move {
        let bytes = client.read_blob(&d).await?;
        anyhow::Ok(decode::<proto::Directory>(&bytes, &what)?)
    };
    let top = dir(root.clone(), "the input root".into()).await?;
    if top.directories.is_empty() && top.files.is_empty() && top.symlinks.is_empty() {
        return Ok(vec![]);
    }
    let only = |d: &proto::Directory, name: &str, at: &str| -> Result<Digest> {
        match (d.directories.as_slice(), d.files.is_empty() && d.symlinks.is_empty()) {
            ([n], true) if n.name == name => n.digest.clone().context("a directory node without a digest"),
            _ => anyhow::bail!(
                "the input root holds {} at {at}, expected only {name}/ (farm's worker runs farm's actions: store entries under farm/store)",
                names(d)
            ),
        }
    };
    let farm = dir(only(&top, "farm", "/")?, "farm/".into()).await?;
    let store_dir = dir(only(&farm, "store", "farm/")?, "farm/store/".into()).await?;
    anyhow::ensure!(
        store_dir.symlinks.is_empty(),
        "the input root's farm/store holds symlinks ({}); store entries are files and directories",
        names(&store_dir)
    );
    let mut entries = vec![];
    for n in &store_dir.directories {
        let d = n.digest.clone().context("a directory node without a digest")?;
        entries.push(input_entry(client, store, &n.name, &d, None).await?);
    }
    for f in &store_dir.files {
        let d = f.digest.clone().context("a file node without a digest")?;
        entries.push(input_entry(client, store, &f.name, &d, Some(f.is_executable)).await?);
    }
    Ok(entries)
}

fn names(d: &proto::Directory) -> String {
    let mut v: Vec<&str> = d
        .directories
        .iter()
        .map(|n| n.name.as_str())
        .chain(d.files.iter().map(|n| n.name.as_str()))
        .chain(d.symlinks.iter().map(|n| n.name.as_str()))
        .collect();
    v.sort();
    v.join(", ")
}

/// One input entry `name` (a directory, or a file when `file_exec` is
/// Some) with REAPI digest `d`, in the worker's store.
async fn input_entry(
    client: &Client,
    store: &Store,
    name: &str,
    d: &Digest,
    file_exec: Option<bool>,
) -> Result<StoreEntry> {
    let Some((_, base)) = farm_store::parse_file_name(name) else {
        anyhow::bail!("farm/store/{name}: not a store entry name (<64 hex digits>-<name>)");
    };
    let row = format!(
        "reapi-entry:{}:{}",
        if file_exec.is_some() { "f" } else { "d" },
        digest_string(d)
    );
    if let Some(v) = store.action_get(&row)? {
        if v["entry"].as_str() == Some(name) {
            if let Some(e) = store.entry(name)? {
                return Ok(e);
            }
        }
    }
    let staging = store.temp_dir()?;
    let p = staging.path().join("entry");
    let entry = match file_exec {
        None => {
            client.materialize(d, &p).await?;
            store.adopt_tree(&p, base, INPUT_KIND)?
        }
        Some(exec) => {
            client.read_blob_to_file(d, &p).await?;
            let mode = if exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            store.adopt_file(&p, base, INPUT_KIND)?
        }
    };
    // The name is a claim about the contents: the store's digest decides.
    anyhow::ensure!(
        entry.file_name() == name,
        "farm/store/{name}: its contents have the store digest of {}, not the one its name gives",
        entry.file_name()
    );
    store.action_put(&row, &serde_json::json!({ "entry": name }))?;
    Ok(entry)
}

/// The sandbox of a leased Command, as a local step's: the root the
/// `farm-sandbox` property names, every other input entry read-only at
/// `/farm/store/<name>`, `/out` writable, no network.
fn step_spec(action: &Action, command: &Command, inputs: &[StoreEntry], out: &Path, log: &Path) -> Result<StepSpec> {
    let prop = |name: &str| {
        action
            .platform
            .iter()
            .flat_map(|p| &p.properties)
            .find(|p| p.name == name)
            .map(|p| p.value.clone())
    };
    let root_name = match prop("farm-sandbox").as_deref() {
        Some("hermetic") => {
            Some(prop("farm-toolchain-root").context("a hermetic action names no farm-toolchain-root")?)
        }
        Some("host") | None => None,
        Some(other) => anyhow::bail!("farm-sandbox {other:?} is not a sandbox this worker runs"),
    };
    let root = match &root_name {
        Some(name) => {
            let e = inputs.iter().find(|e| e.file_name() == *name).with_context(|| {
                format!("the toolchain root {name} is not in the action's input root (farm/store/{name})")
            })?;
            anyhow::ensure!(e.path.is_dir(), "the toolchain root {name} is not a directory");
            RootSpec::Dir(e.path.clone())
        }
        None => RootSpec::HostPaths(HOST_ROOT.iter().map(PathBuf::from).filter(|p| p.exists()).collect()),
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
    for e in inputs.iter().filter(|e| Some(e.file_name()) != root_name) {
        spec.binds.push(Bind::read_only(
            &e.path,
            Path::new(crate::toolchain::SANDBOX_STORE).join(e.file_name()),
        ));
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
