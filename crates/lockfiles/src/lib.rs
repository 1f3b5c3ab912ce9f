//! `farm.lock` and everything that fills it: the lock format, integrity
//! digests, the user's registry endpoints, and one resolver per ecosystem
//! (Node/npm, PyPI, Debian, OCI/Ollama registries).
//!
//! This crate decides *what* a build may use and pins it; it does not keep
//! a store or run builds (see `farm-store` and the `farm` binary).

pub mod debian;
pub mod endpoints;
pub mod http;
pub mod integrity;
pub mod lock;
pub mod mirror;
pub mod npm;
pub mod oci;
pub mod pypi;
pub mod redact;
pub mod requirements;

pub use integrity::Integrity;
pub use lock::{Lock, LockedArtifact, Unpack};
