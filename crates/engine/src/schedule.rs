//! The scheduler: steps with their keys, run in dependency order with up
//! to `jobs` at once, each looked up in the action cache first. A step's
//! output (its /out) becomes one store entry; the cache maps key → entry.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use farm_sandbox::{Bind, Stdio};
use farm_store::{Store, StoreEntry};
use serde::{Deserialize, Serialize};

use crate::build::BuildEnv;
use crate::executor::{sandbox_spec, SecretFiles, SECRETS_DIR};
use crate::manifest::TraceEvent;
use crate::reporter::Reporter;
use crate::scripts;
use crate::step::{sees_secrets, ActionRecord, Step, StepAction, StepId, StepKey, StepOutputs};

pub struct Runner<'a> {
    pub store: &'a Store,
    pub reporter: &'a Reporter,
    pub jobs: usize,
    pub no_cache: bool,
    /// Steps run even when the action cache has their key.
    pub rerun: Vec<StepId>,
    pub logs_dir: PathBuf,
    pub timeout: Duration,
    /// Start ready steps last-first (a `farm check` variation).
    pub reverse_order: bool,
    /// Looked up after the local action cache misses; written after a step ran here.
    pub remote: Option<&'a crate::remote_cache::RemoteCache>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub key: StepKey,
    pub status: String,
    pub cached: bool,
    pub log: Option<PathBuf>,
    pub duration_ms: u64,
    pub peak_rss_kib: Option<u64>,
    /// The step's REAPI action (`HASH/SIZE`) when a remote cache gave or took its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_action: Option<String>,
}

pub struct StepResult {
    pub id: StepId,
    pub entry: StoreEntry,
    pub record: StepRecord,
    pub start: Duration,
    pub lane: usize,
}

pub struct Results {
    pub steps: Vec<StepResult>,
    pub records: BTreeMap<StepId, StepRecord>,
    pub failure: Option<anyhow::Error>,
    /// The remote cache's hits, misses and bytes moved (`--remote-cache`).
    pub remote: Option<serde_json::Value>,
}

impl Results {
    pub fn into_result(self) -> Result<Results> {
        match self.failure {
            Some(e) => Err(e),
            None => Ok(Results { failure: None, ..self }),
        }
    }

    pub fn metrics(&self, total: Duration) -> serde_json::Value {
        let peak = self.records.values().filter_map(|r| r.peak_rss_kib).max();
        let mut m = serde_json::json!({
            "total_ms": total.as_millis() as u64,
            "steps": self.records,
            "cache_hits": self.records.values().filter(|r| r.cached).count(),
            "peak_rss_kib": peak,
        });
        if let Some(r) = &self.remote {
            m["remote_cache"] = r.clone();
        }
        m
    }

    pub fn trace(&self) -> Vec<TraceEvent> {
        self.steps
            .iter()
            .map(|s| TraceEvent {
                name: s.id.to_string(),
                key: s.record.key.0.clone(),
                start_us: s.start.as_micros() as u64,
                dur_us: s.record.duration_ms * 1000,
                lane: s.lane,
                cached: s.record.cached,
            })
            .collect()
    }
}

/// `.farm/last-build.json`: what `farm log STEP` reads, and the store
/// entries the build used and made (which `farm cache clean` keeps).
/// Logs are recorded relative to `home` (FARM_HOME), never as host paths:
/// the project directory may be shared, copied or committed.
pub fn write_record(path: &Path, home: &Path, results: &Results, steps: &[Step], env: &BuildEnv) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut entries: std::collections::BTreeSet<String> = results.steps.iter().map(|s| s.entry.file_name()).collect();
    for step in steps {
        if let StepAction::Script { inputs, .. } = &step.action {
            entries.extend(inputs.iter().map(|e| e.file_name()));
        }
    }
    if let Some(tc) = &env.toolchain {
        entries.extend(tc.inputs.iter().map(|e| e.file_name()));
        entries.insert(tc.root.file_name());
    }
    let records: BTreeMap<&StepId, StepRecord> = results
        .records
        .iter()
        .map(|(id, r)| {
            let mut r = r.clone();
            r.log = r.log.and_then(|l| l.strip_prefix(home).ok().map(Path::to_path_buf));
            (id, r)
        })
        .collect();
    let v = serde_json::json!({"steps": records, "entries": entries});
    std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n").with_context(|| path.display().to_string())
}

/// The store entries recorded by the last build (empty when there was none).
pub fn recorded_entries(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| serde_json::from_value(v["entries"].clone()).ok())
        .unwrap_or_default()
}

/// The steps of the last build, their logs resolved under `home`. A log
/// path that would leave `home` (an edited record) is dropped.
pub fn read_record(path: &Path, home: &Path) -> Result<BTreeMap<StepId, StepRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "{}: no build has run in this project yet\nhint: run `farm build`",
            path.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    let mut steps: BTreeMap<StepId, StepRecord> =
        serde_json::from_value(v["steps"].clone()).with_context(|| format!("{}: field \"steps\"", path.display()))?;
    for r in steps.values_mut() {
        r.log = r.log.take().filter(|l| {
            !l.as_os_str().is_empty() && l.components().all(|c| matches!(c, std::path::Component::Normal(_)))
        });
        r.log = r.log.take().map(|l| home.join(l));
    }
    Ok(steps)
}

struct Done {
    index: usize,
    lane: usize,
    start: Duration,
    result: Result<(StoreEntry, StepRecord)>,
}

impl Runner<'_> {
    pub fn run(&self, steps: &[Step], env: &BuildEnv) -> Results {
        let t0 = Instant::now();
        let index: HashMap<&StepId, usize> = steps.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
        let mut keys: Vec<StepKey> = vec![StepKey::default(); steps.len()];
        let mut outputs = StepOutputs::new();
        let mut state = vec![0u8; steps.len()]; // 0 waiting, 1 running, 2 done, 3 failed
        let mut lanes = vec![false; self.jobs];
        let mut results = Results {
            steps: vec![],
            records: BTreeMap::new(),
            failure: None,
            remote: None,
        };
        let (tx, rx) = mpsc::channel::<Done>();
        std::thread::scope(|scope| loop {
            if results.failure.is_none() {
                let order: Vec<usize> = if self.reverse_order {
                    (0..steps.len()).rev().collect()
                } else {
                    (0..steps.len()).collect()
                };
                for i in order {
                    if state[i] != 0 {
                        continue;
                    }
                    let ready = steps[i]
                        .after
                        .iter()
                        .all(|d| index.get(d).is_none_or(|&j| state[j] == 2));
                    let Some(lane) = lanes.iter().position(|busy| !busy) else {
                        break;
                    };
                    if !ready {
                        continue;
                    }
                    state[i] = 1;
                    lanes[lane] = true;
                    let deps: StepOutputs = steps[i]
                        .inputs_from
                        .iter()
                        .filter_map(|d| outputs.get(d).map(|e| (d.clone(), e.clone())))
                        .collect();
                    keys[i] = steps[i].key(env, &deps);
                    let (tx, step, key) = (tx.clone(), &steps[i], keys[i].clone());
                    let start = t0.elapsed();
                    scope.spawn(move || {
                        let result = self.run_step(step, &key, env, &deps);
                        let _ = tx.send(Done {
                            index: i,
                            lane,
                            start,
                            result,
                        });
                    });
                }
            }
            if !state.contains(&1) {
                results.remote = self.remote.map(|r| r.metrics());
                break;
            }
            let done = rx.recv().expect("a running step reports");
            lanes[done.lane] = false;
            let id = steps[done.index].id.clone();
            match done.result {
                Ok((entry, record)) => {
                    state[done.index] = 2;
                    outputs.insert(id.clone(), entry.clone());
                    results.records.insert(id.clone(), record.clone());
                    results.steps.push(StepResult {
                        id,
                        entry,
                        record,
                        start: done.start,
                        lane: done.lane,
                    });
                }
                Err(e) => {
                    state[done.index] = 3;
                    results.records.insert(
                        id.clone(),
                        StepRecord {
                            key: keys[done.index].clone(),
                            status: "failed".into(),
                            cached: false,
                            log: Some(self.log_path(&id, &keys[done.index])),
                            duration_ms: 0,
                            peak_rss_kib: None,
                            remote_action: None,
                        },
                    );
                    if results.failure.is_none() {
                        results.failure = Some(e);
                    }
                }
            }
        });
        if results.failure.is_none() && state.iter().any(|s| *s != 2) {
            results.failure = Some(anyhow::anyhow!(
                "internal: a step never became ready (unknown dependency?)"
            ));
        }
        results
    }

    fn log_path(&self, id: &StepId, key: &StepKey) -> PathBuf {
        self.logs_dir.join(format!("{id}-{}.log", key.short()))
    }

    fn run_step(
        &self,
        step: &Step,
        key: &StepKey,
        env: &BuildEnv,
        deps: &StepOutputs,
    ) -> Result<(StoreEntry, StepRecord)> {
        let line = self.reporter.step(step.id.as_str());
        if !self.no_cache && !self.rerun.contains(&step.id) {
            // The lookup marks the entry used (store.entry); no second write.
            if let Some((record, e)) = ActionRecord::lookup(self.store, key)? {
                line.finish("cached");
                return Ok((
                    e,
                    StepRecord {
                        key: key.clone(),
                        status: "ok".into(),
                        cached: true,
                        log: record.log,
                        duration_ms: 0,
                        peak_rss_kib: None,
                        remote_action: None,
                    },
                ));
            }
            if let Some(hit) = self.remote_hit(step, key, env, deps)? {
                line.finish("remote cache hit");
                return Ok(hit);
            }
        }
        match self.remote_run(step, key, env, deps) {
            Ok(Some((done, cached))) => {
                line.finish(if cached { "remote cache hit" } else { "built remotely" });
                return Ok(done);
            }
            Ok(None) => {}
            Err(e) => {
                line.finish("FAILED remotely");
                return Err(e);
            }
        }
        let staging = self.store.temp_dir()?;
        let out = staging.path().join("out");
        std::fs::create_dir_all(&out)?;
        let log = self.log_path(&step.id, key);
        std::fs::create_dir_all(&self.logs_dir)?;
        let started = Instant::now();
        let mut peak = None;
        let outcome: Result<()> = match &step.action {
            StepAction::InProcess { run, .. } => {
                std::fs::write(&log, format!("{}: assembled in-process from store entries\n", step.id))?;
                run(&out, deps)
            }
            StepAction::Script {
                script,
                inputs,
                extra_env,
            } => {
                // Outputs of earlier steps join the inputs; the script names them by placeholder.
                let mut inputs = inputs.clone();
                inputs.extend(deps.values().cloned());
                let script = scripts::render_deps(script, deps, env.hermetic);
                // With secrets, the log is captured outside the store and scrubbed into place.
                let capture = match &env.secrets {
                    Some(s) => s.capture_log(log.file_name().expect("a log file name")),
                    None => log.clone(),
                };
                let secrets = env.secrets.as_ref().filter(|_| sees_secrets(&step.id));
                let r = if env.hermetic {
                    self.run_sandboxed(&script, &inputs, extra_env, env, secrets, &out, &capture)
                } else {
                    self.run_on_host(
                        &script,
                        extra_env,
                        env,
                        secrets,
                        &staging.path().join("build"),
                        &out,
                        &capture,
                    )
                };
                if let Some(s) = &env.secrets {
                    s.scrub_log(&capture, &log)?;
                }
                let r = r.and_then(|x| {
                    if let Some((name, path)) = secrets.map(|s| s.find_in_tree(&out)).transpose()?.flatten() {
                        bail!(
                            "step {} wrote the value of secret {name} into its output ({})\n\
                             hint: a secret is for the build to use, never to ship; read it from /run/secrets/{name} without copying it into $out",
                            step.id,
                            path.display()
                        );
                    }
                    Ok(x)
                });
                r.map(|(status, timed_out, rss)| {
                    peak = rss;
                    (status, timed_out)
                })
                .and_then(|(status, timed_out)| {
                    if timed_out {
                        bail!(
                            "step {} ran past its {}s timeout and was killed",
                            step.id,
                            self.timeout.as_secs()
                        );
                    }
                    if status != 0 {
                        bail!("step {} failed with exit status {status}", step.id);
                    }
                    Ok(())
                })
            }
        };
        if let Err(e) = outcome {
            line.finish("FAILED");
            return Err(anyhow::anyhow!("{e:#}; {}", failure_excerpt(step.id.as_str(), &log)));
        }
        let entry = self.store.adopt_tree(&out, &format!("out-{}", step.id), "output")?;
        ActionRecord {
            entry: entry.file_name(),
            log: Some(log.clone()),
        }
        .store(self.store, key)?;
        let remote_action = self
            .remote
            .and_then(|r| r.upload(self.store, step, key, env, deps, &entry, &log));
        let duration_ms = started.elapsed().as_millis() as u64;
        line.finish("built");
        Ok((
            entry,
            StepRecord {
                key: key.clone(),
                status: "ok".into(),
                cached: false,
                log: Some(log),
                duration_ms,
                peak_rss_kib: peak,
                remote_action,
            },
        ))
    }

    /// The step's output from the remote cache, recorded in the local one.
    fn remote_hit(
        &self,
        step: &Step,
        key: &StepKey,
        env: &BuildEnv,
        deps: &StepOutputs,
    ) -> Result<Option<(StoreEntry, StepRecord)>> {
        let Some(remote) = self.remote else {
            return Ok(None);
        };
        let log = self.log_path(&step.id, key);
        let Some((entry, action)) = remote.fetch(self.store, step, key, env, deps, &log) else {
            return Ok(None);
        };
        let log = log.exists().then_some(log);
        ActionRecord {
            entry: entry.file_name(),
            log: log.clone(),
        }
        .store(self.store, key)?;
        let record = StepRecord {
            key: key.clone(),
            status: "ok".into(),
            cached: true,
            log,
            duration_ms: 0,
            peak_rss_kib: None,
            remote_action: Some(farm_remote::digest_string(&action)),
        };
        Ok(Some((entry, record)))
    }

    /// The step run by the remote executor (`--remote-executor`) when it
    /// can run there: a hermetic script step that sees no secret, in a
    /// build without `farm check`'s in-script variations. None means here.
    fn remote_run(
        &self,
        step: &Step,
        key: &StepKey,
        env: &BuildEnv,
        deps: &StepOutputs,
    ) -> Result<Option<((StoreEntry, StepRecord), bool)>> {
        let Some(remote) = self.remote.filter(|r| r.executes()) else {
            return Ok(None);
        };
        let v = &env.variation;
        let remote_ok = matches!(step.action, StepAction::Script { .. })
            && env.hermetic
            && !(env.secrets.is_some() && sees_secrets(&step.id))
            && v.umask.is_none()
            && v.faketime.is_none()
            && !v.reverse_copy;
        if !remote_ok {
            return Ok(None);
        }
        let log = self.log_path(&step.id, key);
        std::fs::create_dir_all(&self.logs_dir)?;
        let started = Instant::now();
        // --no-cache and --rerun STEP run the step: the server must not answer from its cache.
        let skip_cache = self.no_cache || self.rerun.contains(&step.id);
        let run = match remote.execute_step(self.store, step, key, env, deps, &log, self.timeout, skip_cache) {
            Ok(Some(run)) => run,
            Ok(None) => return Ok(None),
            Err(e) => bail!("{e:#}; {}", failure_excerpt(step.id.as_str(), &log)),
        };
        let log = log.exists().then_some(log);
        ActionRecord {
            entry: run.entry.file_name(),
            log: log.clone(),
        }
        .store(self.store, key)?;
        Ok(Some((
            (
                run.entry,
                StepRecord {
                    key: key.clone(),
                    status: "ok".into(),
                    cached: run.cached,
                    log,
                    duration_ms: if run.cached {
                        0
                    } else {
                        started.elapsed().as_millis() as u64
                    },
                    peak_rss_kib: None,
                    remote_action: Some(farm_remote::digest_string(&run.action)),
                },
            ),
            run.cached,
        )))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_sandboxed(
        &self,
        script: &str,
        inputs: &[StoreEntry],
        extra_env: &[(String, String)],
        env: &BuildEnv,
        secrets: Option<&SecretFiles>,
        out: &Path,
        log: &Path,
    ) -> Result<(i32, bool, Option<u64>)> {
        let tc = env.toolchain.as_ref().expect("hermetic builds have a toolchain");
        let paths = env.paths();
        let mut spec = sandbox_spec(
            tc,
            inputs,
            vec![
                "/bin/sh".into(),
                "-c".into(),
                variation_preamble(env, true) + &scripts::render(script, &paths),
            ],
            env.source_date_epoch,
            Stdio::Capture {
                log: log.to_path_buf(),
                stream: false,
            },
            &env.limits,
        );
        spec.binds.push(Bind::writable(out, farm_sandbox::OUT_DIR));
        spec.env.extend(extra_env.iter().cloned());
        if let Some(s) = secrets {
            // A tmpfs /run of the step's own (the root's is read-only) holds the bind.
            spec.writable.push("/run".into());
            spec.binds.push(s.bind());
            spec.env.push(("FARM_SECRETS_DIR".into(), SECRETS_DIR.into()));
        }
        spec.timeout = Some(self.timeout);
        let executor = env.executor.as_ref().expect("hermetic builds have a sandbox");
        let o = executor.run(&spec)?;
        Ok((o.status, o.timed_out, o.peak_rss_kib))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_on_host(
        &self,
        script: &str,
        extra_env: &[(String, String)],
        env: &BuildEnv,
        secrets: Option<&SecretFiles>,
        build: &Path,
        out: &Path,
        log: &Path,
    ) -> Result<(i32, bool, Option<u64>)> {
        std::fs::create_dir_all(build.join("home"))?;
        let paths = scripts::Paths {
            hermetic: false,
            build: String::new(),
            out: String::new(),
        }
        .with_dirs(build, out);
        let logf = std::fs::File::create(log)?;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(variation_preamble(env, false) + &scripts::render(script, &paths))
            .current_dir(build)
            .env("HOME", build.join("home"))
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
            .env("SOURCE_DATE_EPOCH", env.source_date_epoch.to_string())
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONPATH")
            .envs(
                extra_env
                    .iter()
                    .map(|(k, v)| (k, v.replace(scripts::BUILD_PLACEHOLDER, &paths.build))),
            )
            .stdin(std::process::Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        if let Some(s) = secrets {
            cmd.env("FARM_SECRETS_DIR", s.host_dir());
        }
        let mut child = cmd.spawn().context("starting /bin/sh")?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((status.code().unwrap_or(1), false, None));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((1, true, None));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// libfaketime's multi-threaded build, where Debian's `libfaketime` puts it.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Shell lines that apply a `farm check` variation to a step.
fn variation_preamble(env: &BuildEnv, hermetic: bool) -> String {
    let v = &env.variation;
    let mut s = String::new();
    if let Some(m) = v.umask {
        s.push_str(&format!("umask {m:04o}\n"));
    }
    if v.reverse_copy {
        s.push_str("export FARM_REVERSE_COPY=1\n");
    }
    if let Some(ft) = &v.faketime {
        let available = if hermetic {
            env.toolchain
                .as_ref()
                .is_some_and(|tc| tc.root.path.join(FAKETIME_LIB.trim_start_matches('/')).exists())
        } else {
            Path::new(FAKETIME_LIB).exists()
        };
        if available {
            s.push_str(&format!(
                "export LD_PRELOAD={FAKETIME_LIB} FAKETIME={} DONT_FAKE_MONOTONIC=1\n",
                scripts::q(ft)
            ));
        }
    }
    s
}

/// The last 30 lines of a step's log and where the whole log is.
pub fn failure_excerpt(name: &str, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(30)..];
    format!(
        "last {} lines of its log:\n  | {}\nfull log: {}\nhint: `farm log {name}` shows it again",
        tail.len(),
        tail.join("\n  | "),
        log.display()
    )
}
