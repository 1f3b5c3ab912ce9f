//! `farm analyze` (`farm analyze bundle`): the bundle report of the last build's frontend, without
//! building.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use farm_bundle_report::BundleReport;
use farm_project::Project;

use crate::Context;

/// What `farm analyze` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// The build's output directory; `None` is `.farm/out`.
    pub out: Option<PathBuf>,
}

/// The report `farm analyze` wrote beside the build's output.
pub struct Analysis {
    pub report: BundleReport,
    /// The report as bundle-report.json holds it.
    pub json: String,
    /// bundle-report.html.
    pub html: PathBuf,
}

/// Entry point of `farm analyze`: analyzes the built frontend and writes
/// bundle-report.json and bundle-report.html into the output directory.
pub fn analyze(ctx: &Context, opts: &AnalyzeOptions) -> Result<Analysis> {
    let project = Project::load(&ctx.project_dir)?;
    let out = opts.out.clone().unwrap_or_else(|| project.state().out());
    let dist = out.join("frontend");
    if !dist.is_dir() {
        bail!(
            "{}: no frontend output\nhint: run `farm build frontend` first",
            dist.display()
        );
    }
    let report = farm_bundle_report::analyze(&dist)?;
    let json = report.to_json();
    std::fs::write(out.join("bundle-report.json"), &json).with_context(|| out.display().to_string())?;
    let html = out.join("bundle-report.html");
    std::fs::write(&html, report.to_html(&project.config.project.name))?;
    Ok(Analysis { report, json, html })
}
