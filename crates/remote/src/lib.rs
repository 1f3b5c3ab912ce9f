//! farm's client of the Remote Execution API (REAPI v2), the protocol of
//! Bazel-compatible remote caches and executors (BuildGrid, Buildbarn,
//! BuildBuddy, NativeLink, …). farm plugs into those servers instead of
//! running one of its own: this crate speaks to them.
//!
//! It gives:
//! - [`RemoteConfig`]: where the server is (`grpc://` or `grpcs://`), the
//!   instance name, a bearer token, TLS files;
//! - [`Client`]: Capabilities, the ContentAddressableStorage
//!   (FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs), ByteStream
//!   read/write for blobs too large for a batch, and the ActionCache
//!   (GetActionResult, UpdateActionResult). Every blob read is checked
//!   against its SHA-256 digest;
//! - [`tree`]: REAPI `Directory` Merkle trees of directories on disk, and
//!   the checks and writes that turn an output `Tree` back into files.
//!
//! It knows nothing of farm's steps or store: the engine maps a step to an
//! `Action` (spec/remote.md) and decides what to read and write. The
//! message types come pre-generated from the published protos
//! (`bazel-remote-apis`), re-exported as [`proto`] and [`bytestream`].

pub mod bots;
mod client;
pub mod execution;
mod materialize;
pub mod tree;

use sha2::Digest as _;

pub use bazel_remote_apis::build::bazel::remote::execution::v2 as proto;
pub use bazel_remote_apis::google as bazel_google;
pub use bazel_remote_apis::google::bytestream;
pub use client::{BlobData, Client, RemoteConfig};
pub use proto::Digest;

/// What can go wrong talking to a remote cache. Messages carry the
/// server's address with any credentials removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("remote cache address {url:?}: {reason}\nhint: use grpc://HOST:PORT or grpcs://HOST:PORT")]
    Address { url: String, reason: String },
    #[error("cannot reach the remote cache at {url}: {reason}\nhint: is the server running and the address right?")]
    Unreachable { url: String, reason: String },
    #[error("remote cache at {url} refused {what}: permission denied ({message})\nhint: check the bearer token (FARM_REMOTE_TOKEN or [remote] token-env)")]
    Auth { url: String, what: String, message: String },
    #[error("remote cache at {url}: TLS failed: {reason}\nhint: check the TLS files: [remote] ca-cert (the CA that signed the server's certificate), client-cert and client-key (when the server wants a client certificate)")]
    Tls { url: String, reason: String },
    #[error("remote cache at {url}: {what} failed: {code:?}: {message}")]
    Rpc {
        url: String,
        what: String,
        code: tonic::Code,
        message: String,
    },
    #[error("remote cache at {url}: blob {digest} is not in the CAS")]
    Missing { url: String, digest: String },
    #[error("remote cache at {url}: blob {digest} has the wrong content (its SHA-256 is {found})")]
    Corrupt { url: String, digest: String, found: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The REAPI digest (SHA-256, size) of `data`.
pub fn digest_of(data: &[u8]) -> Digest {
    Digest {
        hash: hex::encode(sha2::Sha256::digest(data)),
        size_bytes: data.len() as i64,
    }
}

/// A message's wire bytes and their digest: how Actions, Commands and
/// Directories are named in the CAS.
pub fn encode<M: prost::Message>(msg: &M) -> (Digest, Vec<u8>) {
    let bytes = msg.encode_to_vec();
    (digest_of(&bytes), bytes)
}

/// A message from its wire bytes (`what` names it in the error).
pub fn decode<M: prost::Message + Default>(bytes: &[u8], what: &str) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::Invalid(format!("decoding {what}: {e}")))
}

/// `HASH/SIZE`, the form REAPI resource names and farm's messages use.
pub fn digest_string(d: &Digest) -> String {
    format!("{}/{}", d.hash, d.size_bytes)
}

/// Parses `HASH/SIZE` (64 lowercase hex digits, a size).
pub fn parse_digest(s: &str) -> Option<Digest> {
    let (hash, size) = s.split_once('/')?;
    let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let size: i64 = size.parse().ok().filter(|n| *n >= 0)?;
    ok.then(|| Digest {
        hash: hash.to_string(),
        size_bytes: size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The empty blob's digest is the well-known SHA-256 of nothing, and
    /// digests round-trip through their string form.
    #[test]
    fn digests() {
        let d = digest_of(b"");
        assert_eq!(
            d.hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(parse_digest(&digest_string(&d)), Some(d));
        assert_eq!(parse_digest("abc/1"), None);
        assert_eq!(
            parse_digest("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855/0"),
            None
        );
    }
}
