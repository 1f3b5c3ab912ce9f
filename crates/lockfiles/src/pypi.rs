//! The PyPI side of a lock: pip's own wheel, and the full transitive set of
//! wheels a `requirements.txt` installs on the target (CPython 3.X,
//! manylinux x86_64), resolved by pip's resolver against the user's index.
//! The requirements are checked first ([`crate::requirements`]): nothing
//! that would make pip run a package's code gets to pip.
//!
//! Wheels from the index are locked as `pypi://<project>/<filename>`: PyPI
//! serves files from another host than its index, so no URL prefix names
//! them portably; [`wheel_url`] finds the file again in whichever index the
//! fetching machine is configured for.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Output, Stdio};

use serde::Deserialize;

use crate::http::{Client, HttpError};
use crate::integrity::{Algorithm, Integrity};
use crate::lock::{LockedArtifact, PythonWheel, Unpack};
use crate::redact::{redact_text, redact_url, RedactedUrl};

/// The scheme of a wheel locked by project and file name.
pub const PYPI_SCHEME: &str = "pypi://";

/// JSON first (PEP 691), then PEP 503 HTML for indexes that serve only that.
pub const SIMPLE_ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

#[derive(Debug, thiserror::Error)]
pub enum PypiError {
    #[error("PyPI project `{project}`: {source}")]
    Index { project: String, source: HttpError },
    #[error("{url}: not a simple-API project page: {message}")]
    BadPage { url: RedactedUrl, message: String },
    #[error("PyPI project `{project}`: {filename} is not in the index at {index}{hint}")]
    FileNotFound {
        project: String,
        filename: String,
        index: RedactedUrl,
        hint: String,
    },
    #[error("PyPI project `{project}`: {filename} has no sha256 in the index at {index}; farm pins wheels by sha256")]
    NoSha256 {
        project: String,
        filename: String,
        index: RedactedUrl,
    },
    #[error("`{url}`: not a pypi:// URL; expected pypi://<project>/<wheel file name>")]
    BadPypiUrl { url: RedactedUrl },
    #[error("python version `{found}`: expected MAJOR.MINOR such as 3.11")]
    BadPythonVersion { found: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Requirements(#[from] crate::requirements::RequirementsError),
    #[error("running pip ({runner}) failed: {source}; hint: the interpreter must have pip (python3 -m ensurepip)")]
    PipSpawn { runner: String, source: std::io::Error },
    #[error("pip ({runner}) could not resolve {requirements} ({status}):\n{stderr}")]
    PipFailed {
        requirements: PathBuf,
        runner: String,
        /// `exit status 1`, or the signal that ended pip.
        status: String,
        /// pip's errors, with its explanation of a conflict (which it prints
        /// on stdout) and the requirement lines it names.
        stderr: String,
    },
    #[error("pip's installation report {path}: {message}")]
    BadReport { path: PathBuf, message: String },
    #[error("{requirements}: package `{package}` {message}")]
    Unlockable {
        requirements: PathBuf,
        package: String,
        message: String,
    },
}

/// PEP 503 normalisation: lower case, runs of `-_.` become one `-`.
pub fn normalize_project(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_sep = false;
        }
    }
    out
}

/// The lock URL of a wheel served by the index.
pub fn lock_url(project: &str, filename: &str) -> String {
    format!("{PYPI_SCHEME}{}/{filename}", normalize_project(project))
}

/// Splits `pypi://<project>/<filename>`.
pub fn parse_lock_url(url: &str) -> Result<(String, String), PypiError> {
    let bad = || PypiError::BadPypiUrl { url: url.into() };
    let rest = url.strip_prefix(PYPI_SCHEME).ok_or_else(bad)?;
    let (project, filename) = rest.split_once('/').ok_or_else(bad)?;
    if project.is_empty() || filename.is_empty() || filename.contains('/') {
        return Err(bad());
    }
    Ok((project.to_string(), filename.to_string()))
}

/// One file of a project page, URL made absolute and without its fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub filename: String,
    pub url: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

#[derive(Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    size: Option<u64>,
}

fn page_url(index_simple_url: &str, project: &str) -> String {
    format!(
        "{}/{}/",
        index_simple_url.trim_end_matches('/'),
        normalize_project(project)
    )
}

/// Every file the index lists for `project` (simple API: PEP 691 JSON, or PEP 503 HTML).
pub async fn project_files(
    client: &Client,
    index_simple_url: &str,
    project: &str,
) -> Result<Vec<IndexFile>, PypiError> {
    let url = page_url(index_simple_url, project);
    let fetched = client
        .get_with_headers(&url, &[("accept", SIMPLE_ACCEPT)])
        .await
        .map_err(|source| PypiError::Index {
            project: project.into(),
            source,
        })?;
    let content_type = fetched
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let looks_json = page_is_json(content_type, &fetched.body);
    parse_project_page(&url, &fetched.body, looks_json)
}

fn parse_project_page(url: &str, body: &[u8], json: bool) -> Result<Vec<IndexFile>, PypiError> {
    let bad = |message: String| PypiError::BadPage {
        url: url.into(),
        message,
    };
    let base = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let absolute = |href: &str| -> Result<(String, Option<String>), PypiError> {
        let mut u = base.join(href).map_err(|e| bad(format!("file URL {href:?}: {e}")))?;
        let fragment = u.fragment().map(str::to_string);
        u.set_fragment(None);
        Ok((u.to_string(), fragment))
    };
    let mut files = Vec::new();
    if json {
        let page: JsonPage = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        for f in page.files {
            let (u, _) = absolute(&f.url)?;
            files.push(IndexFile {
                filename: f.filename,
                url: u,
                sha256: f.hashes.get("sha256").cloned(),
                size: f.size,
            });
        }
    } else {
        let text = String::from_utf8_lossy(body);
        for (href, label) in html_anchors(&text) {
            let (u, fragment) = absolute(&href)?;
            let sha256 = fragment.and_then(|f| f.strip_prefix("sha256=").map(str::to_string));
            let filename = if label.trim().is_empty() {
                percent_decode(last_segment(&u))
            } else {
                label.trim().into()
            };
            files.push(IndexFile {
                filename,
                url: u,
                sha256,
                size: None,
            });
        }
    }
    Ok(files)
}

/// `(href, text)` of each `<a>` in a PEP 503 page. The format is generated by
/// index servers and small, so a tag scanner suffices.
fn html_anchors(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(start) = lower[pos..].find("<a").map(|i| pos + i) {
        let after = lower.as_bytes().get(start + 2).copied().unwrap_or(b'>');
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        pos = tag_end + 1;
        if !(after.is_ascii_whitespace() || after == b'>') {
            continue;
        }
        let Some(close) = lower[pos..].find("</a>").map(|i| pos + i) else {
            break;
        };
        let tag = &html[start..tag_end];
        if let Some(href) = attribute(tag, "href") {
            out.push((html_unescape(&href), html_unescape(&html[pos..close])));
        }
        pos = close + 4;
    }
    out
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name).map(|i| from + i) {
        from = i + name.len();
        let preceded = i > 0 && lower.as_bytes()[i - 1].is_ascii_whitespace();
        let rest = lower[from..].trim_start();
        if !preceded || !rest.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - rest.len() + 1;
        let value = tag[value_start..].trim_start();
        return Some(match value.chars().next()? {
            q @ ('"' | '\'') => value[1..].split(q).next().unwrap_or_default().to_string(),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or_default()
                .to_string(),
        });
    }
    None
}

/// Whether a simple-API response is PEP 691 JSON (by its content type, or
/// by its first character when it has none).
pub fn page_is_json(content_type: &str, body: &[u8]) -> bool {
    let ct = content_type.to_ascii_lowercase();
    ct.contains("json") || (ct.is_empty() && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
}

/// A project page of the index (`page_url`, PEP 691 JSON or PEP 503 HTML)
/// with every file URL replaced by `relay(absolute URL without its
/// fragment, file name)`; a file `relay` answers `None` for is left out.
/// Everything else (hashes, `requires-python`, yanked, core-metadata
/// attributes) is kept as the index wrote it. For farm's index relay.
pub fn relay_project_page(
    page_url: &str,
    body: &[u8],
    json: bool,
    mut relay: impl FnMut(&str, &str) -> Option<String>,
) -> Result<Vec<u8>, PypiError> {
    let bad = |message: String| PypiError::BadPage {
        url: page_url.into(),
        message,
    };
    let base = url::Url::parse(page_url).map_err(|e| bad(e.to_string()))?;
    let absolute = |href: &str| -> Option<(String, Option<String>)> {
        let mut u = base.join(href).ok()?;
        let fragment = u.fragment().map(str::to_string);
        u.set_fragment(None);
        Some((u.to_string(), fragment))
    };
    if json {
        let mut page: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        if let Some(files) = page.get_mut("files").and_then(|f| f.as_array_mut()) {
            files.retain_mut(|f| {
                let Some(href) = f.get("url").and_then(|u| u.as_str()) else {
                    return false;
                };
                let Some((abs, _)) = absolute(href) else { return false };
                let name = match f.get("filename").and_then(|n| n.as_str()) {
                    Some(n) => n.to_string(),
                    None => percent_decode(last_segment(&abs)),
                };
                match relay(&abs, &name) {
                    Some(new) => {
                        f["url"] = serde_json::Value::String(new);
                        true
                    }
                    None => false,
                }
            });
        }
        return serde_json::to_vec(&page).map_err(|e| bad(e.to_string()));
    }
    let html = String::from_utf8_lossy(body);
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut copied = 0;
    let mut pos = 0;
    while let Some(start) = lower[pos..].find("<a").map(|i| pos + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        pos = tag_end + 1;
        let after = lower.as_bytes().get(start + 2).copied().unwrap_or(b'>');
        if !(after.is_ascii_whitespace() || after == b'>') {
            continue;
        }
        let Some((vs, ve)) = attribute_span(&html[start..tag_end], "href") else {
            continue;
        };
        let (vs, ve) = (start + vs, start + ve);
        let close = lower[pos..].find("</a>").map(|i| pos + i).unwrap_or(pos);
        let label = html_unescape(html[pos..close].trim());
        let new_href = absolute(&html_unescape(&html[vs..ve])).and_then(|(abs, fragment)| {
            let name = if label.is_empty() {
                percent_decode(last_segment(&abs))
            } else {
                label.clone()
            };
            let new = relay(&abs, &name)?;
            Some(match fragment {
                Some(f) => format!("{new}#{f}"),
                None => new,
            })
        });
        out.push_str(&html[copied..vs]);
        match new_href {
            Some(h) => out.push_str(&h.replace('&', "&amp;").replace('"', "&quot;").replace('\'', "&#39;")),
            // A link that cannot be relayed leads nowhere.
            None => out.push_str("#refused"),
        }
        copied = ve;
    }
    out.push_str(&html[copied..]);
    Ok(out.into_bytes())
}

/// Byte range of the value of attribute `name` in `tag` (quotes excluded).
fn attribute_span(tag: &str, name: &str) -> Option<(usize, usize)> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name).map(|i| from + i) {
        from = i + name.len();
        let preceded = i > 0 && lower.as_bytes()[i - 1].is_ascii_whitespace();
        let rest = lower[from..].trim_start();
        if !preceded || !rest.starts_with('=') {
            continue;
        }
        let eq = tag.len() - rest.len();
        let value = tag[eq + 1..].trim_start();
        let vstart = tag.len() - value.len();
        return match value.chars().next()? {
            q @ ('"' | '\'') => {
                let end = value[1..].find(q)? + 1;
                Some((vstart + 1, vstart + end))
            }
            _ => {
                let len = value
                    .find(|c: char| c.is_whitespace() || c == '>')
                    .unwrap_or(value.len());
                Some((vstart, vstart + len))
            }
        };
    }
    None
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn last_segment(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The absolute URL of `filename` in `project`'s page of the index.
pub async fn wheel_url(
    client: &Client,
    index_simple_url: &str,
    project: &str,
    filename: &str,
) -> Result<String, PypiError> {
    Ok(find_file(client, index_simple_url, project, filename).await?.url)
}

async fn find_file(
    client: &Client,
    index_simple_url: &str,
    project: &str,
    filename: &str,
) -> Result<IndexFile, PypiError> {
    let files = project_files(client, index_simple_url, project).await?;
    let count = files.len();
    files
        .into_iter()
        .find(|f| f.filename == filename)
        .ok_or_else(|| PypiError::FileNotFound {
            project: project.into(),
            filename: filename.into(),
            index: index_simple_url.into(),
            hint: format!(
                " ({count} files listed; hint: was the version yanked or removed, or is this index a partial mirror?)"
            ),
        })
}

/// Pins pip `version`'s universal wheel (`pip-<version>-py3-none-any.whl`).
pub async fn resolve_pip(client: &Client, index_simple_url: &str, version: &str) -> Result<LockedArtifact, PypiError> {
    let filename = format!("pip-{}-py3-none-any.whl", version.trim());
    let file = find_file(client, index_simple_url, "pip", &filename).await?;
    let integrity = sha256_integrity(file.sha256.as_deref()).ok_or_else(|| PypiError::NoSha256 {
        project: "pip".into(),
        filename: filename.clone(),
        index: index_simple_url.into(),
    })?;
    Ok(LockedArtifact {
        name: "pip".into(),
        version: version.trim().into(),
        url: lock_url("pip", &filename),
        integrity,
        size: file.size,
        unpack: Unpack::File,
        strip: 0,
    })
}

fn sha256_integrity(hex: Option<&str>) -> Option<Integrity> {
    let digest = hex::decode(hex?.trim()).ok()?;
    (digest.len() == 32).then_some(Integrity {
        algorithm: Algorithm::Sha256,
        digest,
    })
}

#[derive(Deserialize)]
struct Report {
    #[serde(default)]
    install: Vec<ReportItem>,
}

#[derive(Deserialize)]
struct ReportItem {
    metadata: ReportMetadata,
    download_info: DownloadInfo,
    #[serde(default)]
    is_direct: bool,
}

#[derive(Deserialize)]
struct ReportMetadata {
    name: String,
    version: String,
}

#[derive(Deserialize)]
struct DownloadInfo {
    url: String,
    #[serde(default)]
    archive_info: Option<ArchiveInfo>,
}

#[derive(Deserialize)]
struct ArchiveInfo {
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
    /// Older reports carry only `hash = "sha256=<hex>"`.
    #[serde(default)]
    hash: Option<String>,
}

/// The interpreter the backend's wheels are resolved for: CPython
/// `version` on Debian's x86_64 glibc. pip is told so twice: through its
/// target options (wheel tags, `Requires-Python`) and through the
/// environment its markers are evaluated in (pip evaluates those with the
/// interpreter it runs in, whatever `--python-version` says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonTarget {
    /// `MAJOR.MINOR`, e.g. `3.11`.
    pub version: String,
    /// `python_full_version`, e.g. `3.11.2` (from the locked Debian package),
    /// else `MAJOR.MINOR.0`.
    pub full_version: String,
}

/// The platforms pip may pick wheels for: Debian's glibc on x86_64.
/// `manylinux2014` also admits `manylinux2010` and `manylinux1` (pip expands it).
const TARGET_PLATFORMS: [&str; 5] = [
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_28_x86_64",
    "linux_x86_64",
    "any",
];

impl PythonTarget {
    /// `version` is `MAJOR.MINOR`; `full_version`, when known, must extend it.
    pub fn new(version: &str, full_version: Option<&str>) -> Result<Self, PypiError> {
        let (major, minor) = major_minor(version)?;
        let version = format!("{major}.{minor}");
        let full_version = match full_version.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) if f == version || f.starts_with(&format!("{version}.")) => f.to_string(),
            Some(f) => return Err(PypiError::BadPythonVersion { found: f.into() }),
            None => format!("{version}.0"),
        };
        Ok(PythonTarget { version, full_version })
    }

    fn abi(&self) -> String {
        format!("cp{}", self.version.replace('.', ""))
    }

    /// pip's target options: interpreter, ABIs and platforms.
    pub fn pip_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["--python-version", &self.version, "--implementation", "cp"]
            .map(String::from)
            .into();
        for abi in [self.abi().as_str(), "abi3", "none"] {
            args.extend(["--abi".to_string(), abi.to_string()]);
        }
        for platform in TARGET_PLATFORMS {
            args.extend(["--platform".to_string(), platform.to_string()]);
        }
        args
    }

    /// PEP 508 marker variables as CPython `version` on Linux x86_64 has them.
    /// `platform_release`/`platform_version` name a kernel, which a lock
    /// must not depend on: they are empty.
    pub fn marker_environment(&self) -> std::collections::BTreeMap<&'static str, String> {
        [
            ("implementation_name", "cpython"),
            ("implementation_version", &self.full_version),
            ("os_name", "posix"),
            ("platform_machine", "x86_64"),
            ("platform_python_implementation", "CPython"),
            ("platform_release", ""),
            ("platform_system", "Linux"),
            ("platform_version", ""),
            ("python_full_version", &self.full_version),
            ("python_version", &self.version),
            ("sys_platform", "linux"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
    }

    /// Whether pip, with [`PythonTarget::pip_args`], may install the wheel
    /// `filename`: one of its tag triples fits this interpreter and platform.
    pub fn accepts_wheel(&self, filename: &str) -> bool {
        let Some(w) = WheelName::parse(filename) else {
            return false;
        };
        let minor: u32 = self.version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
        let cp = self.abi();
        let platform_ok =
            |p: &str| TARGET_PLATFORMS.contains(&p) || p == "manylinux2010_x86_64" || p == "manylinux1_x86_64";
        // cp3N / py3N with N at most the target's minor version.
        let up_to = |tag: &str, prefix: &str| {
            tag.strip_prefix(prefix)
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n <= minor)
        };
        let triple_ok = |py: &str, abi: &str, plat: &str| {
            platform_ok(plat)
                && match abi {
                    a if a == cp => py == cp,
                    "abi3" => up_to(py, "cp3"),
                    "none" => py == cp || py == "py3" || up_to(py, "py3") || up_to(py, "cp3"),
                    _ => false,
                }
        };
        w.pythons.iter().any(|py| {
            w.abis
                .iter()
                .any(|abi| w.platforms.iter().any(|plat| triple_ok(py, abi, plat)))
        })
    }
}

fn major_minor(version: &str) -> Result<(u32, u32), PypiError> {
    let bad = || PypiError::BadPythonVersion { found: version.into() };
    let (major, minor) = version.trim().split_once('.').ok_or_else(bad)?;
    Ok((major.parse().map_err(|_| bad())?, minor.parse().map_err(|_| bad())?))
}

/// The parts of a wheel file name (PEP 427): `{name}-{version}(-{build})?-{py}-{abi}-{platform}.whl`,
/// each tag part possibly a `.`-separated set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    /// The distribution name, PEP 503 normalised.
    pub name: String,
    pub version: String,
    pub pythons: Vec<String>,
    pub abis: Vec<String>,
    pub platforms: Vec<String>,
}

impl WheelName {
    pub fn parse(filename: &str) -> Option<Self> {
        let stem = filename.strip_suffix(".whl")?;
        if stem.contains('/') {
            return None;
        }
        let parts: Vec<&str> = stem.split('-').collect();
        if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let n = parts.len();
        let set = |s: &str| s.split('.').map(str::to_ascii_lowercase).collect::<Vec<_>>();
        Some(WheelName {
            name: normalize_project(parts[0]),
            version: parts[1].to_string(),
            pythons: set(parts[n - 3]),
            abis: set(parts[n - 2]),
            platforms: set(parts[n - 1]),
        })
    }
}

/// How pip's resolver is started. The resolver may import and evaluate
/// package metadata, so where it runs is a policy of the caller: on this
/// machine with a host interpreter ([`HostPython`]), or in farm's sandbox
/// with the pinned one and network only to the index.
pub trait PipRunner: Send + Sync {
    /// Who runs pip, for messages (e.g. `python3 on this machine`).
    fn describe(&self) -> String;
    /// Runs the interpreter with `invocation.args` in `invocation.cwd` and
    /// `invocation.env` added, stdin empty, stdout and stderr captured.
    fn run<'a>(
        &'a self,
        invocation: &'a PipInvocation,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Output>> + Send + 'a>>;
}

/// One run of pip's resolver: `python <args>`. A runner that isolates it
/// must make `project` readable and `scratch` writable at the same paths.
#[derive(Debug, Clone)]
pub struct PipInvocation {
    /// Everything after the interpreter: `-c <shim> <marker env> install …`.
    /// The transport settings below are not in it: each runner passes them
    /// as they apply where pip runs.
    pub args: Vec<OsString>,
    /// The caller's CA bundle for the index (`PIP_CERT`, else
    /// `REQUESTS_CA_BUNDLE`, else `SSL_CERT_FILE`): pip's `--cert`.
    pub cert: Option<PathBuf>,
    /// The caller's `PIP_PROXY`: pip's `--proxy` where pip reaches the network itself.
    pub proxy: Option<OsString>,
    /// Set on top of the runner's environment.
    pub env: Vec<(OsString, OsString)>,
    /// An empty directory in `scratch`: pip treats names that are
    /// directories of its working directory as local projects.
    pub cwd: PathBuf,
    /// The project holding the requirements file and its includes (read only).
    pub project: PathBuf,
    /// Where pip writes its report (and nothing else).
    pub scratch: PathBuf,
}

/// pip run by an interpreter of this machine, in a child process.
#[derive(Debug, Clone)]
pub struct HostPython {
    pub python: PathBuf,
}

impl PipRunner for HostPython {
    fn describe(&self) -> String {
        format!("{} on this machine", self.python.display())
    }

    fn run<'a>(
        &'a self,
        invocation: &'a PipInvocation,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Output>> + Send + 'a>> {
        Box::pin(async move {
            let mut transport: Vec<OsString> = Vec::new();
            if let Some(cert) = &invocation.cert {
                transport.extend(["--cert".into(), cert.into()]);
            }
            if let Some(proxy) = &invocation.proxy {
                transport.extend(["--proxy".into(), proxy.clone()]);
            }
            tokio::process::Command::new(&self.python)
                .args(&invocation.args)
                .args(&transport)
                .current_dir(&invocation.cwd)
                .envs(invocation.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .output()
                .await
        })
    }
}

/// Runs pip's own entry point with the marker environment (argv[1], JSON)
/// replaced by the target's, so `; python_version >= "3.12"` and every
/// dependency's markers are evaluated for the pinned Python, not for the
/// interpreter pip happens to run in. Markers are evaluated through
/// `packaging.markers.default_environment`, looked up at each call.
const PIP_SHIM: &str = "\
import json, sys
from pip._vendor.packaging import markers
target = json.loads(sys.argv[1])
host_environment = markers.default_environment
def target_environment():
    env = host_environment()
    env.update(target)
    return env
markers.default_environment = target_environment
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
";

/// The complete set of wheels `requirements` installs on CPython
/// `python_version` (`"3.11"`) for manylinux x86_64, sorted by project name,
/// with pip run by the host interpreter `python`. Includes must stay in the
/// requirements file's directory. See [`resolve_requirements_with`].
pub async fn resolve_requirements(
    requirements: &Path,
    index_simple_url: &str,
    python_version: &str,
    python: &Path,
) -> Result<Vec<PythonWheel>, PypiError> {
    let project = requirements.parent().unwrap_or(Path::new("."));
    let target = PythonTarget::new(python_version, None)?;
    let runner = HostPython { python: python.into() };
    resolve_requirements_with(requirements, project, index_simple_url, &target, &runner).await
}

/// The complete set of wheels `requirements` installs on `target`, sorted
/// by project name. The file and its includes (which must stay in
/// `project`) are checked first: a line naming a local path, a VCS or direct
/// URL or an editable install is refused before anything runs
/// ([`crate::requirements`]). Then pip's resolver (isolated from the user's
/// pip configuration so no other source leaks in, wheels only, so no
/// package's build code runs) is started by `runner`; its `--report` is the answer.
pub async fn resolve_requirements_with(
    requirements: &Path,
    project: &Path,
    index_simple_url: &str,
    target: &PythonTarget,
    runner: &dyn PipRunner,
) -> Result<Vec<PythonWheel>, PypiError> {
    let reqs = crate::requirements::read(requirements, project)?;
    let scratch = tempfile::tempdir().map_err(|source| PypiError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let invocation = pip_invocation(requirements, project, index_simple_url, target, scratch.path())?;
    let report_path = scratch.path().join("report.json");
    let output = runner.run(&invocation).await.map_err(|source| PypiError::PipSpawn {
        runner: runner.describe(),
        source,
    })?;
    if !output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if let Some(conflict) = conflict_explanation(&stdout, &reqs) {
            stderr = format!("{stderr}\n\n{conflict}");
        }
        if stderr.trim().is_empty() {
            stderr = stdout.trim().to_string();
        }
        return Err(PypiError::PipFailed {
            requirements: requirements.into(),
            runner: runner.describe(),
            status: describe_status(&output.status),
            // pip names the index it looked in, and the index URL may carry a token.
            stderr: redact_text(stderr.trim()).into_owned(),
        });
    }
    let text = std::fs::read(&report_path).map_err(|source| PypiError::Io {
        path: report_path.clone(),
        source,
    })?;
    let report: Report = serde_json::from_slice(&text).map_err(|e| PypiError::BadReport {
        path: report_path.clone(),
        message: e.to_string(),
    })?;
    wheels_from_report(requirements, report)
}

/// `exit status 1`, or `killed by signal 9`.
fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "no exit status".into(),
    }
}

/// pip's explanation of a resolution conflict: the paragraph from `The
/// conflict is caused by:` (which pip logs at info level, on stdout), each
/// line naming a requirement of the file followed by that requirement's
/// place (`(requirements.txt:3)`).
fn conflict_explanation(stdout: &str, reqs: &crate::requirements::Requirements) -> Option<String> {
    let start = stdout.find("The conflict is caused by")?;
    let mut out = Vec::new();
    for (i, line) in stdout[start..].lines().enumerate() {
        if i > 0 && line.trim().is_empty() {
            break;
        }
        let mut line = line.trim_end().to_string();
        if i > 0 {
            let words: Vec<String> = line
                .split(|c: char| c.is_whitespace() || matches!(c, '=' | '<' | '>' | '!' | '~' | '[' | ',' | ';'))
                .map(normalize_project)
                .collect();
            let places: Vec<String> = reqs
                .items
                .iter()
                .filter(|r| words.contains(&r.name))
                .map(|r| r.place())
                .collect();
            if !places.is_empty() {
                line = format!("{line} ({})", places.join(", "));
            }
        }
        out.push(line);
    }
    Some(out.join("\n"))
}

/// The one place pip's resolver command line is made.
fn pip_invocation(
    requirements: &Path,
    project: &Path,
    index_simple_url: &str,
    target: &PythonTarget,
    scratch: &Path,
) -> Result<PipInvocation, PypiError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PypiError::Io { path, source }
    };
    let cwd = scratch.join("cwd");
    std::fs::create_dir(&cwd).map_err(io(&cwd))?;
    let requirements = std::path::absolute(requirements).map_err(io(requirements))?;
    let markers = serde_json::to_string(&target.marker_environment()).expect("a string map serialises");
    let mut args: Vec<OsString> = vec!["-c".into(), PIP_SHIM.into(), markers.into()];
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["install", "--isolated", "--disable-pip-version-check", "--no-input"]);
    // Not `--quiet`: pip explains a conflict at info level (see conflict_explanation).
    push(&["--dry-run", "--ignore-installed", "--only-binary=:all:"]);
    push(&["--index-url", index_simple_url]);
    let target_args = target.pip_args();
    push(&target_args.iter().map(String::as_str).collect::<Vec<_>>());
    args.push("--report".into());
    args.push(scratch.join("report.json").into());
    args.push("--target".into());
    args.push(scratch.join("target").into());
    args.push("-r".into());
    args.push(requirements.into());
    // `--isolated` also drops transport settings; these change how pip
    // connects, never what it resolves, so they are passed on explicitly.
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(v) = var("PIP_DEFAULT_TIMEOUT") {
        args.push("--timeout".into());
        args.push(v);
    }
    let cert = ["PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"]
        .into_iter()
        .find_map(var)
        .map(PathBuf::from);
    Ok(PipInvocation {
        args,
        cert,
        proxy: var("PIP_PROXY"),
        env: vec![("PYTHONDONTWRITEBYTECODE".into(), "1".into())],
        cwd,
        project: std::path::absolute(project).map_err(io(project))?,
        scratch: scratch.to_path_buf(),
    })
}

fn wheels_from_report(requirements: &Path, report: Report) -> Result<Vec<PythonWheel>, PypiError> {
    let mut wheels = Vec::new();
    for item in report.install {
        let name = normalize_project(&item.metadata.name);
        let unlockable = |message: String| PypiError::Unlockable {
            requirements: requirements.into(),
            package: format!("{name}=={}", item.metadata.version),
            message,
        };
        let url = &item.download_info.url;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(unlockable(format!(
                "comes from {}, not from the index; hint: farm locks only wheels downloaded over http(s)",
                redact_url(url)
            )));
        }
        if item.is_direct {
            return Err(unlockable(format!(
                "is a direct reference to {}, not a package of the index; hint: pin it by name",
                redact_url(url)
            )));
        }
        let filename = percent_decode(last_segment(url));
        if !filename.ends_with(".whl") {
            return Err(unlockable(format!(
                "resolved to {filename}, which is not a wheel; hint: pick a version that publishes a wheel for this platform"
            )));
        }
        let archive = item.download_info.archive_info.as_ref();
        let hex = archive.and_then(|a| {
            a.hashes
                .get("sha256")
                .cloned()
                .or_else(|| a.hash.as_deref()?.strip_prefix("sha256=").map(str::to_string))
        });
        let integrity = sha256_integrity(hex.as_deref())
            .ok_or_else(|| unlockable(format!("{filename} has no sha256 in pip's report")))?;
        let url = lock_url(&name, &filename);
        wheels.push(PythonWheel {
            filename,
            artifact: LockedArtifact {
                name,
                version: item.metadata.version.clone(),
                url,
                integrity,
                size: None,
                unpack: Unpack::File,
                strip: 0,
            },
        });
    }
    wheels.sort_by(|a, b| a.artifact.name.cmp(&b.artifact.name).then(a.filename.cmp(&b.filename)));
    Ok(wheels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_normalise_like_pep_503() {
        assert_eq!(normalize_project("Pydantic_Core"), "pydantic-core");
        assert_eq!(normalize_project("zope.interface"), "zope-interface");
        assert_eq!(normalize_project("a-_.b"), "a-b");
        assert_eq!(
            lock_url("typing_extensions", "typing_extensions-4.12.2-py3-none-any.whl"),
            "pypi://typing-extensions/typing_extensions-4.12.2-py3-none-any.whl"
        );
        assert_eq!(
            parse_lock_url("pypi://pip/pip-24.2-py3-none-any.whl").unwrap(),
            ("pip".to_string(), "pip-24.2-py3-none-any.whl".to_string())
        );
        assert!(parse_lock_url("pypi://pip").is_err());
        assert!(parse_lock_url("https://example.invalid/pip.whl").is_err());
    }

    #[test]
    fn json_pages_resolve_relative_urls() {
        let body = br#"{"meta":{"api-version":"1.1"},"name":"pip","files":[
            {"filename":"pip-24.2-py3-none-any.whl","url":"../../files/pip-24.2-py3-none-any.whl","hashes":{"sha256":"ab"},"size":7},
            {"filename":"pip-24.2.tar.gz","url":"https://files.example.invalid/pip-24.2.tar.gz#sha256=cd","hashes":{}}]}"#;
        let files = parse_project_page("https://pi.example.invalid/simple/pip/", body, true).unwrap();
        assert_eq!(
            files[0].url,
            "https://pi.example.invalid/files/pip-24.2-py3-none-any.whl"
        );
        assert_eq!(files[0].sha256.as_deref(), Some("ab"));
        assert_eq!(files[0].size, Some(7));
        assert_eq!(
            files[1].url, "https://files.example.invalid/pip-24.2.tar.gz",
            "fragments are not part of the URL"
        );
    }

    #[test]
    fn html_pages_give_the_same_files() {
        let body = br#"<!DOCTYPE html><html><body><h1>Links for pip</h1>
            <a href="https://files.example.invalid/p/pip-24.2-py3-none-any.whl#sha256=2cd5" data-requires-python="&gt;=3.8">pip-24.2-py3-none-any.whl</a><br/>
            <A HREF='/p/local-1.0%2Bcpu-py3-none-any.whl'></A>
            <abbr>not a link</abbr></body></html>"#;
        let files = parse_project_page("https://pi.example.invalid/simple/pip/", body, false).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].filename, "pip-24.2-py3-none-any.whl");
        assert_eq!(
            files[0].url,
            "https://files.example.invalid/p/pip-24.2-py3-none-any.whl"
        );
        assert_eq!(files[0].sha256.as_deref(), Some("2cd5"));
        assert_eq!(files[1].filename, "local-1.0+cpu-py3-none-any.whl");
        assert_eq!(
            files[1].url,
            "https://pi.example.invalid/p/local-1.0%2Bcpu-py3-none-any.whl"
        );
    }

    #[test]
    fn report_items_become_sorted_pypi_urls_and_sources_are_checked() {
        let report = r#"{"install":[
          {"metadata":{"name":"Starlette","version":"0.41.3"},"download_info":{"url":"https://files.example.invalid/s/starlette-0.41.3-py3-none-any.whl","archive_info":{"hashes":{"sha256":"44cedb2b7c77a9de33a8b74b2b90e9f50d11fcf25d8270ea525ad71a25374ff7"}}}},
          {"metadata":{"name":"anyio","version":"4.8.0"},"download_info":{"url":"https://files.example.invalid/a/anyio-4.8.0-py3-none-any.whl","archive_info":{"hash":"sha256=c66ae634e0b8228396b801741beb3294326d4b6102f7bba4041c0dfb58c29026"}}}]}"#;
        let wheels = wheels_from_report(Path::new("requirements.txt"), serde_json::from_str(report).unwrap()).unwrap();
        assert_eq!(wheels[0].artifact.name, "anyio");
        assert_eq!(wheels[0].artifact.url, "pypi://anyio/anyio-4.8.0-py3-none-any.whl");
        assert_eq!(wheels[1].artifact.name, "starlette");
        assert_eq!(wheels[1].filename, "starlette-0.41.3-py3-none-any.whl");

        let sdist = r#"{"install":[{"metadata":{"name":"x","version":"1"},"download_info":{"url":"https://files.example.invalid/x-1.tar.gz","archive_info":{"hashes":{"sha256":"00"}}}}]}"#;
        let err = wheels_from_report(Path::new("r.txt"), serde_json::from_str(sdist).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("`x==1`") && err.to_string().contains("not a wheel"),
            "{err}"
        );
        let local = r#"{"install":[{"metadata":{"name":"y","version":"2"},"download_info":{"url":"file:///opt/wheels/y-2-py3-none-any.whl","archive_info":{"hashes":{"sha256":"00"}}}}]}"#;
        let err = wheels_from_report(Path::new("r.txt"), serde_json::from_str(local).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("`y==2`") && err.to_string().contains("file:///opt/wheels"),
            "{err}"
        );
        let direct = r#"{"install":[{"metadata":{"name":"z","version":"3"},"is_direct":true,"download_info":{"url":"https://files.example.invalid/z-3-py3-none-any.whl","archive_info":{"hashes":{"sha256":"44cedb2b7c77a9de33a8b74b2b90e9f50d11fcf25d8270ea525ad71a25374ff7"}}}}]}"#;
        let err = wheels_from_report(Path::new("r.txt"), serde_json::from_str(direct).unwrap()).unwrap_err();
        assert!(err.to_string().contains("direct reference"), "{err}");
    }

    #[test]
    fn targets_give_pip_the_pinned_interpreter_and_its_markers() {
        let t = PythonTarget::new("3.12", None).unwrap();
        assert_eq!(t.full_version, "3.12.0");
        let args = t.pip_args().join(" ");
        assert!(
            args.starts_with("--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none"),
            "{args}"
        );
        assert!(args.contains("--platform manylinux2014_x86_64"), "{args}");
        let env = t.marker_environment();
        assert_eq!(env["python_version"], "3.12");
        assert_eq!(env["python_full_version"], "3.12.0");
        assert_eq!(env["sys_platform"], "linux");
        let t = PythonTarget::new("3.11", Some("3.11.2")).unwrap();
        assert_eq!(t.marker_environment()["python_full_version"], "3.11.2");
        assert!(PythonTarget::new("3.11", Some("3.12.1")).is_err());
        assert!(PythonTarget::new("3", None).is_err());
    }

    #[test]
    fn wheel_tags_are_matched_against_the_target() {
        let t = PythonTarget::new("3.11", None).unwrap();
        for ok in [
            "anyio-4.8.0-py3-none-any.whl",
            "pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl",
            "uvloop-0.21.0-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.whl",
            "six-1.17.0-py2.py3-none-any.whl",
        ] {
            assert!(t.accepts_wheel(ok), "{ok}");
        }
        for bad in [
            "pydantic_core-2.27.2-cp312-cp312-manylinux_2_17_x86_64.whl",
            "pydantic_core-2.27.2-cp311-cp311-macosx_11_0_arm64.whl",
            "pydantic_core-2.27.2-cp311-cp311-musllinux_1_1_x86_64.whl",
            "x-1.0-cp313-abi3-manylinux_2_17_x86_64.whl",
            "x-1.0.tar.gz",
            "x-1.0-py3-none.whl",
        ] {
            assert!(!t.accepts_wheel(bad), "{bad}");
        }
        let w = WheelName::parse("Typing_Extensions-4.12.2-1-py3-none-any.whl").unwrap();
        assert_eq!((w.name.as_str(), w.version.as_str()), ("typing-extensions", "4.12.2"));
    }

    /// pip's conflict paragraph (from its stdout) is kept up to the blank
    /// line after it, each line naming a requirement of the file gets that
    /// requirement's place, and a status reads `exit status N` once.
    #[test]
    fn conflicts_keep_pips_explanation_with_requirement_lines() {
        let dir = tempfile::tempdir().unwrap();
        let req = dir.path().join("requirements.txt");
        std::fs::write(&req, "# pins\nFastAPI==0.1\npydantic_core==2.0\n").unwrap();
        let reqs = crate::requirements::read(&req, dir.path()).unwrap();
        let stdout = "Collecting fastapi==0.1\n\nThe conflict is caused by:\n    The user requested pydantic-core==2.0\n    fastapi 0.1 depends on pydantic-core==1.0\n    starlette 1 depends on anyio\n\nTo fix this you could try to:\n1. loosen the range\n";
        let got = conflict_explanation(stdout, &reqs).unwrap();
        assert_eq!(
            got,
            "The conflict is caused by:\n    The user requested pydantic-core==2.0 (requirements.txt:3)\n    fastapi 0.1 depends on pydantic-core==1.0 (requirements.txt:2, requirements.txt:3)\n    starlette 1 depends on anyio"
        );
        assert!(conflict_explanation("ERROR: no matching distribution\n", &reqs).is_none());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_status(&std::process::ExitStatus::from_raw(1 << 8)),
            "exit status 1"
        );
        assert_eq!(
            describe_status(&std::process::ExitStatus::from_raw(9)),
            "killed by signal 9"
        );
    }

    /// Proves the relay rewrite replaces every file URL (made absolute
    /// first) of both page formats, keeps hashes, `data-*` attributes and
    /// JSON fields, and leaves out (or points nowhere) what it refuses.
    #[test]
    fn relayed_pages_point_every_file_at_the_relay() {
        let relay = |abs: &str, name: &str| -> Option<String> {
            abs.starts_with("http")
                .then(|| format!("http://relay/f/{}/{name}", abs.len()))
        };
        let html = br#"<html><body><a data-requires-python="&gt;=3.8" href="../../f/a-1.0-py3-none-any.whl#sha256=ab" data-core-metadata="sha256=cd">a-1.0-py3-none-any.whl</a>
<a href='file:///etc/x.whl'>x.whl</a><abbr href="nope">n</abbr></body></html>"#;
        let out = relay_project_page("https://pi.example.invalid/simple/a/", html, false, relay).unwrap();
        let out = String::from_utf8(out).unwrap();
        let first = "https://pi.example.invalid/f/a-1.0-py3-none-any.whl".len();
        assert!(
            out.contains(&format!(
                r#"<a data-requires-python="&gt;=3.8" href="http://relay/f/{first}/a-1.0-py3-none-any.whl#sha256=ab" data-core-metadata="sha256=cd">"#
            )),
            "{out}"
        );
        assert!(out.contains("<a href='#refused'>x.whl</a>"), "{out}");
        assert!(out.contains(r#"<abbr href="nope">"#), "{out}");
        let files = parse_project_page("http://relay/simple/a/", out.as_bytes(), false).unwrap();
        assert_eq!(files[0].sha256.as_deref(), Some("ab"));

        let json = br#"{"meta":{"api-version":"1.1"},"name":"a","files":[
            {"filename":"a-1.0-py3-none-any.whl","url":"/f/a-1.0-py3-none-any.whl","hashes":{"sha256":"ab"},"core-metadata":true},
            {"filename":"b.whl","url":"file:///etc/b.whl","hashes":{}}]}"#;
        let out = relay_project_page("https://pi.example.invalid/simple/a/", json, true, relay).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let files = v["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{v}");
        assert_eq!(files[0]["hashes"]["sha256"], "ab");
        assert_eq!(files[0]["core-metadata"], true);
        let abs = "https://pi.example.invalid/f/a-1.0-py3-none-any.whl".len();
        assert_eq!(files[0]["url"], format!("http://relay/f/{abs}/a-1.0-py3-none-any.whl"));
        assert_eq!(v["meta"]["api-version"], "1.1");
    }

    /// A requirement that names a local directory is refused before the
    /// runner is asked to start anything.
    #[tokio::test]
    async fn refused_requirements_never_reach_the_runner() {
        struct Counting(std::sync::atomic::AtomicUsize);
        impl PipRunner for Counting {
            fn describe(&self) -> String {
                "a counting runner".into()
            }
            fn run<'a>(
                &'a self,
                _: &'a PipInvocation,
            ) -> Pin<Box<dyn Future<Output = std::io::Result<Output>> + Send + 'a>> {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async { Err(std::io::Error::other("must not run")) })
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "anyio==4.8.0\n./pkg\n").unwrap();
        let runner = Counting(Default::default());
        let target = PythonTarget::new("3.11", None).unwrap();
        let err = resolve_requirements_with(
            &dir.path().join("requirements.txt"),
            dir.path(),
            "http://127.0.0.1:9/simple",
            &target,
            &runner,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("requirements.txt:2: a local path"), "{err}");
        assert_eq!(runner.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn resolve_pip_pins_the_universal_wheel_from_json_or_html_indexes() {
        let sha = "2cd581cf58ab7fcfca4ce8efa6dcacd0de5bf8d0a3eb9ec927e07405f4d9e2a2";
        let json = format!(
            r#"{{"files":[{{"filename":"pip-24.2.tar.gz","url":"/f/pip-24.2.tar.gz","hashes":{{"sha256":"00"}}}},
            {{"filename":"pip-24.2-py3-none-any.whl","url":"/f/pip-24.2-py3-none-any.whl","hashes":{{"sha256":"{sha}"}},"size":1815170}}]}}"#
        );
        let html = format!(
            r#"<html><body><a href="/f/pip-24.2-py3-none-any.whl#sha256={sha}">pip-24.2-py3-none-any.whl</a></body></html>"#
        );
        let server = test_index::serve(vec![
            ("/json/pip/", "application/vnd.pypi.simple.v1+json", json.as_str()),
            ("/html/pip/", "text/html", html.as_str()),
        ])
        .await;
        let client = Client::new(crate::http::ClientOptions::default());
        for flavour in ["json", "html"] {
            let index = format!("{}/{flavour}/", server.base);
            let pip = resolve_pip(&client, &index, "24.2").await.unwrap();
            assert_eq!(pip.name, "pip");
            assert_eq!(pip.url, "pypi://pip/pip-24.2-py3-none-any.whl", "{flavour}");
            assert_eq!(pip.integrity.to_string(), format!("sha256:{sha}"), "{flavour}");
            assert_eq!(pip.unpack, Unpack::File);
            let err = resolve_pip(&client, &index, "1.0").await.unwrap_err().to_string();
            assert!(err.contains("pip-1.0-py3-none-any.whl is not in the index"), "{err}");
        }
        let err = resolve_pip(&client, &format!("{}/nothing/", server.base), "24.2")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`pip`") && err.contains("404"), "{err}");
    }
}

/// A loopback HTTP server answering fixed pages, for tests of index clients.
#[cfg(test)]
pub(crate) mod test_index {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Server {
        pub base: String,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Serves `(path, content type, body)`; any other path is a 404.
    pub async fn serve(routes: Vec<(&str, &str, &str)>) -> Server {
        let routes: Vec<(String, String, String)> = routes
            .into_iter()
            .map(|(p, c, b)| (p.to_string(), c.to_string(), b.to_string()))
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&req);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, ctype, body) = match routes.iter().find(|r| r.0 == path) {
                        Some((_, c, b)) => ("200 OK", c.as_str(), b.as_str()),
                        None => ("404 Not Found", "text/plain", "not found"),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        Server { base, task }
    }
}
