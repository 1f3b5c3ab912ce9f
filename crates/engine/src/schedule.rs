//! The build graph: steps with their keys, run in dependency order with up
//! to `jobs` at once, each looked up in the action cache first. A step's
//! output (its /out) becomes one store entry; the cache maps key → entry.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use farm_sandbox::{Bind, Limits, Network, RootSpec, Stdio, StepSpec};
use farm_store::{Store, StoreEntry};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::manifest::TraceEvent;
use crate::reporter::Reporter;
use crate::scripts;
use crate::toolchain::Toolchain;
use crate::BuildEnv;

/// Bumped when the meaning of a step key changes, so old cache entries miss.
const KEY_VERSION: &str = concat!("farm-step-v1 farm-", env!("CARGO_PKG_VERSION"));

/// An in-process step: fills its output directory from store entries,
/// given the outputs of the steps it takes inputs from.
pub type InProcessFn = Box<dyn Fn(&Path, &BTreeMap<String, StoreEntry>) -> Result<()> + Send + Sync>;

pub struct Step {
    pub name: String,
    /// Steps that must finish first.
    pub after: Vec<String>,
    /// Steps whose outputs are inputs of this one (part of its key); each is also in `after`.
    pub inputs_from: Vec<String>,
    pub action: StepAction,
}

pub enum StepAction {
    /// A shell script run in the sandbox (or on the host without --hermetic).
    Script {
        script: String,
        inputs: Vec<StoreEntry>,
        extra_env: Vec<(String, String)>,
    },
    /// Trusted in-process assembly from store entries (no tools run).
    InProcess { key_parts: Vec<String>, run: InProcessFn },
}

impl Step {
    /// SHA-256 over a canonical description of everything the step can see.
    pub fn key(&self, env: &BuildEnv, deps: &BTreeMap<String, StoreEntry>) -> String {
        let deps: BTreeMap<&String, String> = deps.iter().map(|(k, e)| (k, e.file_name())).collect();
        let desc = match &self.action {
            StepAction::Script {
                script,
                inputs,
                extra_env,
            } => {
                let mut ins: Vec<String> = inputs.iter().map(|e| e.file_name()).collect();
                if let Some(tc) = &env.toolchain {
                    ins.extend(tc.inputs.iter().map(|e| e.file_name()));
                    ins.push(format!("root={}", tc.root.file_name()));
                }
                ins.sort();
                serde_json::json!({
                    "v": KEY_VERSION, "name": self.name, "hermetic": env.hermetic, "script": script,
                    "inputs": ins, "env": extra_env, "host": env.host_tools,
                    "source_date_epoch": env.source_date_epoch, "variation": env.variation,
                    "deps": deps,
                })
            }
            StepAction::InProcess { key_parts, .. } => {
                serde_json::json!({"v": KEY_VERSION, "name": self.name, "parts": key_parts, "deps": deps})
            }
        };
        hex::encode(sha2::Sha256::digest(serde_json::to_vec(&desc).expect("json")))
    }
}

pub struct Runner<'a> {
    pub store: &'a Store,
    pub reporter: &'a Reporter,
    pub jobs: usize,
    pub no_cache: bool,
    /// Steps run even when the action cache has their key.
    pub rerun: Vec<String>,
    pub logs_dir: PathBuf,
    pub timeout: Duration,
    /// Start ready steps last-first (a `farm check` variation).
    pub reverse_order: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub key: String,
    pub status: String,
    pub cached: bool,
    pub log: Option<PathBuf>,
    pub duration_ms: u64,
    pub peak_rss_kib: Option<u64>,
}

pub struct StepResult {
    pub name: String,
    pub entry: StoreEntry,
    pub record: StepRecord,
    pub start: Duration,
    pub lane: usize,
}

pub struct Results {
    pub steps: Vec<StepResult>,
    pub records: BTreeMap<String, StepRecord>,
    pub failure: Option<anyhow::Error>,
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
        serde_json::json!({
            "total_ms": total.as_millis() as u64,
            "steps": self.records,
            "cache_hits": self.records.values().filter(|r| r.cached).count(),
            "peak_rss_kib": peak,
        })
    }

    pub fn trace(&self) -> Vec<TraceEvent> {
        self.steps
            .iter()
            .map(|s| TraceEvent {
                name: s.name.clone(),
                key: s.record.key.clone(),
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
pub fn write_record(path: &Path, results: &Results, steps: &[Step], env: &BuildEnv) -> Result<()> {
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
    let v = serde_json::json!({"steps": results.records, "entries": entries});
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

pub fn read_record(path: &Path) -> Result<BTreeMap<String, StepRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "{}: no build has run in this project yet\nhint: run `farm build`",
            path.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(serde_json::from_value(v["steps"].clone())?)
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
        let names: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut keys: Vec<String> = vec![String::new(); steps.len()];
        let mut outputs: BTreeMap<String, StoreEntry> = BTreeMap::new();
        let mut state = vec![0u8; steps.len()]; // 0 waiting, 1 running, 2 done, 3 failed
        let mut lanes = vec![false; self.jobs];
        let mut results = Results {
            steps: vec![],
            records: BTreeMap::new(),
            failure: None,
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
                        .all(|d| names.get(d.as_str()).is_none_or(|&j| state[j] == 2));
                    let Some(lane) = lanes.iter().position(|busy| !busy) else {
                        break;
                    };
                    if !ready {
                        continue;
                    }
                    state[i] = 1;
                    lanes[lane] = true;
                    let deps: BTreeMap<String, StoreEntry> = steps[i]
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
                break;
            }
            let done = rx.recv().expect("a running step reports");
            lanes[done.lane] = false;
            let name = steps[done.index].name.clone();
            match done.result {
                Ok((entry, record)) => {
                    state[done.index] = 2;
                    outputs.insert(name.clone(), entry.clone());
                    results.records.insert(name.clone(), record.clone());
                    results.steps.push(StepResult {
                        name,
                        entry,
                        record,
                        start: done.start,
                        lane: done.lane,
                    });
                }
                Err(e) => {
                    state[done.index] = 3;
                    results.records.insert(
                        name.clone(),
                        StepRecord {
                            key: keys[done.index].clone(),
                            status: "failed".into(),
                            cached: false,
                            log: Some(self.log_path(&name, &keys[done.index])),
                            duration_ms: 0,
                            peak_rss_kib: None,
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

    fn log_path(&self, name: &str, key: &str) -> PathBuf {
        self.logs_dir.join(format!("{name}-{}.log", &key[..16]))
    }

    fn run_step(
        &self,
        step: &Step,
        key: &str,
        env: &BuildEnv,
        deps: &BTreeMap<String, StoreEntry>,
    ) -> Result<(StoreEntry, StepRecord)> {
        let line = self.reporter.step(&step.name);
        let cache_key = format!("step:{key}");
        if !self.no_cache && !self.rerun.contains(&step.name) {
            if let Some(v) = self.store.action_get(&cache_key)? {
                if let Some(e) = v
                    .get("entry")
                    .and_then(|n| n.as_str())
                    .map(|n| self.store.entry(n))
                    .transpose()?
                    .flatten()
                {
                    self.store.touch(&e)?;
                    let log = v.get("log").and_then(|l| l.as_str()).map(PathBuf::from);
                    line.finish("cached");
                    return Ok((
                        e,
                        StepRecord {
                            key: key.into(),
                            status: "ok".into(),
                            cached: true,
                            log,
                            duration_ms: 0,
                            peak_rss_kib: None,
                        },
                    ));
                }
            }
        }
        let staging = self.store.temp_dir()?;
        let out = staging.path().join("out");
        std::fs::create_dir_all(&out)?;
        let log = self.log_path(&step.name, key);
        std::fs::create_dir_all(&self.logs_dir)?;
        let started = Instant::now();
        let mut peak = None;
        let outcome: Result<()> = match &step.action {
            StepAction::InProcess { run, .. } => {
                std::fs::write(
                    &log,
                    format!("{}: assembled in-process from store entries\n", step.name),
                )?;
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
                let r = if env.hermetic {
                    self.run_sandboxed(&script, &inputs, extra_env, env, &out, &log)
                } else {
                    self.run_on_host(&script, extra_env, env, &staging.path().join("build"), &out, &log)
                };
                r.map(|(status, timed_out, rss)| {
                    peak = rss;
                    (status, timed_out)
                })
                .and_then(|(status, timed_out)| {
                    if timed_out {
                        bail!(
                            "step {} ran past its {}s timeout and was killed",
                            step.name,
                            self.timeout.as_secs()
                        );
                    }
                    if status != 0 {
                        bail!("step {} failed with exit status {status}", step.name);
                    }
                    Ok(())
                })
            }
        };
        if let Err(e) = outcome {
            line.finish("FAILED");
            return Err(anyhow::anyhow!("{e:#}; {}", failure_excerpt(&step.name, &log)));
        }
        let entry = self.store.adopt_tree(&out, &format!("out-{}", step.name), "output")?;
        self.store
            .action_put(&cache_key, &serde_json::json!({"entry": entry.file_name(), "log": log}))?;
        let duration_ms = started.elapsed().as_millis() as u64;
        line.finish("built");
        Ok((
            entry,
            StepRecord {
                key: key.into(),
                status: "ok".into(),
                cached: false,
                log: Some(log),
                duration_ms,
                peak_rss_kib: peak,
            },
        ))
    }

    fn run_sandboxed(
        &self,
        script: &str,
        inputs: &[StoreEntry],
        extra_env: &[(String, String)],
        env: &BuildEnv,
        out: &Path,
        log: &Path,
    ) -> Result<(i32, bool, Option<u64>)> {
        let tc = env.toolchain.as_ref().expect("hermetic builds have a toolchain");
        let mut binds: Vec<Bind> = tc
            .inputs
            .iter()
            .chain(inputs.iter())
            .map(|e| Bind::read_only(&e.path, Toolchain::sandbox_path(e)))
            .collect();
        binds.sort_by(|a, b| a.target.cmp(&b.target));
        binds.dedup_by(|a, b| a.target == b.target);
        binds.push(Bind::writable(out, farm_sandbox::OUT_DIR));
        let paths = env.paths();
        let mut spec = StepSpec::new(
            RootSpec::Dir(tc.root.path.clone()),
            vec![
                "/bin/sh".into(),
                "-c".into(),
                variation_preamble(env, true) + &scripts::render(script, &paths),
            ],
            Stdio::Capture {
                log: log.to_path_buf(),
                stream: false,
            },
        );
        spec.binds = binds;
        spec.env = tc.env(env.source_date_epoch);
        spec.env.extend(extra_env.iter().cloned());
        spec.hostname = "farm".into();
        spec.timeout = Some(self.timeout);
        spec.limits = Limits::default();
        spec.network = Network::None;
        let backend = env.backend.as_ref().expect("hermetic builds have a sandbox");
        let o = backend.run(&spec)?;
        Ok((o.status, o.timed_out, o.peak_rss_kib))
    }

    fn run_on_host(
        &self,
        script: &str,
        extra_env: &[(String, String)],
        env: &BuildEnv,
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
