//! What farm knows about one project, in one place for the engine and the
//! commands alike: `farm.toml` (schema, parsing, validation, environments),
//! the registry endpoints it and the user's own tool configuration name,
//! the lock's input keys and staleness, and the `.farm/` state paths.
//!
//! It does not resolve, fetch or build anything: `farm-lockfiles` resolves,
//! `farm-engine` builds.

pub mod config;
pub mod endpoints;
pub mod git;
pub mod inputs;
pub mod paths;
pub mod steps;

pub use config::{Config, ConfigError, Limits, Project, CONFIG_FILE, DEFAULT_ENV};
pub use paths::StatePaths;
pub use steps::StepId;

impl Project {
    /// The `.farm/` paths of this project.
    pub fn state(&self) -> StatePaths {
        StatePaths::new(&self.root)
    }
}
