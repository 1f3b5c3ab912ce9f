//! Where a project keeps farm's state: everything under `.farm/` in the
//! project, named once here so the engine and the commands agree.

use std::path::{Path, PathBuf};

/// The directory of farm's per-project state (never a build input).
pub const STATE_DIR: &str = ".farm";

/// The `.farm/` paths of one project.
#[derive(Debug, Clone)]
pub struct StatePaths {
    root: PathBuf,
}

impl StatePaths {
    pub fn new(project_root: &Path) -> StatePaths {
        StatePaths {
            root: project_root.join(STATE_DIR),
        }
    }

    /// `.farm/`
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The default output directory of `farm build`.
    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    /// What the last build ran and used (`farm log`, `farm cache clean`).
    pub fn last_build(&self) -> PathBuf {
        self.root.join("last-build.json")
    }

    /// Where `farm check` keeps the rounds it built.
    pub fn check(&self) -> PathBuf {
        self.root.join("check")
    }

    /// Where `farm verify` rebuilds.
    pub fn verify(&self) -> PathBuf {
        self.root.join("verify")
    }

    /// Where `farm types` builds the types.
    pub fn types(&self) -> PathBuf {
        self.root.join("types")
    }

    /// The default trace file of `farm build --profile`.
    pub fn profile(&self) -> PathBuf {
        self.root.join("profile.json")
    }
}
