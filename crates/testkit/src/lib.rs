//! Test servers and helpers shared by the tests of every farm crate and of
//! the `farm` binary: a free loopback port and waiting for one, a real
//! `docker-registry` (plain or behind htpasswd auth), Podman's
//! Docker-compatible API service and Docker Engine (`dockerd`), each on a
//! socket and storage of its own, a local HTTP server that fails or stalls
//! on purpose, the store the tests share between runs, and one way for a
//! test to skip when something it needs is missing. Each server is started
//! on loopback, waited for with a deadline, and stopped and cleaned up when
//! its guard drops.
//!
//! It is a dev-dependency only: nothing here is part of farm, and no crate's
//! `src/` may depend on it. It is not for helpers that know one crate's
//! types (sample image specs, sandbox steps, the `farm` command line): those
//! stay in that crate's own `tests/` tree.
//!
//! # Skipping a test honestly
//!
//! A test that needs a tool, root or a service starts with
//!
//! ```no_run
//! # fn a_test() {
//! if !farm_testkit::require_tool("docker-registry") {
//!     return;
//! }
//! # }
//! ```
//!
//! When the requirement is met this is `true` and the test runs. When it is
//! not:
//!
//! - with `CI=true` in the environment the test fails, naming what is
//!   missing and that `scripts/install-deps` installs it: a skipped check
//!   in CI would be a false green;
//! - elsewhere it writes `SKIPPED <test name>: <reason>` to the process's
//!   stderr and returns `false`, so the test returns at once. libtest
//!   reports such a test as `ok`, and it captures `eprintln!` of passing
//!   tests, so the line is written to the stderr file descriptor itself,
//!   which libtest does not capture: it shows with or without
//!   `--nocapture`. The name is the test thread's, which libtest sets to the
//!   test's path.
//!
//! [`require_tool`] looks for a program on `PATH`, [`require_root`] for
//! root, and [`require`] takes any condition with its own reason.

pub mod buildgrid;
pub mod buildgrid_exec;
mod docker;
mod http;
mod net;
pub mod pki;
mod podman;
mod registry;
mod skip;
mod store;

pub use docker::{DockerService, EngineKind, EngineService};
pub use http::{HttpServer, Reply};
pub use net::{free_port, wait_for_port, wait_until};
pub use podman::{podman_command, PodmanService};
pub use registry::Registry;
pub use skip::{require, require_root, require_tool};
pub use store::shared_farm_home;
