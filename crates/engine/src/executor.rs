//! Which sandbox runs steps: the native Linux sandbox, or the same step as a
//! container through the Docker Engine API (for machines without user
//! namespaces, and for Docker-only CI runners).

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use farm_sandbox::{ContainerBackend, Outcome, StepSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SandboxChoice {
    /// Native where user namespaces work, else a container.
    Auto,
    /// The native Linux sandbox.
    Native,
    /// A container via DOCKER_HOST or the default Docker/Podman socket.
    Container,
}

#[derive(Clone)]
pub enum Executor {
    Native,
    Container(Arc<ContainerBackend>),
}

impl Executor {
    pub fn select(choice: SandboxChoice) -> Result<Executor> {
        let container = || -> Result<Executor> {
            let host = std::env::var("DOCKER_HOST").ok();
            let c = ContainerBackend::connect(host.as_deref())
                .context("connecting to the container engine (--sandbox container)")?;
            Ok(Executor::Container(Arc::new(c)))
        };
        match choice {
            SandboxChoice::Native => Ok(Executor::Native),
            SandboxChoice::Container => container(),
            SandboxChoice::Auto => match farm_sandbox::probe() {
                Ok(()) => Ok(Executor::Native),
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
            Executor::Native => farm_sandbox::run(spec).context("running the step in the native sandbox"),
            Executor::Container(c) => c.run(spec).context("running the step in a container"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Executor::Native => "native",
            Executor::Container(_) => "container",
        }
    }
}
