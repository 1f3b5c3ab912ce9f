//! Which sandbox runs steps: the native Linux sandbox, or the same step as a
//! container through the Docker Engine API (for machines without user
//! namespaces, and for Docker-only CI runners).

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use farm_sandbox::{ContainerBackend, Outcome, StepSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxChoice {
    /// Native where user namespaces work, else a container.
    Auto,
    /// The native Linux sandbox.
    Native,
    /// A container via DOCKER_HOST or the default Docker/Podman socket.
    Container,
}

#[derive(Clone)]
pub enum Backend {
    Native,
    Container(Arc<ContainerBackend>),
}

impl Backend {
    pub fn select(choice: SandboxChoice) -> Result<Backend> {
        let container = || -> Result<Backend> {
            let host = std::env::var("DOCKER_HOST").ok();
            let c = ContainerBackend::connect(host.as_deref())
                .context("connecting to the container engine (--sandbox container)")?;
            Ok(Backend::Container(Arc::new(c)))
        };
        match choice {
            SandboxChoice::Native => Ok(Backend::Native),
            SandboxChoice::Container => container(),
            SandboxChoice::Auto => match farm_sandbox::probe() {
                Ok(()) => Ok(Backend::Native),
                Err(native) => match container() {
                    Ok(b) => Ok(b),
                    Err(engine) => bail!(
                        "no sandbox is available here:\n  native: {native}\n  container: {engine:#}\nhint: enable user namespaces, or start Docker or Podman's API service"
                    ),
                },
            },
        }
    }

    pub fn run(&self, spec: &StepSpec) -> Result<Outcome> {
        match self {
            Backend::Native => farm_sandbox::run(spec).context("running the step in the native sandbox"),
            Backend::Container(c) => c.run(spec).context("running the step in a container"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Container(_) => "container",
        }
    }
}
