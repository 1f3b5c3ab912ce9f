//! farm's build engine. It turns a project (farm.toml + farm.lock) into
//! steps, runs them with an action cache through an executor (the native
//! sandbox, a container, the host for non-hermetic builds), and writes the
//! outputs and their manifest atomically. The operations the commands call
//! — build, watch, check/verify, exec — live here; the `farm` binary only
//! parses arguments and prints.
//!
//! It is not a resolver (`farm-lockfiles`), a store (`farm-store`), a
//! sandbox (`farm-sandbox`) or an image writer (`farm-images`): it wires
//! them. It reports progress through the `Reporter` it is given.

pub mod build;
pub mod compare;
pub mod deps;
pub mod executor;
pub mod images;
pub mod lockcheck;
pub mod manifest;
pub mod models;
pub mod ops;
pub mod optimize_step;
pub mod output;
pub mod pip_runner;
pub mod plan;
pub mod pnpm_layout;
pub mod remote_cache;
pub mod remote_fetch;
pub mod reporter;
pub mod schedule;
pub mod scripts;
pub mod source;
pub mod statcache;
pub mod step;
pub mod toolchain;
pub mod watch;
pub mod worker;

use std::path::PathBuf;

pub use build::{build_project, BuildEnv, BuildOptions, Built, Target, Variation};
pub use executor::{Executor, SandboxChoice};
pub use reporter::Reporter;

/// What every operation is given: where the project and the store are,
/// how to report, and which sandbox runs steps.
pub struct Context {
    pub project_dir: PathBuf,
    pub farm_home: PathBuf,
    pub reporter: Reporter,
    pub sandbox: SandboxChoice,
}
