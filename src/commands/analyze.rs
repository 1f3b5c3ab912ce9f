//! `farm analyze [bundle]`: arguments into `AnalyzeOptions`, then the engine's
//! analysis; the table (or the JSON report) is printed here.

use std::path::PathBuf;

use anyhow::Result;
use farm_bundle_report::format_size;
use farm_engine::ops::analyze::{analyze, AnalyzeOptions};

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// What to analyze: the frontend bundle (`farm analyze bundle`; also the default).
    #[arg(value_enum, default_value = "bundle")]
    what: Analysis,
    /// The build's output directory [default: .farm/out in the project].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

/// The reports `farm analyze` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Analysis {
    /// The frontend bundle: files, sizes, gzip sizes (bundle-report.json and .html).
    Bundle,
}

/// Entry point of `farm analyze` and `farm analyze bundle`.
pub fn run(ctx: &Context, args: AnalyzeArgs) -> Result<Exit> {
    let Analysis::Bundle = args.what;
    let a = analyze(ctx, &AnalyzeOptions { out: args.out })?;
    if args.json {
        print!("{}", a.json);
        return Ok(Exit::Success);
    }
    let report = &a.report;
    let mut files: Vec<_> = report.files.iter().filter(|f| f.kind.counts_toward_bundle()).collect();
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
    println!("{:<48} {:>12} {:>12}", "file", "size", "gzip");
    for f in &files {
        println!(
            "{:<48} {:>12} {:>12}",
            f.path,
            format_size(f.bytes),
            format_size(f.gzip_bytes)
        );
    }
    println!(
        "{:<48} {:>12} {:>12}",
        format!("total ({} files)", files.len()),
        format_size(report.totals.bytes),
        format_size(report.totals.gzip_bytes)
    );
    ctx.reporter.info(&format!("report: {}", a.html.display()));
    Ok(Exit::Success)
}
