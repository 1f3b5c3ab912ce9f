//! What a farm release publishes beside its outputs, in the formats other
//! people's tools read: SBOMs (SPDX 2.3 and CycloneDX 1.6 JSON) made from
//! farm.lock and the build manifest, SLSA v1 provenance as an in-toto
//! Statement, DSSE envelopes signed with ECDSA P-256 or Ed25519 keys
//! (PKCS#8 PEM or cosign's encrypted key file), and the checks
//! `farm verify-attestation` runs on them. Spec: `spec/attestations.md`.
//!
//! It reads a lock, a manifest and (for licenses) store entries; it does
//! not build, fetch or open the store itself: the engine hands it paths.

pub mod cyclonedx;
pub mod diff;
pub mod dsse;
pub mod keys;
pub mod license;
pub mod provenance;
pub mod purl;
pub mod release;
pub mod sbom;
pub mod spdx;
mod time;
pub mod verify;
mod zip;

pub use dsse::Envelope;
pub use keys::{KeyType, PrivateKey, PublicKey};
pub use release::Release;
pub use sbom::{Sbom, SbomInputs, Scope};
pub use time::iso8601;

/// farm's version, as documents name their creator.
pub const FARM_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A file's contents are not what was expected; the message says what was.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl std::fmt::Display, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_prefixed(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
