//! Content integrity: the one place digests are parsed, printed and checked.
//!
//! The lock writes every integrity as `<algo>:<lowercase hex>` (e.g. `sha256:ab12…`),
//! whatever form the source gave it in (npm's SRI `sha512-<base64>`, Debian's hex
//! SHA256, OCI's `sha256:<hex>`), so diffs and greps see one shape.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

/// An expected digest of an artifact's bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Integrity {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid integrity {found:?}: expected `sha256:<64 hex>`, `sha512:<128 hex>` or an SRI string like `sha512-<base64>`")]
pub struct IntegrityParseError {
    pub found: String,
}

impl Integrity {
    pub fn sha256(digest: [u8; 32]) -> Self {
        Integrity {
            algorithm: Algorithm::Sha256,
            digest: digest.to_vec(),
        }
    }

    /// Parses `algo:hex`, or an SRI string (`sha512-<base64>`; the strongest of
    /// several space-separated SRI hashes is kept, as npm does).
    pub fn parse(s: &str) -> Result<Self, IntegrityParseError> {
        let err = || IntegrityParseError { found: s.to_string() };
        let s = s.trim();
        if let Some((algo, hexpart)) = s.split_once(':') {
            let algorithm = parse_algo(algo).ok_or_else(err)?;
            let digest = hex::decode(hexpart).map_err(|_| err())?;
            if digest.len() != algorithm.digest_len() {
                return Err(err());
            }
            return Ok(Integrity { algorithm, digest });
        }
        let mut best: Option<Integrity> = None;
        for part in s.split_whitespace() {
            let (algo, b64) = part.split_once('-').ok_or_else(err)?;
            let Some(algorithm) = parse_algo(algo) else { continue };
            let b64 = b64.split('?').next().unwrap_or_default();
            let digest = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| err())?;
            if digest.len() != algorithm.digest_len() {
                return Err(err());
            }
            if best.as_ref().is_none_or(|b| algorithm > b.algorithm) {
                best = Some(Integrity { algorithm, digest });
            }
        }
        best.ok_or_else(err)
    }

    pub fn hex(&self) -> String {
        hex::encode(&self.digest)
    }

    /// The SRI form npm's cache and package-lock use.
    pub fn to_sri(&self) -> String {
        format!(
            "{}-{}",
            self.algorithm.name(),
            base64::engine::general_purpose::STANDARD.encode(&self.digest)
        )
    }

    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }

    /// Hashes `bytes` with this integrity's algorithm and compares.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish() == *self
    }
}

fn parse_algo(s: &str) -> Option<Algorithm> {
    match s {
        "sha256" => Some(Algorithm::Sha256),
        "sha512" => Some(Algorithm::Sha512),
        _ => None,
    }
}

impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex())
    }
}

impl fmt::Debug for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Integrity {
    type Err = IntegrityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Integrity::parse(s)
    }
}

impl Serialize for Integrity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Integrity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Integrity::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Streaming hasher for one algorithm.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }
    pub fn finish(self) -> Integrity {
        match self {
            Hasher::Sha256(h) => Integrity {
                algorithm: Algorithm::Sha256,
                digest: h.finalize().to_vec(),
            },
            Hasher::Sha512(h) => Integrity {
                algorithm: Algorithm::Sha512,
                digest: h.finalize().to_vec(),
            },
        }
    }
}

/// SHA-256 of `bytes` as an [`Integrity`].
pub fn sha256_of(bytes: &[u8]) -> Integrity {
    Integrity::sha256(sha2::Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sri_and_hex_forms_agree() {
        // sha512 of the empty string.
        let sri = "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
        let i = Integrity::parse(sri).unwrap();
        assert_eq!(i.algorithm, Algorithm::Sha512);
        assert!(i.matches(b""));
        assert_eq!(i.to_sri(), sri);
        let again = Integrity::parse(&i.to_string()).unwrap();
        assert_eq!(again, i);
    }

    #[test]
    fn strongest_sri_wins_and_bad_input_is_rejected() {
        let two = "sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk= sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let i = Integrity::parse(two).unwrap();
        assert_eq!(i.algorithm, Algorithm::Sha256);
        assert!(i.matches(b""));
        assert!(Integrity::parse("sha256:abcd").is_err());
        assert!(Integrity::parse("md5-xyz").is_err());
        assert_eq!(
            sha256_of(b"").to_string(),
            format!(
                "sha256:{}",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
        );
    }
}
