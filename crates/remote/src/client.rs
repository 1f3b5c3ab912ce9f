//! The gRPC client: one channel to the server, the instance name and the
//! bearer token on every call, blobs checked against their digests.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use farm_lockfiles::redact::redact_url;
use sha2::Digest as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::bytestream::byte_stream_client::ByteStreamClient;
use crate::bytestream::{ReadRequest, WriteRequest};
use crate::proto::action_cache_client::ActionCacheClient;
use crate::proto::capabilities_client::CapabilitiesClient;
use crate::proto::content_addressable_storage_client::ContentAddressableStorageClient;
use crate::proto::{self, batch_update_blobs_request, digest_function};
use crate::{digest_string, Digest, Error, Result};

/// Blobs up to this size go in batches; larger ones through ByteStream.
const BATCH_BLOB_MAX: i64 = 1 << 20;
/// The payload of one batch: well under gRPC's usual 4 MiB message limit.
const BATCH_BYTES_MAX: i64 = 3 << 20;
/// ByteStream chunk size.
const CHUNK: usize = 1 << 20;
/// Digests per FindMissingBlobs call.
const FIND_MAX: usize = 4096;

/// Where the remote cache is and how to talk to it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RemoteConfig {
    /// `grpc://HOST:PORT` (plain) or `grpcs://HOST:PORT` (TLS).
    pub url: String,
    /// The REAPI instance name ("" for the default instance).
    pub instance: String,
    /// Sent as `authorization: Bearer TOKEN` on every call.
    pub token: Option<String>,
    /// PEM CA certificates to trust instead of the machine's (grpcs://).
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS (grpcs://).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("url", &redact_url(&self.url))
            .field("instance", &self.instance)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

/// A blob to upload: its digest and where its bytes are.
pub enum BlobData {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// A connected REAPI client. Cheap to clone (one shared channel).
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    /// For messages: the address without credentials.
    shown: String,
    instance: String,
    auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    timeout: Duration,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

impl Client {
    /// Connects to `config.url` within `connect_timeout`; each call then
    /// has `call_timeout`.
    pub async fn connect(config: &RemoteConfig, connect_timeout: Duration, call_timeout: Duration) -> Result<Client> {
        let shown = redact_url(&config.url);
        let bad = |reason: &str| Error::Address {
            url: shown.clone(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(&config.url).map_err(|e| bad(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "grpc" => false,
            "grpcs" => true,
            other => return Err(bad(&format!("the scheme must be grpc or grpcs, found {other:?}"))),
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let port = parsed
            .port()
            .ok_or_else(|| bad("no port (the REAPI has no default port)"))?;
        if !parsed.path().trim_matches('/').is_empty() || parsed.query().is_some() {
            return Err(bad(
                "a path or query is not part of a gRPC address; give the instance name as [remote] instance or --remote-instance",
            ));
        }
        let authority = format!("{host}:{port}");
        let mut endpoint = Endpoint::from_shared(format!("{}://{authority}", if tls { "https" } else { "http" }))
            .map_err(|e| bad(&e.to_string()))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if tls {
            let mut t = ClientTlsConfig::new().domain_name(host.trim_matches(['[', ']']));
            match &config.ca_cert {
                Some(ca) => {
                    let pem = std::fs::read(ca).map_err(io(format!("reading the CA certificate {}", ca.display())))?;
                    t = t.ca_certificate(Certificate::from_pem(pem));
                }
                None => t = t.with_native_roots(),
            }
            match (&config.client_cert, &config.client_key) {
                (Some(c), Some(k)) => {
                    let cert =
                        std::fs::read(c).map_err(io(format!("reading the client certificate {}", c.display())))?;
                    let key = std::fs::read(k).map_err(io(format!("reading the client key {}", k.display())))?;
                    t = t.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Invalid(
                        "mutual TLS needs both a client certificate and its key ([remote] client-cert and client-key)"
                            .into(),
                    ))
                }
            }
            endpoint = endpoint.tls_config(t).map_err(|e| bad(&e.to_string()))?;
        } else if config.client_cert.is_some() || config.ca_cert.is_some() {
            return Err(bad(
                "TLS files are given but the address is plain grpc://; use grpcs://",
            ));
        }
        let auth =
            match &config.token {
                Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                    Error::Invalid("the remote cache token has characters not allowed in a header".into())
                })?),
                None => None,
            };
        let channel = endpoint.connect().await.map_err(|e| {
            let reason = error_chain(&e);
            if tls && tls_failure(&reason) {
                Error::Tls {
                    url: shown.clone(),
                    reason,
                }
            } else {
                Error::Unreachable {
                    url: shown.clone(),
                    reason,
                }
            }
        })?;
        Ok(Client {
            channel,
            shown,
            instance: config.instance.clone(),
            auth,
            timeout: call_timeout,
        })
    }

    /// The address for messages (no credentials).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The shared channel, for the services this module has no methods for.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The REAPI instance name calls are made on.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub(crate) fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r.set_timeout(self.timeout);
        r
    }

    pub(crate) fn status(&self, what: &str, s: tonic::Status) -> Error {
        // A transport failure (TLS, HTTP/2) says what failed only in its sources.
        let mut message = s.message().to_string();
        let mut source = std::error::Error::source(&s);
        while let Some(e) = source {
            let text = e.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = e.source();
        }
        if self.shown.starts_with("grpcs://") && s.code() == tonic::Code::Unknown && tls_failure(&message) {
            return Error::Tls {
                url: self.shown.clone(),
                reason: format!("{what}: {message}"),
            };
        }
        let s = tonic::Status::new(s.code(), message);
        match s.code() {
            tonic::Code::Unavailable => Error::Unreachable {
                url: self.shown.clone(),
                reason: format!("{what}: {}", s.message()),
            },
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => Error::Auth {
                url: self.shown.clone(),
                what: what.to_string(),
                message: s.message().to_string(),
            },
            code => Error::Rpc {
                url: self.shown.clone(),
                what: what.to_string(),
                code,
                message: s.message().to_string(),
            },
        }
    }

    fn sha256() -> i32 {
        digest_function::Value::Sha256 as i32
    }

    /// The server's capabilities for this instance.
    pub async fn capabilities(&self) -> Result<proto::ServerCapabilities> {
        let mut c = CapabilitiesClient::new(self.channel.clone());
        let r = c
            .get_capabilities(self.req(proto::GetCapabilitiesRequest {
                instance_name: self.instance.clone(),
            }))
            .await
            .map_err(|s| self.status("GetCapabilities", s))?;
        Ok(r.into_inner())
    }

    /// The digests of `digests` that the CAS does not have.
    pub async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut cas = ContentAddressableStorageClient::new(self.channel.clone());
        let unique: Vec<Digest> = digests
            .iter()
            .map(|d| (d.hash.clone(), d.size_bytes))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|(hash, size_bytes)| Digest { hash, size_bytes })
            .collect();
        let mut missing = vec![];
        for chunk in unique.chunks(FIND_MAX) {
            let r = cas
                .find_missing_blobs(self.req(proto::FindMissingBlobsRequest {
                    instance_name: self.instance.clone(),
                    blob_digests: chunk.to_vec(),
                    digest_function: Self::sha256(),
                }))
                .await
                .map_err(|s| self.status("FindMissingBlobs", s))?;
            missing.extend(r.into_inner().missing_blob_digests);
        }
        Ok(missing)
    }

    /// Uploads the blobs the CAS does not have yet: small ones in batches,
    /// large ones through ByteStream. Returns the bytes sent.
    pub async fn upload(&self, blobs: Vec<(Digest, BlobData)>) -> Result<u64> {
        let digests: Vec<Digest> = blobs.iter().map(|(d, _)| d.clone()).collect();
        let missing: BTreeSet<(String, i64)> = self
            .find_missing(&digests)
            .await?
            .into_iter()
            .map(|d| (d.hash, d.size_bytes))
            .collect();
        let mut sent = 0u64;
        let mut batch: Vec<batch_update_blobs_request::Request> = vec![];
        let mut batch_bytes = 0i64;
        let mut done = BTreeSet::new();
        for (d, data) in blobs {
            let k = (d.hash.clone(), d.size_bytes);
            if !missing.contains(&k) || !done.insert(k) {
                continue;
            }
            sent += d.size_bytes as u64;
            if d.size_bytes > BATCH_BLOB_MAX {
                self.write_stream(&d, data).await?;
                continue;
            }
            let bytes = match data {
                BlobData::Bytes(b) => b,
                BlobData::File(p) => std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?,
            };
            if batch_bytes + d.size_bytes > BATCH_BYTES_MAX {
                self.batch_update(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += d.size_bytes;
            batch.push(batch_update_blobs_request::Request {
                digest: Some(d),
                data: bytes,
                compressor: 0,
            });
        }
        if !batch.is_empty() {
            self.batch_update(batch).await?;
        }
        Ok(sent)
    }

    async fn batch_update(&self, requests: Vec<batch_update_blobs_request::Request>) -> Result<()> {
        let mut cas = ContentAddressableStorageClient::new(self.channel.clone());
        let r = cas
            .batch_update_blobs(self.req(proto::BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests,
                digest_function: Self::sha256(),
            }))
            .await
            .map_err(|s| self.status("BatchUpdateBlobs", s))?;
        for resp in r.into_inner().responses {
            if let Some(st) = resp.status.filter(|s| s.code != 0) {
                let d = resp.digest.map(|d| digest_string(&d)).unwrap_or_default();
                return Err(Error::Rpc {
                    url: self.shown.clone(),
                    what: format!("BatchUpdateBlobs of {d}"),
                    code: tonic::Code::from(st.code),
                    message: st.message,
                });
            }
        }
        Ok(())
    }

    fn resource(&self, rest: String) -> String {
        if self.instance.is_empty() {
            rest
        } else {
            format!("{}/{rest}", self.instance)
        }
    }

    async fn write_stream(&self, d: &Digest, data: BlobData) -> Result<()> {
        let name = self.resource(format!("uploads/{}/blobs/{}/{}", upload_id(), d.hash, d.size_bytes));
        let mut chunks: Vec<Vec<u8>> = vec![];
        match data {
            BlobData::Bytes(b) => chunks.extend(b.chunks(CHUNK).map(<[u8]>::to_vec)),
            BlobData::File(p) => {
                let mut f = std::fs::File::open(&p).map_err(io(format!("reading {}", p.display())))?;
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let n = read_full(&mut f, &mut buf).map_err(io(format!("reading {}", p.display())))?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    chunks.push(buf);
                }
            }
        }
        let total: i64 = chunks.iter().map(|c| c.len() as i64).sum();
        if total != d.size_bytes {
            return Err(Error::Invalid(format!(
                "blob {} changed while it was uploaded ({total} bytes now)",
                digest_string(d)
            )));
        }
        let n = chunks.len();
        let mut offset = 0i64;
        let reqs: Vec<WriteRequest> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, data)| {
                let r = WriteRequest {
                    resource_name: if i == 0 { name.clone() } else { String::new() },
                    write_offset: offset,
                    finish_write: i + 1 == n,
                    data,
                };
                offset += r.data.len() as i64;
                r
            })
            .collect();
        let mut bs = ByteStreamClient::new(self.channel.clone());
        let r = bs
            .write(self.req(futures_util::stream::iter(reqs)))
            .await
            .map_err(|s| self.status("ByteStream.Write", s))?;
        let committed = r.into_inner().committed_size;
        if committed != d.size_bytes {
            return Err(Error::Rpc {
                url: self.shown.clone(),
                what: format!("ByteStream.Write of {}", digest_string(d)),
                code: tonic::Code::DataLoss,
                message: format!("the server committed {committed} bytes"),
            });
        }
        Ok(())
    }

    /// The blobs `digests`, each checked against its digest.
    pub async fn read_blobs(&self, digests: &[Digest]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(digests.len());
        let mut cas = ContentAddressableStorageClient::new(self.channel.clone());
        let mut i = 0;
        while i < digests.len() {
            // The empty blob is in every CAS by definition: nothing to ask.
            if digests[i] == crate::digest_of(b"") {
                out.push(vec![]);
                i += 1;
                continue;
            }
            if digests[i].size_bytes <= 0 {
                return Err(Error::Invalid(format!(
                    "blob digest {} has no size but is not the empty blob",
                    digest_string(&digests[i])
                )));
            }
            if digests[i].size_bytes > BATCH_BLOB_MAX {
                out.push(self.read_stream(&digests[i]).await?);
                i += 1;
                continue;
            }
            let mut j = i;
            let mut bytes = 0;
            while j < digests.len()
                && digests[j].size_bytes > 0
                && digests[j].size_bytes <= BATCH_BLOB_MAX
                && bytes + digests[j].size_bytes <= BATCH_BYTES_MAX
            {
                bytes += digests[j].size_bytes;
                j += 1;
            }
            let mut seen = BTreeSet::new();
            let r = cas
                .batch_read_blobs(
                    self.req(proto::BatchReadBlobsRequest {
                        instance_name: self.instance.clone(),
                        // Once each: servers answer a repeated digest once.
                        digests: digests[i..j]
                            .iter()
                            .filter(|d| seen.insert(d.hash.clone()))
                            .cloned()
                            .collect(),
                        acceptable_compressors: vec![],
                        digest_function: Self::sha256(),
                    }),
                )
                .await
                .map_err(|s| self.status("BatchReadBlobs", s))?;
            let mut responses = r.into_inner().responses;
            let mut read: Vec<(String, Vec<u8>)> = vec![];
            for want in &digests[i..j] {
                if let Some((_, data)) = read.iter().find(|(h, _)| *h == want.hash) {
                    out.push(data.clone());
                    continue;
                }
                let pos = responses
                    .iter()
                    .position(|r| r.digest.as_ref().is_some_and(|d| d.hash == want.hash))
                    .ok_or_else(|| Error::Missing {
                        url: self.shown.clone(),
                        digest: digest_string(want),
                    })?;
                let resp = responses.swap_remove(pos);
                match resp.status {
                    Some(st) if st.code == tonic::Code::NotFound as i32 => {
                        return Err(Error::Missing {
                            url: self.shown.clone(),
                            digest: digest_string(want),
                        })
                    }
                    Some(st) if st.code != 0 => {
                        return Err(Error::Rpc {
                            url: self.shown.clone(),
                            what: format!("BatchReadBlobs of {}", digest_string(want)),
                            code: tonic::Code::from(st.code),
                            message: st.message,
                        })
                    }
                    _ => {}
                }
                self.check(want, &resp.data)?;
                read.push((want.hash.clone(), resp.data.clone()));
                out.push(resp.data);
            }
            i = j;
        }
        Ok(out)
    }

    /// One blob, checked against its digest.
    pub async fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        Ok(self.read_blobs(std::slice::from_ref(d)).await?.remove(0))
    }

    fn check(&self, want: &Digest, data: &[u8]) -> Result<()> {
        let found = hex::encode(sha2::Sha256::digest(data));
        if found != want.hash || data.len() as i64 != want.size_bytes {
            return Err(Error::Corrupt {
                url: self.shown.clone(),
                digest: digest_string(want),
                found: format!("{found} over {} bytes", data.len()),
            });
        }
        Ok(())
    }

    async fn read_stream(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut bs = ByteStreamClient::new(self.channel.clone());
        let name = self.resource(format!("blobs/{}/{}", d.hash, d.size_bytes));
        let what = format!("ByteStream.Read of {}", digest_string(d));
        let mut stream = bs
            .read(self.req(ReadRequest {
                resource_name: name,
                read_offset: 0,
                read_limit: 0,
            }))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => Error::Missing {
                    url: self.shown.clone(),
                    digest: digest_string(d),
                },
                _ => self.status(&what, s),
            })?
            .into_inner();
        let mut data = Vec::with_capacity(d.size_bytes.clamp(0, 1 << 30) as usize);
        while let Some(chunk) = stream.message().await.map_err(|s| self.status(&what, s))? {
            data.extend_from_slice(&chunk.data);
            if data.len() as i64 > d.size_bytes {
                break;
            }
        }
        self.check(d, &data)?;
        Ok(data)
    }

    /// Writes blob `d` to `path` (created new), checked against its digest.
    pub async fn read_blob_to_file(&self, d: &Digest, path: &Path) -> Result<()> {
        let data = self.read_blob(d).await?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io(format!("creating {}", path.display())))?;
        f.write_all(&data).map_err(io(format!("writing {}", path.display())))
    }

    /// The ActionCache's result for `action`, None when it has none.
    pub async fn get_action_result(&self, action: &Digest) -> Result<Option<proto::ActionResult>> {
        let mut ac = ActionCacheClient::new(self.channel.clone());
        match ac
            .get_action_result(self.req(proto::GetActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(action.clone()),
                inline_stdout: false,
                inline_stderr: false,
                inline_output_files: vec![],
                digest_function: Self::sha256(),
            }))
            .await
        {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.status("GetActionResult", s)),
        }
    }

    /// Records `result` for `action` in the ActionCache.
    pub async fn update_action_result(&self, action: &Digest, result: proto::ActionResult) -> Result<()> {
        let mut ac = ActionCacheClient::new(self.channel.clone());
        ac.update_action_result(self.req(proto::UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action.clone()),
            action_result: Some(result),
            results_cache_policy: None,
            digest_function: Self::sha256(),
        }))
        .await
        .map_err(|s| self.status("UpdateActionResult", s))?;
        Ok(())
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A fresh id for a ByteStream upload (UUID-shaped, from the time, the
/// process and a counter: it only has to be unique per upload).
fn upload_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let h = sha2::Sha256::digest(format!(
        "{t}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let x = hex::encode(&h[..16]);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// An error and its causes on one line (tonic's transport errors nest the
/// useful part, e.g. "Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Whether a transport error is TLS refusing the connection rather than a
/// server that is not there. With TLS 1.3 a server that refuses the
/// client's certificate (or its absence) closes the connection right after
/// the handshake: a broken pipe, a reset or an EOF without close_notify
/// on a grpcs:// connection.
fn tls_failure(message: &str) -> bool {
    [
        "certificate",
        "handshake",
        "CertificateRequired",
        "UnknownIssuer",
        "broken pipe",
        "connection reset",
        // or as rustls's unexpected EOF, depending on timing
        "close_notify",
    ]
    .iter()
    .any(|t| message.contains(t))
}
