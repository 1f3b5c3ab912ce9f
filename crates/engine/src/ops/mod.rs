//! The operations the `farm` commands call, one module each (cargo's `ops/`):
//! each takes an options struct and does the work; the binary only parses
//! arguments into those options and prints.

pub mod analyze;
pub mod attest;
pub mod cache;
pub mod check;
pub mod exec;
pub mod fetch;
pub mod image;
pub mod lock;
pub mod log;
pub mod optimize;
pub mod types;
