//! Where the user's registries are, read from the user's own configuration:
//! apt's sources (deb822 `*.sources` and one-line `sources.list`), npm's
//! `registry` setting and pip's `index-url`. farm never carries a registry
//! host of its own: when nothing is configured it asks the tool itself for its
//! built-in default, and failing that it tells the user what to set.
//!
//! Everything the process environment contributes (variables, `/etc`, the
//! answers of `npm` and `python3`) goes through [`HostEnv`], so tests can
//! describe a machine without touching the real one.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::redact::{redact_text, redact_url, RedactedUrl};

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{origin}: {found:?} is not an absolute http(s) or file URL; hint: write it like `https://mirror.example/path`"
    )]
    BadUrl { origin: String, found: RedactedUrl },
    #[error(
        "no npm registry configured (looked at {searched}, and `npm config get registry` gave nothing); \
         hint: set `registry=<url>` in the project's .npmrc or export NPM_CONFIG_REGISTRY"
    )]
    NpmRegistryUnknown { searched: String },
    #[error(
        "no pip index configured (looked at {searched}, and could not ask pip for its default); \
         hint: set `index-url = <url>` under [global] in pip.conf or export PIP_INDEX_URL"
    )]
    PipIndexUnknown { searched: String },
}

/// The parts of the host that endpoint discovery reads.
pub trait HostEnv {
    fn var(&self, name: &str) -> Option<String>;
    /// Runs `program args...` in `cwd`; its trimmed stdout when it exits 0.
    fn run(&self, cwd: &Path, program: &str, args: &[&str]) -> Option<String>;
    /// The system configuration directory (`/etc` on a real host).
    fn etc(&self) -> PathBuf {
        PathBuf::from("/etc")
    }
}

/// The real process environment.
pub struct ProcessEnv;

impl HostEnv for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn run(&self, cwd: &Path, program: &str, args: &[&str]) -> Option<String> {
        let out = Command::new(program).args(args).current_dir(cwd).output().ok()?;
        if !out.status.success() {
            return None;
        }
        // Tools print notices before the answer; the answer is the last line.
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_string)
    }
}

// ---------------------------------------------------------------- apt

/// One `deb` entry of apt's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// The keyring file from `Signed-By`; `None` when absent, given as
    /// fingerprints only, or inlined as a key block.
    pub signed_by: Option<PathBuf>,
    /// The file this entry came from, for messages.
    pub origin: PathBuf,
}

/// apt's configuration directory: `$FARM_APT_ETC` when set (tests), else `/etc/apt`.
pub fn default_apt_etc() -> PathBuf {
    std::env::var_os("FARM_APT_ETC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/apt"))
}

/// Every enabled `deb` source under `etc_apt`, in the order apt reads them:
/// `sources.list`, then `sources.list.d/*.list` and `*.sources` by file name.
/// `deb-src` entries, comments and `Enabled: no` stanzas are skipped.
pub fn apt_sources(etc_apt: &Path) -> Result<Vec<AptSource>, EndpointError> {
    let mut out = Vec::new();
    let main = etc_apt.join("sources.list");
    if let Some(text) = read_optional(&main)? {
        out.extend(parse_one_line_sources(&main, &text)?);
    }
    let dir = etc_apt.join("sources.list.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(EndpointError::Io { path: dir, source }),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.map(|e| e.path()).map_err(|source| EndpointError::Io {
                path: dir.clone(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    files.sort();
    for path in files {
        let ext = path.extension().and_then(|e| e.to_str());
        if !matches!(ext, Some("list") | Some("sources")) {
            continue; // apt ignores other names too (e.g. `*.disabled`, `*.save`)
        }
        let Some(text) = read_optional(&path)? else { continue };
        if ext == Some("list") {
            out.extend(parse_one_line_sources(&path, &text)?);
        } else {
            out.extend(parse_deb822_sources(&path, &text)?);
        }
    }
    Ok(out)
}

/// The first URI of the first source that lists `suite`, without a trailing slash.
/// Locking uses [`debian_archive_for`], which also finds suites apt does not list.
pub fn debian_mirror_for(sources: &[AptSource], suite: &str) -> Option<String> {
    sources
        .iter()
        .find(|s| s.suites.iter().any(|x| x == suite))
        .and_then(|s| s.uris.first())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Where a Debian suite is fetched from: the archive of an apt source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianArchive {
    /// The archive root (holding `dists/` and `pool/`), without a trailing slash.
    pub mirror: String,
    /// The source's `Signed-By` keyring file.
    pub signed_by: Option<PathBuf>,
    /// The apt source file it came from.
    pub origin: PathBuf,
    /// Whether that source lists the suite; if not, the source serves the
    /// same Debian archive (main or security) for other suites.
    pub lists_suite: bool,
}

/// Names a Debian archive serves as suites (aliases and codenames), before
/// any `-updates`/`-security`/`-backports` pocket. Only used to recognise an
/// apt source as Debian's; the suite a lock asks for may be any name.
const DEBIAN_SUITE_NAMES: &[&str] = &[
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
    "experimental",
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
];

/// Security updates live in an archive of their own; every other pocket
/// (`-updates`, `-backports`, `-proposed-updates`) is in the main archive.
fn is_security_suite(suite: &str) -> bool {
    suite.ends_with("-security") || suite.ends_with("/updates")
}

/// The components a Debian archive is split into; third-party repositories
/// that reuse Debian's suite names (`bookworm`) use their own (`stable`).
const DEBIAN_COMPONENTS: &[&str] = &["main", "contrib", "non-free", "non-free-firmware"];

fn has_debian_component(source: &AptSource) -> bool {
    source
        .components
        .iter()
        .any(|c| DEBIAN_COMPONENTS.contains(&c.as_str()))
}

/// Whether an apt source is Debian's archive: Debian components, and a
/// Debian suite name or Debian's archive keyring.
fn serves_debian(source: &AptSource) -> bool {
    if !has_debian_component(source) {
        return false;
    }
    let debian_suite = source.suites.iter().any(|s| {
        let base = s.split(['-', '/']).next().unwrap_or(s);
        DEBIAN_SUITE_NAMES.contains(&base)
    });
    let debian_keyring = source
        .signed_by
        .as_deref()
        .and_then(|k| k.file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("debian-archive-keyring"));
    debian_suite || debian_keyring
}

/// The archive to lock `suite` from. A source listing the suite wins (with
/// Debian's components first, then in apt's reading order); otherwise the first source of Debian's archive of the
/// same kind (security or not): one Debian mirror serves every suite, so a
/// machine configured for bookworm can lock trixie. `None` when no source
/// is Debian's.
pub fn debian_archive_for(sources: &[AptSource], suite: &str) -> Option<DebianArchive> {
    let archive = |s: &AptSource, lists_suite: bool| {
        s.uris.first().map(|u| DebianArchive {
            mirror: u.trim_end_matches('/').to_string(),
            signed_by: s.signed_by.clone(),
            origin: s.origin.clone(),
            lists_suite,
        })
    };
    let listing: Vec<&AptSource> = sources.iter().filter(|s| s.suites.iter().any(|x| x == suite)).collect();
    // Among sources listing the suite, Debian's own beats a third-party one
    // that reuses the name (`deb … bookworm stable`).
    if let Some(s) = listing.iter().find(|s| has_debian_component(s)).or(listing.first()) {
        return archive(s, true);
    }
    let security = is_security_suite(suite);
    sources
        .iter()
        .filter(|s| serves_debian(s))
        .find(|s| s.suites.iter().any(|x| is_security_suite(x) == security))
        .and_then(|s| archive(s, false))
}

fn read_optional(path: &Path) -> Result<Option<String>, EndpointError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EndpointError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// `deb [opt=val ...] URI SUITE [COMPONENT...]`, one per line.
pub fn parse_one_line_sources(path: &Path, text: &str) -> Result<Vec<AptSource>, EndpointError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let syntax = |message: String| EndpointError::Syntax {
            path: path.into(),
            line: n + 1,
            message,
        };
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (kind, mut rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match kind {
            "deb" => {}
            "deb-src" => continue,
            other => return Err(syntax(format!("expected `deb` or `deb-src`, found `{other}`"))),
        }
        rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(after) = rest.strip_prefix('[') {
            let (opts, tail) = after
                .split_once(']')
                .ok_or_else(|| syntax("`[` options without a closing `]`".into()))?;
            for opt in opts.split_whitespace() {
                if let Some((key, value)) = opt.split_once('=') {
                    if key == "signed-by" {
                        signed_by = keyring_path(value);
                    }
                }
            }
            rest = tail;
        }
        let mut words = rest.split_whitespace();
        let uri = words
            .next()
            .ok_or_else(|| syntax("missing the repository URI".into()))?;
        let suite = words
            .next()
            .ok_or_else(|| syntax(format!("missing the suite after `{}`", redact_url(uri))))?;
        out.push(AptSource {
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            signed_by,
            origin: path.into(),
        });
    }
    Ok(out)
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`, `Signed-By:`, `Enabled:`).
pub fn parse_deb822_sources(path: &Path, text: &str) -> Result<Vec<AptSource>, EndpointError> {
    let mut out = Vec::new();
    for stanza in deb822_stanzas(path, text)? {
        let get = |name: &str| {
            stanza
                .fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let words = |name: &str| get(name).map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        let types = words("Types").unwrap_or_default();
        if !types.iter().any(|t| t == "deb") {
            continue;
        }
        if get("Enabled").is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "no" | "false" | "0")) {
            continue;
        }
        let syntax = |message: String| EndpointError::Syntax {
            path: path.into(),
            line: stanza.line,
            message,
        };
        let uris = words("URIs")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| syntax("stanza has no `URIs:`".into()))?;
        let suites = words("Suites")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| syntax("stanza has no `Suites:`".into()))?;
        out.push(AptSource {
            uris,
            suites,
            components: words("Components").unwrap_or_default(),
            signed_by: get("Signed-By").and_then(keyring_path),
            origin: path.into(),
        });
    }
    Ok(out)
}

/// `Signed-By` holds key file paths and/or fingerprints, or an inline key
/// block; only a path names a keyring gpgv can read.
fn keyring_path(value: &str) -> Option<PathBuf> {
    if value.trim_start().starts_with("-----BEGIN") {
        return None;
    }
    value
        .split([',', ' ', '\t', '\n'])
        .map(str::trim)
        .find(|p| p.starts_with('/'))
        .map(PathBuf::from)
}

struct Stanza {
    /// 1-based line where the stanza starts.
    line: usize,
    fields: Vec<(String, String)>,
}

fn deb822_stanzas(path: &Path, text: &str) -> Result<Vec<Stanza>, EndpointError> {
    let mut out: Vec<Stanza> = Vec::new();
    let mut current: Option<Stanza> = None;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue; // comments may sit anywhere, even inside a stanza
        }
        if line.trim().is_empty() {
            out.extend(current.take());
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let field = current
                .as_mut()
                .and_then(|s| s.fields.last_mut())
                .ok_or_else(|| EndpointError::Syntax {
                    path: path.into(),
                    line: n + 1,
                    message: "continuation line without a field before it".into(),
                })?;
            let cont = line.trim();
            field.1.push('\n');
            field.1.push_str(if cont == "." { "" } else { cont });
            continue;
        }
        let (key, value) = line.split_once(':').ok_or_else(|| EndpointError::Syntax {
            path: path.into(),
            line: n + 1,
            message: format!("expected `Field: value`, found {:?}", redact_text(line)),
        })?;
        current.get_or_insert_with(|| Stanza {
            line: n + 1,
            fields: Vec::new(),
        });
        if let Some(s) = current.as_mut() {
            s.fields.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    out.extend(current);
    Ok(out)
}

// ---------------------------------------------------------------- npm

/// The npm registry the user configured, without a trailing slash.
pub fn npm_registry(project_dir: &Path) -> Result<String, EndpointError> {
    npm_registry_in(&ProcessEnv, project_dir)
}

/// [`npm_registry`] against a given host environment. Order, as npm's own:
/// environment, project `.npmrc`, user npmrc, global npmrc, then npm itself.
pub fn npm_registry_in(env: &dyn HostEnv, project_dir: &Path) -> Result<String, EndpointError> {
    for name in ["npm_config_registry", "NPM_CONFIG_REGISTRY"] {
        if let Some(v) = env.var(name) {
            return normalise_url(&format!("environment variable {name}"), &v);
        }
    }
    let files = npmrc_files(env, project_dir);
    for file in &files {
        let Some(text) = read_optional(file)? else { continue };
        if let Some(v) = npmrc_value(&text, "registry", env) {
            return normalise_url(&format!("{}: registry", file.display()), &v);
        }
    }
    // npm knows its built-in default and any config we did not read.
    if let Some(v) = env.run(project_dir, "npm", &["config", "get", "registry"]) {
        if v != "undefined" && v != "null" {
            return normalise_url("`npm config get registry`", &v);
        }
    }
    let searched = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(EndpointError::NpmRegistryUnknown {
        searched: format!("NPM_CONFIG_REGISTRY, {searched}"),
    })
}

/// The npmrc files npm reads, most specific first.
fn npmrc_files(env: &dyn HostEnv, project_dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![project_dir.join(".npmrc")];
    let user = env
        .var("npm_config_userconfig")
        .or_else(|| env.var("NPM_CONFIG_USERCONFIG"));
    if let Some(u) = user {
        files.push(PathBuf::from(u));
    } else if let Some(home) = env.var("HOME") {
        files.push(Path::new(&home).join(".npmrc"));
    }
    let global = env
        .var("npm_config_globalconfig")
        .or_else(|| env.var("NPM_CONFIG_GLOBALCONFIG"));
    if let Some(g) = global {
        files.push(PathBuf::from(g));
    } else {
        let prefix = env
            .var("npm_config_prefix")
            .or_else(|| env.var("NPM_CONFIG_PREFIX"))
            .or_else(|| env.var("PREFIX"));
        if let Some(p) = prefix {
            files.push(Path::new(&p).join("etc/npmrc"));
        }
        files.push(env.etc().join("npmrc"));
    }
    files
}

/// The last `key = value` for `key` in an npmrc, unquoted, `${VAR}` expanded.
fn npmrc_value(text: &str, key: &str, env: &dyn HostEnv) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
        found = Some(expand_env(v, env));
    }
    found
}

/// npm's `${NAME}` substitution in npmrc values.
fn expand_env(value: &str, env: &dyn HostEnv) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else { break };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + 2 + len].trim_end_matches('?');
        out.push_str(&env.var(name).unwrap_or_default());
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------- pip

/// The pip index URL the user configured (or pip's default), without a trailing slash.
pub fn pypi_index(project_dir: &Path) -> Result<String, EndpointError> {
    pypi_index_in(&ProcessEnv, project_dir)
}

/// [`pypi_index`] against a given host environment: `PIP_INDEX_URL`, then
/// pip's config files in pip's own order, then pip's built-in default.
pub fn pypi_index_in(env: &dyn HostEnv, project_dir: &Path) -> Result<String, EndpointError> {
    if let Some(v) = env.var("PIP_INDEX_URL") {
        return normalise_url("environment variable PIP_INDEX_URL", &v);
    }
    let files = pip_config_files(env);
    if let Some((origin, v)) = pip_index_from_files(&files)? {
        return normalise_url(&origin, &v);
    }
    // Asking pip keeps its default host out of farm's code.
    let probe = "from pip._internal.models.index import PyPI; print(PyPI.simple_url)";
    if let Some(v) = env.run(project_dir, "python3", &["-c", probe]) {
        return normalise_url("pip's built-in default index", &v);
    }
    let searched = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(EndpointError::PipIndexUnknown {
        searched: format!("PIP_INDEX_URL, {searched}"),
    })
}

/// pip's config files, lowest priority first (pip reads them in this order
/// and later values win): `$PIP_CONFIG_FILE`, global, user, site.
fn pip_config_files(env: &dyn HostEnv) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let env_file = env.var("PIP_CONFIG_FILE");
    if env_file.as_deref() == Some("/dev/null") {
        return files; // pip's documented way to load no config file at all
    }
    if let Some(f) = &env_file {
        files.push(PathBuf::from(f));
    }
    let xdg_dirs = env
        .var("XDG_CONFIG_DIRS")
        .unwrap_or_else(|| env.etc().join("xdg").display().to_string());
    for dir in xdg_dirs.split(':').filter(|d| !d.is_empty()) {
        files.push(Path::new(dir).join("pip/pip.conf"));
    }
    files.push(env.etc().join("pip.conf"));
    // pip skips the user files when PIP_CONFIG_FILE names an existing file.
    if !env_file.as_ref().is_some_and(|f| Path::new(f).exists()) {
        let home = env.var("HOME").map(PathBuf::from);
        if let Some(h) = &home {
            files.push(h.join(".pip/pip.conf"));
        }
        let config_home = env
            .var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".config")));
        if let Some(c) = config_home {
            files.push(c.join("pip/pip.conf"));
        }
    }
    if let Some(venv) = env.var("VIRTUAL_ENV") {
        files.push(Path::new(&venv).join("pip.conf"));
    }
    files
}

/// `index-url` across `files` as pip settles it for `pip install`: the later
/// file wins, and an `[install]` value beats a `[global]` one from any file.
fn pip_index_from_files(files: &[PathBuf]) -> Result<Option<(String, String)>, EndpointError> {
    let mut global = None;
    let mut install = None;
    for file in files {
        let Some(text) = read_optional(file)? else { continue };
        let mut section = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = name.trim().to_ascii_lowercase();
                continue;
            }
            let Some((k, v)) = trimmed.split_once(['=', ':']) else {
                continue;
            };
            // pip normalises option names: case, `_` vs `-`, a leading `--`.
            let key = k.trim().trim_start_matches("--").to_ascii_lowercase().replace('_', "-");
            if key != "index-url" || v.trim().is_empty() {
                continue;
            }
            let found = Some((
                format!("{}: [{section}] index-url", file.display()),
                v.trim().to_string(),
            ));
            match section.as_str() {
                "global" => global = found,
                "install" => install = found,
                _ => {}
            }
        }
    }
    Ok(install.or(global))
}

/// Checks an endpoint is a URL farm can use and drops trailing slashes, so
/// `https://r.example/` and `https://r.example` lock the same.
fn normalise_url(origin: &str, value: &str) -> Result<String, EndpointError> {
    let value = value.trim();
    let bad = || EndpointError::BadUrl {
        origin: origin.into(),
        found: value.into(),
    };
    let parsed = url::Url::parse(value).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https" | "file") {
        return Err(bad());
    }
    Ok(value.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A described machine: variables, canned tool answers and its own /etc.
    struct FakeEnv {
        vars: HashMap<String, String>,
        answers: HashMap<String, String>,
        etc: PathBuf,
    }

    impl FakeEnv {
        fn new(etc: &Path) -> Self {
            FakeEnv {
                vars: HashMap::new(),
                answers: HashMap::new(),
                etc: etc.into(),
            }
        }
        fn var(mut self, k: &str, v: &str) -> Self {
            self.vars.insert(k.into(), v.into());
            self
        }
        fn answer(mut self, program: &str, out: &str) -> Self {
            self.answers.insert(program.into(), out.into());
            self
        }
    }

    impl HostEnv for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn run(&self, _cwd: &Path, program: &str, _args: &[&str]) -> Option<String> {
            self.answers.get(program).cloned()
        }
        fn etc(&self) -> PathBuf {
            self.etc.clone()
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn deb822_skips_deb_src_disabled_and_comments_and_reads_signed_by() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("sources.list.d/a.sources"),
            "# a comment before\nTypes: deb\n# a comment inside\nURIs: http://mirror.example.invalid/debian/\n\
             Suites: bookworm bookworm-updates\nComponents: main contrib\n\
             Signed-By: /usr/share/keyrings/test.gpg\n\n\
             Types: deb-src\nURIs: http://src.example.invalid/debian\nSuites: bookworm\nComponents: main\n\n\
             Enabled: no\nTypes: deb\nURIs: http://off.example.invalid/debian\nSuites: bookworm\n",
        );
        write(
            &dir.path().join("sources.list.d/z.list.disabled"),
            "deb http://never.example.invalid/ x main\n",
        );
        let sources = apt_sources(dir.path()).unwrap();
        assert_eq!(
            sources.len(),
            1,
            "deb-src, Enabled: no and unknown file names must be skipped: {sources:?}"
        );
        let s = &sources[0];
        assert_eq!(s.uris, ["http://mirror.example.invalid/debian/"]);
        assert_eq!(s.suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(s.components, ["main", "contrib"]);
        assert_eq!(s.signed_by.as_deref(), Some(Path::new("/usr/share/keyrings/test.gpg")));
        assert_eq!(
            debian_mirror_for(&sources, "bookworm-updates").as_deref(),
            Some("http://mirror.example.invalid/debian")
        );
        assert_eq!(debian_mirror_for(&sources, "trixie"), None);
    }

    #[test]
    fn one_line_sources_parse_options_and_order_puts_sources_list_first() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("sources.list"),
            "# comment\n\ndeb-src http://src.example.invalid/debian bookworm main\n\
             deb [arch=amd64 signed-by=/k/one.gpg] http://one.example.invalid/debian bookworm main # trailing\n",
        );
        write(
            &dir.path().join("sources.list.d/b.list"),
            "deb [trusted=yes] file:/srv/repo ./\n",
        );
        write(
            &dir.path().join("sources.list.d/a.sources"),
            "Types: deb\nURIs: http://two.example.invalid/debian\nSuites: bookworm\nComponents: main\n",
        );
        let sources = apt_sources(dir.path()).unwrap();
        let uris: Vec<_> = sources.iter().map(|s| s.uris[0].as_str()).collect();
        assert_eq!(
            uris,
            [
                "http://one.example.invalid/debian",
                "http://two.example.invalid/debian",
                "file:/srv/repo"
            ]
        );
        assert_eq!(sources[0].signed_by.as_deref(), Some(Path::new("/k/one.gpg")));
        assert_eq!(sources[0].components, ["main"]);
        assert_eq!(sources[2].suites, ["./"]);
        assert!(sources[2].components.is_empty());
        // sources.list comes first, so its mirror wins for the suite.
        assert_eq!(
            debian_mirror_for(&sources, "bookworm").as_deref(),
            Some("http://one.example.invalid/debian")
        );
    }

    /// A machine set up like this one (bookworm, bookworm-updates and the
    /// security archive) plus third-party sources that reuse Debian's names:
    /// any suite resolves to Debian's own archive of the right kind.
    #[test]
    fn any_debian_suite_resolves_to_the_configured_debian_archive() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("sources.list"),
            // Read first, lists `bookworm`, but is not Debian's archive.
            "deb [signed-by=/k/docker.asc] http://docker.example.invalid/linux/debian bookworm stable\n",
        );
        write(
            &dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://deb.example.invalid/debian/\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\nURIs: http://sec.example.invalid/debian-security\nSuites: bookworm-security\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        );
        write(
            &dir.path().join("sources.list.d/node.sources"),
            "Types: deb\nURIs: http://node.example.invalid/node_20.x\nSuites: nodistro\nComponents: main\n",
        );
        let sources = apt_sources(dir.path()).unwrap();
        let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");

        let listed = debian_archive_for(&sources, "bookworm").unwrap();
        assert_eq!(
            listed.mirror, "http://deb.example.invalid/debian",
            "Debian's source beats docker's"
        );
        assert!(listed.lists_suite);
        assert_eq!(listed.signed_by.as_deref(), Some(keyring));

        for suite in ["trixie", "trixie-updates", "sid", "stable"] {
            let a = debian_archive_for(&sources, suite).unwrap();
            assert_eq!(a.mirror, "http://deb.example.invalid/debian", "{suite}");
            assert!(!a.lists_suite, "{suite}");
            assert_eq!(a.signed_by.as_deref(), Some(keyring), "{suite}");
            assert!(a.origin.ends_with("debian.sources"), "{suite}");
        }
        // Security suites stay with the security archive, listed or not.
        assert_eq!(
            debian_archive_for(&sources, "bookworm-security").unwrap().mirror,
            "http://sec.example.invalid/debian-security"
        );
        assert_eq!(
            debian_archive_for(&sources, "trixie-security").unwrap().mirror,
            "http://sec.example.invalid/debian-security"
        );
        // A suite only a third party lists is still taken from it, as apt would.
        assert_eq!(
            debian_archive_for(&sources, "nodistro").unwrap().mirror,
            "http://node.example.invalid/node_20.x"
        );
    }

    /// Without any source of Debian's archive there is nothing to lock from,
    /// even when third-party sources exist.
    #[test]
    fn no_debian_source_means_no_archive() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("sources.list"),
            "deb http://docker.example.invalid/linux/debian bookworm stable\n\
             deb http://cloud.example.invalid/apt cloud-sdk-bookworm main\n",
        );
        let sources = apt_sources(dir.path()).unwrap();
        assert_eq!(debian_archive_for(&sources, "trixie"), None);
        // An unknown codename is recognised by Debian's keyring instead.
        write(
            &dir.path().join("sources.list"),
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.example.invalid/debian futurename main\n",
        );
        let sources = apt_sources(dir.path()).unwrap();
        assert_eq!(
            debian_archive_for(&sources, "trixie").unwrap().mirror,
            "http://deb.example.invalid/debian"
        );
    }

    #[test]
    fn malformed_apt_sources_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("sources.list"),
            "deb http://x.example.invalid/debian bookworm main\ndeb http://y\n",
        );
        let err = apt_sources(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("sources.list:2") && err.contains("missing the suite"),
            "{err}"
        );

        write(&dir.path().join("sources.list"), "");
        write(
            &dir.path().join("sources.list.d/x.sources"),
            "Types: deb\nthis line has no colon\n",
        );
        let err = apt_sources(dir.path()).unwrap_err().to_string();
        assert!(err.contains("x.sources:2") && err.contains("Field: value"), "{err}");

        write(
            &dir.path().join("sources.list.d/x.sources"),
            "Types: deb\nSuites: bookworm\n",
        );
        let err = apt_sources(dir.path()).unwrap_err().to_string();
        assert!(err.contains("x.sources:1") && err.contains("URIs"), "{err}");
    }

    #[test]
    fn inline_signed_by_key_block_is_not_taken_for_a_path() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("sources.list.d/k.sources"),
            "Types: deb\nURIs: http://k.example.invalid/debian\nSuites: bookworm\n\
             Signed-By: -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBGPL/abc\n -----END PGP PUBLIC KEY BLOCK-----\n",
        );
        let sources = apt_sources(dir.path()).unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].signed_by, None);
    }

    #[test]
    fn missing_apt_directory_means_no_sources() {
        let dir = tempfile::tempdir().unwrap();
        assert!(apt_sources(&dir.path().join("nope")).unwrap().is_empty());
    }

    #[test]
    fn npm_registry_precedence_env_then_project_then_user_then_global_then_npm() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("proj");
        let home = dir.path().join("home");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&project).unwrap();
        let env = || {
            FakeEnv::new(&etc)
                .var("HOME", home.to_str().unwrap())
                .answer("npm", "http://npm-default.example.invalid/")
        };

        // Nothing configured: npm's own answer, trailing slash dropped.
        assert_eq!(
            npm_registry_in(&env(), &project).unwrap(),
            "http://npm-default.example.invalid"
        );

        write(&etc.join("npmrc"), "registry=http://global.example.invalid/\n");
        assert_eq!(
            npm_registry_in(&env(), &project).unwrap(),
            "http://global.example.invalid"
        );

        write(
            &home.join(".npmrc"),
            "fund=false\n; comment\nregistry = \"http://user.example.invalid/npm/\"\n",
        );
        assert_eq!(
            npm_registry_in(&env(), &project).unwrap(),
            "http://user.example.invalid/npm"
        );

        write(
            &project.join(".npmrc"),
            "@scope:registry=http://scoped.example.invalid/\nregistry=http://${MIRROR_HOST}/npm/\n",
        );
        let e = env().var("MIRROR_HOST", "project.example.invalid");
        assert_eq!(
            npm_registry_in(&e, &project).unwrap(),
            "http://project.example.invalid/npm"
        );

        let e = env()
            .var("MIRROR_HOST", "p.example.invalid")
            .var("NPM_CONFIG_REGISTRY", "http://env.example.invalid/");
        assert_eq!(npm_registry_in(&e, &project).unwrap(), "http://env.example.invalid");
    }

    #[test]
    fn npm_registry_unknown_or_invalid_is_an_actionable_error() {
        let dir = tempfile::tempdir().unwrap();
        let env = FakeEnv::new(dir.path());
        let err = npm_registry_in(&env, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("no npm registry configured") && err.contains("hint:"),
            "{err}"
        );
        assert!(
            err.contains(&dir.path().join(".npmrc").display().to_string()),
            "error lists where it looked: {err}"
        );

        write(&dir.path().join(".npmrc"), "registry=not a url\n");
        let err = npm_registry_in(&env, dir.path()).unwrap_err().to_string();
        assert!(err.contains(".npmrc: registry") && err.contains("not a url"), "{err}");
    }

    #[test]
    fn pip_index_precedence_follows_pip() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        let home = dir.path().join("home");
        let env = || {
            FakeEnv::new(&etc)
                .var("HOME", home.to_str().unwrap())
                .answer("python3", "http://pip-default.example.invalid/simple")
        };
        assert_eq!(
            pypi_index_in(&env(), dir.path()).unwrap(),
            "http://pip-default.example.invalid/simple"
        );

        write(
            &etc.join("pip.conf"),
            "[global]\ncert = /x.pem\nindex-url = http://global.example.invalid/simple/\n",
        );
        assert_eq!(
            pypi_index_in(&env(), dir.path()).unwrap(),
            "http://global.example.invalid/simple"
        );

        // The user file is read after the global one, so it wins.
        write(
            &home.join(".config/pip/pip.conf"),
            "[global]\nindex_url: http://user.example.invalid/simple\n",
        );
        assert_eq!(
            pypi_index_in(&env(), dir.path()).unwrap(),
            "http://user.example.invalid/simple"
        );

        // An [install] value beats a [global] one even from an earlier file.
        write(
            &etc.join("pip.conf"),
            "[install]\nindex-url = http://install.example.invalid/simple\n",
        );
        assert_eq!(
            pypi_index_in(&env(), dir.path()).unwrap(),
            "http://install.example.invalid/simple"
        );

        // PIP_CONFIG_FILE naming an existing file hides the user files.
        let extra = dir.path().join("extra.conf");
        write(&extra, "[global]\nindex-url = http://extra.example.invalid/simple\n");
        std::fs::remove_file(etc.join("pip.conf")).unwrap();
        let e = env().var("PIP_CONFIG_FILE", extra.to_str().unwrap());
        assert_eq!(
            pypi_index_in(&e, dir.path()).unwrap(),
            "http://extra.example.invalid/simple"
        );

        let e = env().var("PIP_CONFIG_FILE", "/dev/null");
        assert_eq!(
            pypi_index_in(&e, dir.path()).unwrap(),
            "http://pip-default.example.invalid/simple"
        );

        let e = env().var("PIP_INDEX_URL", "http://env.example.invalid/simple/");
        assert_eq!(
            pypi_index_in(&e, dir.path()).unwrap(),
            "http://env.example.invalid/simple"
        );
    }

    #[test]
    fn pip_index_unknown_is_an_actionable_error() {
        let dir = tempfile::tempdir().unwrap();
        let env = FakeEnv::new(dir.path()).var("HOME", dir.path().join("h").to_str().unwrap());
        let err = pypi_index_in(&env, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("no pip index configured") && err.contains("PIP_INDEX_URL") && err.contains("hint:"),
            "{err}"
        );
        assert!(err.contains("pip.conf"), "error lists the files it looked at: {err}");
    }
}
