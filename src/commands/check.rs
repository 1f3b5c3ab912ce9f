//! `farm check`, `farm verify` and `farm diff`: arguments into the engine's
//! options, then the audit; the reports are printed here, as text or JSON.

use std::path::PathBuf;

use anyhow::Result;
use farm_engine::compare::FileDifference;
use farm_engine::ops::check::{self, CheckOptions, CheckReport, DiffOptions, FieldDifference, VerifyOptions};
use farm_engine::Target;

use crate::{Context, Exit};

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

/// The status of an audit: outputs that differ are the answer "no".
fn exit(same: bool) -> Exit {
    if same {
        Exit::Success
    } else {
        Exit::No
    }
}

/// Entry point of `farm check`.
pub fn run_check(ctx: &Context, args: CheckArgs) -> Result<Exit> {
    let opts = CheckOptions {
        targets: args.targets,
        rounds: args.rounds,
        keep: args.keep,
        hermetic: !args.no_hermetic,
    };
    let report = check::check(ctx, &opts)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_check(&report),
    }
    Ok(exit(report.reproducible))
}

fn print_check(r: &CheckReport) {
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
        println!("round trees: {} (kept with --keep)", r.dir.display());
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

fn print_field_differences(diffs: &[FieldDifference], a: &str, b: &str) {
    for d in diffs {
        println!("  {}: {a} {}, {b} {}", d.field, d.expected, d.found);
    }
}

/// Entry point of `farm verify`.
pub fn run_verify(ctx: &Context, args: VerifyArgs) -> Result<Exit> {
    let opts = VerifyOptions {
        manifest: args.manifest,
    };
    let v = check::verify(ctx, &opts)?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "verified": v.verified, "published": v.published, "rebuilt": v.rebuilt,
                "differences": v.differences, "rebuilt_tree": v.rebuilt_tree,
            }))?
        ),
        Format::Text => {
            if v.verified {
                println!(
                    "verified: the rebuild reproduces {} ({})",
                    opts.manifest.display(),
                    v.published
                );
            } else {
                println!("NOT VERIFIED: the rebuild differs from {}", opts.manifest.display());
                print_field_differences(&v.differences, "published", "rebuilt");
                println!("rebuilt output: {}", v.rebuilt_tree.display());
            }
        }
    }
    Ok(exit(v.verified))
}

/// Entry point of `farm diff`.
pub fn run_diff(ctx: &Context, args: DiffArgs) -> Result<Exit> {
    let opts = DiffOptions { a: args.a, b: args.b };
    let d = check::diff(ctx, &opts)?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"same": d.same, "differences": d.differences}))?
        ),
        Format::Text => {
            if d.same {
                println!("identical: {}", d.digest);
            } else {
                println!("{} and {} differ:", opts.a.display(), opts.b.display());
                print_field_differences(&d.differences, "A", "B");
            }
        }
    }
    Ok(exit(d.same))
}
