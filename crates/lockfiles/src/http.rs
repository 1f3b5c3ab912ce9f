//! The HTTP client every resolver and `farm fetch` share: retries with
//! backoff on timeouts, connection errors, 429 and 5xx; `file://` URLs read
//! locally; downloads hashed while they stream, so a bad body never lands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;

use crate::integrity::{Hasher, Integrity};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {url}: {status}{hint}")]
    Status { url: String, status: u16, hint: String },
    #[error("GET {url}: {message} (after {attempts} attempts)")]
    Transport {
        url: String,
        message: String,
        attempts: u32,
    },
    #[error("{url}: integrity mismatch: expected {expected}, got {actual}")]
    Integrity {
        url: String,
        expected: Integrity,
        actual: Integrity,
    },
    #[error("{url}: body was {actual} bytes, expected {expected}")]
    Truncated { url: String, expected: u64, actual: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{url}: not a URL farm can fetch: {message}")]
    BadUrl { url: String, message: String },
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
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
        }
    }
}

impl ClientOptions {
    /// Defaults, adjusted by `FARM_HTTP_ATTEMPTS`, `FARM_HTTP_BACKOFF_MS`,
    /// `FARM_HTTP_CONNECT_TIMEOUT` and `FARM_HTTP_READ_TIMEOUT` (seconds), for
    /// slow links and for tests that exercise the retry paths quickly.
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
        o
    }
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
        let inner = reqwest::Client::builder()
            .user_agent(concat!("farm/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
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
            let body = tokio::fs::read(&path)
                .await
                .map_err(|source| HttpError::Io { path, source })?;
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
            let body = resp.bytes().await.map_err(|e| transport(url, e))?.to_vec();
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

    /// Streams `url` into a new file `dest`, hashing as it goes. On any error or
    /// integrity mismatch `dest` does not exist afterwards. `progress` gets
    /// (bytes so far, total if known) and is told 0 again when an attempt restarts.
    pub async fn download(
        &self,
        url: &str,
        expected: Option<&Integrity>,
        dest: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<Integrity, HttpError> {
        let algorithm = expected
            .map(|e| e.algorithm)
            .unwrap_or(crate::integrity::Algorithm::Sha256);
        let result = self
            .retry(|| async {
                let mut file = std::fs::File::create(dest).map_err(|source| HttpError::Io {
                    path: dest.into(),
                    source,
                })?;
                let mut hasher = Hasher::new(algorithm);
                let mut written = 0u64;
                let io = |source| HttpError::Io {
                    path: dest.into(),
                    source,
                };
                progress(0, None);
                if let Some(path) = file_url_path(url)? {
                    let mut src = std::fs::File::open(&path).map_err(|source| HttpError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    let total = src.metadata().ok().map(|m| m.len());
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = std::io::Read::read(&mut src, &mut buf).map_err(|source| HttpError::Io {
                            path: path.clone(),
                            source,
                        })?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        file.write_all(&buf[..n]).map_err(io)?;
                        written += n as u64;
                        progress(written, total);
                    }
                } else {
                    let resp = self.inner.get(url).send().await.map_err(|e| transport(url, e))?;
                    let status = resp.status().as_u16();
                    if !resp.status().is_success() {
                        return Err(status_error(url, status));
                    }
                    let total = resp.content_length();
                    let mut stream = resp.bytes_stream();
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map_err(|e| transport(url, e))?;
                        hasher.update(&chunk);
                        file.write_all(&chunk).map_err(io)?;
                        written += chunk.len() as u64;
                        progress(written, total);
                    }
                    if let Some(total) = total {
                        if written != total {
                            return Err(HttpError::Truncated {
                                url: url.into(),
                                expected: total,
                                actual: written,
                            });
                        }
                    }
                }
                file.sync_all().map_err(io)?;
                let actual = hasher.finish();
                if let Some(expected) = expected {
                    if *expected != actual {
                        return Err(HttpError::Integrity {
                            url: url.into(),
                            expected: expected.clone(),
                            actual,
                        });
                    }
                }
                Ok(actual)
            })
            .await;
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
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

fn transport(url: &str, e: reqwest::Error) -> HttpError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        message.push_str(" (timed out)");
    }
    HttpError::Transport {
        url: url.into(),
        message,
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
