//! Reads the lockfiles apps already have into farm.lock entries, without a
//! network (except [`js::JsInstall::pin_from_registry`], for the formats
//! that do not record the npm tarball's integrity). Spec: `spec/lockfiles.md`.
//!
//! - [`js`]: finds the project's JS lockfile (walking up to a workspace
//!   root) and reads package-lock.json v2/v3, pnpm-lock.yaml v6/v9,
//!   yarn.lock (classic v1 and Berry) and bun.lock into the install paths and
//!   tarballs farm installs (`Vec<NpmPackage>`), laying graph-based locks out
//!   the way npm hoists.
//! - [`py`]: reads uv.lock, poetry.lock and pylock.toml (PEP 751) into a
//!   target-independent model, then picks one wheel per package for a target
//!   interpreter and platform (`Vec<PythonWheel>`).

pub mod error;
pub mod js;
pub mod names;
pub mod py;

pub use error::LockReadError;
