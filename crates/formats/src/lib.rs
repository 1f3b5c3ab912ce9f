//! Small textual formats that every farm crate shares, defined once so that
//! they cannot drift apart: byte sizes as users write them on the command
//! line (`--size-limit 500KiB`, `--max-size 10GB`) and as farm prints them
//! back ([`size`]), and the canonical JSON that digest-bearing documents
//! (the build manifest, OCI configs and manifests, the lock's input keys)
//! are hashed and written in ([`canonical_json`]), and the RFC 3339
//! timestamps outputs carry ([`timestamp`]), and durations (`--older-than
//! 30d`, farm.toml `[cache] ttl`) ([`duration`]).
//!
//! It is not a utils bag: a format belongs here only when more than one
//! crate reads or writes it and its exact text is part of farm's contract.
//! The file formats themselves (farm.toml, farm.lock, the manifest) live
//! with the crate that owns them.

pub mod canonical_json;
pub mod duration;
pub mod size;
pub mod timestamp;
