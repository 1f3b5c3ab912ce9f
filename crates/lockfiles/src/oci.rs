//! A small client for the OCI distribution API (registry v2), and the
//! resolvers that pin Ollama models and container base images with it.
//!
//! It reads manifests and blobs (verified against their digests), checks,
//! uploads and mounts blobs, and puts manifests, with anonymous, Basic and
//! Bearer-token auth. It is for talking to one registry over HTTP; building
//! images and laying them out on disk belongs to the `images` crate.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageManifest};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::http::{Client, SizeLimit};
use crate::integrity::{Algorithm, Hasher, Integrity};
use crate::lock::{LockedModel, OciBlob};
use crate::redact::{redact_text, redact_url};

// The manifest media types as the HTTP `Accept` and `Content-Type` headers
// carry them. They are oci-spec's `MediaType::ImageManifest` and
// `MediaType::ImageIndex` and those types' Docker v2 equivalents
// (`ToDockerV2S2`); a test holds them to that.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What an Ollama model's manifest may be.
pub const MODEL_MANIFEST_TYPES: [&str; 2] = [DOCKER_MANIFEST_V2, OCI_MANIFEST];
/// What an image tag may point at; an index or list when multi-arch.
pub const IMAGE_MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST_V2];

/// Manifests are small; a registry sending more is broken or hostile (the
/// OCI distribution spec suggests 4 MiB as the limit registries accept).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

pub const USERNAME_ENV: &str = "FARM_REGISTRY_USERNAME";
pub const PASSWORD_ENV: &str = "FARM_REGISTRY_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "registry URL {url:?}: {message}; expected e.g. https://registry.example.invalid or http://127.0.0.1:5000"
    )]
    BadBaseUrl { url: String, message: String },
    #[error("reference `{reference}`: {message}")]
    BadReference { reference: String, message: String },
    #[error("{method} {url}: {message} (after {attempts} attempts)")]
    Transport {
        method: String,
        url: String,
        message: String,
        attempts: u32,
    },
    #[error("{method} {url}: {status}{message}{hint}")]
    Status {
        method: String,
        url: String,
        status: u16,
        message: String,
        hint: String,
    },
    #[error("{method} {url}: 401 Unauthorized{message}: {reason}; hint: {hint}")]
    Unauthorized {
        method: String,
        url: String,
        message: String,
        reason: String,
        hint: String,
    },
    #[error("token server {realm}: {message}")]
    Token { realm: String, message: String },
    #[error("{what}: digest mismatch: expected {expected}, the bytes hash to {actual}")]
    DigestMismatch {
        what: String,
        expected: Integrity,
        actual: Integrity,
    },
    #[error("{what}: {message}")]
    BadManifest { what: String, message: String },
    #[error(
        "{what}: the body is more than {} bytes, {limit}: farm stopped reading at {observed} bytes and kept nothing{}",
        .limit.bytes(),
        .limit.hint()
    )]
    TooLarge {
        what: String,
        limit: SizeLimit,
        /// Bytes received when reading stopped.
        observed: u64,
    },
    #[error(
        "{what}: the registry declares {declared} bytes (Content-Length), more than {} bytes, {limit}; not downloaded{}",
        .limit.bytes(),
        .limit.hint()
    )]
    DeclaredTooLarge {
        what: String,
        declared: u64,
        limit: SizeLimit,
    },
    #[error("{path}: {message}")]
    AuthFile { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A username and password (or token) for one registry. `Debug` never
/// shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Where they came from, for error messages: `explicit`, an env var, a file.
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
            source: "explicit".into(),
        }
    }

    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// Credentials for `host` (`name[:port]`) from, in order: the
    /// `FARM_REGISTRY_USERNAME`/`FARM_REGISTRY_PASSWORD` environment, then
    /// the auth files `podman login` and `docker login` write.
    pub fn discover(host: &str) -> Result<Option<Credentials>, OciError> {
        Self::discover_with(host, &|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn discover_with(host: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Credentials>, OciError> {
        if let (Some(username), Some(password)) = (env(USERNAME_ENV), env(PASSWORD_ENV)) {
            return Ok(Some(Credentials {
                username,
                password,
                source: format!("${USERNAME_ENV}/${PASSWORD_ENV}"),
            }));
        }
        let home = env("HOME").map(PathBuf::from);
        let mut files: Vec<PathBuf> = Vec::new();
        files.extend(env("REGISTRY_AUTH_FILE").map(PathBuf::from));
        files.extend(env("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("containers/auth.json")));
        files.extend(home.as_ref().map(|h| h.join(".config/containers/auth.json")));
        files.extend(env("DOCKER_CONFIG").map(|d| Path::new(&d).join("config.json")));
        files.extend(home.as_ref().map(|h| h.join(".docker/config.json")));
        for file in files {
            if let Some(found) = credentials_from_auth_file(&file, host)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `auths.<host>` of a containers auth.json or docker config.json; keys may
/// carry a scheme or a path (`https://host/v1/`), which are ignored.
fn credentials_from_auth_file(path: &Path, host: &str) -> Result<Option<Credentials>, OciError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(OciError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let bad = |message: String| OciError::AuthFile {
        path: path.into(),
        message,
    };
    let file: AuthFile = serde_json::from_str(&text).map_err(|e| bad(format!("not a valid auth file: {e}")))?;
    let key_host = |k: &str| {
        let k = k.split_once("://").map_or(k, |(_, rest)| rest);
        k.split('/').next().unwrap_or(k).to_string()
    };
    // An entry for exactly the host wins over one for a repository under it.
    let mut entries: Vec<(&String, &AuthEntry)> = file.auths.iter().filter(|(k, _)| key_host(k) == host).collect();
    entries.sort_by_key(|(k, _)| k.contains('/') && !k.contains("://"));
    let Some((key, entry)) = entries.first() else {
        return Ok(None);
    };
    let source = format!("{} (auths.\"{key}\")", path.display());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("auths.\"{key}\".auth is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad(format!("auths.\"{key}\".auth is not UTF-8")))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad(format!("auths.\"{key}\".auth must encode `user:password`")))?;
        return Ok(Some(Credentials {
            username: username.into(),
            password: password.into(),
            source,
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
            source,
        })),
        _ => Ok(None),
    }
}

/// A `WWW-Authenticate` challenge farm can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first Basic or Bearer challenge (`Bearer realm="…",service="…"`).
fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let mut values: HashMap<String, String> = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        values.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: values.remove("realm")?,
            service: values.remove("service"),
            scope: values.remove("scope"),
        }),
        _ => None,
    }
}

/// A manifest exactly as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Integrity,
}

/// A request body that can be produced again for a retry.
enum Body {
    Empty,
    Bytes(Vec<u8>),
    File { path: PathBuf, offset: u64, len: u64 },
}

struct Request<'a> {
    method: Method,
    url: url::Url,
    scope: &'a str,
    headers: Vec<(&'static str, String)>,
    body: Body,
    /// Whether a transport failure may be retried without side effects.
    idempotent: bool,
}

#[derive(Default)]
struct AuthState {
    /// Bearer tokens by the scope they were issued for.
    tokens: HashMap<String, String>,
    /// The registry asked for Basic auth once: send it up front from then on.
    basic: bool,
}

/// A client for one registry (`http(s)://host[:port]`).
pub struct RegistryClient {
    http: reqwest::Client,
    base: url::Url,
    host: String,
    credentials: Option<Credentials>,
    attempts: u32,
    first_backoff: Duration,
    /// Blobs of unknown size stop here (the HTTP client's `max_download_size`).
    max_download_size: u64,
    auth: Mutex<AuthState>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &redact_url(self.base.as_str()))
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for `base_url` using `credentials`, or when `None` the ones
    /// [`Credentials::discover`] finds for its host (if any).
    pub fn new(client: &Client, base_url: &str, credentials: Option<Credentials>) -> Result<Self, OciError> {
        let mut c = Self::anonymous(client, base_url)?;
        c.credentials = match credentials {
            Some(c) => Some(c),
            None => Credentials::discover(&c.host)?,
        };
        Ok(c)
    }

    /// A client that never sends credentials.
    pub fn anonymous(client: &Client, base_url: &str) -> Result<Self, OciError> {
        let bad = |message: String| OciError::BadBaseUrl {
            url: redact_url(base_url),
            message,
        };
        let mut base = url::Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad(format!("scheme `{}` is not http or https", base.scheme())));
        }
        let host = base.host_str().ok_or_else(|| bad("no host".into()))?.to_string();
        let host = match base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(RegistryClient {
            http: client.raw().clone(),
            base,
            host,
            credentials: None,
            attempts: client.options().attempts.max(1),
            first_backoff: client.options().first_backoff,
            max_download_size: client.options().max_download_size,
            auth: Mutex::new(AuthState::default()),
        })
    }

    /// `host[:port]`, the key for credentials.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    fn url(&self, path: &str) -> url::Url {
        self.base.join(path).expect("registry paths are valid URL paths")
    }

    /// `GET /v2/`: whether the registry answers and accepts these credentials.
    pub async fn ping(&self) -> Result<(), OciError> {
        let req = self.request(Method::GET, self.url("v2/"), "", true);
        let resp = self.send(req).await?;
        expect_status(resp, &[StatusCode::OK], "GET", &self.url("v2/"), "")
            .await
            .map(drop)
    }

    /// Fetches a manifest by tag or digest, accepting `accept` media types,
    /// and checks its bytes against the requested digest or the registry's
    /// `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest, OciError> {
        check_repository(repo)?;
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let scope = pull_scope(repo);
        let mut req = self.request(Method::GET, url.clone(), &scope, true);
        if !accept.is_empty() {
            req.headers.push(("accept", accept.join(", ")));
        }
        let resp = self.send(req).await?;
        let resp = expect_status(
            resp,
            &[StatusCode::OK],
            "GET",
            &url,
            " (hint: is the tag right, and is it in this registry?)",
        )
        .await?;
        let what = format!("manifest {repo}:{reference}");
        let header_type = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_string());
        let header_digest = header_str(resp.headers(), "docker-content-digest").map(str::to_string);
        let bytes = read_capped(resp, MAX_MANIFEST_BYTES, "GET", &url).await?;

        let media_type = match header_type.filter(|t| t.starts_with("application/vnd.")) {
            Some(t) => t,
            None => {
                #[derive(Deserialize)]
                struct MediaTypeOnly {
                    #[serde(rename = "mediaType")]
                    media_type: Option<String>,
                }
                serde_json::from_slice::<MediaTypeOnly>(&bytes)
                    .ok()
                    .and_then(|m| m.media_type)
                    .ok_or_else(|| OciError::BadManifest {
                        what: what.clone(),
                        message: "no media type in the response or the manifest".into(),
                    })?
            }
        };
        if !accept.is_empty() && !accept.contains(&media_type.as_str()) {
            return Err(OciError::BadManifest {
                what,
                message: format!(
                    "the registry sent media type {media_type}, expected one of {}",
                    accept.join(", ")
                ),
            });
        }
        let expected = if is_digest(reference) {
            Some(parse_digest(reference, &what)?)
        } else {
            header_digest
                .map(|d| parse_digest(&d, &format!("{what}: Docker-Content-Digest")))
                .transpose()?
        };
        let digest = match expected {
            Some(expected) => {
                let mut h = expected.hasher();
                h.update(&bytes);
                let actual = h.finish();
                if actual != expected {
                    return Err(OciError::DigestMismatch { what, expected, actual });
                }
                actual
            }
            None => crate::integrity::sha256_of(&bytes),
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The digest a tag points at, from `HEAD` (`Docker-Content-Digest`)
    /// when the registry sends it, else from the manifest's bytes. `HEAD`
    /// does not count as a pull on registries that rate-limit pulls.
    pub async fn manifest_digest(&self, repo: &str, reference: &str, accept: &[&str]) -> Result<Integrity, OciError> {
        check_repository(repo)?;
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let scope = pull_scope(repo);
        let mut req = self.request(Method::HEAD, url.clone(), &scope, true);
        req.headers.push(("accept", accept.join(", ")));
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::OK {
            if let Some(d) = header_str(resp.headers(), "docker-content-digest") {
                return parse_digest(d, &format!("manifest {repo}:{reference}: Docker-Content-Digest"));
            }
        } else if resp.status() == StatusCode::NOT_FOUND {
            return Err(status_error(
                "HEAD",
                &url,
                resp,
                " (hint: is the tag right, and is it in this registry?)",
            )
            .await);
        }
        Ok(self.get_manifest(repo, reference, accept).await?.digest)
    }

    /// `GET /v2/<repo>/referrers/<digest>`: the index of manifests whose
    /// `subject` is `digest`, or `None` when the registry has no referrers
    /// API (a 404, as OCI distribution 1.1 says to detect it).
    pub async fn referrers(&self, repo: &str, digest: &Integrity) -> Result<Option<Vec<u8>>, OciError> {
        check_repository(repo)?;
        let url = self.url(&format!("v2/{repo}/referrers/{digest}"));
        let scope = pull_scope(repo);
        let mut req = self.request(Method::GET, url.clone(), &scope, true);
        req.headers.push(("accept", OCI_INDEX.into()));
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = expect_status(resp, &[StatusCode::OK], "GET", &url, "").await?;
        Ok(Some(read_capped(resp, MAX_MANIFEST_BYTES, "GET", &url).await?))
    }

    /// Whether the blob exists, and its size.
    pub async fn blob_exists(&self, repo: &str, digest: &Integrity) -> Result<Option<u64>, OciError> {
        check_repository(repo)?;
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let scope = pull_scope(repo);
        let resp = self.send(self.request(Method::HEAD, url.clone(), &scope, true)).await?;
        match resp.status() {
            // reqwest's content_length() is the body's size hint, 0 for HEAD; the header is the blob's.
            StatusCode::OK => Ok(Some(
                header_str(resp.headers(), CONTENT_LENGTH.as_str())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error("HEAD", &url, resp, "").await),
        }
    }

    /// [`RegistryClient::get_blob_expected`] for a blob whose size nothing
    /// declares but the registry: it may be as long as its Content-Length,
    /// or the HTTP client's `max_download_size` without one.
    pub async fn get_blob(&self, repo: &str, digest: &Integrity, dest: &Path) -> Result<u64, OciError> {
        self.get_blob_expected(repo, digest, None, dest).await
    }

    /// Streams a blob into the new file `dest`, verifying its digest. With
    /// `size` (the descriptor's, from a manifest or the lock) reading stops
    /// as soon as the body passes it, so an endless body cannot fill the
    /// disk; a Content-Length above it is refused before reading. On any
    /// failure `dest` does not exist afterwards. Returns the size.
    pub async fn get_blob_expected(
        &self,
        repo: &str,
        digest: &Integrity,
        size: Option<u64>,
        dest: &Path,
    ) -> Result<u64, OciError> {
        check_repository(repo)?;
        let result = self.get_blob_attempts(repo, digest, size, dest).await;
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    async fn get_blob_attempts(
        &self,
        repo: &str,
        digest: &Integrity,
        size: Option<u64>,
        dest: &Path,
    ) -> Result<u64, OciError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let scope = pull_scope(repo);
        let mut attempt = 1;
        loop {
            let resp = self.send(self.request(Method::GET, url.clone(), &scope, true)).await?;
            let resp = expect_status(resp, &[StatusCode::OK], "GET", &url, "").await?;
            let expected = BlobSize {
                size,
                cap: self.max_download_size,
            };
            match stream_to_file(resp, digest, expected, dest, &url).await {
                Err(StreamError::Transport(_)) if attempt < self.attempts => {
                    tokio::time::sleep(self.first_backoff * attempt).await;
                    attempt += 1;
                }
                Err(StreamError::Transport(message)) => {
                    return Err(OciError::Transport {
                        method: "GET".into(),
                        url: redact_url(url.as_str()),
                        message,
                        attempts: attempt,
                    })
                }
                Err(StreamError::Fatal(e)) => return Err(e),
                Ok(size) => return Ok(size),
            }
        }
    }

    /// Uploads the file `source` as blob `digest` unless the registry has it.
    /// `chunk_size: None` sends it in one `PUT`; `Some(n)` in `PATCH`es of
    /// `n` bytes (for registries or proxies that cap request sizes). Returns
    /// whether bytes were uploaded.
    pub async fn push_blob(
        &self,
        repo: &str,
        digest: &Integrity,
        source: &Path,
        chunk_size: Option<u64>,
    ) -> Result<bool, OciError> {
        check_repository(repo)?;
        if self.blob_exists(repo, digest).await?.is_some() {
            return Ok(false);
        }
        let len = std::fs::metadata(source)
            .map_err(|e| OciError::Io {
                path: source.into(),
                source: e,
            })?
            .len();
        let scope = push_scope(repo);
        let mut location = self.start_upload(repo, &scope).await?;
        let mut body = Body::File {
            path: source.into(),
            offset: 0,
            len,
        };
        if let Some(chunk) = chunk_size.filter(|c| *c > 0 && *c < len) {
            let mut offset = 0;
            while offset < len {
                let n = chunk.min(len - offset);
                let mut req = self.request(Method::PATCH, location.clone(), &scope, false);
                req.headers.push(("content-type", "application/octet-stream".into()));
                req.headers
                    .push(("content-range", format!("{offset}-{}", offset + n - 1)));
                req.body = Body::File {
                    path: source.into(),
                    offset,
                    len: n,
                };
                let resp = self.send(req).await?;
                let what = location.clone();
                let resp = expect_status(resp, &[StatusCode::ACCEPTED], "PATCH", &what, "").await?;
                location = self.location(&resp, "PATCH", &what)?;
                offset += n;
            }
            body = Body::Empty;
        }
        self.finish_upload(location, &scope, digest, body).await?;
        Ok(true)
    }

    /// Uploads small in-memory bytes (a config, a manifest's blobs) and
    /// returns their sha256 digest.
    pub async fn push_blob_bytes(&self, repo: &str, bytes: &[u8]) -> Result<Integrity, OciError> {
        check_repository(repo)?;
        let digest = crate::integrity::sha256_of(bytes);
        if self.blob_exists(repo, &digest).await?.is_some() {
            return Ok(digest);
        }
        let scope = push_scope(repo);
        let location = self.start_upload(repo, &scope).await?;
        self.finish_upload(location, &scope, &digest, Body::Bytes(bytes.to_vec()))
            .await?;
        Ok(digest)
    }

    /// Asks the registry to link blob `digest` from repository `from` into
    /// `repo` without uploading. `false` when it declined (the caller then
    /// uploads); the upload session it opened instead is cancelled.
    pub async fn mount_blob(&self, repo: &str, digest: &Integrity, from: &str) -> Result<bool, OciError> {
        check_repository(repo)?;
        check_repository(from)?;
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let scope = format!("{} {}", push_scope(repo), pull_scope(from));
        let resp = self
            .send(self.request(Method::POST, url.clone(), &scope, false))
            .await?;
        let resp = expect_status(resp, &[StatusCode::CREATED, StatusCode::ACCEPTED], "POST", &url, "").await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(true);
        }
        if let Ok(session) = self.location(&resp, "POST", &url) {
            // Best effort: an abandoned session only costs the registry a little space until it expires.
            let _ = self.send(self.request(Method::DELETE, session, &scope, true)).await;
        }
        Ok(false)
    }

    /// Puts a manifest under `reference` (a tag or its digest); returns its
    /// digest, checked against the registry's `Docker-Content-Digest`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Integrity, OciError> {
        check_repository(repo)?;
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let scope = push_scope(repo);
        let mut req = self.request(Method::PUT, url.clone(), &scope, true);
        req.headers.push(("content-type", media_type.into()));
        req.body = Body::Bytes(bytes.to_vec());
        let resp = self.send(req).await?;
        let resp = expect_status(resp, &[StatusCode::CREATED], "PUT", &url, "").await?;
        let digest = crate::integrity::sha256_of(bytes);
        if let Some(header) = header_str(resp.headers(), "docker-content-digest") {
            let stored = parse_digest(header, &format!("manifest {repo}:{reference}: Docker-Content-Digest"))?;
            if stored != digest {
                return Err(OciError::DigestMismatch {
                    what: format!("manifest {repo}:{reference} as stored by the registry"),
                    expected: digest,
                    actual: stored,
                });
            }
        }
        Ok(digest)
    }

    async fn start_upload(&self, repo: &str, scope: &str) -> Result<url::Url, OciError> {
        let url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        let mut req = self.request(Method::POST, url.clone(), scope, false);
        req.headers.push(("content-length", "0".into()));
        let resp = self.send(req).await?;
        let resp = expect_status(resp, &[StatusCode::ACCEPTED], "POST", &url, "").await?;
        self.location(&resp, "POST", &url)
    }

    async fn finish_upload(
        &self,
        location: url::Url,
        scope: &str,
        digest: &Integrity,
        body: Body,
    ) -> Result<(), OciError> {
        let mut url = location;
        url.query_pairs_mut().append_pair("digest", &digest.to_string());
        let mut req = self.request(Method::PUT, url.clone(), scope, false);
        req.headers.push(("content-type", "application/octet-stream".into()));
        req.body = body;
        let resp = self.send(req).await?;
        expect_status(resp, &[StatusCode::CREATED], "PUT", &url, "")
            .await
            .map(drop)
    }

    fn location(&self, resp: &reqwest::Response, method: &str, url: &url::Url) -> Result<url::Url, OciError> {
        let raw = header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| OciError::Status {
            method: method.into(),
            url: redact_url(url.as_str()),
            status: resp.status().as_u16(),
            message: ": the registry sent no upload Location".into(),
            hint: String::new(),
        })?;
        self.base.join(raw).map_err(|e| OciError::Status {
            method: method.into(),
            url: redact_url(url.as_str()),
            status: resp.status().as_u16(),
            message: format!(": upload Location {:?} is not a URL: {e}", redact_url(raw)),
            hint: String::new(),
        })
    }

    fn request<'a>(&self, method: Method, url: url::Url, scope: &'a str, idempotent: bool) -> Request<'a> {
        Request {
            method,
            url,
            scope,
            headers: Vec::new(),
            body: Body::Empty,
            idempotent,
        }
    }

    /// Sends `req`, answering at most one auth challenge and retrying
    /// transport errors, 429 and 5xx (idempotent requests only).
    async fn send(&self, req: Request<'_>) -> Result<reqwest::Response, OciError> {
        let method = req.method.as_str().to_string();
        let mut attempt = 1;
        let mut answered_challenge = false;
        let mut backoff = self.first_backoff;
        loop {
            let mut builder = self.http.request(req.method.clone(), req.url.clone());
            for (k, v) in &req.headers {
                builder = builder.header(*k, v);
            }
            if let Some(auth) = self.auth_header(req.scope) {
                builder = builder.header(AUTHORIZATION, auth);
            }
            builder = match &req.body {
                Body::Empty => builder,
                Body::Bytes(b) => builder.header(CONTENT_LENGTH, b.len()).body(b.clone()),
                Body::File { path, offset, len } => builder
                    .header(CONTENT_LENGTH, *len)
                    .body(file_body(path, *offset, *len).await?),
            };
            let retryable = |attempt: u32| req.idempotent && attempt < self.attempts;
            let resp = match builder.send().await {
                Ok(r) => r,
                Err(_) if retryable(attempt) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(OciError::Transport {
                        method,
                        url: redact_url(req.url.as_str()),
                        message: error_chain(&e),
                        attempts: attempt,
                    })
                }
            };
            let status = resp.status();
            if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) && retryable(attempt) {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                attempt += 1;
                continue;
            }
            if status != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_challenge);
            let registry_message = registry_error_message(resp).await;
            let unauthorized = |reason: String, hint: String| OciError::Unauthorized {
                method: method.clone(),
                url: redact_url(req.url.as_str()),
                message: registry_message.clone(),
                reason,
                hint,
            };
            if answered_challenge {
                return Err(self.rejected(unauthorized));
            }
            answered_challenge = true;
            match challenge {
                Some(Challenge::Basic) => {
                    if self.credentials.is_none() {
                        return Err(unauthorized(
                            format!(
                                "the registry requires a login and no credentials were found for {}",
                                self.host
                            ),
                            self.login_hint(),
                        ));
                    }
                    self.auth.lock().unwrap().basic = true;
                }
                Some(Challenge::Bearer { realm, service, scope }) => {
                    let scope_param = scope.filter(|s| !s.is_empty()).unwrap_or_else(|| req.scope.to_string());
                    let token = self.fetch_token(&realm, service.as_deref(), &scope_param).await?;
                    self.auth.lock().unwrap().tokens.insert(req.scope.to_string(), token);
                }
                None => {
                    return Err(unauthorized(
                        "the registry sent no Basic or Bearer challenge farm can answer".into(),
                        "check that the URL is the registry's API root".into(),
                    ))
                }
            }
        }
    }

    fn rejected(&self, unauthorized: impl Fn(String, String) -> OciError) -> OciError {
        match &self.credentials {
            Some(c) => unauthorized(
                format!(
                    "the registry rejected the credentials for {} (user `{}`, from {})",
                    self.host, c.username, c.source
                ),
                "check the username and password, and that this user may access the repository".into(),
            ),
            None => unauthorized(
                format!(
                    "the registry requires a login and no credentials were found for {}",
                    self.host
                ),
                self.login_hint(),
            ),
        }
    }

    fn login_hint(&self) -> String {
        format!(
            "set {USERNAME_ENV} and {PASSWORD_ENV}, or log in with `podman login {h}` or `docker login {h}`",
            h = self.host
        )
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        let state = self.auth.lock().unwrap();
        if let Some(token) = state.tokens.get(scope) {
            return Some(format!("Bearer {token}"));
        }
        if state.basic {
            return self.credentials.as_ref().map(Credentials::basic_header);
        }
        None
    }

    /// The token endpoint of Docker's token auth: `GET realm?service=…&scope=…`
    /// with Basic credentials when there are any, answering `token` or `access_token`.
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String, OciError> {
        let bad = |message: String| OciError::Token {
            realm: redact_url(realm),
            message,
        };
        let mut url = url::Url::parse(realm).map_err(|e| bad(format!("the registry's realm is not a URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scope.split_whitespace() {
                q.append_pair("scope", s);
            }
        }
        let mut builder = self.http.get(url.clone());
        if let Some(c) = &self.credentials {
            builder = builder.header(AUTHORIZATION, c.basic_header());
        }
        let resp = builder.send().await.map_err(|e| OciError::Transport {
            method: "GET".into(),
            url: redact_url(url.as_str()),
            message: error_chain(&e),
            attempts: 1,
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            let status = resp.status().as_u16();
            let message = registry_error_message(resp).await;
            return Err(self.rejected(|reason, hint| OciError::Unauthorized {
                method: "GET".into(),
                url: redact_url(url.as_str()),
                message: format!(" (token server answered {status}){message}"),
                reason,
                hint,
            }));
        }
        let resp = expect_status(resp, &[StatusCode::OK], "GET", &url, "").await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let bytes = read_capped(resp, 1 << 20, "GET", &url).await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("answer is not token JSON: {e}")))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("answer has neither `token` nor `access_token`".into()))
    }
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Repository names per the distribution spec: lowercase path components
/// of `[a-z0-9]` separated by `.`, `_`, `__` or `-`.
fn check_repository(repo: &str) -> Result<(), OciError> {
    let bad = |message: &str| OciError::BadReference {
        reference: repo.into(),
        message: message.into(),
    };
    if repo.is_empty() || repo.len() > 255 {
        return Err(bad("a repository name must be 1 to 255 characters"));
    }
    for component in repo.split('/') {
        let ok = !component.is_empty()
            && component
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && component.starts_with(|c: char| c.is_ascii_alphanumeric())
            && component.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(bad(
                "each path component must be lowercase letters and digits, separated by `.`, `_` or `-` (hint: registries only accept lowercase names)",
            ));
        }
    }
    Ok(())
}

fn check_tag(reference: &str, tag: &str) -> Result<(), OciError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(OciError::BadReference {
            reference: reference.into(),
            message: format!("tag `{tag}` must be 1 to 128 letters, digits, `_`, `.` or `-`"),
        })
    }
}

fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

fn parse_digest(s: &str, what: &str) -> Result<Integrity, OciError> {
    let s = s.trim();
    if !s.contains(':') {
        return Err(OciError::BadManifest {
            what: what.into(),
            message: format!("{s:?} is not an `algo:hex` digest"),
        });
    }
    Integrity::parse(s).map_err(|e| OciError::BadManifest {
        what: what.into(),
        message: e.to_string(),
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    // reqwest names the URL: a redirect's may be pre-signed, a realm's may carry a token.
    redact_text(&message).into_owned()
}

/// `: CODE: message` from the registry's `{"errors":[…]}` body, if any.
async fn registry_error_message(resp: reqwest::Response) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<RegistryErrorEntry>,
    }
    #[derive(Deserialize)]
    struct RegistryErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(bytes) = resp.bytes().await else {
        return String::new();
    };
    match serde_json::from_slice::<Errors>(&bytes) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e.errors.iter().map(|e| format!("{}: {}", e.code, e.message)).collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    }
}

async fn status_error(method: &str, url: &url::Url, resp: reqwest::Response, hint: &str) -> OciError {
    let status = resp.status().as_u16();
    let message = registry_error_message(resp).await;
    OciError::Status {
        method: method.into(),
        url: redact_url(url.as_str()),
        status,
        message,
        hint: if status == 404 { hint.to_string() } else { String::new() },
    }
}

async fn expect_status(
    resp: reqwest::Response,
    ok: &[StatusCode],
    method: &str,
    url: &url::Url,
    not_found_hint: &str,
) -> Result<reqwest::Response, OciError> {
    if ok.contains(&resp.status()) {
        Ok(resp)
    } else {
        Err(status_error(method, url, resp, not_found_hint).await)
    }
}

async fn read_capped(resp: reqwest::Response, cap: u64, method: &str, url: &url::Url) -> Result<Vec<u8>, OciError> {
    let too_big = || OciError::Status {
        method: method.into(),
        url: redact_url(url.as_str()),
        status: 200,
        message: format!(": the body is larger than {cap} bytes, more than a manifest or token may be"),
        hint: String::new(),
    };
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OciError::Transport {
            method: method.into(),
            url: redact_url(url.as_str()),
            message: error_chain(&e),
            attempts: 1,
        })?;
        out.extend_from_slice(&chunk);
        if out.len() as u64 > cap {
            return Err(too_big());
        }
    }
    Ok(out)
}

enum StreamError {
    Transport(String),
    Fatal(OciError),
}

/// What a blob's body may be: its descriptor's size when known, else at
/// most the declared Content-Length or `cap`.
#[derive(Clone, Copy)]
struct BlobSize {
    size: Option<u64>,
    cap: u64,
}

async fn stream_to_file(
    resp: reqwest::Response,
    digest: &Integrity,
    expected: BlobSize,
    dest: &Path,
    url: &url::Url,
) -> Result<u64, StreamError> {
    let io = |source| {
        StreamError::Fatal(OciError::Io {
            path: dest.into(),
            source,
        })
    };
    let what = || format!("blob {digest} (GET {})", redact_url(url.as_str()));
    let declared = resp.content_length();
    let limit = match (expected.size, declared) {
        (Some(n), _) => SizeLimit::Expected(n),
        (None, Some(n)) if n <= expected.cap => SizeLimit::Declared(n),
        (None, _) => SizeLimit::Cap(expected.cap),
    };
    if let Some(declared) = declared.filter(|n| *n > limit.bytes()) {
        return Err(StreamError::Fatal(OciError::DeclaredTooLarge {
            what: what(),
            declared,
            limit,
        }));
    }
    let mut file = std::fs::File::create(dest).map_err(io)?;
    let mut hasher = Hasher::new(digest.algorithm);
    let mut written = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| StreamError::Transport(error_chain(&e)))?;
        // Counted before it is written: an endless body stops at the first chunk past the limit.
        let observed = written + chunk.len() as u64;
        if observed > limit.bytes() {
            return Err(StreamError::Fatal(OciError::TooLarge {
                what: what(),
                limit,
                observed,
            }));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io)?;
        written = observed;
    }
    let short = |n: &u64| *n != written;
    if let Some(total) = declared.filter(short).or(expected.size.filter(short)) {
        return Err(StreamError::Transport(format!(
            "body ended after {written} of {total} bytes"
        )));
    }
    file.sync_all().map_err(io)?;
    let actual = hasher.finish();
    if actual != *digest {
        return Err(StreamError::Fatal(OciError::DigestMismatch {
            what: format!("blob {}", redact_url(url.as_str())),
            expected: digest.clone(),
            actual,
        }));
    }
    Ok(written)
}

/// `len` bytes of `path` from `offset`, streamed (model layers are gigabytes).
async fn file_body(path: &Path, offset: u64, len: u64) -> Result<reqwest::Body, OciError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |source| OciError::Io {
        path: path.into(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
    let reader = file.take(len);
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        let mut buf = vec![0u8; 1 << 16];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// An Ollama model name resolved to a registry repository and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReference {
    pub repository: String,
    pub tag: String,
}

impl ModelReference {
    /// Ollama's naming: `name` → `library/name:latest`, `name:tag` →
    /// `library/name:tag`, `ns/name[:tag]` as is; a leading `host/` (as in
    /// `host/ns/name:tag`) is dropped, the client already names the registry.
    pub fn parse(reference: &str) -> Result<Self, OciError> {
        let bad = |message: &str| OciError::BadReference {
            reference: reference.into(),
            message: message.into(),
        };
        let r = reference.trim();
        if r.contains('@') {
            return Err(bad("models are pinned by farm.lock; write `name:tag` without a digest"));
        }
        let (path, tag) = match r.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (r, "latest"),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let repository = match parts.as_slice() {
            [name] => format!("library/{name}"),
            [ns, name] => format!("{ns}/{name}"),
            [_host, ns, name] => format!("{ns}/{name}"),
            _ => {
                return Err(bad(
                    "expected `name`, `name:tag`, `namespace/name:tag` or `host/namespace/name:tag`",
                ))
            }
        };
        check_repository(&repository).map_err(|e| match e {
            OciError::BadReference { message, .. } => bad(&message),
            other => other,
        })?;
        check_tag(reference, tag)?;
        Ok(ModelReference {
            repository,
            tag: tag.into(),
        })
    }
}

/// Pins an Ollama model (`tinyllama`, `tinyllama:1.1b`, `ns/model:tag`) to
/// its manifest digest and the digests of its config and layers.
pub async fn resolve_model(client: &RegistryClient, reference: &str) -> Result<LockedModel, OciError> {
    let parsed = ModelReference::parse(reference)?;
    let fetched = client
        .get_manifest(&parsed.repository, &parsed.tag, &MODEL_MANIFEST_TYPES)
        .await?;
    let what = format!("model {reference} (manifest {}:{})", parsed.repository, parsed.tag);
    let (config, layers) = model_blobs(&fetched.bytes, &what)?;
    Ok(LockedModel {
        reference: reference.into(),
        repository: parsed.repository.clone(),
        tag: parsed.tag.clone(),
        manifest: OciBlob {
            digest: fetched.digest.clone(),
            media_type: fetched.media_type.clone(),
            size: fetched.bytes.len() as u64,
        },
        config,
        layers,
    })
}

/// The config and layers of a model's manifest (Docker v2 or OCI; both
/// have the OCI image manifest's shape). Media types oci-spec does not
/// name, such as Ollama's `application/vnd.ollama.image.model`, come
/// through as `MediaType::Other` and are kept exactly as written.
fn model_blobs(bytes: &[u8], what: &str) -> Result<(OciBlob, Vec<OciBlob>), OciError> {
    let bad = |message: String| OciError::BadManifest {
        what: what.to_string(),
        message,
    };
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not an image manifest: {e}")))?;
    if manifest.schema_version() != 2 {
        return Err(bad(format!("schemaVersion {}, expected 2", manifest.schema_version())));
    }
    if manifest.layers().is_empty() {
        return Err(bad("no layers: an Ollama model has at least its weights".into()));
    }
    let blob = |d: &Descriptor| -> Result<OciBlob, OciError> {
        Ok(OciBlob {
            digest: parse_digest(d.digest().as_ref(), what)?,
            media_type: d.media_type().to_string(),
            size: d.size(),
        })
    };
    Ok((
        blob(manifest.config())?,
        manifest.layers().iter().map(blob).collect::<Result<_, _>>()?,
    ))
}

/// A container image reference, split the way Docker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `host[:port]` when the first component names one (has `.` or `:`, or is `localhost`).
    pub registry: Option<String>,
    /// The repository; a single name without a registry gets Docker's `library/`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Integrity>,
}

impl ImageReference {
    pub fn parse(reference: &str) -> Result<Self, OciError> {
        let bad = |message: String| OciError::BadReference {
            reference: reference.into(),
            message,
        };
        let r = reference.trim();
        let (rest, digest) = match r.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d, reference)?)),
            None => (r, None),
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
            _ => (rest, None),
        };
        let (registry, repository) = match path.split_once('/') {
            Some((first, repo)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_string()), repo.to_string())
            }
            Some(_) => (None, path.to_string()),
            None => (None, format!("library/{path}")),
        };
        check_repository(&repository).map_err(|e| bad(e.to_string()))?;
        if let Some(t) = &tag {
            check_tag(reference, t)?;
        }
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// The digest an image reference points at: for a tag, the manifest (or,
/// when multi-arch, the index/manifest list) it names now; for a reference
/// carrying a digest, that digest once the registry confirms it has it.
/// `client` must be for the reference's registry.
pub async fn resolve_image(client: &RegistryClient, reference: &str) -> Result<Integrity, OciError> {
    let parsed = ImageReference::parse(reference)?;
    let target = match (&parsed.digest, &parsed.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let digest = client
        .manifest_digest(&parsed.repository, &target, &IMAGE_MANIFEST_TYPES)
        .await?;
    if let Some(pinned) = parsed.digest {
        if pinned != digest {
            return Err(OciError::DigestMismatch {
                what: format!("image {reference}"),
                expected: pinned,
                actual: digest,
            });
        }
    }
    if digest.algorithm != Algorithm::Sha256 {
        return Err(OciError::BadManifest {
            what: format!("image {reference}"),
            message: format!("digest {digest} is not sha256, which every OCI tool expects"),
        });
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_media_types_are_oci_specs() {
        use oci_spec::image::{MediaType, ToDockerV2S2};
        assert_eq!(MediaType::ImageManifest.as_ref(), OCI_MANIFEST);
        assert_eq!(MediaType::ImageIndex.as_ref(), OCI_INDEX);
        assert_eq!(MediaType::ImageManifest.to_docker_v2s2().unwrap(), DOCKER_MANIFEST_V2);
        assert_eq!(MediaType::ImageIndex.to_docker_v2s2().unwrap(), DOCKER_MANIFEST_LIST);
    }

    #[test]
    fn ollama_layer_media_types_round_trip() {
        let d = |n: u8| format!("sha256:{}", hex::encode([n; 32]));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_V2}",
                "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":10}},
                "layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"{}","size":20}},
                          {{"mediaType":"application/vnd.ollama.image.template","digest":"{}","size":30}}]}}"#,
            d(1),
            d(2),
            d(3)
        );
        let parsed: ImageManifest = serde_json::from_str(&manifest).unwrap();
        assert_eq!(
            parsed.layers()[0].media_type(),
            &oci_spec::image::MediaType::Other("application/vnd.ollama.image.model".into())
        );
        let (config, layers) = model_blobs(manifest.as_bytes(), "m").unwrap();
        assert_eq!(
            (config.media_type.as_str(), config.digest.to_string(), config.size),
            ("application/vnd.docker.container.image.v1+json", d(1), 10)
        );
        let layers: Vec<(&str, String, u64)> = layers
            .iter()
            .map(|l| (l.media_type.as_str(), l.digest.to_string(), l.size))
            .collect();
        assert_eq!(
            layers,
            [
                ("application/vnd.ollama.image.model", d(2), 20),
                ("application/vnd.ollama.image.template", d(3), 30)
            ]
        );
        let again = serde_json::to_value(&parsed).unwrap();
        assert_eq!(again["layers"][1]["mediaType"], "application/vnd.ollama.image.template");
    }

    #[test]
    fn model_manifests_need_schema_2_and_layers() {
        let d = format!("sha256:{}", hex::encode([7u8; 32]));
        let config = format!(r#""config":{{"mediaType":"x/y","digest":"{d}","size":1}}"#);
        for (manifest, problem) in [
            (
                format!(r#"{{"schemaVersion":1,{config},"layers":[]}}"#),
                "schemaVersion 1",
            ),
            (format!(r#"{{"schemaVersion":2,{config},"layers":[]}}"#), "no layers"),
            (format!(r#"{{"schemaVersion":2,{config}}}"#), "not an image manifest"),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"x/y","digest":"sha256:00","size":1},"layers":[]}"#
                    .to_string(),
                "not an image manifest",
            ),
        ] {
            let err = model_blobs(manifest.as_bytes(), "model m").unwrap_err().to_string();
            assert!(err.contains("model m") && err.contains(problem), "{manifest}: {err}");
        }
    }

    #[test]
    fn challenges_parse_with_quotes_commas_and_escapes() {
        assert_eq!(parse_challenge(r#"Basic realm="farm-test""#), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.invalid/token",service="reg.example.invalid",scope="repository:a/b:pull,push",error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.invalid/token".into(),
                service: Some("reg.example.invalid".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm="http://127.0.0.1:1/t\"x\"", service=s"#),
            Some(Challenge::Bearer {
                realm: r#"http://127.0.0.1:1/t"x""#.into(),
                service: Some("s".into()),
                scope: None
            })
        );
        assert_eq!(
            parse_challenge("Bearer service=x"),
            None,
            "a Bearer challenge without realm cannot be answered"
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn ollama_names_map_to_repositories() {
        let p = |r| ModelReference::parse(r).map(|m| (m.repository, m.tag));
        assert_eq!(p("tinyllama").unwrap(), ("library/tinyllama".into(), "latest".into()));
        assert_eq!(p("qwen2.5:0.5b").unwrap(), ("library/qwen2.5".into(), "0.5b".into()));
        assert_eq!(
            p("someone/model:q4_K_M").unwrap(),
            ("someone/model".into(), "q4_K_M".into())
        );
        assert_eq!(
            p("models.example.invalid/someone/model:v1").unwrap(),
            ("someone/model".into(), "v1".into())
        );
        assert!(p("a/b/c/d:1").is_err());
        assert!(p("TinyLlama").unwrap_err().to_string().contains("lowercase"));
        assert!(p("tiny:-bad").is_err());
        assert!(p("tiny@sha256:00").is_err());
    }

    #[test]
    fn image_references_split_like_docker() {
        let r = ImageReference::parse("mongo:7.0").unwrap();
        assert_eq!(
            (r.registry, r.repository.as_str(), r.tag.as_deref()),
            (None, "library/mongo", Some("7.0"))
        );
        let r = ImageReference::parse("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(
            (r.registry.as_deref(), r.repository.as_str(), r.tag),
            (Some("127.0.0.1:5000"), "team/app", None)
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = ImageReference::parse(&format!("localhost/app:1@{d}")).unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost"));
        assert_eq!(r.digest.unwrap().to_string(), d);
        let r = ImageReference::parse("bitnami/mongodb:7.0").unwrap();
        assert_eq!((r.registry, r.repository.as_str()), (None, "bitnami/mongodb"));
    }

    #[test]
    fn credentials_come_from_env_then_auth_files_and_never_print_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".docker")).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            home.join(".docker/config.json"),
            format!(
                r#"{{"auths":{{"https://reg.example.invalid:5000/v1/":{{"auth":"{}"}},"other.example.invalid":{{"auth":"{}"}}}}}}"#,
                b64("docker-user:docker-pass"),
                b64("o:p")
            ),
        )
        .unwrap();
        let podman = dir.path().join("auth.json");
        std::fs::write(
            &podman,
            format!(
                r#"{{"auths":{{"reg.example.invalid:5000":{{"auth":"{}"}}}}}}"#,
                b64("podman-user:pw:with:colons")
            ),
        )
        .unwrap();

        let env_of = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let home_s = home.display().to_string();

        let from_docker =
            Credentials::discover_with("reg.example.invalid:5000", &env_of(vec![("HOME", home_s.clone())]))
                .unwrap()
                .unwrap();
        assert_eq!(
            (from_docker.username.as_str(), from_docker.password.as_str()),
            ("docker-user", "docker-pass")
        );
        assert!(
            from_docker.source.contains(".docker/config.json"),
            "{}",
            from_docker.source
        );

        let env = env_of(vec![
            ("HOME", home_s.clone()),
            ("REGISTRY_AUTH_FILE", podman.display().to_string()),
        ]);
        let from_podman = Credentials::discover_with("reg.example.invalid:5000", &env)
            .unwrap()
            .unwrap();
        assert_eq!(
            (from_podman.username.as_str(), from_podman.password.as_str()),
            ("podman-user", "pw:with:colons")
        );

        let env = env_of(vec![
            ("HOME", home_s.clone()),
            (USERNAME_ENV, "env-user".into()),
            (PASSWORD_ENV, "env-secret".into()),
        ]);
        let from_env = Credentials::discover_with("reg.example.invalid:5000", &env)
            .unwrap()
            .unwrap();
        assert_eq!(from_env.username, "env-user");
        assert!(
            !format!("{from_env:?}").contains("env-secret"),
            "Debug must redact: {from_env:?}"
        );

        assert_eq!(
            Credentials::discover_with("none.example.invalid", &env_of(vec![("HOME", home_s)])).unwrap(),
            None
        );

        std::fs::write(&podman, "{not json").unwrap();
        let env = env_of(vec![("REGISTRY_AUTH_FILE", podman.display().to_string())]);
        let err = Credentials::discover_with("x", &env).unwrap_err().to_string();
        assert!(
            err.contains("auth.json") && err.contains("not a valid auth file"),
            "{err}"
        );
    }

    #[test]
    fn client_debug_never_shows_the_password() {
        let http = Client::new(Default::default());
        let c = RegistryClient::new(&http, "http://127.0.0.1:5000", Some(Credentials::new("u", "hunter2"))).unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("127.0.0.1:5000") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(RegistryClient::anonymous(&http, "ftp://x.example.invalid").is_err());
        assert_eq!(c.host(), "127.0.0.1:5000");
    }
}
