//! `farm check`, `farm verify` and `farm diff`: the reproducibility audit.
//! `check` rebuilds from the same locked inputs under deliberately different
//! conditions and compares every output; `verify` rebuilds and compares with
//! a published manifest; `diff` compares two manifests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::{Context, EXIT_NO};
use farm_engine::compare::{self, FileDifference};
use farm_engine::manifest::Manifest;
use farm_engine::{self, BuildOptions, Target, Variation};
use farm_project::Project;

/// Exit status when outputs differ (also used by verify and diff).
pub const EXIT_NOT_REPRODUCIBLE: u8 = EXIT_NO;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Targets to rebuild (default: all).
    #[arg(long = "target", value_enum)]
    targets: Vec<Target>,
    /// How many builds to compare.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Keep every round's output tree (under .farm/check/) for inspection.
    #[arg(long)]
    keep: bool,
    /// Build on the host instead of in the sandbox (weaker: the host varies too).
    #[arg(long)]
    no_hermetic: bool,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The published farm-manifest.json to reproduce.
    manifest: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    a: PathBuf,
    b: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Serialize)]
struct Round {
    index: usize,
    variation: Variation,
    jobs: usize,
    cpus: Option<usize>,
    aslr: bool,
    manifest_digest: String,
}

#[derive(Serialize)]
struct OutputReport {
    step: String,
    reproducible: bool,
    digests: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    differences: Vec<FileDifference>,
}

#[derive(Serialize)]
struct CheckReport {
    reproducible: bool,
    rounds: Vec<Round>,
    outputs: BTreeMap<String, OutputReport>,
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

pub fn run_check(ctx: &Context, args: CheckArgs) -> Result<u8> {
    if args.rounds < 2 {
        bail!("--rounds must be at least 2 (found {})", args.rounds);
    }
    let project = Project::load(&ctx.project_dir)?;
    let root = std::fs::canonicalize(&project.root)?;
    let check_dir = root.join(".farm").join("check");
    if check_dir.exists() {
        std::fs::remove_dir_all(&check_dir).with_context(|| check_dir.display().to_string())?;
    }
    let targets = if args.targets.is_empty() {
        vec![Target::All]
    } else {
        args.targets.clone()
    };
    let mut rounds = Vec::new();
    let mut manifests = Vec::new();
    for i in 0..args.rounds {
        let (v, jobs, cpus, aslr) = variation(i, &root);
        ctx.reporter
            .info(&format!("round {i}: {}", describe(&v, jobs, cpus, aslr)));
        let out = check_dir.join(format!("round-{i}"));
        let opts = BuildOptions {
            targets: targets.clone(),
            hermetic: !args.no_hermetic,
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
        };
        let built = with_process_conditions(cpus, aslr, || farm_engine::build_project(ctx, &project, &opts))
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
    let names: std::collections::BTreeSet<&String> = manifests.iter().flat_map(|(_, m)| m.outputs.keys()).collect();
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
    let reproducible = outputs.values().all(|o| o.reproducible);
    let report = CheckReport {
        reproducible,
        rounds,
        outputs,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_check(&report, &check_dir),
    }
    if !args.keep {
        // Keep the diffoscope reports; drop the trees.
        for i in 0..args.rounds {
            let _ = std::fs::remove_dir_all(check_dir.join(format!("round-{i}")));
        }
    }
    Ok(if reproducible { 0 } else { EXIT_NOT_REPRODUCIBLE })
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

fn print_check(r: &CheckReport, check_dir: &Path) {
    let ok: Vec<&str> = r
        .outputs
        .iter()
        .filter(|(_, o)| o.reproducible)
        .map(|(n, _)| n.as_str())
        .collect();
    println!("farm check: {} rounds", r.rounds.len());
    if !ok.is_empty() {
        println!("reproducible: {}", ok.join(", "));
    }
    for (name, o) in r.outputs.iter().filter(|(_, o)| !o.reproducible) {
        println!("NOT REPRODUCIBLE: output {name} (step {})", o.step);
        for (i, d) in o.digests.iter().enumerate() {
            println!("  round {i}: {d}");
        }
        print_differences(&o.differences);
    }
    if r.reproducible {
        println!("all outputs are bit-for-bit identical");
    } else {
        println!("round trees: {} (kept with --keep)", check_dir.display());
    }
}

fn print_differences(diffs: &[FileDifference]) {
    for d in diffs {
        let size = |s: Option<u64>| s.map(|s| format!("{s} bytes")).unwrap_or_else(|| "-".into());
        let dig = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        println!("  {} ({})", d.path, d.kind);
        println!("    reference: {} {}", size(d.sizes[0]), dig(&d.digests[0]));
        println!("    other:     {} {}", size(d.sizes[1]), dig(&d.digests[1]));
        if let Some(b) = &d.first_difference {
            println!(
                "    first difference at byte {} (context from byte {}):",
                b.offset, b.context_start
            );
            println!("      reference: {:<48} |{}|", b.hex[0], b.text[0]);
            println!("      other:     {:<48} |{}|", b.hex[1], b.text[1]);
        }
        if let Some(p) = &d.diffoscope {
            println!("    diffoscope: {}", p.display());
        }
    }
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

#[derive(Serialize)]
struct FieldDifference {
    field: String,
    expected: String,
    found: String,
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
    let keys: std::collections::BTreeSet<&String> = a.inputs.sources.keys().chain(b.inputs.sources.keys()).collect();
    for k in keys {
        let get = |m: &Manifest| m.inputs.sources.get(k).cloned().unwrap_or_else(|| "missing".into());
        push(format!("inputs.sources.{k}"), &get(a), &get(b));
    }
    let keys: std::collections::BTreeSet<&String> = a.outputs.keys().chain(b.outputs.keys()).collect();
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

fn print_field_differences(diffs: &[FieldDifference], a: &str, b: &str) {
    for d in diffs {
        println!("  {}: {a} {}, {b} {}", d.field, d.expected, d.found);
    }
}

pub fn run_verify(ctx: &Context, args: VerifyArgs) -> Result<u8> {
    let published = read_manifest(ctx, &args.manifest)?;
    let project = Project::load(&ctx.project_dir)?;
    let root = std::fs::canonicalize(&project.root)?;
    let out = root.join(".farm").join("verify");
    let opts = BuildOptions {
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
    };
    let built = farm_engine::build_project(ctx, &project, &opts)?;
    let diffs = manifest_differences(&published, &built.manifest);
    let same = diffs.is_empty() && published.digest == built.manifest.digest;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "verified": same, "published": published.digest, "rebuilt": built.manifest.digest,
                "differences": diffs, "rebuilt_tree": out,
            }))?
        ),
        Format::Text => {
            if same {
                println!(
                    "verified: the rebuild reproduces {} ({})",
                    args.manifest.display(),
                    published.digest
                );
            } else {
                println!("NOT VERIFIED: the rebuild differs from {}", args.manifest.display());
                print_field_differences(&diffs, "published", "rebuilt");
                println!("rebuilt output: {}", out.display());
            }
        }
    }
    Ok(if same { 0 } else { EXIT_NOT_REPRODUCIBLE })
}

pub fn run_diff(ctx: &Context, args: DiffArgs) -> Result<u8> {
    let a = read_manifest(ctx, &args.a)?;
    let b = read_manifest(ctx, &args.b)?;
    let diffs = manifest_differences(&a, &b);
    let same = diffs.is_empty() && a.digest == b.digest;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"same": same, "differences": diffs}))?
        ),
        Format::Text => {
            if same {
                println!("identical: {}", a.digest);
            } else {
                println!("{} and {} differ:", args.a.display(), args.b.display());
                print_field_differences(&diffs, "A", "B");
            }
        }
    }
    Ok(if same { 0 } else { EXIT_NOT_REPRODUCIBLE })
}
