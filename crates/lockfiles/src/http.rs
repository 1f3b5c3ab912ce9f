//! The HTTP client every resolver and `farm fetch` share: retries with
//! backoff on timeouts, connection errors, 429 and 5xx; `file://` URLs read
//! locally; downloads hashed and measured while they stream, so a bad body
//! never lands and an endless one stops at its expected size. URLs in its
//! errors are redacted ([`crate::redact`]): registry URLs may carry tokens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use rustls::pki_types::CertificateDer;

use crate::integrity::{Hasher, Integrity};
use crate::redact::{redact_text, RedactedUrl};

/// Downloads of unknown size (no `size` in the lock, no Content-Length)
/// stop here unless `FARM_MAX_DOWNLOAD_SIZE` says otherwise: more than any
/// toolchain or wheel, less than a full disk.
pub const DEFAULT_MAX_DOWNLOAD_SIZE: u64 = 20 << 30;

/// Documents read whole into memory (registry metadata, index pages); the
/// largest real ones (full npm packuments) are tens of MiB.
pub const MAX_DOCUMENT_SIZE: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {url}: {status}{hint}")]
    Status {
        url: RedactedUrl,
        status: u16,
        hint: String,
    },
    #[error("GET {url}: {message} (after {attempts} attempts)")]
    Transport {
        url: RedactedUrl,
        message: String,
        attempts: u32,
    },
    #[error("{url}: integrity mismatch: expected {expected}, got {actual}")]
    Integrity {
        url: RedactedUrl,
        expected: Integrity,
        actual: Integrity,
    },
    #[error("{url}: body was {actual} bytes, expected {expected}")]
    Truncated {
        url: RedactedUrl,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{url}: the body is more than {} bytes, {limit}: farm stopped reading at {observed} bytes and kept nothing{}",
        .limit.bytes(),
        .limit.hint()
    )]
    TooLarge {
        url: RedactedUrl,
        limit: SizeLimit,
        /// Bytes received when reading stopped (the chunk that passed the limit included).
        observed: u64,
    },
    #[error(
        "{url}: the server declares {declared} bytes (Content-Length), more than {} bytes, {limit}; not downloaded{}",
        .limit.bytes(),
        .limit.hint()
    )]
    DeclaredTooLarge {
        url: RedactedUrl,
        declared: u64,
        limit: SizeLimit,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{url}: not a URL farm can fetch: {message}")]
    BadUrl { url: RedactedUrl, message: String },
}

/// The most bytes a body may have, and who said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLimit {
    /// The size the lock (or the index listing the file) pins.
    Expected(u64),
    /// The server's Content-Length, when nothing else gives the size.
    Declared(u64),
    /// [`ClientOptions::max_download_size`], when nothing gives the size.
    Cap(u64),
    /// [`MAX_DOCUMENT_SIZE`], for documents read whole into memory.
    Document(u64),
}

impl SizeLimit {
    pub fn bytes(&self) -> u64 {
        match *self {
            SizeLimit::Expected(n) | SizeLimit::Declared(n) | SizeLimit::Cap(n) | SizeLimit::Document(n) => n,
        }
    }

    /// What to do about it, as a suffix of an error message.
    pub fn hint(&self) -> &'static str {
        match self {
            SizeLimit::Expected(_) => " (hint: the server is not serving the pinned artifact; check the mirror or registry it comes from)",
            SizeLimit::Declared(_) | SizeLimit::Document(_) => "",
            SizeLimit::Cap(_) => {
                " (hint: for a larger artifact, raise the limit with FARM_MAX_DOWNLOAD_SIZE, e.g. FARM_MAX_DOWNLOAD_SIZE=50GiB)"
            }
        }
    }
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SizeLimit::Expected(_) => "its expected size",
            SizeLimit::Declared(_) => "the size the server declared (Content-Length)",
            SizeLimit::Cap(_) => "farm's limit for downloads of unknown size",
            SizeLimit::Document(_) => "farm's limit for a registry document",
        })
    }
}

/// What a download must turn out to be, checked while it streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    pub integrity: Option<&'a Integrity>,
    /// The exact size in bytes, when the lock or an index gives it: reading
    /// stops as soon as the body passes it.
    pub size: Option<u64>,
}

impl HttpError {
    /// Whether another attempt may succeed.
    fn retryable(&self) -> bool {
        match self {
            HttpError::Status { status, .. } => *status == 429 || *status >= 500,
            HttpError::Transport { .. } | HttpError::Truncated { .. } => true,
            _ => false,
        }
    }
}

/// Knobs for [`Client`]; the defaults suit real registries, tests shrink them.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub connect_timeout: Duration,
    /// Longest silence while reading a body before the attempt is abandoned.
    pub read_timeout: Duration,
    /// Downloads whose size nothing declares stop after this many bytes.
    pub max_download_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            max_download_size: DEFAULT_MAX_DOWNLOAD_SIZE,
        }
    }
}

impl ClientOptions {
    /// Defaults, adjusted by `FARM_HTTP_ATTEMPTS`, `FARM_HTTP_BACKOFF_MS`,
    /// `FARM_HTTP_CONNECT_TIMEOUT` and `FARM_HTTP_READ_TIMEOUT` (seconds), for
    /// slow links and for tests that exercise the retry paths quickly, and
    /// `FARM_MAX_DOWNLOAD_SIZE` (a size such as `50GiB`; an unreadable value
    /// keeps the default, which is the safe direction).
    pub fn from_env() -> Self {
        let mut o = ClientOptions::default();
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = num("FARM_HTTP_ATTEMPTS") {
            o.attempts = n.max(1) as u32;
        }
        if let Some(n) = num("FARM_HTTP_BACKOFF_MS") {
            o.first_backoff = Duration::from_millis(n);
        }
        if let Some(n) = num("FARM_HTTP_CONNECT_TIMEOUT") {
            o.connect_timeout = Duration::from_secs(n.max(1));
        }
        if let Some(n) = num("FARM_HTTP_READ_TIMEOUT") {
            o.read_timeout = Duration::from_secs(n.max(1));
        }
        if let Some(n) = std::env::var("FARM_MAX_DOWNLOAD_SIZE")
            .ok()
            .and_then(|v| farm_formats::size::parse_size(&v).ok())
        {
            o.max_download_size = n;
        }
        o
    }
}

/// The CA certificates HTTPS servers are checked against: the ones OpenSSL
/// found when farm used it through native-tls, so trust did not change with
/// the move to rustls. `SSL_CERT_FILE` replaces the system bundle (when it
/// exists); `SSL_CERT_DIR` (`:`-separated) adds directories; the system's
/// certificate directories are always read, so both variables add to the
/// machine's store rather than replace it. Unreadable files are skipped, as
/// OpenSSL skips them.
pub fn trusted_roots() -> Vec<CertificateDer<'static>> {
    let probe = openssl_probe::probe();
    let env_dirs = std::env::var_os("SSL_CERT_DIR")
        .map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .unwrap_or_default();
    let system_dirs = openssl_probe::candidate_cert_dirs().map(Path::to_path_buf);
    let mut ders = rustls_native_certs::load_certs_from_paths(probe.cert_file.as_deref(), None).certs;
    for dir in env_dirs.into_iter().chain(system_dirs) {
        ders.extend(rustls_native_certs::load_certs_from_paths(None, Some(&dir)).certs);
    }
    ders.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
    ders.dedup();
    ders
}

#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    options: ClientOptions,
}

/// A response body read whole, with the headers a resolver may need.
pub struct Fetched {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Self {
        // reqwest is built without a rustls provider of its own; ring is
        // tonic's too. An error only means a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let inner = reqwest::Client::builder()
            .user_agent(concat!("farm/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .tls_certs_only(
                trusted_roots()
                    .iter()
                    .filter_map(|der| reqwest::Certificate::from_der(der).ok()),
            )
            .build()
            .expect("TLS backend initialises");
        Client { inner, options }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The underlying client, for requests that need custom methods or headers
    /// (the OCI registry client); callers then own their retries.
    pub fn raw(&self) -> &reqwest::Client {
        &self.inner
    }

    /// GET a small document whole. Non-2xx is an error.
    pub async fn get_bytes(&self, url: &str) -> Result<Vec<u8>, HttpError> {
        Ok(self.get_with_headers(url, &[]).await?.body)
    }

    /// GET with extra request headers (e.g. `Accept`), retried like every request.
    pub async fn get_with_headers(&self, url: &str, headers: &[(&str, &str)]) -> Result<Fetched, HttpError> {
        if let Some(path) = file_url_path(url)? {
            let body = read_file_document(&path, url).await?;
            return Ok(Fetched {
                status: 200,
                headers: Default::default(),
                body,
            });
        }
        self.retry(|| async {
            let mut req = self.inner.get(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = req.send().await.map_err(|e| transport(url, e))?;
            let status = resp.status().as_u16();
            if !resp.status().is_success() {
                return Err(status_error(url, status));
            }
            let headers = resp.headers().clone();
            let body = read_document(resp, url).await?;
            Ok(Fetched { status, headers, body })
        })
        .await
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<T, HttpError> {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let fetched = self.get_with_headers(url, &headers).await?;
        serde_json::from_slice(&fetched.body).map_err(|e| HttpError::BadUrl {
            url: url.into(),
            message: format!("response is not the expected JSON: {e}"),
        })
    }

    /// [`Client::download_expected`] without a known size: the body may be
    /// as long as its Content-Length, or `max_download_size` without one.
    pub async fn download(
        &self,
        url: &str,
        expected: Option<&Integrity>,
        dest: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<Integrity, HttpError> {
        let expected = Expected {
            integrity: expected,
            size: None,
        };
        self.download_expected(url, expected, dest, progress).await
    }

    /// Streams `url` into a new file `dest`, hashing and counting as it goes.
    /// The body may not pass `expected.size`, else the server's
    /// Content-Length, else `max_download_size`: reading stops at the first
    /// chunk past it, so an endless body cannot fill the disk. Bytes go to a
    /// temporary file beside `dest`, renamed to `dest` only once complete and
    /// verified; so after an error, or when this future is dropped half-way,
    /// neither it nor `dest` exists. `progress` gets (bytes so far, total if
    /// known) and is told 0 again when an attempt restarts.
    pub async fn download_expected(
        &self,
        url: &str,
        expected: Expected<'_>,
        dest: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<Integrity, HttpError> {
        let algorithm = expected
            .integrity
            .map(|e| e.algorithm)
            .unwrap_or(crate::integrity::Algorithm::Sha256);
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dest_io = |source| HttpError::Io {
            path: dest.into(),
            source,
        };
        let result = self
            .retry(|| async {
                let part = tempfile::Builder::new()
                    .prefix(".farm-download-")
                    .tempfile_in(dir)
                    .map_err(dest_io)?;
                progress(0, None);
                let mut sink;
                if let Some(path) = file_url_path(url)? {
                    let mut src = std::fs::File::open(&path).map_err(|source| HttpError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    let total = expected
                        .size
                        .or_else(|| src.metadata().ok().filter(|m| m.is_file()).map(|m| m.len()));
                    let limit = match expected.size {
                        Some(n) => SizeLimit::Expected(n),
                        None => SizeLimit::Cap(self.options.max_download_size),
                    };
                    sink = Sink::new(part, algorithm, url, limit, total, progress);
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = std::io::Read::read(&mut src, &mut buf).map_err(|source| HttpError::Io {
                            path: path.clone(),
                            source,
                        })?;
                        if n == 0 {
                            break;
                        }
                        sink.write(&buf[..n])?;
                    }
                } else {
                    let resp = self.inner.get(url).send().await.map_err(|e| transport(url, e))?;
                    let status = resp.status().as_u16();
                    if !resp.status().is_success() {
                        return Err(status_error(url, status));
                    }
                    let declared = resp.content_length();
                    let limit = self.body_limit(url, expected.size, declared)?;
                    sink = Sink::new(part, algorithm, url, limit, expected.size.or(declared), progress);
                    let mut stream = resp.bytes_stream();
                    while let Some(chunk) = stream.next().await {
                        sink.write(&chunk.map_err(|e| transport(url, e))?)?;
                    }
                    // A close-delimited body that ends early looks complete to
                    // HTTP; short of the expected size, it is worth another try.
                    let short = expected.size.filter(|n| *n > sink.written);
                    if let Some(total) = declared.filter(|n| *n != sink.written).or(short) {
                        return Err(HttpError::Truncated {
                            url: url.into(),
                            expected: total,
                            actual: sink.written,
                        });
                    }
                }
                let written = sink.written;
                let (part, actual) = sink.finish().map_err(dest_io)?;
                if let Some(expected) = expected.integrity {
                    if *expected != actual {
                        return Err(HttpError::Integrity {
                            url: url.into(),
                            expected: expected.clone(),
                            actual,
                        });
                    }
                }
                // A local file of another size (checked after the digest,
                // which says more) or a lock whose size and digest disagree.
                if let Some(size) = expected.size.filter(|n| *n != written) {
                    return Err(HttpError::Truncated {
                        url: url.into(),
                        expected: size,
                        actual: written,
                    });
                }
                part.persist(dest).map_err(|e| dest_io(e.error))?;
                Ok(actual)
            })
            .await;
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    /// The most bytes a body may have: the expected size, else what the
    /// server declares, else the cap; a declaration past the limit is
    /// refused before a byte is read.
    fn body_limit(&self, url: &str, expected: Option<u64>, declared: Option<u64>) -> Result<SizeLimit, HttpError> {
        let limit = match (expected, declared) {
            (Some(n), _) => SizeLimit::Expected(n),
            (None, Some(n)) if n <= self.options.max_download_size => SizeLimit::Declared(n),
            (None, _) => SizeLimit::Cap(self.options.max_download_size),
        };
        match declared {
            Some(declared) if declared > limit.bytes() => Err(HttpError::DeclaredTooLarge {
                url: url.into(),
                declared,
                limit,
            }),
            _ => Ok(limit),
        }
    }

    async fn retry<T, F, Fut>(&self, mut attempt: F) -> Result<T, HttpError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, HttpError>>,
    {
        let mut backoff = self.options.first_backoff;
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && n < self.options.attempts => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    n += 1;
                }
                Err(HttpError::Transport { url, message, .. }) => {
                    return Err(HttpError::Transport {
                        url,
                        message,
                        attempts: n,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Where a download's bytes go: counted against the limit before they are
/// written, hashed, and reported.
struct Sink<'a> {
    part: tempfile::NamedTempFile,
    hasher: Hasher,
    written: u64,
    url: &'a str,
    limit: SizeLimit,
    total: Option<u64>,
    progress: &'a (dyn Fn(u64, Option<u64>) + Send + Sync),
}

impl<'a> Sink<'a> {
    fn new(
        part: tempfile::NamedTempFile,
        algorithm: crate::integrity::Algorithm,
        url: &'a str,
        limit: SizeLimit,
        total: Option<u64>,
        progress: &'a (dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Self {
        Sink {
            part,
            hasher: Hasher::new(algorithm),
            written: 0,
            url,
            limit,
            total,
            progress,
        }
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), HttpError> {
        let observed = self.written + chunk.len() as u64;
        if observed > self.limit.bytes() {
            return Err(HttpError::TooLarge {
                url: self.url.into(),
                limit: self.limit,
                observed,
            });
        }
        self.hasher.update(chunk);
        self.part.write_all(chunk).map_err(|source| HttpError::Io {
            path: self.part.path().into(),
            source,
        })?;
        self.written += chunk.len() as u64;
        (self.progress)(self.written, self.total);
        Ok(())
    }

    /// The complete, synced file and its digest.
    fn finish(self) -> std::io::Result<(tempfile::NamedTempFile, Integrity)> {
        self.part.as_file().sync_all()?;
        Ok((self.part, self.hasher.finish()))
    }
}

/// A small document read whole, refused once past [`MAX_DOCUMENT_SIZE`].
async fn read_document(resp: reqwest::Response, url: &str) -> Result<Vec<u8>, HttpError> {
    let limit = SizeLimit::Document(MAX_DOCUMENT_SIZE);
    if let Some(declared) = resp.content_length().filter(|n| *n > limit.bytes()) {
        return Err(HttpError::DeclaredTooLarge {
            url: url.into(),
            declared,
            limit,
        });
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport(url, e))?;
        let observed = (body.len() + chunk.len()) as u64;
        if observed > limit.bytes() {
            return Err(HttpError::TooLarge {
                url: url.into(),
                limit,
                observed,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A `file://` document, with the same limit (the path may be a device).
async fn read_file_document(path: &Path, url: &str) -> Result<Vec<u8>, HttpError> {
    use tokio::io::AsyncReadExt;
    let limit = SizeLimit::Document(MAX_DOCUMENT_SIZE);
    let io = |source| HttpError::Io {
        path: path.into(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut body = Vec::new();
    file.take(limit.bytes() + 1).read_to_end(&mut body).await.map_err(io)?;
    if body.len() as u64 > limit.bytes() {
        return Err(HttpError::TooLarge {
            url: url.into(),
            limit,
            observed: body.len() as u64,
        });
    }
    Ok(body)
}

/// A transport failure, its message free of URLs with credentials: reqwest
/// names the URL (a redirect's target may be a pre-signed one), so it is
/// dropped here and the caller's URL shown redacted instead.
fn transport(url: &str, e: reqwest::Error) -> HttpError {
    let timed_out = e.is_timeout();
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if timed_out {
        message.push_str(" (timed out)");
    }
    HttpError::Transport {
        url: url.into(),
        message: redact_text(&message).into_owned(),
        attempts: 1,
    }
}

fn status_error(url: &str, status: u16) -> HttpError {
    let hint = match status {
        401 | 403 => " (hint: check the registry credentials)".to_string(),
        404 => " (not found: is the version or digest right, and the registry the one you meant?)".to_string(),
        _ => String::new(),
    };
    HttpError::Status {
        url: url.into(),
        status,
        hint,
    }
}

fn file_url_path(url: &str) -> Result<Option<PathBuf>, HttpError> {
    if !url.starts_with("file:") {
        return Ok(None);
    }
    let parsed = url::Url::parse(url).map_err(|e| HttpError::BadUrl {
        url: url.into(),
        message: e.to_string(),
    })?;
    parsed.to_file_path().map(Some).map_err(|_| HttpError::BadUrl {
        url: url.into(),
        message: "file URLs must be absolute".into(),
    })
}
