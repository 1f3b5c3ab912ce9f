//! `farm analyze`: the bundle report of the last build's frontend, without
//! building.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::Context;
use farm_bundle_report as analyze;
use farm_project::Project;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// The build's output directory [default: .farm/out in the project].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: AnalyzeArgs) -> Result<u8> {
    let project = Project::load(&ctx.project_dir)?;
    let out = args.out.unwrap_or_else(|| project.root.join(".farm").join("out"));
    let dist = out.join("frontend");
    if !dist.is_dir() {
        anyhow::bail!(
            "{}: no frontend output\nhint: run `farm build frontend` first",
            dist.display()
        );
    }
    let report = analyze::analyze(&dist)?;
    let json = report.to_json();
    std::fs::write(out.join("bundle-report.json"), &json).with_context(|| out.display().to_string())?;
    std::fs::write(
        out.join("bundle-report.html"),
        report.to_html(&project.config.project.name),
    )?;
    if args.json {
        print!("{json}");
        return Ok(0);
    }
    let mut files: Vec<_> = report.files.iter().filter(|f| f.kind.counts_toward_bundle()).collect();
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
    println!("{:<48} {:>12} {:>12}", "file", "size", "gzip");
    for f in &files {
        println!(
            "{:<48} {:>12} {:>12}",
            f.path,
            analyze::format_size(f.bytes),
            analyze::format_size(f.gzip_bytes)
        );
    }
    println!(
        "{:<48} {:>12} {:>12}",
        format!("total ({} files)", files.len()),
        analyze::format_size(report.totals.bytes),
        analyze::format_size(report.totals.gzip_bytes)
    );
    ctx.reporter
        .info(&format!("report: {}", out.join("bundle-report.html").display()));
    Ok(0)
}
