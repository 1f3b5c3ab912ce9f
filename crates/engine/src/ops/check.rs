//! `farm check`, `farm verify` and `farm diff`: the reproducibility audit.
//! `check` rebuilds from the same locked inputs under deliberately different
//! conditions and compares every output; `verify` rebuilds and compares with
//! a published manifest; `diff` compares two manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use farm_project::{Project, StatePaths};
use serde::Serialize;

use crate::compare::{self, FileDifference};
use crate::manifest::Manifest;
use crate::{build_project, BuildOptions, Context, Target, Variation};

/// What `farm check` is asked to do.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Targets to rebuild; empty is all.
    pub targets: Vec<Target>,
    /// How many builds to compare (at least 2).
    pub rounds: usize,
    /// Keep every round's output tree.
    pub keep: bool,
    /// Build in the sandbox (else on the host, which varies too).
    pub hermetic: bool,
}

/// The outcome of `farm check`, as `--format json` prints it.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub reproducible: bool,
    pub rounds: Vec<Round>,
    pub outputs: BTreeMap<String, OutputReport>,
    /// Where the rounds were built and the diffoscope reports are.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// One build of `farm check` and the conditions it ran under.
#[derive(Debug, Serialize)]
pub struct Round {
    pub index: usize,
    pub variation: Variation,
    pub jobs: usize,
    pub cpus: Option<usize>,
    pub aslr: bool,
    pub manifest_digest: String,
}

/// One output across the rounds.
#[derive(Debug, Serialize)]
pub struct OutputReport {
    pub step: String,
    pub reproducible: bool,
    /// Its digest in each round.
    pub digests: Vec<String>,
    /// The files that differ between the reference and the first differing round.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<FileDifference>,
}

fn step_of(output: &str) -> &str {
    match output {
        "openapi" => "backend",
        "api-types" => "types",
        o if o.starts_with("image.") => "images",
        o if o.starts_with("step.") => &o[5..],
        other => other,
    }
}

/// The variation of round `i` (round 0 is the reference).
fn variation(i: usize, root: &Path) -> (Variation, usize, Option<usize>, bool) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if i == 0 {
        return (
            Variation {
                label: "reference".into(),
                ..Default::default()
            },
            cpus,
            None,
            true,
        );
    }
    let _ = root;
    let odd = i % 2 == 1;
    let v = Variation {
        label: format!("round {i}"),
        build_dir: Some(format!("/build/farm-check-round-{i}")),
        reverse_order: odd,
        umask: Some(if odd { 0o077 } else { 0o002 }),
        faketime: Some(format!("{}{}d", if odd { "+" } else { "-" }, 3650 * i.div_ceil(2))),
        reverse_copy: odd,
    };
    // Odd rounds: one CPU, one job, no ASLR; even rounds: all CPUs, ASLR on.
    if odd {
        (v, 1, Some(1), false)
    } else {
        (v, cpus, None, true)
    }
}

/// Entry point of `farm check`: builds `rounds` times, each under different
/// conditions, and compares every output with the first round's.
pub fn check(ctx: &Context, opts: &CheckOptions) -> Result<CheckReport> {
    if opts.rounds < 2 {
        bail!("--rounds must be at least 2 (found {})", opts.rounds);
    }
    let project = Project::load(&ctx.project_dir)?;
    let root = std::fs::canonicalize(&project.root)?;
    // The rounds' output directories must be absolute: from the canonical root.
    let check_dir = StatePaths::new(&root).check();
    if check_dir.exists() {
        std::fs::remove_dir_all(&check_dir).with_context(|| check_dir.display().to_string())?;
    }
    let targets = if opts.targets.is_empty() {
        vec![Target::All]
    } else {
        opts.targets.clone()
    };
    let mut rounds = Vec::new();
    let mut manifests = Vec::new();
    for i in 0..opts.rounds {
        let (v, jobs, cpus, aslr) = variation(i, &root);
        ctx.reporter
            .info(&format!("round {i}: {}", describe(&v, jobs, cpus, aslr)));
        let out = check_dir.join(format!("round-{i}"));
        let build = BuildOptions {
            targets: targets.clone(),
            hermetic: opts.hermetic,
            jobs: Some(jobs),
            no_cache: true,
            rerun: vec![],
            out: Some(out.clone()),
            analyze: false,
            size_limit: None,
            profile: None,
            step_timeout: Duration::from_secs(3600),
            variation: v.clone(),
            env: farm_project::config::DEFAULT_ENV.into(),
            dev: false,
            compression: None,
            skip_types_check: false,
            settings: Default::default(),
        };
        let built = with_process_conditions(cpus, aslr, || build_project(ctx, &project, &build))
            .with_context(|| format!("round {i} of farm check"))?;
        rounds.push(Round {
            index: i,
            variation: v,
            jobs,
            cpus,
            aslr,
            manifest_digest: built.manifest.digest.clone(),
        });
        manifests.push((out, built.manifest));
    }

    let mut outputs = BTreeMap::new();
    let names: BTreeSet<&String> = manifests.iter().flat_map(|(_, m)| m.outputs.keys()).collect();
    for name in names {
        let digests: Vec<String> = manifests
            .iter()
            .map(|(_, m)| {
                m.outputs
                    .get(name)
                    .map(|o| o.digest.clone())
                    .unwrap_or_else(|| "missing".into())
            })
            .collect();
        let reproducible = digests.iter().all(|d| *d == digests[0]);
        let mut differences = Vec::new();
        if !reproducible {
            let j = digests
                .iter()
                .position(|d| *d != digests[0])
                .expect("a differing round");
            let rel = manifests[0]
                .1
                .outputs
                .get(name)
                .map(|o| o.path.clone())
                .unwrap_or_else(|| name.clone());
            differences = compare::diff_trees(&manifests[0].0, &manifests[j].0, &rel, 20)?;
            for (n, d) in differences.iter_mut().enumerate().take(3) {
                if d.kind == "changed" {
                    let report = check_dir.join("diffoscope").join(format!("{name}-{n}.txt"));
                    d.diffoscope =
                        compare::diffoscope(&manifests[0].0.join(&d.path), &manifests[j].0.join(&d.path), &report);
                }
            }
        }
        outputs.insert(
            name.clone(),
            OutputReport {
                step: step_of(name).into(),
                reproducible,
                digests,
                differences,
            },
        );
    }
    if !opts.keep {
        // Keep the diffoscope reports; drop the trees.
        for i in 0..opts.rounds {
            let _ = std::fs::remove_dir_all(check_dir.join(format!("round-{i}")));
        }
    }
    Ok(CheckReport {
        reproducible: outputs.values().all(|o| o.reproducible),
        rounds,
        outputs,
        dir: check_dir,
    })
}

fn describe(v: &Variation, jobs: usize, cpus: Option<usize>, aslr: bool) -> String {
    let mut parts = vec![format!("{jobs} jobs")];
    if let Some(c) = cpus {
        parts.push(format!("{c} CPU"));
    }
    parts.push(if aslr { "ASLR on".into() } else { "ASLR off".into() });
    if v.reverse_order {
        parts.push("reversed step order".into());
    }
    if let Some(m) = v.umask {
        parts.push(format!("umask {m:04o}"));
    }
    if let Some(f) = &v.faketime {
        parts.push(format!("clock {f}"));
    }
    if let Some(b) = &v.build_dir {
        parts.push(format!("build dir {b}"));
    }
    if v.reverse_copy {
        parts.push("reversed file creation order".into());
    }
    parts.join(", ")
}

/// Runs `f` with the CPU affinity and ASLR of this thread set as asked; the
/// build's threads and the sandboxes they start inherit both.
fn with_process_conditions<T>(cpus: Option<usize>, aslr: bool, f: impl FnOnce() -> Result<T>) -> Result<T> {
    // SAFETY: plain syscalls on the calling thread with valid arguments.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        let have_old = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) == 0;
        if let (Some(n), true) = (cpus, have_old) {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let mut added = 0;
            for cpu in 0..libc::CPU_SETSIZE as usize {
                if added < n && libc::CPU_ISSET(cpu, &old) {
                    libc::CPU_SET(cpu, &mut set);
                    added += 1;
                }
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let old_persona = libc::personality(0xffff_ffff);
        if !aslr && old_persona >= 0 {
            libc::personality((old_persona | libc::ADDR_NO_RANDOMIZE) as libc::c_ulong);
        }
        let r = f();
        if have_old {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old);
        }
        if old_persona >= 0 {
            libc::personality(old_persona as libc::c_ulong);
        }
        r
    }
}

/// A manifest field whose value differs between two manifests.
#[derive(Debug, Serialize)]
pub struct FieldDifference {
    pub field: String,
    pub expected: String,
    pub found: String,
}

fn manifest_differences(a: &Manifest, b: &Manifest) -> Vec<FieldDifference> {
    let mut out = Vec::new();
    let mut push = |field: String, x: &str, y: &str| {
        if x != y {
            out.push(FieldDifference {
                field,
                expected: x.into(),
                found: y.into(),
            });
        }
    };
    push("hermetic".into(), &a.hermetic.to_string(), &b.hermetic.to_string());
    push(
        "source_date_epoch".into(),
        &a.source_date_epoch.to_string(),
        &b.source_date_epoch.to_string(),
    );
    push("inputs.lock".into(), &a.inputs.lock, &b.inputs.lock);
    push("inputs.farm_toml".into(), &a.inputs.farm_toml, &b.inputs.farm_toml);
    let keys: BTreeSet<&String> = a.inputs.sources.keys().chain(b.inputs.sources.keys()).collect();
    for k in keys {
        let get = |m: &Manifest| m.inputs.sources.get(k).cloned().unwrap_or_else(|| "missing".into());
        push(format!("inputs.sources.{k}"), &get(a), &get(b));
    }
    let keys: BTreeSet<&String> = a.outputs.keys().chain(b.outputs.keys()).collect();
    for k in keys {
        let get = |m: &Manifest| {
            m.outputs
                .get(k)
                .map(|o| o.digest.clone())
                .unwrap_or_else(|| "missing".into())
        };
        push(format!("outputs.{k}"), &get(a), &get(b));
    }
    out
}

/// Reads a manifest; one whose `digest` does not match its contents is still
/// compared field by field (that is how an edit gets named), with a warning.
fn read_manifest(ctx: &Context, path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let m: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not a farm-manifest.json", path.display()))?;
    if m.digest != m.compute_digest() {
        ctx.reporter.warn(&format!(
            "{}: its digest field {} does not match its contents ({}); it was edited after farm wrote it",
            path.display(),
            m.digest,
            m.compute_digest()
        ));
    }
    Ok(m)
}

/// What `farm verify` is asked to do.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The published farm-manifest.json to reproduce.
    pub manifest: PathBuf,
}

/// The outcome of `farm verify`.
#[derive(Debug)]
pub struct Verification {
    /// The rebuild reproduces the published manifest.
    pub verified: bool,
    pub published: String,
    pub rebuilt: String,
    /// Published (`expected`) against rebuilt (`found`).
    pub differences: Vec<FieldDifference>,
    /// Where the rebuild's outputs are.
    pub rebuilt_tree: PathBuf,
}

/// Entry point of `farm verify`: rebuilds hermetically, as the published
/// manifest was built, and compares.
pub fn verify(ctx: &Context, opts: &VerifyOptions) -> Result<Verification> {
    let published = read_manifest(ctx, &opts.manifest)?;
    let project = Project::load(&ctx.project_dir)?;
    let root = std::fs::canonicalize(&project.root)?;
    // The output directory must be absolute: from the canonical root.
    let out = StatePaths::new(&root).verify();
    let build = BuildOptions {
        targets: vec![Target::All],
        hermetic: true,
        jobs: None,
        no_cache: true,
        rerun: vec![],
        out: Some(out.clone()),
        analyze: false,
        size_limit: None,
        profile: None,
        step_timeout: Duration::from_secs(3600),
        variation: Variation::default(),
        env: published.environment.clone(),
        dev: published.dev,
        compression: None,
        skip_types_check: false,
        settings: Default::default(),
    };
    let built = build_project(ctx, &project, &build)?;
    let differences = manifest_differences(&published, &built.manifest);
    Ok(Verification {
        verified: differences.is_empty() && published.digest == built.manifest.digest,
        published: published.digest,
        rebuilt: built.manifest.digest,
        differences,
        rebuilt_tree: out,
    })
}

/// What `farm diff` is asked to compare.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub a: PathBuf,
    pub b: PathBuf,
}

/// The outcome of `farm diff`.
#[derive(Debug)]
pub struct ManifestDiff {
    pub same: bool,
    /// The digest of `a`.
    pub digest: String,
    /// `a` (`expected`) against `b` (`found`).
    pub differences: Vec<FieldDifference>,
}

/// Entry point of `farm diff`: compares two manifests without building.
pub fn diff(ctx: &Context, opts: &DiffOptions) -> Result<ManifestDiff> {
    let a = read_manifest(ctx, &opts.a)?;
    let b = read_manifest(ctx, &opts.b)?;
    let differences = manifest_differences(&a, &b);
    Ok(ManifestDiff {
        same: differences.is_empty() && a.digest == b.digest,
        digest: a.digest,
        differences,
    })
}
