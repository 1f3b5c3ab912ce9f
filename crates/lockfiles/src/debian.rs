//! The Debian side of a lock: a runnable base and the Python interpreter as
//! binary packages of one suite, with their dependency closure, pinned by the
//! SHA-256 the archive itself publishes (the way apko and rules_distroless
//! lock distro packages). Spec: `spec/debian.md`.
//!
//! Trust runs Release (signature checked with gpgv) → Packages index (its
//! SHA-256 from Release) → each .deb (its SHA-256 from the index). This module
//! picks and pins packages; it does not download or unpack .debs (`farm fetch`
//! does, with the integrity recorded here).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::http::{Client, Expected, HttpError};
use crate::integrity::{sha256_of, Integrity};
use crate::lock::{DebianBase, DebianPackage, LockedArtifact, Unpack};
use crate::redact::{redact_url, RedactedUrl};

pub const ROLE_BASE: &str = "base";
pub const ROLE_PYTHON: &str = "python";

/// What to resolve, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianRequest {
    /// Archive root: the directory holding `dists/` and `pool/`.
    pub mirror: String,
    pub suite: String,
    /// Archive components to search, `["main"]` by default.
    pub components: Vec<String>,
    /// Debian architecture name, e.g. `amd64`.
    pub architecture: String,
    /// (package, role) pairs; role is [`ROLE_BASE`] or [`ROLE_PYTHON`].
    pub roots: Vec<(String, String)>,
    /// Names (real or virtual) never added and never traversed.
    pub exclude: Vec<String>,
    /// OpenPGP keyring for the Release signature (apt's `Signed-By`).
    pub keyring: Option<PathBuf>,
    /// Where decompressed Packages indexes are kept between runs.
    pub cache_dir: Option<PathBuf>,
}

impl DebianRequest {
    pub fn new(mirror: impl Into<String>, suite: impl Into<String>, architecture: impl Into<String>) -> Self {
        DebianRequest {
            mirror: mirror.into(),
            suite: suite.into(),
            components: vec!["main".into()],
            architecture: architecture.into(),
            roots: Vec::new(),
            exclude: Vec::new(),
            keyring: None,
            cache_dir: None,
        }
    }
}

/// Whether the Release file that anchors the lock was signature-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseTrust {
    /// gpgv found a valid signature by a key in this keyring.
    Verified { keyring: PathBuf },
    /// Used without a signature check; `reason` says why (the caller warns).
    Unchecked { reason: String },
}

#[derive(Debug, Clone)]
pub struct DebianResolution {
    /// The closure, sorted by package name.
    pub packages: Vec<DebianPackage>,
    pub trust: ReleaseTrust,
    /// The Release (or InRelease) document the packages were pinned from,
    /// redacted for messages (the mirror URL may carry credentials).
    pub release_url: String,
}

impl DebianResolution {
    /// The lock's `[debian]` table for this resolution.
    pub fn to_base(&self, req: &DebianRequest) -> DebianBase {
        DebianBase {
            suite: req.suite.clone(),
            architecture: req.architecture.clone(),
            packages: self.packages.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{url}: {message}")]
    Release { url: RedactedUrl, message: String },
    #[error("{url}: the signature does not check out against keyring {keyring}: {detail}{hint}")]
    Signature {
        url: RedactedUrl,
        keyring: PathBuf,
        detail: String,
        hint: &'static str,
    },
    #[error("{url}: {message}")]
    Index { url: RedactedUrl, message: String },
    #[error("{index} index, package {package}: {message}")]
    BadField {
        index: String,
        package: String,
        message: String,
    },
    #[error("root package {package} (role {role}) is not in the {index} index; hint: check the name, the suite and `components`")]
    RootMissing {
        package: String,
        role: String,
        index: String,
    },
    #[error("root package {package} is also listed in `exclude`; hint: remove it from one of the two lists")]
    RootExcluded { package: String },
    #[error("{package} {field} {relation}, {reason}")]
    Unsatisfiable {
        package: String,
        field: &'static str,
        relation: String,
        reason: String,
    },
    #[error(
        "Python {version} is not in the Debian suite {suite} (no python{version}-minimal at {mirror}); \
         the mirror's suites offer:\n  {survey}\nhint: {hint}"
    )]
    PythonUnavailable {
        version: String,
        suite: String,
        mirror: RedactedUrl,
        survey: String,
        hint: String,
    },
    #[error("Debian request: {0}")]
    Request(String),
}

/// What the interpreter needs to run pip and uvicorn from wheels:
/// `python3.X-minimal` (the binary and core modules) and
/// `libpython3.X-stdlib` (ssl, sqlite3, ctypes, …); the closure adds the rest.
pub fn python_roots(version: &str) -> Vec<String> {
    vec![format!("python{version}-minimal"), format!("libpython{version}-stdlib")]
}

/// A minimal runnable base for Node and Python build steps.
///
/// - `base-files`: /etc/os-release and the base directory layout.
/// - `dash`: /bin/sh, which npm runs package scripts with.
/// - `coreutils`: `env` for `#!/usr/bin/env` shebangs, plus the usual tools.
/// - `findutils`: `find`, which build scripts (farm's own included) walk trees with.
/// - `libc6`, `libgcc-s1`, `libstdc++6`: what the Node binary links against.
///
/// Left out on purpose: `ca-certificates` ships PEM sources only (its bundle
/// is made by a maintainer script, and build steps are offline anyway);
/// `tzdata` pulls in debconf and perl, while the sandbox runs with TZ=UTC,
/// which glibc handles without zone files (apps needing zones bring the
/// `tzdata` wheel).
pub fn default_base_roots() -> Vec<String> {
    [
        "base-files",
        "dash",
        "coreutils",
        "findutils",
        "libc6",
        "libgcc-s1",
        "libstdc++6",
    ]
    .map(String::from)
    .to_vec()
}

/// Names to exclude by default: needed only by maintainer scripts, which farm
/// never runs (it unpacks data.tar and nothing else).
/// - `awk`: base-files pre-depends on it for its postinst.
/// - `dpkg`: dash depends on it to divert /bin/sh in its postinst; it would
///   drag in tar and the compression libraries.
pub fn default_excludes() -> Vec<String> {
    ["awk", "dpkg"].map(String::from).to_vec()
}

/// Resolves `req.roots` and their closure against the suite's Packages index.
pub async fn resolve(client: &Client, req: &DebianRequest) -> Result<DebianResolution, DebianError> {
    if req.mirror.trim().is_empty() || req.suite.trim().is_empty() || req.architecture.trim().is_empty() {
        return Err(DebianError::Request(format!(
            "mirror {:?}, suite {:?} and architecture {:?} must all be set",
            redact_url(&req.mirror),
            req.suite,
            req.architecture
        )));
    }
    let components = if req.components.is_empty() {
        vec!["main".to_string()]
    } else {
        req.components.clone()
    };
    let mirror = req.mirror.trim_end_matches('/');
    let scratch = tempfile::tempdir().map_err(|source| DebianError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let suite = load_suite(
        client,
        mirror,
        &req.suite,
        &components,
        &req.architecture,
        req.keyring.as_deref(),
        req.cache_dir.as_deref(),
        scratch.path(),
    )
    .await?;
    let (signed, texts) = (suite.signed, suite.texts);
    let label = format!("{} {}", req.suite, components.join(" "));
    let index = tokio::task::spawn_blocking(move || {
        let mut index = PackageIndex::new(&label);
        for (url, text) in &texts {
            index.add_text(url, text)?;
        }
        Ok::<_, DebianError>(index)
    })
    .await
    .expect("index parsing does not panic")?;

    let chosen = match index.closure(&req.roots, &req.exclude, &req.architecture) {
        Ok(c) => c,
        // A Python the suite lacks: say which suites of this mirror have which.
        Err(DebianError::RootMissing { package, role, index }) if role == ROLE_PYTHON => {
            let Some(version) = python_version_of(&package) else {
                return Err(DebianError::RootMissing { package, role, index });
            };
            return Err(python_unavailable(client, req, &components, version).await);
        }
        Err(e) => return Err(e),
    };
    let packages = chosen
        .iter()
        .map(|c| c.to_locked(mirror, index.label()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DebianResolution {
        packages,
        trust: signed.trust,
        release_url: redact_url(&signed.url),
    })
}

/// A suite's verified Release and its decompressed Packages texts, one per
/// component, each with the URL it came from.
struct LoadedSuite {
    signed: SignedRelease,
    texts: Vec<(String, String)>,
}

#[allow(clippy::too_many_arguments)]
async fn load_suite(
    client: &Client,
    mirror: &str,
    suite: &str,
    components: &[String],
    arch: &str,
    keyring: Option<&Path>,
    cache_dir: Option<&Path>,
    scratch: &Path,
) -> Result<LoadedSuite, DebianError> {
    let dists = format!("{mirror}/dists/{suite}");
    // Each suite gets its own scratch: Release files share names.
    let scratch = tempfile::tempdir_in(scratch).map_err(|source| DebianError::Io {
        path: scratch.to_path_buf(),
        source,
    })?;
    let signed = fetch_release(client, &dists, keyring, scratch.path()).await?;
    let release = Release::parse(&signed.url, &signed.text)?;
    release.check_suite(&signed.url, suite)?;
    let mut texts = Vec::new();
    for component in components {
        let file = release.index_file(&signed.url, component, arch)?;
        let text = load_index(
            client,
            &dists,
            &file,
            release.acquire_by_hash,
            cache_dir,
            scratch.path(),
        )
        .await?;
        texts.push((format!("{dists}/{}", file.path), text));
    }
    Ok(LoadedSuite { signed, texts })
}

// ---------------------------------------------------------------- suites and Python

/// Suite names asked for when surveying a mirror: the moving aliases first
/// (they name today's codenames in their Release), then codenames an
/// archive may still carry after the aliases moved on. A name the mirror
/// does not serve is skipped.
pub const SURVEY_SUITES: &[&str] = &[
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
];

/// What one suite of a mirror offers as `python3.X-minimal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuitePythons {
    /// The codename from the suite's Release (else the name asked for).
    pub codename: String,
    /// Release's `Suite:` (`stable`, `testing`, …), when given.
    pub alias: Option<String>,
    /// Release's `Version:` (absent for testing and unstable).
    pub release_version: Option<String>,
    /// (`MAJOR.MINOR`, Debian package version), sorted by `MAJOR.MINOR`;
    /// or why the suite could not be read.
    pub pythons: Result<Vec<(String, String)>, String>,
}

/// `3.13` from `python3.13-minimal` or `libpython3.13-stdlib`.
fn python_version_of(package: &str) -> Option<&str> {
    let v = package
        .strip_prefix("python")
        .and_then(|p| p.strip_suffix("-minimal"))
        .or_else(|| {
            package
                .strip_prefix("libpython")
                .and_then(|p| p.strip_suffix("-stdlib"))
        })?;
    let (major, minor) = v.split_once('.')?;
    (major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok()).then_some(v)
}

/// The `python3.X-minimal` packages of a Packages text: (`3.X`, version), one
/// per minor version (the highest).
pub fn pythons_in_index(text: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if line.is_empty() {
            current = None;
        } else if let Some(name) = line.strip_prefix("Package:") {
            current = python_version_of(name.trim()).filter(|_| name.trim().ends_with("-minimal"));
        } else if let (Some(minor), Some(version)) = (current, line.strip_prefix("Version:")) {
            let version = version.trim().to_string();
            match found.iter_mut().find(|(m, _)| m == minor) {
                Some(entry) if compare_versions(&version, &entry.1) == Ordering::Greater => entry.1 = version,
                Some(_) => {}
                None => found.push((minor.to_string(), version)),
            }
            current = None;
        }
    }
    found.sort_by_key(|(m, _)| m.split('.').map(|x| x.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>());
    found
}

/// Which Python each suite of `mirror` offers, for the suites in `suites`
/// the mirror serves (a 404 skips the name), one entry per codename, oldest
/// release first (by Release `Version:`; testing, then unstable, last).
/// Release signatures are checked as for a lock; indexes are cached alike.
#[allow(clippy::too_many_arguments)]
pub async fn survey_pythons(
    client: &Client,
    mirror: &str,
    suites: &[String],
    components: &[String],
    arch: &str,
    keyring: Option<&Path>,
    cache_dir: Option<&Path>,
) -> Result<Vec<SuitePythons>, DebianError> {
    let mirror = mirror.trim_end_matches('/');
    let scratch = tempfile::tempdir().map_err(|source| DebianError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut out: Vec<SuitePythons> = Vec::new();
    for suite in suites {
        let dists = format!("{mirror}/dists/{suite}");
        let dir = tempfile::tempdir_in(scratch.path()).map_err(|source| DebianError::Io {
            path: scratch.path().to_path_buf(),
            source,
        })?;
        // Read Release first: an alias whose codename is already listed costs no index.
        let signed = match fetch_release(client, &dists, keyring, dir.path()).await {
            Ok(s) => s,
            Err(DebianError::Http(e)) if is_not_found(&e) => continue,
            Err(e) => {
                out.push(SuitePythons {
                    codename: suite.clone(),
                    alias: None,
                    release_version: None,
                    pythons: Err(e.to_string()),
                });
                continue;
            }
        };
        let release = match Release::parse(&signed.url, &signed.text) {
            Ok(r) => r,
            Err(e) => {
                out.push(SuitePythons {
                    codename: suite.clone(),
                    alias: None,
                    release_version: None,
                    pythons: Err(e.to_string()),
                });
                continue;
            }
        };
        let codename = release.codename.clone().unwrap_or_else(|| suite.clone());
        if out.iter().any(|s| s.codename == codename) {
            continue;
        }
        let mut pythons = Ok(Vec::new());
        for component in components {
            let text = match release.index_file(&signed.url, component, arch) {
                Ok(file) => load_index(client, &dists, &file, release.acquire_by_hash, cache_dir, dir.path()).await,
                Err(e) => Err(e),
            };
            match (text, &mut pythons) {
                (Ok(text), Ok(all)) => {
                    for (minor, version) in pythons_in_index(&text) {
                        if !all.iter().any(|(m, _)| *m == minor) {
                            all.push((minor, version));
                        }
                    }
                }
                (Err(e), _) => pythons = Err(e.to_string()),
                _ => {}
            }
        }
        if let Ok(all) = &mut pythons {
            all.sort_by_key(|(m, _)| m.split('.').map(|x| x.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>());
        }
        out.push(SuitePythons {
            codename,
            alias: release.suite.clone(),
            release_version: release.version.clone(),
            pythons,
        });
    }
    let rank = |s: &SuitePythons| -> (u8, Vec<u32>) {
        match (&s.release_version, s.alias.as_deref()) {
            (Some(v), _) => (0, v.split('.').map(|x| x.parse().unwrap_or(0)).collect()),
            (None, Some("testing")) => (1, vec![]),
            (None, Some("unstable")) => (2, vec![]),
            (None, _) => (3, vec![]),
        }
    };
    // Stable sort: equal ranks keep the order they were asked in.
    out.sort_by_key(rank);
    Ok(out)
}

/// The error for a `[toolchains.python] version` the requested suite lacks:
/// each suite of the mirror with its Pythons, and the suite to set.
async fn python_unavailable(client: &Client, req: &DebianRequest, components: &[String], version: &str) -> DebianError {
    let mut suites = vec![req.suite.clone()];
    suites.extend(SURVEY_SUITES.iter().map(|s| s.to_string()).filter(|s| *s != req.suite));
    let survey = survey_pythons(
        client,
        &req.mirror,
        &suites,
        components,
        &req.architecture,
        req.keyring.as_deref(),
        req.cache_dir.as_deref(),
    )
    .await;
    let (survey, lines) = match survey {
        Ok(s) => {
            let lines = s.iter().map(describe_suite).collect::<Vec<_>>();
            (s, lines)
        }
        Err(e) => (Vec::new(), vec![format!("(could not survey the mirror's suites: {e})")]),
    };
    let has = |s: &&SuitePythons| s.pythons.as_ref().is_ok_and(|p| p.iter().any(|(m, _)| m == version));
    // The oldest release that has it: the longest-supported choice.
    let suggestion = survey.iter().find(has).map(|s| s.codename.clone());
    let in_requested = survey
        .iter()
        .find(|s| s.codename == req.suite || s.alias.as_deref() == Some(req.suite.as_str()))
        .and_then(|s| s.pythons.as_ref().ok())
        .map(|p| p.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut hint = match &suggestion {
        Some(s) => format!("set [toolchains.debian] suite = \"{s}\" in farm.toml"),
        None => format!("no suite of this mirror has Python {version}; pick a version one of them has"),
    };
    if let Some(v) = in_requested.last() {
        hint.push_str(&format!(
            ", or keep suite {:?} with [toolchains.python] version = \"{v}\"",
            req.suite
        ));
    }
    DebianError::PythonUnavailable {
        version: version.to_string(),
        suite: req.suite.clone(),
        mirror: req.mirror.trim_end_matches('/').into(),
        survey: lines.join("\n  "),
        hint,
    }
}

fn describe_suite(s: &SuitePythons) -> String {
    let name = match (&s.alias, &s.release_version) {
        (Some(a), Some(v)) if *a != s.codename => format!("{} ({a} {v})", s.codename),
        (Some(a), None) if *a != s.codename => format!("{} ({a})", s.codename),
        (_, Some(v)) => format!("{} ({v})", s.codename),
        _ => s.codename.clone(),
    };
    match &s.pythons {
        Ok(p) if p.is_empty() => format!("{name}: no python3.X-minimal"),
        Ok(p) => format!(
            "{name}: {}",
            p.iter()
                .map(|(m, v)| format!("Python {m} (python{m}-minimal {v})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => format!("{name}: could not be read: {e}"),
    }
}

// ---------------------------------------------------------------- Release

struct SignedRelease {
    url: String,
    text: String,
    trust: ReleaseTrust,
}

/// Fetches `InRelease` (clearsigned), or `Release` + `Release.gpg` where a
/// mirror has no InRelease, and checks the signature when it can.
async fn fetch_release(
    client: &Client,
    dists: &str,
    keyring: Option<&Path>,
    scratch: &Path,
) -> Result<SignedRelease, DebianError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DebianError::Io { path, source }
    };
    let in_url = format!("{dists}/InRelease");
    match client.get_bytes(&in_url).await {
        Ok(bytes) => {
            let signed = scratch.join("InRelease");
            std::fs::write(&signed, &bytes).map_err(io(&signed))?;
            let out = scratch.join("InRelease.verified");
            if let Some(keyring) = keyring {
                if gpgv(keyring, &[&signed], Some(&out), &in_url, scratch).await? {
                    // Parse what gpgv vouches for, never the armoured file itself.
                    let text = read_text(&out, &in_url)?;
                    return Ok(SignedRelease {
                        url: in_url,
                        text,
                        trust: verified(keyring),
                    });
                }
            }
            let text = String::from_utf8(bytes).map_err(|_| DebianError::Release {
                url: (&in_url).into(),
                message: "not UTF-8 text".into(),
            })?;
            let body = clearsigned_body(&text).ok_or_else(|| DebianError::Release {
                url: (&in_url).into(),
                message: "not a clearsigned document (no `-----BEGIN PGP SIGNED MESSAGE-----` block)".into(),
            })?;
            Ok(SignedRelease {
                url: in_url,
                text: body,
                trust: unchecked(keyring),
            })
        }
        Err(e) if is_not_found(&e) => {
            let url = format!("{dists}/Release");
            let bytes = client.get_bytes(&url).await?;
            let release = scratch.join("Release");
            std::fs::write(&release, &bytes).map_err(io(&release))?;
            let mut trust = unchecked(keyring);
            if let Some(keyring) = keyring {
                let sig_url = format!("{dists}/Release.gpg");
                let sig_bytes = client.get_bytes(&sig_url).await?;
                let sig = scratch.join("Release.gpg");
                std::fs::write(&sig, &sig_bytes).map_err(io(&sig))?;
                if gpgv(keyring, &[&sig, &release], None, &url, scratch).await? {
                    trust = verified(keyring);
                }
            }
            let text = String::from_utf8(bytes).map_err(|_| DebianError::Release {
                url: (&url).into(),
                message: "not UTF-8 text".into(),
            })?;
            Ok(SignedRelease { url, text, trust })
        }
        Err(e) => Err(e.into()),
    }
}

fn verified(keyring: &Path) -> ReleaseTrust {
    ReleaseTrust::Verified {
        keyring: keyring.to_path_buf(),
    }
}

fn unchecked(keyring: Option<&Path>) -> ReleaseTrust {
    let reason = match keyring {
        Some(_) => "gpgv is not installed (Debian package `gpgv`)".to_string(),
        None => "no keyring configured (apt's `Signed-By`, or the keyring setting in farm.toml)".to_string(),
    };
    ReleaseTrust::Unchecked { reason }
}

fn is_not_found(e: &HttpError) -> bool {
    match e {
        HttpError::Status { status, .. } => *status == 404,
        HttpError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

fn read_text(path: &Path, url: &str) -> Result<String, DebianError> {
    let bytes = std::fs::read(path).map_err(|source| DebianError::Io {
        path: path.into(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| DebianError::Release {
        url: url.into(),
        message: "not UTF-8 text".into(),
    })
}

/// Runs gpgv on `files` (a clearsigned file, or a detached signature and its
/// data). Ok(false) when gpgv is not installed; an error when the signature
/// is bad or made by no key of `keyring`.
async fn gpgv(
    keyring: &Path,
    files: &[&Path],
    output: Option<&Path>,
    url: &str,
    scratch: &Path,
) -> Result<bool, DebianError> {
    let fail = |detail: String, hint: &'static str| DebianError::Signature {
        url: url.into(),
        keyring: keyring.into(),
        detail,
        hint,
    };
    let key_bytes = std::fs::read(keyring).map_err(|e| {
        fail(
            format!("cannot read the keyring: {e}"),
            "; hint: check `Signed-By` in the apt source or farm.toml",
        )
    })?;
    // gpgv reads binary keyrings only; apt accepts armoured `.asc` files too.
    let keyring_file = if key_bytes.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        let binary = dearmor(&String::from_utf8_lossy(&key_bytes))
            .ok_or_else(|| fail("the armoured keyring does not decode".into(), ""))?;
        let path = scratch.join("keyring.gpg");
        std::fs::write(&path, binary).map_err(|source| DebianError::Io {
            path: path.clone(),
            source,
        })?;
        path
    } else {
        keyring.to_path_buf()
    };
    let mut cmd = tokio::process::Command::new("gpgv");
    // GNUPGHOME keeps gpgv away from the user's own ~/.gnupg.
    cmd.env("GNUPGHOME", scratch)
        .arg("--keyring")
        .arg(&keyring_file)
        .args(["--status-fd", "1"]);
    if let Some(out) = output {
        cmd.arg("--output").arg(out);
    }
    cmd.args(files);
    let result = match cmd.output().await {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(fail(format!("could not run gpgv: {e}"), "")),
    };
    let status = String::from_utf8_lossy(&result.stdout);
    // Debian signs with several keys; like apt, one valid signature suffices
    // (others may be by keys not in this keyring), but any bad one fails.
    let lines: Vec<&str> = status.lines().filter_map(|l| l.strip_prefix("[GNUPG:] ")).collect();
    let bad = lines.iter().find(|l| l.starts_with("BADSIG"));
    let valid = lines.iter().any(|l| l.starts_with("VALIDSIG"));
    if let Some(bad) = bad {
        return Err(fail(
            format!("gpgv reports {bad}"),
            "; hint: the file was altered or truncated in transit",
        ));
    }
    if !valid {
        let stderr = String::from_utf8_lossy(&result.stderr);
        let detail = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(fail(
            if detail.is_empty() {
                "no valid signature".into()
            } else {
                detail
            },
            "; hint: is this the right keyring for this archive?",
        ));
    }
    Ok(true)
}

/// The binary packets of an ASCII-armoured OpenPGP block (or several).
fn dearmor(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if !line.starts_with("-----BEGIN PGP") {
            continue;
        }
        // Armour headers run up to the first empty line.
        for header in lines.by_ref() {
            if header.is_empty() {
                break;
            }
        }
        let mut b64 = String::new();
        for body in lines.by_ref() {
            if body.starts_with("-----END") {
                break;
            }
            if !body.starts_with('=') {
                b64.push_str(body);
            }
        }
        out.extend(base64::engine::general_purpose::STANDARD.decode(b64).ok()?);
    }
    (!out.is_empty()).then_some(out)
}

/// The signed text of a clearsigned document, dash-escaping undone.
pub fn clearsigned_body(text: &str) -> Option<String> {
    let mut lines = text.lines();
    if lines.next()?.trim_end() != "-----BEGIN PGP SIGNED MESSAGE-----" {
        return None;
    }
    for header in lines.by_ref() {
        if header.trim().is_empty() {
            break;
        }
    }
    let mut body = String::new();
    for line in lines {
        if line.trim_end() == "-----BEGIN PGP SIGNATURE-----" {
            return Some(body);
        }
        body.push_str(line.strip_prefix("- ").unwrap_or(line));
        body.push('\n');
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Xz,
    Gzip,
    None,
}

/// One Packages index as Release lists it.
#[derive(Debug, Clone)]
struct IndexFile {
    /// Relative to `dists/<suite>/`, e.g. `main/binary-amd64/Packages.xz`.
    path: String,
    sha256: Integrity,
    size: u64,
    compression: Compression,
    /// The digest of the decompressed index, when Release lists it.
    uncompressed: Option<Integrity>,
}

struct Release {
    suite: Option<String>,
    codename: Option<String>,
    version: Option<String>,
    components: Vec<String>,
    acquire_by_hash: bool,
    /// (path, sha256, size) from the `SHA256:` field.
    sha256: Vec<(String, Integrity, u64)>,
}

impl Release {
    fn parse(url: &str, text: &str) -> Result<Release, DebianError> {
        let err = |message: String| DebianError::Release {
            url: url.into(),
            message,
        };
        let mut first: Option<Vec<(String, String)>> = None;
        for_each_stanza(text, |_, fields| {
            if first.is_none() {
                first = Some(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
            }
            Ok(())
        })
        .map_err(|(line, m)| err(format!("line {line}: {m}")))?;
        let fields = first.ok_or_else(|| err("empty Release file".into()))?;
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let sums = get("SHA256").ok_or_else(|| {
            err("no `SHA256:` field; farm pins indexes by SHA-256 only (hint: the archive is too old or not Debian-style)".into())
        })?;
        let mut sha256 = Vec::new();
        for line in sums.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [hex, size, path] = parts[..] else {
                return Err(err(format!("`SHA256:` entry {line:?} is not `<sha256> <size> <path>`")));
            };
            let integrity = Integrity::parse(&format!("sha256:{hex}"))
                .map_err(|_| err(format!("`SHA256:` entry {line:?}: not a SHA-256 digest")))?;
            let size = size
                .parse()
                .map_err(|_| err(format!("`SHA256:` entry {line:?}: bad size")))?;
            sha256.push((path.to_string(), integrity, size));
        }
        Ok(Release {
            suite: get("Suite"),
            codename: get("Codename"),
            version: get("Version"),
            components: get("Components")
                .map(|c| c.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
            acquire_by_hash: get("Acquire-By-Hash").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            sha256,
        })
    }

    /// A mirror that answers for another suite must not slip into the lock.
    fn check_suite(&self, url: &str, wanted: &str) -> Result<(), DebianError> {
        if self.suite.is_none() && self.codename.is_none() {
            return Ok(());
        }
        if self.suite.as_deref() == Some(wanted) || self.codename.as_deref() == Some(wanted) {
            return Ok(());
        }
        Err(DebianError::Release {
            url: url.into(),
            message: format!(
                "expected suite {wanted}, found Suite: {} and Codename: {}; hint: the mirror serves another distribution here",
                self.suite.as_deref().unwrap_or("-"),
                self.codename.as_deref().unwrap_or("-")
            ),
        })
    }

    fn index_file(&self, url: &str, component: &str, arch: &str) -> Result<IndexFile, DebianError> {
        let base = format!("{component}/binary-{arch}/Packages");
        let find = |path: &str| self.sha256.iter().find(|(p, _, _)| p == path);
        let uncompressed = find(&base).map(|(_, i, _)| i.clone());
        for (suffix, compression) in [
            (".xz", Compression::Xz),
            (".gz", Compression::Gzip),
            ("", Compression::None),
        ] {
            if let Some((path, sha256, size)) = find(&format!("{base}{suffix}")) {
                return Ok(IndexFile {
                    path: path.clone(),
                    sha256: sha256.clone(),
                    size: *size,
                    compression,
                    uncompressed: uncompressed.clone(),
                });
            }
        }
        Err(DebianError::Release {
            url: url.into(),
            message: format!(
                "lists no {base}(.xz|.gz) (components: {}); hint: check `components` and the architecture",
                if self.components.is_empty() {
                    "-".to_string()
                } else {
                    self.components.join(" ")
                }
            ),
        })
    }
}

/// The decompressed Packages text: from `cache_dir` when a previous run left
/// it there (keyed by the compressed file's SHA-256 from Release), else
/// downloaded, checked and cached.
async fn load_index(
    client: &Client,
    dists: &str,
    file: &IndexFile,
    by_hash: bool,
    cache_dir: Option<&Path>,
    scratch: &Path,
) -> Result<String, DebianError> {
    let url = format!("{dists}/{}", file.path);
    let index_err = |message: String| DebianError::Index {
        url: (&url).into(),
        message,
    };
    let cached = cache_dir.map(|d| d.join(format!("debian-packages-{}", file.sha256.hex())));
    if let Some(path) = &cached {
        if let Ok(bytes) = std::fs::read(path) {
            // A damaged cache entry is ignored and replaced, never trusted.
            if file.uncompressed.as_ref().is_none_or(|i| i.matches(&bytes)) {
                if let Ok(text) = String::from_utf8(bytes) {
                    return Ok(text);
                }
            }
        }
    }
    let download = scratch.join(format!("index-{}", file.sha256.hex()));
    // By-hash paths never change under a syncing mirror; fall back when absent.
    let mut fetched = Err(HttpError::BadUrl {
        url: (&url).into(),
        message: "not tried".into(),
    });
    // Release gives the size: a mirror sending more is stopped there.
    let expected = Expected {
        integrity: Some(&file.sha256),
        size: Some(file.size),
    };
    if by_hash {
        let dir = file.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let hashed = format!("{dists}/{dir}/by-hash/SHA256/{}", file.sha256.hex());
        fetched = client.download_expected(&hashed, expected, &download, &|_, _| {}).await;
    }
    if fetched.as_ref().is_err_and(|e| !by_hash || is_not_found(e)) {
        fetched = client.download_expected(&url, expected, &download, &|_, _| {}).await;
    }
    fetched?;
    let got = std::fs::metadata(&download)
        .map_err(|source| DebianError::Io {
            path: download.clone(),
            source,
        })?
        .len();
    if got != file.size {
        return Err(index_err(format!("{got} bytes, but Release says {}", file.size)));
    }
    let compression = file.compression;
    let path = download.clone();
    let raw = tokio::task::spawn_blocking(move || decompress(&path, compression))
        .await
        .expect("decompression does not panic")
        .map_err(|e| index_err(format!("cannot decompress: {e}")))?;
    if let Some(expected) = &file.uncompressed {
        let actual = sha256_of(&raw);
        if actual != *expected {
            return Err(index_err(format!(
                "decompressed index is {actual}, but Release says {expected}"
            )));
        }
    }
    let text = String::from_utf8(raw).map_err(|_| index_err("the index is not UTF-8 text".into()))?;
    if let (Some(dir), Some(path)) = (cache_dir, &cached) {
        let io = |source| DebianError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
    }
    Ok(text)
}

fn decompress(path: &Path, compression: Compression) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    match compression {
        Compression::Xz => liblzma::read::XzDecoder::new_multi_decoder(file).read_to_end(&mut out)?,
        Compression::Gzip => flate2::read::MultiGzDecoder::new(file).read_to_end(&mut out)?,
        Compression::None => std::io::BufReader::new(file).read_to_end(&mut out)?,
    };
    Ok(out)
}

/// Calls `each(first_line, fields)` for every RFC 822 stanza of `text`.
/// Multi-line values keep their inner newlines. Errors are (line, message).
fn for_each_stanza<'a>(
    text: &'a str,
    mut each: impl FnMut(usize, &[(&'a str, &'a str)]) -> Result<(), String>,
) -> Result<(), (usize, String)> {
    let mut fields: Vec<(&'a str, &'a str)> = Vec::new();
    let mut start_line = 0;
    // The field being read: key, and its value's byte range in `text`.
    let mut current: Option<(&'a str, usize, usize)> = None;
    let mut pos = 0;
    let flush = |current: &mut Option<(&'a str, usize, usize)>, fields: &mut Vec<(&'a str, &'a str)>| {
        if let Some((k, s, e)) = current.take() {
            fields.push((k, text[s..e].trim()));
        }
    };
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let line_start = pos;
        pos += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        if content.trim().is_empty() {
            flush(&mut current, &mut fields);
            if !fields.is_empty() {
                each(start_line, &fields).map_err(|m| (start_line, m))?;
                fields.clear();
            }
            continue;
        }
        if content.starts_with(' ') || content.starts_with('\t') {
            match &mut current {
                Some((_, _, end)) => *end = line_start + content.len(),
                None => return Err((n + 1, "continuation line without a field before it".into())),
            }
            continue;
        }
        if content.starts_with('#') {
            continue;
        }
        flush(&mut current, &mut fields);
        let colon = content
            .find(':')
            .ok_or_else(|| (n + 1, format!("expected `Field: value`, found {content:?}")))?;
        if fields.is_empty() {
            start_line = n + 1;
        }
        current = Some((&content[..colon], line_start + colon + 1, line_start + content.len()));
    }
    flush(&mut current, &mut fields);
    if !fields.is_empty() {
        each(start_line, &fields).map_err(|m| (start_line, m))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- versions

/// dpkg's version ordering: epoch, then upstream version, then Debian
/// revision, each compared with dpkg's rules (`~` sorts before everything,
/// even the end of the string; digit runs compare as numbers).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a);
    let (eb, ub, rb) = split_version(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// The upstream part of a Debian version, without epoch, revision or a
/// `+`/`~` suffix: `3.11.2-6+deb12u6` → `3.11.2`, the interpreter's own
/// version for a `python3.X` package.
pub fn upstream_version(v: &str) -> &str {
    let (_, upstream, _) = split_version(v);
    upstream.split(['+', '~']).next().unwrap_or(upstream)
}

fn split_version(v: &str) -> (u64, &str, &str) {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) && !e.is_empty() => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// The weight dpkg gives a character in the non-digit parts.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// A relation operator in `Depends` and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOp {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl VersionOp {
    fn parse(s: &str) -> Option<VersionOp> {
        Some(match s {
            "<<" => VersionOp::Lt,
            // `<` and `>` are the obsolete spellings of `<=` and `>=`.
            "<=" | "<" => VersionOp::Le,
            "=" => VersionOp::Eq,
            ">=" | ">" => VersionOp::Ge,
            ">>" => VersionOp::Gt,
            _ => return None,
        })
    }

    /// Whether `version` stands in this relation to `target`.
    pub fn holds(self, version: &str, target: &str) -> bool {
        let o = compare_versions(version, target);
        match self {
            VersionOp::Lt => o == Ordering::Less,
            VersionOp::Le => o != Ordering::Greater,
            VersionOp::Eq => o == Ordering::Equal,
            VersionOp::Ge => o != Ordering::Less,
            VersionOp::Gt => o == Ordering::Greater,
        }
    }
}

// ---------------------------------------------------------------- index

/// One binary package stanza, reduced to what resolution and the lock need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub depends: String,
    pub pre_depends: String,
    pub provides: String,
    pub filename: String,
    pub size: String,
    pub sha256: String,
}

/// A suite's binary packages for one architecture (one or more components).
pub struct PackageIndex {
    label: String,
    packages: Vec<IndexEntry>,
    /// Package name → entries, highest version first.
    by_name: HashMap<String, Vec<usize>>,
    /// Provided name → (providing entry, provided version if any).
    providers: HashMap<String, Vec<(usize, Option<String>)>>,
}

impl PackageIndex {
    /// An empty index; `label` (e.g. `bookworm main`) names it in errors.
    pub fn new(label: &str) -> Self {
        PackageIndex {
            label: label.into(),
            packages: Vec::new(),
            by_name: HashMap::new(),
            providers: HashMap::new(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// Adds the stanzas of one Packages file; `origin` names it in errors.
    pub fn add_text(&mut self, origin: &str, text: &str) -> Result<(), DebianError> {
        let mut seen: HashSet<(String, String)> = self
            .packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        let mut added = Vec::new();
        for_each_stanza(text, |_, fields| {
            let mut entry = IndexEntry {
                name: String::new(),
                version: String::new(),
                architecture: String::new(),
                depends: String::new(),
                pre_depends: String::new(),
                provides: String::new(),
                filename: String::new(),
                size: String::new(),
                sha256: String::new(),
            };
            for (k, v) in fields {
                let slot = match *k {
                    "Package" => &mut entry.name,
                    "Version" => &mut entry.version,
                    "Architecture" => &mut entry.architecture,
                    "Depends" => &mut entry.depends,
                    "Pre-Depends" => &mut entry.pre_depends,
                    "Provides" => &mut entry.provides,
                    "Filename" => &mut entry.filename,
                    "Size" => &mut entry.size,
                    "SHA256" => &mut entry.sha256,
                    _ => continue,
                };
                *slot = v.to_string();
            }
            if entry.name.is_empty() || entry.version.is_empty() {
                return Err("stanza without `Package:` or `Version:`".into());
            }
            // The same package can sit in two components; the first copy wins.
            if seen.insert((entry.name.clone(), entry.version.clone())) {
                added.push(entry);
            }
            Ok(())
        })
        .map_err(|(line, message)| DebianError::Index {
            url: origin.into(),
            message: format!("line {line}: {message}"),
        })?;
        for entry in added {
            let id = self.packages.len();
            for group in parse_relations(&entry.provides, None).map_err(|m| DebianError::BadField {
                index: self.label.clone(),
                package: entry.name.clone(),
                message: format!("Provides: {m}"),
            })? {
                for rel in group {
                    let version = rel.constraint.map(|(_, v)| v.to_string());
                    self.providers
                        .entry(rel.name.to_string())
                        .or_default()
                        .push((id, version));
                }
            }
            self.by_name.entry(entry.name.clone()).or_default().push(id);
            self.packages.push(entry);
        }
        let packages = &self.packages;
        for ids in self.by_name.values_mut() {
            ids.sort_by(|&a, &b| compare_versions(&packages[b].version, &packages[a].version));
        }
        Ok(())
    }

    /// The dependency closure of `roots` (package, role): see `spec/debian.md`.
    /// Packages of another architecture than `arch` (or `all`) are ignored.
    pub fn closure(
        &self,
        roots: &[(String, String)],
        exclude: &[String],
        arch: &str,
    ) -> Result<Vec<ChosenPackage<'_>>, DebianError> {
        let mut state = ClosureState {
            index: self,
            arch,
            excluded: exclude.iter().map(String::as_str).collect(),
            selected: HashMap::new(),
            queue: VecDeque::new(),
        };
        let mut edges: HashMap<usize, Vec<usize>> = HashMap::new();
        // Roots are chosen before any dependency, so a root (say `mawk`)
        // satisfies a virtual dependency (`awk`) instead of another provider.
        let mut root_ids = Vec::new();
        for (name, role) in roots {
            if state.excluded.contains(name.as_str()) {
                return Err(DebianError::RootExcluded { package: name.clone() });
            }
            let id = match state.evaluate(&Relation { name, constraint: None }) {
                Alternative::Selected(id) | Alternative::Candidate(id) => id,
                _ => {
                    return Err(DebianError::RootMissing {
                        package: name.clone(),
                        role: role.clone(),
                        index: self.label.clone(),
                    })
                }
            };
            state.select(id);
            root_ids.push((id, role.as_str()));
        }
        while let Some(id) = state.queue.pop_front() {
            let entry = &self.packages[id];
            for (field, text) in [("pre-depends on", &entry.pre_depends), ("depends on", &entry.depends)] {
                let groups = parse_relations(text, Some(arch)).map_err(|m| DebianError::BadField {
                    index: self.label.clone(),
                    package: entry.name.clone(),
                    message: format!("{field}: {m}"),
                })?;
                for group in groups {
                    match state.choose(&group) {
                        Ok(Some(dep)) => {
                            edges.entry(id).or_default().push(dep);
                            state.select(dep);
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            return Err(DebianError::Unsatisfiable {
                                package: entry.name.clone(),
                                field,
                                relation: group.iter().map(Relation::to_string).collect::<Vec<_>>().join(" | "),
                                reason,
                            })
                        }
                    }
                }
            }
        }
        // A package gets the role of every root it is reachable from.
        let mut roles: HashMap<usize, BTreeSet<&str>> = HashMap::new();
        for (root, role) in root_ids {
            let mut seen = HashSet::new();
            let mut stack = vec![root];
            while let Some(id) = stack.pop() {
                if !seen.insert(id) {
                    continue;
                }
                roles.entry(id).or_default().insert(role);
                stack.extend(edges.get(&id).into_iter().flatten().copied());
            }
        }
        let mut out: Vec<ChosenPackage<'_>> = state
            .selected
            .values()
            .map(|&id| ChosenPackage {
                entry: &self.packages[id],
                roles: roles.get(&id).into_iter().flatten().map(|r| r.to_string()).collect(),
            })
            .collect();
        out.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        Ok(out)
    }
}

/// A package of the closure and why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenPackage<'a> {
    pub entry: &'a IndexEntry,
    /// Sorted, e.g. `["base", "python"]`.
    pub roles: Vec<String>,
}

impl ChosenPackage<'_> {
    /// The lock entry: URL under `mirror`, integrity from the index's SHA256.
    pub fn to_locked(&self, mirror: &str, index_label: &str) -> Result<DebianPackage, DebianError> {
        let e = self.entry;
        let bad = |message: String| DebianError::BadField {
            index: index_label.into(),
            package: format!("{} {}", e.name, e.version),
            message,
        };
        if e.filename.is_empty() {
            return Err(bad("no `Filename:` field, so there is no .deb to fetch".into()));
        }
        let integrity = Integrity::parse(&format!("sha256:{}", e.sha256))
            .map_err(|_| bad(format!("`SHA256:` is {:?}; expected 64 hex digits", e.sha256)))?;
        let size = e
            .size
            .parse::<u64>()
            .map_err(|_| bad(format!("`Size:` is {:?}; expected a number", e.size)))?;
        Ok(DebianPackage {
            artifact: LockedArtifact {
                name: e.name.clone(),
                version: e.version.clone(),
                url: format!(
                    "{}/{}",
                    mirror.trim_end_matches('/'),
                    e.filename.trim_start_matches('/')
                ),
                integrity,
                size: Some(size),
                unpack: Unpack::Deb,
                strip: 0,
            },
            roles: self.roles.clone(),
        })
    }
}

/// One alternative of a relation: `name (op version)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Relation<'a> {
    name: &'a str,
    constraint: Option<(VersionOp, &'a str)>,
}

impl std::fmt::Display for Relation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)?;
        if let Some((op, v)) = self.constraint {
            let op = match op {
                VersionOp::Lt => "<<",
                VersionOp::Le => "<=",
                VersionOp::Eq => "=",
                VersionOp::Ge => ">=",
                VersionOp::Gt => ">>",
            };
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// Parses `a (>= 1) | b:any, c [amd64]` into groups of alternatives.
/// Architecture qualifiers (`:any`, `:native`) are dropped; with `arch`
/// given, alternatives restricted to other architectures are left out.
fn parse_relations<'a>(field: &'a str, arch: Option<&str>) -> Result<Vec<Vec<Relation<'a>>>, String> {
    let mut groups = Vec::new();
    for group_text in field.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let mut group = Vec::new();
        for alt in group_text.split('|').map(str::trim) {
            let name_end = alt.find([' ', '\t', '\n', '(', '[', '<']).unwrap_or(alt.len());
            let name = alt[..name_end].split(':').next().unwrap_or_default();
            if name.is_empty() {
                return Err(format!("empty package name in {group_text:?}"));
            }
            let mut rest = alt[name_end..].trim_start();
            let mut constraint = None;
            if let Some(inner) = rest.strip_prefix('(') {
                let (inside, after) = inner
                    .split_once(')')
                    .ok_or_else(|| format!("unclosed `(` in {alt:?}"))?;
                let inside = inside.trim();
                let op_len = inside.find(|c: char| !"<>=".contains(c)).unwrap_or(inside.len());
                let op = VersionOp::parse(&inside[..op_len])
                    .ok_or_else(|| format!("unknown relation operator {:?} in {alt:?}", &inside[..op_len]))?;
                let version = inside[op_len..].trim();
                if version.is_empty() {
                    return Err(format!("no version after the operator in {alt:?}"));
                }
                constraint = Some((op, version));
                rest = after.trim_start();
            }
            if let (Some(inner), Some(arch)) = (rest.strip_prefix('['), arch) {
                let list = inner.split(']').next().unwrap_or_default();
                if !arch_list_matches(list, arch) {
                    continue;
                }
            }
            group.push(Relation { name, constraint });
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// `[amd64 arm64]` lists where a relation applies; `[!i386]` where it does not.
fn arch_list_matches(list: &str, arch: &str) -> bool {
    let items: Vec<&str> = list.split_whitespace().collect();
    if items.iter().all(|i| i.starts_with('!')) {
        !items.iter().any(|i| &i[1..] == arch)
    } else {
        items.contains(&arch)
    }
}

enum Alternative {
    /// Already in the closure and satisfies the relation.
    Selected(usize),
    /// Not yet in the closure; would satisfy the relation.
    Candidate(usize),
    /// Excluded by name, or every provider is excluded.
    Excluded,
    /// Cannot be satisfied; the text says why.
    Missing(String),
}

struct ClosureState<'a> {
    index: &'a PackageIndex,
    arch: &'a str,
    excluded: HashSet<&'a str>,
    /// Package name → the chosen entry (one version per name).
    selected: HashMap<&'a str, usize>,
    queue: VecDeque<usize>,
}

impl<'a> ClosureState<'a> {
    fn select(&mut self, id: usize) {
        let name = self.index.packages[id].name.as_str();
        if !self.selected.contains_key(name) {
            self.selected.insert(name, id);
            self.queue.push_back(id);
        }
    }

    fn arch_ok(&self, id: usize) -> bool {
        let a = &self.index.packages[id].architecture;
        a.is_empty() || a == "all" || a == self.arch
    }

    fn satisfies(version: &str, constraint: Option<(VersionOp, &str)>) -> bool {
        constraint.is_none_or(|(op, target)| op.holds(version, target))
    }

    /// One alternative: the real package of that name if it fits, else a
    /// provider (already chosen first, then the lexicographically first).
    fn evaluate(&self, rel: &Relation<'_>) -> Alternative {
        let idx = self.index;
        if self.excluded.contains(rel.name) {
            return Alternative::Excluded;
        }
        let selected_real = self.selected.get(rel.name).copied();
        if let Some(id) = selected_real {
            if Self::satisfies(&idx.packages[id].version, rel.constraint) {
                return Alternative::Selected(id);
            }
        }
        // dpkg: a versioned relation is met only by a versioned Provides.
        let all_providers: Vec<(usize, Option<&str>)> = idx
            .providers
            .get(rel.name)
            .into_iter()
            .flatten()
            .filter(|(id, _)| self.arch_ok(*id))
            .map(|(id, v)| (*id, v.as_deref()))
            .collect();
        let fitting: Vec<(usize, Option<&str>)> = all_providers
            .iter()
            .copied()
            .filter(|(_, v)| rel.constraint.is_none() || v.is_some_and(|v| Self::satisfies(v, rel.constraint)))
            .collect();
        let mut live: Vec<usize> = fitting
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !self.excluded.contains(idx.packages[*id].name.as_str()))
            .collect();
        if let Some(id) = live
            .iter()
            .copied()
            .find(|id| self.selected.get(idx.packages[*id].name.as_str()) == Some(id))
        {
            return Alternative::Selected(id);
        }
        let real: Vec<usize> = idx
            .by_name
            .get(rel.name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|id| self.arch_ok(*id))
            .collect();
        if selected_real.is_none() {
            if let Some(id) = real
                .iter()
                .copied()
                .find(|id| Self::satisfies(&idx.packages[*id].version, rel.constraint))
            {
                return Alternative::Candidate(id);
            }
        }
        // A provider whose name is already chosen at another version cannot join.
        live.retain(|id| !self.selected.contains_key(idx.packages[*id].name.as_str()));
        live.sort_by(|a, b| {
            let (pa, pb) = (&idx.packages[*a], &idx.packages[*b]);
            pa.name
                .cmp(&pb.name)
                .then_with(|| compare_versions(&pb.version, &pa.version))
        });
        if let Some(&id) = live.first() {
            return Alternative::Candidate(id);
        }
        if !fitting.is_empty()
            && fitting
                .iter()
                .all(|(id, _)| self.excluded.contains(idx.packages[*id].name.as_str()))
        {
            return Alternative::Excluded;
        }
        let label = &idx.label;
        Alternative::Missing(if let Some(id) = selected_real {
            format!(
                "but {} {} is already in the closure",
                rel.name, idx.packages[id].version
            )
        } else if !real.is_empty() {
            let versions: Vec<&str> = real.iter().map(|id| idx.packages[*id].version.as_str()).collect();
            format!("but the {label} index has only {} {}", rel.name, versions.join(", "))
        } else if !all_providers.is_empty() {
            let list: Vec<String> = all_providers
                .iter()
                .map(|(id, v)| match v {
                    Some(v) => format!("{} (provides {} = {v})", idx.packages[*id].name, rel.name),
                    None => format!("{} (unversioned Provides)", idx.packages[*id].name),
                })
                .collect();
            format!("but no provider fits: {}", list.join(", "))
        } else {
            format!("which the {label} index does not have")
        })
    }

    /// A group `a | b | c`: an alternative already in the closure, else the
    /// first that can be satisfied (or is excluded). `Ok(None)` means excluded.
    fn choose(&self, group: &[Relation<'_>]) -> Result<Option<usize>, String> {
        let evaluated: Vec<Alternative> = group.iter().map(|r| self.evaluate(r)).collect();
        if let Some(id) = evaluated.iter().find_map(|a| {
            if let Alternative::Selected(id) = a {
                Some(*id)
            } else {
                None
            }
        }) {
            return Ok(Some(id));
        }
        for a in &evaluated {
            match a {
                Alternative::Candidate(id) => return Ok(Some(*id)),
                Alternative::Excluded => return Ok(None),
                _ => {}
            }
        }
        let reasons: Vec<String> = evaluated
            .into_iter()
            .zip(group)
            .filter_map(|(a, r)| {
                if let Alternative::Missing(why) = a {
                    Some((r, why))
                } else {
                    None
                }
            })
            .map(|(r, why)| if group.len() == 1 { why } else { format!("{r}: {why}") })
            .collect();
        Err(if group.len() == 1 {
            reasons.join("")
        } else {
            format!("and no alternative can be chosen ({})", reasons.join("; "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_version_comparison_vectors() {
        use Ordering::*;
        // (a, b, expected) — cases from dpkg's own rules and real Debian versions.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.10", "1.9", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1.0", "1.0.0", Less),
            ("1:0.1", "2.0", Greater),
            ("0:1.0", "1.0", Equal),
            ("1.0-1", "1.0-2", Less),
            ("1.0-10", "1.0-9", Greater),
            ("1.0", "1.0-0", Equal),
            ("2.36-9+deb12u4", "2.36-9", Greater),
            ("2.36-9+deb12u10", "2.36-9+deb12u9", Greater),
            ("3.11.2-6+deb12u6", "3.11.2-6", Greater),
            ("1.2.3a", "1.2.3", Greater),
            ("1.2a", "1.2+", Less), // letters sort before non-letters
            ("1.001", "1.1", Equal),
            ("5.1.1alpha+20120614", "5.4.1-0.2", Less),
            ("2:6.2.1+dfsg1-1.1", "2:6.2.1+dfsg1", Greater),
            ("3.1~", "3.4-3", Less),
            ("7.0~beta", "8.2-1.3", Less),
            ("1.0-1~bpo1", "1.0-1", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
        assert_eq!(upstream_version("3.11.2-6+deb12u6"), "3.11.2");
        assert_eq!(upstream_version("1:3.12.0~rc1-2"), "3.12.0");
        assert_eq!(upstream_version("3.13.1"), "3.13.1");
        assert!(VersionOp::Ge.holds("2.36-9", "2.34"));
        assert!(!VersionOp::Lt.holds("1.0", "1.0"));
        assert!(VersionOp::Le.holds("1.0", "1.0"));
        assert!(VersionOp::Gt.holds("1:0", "9.9"));
    }

    const PACKAGES: &str = "\
Package: app
Version: 1.0
Architecture: amd64
Pre-Depends: libc (>= 2.30)
Depends: shell | busybox, mta, libfoo:any (>= 1.5), docs [!amd64], helper [amd64 arm64]
Filename: pool/main/a/app/app_1.0_amd64.deb
Size: 1000
SHA256: 1111111111111111111111111111111111111111111111111111111111111111
Description: test app
 with a multi-line
 .
 description

Package: libc
Version: 2.36-9
Architecture: amd64
Filename: pool/main/g/glibc/libc_2.36-9_amd64.deb
Size: 2000
SHA256: 2222222222222222222222222222222222222222222222222222222222222222

Package: libc
Version: 2.31-1
Architecture: amd64
Filename: pool/main/g/glibc/libc_2.31-1_amd64.deb
Size: 1900
SHA256: 2222222222222222222222222222222222222222222222222222222222222221

Package: zsh
Version: 5.9
Architecture: amd64
Provides: shell
Depends: libc
Filename: pool/main/z/zsh/zsh_5.9_amd64.deb
Size: 300
SHA256: 3333333333333333333333333333333333333333333333333333333333333333

Package: bash
Version: 5.2
Architecture: amd64
Provides: shell
Depends: libc
Filename: pool/main/b/bash/bash_5.2_amd64.deb
Size: 400
SHA256: 4444444444444444444444444444444444444444444444444444444444444444

Package: exim
Version: 4.96
Architecture: amd64
Provides: mta
Depends: perl
Filename: pool/main/e/exim/exim_4.96_amd64.deb
Size: 500
SHA256: 5555555555555555555555555555555555555555555555555555555555555555

Package: perl
Version: 5.36
Architecture: amd64
Filename: pool/main/p/perl/perl_5.36_amd64.deb
Size: 600
SHA256: 6666666666666666666666666666666666666666666666666666666666666666

Package: libfoo2
Version: 2.0-1
Architecture: amd64
Provides: libfoo (= 1.6)
Depends: libc (>= 2.34)
Filename: pool/main/f/foo/libfoo2_2.0-1_amd64.deb
Size: 700
SHA256: 7777777777777777777777777777777777777777777777777777777777777777

Package: helper
Version: 1
Architecture: all
Filename: pool/main/h/helper/helper_1_all.deb
Size: 800
SHA256: 8888888888888888888888888888888888888888888888888888888888888888

Package: docs
Version: 1
Architecture: all
Filename: pool/main/d/docs/docs_1_all.deb
Size: 900
SHA256: 9999999999999999999999999999999999999999999999999999999999999999

Package: tool
Version: 3
Architecture: amd64
Depends: libbar (>= 2)
Filename: pool/main/t/tool/tool_3_amd64.deb
Size: 10
SHA256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa

Package: libbar
Version: 1.5
Architecture: amd64
Filename: pool/main/b/bar/libbar_1.5_amd64.deb
Size: 10
SHA256: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb

Package: orphan
Version: 1
Architecture: amd64
Depends: libnowhere (>= 2)
Filename: pool/main/o/orphan/orphan_1_amd64.deb
Size: 10
SHA256: cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc

Package: i386-only
Version: 1
Architecture: i386
Provides: shell
Filename: pool/main/i/i386-only/i386-only_1_i386.deb
Size: 10
SHA256: dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd
";

    fn index() -> PackageIndex {
        let mut idx = PackageIndex::new("test main");
        idx.add_text("test://Packages", PACKAGES).unwrap();
        idx
    }

    fn roots(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(p, r)| (p.to_string(), r.to_string())).collect()
    }

    fn names(chosen: &[ChosenPackage<'_>]) -> Vec<String> {
        chosen
            .iter()
            .map(|c| format!("{}={}", c.entry.name, c.entry.version))
            .collect()
    }

    #[test]
    fn closure_follows_pre_depends_alternatives_provides_versions_and_excludes() {
        let idx = index();
        let excl = vec!["perl".to_string()];
        let chosen = idx.closure(&roots(&[("app", ROLE_PYTHON)]), &excl, "amd64").unwrap();
        // - libc: Pre-Depends, highest version (2.36-9) chosen over 2.31-1;
        // - `shell | busybox`: shell is virtual; bash is the lexicographically
        //   first provider (the i386 provider is ignored);
        // - mta → exim, whose `perl` dependency is excluded, so perl is absent;
        // - libfoo:any (>= 1.5) → libfoo2 through a versioned Provides;
        // - docs [!amd64] is skipped, helper [amd64 arm64] kept.
        assert_eq!(
            names(&chosen),
            [
                "app=1.0",
                "bash=5.2",
                "exim=4.96",
                "helper=1",
                "libc=2.36-9",
                "libfoo2=2.0-1"
            ],
            "closure"
        );
        assert!(chosen.iter().all(|c| c.roles == [ROLE_PYTHON]));
    }

    #[test]
    fn roots_are_preferred_providers_and_roles_propagate() {
        let idx = index();
        let chosen = idx
            .closure(
                &roots(&[("app", ROLE_PYTHON), ("zsh", ROLE_BASE)]),
                &["perl".to_string()],
                "amd64",
            )
            .unwrap();
        // zsh is a root, so it satisfies `shell` instead of bash.
        assert!(
            !names(&chosen).contains(&"bash=5.2".to_string()),
            "{:?}",
            names(&chosen)
        );
        let roles = |n: &str| chosen.iter().find(|c| c.entry.name == n).unwrap().roles.clone();
        assert_eq!(
            roles("zsh"),
            [ROLE_BASE, ROLE_PYTHON],
            "zsh is a base root and satisfies app's `shell`"
        );
        assert_eq!(
            roles("libc"),
            [ROLE_BASE, ROLE_PYTHON],
            "libc is reached from both roots"
        );
        assert_eq!(
            roles("exim"),
            [ROLE_PYTHON],
            "exim is reached only from the python root"
        );
    }

    #[test]
    fn unsatisfiable_dependencies_name_both_packages() {
        let idx = index();
        let err = idx
            .closure(&roots(&[("tool", ROLE_BASE)]), &[], "amd64")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tool depends on libbar (>= 2), but the test main index has only libbar 1.5"
        );

        let err = idx
            .closure(&roots(&[("orphan", ROLE_BASE)]), &[], "amd64")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "orphan depends on libnowhere (>= 2), which the test main index does not have"
        );

        // Without the exclusion, exim's perl dependency is followed.
        let chosen = idx.closure(&roots(&[("app", ROLE_BASE)]), &[], "amd64").unwrap();
        assert!(names(&chosen).contains(&"perl=5.36".to_string()));

        let err = idx
            .closure(&roots(&[("nope", ROLE_BASE)]), &[], "amd64")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("root package nope (role base) is not in the test main index"),
            "{err}"
        );
        let err = idx
            .closure(&roots(&[("app", ROLE_BASE)]), &["app".to_string()], "amd64")
            .unwrap_err();
        assert!(matches!(err, DebianError::RootExcluded { .. }), "{err}");
    }

    #[test]
    fn versioned_dependency_is_not_met_by_an_unversioned_provides_and_alternatives_explain_each() {
        let mut idx = PackageIndex::new("t main");
        idx.add_text(
            "t",
            "Package: a\nVersion: 1\nArchitecture: all\nDepends: virt (>= 1) | gone\n\
             Filename: a.deb\nSize: 1\nSHA256: 00\n\n\
             Package: p\nVersion: 1\nArchitecture: all\nProvides: virt\nFilename: p.deb\nSize: 1\nSHA256: 00\n",
        )
        .unwrap();
        let err = idx
            .closure(&roots(&[("a", ROLE_BASE)]), &[], "amd64")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "a depends on virt (>= 1) | gone, and no alternative can be chosen \
             (virt (>= 1): but no provider fits: p (unversioned Provides); \
             gone: which the t main index does not have)"
        );
        // Excluding an alternative counts as satisfying the group.
        let chosen = idx
            .closure(&roots(&[("a", ROLE_BASE)]), &["gone".to_string()], "amd64")
            .unwrap();
        assert_eq!(names(&chosen), ["a=1"]);
    }

    #[test]
    fn locked_entry_carries_url_integrity_size_and_deb_unpack() {
        let idx = index();
        let chosen = idx.closure(&roots(&[("helper", ROLE_BASE)]), &[], "amd64").unwrap();
        let locked = chosen[0]
            .to_locked("http://mirror.example.invalid/debian/", idx.label())
            .unwrap();
        assert_eq!(
            locked.artifact.url,
            "http://mirror.example.invalid/debian/pool/main/h/helper/helper_1_all.deb"
        );
        assert_eq!(
            locked.artifact.integrity.to_string(),
            format!("sha256:{}", "8".repeat(64))
        );
        assert_eq!(locked.artifact.size, Some(800));
        assert_eq!(locked.artifact.unpack, Unpack::Deb);
        assert_eq!(locked.artifact.strip, 0);
        assert_eq!(locked.roles, [ROLE_BASE]);

        let bad = IndexEntry {
            sha256: "xyz".into(),
            ..chosen[0].entry.clone()
        };
        let err = ChosenPackage {
            entry: &bad,
            roles: vec![],
        }
        .to_locked("http://m.example.invalid", "t")
        .unwrap_err();
        assert!(
            err.to_string().contains("helper 1") && err.to_string().contains("SHA256"),
            "{err}"
        );
    }

    #[test]
    fn release_parsing_picks_xz_index_and_checks_suite() {
        let text =
            "Origin: Debian\nSuite: stable\nCodename: bookworm\nAcquire-By-Hash: yes\nComponents: main contrib\n\
MD5Sum:\n 00000000000000000000000000000000 10 main/binary-amd64/Packages\nSHA256:\n \
1111111111111111111111111111111111111111111111111111111111111111 100 main/binary-amd64/Packages\n \
2222222222222222222222222222222222222222222222222222222222222222 20 main/binary-amd64/Packages.gz\n \
3333333333333333333333333333333333333333333333333333333333333333 10 main/binary-amd64/Packages.xz\n";
        let r = Release::parse("u", text).unwrap();
        assert!(r.acquire_by_hash);
        r.check_suite("u", "bookworm").unwrap();
        r.check_suite("u", "stable").unwrap();
        let err = r.check_suite("u", "trixie").unwrap_err().to_string();
        assert!(
            err.contains("expected suite trixie") && err.contains("Codename: bookworm"),
            "{err}"
        );
        let f = r.index_file("u", "main", "amd64").unwrap();
        assert_eq!(f.path, "main/binary-amd64/Packages.xz");
        assert_eq!(f.compression, Compression::Xz);
        assert_eq!(f.size, 10);
        assert_eq!(f.uncompressed.unwrap().hex(), "1".repeat(64));
        let err = r.index_file("u", "contrib", "arm64").unwrap_err().to_string();
        assert!(
            err.contains("contrib/binary-arm64/Packages") && err.contains("components: main contrib"),
            "{err}"
        );
    }

    #[test]
    fn clearsigned_body_undoes_dash_escaping_and_requires_the_armour() {
        let doc = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSuite: x\n- -not a header\n\
-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n";
        assert_eq!(clearsigned_body(doc).unwrap(), "Suite: x\n-not a header\n");
        assert_eq!(clearsigned_body("Suite: x\n"), None);
    }

    #[test]
    fn stanza_parser_reports_malformed_lines_with_their_number() {
        let mut idx = PackageIndex::new("t");
        let err = idx
            .add_text("file:///P", "Package: a\nVersion: 1\n\nno colon here\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "file:///P: line 4: expected `Field: value`, found \"no colon here\""
        );
        let err = idx.add_text("file:///P", "Package: a\n").unwrap_err();
        assert!(err.to_string().contains("without `Package:` or `Version:`"), "{err}");
    }

    /// The survey reads each `python3.X-minimal` (highest version per minor,
    /// sorted numerically so 3.9 comes before 3.11) and ignores look-alikes.
    #[test]
    fn pythons_in_index_picks_minimal_packages_per_minor() {
        let text = "Package: python3.11-minimal\nVersion: 3.11.2-6\n\n\
                    Package: python3.11-minimal\nVersion: 3.11.2-6+deb12u1\n\n\
                    Package: libpython3.12-stdlib\nVersion: 3.12.0-1\n\n\
                    Package: python3-minimal\nVersion: 3.11.2-1\n\n\
                    Package: python3.9-minimal\nArchitecture: amd64\nVersion: 3.9.2-1\n\n\
                    Package: python3.11-minimal-dbg\nVersion: 9\n";
        assert_eq!(
            pythons_in_index(text),
            [
                ("3.9".to_string(), "3.9.2-1".to_string()),
                ("3.11".to_string(), "3.11.2-6+deb12u1".to_string())
            ]
        );
        assert_eq!(python_version_of("python3.13-minimal"), Some("3.13"));
        assert_eq!(python_version_of("libpython3.13-stdlib"), Some("3.13"));
        assert_eq!(python_version_of("python3-minimal"), None);
    }

    #[test]
    fn python_and_base_roots() {
        assert_eq!(python_roots("3.11"), ["python3.11-minimal", "libpython3.11-stdlib"]);
        let base = default_base_roots();
        for must in ["libc6", "dash", "libstdc++6"] {
            assert!(base.iter().any(|b| b == must), "{must} missing from {base:?}");
        }
    }
}
