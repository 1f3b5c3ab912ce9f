//! What the user sees: progress bars on a terminal, plain lines in CI and
//! pipes, nothing but errors with `--quiet`. Work code reports through this,
//! never by printing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Reporter {
    quiet: bool,
    /// Some when bars are drawn (stderr is a terminal and not CI).
    bars: Option<Arc<MultiProgress>>,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        let fancy = !quiet && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bars = fancy.then(|| Arc::new(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())));
        Reporter { quiet, bars }
    }

    /// A line of progress or result (stderr; stdout is kept for data).
    pub fn info(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    pub fn warn(&self, msg: &str) {
        match &self.bars {
            Some(m) => {
                let _ = m.println(format!("warning: {msg}"));
            }
            None => eprintln!("warning: {msg}"),
        }
    }

    pub fn error(&self, msg: &str) {
        eprintln!("error: {msg}");
    }

    /// A byte-progress task (a download). Plain mode prints one line when it ends.
    pub fn task(&self, label: &str) -> Task {
        let bar = self.bars.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(0));
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg:40!} {bytes:>10}/{total_bytes:10} {bar:25} {eta}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Task {
            bar,
            label: label.to_string(),
            reporter: self.clone(),
        }
    }

    /// A counting task (n of total).
    pub fn counter(&self, label: &str, total: u64) -> Counter {
        let bar = self.bars.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(total));
            b.set_style(ProgressStyle::with_template("{msg} [{pos}/{len}] {bar:30} {elapsed}").expect("template"));
            b.set_message(label.to_string());
            b
        });
        Counter { bar }
    }
}

pub struct Task {
    bar: Option<ProgressBar>,
    label: String,
    reporter: Reporter,
}

impl Task {
    pub fn progress(&self, done: u64, total: Option<u64>) {
        if let Some(b) = &self.bar {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(done);
        }
    }

    pub fn finish(self, summary: &str) {
        match self.bar {
            Some(b) => {
                b.finish_and_clear();
                self.reporter.info(&format!("  {} {summary}", self.label));
            }
            None => self.reporter.info(&format!("  {} {summary}", self.label)),
        }
    }

    pub fn abandon(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

pub struct Counter {
    bar: Option<ProgressBar>,
}

impl Counter {
    pub fn inc(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// Human-readable bytes for summaries: the one formatter
/// (`farm_formats::size::format_size`), under the name the commands use.
pub use farm_formats::size::format_size as human_bytes;

/// One running build step: a spinner with elapsed time on a terminal, a
/// "started" line in plain mode.
pub struct StepLine {
    bar: Option<ProgressBar>,
    name: String,
    reporter: Reporter,
    started: std::time::Instant,
}

impl Reporter {
    pub fn step(&self, name: &str) -> StepLine {
        let bar = self.bars.as_ref().map(|m| {
            let b = m.add(ProgressBar::new_spinner());
            b.set_style(ProgressStyle::with_template("{spinner} {msg:12} {elapsed:>4}").expect("template"));
            b.set_message(name.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        if bar.is_none() {
            self.info(&format!("[{name}] started"));
        }
        StepLine {
            bar,
            name: name.to_string(),
            reporter: self.clone(),
            started: std::time::Instant::now(),
        }
    }
}

impl StepLine {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(self, outcome: &str) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.reporter.info(&format!(
            "[{}] {outcome} ({:.1}s)",
            self.name,
            self.started.elapsed().as_secs_f64()
        ));
    }
}
