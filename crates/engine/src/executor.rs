//! Executors: what runs a hermetic step. Every executor takes the same
//! `StepSpec` (built by [`sandbox_spec`] for build steps and `farm exec`
//! alike) and returns the same `Outcome`: the native Linux sandbox, or the
//! same step as a container through the Docker Engine API (for machines
//! without user namespaces, and for Docker-only CI runners). A remote
//! executor joins them behind the same trait.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use farm_sandbox::{Bind, ContainerBackend, Outcome, RootSpec, Stdio, StepSpec};
use farm_store::StoreEntry;

use crate::toolchain::Toolchain;

/// Which sandbox the user asked for.
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

/// Runs one hermetic step.
pub trait Executor: Send + Sync {
    /// For messages: `native`, `container`, …
    fn name(&self) -> &'static str;
    fn run(&self, spec: &StepSpec) -> Result<Outcome>;
    /// `run`, killing the step soon after `cancel` is set (a remote
    /// worker's lease taken away). Executors that cannot cancel run it out.
    fn run_cancellable(&self, spec: &StepSpec, _cancel: &std::sync::atomic::AtomicBool) -> Result<Outcome> {
        self.run(spec)
    }
}

/// The native Linux sandbox (namespaces, pivot_root, Landlock).
pub struct NativeSandbox;

impl Executor for NativeSandbox {
    fn name(&self) -> &'static str {
        "native"
    }

    fn run(&self, spec: &StepSpec) -> Result<Outcome> {
        farm_sandbox::run(spec).context("running the step in the native sandbox")
    }

    fn run_cancellable(&self, spec: &StepSpec, cancel: &std::sync::atomic::AtomicBool) -> Result<Outcome> {
        farm_sandbox::Sandbox::default()
            .run_cancellable(spec, cancel)
            .context("running the step in the native sandbox")
    }
}

/// A container engine speaking the Docker Engine API (Docker, Podman).
pub struct ContainerEngine(ContainerBackend);

impl Executor for ContainerEngine {
    fn name(&self) -> &'static str {
        "container"
    }

    fn run(&self, spec: &StepSpec) -> Result<Outcome> {
        self.0.run(spec).context("running the step in a container")
    }
}

/// The executor for `choice`; `Auto` takes the native sandbox where it works.
pub fn select(choice: SandboxChoice) -> Result<Arc<dyn Executor>> {
    let container = || -> Result<Arc<dyn Executor>> {
        let host = std::env::var("DOCKER_HOST").ok();
        let c = ContainerBackend::connect(host.as_deref())
            .context("connecting to the container engine (--sandbox container)")?;
        Ok(Arc::new(ContainerEngine(c)))
    };
    match choice {
        SandboxChoice::Native => Ok(Arc::new(NativeSandbox)),
        SandboxChoice::Container => container(),
        SandboxChoice::Auto => match farm_sandbox::probe() {
            Ok(()) => Ok(Arc::new(NativeSandbox)),
            Err(native) => match container() {
                Ok(b) => Ok(b),
                Err(engine) => bail!(
                    "no sandbox is available here:\n  native: {native}\n  container: {engine:#}\nhint: enable user namespaces, or start Docker or Podman's API service"
                ),
            },
        },
    }
}

/// The limits of every sandboxed step from farm.toml's `[limits]`: `memory`
/// for the whole step and `processes` (a cgroup where the sandbox gets one,
/// else RLIMIT_AS and RLIMIT_NPROC), the sandbox's defaults for the rest.
pub fn step_limits(limits: &farm_project::Limits) -> farm_sandbox::Limits {
    farm_sandbox::Limits {
        memory: limits.memory,
        nproc: limits.processes,
        ..farm_sandbox::Limits::default()
    }
}

/// The sandbox spec of every hermetic step and of `farm exec`/`shell`: the
/// toolchain's root and entries plus `inputs`, each read-only at its
/// `/farm/store` path, the toolchain's fixed environment, no network,
/// hostname `farm`, uid/gid 1000, the project's `[limits]`. Callers add
/// their own binds (`/out`, the project), variables, working directory and
/// timeout.
pub fn sandbox_spec(
    tc: &Toolchain,
    inputs: &[StoreEntry],
    argv: Vec<String>,
    source_date_epoch: u64,
    stdio: Stdio,
    limits: &farm_project::Limits,
) -> StepSpec {
    let mut binds: Vec<Bind> = tc
        .inputs
        .iter()
        .chain(inputs.iter())
        .map(|e| Bind::read_only(&e.path, Toolchain::sandbox_path(e)))
        .collect();
    binds.sort_by(|a, b| a.target.cmp(&b.target));
    binds.dedup_by(|a, b| a.target == b.target);
    let mut spec = StepSpec::new(RootSpec::Dir(tc.root.path.clone()), argv, stdio);
    spec.binds = binds;
    spec.env = tc.env(source_date_epoch);
    spec.hostname = "farm".into();
    spec.limits = step_limits(limits);
    spec
}

/// Where `farm exec` and `farm shell` see the project (read-only).
pub const EXEC_PROJECT_DIR: &str = "/build/src";

/// `farm exec`/`shell`: the build steps' sandbox with the project read-only
/// at /build/src as the working directory and the caller's terminal.
pub fn exec_spec(
    tc: &Toolchain,
    project_root: &std::path::Path,
    argv: Vec<String>,
    source_date_epoch: u64,
    timeout: Option<std::time::Duration>,
    limits: &farm_project::Limits,
) -> StepSpec {
    let mut spec = sandbox_spec(tc, &[], argv, source_date_epoch, Stdio::Inherit, limits);
    spec.binds.push(Bind::read_only(project_root, EXEC_PROJECT_DIR));
    spec.cwd = PathBuf::from(EXEC_PROJECT_DIR);
    spec.timeout = timeout;
    spec
}

/// Where script steps find the `--secret` files in the sandbox.
pub const SECRETS_DIR: &str = "/run/secrets";

/// Secrets shorter than this are not searched for in step outputs: a few
/// bytes occur by chance in any bundle. Logs are scrubbed of every secret.
pub const SECRET_OUTPUT_CHECK_MIN: usize = 8;

/// The `--secret`s of one build as files: `<dir>/secrets/NAME`, mode 0400,
/// owned by the user the step runs as, in a 0700 directory on a tmpfs
/// (/dev/shm) where there is one, outside the store and the project. The
/// directory is removed when the build ends. Step logs are captured here
/// first and scrubbed of the secret values before they reach the store.
pub struct SecretFiles {
    dir: tempfile::TempDir,
    /// Sorted.
    names: Vec<String>,
    /// (name, value) as given.
    secrets: Vec<(String, Vec<u8>)>,
}

impl SecretFiles {
    /// `None` when there are no secrets. `container`: the step's uid is the
    /// engine's, so the files are given to uid 1000 (as root) or made
    /// readable inside their private directory (otherwise).
    pub fn write(secrets: &[crate::build::Secret], container: bool) -> Result<Option<SecretFiles>> {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        if secrets.is_empty() {
            return Ok(None);
        }
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("farm-secrets-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a directory for the build's secrets in {}", base.display()))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let files = dir.path().join("secrets");
        std::fs::create_dir(&files)?;
        std::fs::create_dir(dir.path().join("logs"))?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let give = |path: &std::path::Path| -> Result<()> {
            let uid = farm_sandbox::BUILD_UID;
            std::os::unix::fs::chown(path, Some(uid), Some(uid))
                .with_context(|| format!("giving {} to the step's uid {uid}", path.display()))
        };
        for s in secrets {
            let path = files.join(&s.name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .with_context(|| format!("writing secret {} to {}", s.name, path.display()))?;
            f.write_all(&s.value)?;
            drop(f);
            if container && root {
                give(&path)?;
            } else if container {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
            }
        }
        if container && root {
            give(&files)?;
        }
        let dir_mode = if container && !root { 0o555 } else { 0o500 };
        std::fs::set_permissions(&files, std::fs::Permissions::from_mode(dir_mode))?;
        let mut names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
        names.sort();
        Ok(Some(SecretFiles {
            dir,
            names,
            secrets: secrets.iter().map(|s| (s.name.clone(), s.value.clone())).collect(),
        }))
    }

    /// The secrets' names, sorted (they are part of step keys; values never are).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The host directory holding one file per secret.
    pub fn host_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// The read-only bind of the secret files at [`SECRETS_DIR`].
    pub fn bind(&self) -> Bind {
        Bind::read_only(self.host_dir(), SECRETS_DIR)
    }

    /// Where a step's log is captured before [`SecretFiles::scrub_log`].
    pub fn capture_log(&self, file_name: &std::ffi::OsStr) -> PathBuf {
        self.dir.path().join("logs").join(file_name)
    }

    /// Each secret's byte strings to look for: the value, and the value
    /// without a trailing newline (what `$(cat file)` gives), longest first.
    fn needles(&self, min: usize) -> Vec<(&[u8], &str)> {
        let mut needles: Vec<(&[u8], &str)> = Vec::new();
        for (name, v) in &self.secrets {
            let trimmed = v.strip_suffix(b"\n").map(|t| t.strip_suffix(b"\r").unwrap_or(t));
            for needle in std::iter::once(v.as_slice()).chain(trimmed) {
                if !needle.is_empty() && needle.len() >= min {
                    needles.push((needle, name));
                }
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        needles.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        needles
    }

    /// `text` with every secret value replaced by `[secret NAME]`.
    pub fn scrub(&self, text: &[u8]) -> Vec<u8> {
        let mut out = text.to_vec();
        for (needle, name) in self.needles(1) {
            out = replace_bytes(&out, needle, format!("[secret {name}]").as_bytes());
        }
        out
    }

    /// Writes the captured log `from` to `to` scrubbed, and removes `from`.
    pub fn scrub_log(&self, from: &std::path::Path, to: &std::path::Path) -> Result<()> {
        let text = std::fs::read(from).unwrap_or_default();
        let _ = std::fs::remove_file(from);
        std::fs::write(to, self.scrub(&text)).with_context(|| to.display().to_string())
    }

    /// The first regular file under `dir` (links not followed) that holds a
    /// secret's value of [`SECRET_OUTPUT_CHECK_MIN`] bytes or more: (secret, path).
    pub fn find_in_tree(&self, dir: &std::path::Path) -> Result<Option<(String, PathBuf)>> {
        let needles = self.needles(SECRET_OUTPUT_CHECK_MIN);
        if needles.is_empty() {
            return Ok(None);
        }
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
                let e = e?;
                let ft = e.file_type()?;
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() {
                    let bytes = std::fs::read(e.path()).with_context(|| e.path().display().to_string())?;
                    if let Some((_, name)) = needles.iter().find(|(n, _)| contains(&bytes, n)) {
                        let rel = e.path().strip_prefix(dir).unwrap_or(&e.path()).to_path_buf();
                        return Ok(Some((name.to_string(), rel)));
                    }
                } else if ft.is_symlink() {
                    let target = std::fs::read_link(e.path())?;
                    if let Some((_, name)) = needles
                        .iter()
                        .find(|(n, _)| contains(target.as_os_str().as_encoded_bytes(), n))
                    {
                        let rel = e.path().strip_prefix(dir).unwrap_or(&e.path()).to_path_buf();
                        return Ok(Some((name.to_string(), rel)));
                    }
                }
            }
        }
        Ok(None)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace_bytes(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, value: &str) -> crate::build::Secret {
        crate::build::Secret {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    /// Secret files are 0400 in a 0500 directory inside a private 0700 one,
    /// outside the store; the directory goes when the build drops it.
    #[test]
    fn secret_files_are_private_and_removed_afterwards() {
        use std::os::unix::fs::PermissionsExt as _;
        let files = SecretFiles::write(&[secret("B", "two"), secret("A", "one\n")], false)
            .unwrap()
            .unwrap();
        assert_eq!(files.names(), ["A", "B"]);
        let dir = files.host_dir();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("A")), 0o400);
        assert_eq!(std::fs::read(dir.join("A")).unwrap(), b"one\n");
        assert_eq!(mode(&dir), 0o500);
        assert_eq!(mode(dir.parent().unwrap()), 0o700);
        assert_eq!(files.bind().target, PathBuf::from(SECRETS_DIR));
        assert!(files.bind().read_only);
        drop(files);
        assert!(!dir.exists(), "removed with the build");
        assert!(SecretFiles::write(&[], false).unwrap().is_none());
    }

    /// Logs lose every secret value (with or without its trailing newline,
    /// the longer of two overlapping secrets whole); outputs holding a value
    /// long enough to matter are found, links included.
    #[test]
    fn logs_are_scrubbed_and_outputs_holding_a_secret_are_found() {
        let files = SecretFiles::write(
            &[secret("KEY", "hunter2-long-value\n"), secret("SHORT", "hunter2")],
            false,
        )
        .unwrap()
        .unwrap();
        let log = b"a hunter2-long-value b hunter2 c\nhunter2-long-value\n";
        let scrubbed = String::from_utf8(files.scrub(log)).unwrap();
        assert_eq!(scrubbed, "a [secret KEY] b [secret SHORT] c\n[secret KEY]");

        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir(out.path().join("d")).unwrap();
        std::fs::write(out.path().join("d/ok"), "hunter2 is short and common").unwrap();
        assert_eq!(
            files.find_in_tree(out.path()).unwrap(),
            None,
            "short values are not searched"
        );
        std::fs::write(out.path().join("d/leak"), "x=hunter2-long-value").unwrap();
        assert_eq!(
            files.find_in_tree(out.path()).unwrap(),
            Some(("KEY".to_string(), PathBuf::from("d/leak")))
        );
        std::fs::remove_file(out.path().join("d/leak")).unwrap();
        std::os::unix::fs::symlink("/x/hunter2-long-value", out.path().join("l")).unwrap();
        assert_eq!(
            files.find_in_tree(out.path()).unwrap(),
            Some(("KEY".to_string(), PathBuf::from("l")))
        );
    }

    /// Proves `[limits]` reaches every step's sandbox limits: memory and
    /// processes as configured, "none"/0 as no limit, the rest the sandbox's defaults.
    #[test]
    fn project_limits_become_the_steps_memory_and_process_limits() {
        let l = step_limits(&farm_project::Limits::default());
        assert_eq!((l.memory, l.nproc), (Some(8 << 30), Some(4096)));
        assert_eq!(l.nofile, farm_sandbox::Limits::default().nofile);
        let off = farm_project::Limits {
            memory: None,
            processes: None,
            ..farm_project::Limits::default()
        };
        let l = step_limits(&off);
        assert_eq!((l.memory, l.nproc), (None, None));
    }
}
