//! `farm build --watch`: build, then rebuild whenever an input of the
//! selected targets changes. Events are debounced; the action cache makes a
//! rebuild run only the steps whose inputs changed. Ctrl-C ends it cleanly.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use notify::{RecursiveMode, Watcher};

use crate::Context;
use crate::{build_project, BuildOptions, Built, Target};
use farm_project::config::Project;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Quiet time after the last change before a rebuild starts.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Directories whose changes are outputs or caches, never inputs.
const IGNORED: [&str; 7] = [
    ".farm",
    "node_modules",
    ".git",
    "__pycache__",
    "dist",
    ".pytest_cache",
    ".venv",
];

fn watched_paths(project: &Project, opts: &BuildOptions) -> Vec<PathBuf> {
    let c = &project.config;
    let all = opts.targets.is_empty() || opts.targets.contains(&Target::All) || opts.targets.contains(&Target::Images);
    let mut out = vec![
        project.root.join(farm_project::config::CONFIG_FILE),
        project.lock_path(),
    ];
    if let Some(f) = &c.frontend {
        if all || opts.targets.contains(&Target::Frontend) {
            out.push(project.root.join(&f.path));
        }
    }
    if let Some(b) = &c.backend {
        if all || opts.targets.contains(&Target::Backend) || opts.targets.contains(&Target::Types) {
            out.push(project.root.join(&b.path));
        }
    }
    if let Some(cfg) = c.models.as_ref().and_then(|m| m.config.as_ref()) {
        out.push(project.root.join(cfg));
    }
    for s in &c.steps {
        for i in &s.inputs {
            if let Some(("path", rel)) = i.split_once(':') {
                out.push(project.root.join(rel));
            }
        }
    }
    out
}

fn relevant(path: &Path, out_dir: &Path) -> bool {
    !path.starts_with(out_dir)
        && !path
            .components()
            .any(|c| matches!(c, Component::Normal(n) if IGNORED.iter().any(|i| n == *i)))
}

fn report(ctx: &Context, what: &str, started: Instant, r: &Result<Built>) {
    match r {
        Ok(b) => ctx.reporter.info(&format!(
            "[watch] {what} in {:.1}s: ran {}, cached {}; manifest {}",
            started.elapsed().as_secs_f64(),
            if b.ran.is_empty() {
                "nothing".to_string()
            } else {
                crate::step::join_ids(&b.ran)
            },
            if b.cached.is_empty() {
                "nothing".to_string()
            } else {
                crate::step::join_ids(&b.cached)
            },
            b.manifest.digest
        )),
        Err(e) => ctx.reporter.info(&format!(
            "[watch] {what} FAILED in {:.1}s: {e:#}",
            started.elapsed().as_secs_f64()
        )),
    }
}

pub fn run(ctx: &Context, project: &Project, opts: &BuildOptions) -> Result<u8> {
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let root = std::fs::canonicalize(&project.root)?;
    let out_dir = opts.out.clone().unwrap_or_else(|| project.state().out());
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(ev.paths);
            }
        }
    })
    .context("starting the file watcher")?;
    for p in watched_paths(project, opts) {
        let p = std::fs::canonicalize(&p).unwrap_or(p);
        if p.exists() {
            let mode = if p.is_dir() {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watcher
                .watch(&p, mode)
                .with_context(|| format!("watching {}", p.display()))?;
        }
    }

    let started = Instant::now();
    let r = build_project(ctx, project, opts);
    report(ctx, "built", started, &r);
    ctx.reporter.info("[watch] watching for changes (Ctrl-C to stop)");
    while !STOP.load(Ordering::SeqCst) {
        let paths = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(p) => p,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut changed: Vec<PathBuf> = paths.into_iter().filter(|p| relevant(p, &out_dir)).collect();
        if changed.is_empty() {
            continue;
        }
        // Debounce: a save is often several events; wait for quiet.
        let mut last = Instant::now();
        while last.elapsed() < DEBOUNCE && !STOP.load(Ordering::SeqCst) {
            if let Ok(more) = rx.recv_timeout(DEBOUNCE.saturating_sub(last.elapsed()).max(Duration::from_millis(10))) {
                let more: Vec<PathBuf> = more.into_iter().filter(|p| relevant(p, &out_dir)).collect();
                if !more.is_empty() {
                    changed.extend(more);
                    last = Instant::now();
                }
            }
        }
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        changed.sort();
        changed.dedup();
        let shown: Vec<String> = changed
            .iter()
            .take(3)
            .map(|p| p.strip_prefix(&root).unwrap_or(p).display().to_string())
            .collect();
        let project = Project::load(&project.root).unwrap_or_else(|_| project.clone());
        let started = Instant::now();
        let r = build_project(ctx, &project, opts);
        let what = format!(
            "rebuilt after {}{}",
            shown.join(", "),
            if changed.len() > 3 { ", …" } else { "" }
        );
        report(ctx, &what, started, &r);
    }
    ctx.reporter.info("[watch] stopped");
    Ok(0)
}
