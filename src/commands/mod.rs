//! One module per `farm` command; shared steps live in the crate's other modules.

pub mod analyze;
pub mod attest;
pub mod build;
pub mod cache;
pub mod check;
pub mod exec;
pub mod fetch;
pub mod image;
pub mod init;
pub mod lock;
pub mod log;
pub mod optimize;
pub mod types;
pub mod worker;
