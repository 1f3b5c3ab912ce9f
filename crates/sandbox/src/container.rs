//! The container backend: runs the same [`StepSpec`] as the native sandbox,
//! but in a container of a Docker-compatible engine (Docker, or Podman's API
//! service) driven through the Docker Engine API. It is for machines where
//! the native sandbox cannot run: macOS and Windows (Docker Desktop) and CI
//! runners that only offer Docker. spec/sandbox.md ("The container backend")
//! says what it guarantees and where it differs from the native sandbox.
//!
//! The root directory becomes an image (imported once, cached under a tag
//! derived from its content digest and the step's mount points); binds
//! become bind mounts, the other writable directories tmpfs with their mode
//! and owner set explicitly; the step runs as uid/gid 1000 with a
//! read-only root, no capabilities, no_new_privs, the engine's init as PID 1
//! (or, where the engine has no init binary, the command itself: see
//! [`ContainerBackend::uses_init`]), the step's rlimits and no network. The
//! API is blocking: each backend owns a current-thread tokio runtime,
//! because farm's callers are synchronous.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, ResourcesUlimits, SystemInfo, SystemVersion};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, CreateImageOptions, KillContainerOptions, RemoveContainerOptions,
    ResizeContainerTTYOptions, TagImageOptions, WaitContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use farm_archive::{Format, TarEntry, TarError, TarKind, TarWriter};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::SandboxError;
use crate::etc;
use crate::spec::{Bind, Network, Outcome, RootSpec, Stdio, StepSpec};

/// Repository of the images made from root directories: `farm-root:<32 hex>`.
pub const ROOT_IMAGE_REPO: &str = "farm-root";

/// Label on every step container (value: the calling process's id), so a
/// container left behind by a farm process that was killed can be found:
/// `docker ps -a --filter label=farm.sandbox.step`.
pub const STEP_LABEL: &str = "farm.sandbox.step";

/// Variables an engine may add to the step's environment on its own (it
/// cannot be told not to): `HOSTNAME` (Docker and Podman, the step's
/// hostname), `container` (`podman`) and `TERM` (Podman's default `xterm`;
/// Docker only with a terminal). Docker and Podman also add a default
/// `PATH` when the step has none.
pub const ENGINE_ADDED_ENV: [&str; 3] = ["HOSTNAME", "container", "TERM"];

/// mtime of every entry of an imported root (the store's normalised mtime).
const ROOT_MTIME: u64 = 1;

/// bollard applies one timeout to every request, until the response
/// headers. Wait and attach answer at once (seen with Podman: a 6 s step
/// under a 3 s request timeout), but importing a large root on a slow
/// storage driver can take minutes. The step's timeout is enforced apart.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long the output may keep flowing after the container has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The oldest Docker Engine API farm can drive: 1.25 brought
/// `HostConfig.Mounts` (binds that fail when their source is missing) and
/// `HostConfig.Init`. Docker 1.13 and Podman 3 speak it.
pub const MIN_API_VERSION: (u32, u32) = (1, 25);

const CONNECT_HINT: &str = "start Docker (or Docker Desktop), or run `podman system service --time 0 \
     unix:///PATH/podman.sock` and pass that socket (or set DOCKER_HOST=unix:///PATH/podman.sock)";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The spec failed validation, or one of its host paths is missing.
    #[error(transparent)]
    Spec(#[from] SandboxError),

    #[error(
        "container backend: root: expected RootSpec::Dir (a root directory, imported as an image), \
         found RootSpec::HostPaths {paths:?}\nhint: host paths are paths of the machine farm runs on, which \
         an engine (often in a VM) does not have; use the pinned base root, or the native sandbox"
    )]
    HostPathsRoot { paths: Vec<PathBuf> },

    #[error("container engine at {host}: {message}\nhint: {CONNECT_HINT}")]
    Connect { host: String, message: String },

    /// The engine answers but lacks something farm needs.
    #[error("container engine at {host}: {engine}: {problem}\nhint: {hint}")]
    Unsupported {
        host: String,
        engine: String,
        problem: String,
        hint: String,
    },

    #[error("root `{root}`: `{path}`: {problem}")]
    RootTree {
        root: PathBuf,
        path: PathBuf,
        problem: String,
    },

    #[error("container engine at {host}: importing root `{root}` as image `{image}`: {message}")]
    Import {
        host: String,
        root: PathBuf,
        image: String,
        message: String,
    },

    #[error("container engine at {host}: {action}: {message}{}", hint_suffix(.hint))]
    Engine {
        host: String,
        action: String,
        message: String,
        hint: Option<String>,
    },

    #[error(
        "command `{command}` not found in the step's root or binds (PATH `{path}`)\nhint: PATH comes only from \
         the step's env: add the toolchain's bin directory to it or give an absolute path"
    )]
    CommandNotFound { command: String, path: String },

    #[error("{what} `{path}`: {source}")]
    Host {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("log file `{path}`: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "container engine at {host}: the step ended, but removing its container {id} failed: {message}\n\
         hint: remove it with `docker rm -f {id}` (or `podman rm -f {id}`)"
    )]
    Remove { host: String, id: String, message: String },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
}

/// Which engine answers. Both speak the Docker Engine API, but they accept
/// different tmpfs options for a mount's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Docker Engine (and any other engine that does not say it is Podman).
    Docker,
    /// Podman's API service.
    Podman,
}

/// What the engine told farm about itself when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub kind: EngineKind,
    /// Product and version, e.g. `Docker Engine 20.10.24` or `Podman Engine 4.3.1`.
    pub name: String,
    /// The newest API version the engine speaks, e.g. `1.41`.
    pub api_version: String,
    /// Whether it can limit a container's memory (`MemoryLimit` of `/info`).
    pub memory_limit: bool,
    /// Whether it can limit a container's swap (`SwapLimit` of `/info`).
    pub swap_limit: bool,
}

/// An engine's features as `GET /version` and `GET /info` report them, or
/// what is missing: `Err((engine name, problem, hint))`.
fn engine_info(version: &SystemVersion, info: &SystemInfo) -> Result<EngineInfo, (String, String, String)> {
    let components = version.components.as_deref().unwrap_or_default();
    let podman = components.iter().find(|c| c.name.starts_with("Podman"));
    let kind = if podman.is_some() {
        EngineKind::Podman
    } else {
        EngineKind::Docker
    };
    let product_version = podman
        .map(|c| c.version.clone())
        .or_else(|| version.version.clone())
        .unwrap_or_else(|| "(no version)".into());
    let name = match kind {
        EngineKind::Podman => format!("Podman Engine {product_version}"),
        EngineKind::Docker => format!("Docker Engine {product_version}"),
    };
    let api_version = version.api_version.clone().unwrap_or_default();
    let fail = |problem: String, hint: &str| Err((name.clone(), problem, hint.to_string()));
    let Some(api) = parse_api_version(&api_version) else {
        return fail(
            format!("reports API version {api_version:?}; expected `MAJOR.MINOR`"),
            "farm drives engines that speak the Docker Engine API (Docker, or Podman's API service)",
        );
    };
    if api < MIN_API_VERSION {
        return fail(
            format!(
                "speaks Docker Engine API {api_version}; farm needs API {}.{} or later (HostConfig.Mounts and Init)",
                MIN_API_VERSION.0, MIN_API_VERSION.1
            ),
            "upgrade the engine: Docker 1.13 or later, or Podman 3 or later",
        );
    }
    let os = version.os.as_deref().or(info.os_type.as_deref()).unwrap_or("linux");
    if os != "linux" {
        return fail(
            format!("runs {os} containers; farm's steps are Linux programs"),
            "switch the engine to Linux containers (Docker Desktop: \"Switch to Linux containers\")",
        );
    }
    Ok(EngineInfo {
        kind,
        name,
        api_version,
        memory_limit: info.memory_limit.unwrap_or(false),
        swap_limit: info.swap_limit.unwrap_or(false),
    })
}

/// `1.41` → `(1, 41)`.
fn parse_api_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A connection to a Docker-compatible engine that runs steps.
pub struct ContainerBackend {
    docker: Docker,
    host: String,
    engine: EngineInfo,
    runtime: tokio::runtime::Runtime,
    /// Root images known to exist, so later steps skip the inspect.
    known_images: Mutex<HashSet<String>>,
    /// One import at a time, so parallel steps with the same root import it once.
    import_lock: tokio::sync::Mutex<()>,
    /// Whether step containers ask for the engine's init (`Init: true`).
    /// Cleared, for the rest of this backend's life, by the first container
    /// the engine refused because its init binary is missing.
    use_init: AtomicBool,
}

impl std::fmt::Debug for ContainerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerBackend").field("host", &self.host).finish()
    }
}

impl ContainerBackend {
    /// Connects to the engine at `docker_host` (`unix:///…`, `tcp://…`,
    /// `http://…`), else the one `DOCKER_HOST` names, else the first local
    /// socket that exists of `/var/run/docker.sock`,
    /// `$HOME/.docker/run/docker.sock` (Docker Desktop),
    /// `$XDG_RUNTIME_DIR/podman/podman.sock` and `/run/podman/podman.sock`;
    /// agrees on an API version with it (so the engine must answer), and
    /// checks that it speaks API 1.25 or later and runs Linux containers
    /// ([`ContainerError::Unsupported`] names the engine, its API version
    /// and what farm needs).
    pub fn connect(docker_host: Option<&str>) -> Result<Self, ContainerError> {
        let host = engine_host(docker_host);
        let connect_err = |message: String| ContainerError::Connect {
            host: host.clone(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| connect_err(format!("cannot start the I/O runtime: {e}")))?;
        let docker = {
            let _context = runtime.enter();
            Docker::connect_with_host(&host).map_err(|e| connect_err(e.to_string()))?
        }
        .with_timeout(REQUEST_TIMEOUT);
        let docker = block_on(&runtime, docker.negotiate_version())
            .map_err(|e| connect_err(format!("no answer to the API version handshake: {e}")))?;
        let version = block_on(&runtime, docker.version()).map_err(|e| connect_err(format!("GET /version: {e}")))?;
        let info = block_on(&runtime, docker.info()).map_err(|e| connect_err(format!("GET /info: {e}")))?;
        let engine = engine_info(&version, &info).map_err(|(engine, problem, hint)| ContainerError::Unsupported {
            host: host.clone(),
            engine,
            problem,
            hint,
        })?;
        Ok(ContainerBackend {
            docker,
            host,
            engine,
            runtime,
            known_images: Mutex::new(HashSet::new()),
            import_lock: tokio::sync::Mutex::new(()),
            use_init: AtomicBool::new(true),
        })
    }

    /// The engine address in use.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// What the engine is and can do, as found at connect time.
    pub fn engine(&self) -> &EngineInfo {
        &self.engine
    }

    /// Whether steps run under the engine's init (the default), or, after
    /// the engine turned out to have none, with their command as PID 1.
    pub fn uses_init(&self) -> bool {
        self.use_init.load(Ordering::SeqCst)
    }

    /// Checks that the engine answers (`GET /_ping`).
    pub fn probe(&self) -> Result<(), ContainerError> {
        let reply = block_on(&self.runtime, self.docker.ping()).map_err(|e| ContainerError::Connect {
            host: self.host.clone(),
            message: format!("no answer to ping: {e}"),
        })?;
        if reply.trim() == "OK" {
            Ok(())
        } else {
            Err(ContainerError::Connect {
                host: self.host.clone(),
                message: format!("ping: expected `OK`, found {reply:?}"),
            })
        }
    }

    /// Runs the step in a new container and removes the container, whatever
    /// happened. A step that runs and fails is `Ok` with a non-zero status;
    /// past its timeout it is killed (`timed_out`, status 137). `Err` means
    /// the container could not be made, started or cleaned up.
    ///
    /// The directories of writable binds are made writable for every user
    /// (files `a+rw`, directories `a+rwx`, recursively): the engine maps the
    /// step's uid 1000 to a host uid farm cannot know (1000 with a rootful
    /// Linux engine, a subordinate uid with a rootless one).
    pub fn run(&self, spec: &StepSpec) -> Result<Outcome, ContainerError> {
        spec.validate()?;
        if let Network::Proxy { allow } = &spec.network {
            return Err(ContainerError::Unsupported {
                host: self.host.clone(),
                engine: self.engine.name.clone(),
                problem: format!(
                    "the step's network is a proxy to {allow:?}; the container backend runs steps with no \
                     network or the host's"
                ),
                hint: "run this step with the native sandbox (`--sandbox native`)".into(),
            });
        }
        let spec = resolve_host_paths(spec)?;
        block_on(&self.runtime, self.run_step(&spec))
    }

    /// Makes sure the engine has the image that steps like `spec` run in
    /// (its root directory with its [`mount_points`]), importing it when it
    /// does not, and returns its reference (`farm-root:<32 hex>`, see
    /// [`root_image_tag`]).
    pub fn root_image(&self, spec: &StepSpec) -> Result<String, ContainerError> {
        spec.validate()?;
        let spec = resolve_host_paths(spec)?;
        let RootSpec::Dir(root) = &spec.root else {
            unreachable!("resolve_host_paths rejects HostPaths roots")
        };
        block_on(&self.runtime, self.ensure_root_image(root, &mount_points(&spec)))
    }

    async fn ensure_root_image(&self, root: &Path, mounts: &[MountPoint]) -> Result<String, ContainerError> {
        let tag = {
            let (root, mounts) = (root.to_path_buf(), mounts.to_vec());
            tokio::task::spawn_blocking(move || root_image_tag(&root, &mounts))
                .await
                .expect("deriving the tag does not panic")?
        };
        let image = format!("{ROOT_IMAGE_REPO}:{tag}");
        if self.known_images.lock().unwrap().contains(&image) {
            return Ok(image);
        }
        let _one_import = self.import_lock.lock().await;
        if self.docker.inspect_image(&image).await.is_err() {
            self.import_root(root, mounts, &tag).await?;
        }
        self.known_images.lock().unwrap().insert(image.clone());
        Ok(image)
    }

    /// `POST /images/create?fromSrc=-` with the root as a tar stream, then
    /// tags the new image. (Podman ignores `tag` on import, so the image is
    /// imported untagged and tagged by ID, which both engines honour.)
    async fn import_root(&self, root: &Path, mounts: &[MountPoint], tag: &str) -> Result<(), ContainerError> {
        let image = format!("{ROOT_IMAGE_REPO}:{tag}");
        let import_err = |message: String| ContainerError::Import {
            host: self.host.clone(),
            root: root.to_path_buf(),
            image: image.clone(),
            message,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        // Set when the engine stopped reading: its own error then says why.
        let engine_gone = Arc::new(AtomicBool::new(false));
        let producer = {
            let (root, mounts) = (root.to_path_buf(), mounts.to_vec());
            let engine_gone = engine_gone.clone();
            std::thread::spawn(move || {
                let mut out = ChannelWriter::new(tx, engine_gone);
                let written = write_root_tar(&root, &mounts, &mut out).and_then(|()| {
                    out.flush().map_err(|source| ContainerError::Host {
                        what: "sending the root to the engine",
                        path: root.clone(),
                        source,
                    })
                });
                if let Err(e) = &written {
                    // Aborts the upload, so the engine never keeps half a root.
                    out.fail(io::Error::other(e.to_string()));
                }
                written
            })
        };
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            ..Default::default()
        };
        let mut progress = self
            .docker
            .create_image(Some(options), Some(bollard::body_try_stream(body)), None);
        let mut id = None;
        let mut engine_error = None;
        while let Some(message) = progress.next().await {
            match message {
                Ok(info) => {
                    let candidates = [info.id, info.status];
                    if let Some(found) = candidates.into_iter().flatten().find(|s| s.starts_with("sha256:")) {
                        id = Some(found);
                    }
                }
                Err(e) => {
                    engine_error = Some(e.to_string());
                    break;
                }
            }
        }
        // Dropping the request drops the body, so a producer still sending stops.
        drop(progress);
        let produced = tokio::task::spawn_blocking(move || producer.join())
            .await
            .expect("joining the tar writer does not panic")
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        match (produced, engine_error) {
            (Err(e), _) if !engine_gone.load(Ordering::SeqCst) => return Err(e),
            (_, Some(message)) => return Err(import_err(message)),
            (Err(e), None) => return Err(e),
            (Ok(()), None) => {}
        }
        let id = id.ok_or_else(|| import_err("the engine reported no image ID for the import".into()))?;
        let options = TagImageOptions {
            repo: Some(ROOT_IMAGE_REPO.into()),
            tag: Some(tag.into()),
        };
        self.docker
            .tag_image(&id, Some(options))
            .await
            .map_err(|e| import_err(format!("tagging the imported image {id}: {e}")))?;
        self.docker
            .inspect_image(&image)
            .await
            .map_err(|e| import_err(format!("the image is not there after the import: {e}")))?;
        Ok(())
    }

    async fn run_step(&self, spec: &StepSpec) -> Result<Outcome, ContainerError> {
        let RootSpec::Dir(root) = &spec.root else {
            unreachable!("resolve_host_paths rejects HostPaths roots")
        };
        // With an init as PID 1 a missing command would only be a failed
        // step; look it up first, so it is an error as in the native sandbox.
        if let Some(path) = command_missing(spec, root) {
            return Err(ContainerError::CommandNotFound {
                command: spec.argv[0].clone(),
                path,
            });
        }
        let image = self.ensure_root_image(root, &mount_points(spec)).await?;
        let etc_dir = write_etc_files(spec)?;
        open_writable_binds(spec)?;
        let init = self.uses_init();
        let ran = match self.run_container(spec, &image, etc_dir.path(), init).await {
            // Podman refuses the container at create, Docker at start; either
            // way it never ran (and is removed), so running it again is safe.
            Err(ContainerError::Engine { message, .. }) if init && engine_lacks_init(&message, &spec.argv[0]) => {
                self.continue_without_init(&message);
                self.run_container(spec, &image, etc_dir.path(), false).await
            }
            other => other,
        };
        drop(etc_dir);
        ran
    }

    /// Remembers that the engine has no init, and says so once.
    fn continue_without_init(&self, message: &str) {
        if self.use_init.swap(false, Ordering::SeqCst) {
            let reason = message.lines().next().unwrap_or(message);
            eprintln!(
                "warning: container engine at {}: no init binary ({reason}); steps run with their command as \
                 PID 1 (orphans are reaped when the step ends, signals it does not handle are ignored)\n\
                 hint: {NO_INIT_HINT}",
                self.host
            );
        }
    }

    /// One container for the step: made, run and removed, whatever happened.
    async fn run_container(
        &self,
        spec: &StepSpec,
        image: &str,
        etc_dir: &Path,
        init: bool,
    ) -> Result<Outcome, ContainerError> {
        let io = match &spec.stdio {
            Stdio::Capture { log, stream } => StepIo::Capture {
                log: File::create(log).map_err(|source| ContainerError::Log {
                    path: log.clone(),
                    source,
                })?,
                path: log.clone(),
                stream: *stream,
            },
            Stdio::Inherit => StepIo::Inherit {
                tty: io::stdin().is_terminal() && io::stdout().is_terminal(),
            },
        };
        let body = container_body(spec, image, etc_dir, io.tty(), init, &self.engine);
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| self.engine_err(format!("creating a container of image `{image}`"), e))?;
        let id = created.id;

        let ran = self.drive(&id, spec, io).await;
        let remove = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let removed = match self.docker.remove_container(&id, Some(remove)).await {
            Err(EngineError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            other => other,
        };
        match (ran, removed) {
            (Ok(outcome), Ok(())) => Ok(outcome),
            (Ok(_), Err(e)) => Err(ContainerError::Remove {
                host: self.host.clone(),
                id,
                message: e.to_string(),
            }),
            (Err(e), _) => Err(e),
        }
    }

    /// Attaches, starts, waits (up to the timeout) and collects the output.
    async fn drive(&self, id: &str, spec: &StepSpec, io: StepIo) -> Result<Outcome, ContainerError> {
        let interactive = matches!(io, StepIo::Inherit { .. });
        // Attached before the start, so no output is lost.
        let attach = AttachContainerOptions {
            stream: true,
            stdin: interactive,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let attached = self
            .docker
            .attach_container(id, Some(attach))
            .await
            .map_err(|e| self.engine_err(format!("attaching to container {id}"), e))?;
        let log_path = match &io {
            StepIo::Capture { path, .. } => Some(path.clone()),
            StepIo::Inherit { .. } => None,
        };
        let raw_mode = match io {
            StepIo::Inherit { tty: true } => Some(RawTerminal::enter().map_err(|source| ContainerError::Host {
                what: "terminal",
                path: PathBuf::from("/dev/stdin"),
                source,
            })?),
            _ => None,
        };
        let mut output = tokio::spawn(copy_output(attached.output, io));

        let started = self.docker.start_container(id, None).await;
        if let Err(e) = started {
            output.abort();
            drop(raw_mode);
            let hint = start_hint(&e.to_string(), spec);
            return Err(ContainerError::Engine {
                host: self.host.clone(),
                action: format!("starting container {id} for `{}`", spec.argv.join(" ")),
                message: e.to_string(),
                hint,
            });
        }
        // Only now: a container that does not start (and may be made again
        // without an init) must not have taken any of the caller's input.
        let stdin = interactive.then(|| StdinForwarder::start(attached.input));
        if raw_mode.is_some() {
            if let Some((rows, cols)) = terminal_size() {
                let size = ResizeContainerTTYOptions { h: rows, w: cols };
                // A wrong size only affects how full-screen programs draw.
                let _ = self.docker.resize_container_tty(id, size).await;
            }
        }

        let waited = match spec.timeout {
            Some(limit) => tokio::time::timeout(limit, self.wait_exit(id)).await.ok(),
            None => Some(self.wait_exit(id).await),
        };
        let (status, timed_out) = match waited {
            Some(status) => (status?, false),
            None => {
                let kill = KillContainerOptions { signal: "KILL".into() };
                // It may have ended in the meantime; the forced removal follows anyway.
                let _ = self.docker.kill_container(id, Some(kill)).await;
                (128 + libc::SIGKILL, true)
            }
        };
        drop(stdin);
        let copied = match tokio::time::timeout(DRAIN_TIMEOUT, &mut output).await {
            Ok(joined) => joined.unwrap_or_else(|e| Err(io::Error::other(e.to_string()))),
            Err(_) => {
                output.abort();
                Err(io::Error::other(format!(
                    "the output did not end within {}s of the container",
                    DRAIN_TIMEOUT.as_secs()
                )))
            }
        };
        drop(raw_mode);
        if let (Err(source), Some(path)) = (copied, &log_path) {
            return Err(ContainerError::Log {
                path: path.clone(),
                source,
            });
        }
        Ok(Outcome {
            status,
            timed_out,
            log: log_path,
            peak_rss_kib: None,
        })
    }

    /// The container's exit status. bollard turns a non-zero status into an
    /// error; that is an outcome here.
    async fn wait_exit(&self, id: &str) -> Result<i32, ContainerError> {
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        let code = match wait.next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(EngineError::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(self.engine_err(format!("waiting for container {id}"), e)),
            None => {
                let state = self
                    .docker
                    .inspect_container(id, None)
                    .await
                    .map_err(|e| self.engine_err(format!("inspecting container {id}"), e))?
                    .state;
                state.and_then(|s| s.exit_code).ok_or_else(|| ContainerError::Engine {
                    host: self.host.clone(),
                    action: format!("waiting for container {id}"),
                    message: "the engine reported no exit code".into(),
                    hint: None,
                })?
            }
        };
        Ok(i32::try_from(code).unwrap_or(i32::MAX))
    }

    fn engine_err(&self, action: String, e: EngineError) -> ContainerError {
        ContainerError::Engine {
            host: self.host.clone(),
            action,
            message: e.to_string(),
            hint: None,
        }
    }
}

/// Runs `fut` on `runtime`, also when the caller is itself inside a tokio
/// runtime (where `block_on` would panic): then on a short-lived thread.
fn block_on<F>(runtime: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(fut);
    }
    std::thread::scope(|s| {
        s.spawn(|| runtime.block_on(fut))
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The engine address: the caller's, `DOCKER_HOST`, or the first local socket that exists.
fn engine_host(docker_host: Option<&str>) -> String {
    if let Some(host) = docker_host.filter(|h| !h.is_empty()) {
        return host.to_string();
    }
    if let Some(host) = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        return host;
    }
    let mut sockets = vec![PathBuf::from("/var/run/docker.sock")];
    if let Some(home) = std::env::var_os("HOME") {
        sockets.push(Path::new(&home).join(".docker/run/docker.sock"));
    }
    if let Some(runtime_dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        sockets.push(Path::new(&runtime_dir).join("podman/podman.sock"));
    }
    sockets.push(PathBuf::from("/run/podman/podman.sock"));
    let found = sockets
        .iter()
        .find(|p| fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()));
    format!("unix://{}", found.unwrap_or(&sockets[0]).display())
}

/// Canonical host paths (the engine resolves no symlinks of ours), and the
/// root must be a directory.
fn resolve_host_paths(spec: &StepSpec) -> Result<StepSpec, ContainerError> {
    let mut spec = spec.clone();
    let host_err = |field: String, path: &Path, problem: String| SandboxError::HostPath {
        field,
        path: path.to_path_buf(),
        problem,
        hint: None,
    };
    match &mut spec.root {
        RootSpec::HostPaths(paths) => return Err(ContainerError::HostPathsRoot { paths: paths.clone() }),
        RootSpec::Dir(dir) => {
            let real = fs::canonicalize(&*dir).map_err(|e| host_err("root".into(), dir, e.to_string()))?;
            if !real.is_dir() {
                return Err(host_err("root".into(), dir, "is not a directory".into()).into());
            }
            *dir = real;
        }
    }
    for (i, b) in spec.binds.iter_mut().enumerate() {
        b.source = fs::canonicalize(&b.source)
            .map_err(|e| host_err(format!("binds[{i}].source"), &b.source, e.to_string()))?;
    }
    Ok(spec)
}

/// The mode and owner a writable directory's mount has in the container,
/// the native sandbox's: `/tmp` 1777 owned by root, every other one 0755
/// owned by the step's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Absolute path in the container.
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The step's writable directories (but `/dev/...`, the engine's) with the
/// mode and owner each gets, sorted by path. Each is a tmpfs or a writable
/// bind; in the root image each is an empty directory of that mode and
/// owner (see [`write_root_tar`]).
pub fn mount_points(spec: &StepSpec) -> Vec<MountPoint> {
    let mut points: Vec<MountPoint> = spec
        .writable
        .iter()
        .filter(|d| !d.starts_with("/dev"))
        .map(|d| {
            let (mode, uid, gid) = if d == Path::new("/tmp") {
                (0o1777, 0, 0)
            } else {
                (0o755, spec.uid, spec.gid)
            };
            MountPoint {
                path: d.clone(),
                mode,
                uid,
                gid,
            }
        })
        .collect();
    points.sort_by(|a, b| a.path.cmp(&b.path));
    points.dedup_by(|a, b| a.path == b.path);
    points
}

/// The tmpfs options of a writable directory: its mode and owner always
/// explicit. Docker takes `uid=`/`gid=`; Podman refuses them and takes `U`
/// (owned by the container's user, which is the step's) instead, while a
/// tmpfs it mounts without `U` belongs to the container's root.
fn tmpfs_options(point: &MountPoint, spec: &StepSpec, kind: EngineKind) -> String {
    let mut options = format!("rw,exec,nosuid,nodev,mode={:04o}", point.mode);
    match kind {
        EngineKind::Docker => options += &format!(",uid={},gid={}", point.uid, point.gid),
        EngineKind::Podman if (point.uid, point.gid) == (spec.uid, spec.gid) && point.uid != 0 => options += ",U",
        EngineKind::Podman => {}
    }
    options
}

/// The image tag of a root directory with its mount points: the first 32
/// hex digits of a SHA-256 over its content digest when it is a store entry
/// (`<64 hex>-<name>`, named by content digest) and the mount points, else
/// of its [`write_root_tar`] stream; so a changed directory, or other mount
/// points, never reuse a stale image.
pub fn root_image_tag(root: &Path, mounts: &[MountPoint]) -> Result<String, ContainerError> {
    let name = root.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let digest = name
        .get(..64)
        .filter(|h| h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) && name[64..].starts_with('-'));
    let mut hasher = HashWriter(Sha256::new());
    match digest {
        Some(hex) => {
            hasher.0.update(format!("farm-root-image 1\nstore {hex}\n"));
            for m in mounts {
                let line = format!("mount {} {:o} {} {}\n", m.path.display(), m.mode, m.uid, m.gid);
                hasher.0.update(line);
            }
        }
        None => write_root_tar(root, mounts, &mut hasher)?,
    }
    let hex: String = hasher.0.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(hex[..32].to_string())
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the directory `root` as a tar stream for an image import, with
/// the same bytes for the same tree on every machine: entries in byte order
/// of their names, depth first; owner 0:0 without names; mtime 1; the
/// permission bits (setuid, setgid and sticky bits dropped); symlinks kept
/// as symlinks, hard links written as separate files; GNU headers, as
/// farm-archive's [`Format::Gnu`] writes them. Other file types (devices,
/// FIFOs, sockets) are an error.
///
/// A directory of the root at one of `mounts` is written with that mount
/// point's mode and owner, and without its contents: the runtime (runc)
/// gives a tmpfs the mode of the directory it is mounted on, whatever its
/// `mode=` option says, and Docker copies the directory's files into it.
pub fn write_root_tar(root: &Path, mounts: &[MountPoint], out: impl Write) -> Result<(), ContainerError> {
    let tree_err = |path: &Path, problem: String| ContainerError::RootTree {
        root: root.to_path_buf(),
        path: path.to_path_buf(),
        problem,
    };
    let mount_at = |relative: &Path| {
        mounts
            .iter()
            .find(|m| m.path.strip_prefix("/").is_ok_and(|p| p == relative))
    };
    let mut tar = TarWriter::new(out, Format::Gnu);
    let mut walk = farm_archive::walk(root);
    while let Some(found) = walk.next() {
        let found = found.map_err(|e| tree_err(&e.path, format!("cannot list the directory: {}", e.source)))?;
        let path = found.path();
        let meta = found.metadata().map_err(|e| tree_err(path, e.source.to_string()))?;
        let (mut mode, mut uid, mut gid) = (meta.permissions().mode() & 0o777, 0, 0);
        if let Some(point) = mount_at(found.relative()).filter(|_| meta.is_dir()) {
            (mode, uid, gid) = (point.mode, point.uid, point.gid);
            walk.skip_current_dir();
        }
        let kind = meta.file_type();
        let kind = if kind.is_dir() {
            TarKind::Dir
        } else if kind.is_symlink() {
            let target = fs::read_link(path).map_err(|e| tree_err(path, e.to_string()))?;
            TarKind::Symlink(target.into_os_string().into_encoded_bytes())
        } else if kind.is_file() {
            TarKind::File {
                source: path.to_path_buf(),
                size: meta.len(),
            }
        } else {
            return Err(tree_err(
                path,
                "expected a file, directory or symlink, found a device, FIFO or socket; \
                 a root image holds no special files (the engine provides /dev)"
                    .into(),
            ));
        };
        let entry = TarEntry {
            path: found.relative().as_os_str().as_encoded_bytes().to_vec(),
            kind,
            mode,
            uid,
            gid,
            mtime: ROOT_MTIME,
        };
        tar.append(&entry).map_err(|e| match e {
            TarError::Open { path, source } => tree_err(&path, format!("cannot open: {source}")),
            TarError::Read { path, source } => tree_err(&path, format!("cannot read: {source}")),
            TarError::Changed { path, expected, found } => tree_err(
                &path,
                format!("changed while the tar stream was written: expected {expected} bytes, found {found}"),
            ),
            TarError::Write { source, .. } | TarError::Finish { source } => {
                tree_err(path, format!("writing its tar entry: {source}"))
            }
        })?;
    }
    tar.finish()
        .map_err(|e| match e {
            TarError::Finish { source } => source,
            other => io::Error::other(other.to_string()),
        })
        .and_then(|mut out| out.flush())
        .map_err(|source| ContainerError::Host {
            what: "writing the tar stream of root",
            path: root.to_path_buf(),
            source,
        })
}

/// Sends what is written, in chunks, into the request body of the import.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    gone: Arc<AtomicBool>,
}

const CHUNK: usize = 1 << 20;

impl ChannelWriter {
    fn new(tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>, gone: Arc<AtomicBool>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            gone,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            self.gone.store(true, Ordering::SeqCst);
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the root before its end",
            )
        })
    }

    fn fail(&mut self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Generated /etc files, bound read-only over the root's: the root may have
/// no passwd entry for uid 1000 at all, and without network the step must
/// see no name server (as in the native sandbox).
fn write_etc_files(spec: &StepSpec) -> Result<tempfile::TempDir, ContainerError> {
    let dir = tempfile::Builder::new()
        .prefix("farm-container-etc-")
        .tempdir()
        .map_err(|source| ContainerError::Host {
            what: "temporary directory for /etc files in",
            path: std::env::temp_dir(),
            source,
        })?;
    for (name, contents) in etc_files(spec) {
        let path = dir.path().join(name);
        fs::write(&path, contents)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o444)))
            .map_err(|source| ContainerError::Host {
                what: "generated /etc file",
                path,
                source,
            })?;
    }
    Ok(dir)
}

/// Name and contents of each generated /etc file. With the host's network
/// the engine's resolv.conf (its own name servers) is kept.
fn etc_files(spec: &StepSpec) -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("passwd", etc::passwd(spec.uid, spec.gid)),
        ("group", etc::group(spec.gid)),
        ("hosts", etc::hosts(&spec.hostname)),
    ];
    if spec.network.isolated() {
        files.push(("resolv.conf", etc::resolv_conf(Network::None, None)));
    }
    files
}

/// Lets the step's uid, whatever the engine maps it to, write into the
/// writable binds (see [`ContainerBackend::run`]).
fn open_writable_binds(spec: &StepSpec) -> Result<(), ContainerError> {
    for bind in spec.binds.iter().filter(|b| !b.read_only) {
        open_up(&bind.source).map_err(|(path, source)| ContainerError::Host {
            what: "writable bind (opening it up for the step's user)",
            path,
            source,
        })?;
    }
    Ok(())
}

fn open_up(path: &Path) -> Result<(), (PathBuf, io::Error)> {
    let fail = |e| (path.to_path_buf(), e);
    let meta = fs::symlink_metadata(path).map_err(fail)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    // Directories and executables: rwx for all; other files: rw for all.
    let wanted = if meta.is_dir() || mode & 0o111 != 0 {
        mode | 0o777
    } else {
        mode | 0o666
    };
    if wanted != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(wanted)).map_err(fail)?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(fail)? {
            open_up(&entry.map_err(fail)?.path())?;
        }
    }
    Ok(())
}

/// The container for `spec` on `engine` (pure, so that the mapping is unit-tested).
fn container_body(
    spec: &StepSpec,
    image: &str,
    etc_dir: &Path,
    tty: bool,
    init: bool,
    engine: &EngineInfo,
) -> ContainerCreateBody {
    let interactive = matches!(spec.stdio, Stdio::Inherit);
    let bind = |source: &Path, target: &Path, read_only: bool| Mount {
        typ: Some(MountType::BIND),
        source: Some(source.display().to_string()),
        target: Some(target.display().to_string()),
        read_only: Some(read_only),
        ..Default::default()
    };
    let mut mounts: Vec<Mount> = spec
        .binds
        .iter()
        .map(|b| bind(&b.source, &b.target, b.read_only))
        .collect();
    for (name, _) in etc_files(spec) {
        mounts.push(bind(&etc_dir.join(name), &Path::new("/etc").join(name), true));
    }
    let points = mount_points(spec);
    let tmpfs: HashMap<String, String> = tmpfs_dirs(spec)
        .into_iter()
        .filter_map(|dir| {
            let point = points.iter().find(|p| p.path == dir)?;
            Some((dir.display().to_string(), tmpfs_options(point, spec, engine.kind)))
        })
        .collect();
    // The whole container's memory, without swap on top (swap = memory), where
    // the engine can limit it; else `ulimits` makes it RLIMIT_AS.
    let memory = spec.limits.memory.filter(|_| engine.memory_limit).map(clamp_i64);
    let host_config = HostConfig {
        mounts: Some(mounts),
        tmpfs: Some(tmpfs),
        network_mode: Some(
            match spec.network {
                Network::Host => "host",
                // A proxy network is refused before (see `run`).
                Network::None | Network::Proxy { .. } => "none",
            }
            .into(),
        ),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        // An init as PID 1 reaps orphans and passes the command's status on,
        // like the native PID 1. Without one (the engine has none; always
        // explicit, so an engine default of `init = true` cannot apply) the
        // command is PID 1: the process tree still dies with it, as the
        // kernel kills a PID namespace whose PID 1 exits.
        init: Some(init),
        pids_limit: spec.limits.nproc.map(clamp_i64),
        memory,
        memory_swap: memory.filter(|_| engine.swap_limit),
        ulimits: Some(ulimits(spec, engine)),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(spec.argv.clone()),
        entrypoint: None,
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: Some(format!("{}:{}", spec.uid, spec.gid)),
        working_dir: Some(spec.cwd.display().to_string()),
        hostname: Some(spec.hostname.clone()),
        attach_stdin: Some(interactive),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(interactive),
        stdin_once: Some(interactive),
        tty: Some(tty),
        labels: Some(HashMap::from([(
            STEP_LABEL.to_string(),
            std::process::id().to_string(),
        )])),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Writable directories that are not a writable bind (or below one) get a
/// fresh tmpfs, as in the native sandbox; /dev/shm is the engine's own.
fn tmpfs_dirs(spec: &StepSpec) -> Vec<PathBuf> {
    let covered = |dir: &Path| {
        spec.binds
            .iter()
            .any(|b: &Bind| !b.read_only && dir.starts_with(&b.target))
    };
    let mut dirs: Vec<PathBuf> = spec
        .writable
        .iter()
        .filter(|d| !d.starts_with("/dev") && !covered(d))
        .cloned()
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Where a path inside the container is on this host, as far as farm can tell.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Executable,
    /// Missing, or not an executable file.
    NotExecutable,
    /// Under a tmpfs, behind an unreadable directory, or too many symlinks.
    Unknown,
}

/// `Some(PATH)` when `argv[0]` surely cannot be executed in the container:
/// an absolute path, or a bare name in no directory of the step's PATH,
/// looked up in the root and the binds the way execvp would. Anything this
/// cannot decide (relative paths, no PATH, paths under a tmpfs) is left to
/// the engine.
fn command_missing(spec: &StepSpec, root: &Path) -> Option<String> {
    let command = &spec.argv[0];
    if command.starts_with('/') {
        let found = lookup_in_container(spec, root, Path::new(command));
        return (found == Lookup::NotExecutable).then(|| "(an absolute path)".to_string());
    }
    if command.contains('/') {
        return None;
    }
    let path = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str())?;
    let mut all_known = true;
    for dir in path.split(':') {
        if !dir.starts_with('/') {
            all_known = false;
            continue;
        }
        match lookup_in_container(spec, root, &Path::new(dir).join(command)) {
            Lookup::Executable => return None,
            Lookup::Unknown => all_known = false,
            Lookup::NotExecutable => {}
        }
    }
    all_known.then(|| path.to_string())
}

/// Resolves `path` component by component through the container's mounts
/// (binds, tmpfs, the root) and symlinks, as the kernel would inside it.
fn lookup_in_container(spec: &StepSpec, root: &Path, path: &Path) -> Lookup {
    let tmpfs = tmpfs_dirs(spec);
    let to_host = |p: &Path| -> Option<PathBuf> {
        let bind = spec
            .binds
            .iter()
            .filter(|b| p.starts_with(&b.target))
            .max_by_key(|b| b.target.components().count());
        let shadowed = tmpfs
            .iter()
            .any(|t| p.starts_with(t) && bind.is_none_or(|b| t.starts_with(&b.target) && *t != b.target));
        if shadowed {
            return None;
        }
        Some(match bind {
            Some(b) => b.source.join(p.strip_prefix(&b.target).unwrap_or(p)),
            None => root.join(p.strip_prefix("/").unwrap_or(p)),
        })
    };
    let leads_to_mount = |p: &Path| {
        let targets = spec.binds.iter().map(|b| b.target.as_path());
        targets
            .chain(tmpfs.iter().map(PathBuf::as_path))
            .any(|t| t.starts_with(p) && t != p)
    };
    // Components still to walk, the next one last.
    let mut pending = reversed_names(path);
    let mut current = PathBuf::from("/");
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        let Some(host) = to_host(&next) else {
            return Lookup::Unknown;
        };
        let meta = match fs::symlink_metadata(&host) {
            Ok(meta) => meta,
            // The engine creates the directories leading to its mount points.
            Err(e) if e.kind() == io::ErrorKind::NotFound && leads_to_mount(&next) && !pending.is_empty() => {
                current = next;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::NotExecutable,
            Err(_) => return Lookup::Unknown,
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            let Ok(target) = fs::read_link(&host) else {
                return Lookup::Unknown;
            };
            if hops > 40 {
                return Lookup::Unknown;
            }
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            pending.extend(reversed_names(&target));
            continue;
        }
        if pending.is_empty() {
            let executable = meta.is_file() && meta.permissions().mode() & 0o111 != 0;
            return if executable {
                Lookup::Executable
            } else {
                Lookup::NotExecutable
            };
        }
        if !meta.is_dir() {
            return Lookup::NotExecutable;
        }
        current = next;
    }
    Lookup::NotExecutable
}

/// The names and `..` of `path`, last first (`.` and `/` dropped).
fn reversed_names(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .rev()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            std::path::Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Soft = hard, as in the native sandbox, and no core dumps. Engines
/// differ in the defaults of unset ones (Podman's can exceed the host's
/// hard limit and make the start fail), so farm's defaults set nproc and nofile.
/// A memory limit the engine cannot apply becomes RLIMIT_AS (per process),
/// as documented for [`crate::spec::Limits::memory`].
fn ulimits(spec: &StepSpec, engine: &EngineInfo) -> Vec<ResourcesUlimits> {
    let l = &spec.limits;
    let memory_as = l.memory.filter(|_| !engine.memory_limit);
    let address_space = match (l.address_space, memory_as) {
        (Some(a), Some(m)) => Some(a.min(m)),
        (a, m) => a.or(m),
    };
    let set = [
        ("nproc", l.nproc),
        ("nofile", l.nofile),
        ("as", address_space),
        ("fsize", l.fsize),
        ("cpu", l.cpu_seconds),
        ("core", Some(0)),
    ];
    set.into_iter()
        .filter_map(|(name, value)| {
            value.map(|v| ResourcesUlimits {
                name: Some(name.into()),
                soft: Some(clamp_i64(v)),
                hard: Some(clamp_i64(v)),
            })
        })
        .collect()
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn start_hint(message: &str, spec: &StepSpec) -> Option<String> {
    let m = message.to_ascii_lowercase();
    // First: Docker reports a missing docker-init as an executable not found.
    if engine_lacks_init(message, &spec.argv[0]) {
        Some(NO_INIT_HINT.into())
    } else if m.contains("rlimit") {
        Some(
            "the engine could not apply a resource limit; set limits.nproc and limits.nofile \
             at or below the engine host's hard limits (`ulimit -Hu`, `ulimit -Hn`)"
                .into(),
        )
    } else if m.contains("executable file not found") || m.contains("no such file or directory") {
        Some(format!(
            "`{}` must exist in the root or a bind, and a bare command name is looked up in the step's PATH",
            spec.argv[0]
        ))
    } else if m.contains("mounts denied") || m.contains("not shared") {
        Some("the engine runs in a VM that cannot see this path; share it in the engine's file sharing settings".into())
    } else {
        None
    }
}

/// What to install so that the engine has an init.
const NO_INIT_HINT: &str = "for an init as PID 1 install the engine's init binary: Podman's is catatonit \
     (`apt-get install catatonit`; a Recommends of the podman package, so `--no-install-recommends` leaves it \
     out), Docker's is docker-init (tini; `apt-get install tini` or the docker-ce package)";

/// Whether the engine refused a container because its init binary is
/// missing, so the container is to be made again without `Init`.
///
/// Podman refuses at create: `container-init binary not found on the host:
/// stat /usr/libexec/podman/catatonit: no such file or directory`. Docker
/// at start, with `exec: "docker-init": executable file not found in $PATH`
/// (or, for an absolute `init-path`, a failed bind of that path). The
/// binary's name must be one of the known inits (and not the step's own
/// command, whose absence is a different error) and the message must say
/// it was not found.
fn engine_lacks_init(message: &str, command: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let not_found = m.contains("not found") || m.contains("no such file");
    let command = Path::new(command)
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase());
    let names_an_init = m
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .any(|word| {
            ["container-init", "catatonit", "docker-init", "tini", "tini-static"].contains(&word)
                && command.as_deref() != Some(word)
        });
    not_found && names_an_init
}

/// Where the step's output goes.
enum StepIo {
    Capture { log: File, path: PathBuf, stream: bool },
    Inherit { tty: bool },
}

impl StepIo {
    fn tty(&self) -> bool {
        matches!(self, StepIo::Inherit { tty: true })
    }
}

/// Copies the attached output: into the log (and our stderr when
/// streaming), or to our stdout/stderr. Keeps draining after a write error
/// so the container never blocks on a full pipe.
async fn copy_output(
    mut output: std::pin::Pin<Box<dyn Stream<Item = Result<LogOutput, EngineError>> + Send>>,
    io: StepIo,
) -> io::Result<()> {
    let mut first_err = None;
    let (mut log, stream) = match io {
        StepIo::Capture { log, stream, .. } => (Some(log), stream),
        StepIo::Inherit { .. } => (None, false),
    };
    while let Some(frame) = output.next().await {
        let frame = frame.map_err(io::Error::other)?;
        match &mut log {
            Some(log) => {
                let bytes = frame.into_bytes();
                if first_err.is_none() {
                    if let Err(e) = log.write_all(&bytes) {
                        first_err = Some(e);
                    }
                }
                if stream {
                    // A closed stderr must not fail the build.
                    let _ = io::stderr().lock().write_all(&bytes);
                }
            }
            None => {
                // The caller's terminal or pipes; nothing to report when they are gone.
                let _ = match frame {
                    LogOutput::StdErr { message } => io::stderr().lock().write_all(&message),
                    other => {
                        let mut out = io::stdout().lock();
                        out.write_all(&other.into_bytes()).and_then(|()| out.flush())
                    }
                };
            }
        }
    }
    match (first_err, log) {
        (Some(e), _) => Err(e),
        (None, Some(mut log)) => log.flush(),
        (None, None) => Ok(()),
    }
}

/// Forwards our stdin to the attached container until EOF (then closes the
/// container's stdin) or until dropped. A thread polls stdin with a short
/// timeout, so it ends soon after the drop instead of staying blocked in
/// `read`; it is not joined, since joining would block the runtime the
/// writer task needs to end.
struct StdinForwarder {
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<()>,
}

impl StdinForwarder {
    fn start(mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let stdin = io::stdin();
                let mut buf = vec![0u8; 16 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    let mut fds = [nix::poll::PollFd::new(stdin.as_fd(), nix::poll::PollFlags::POLLIN)];
                    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8)) {
                        Ok(0) => continue,
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => break,
                        Ok(_) => {}
                    }
                    match stdin.lock().read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.blocking_send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
                // Dropping the sender tells the writer that stdin ended.
            });
        }
        let writer = tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if input.write_all(&data).await.is_err() || input.flush().await.is_err() {
                    return;
                }
            }
            let _ = input.shutdown().await;
        });
        StdinForwarder { stop, writer }
    }
}

impl Drop for StdinForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Drops the receiver, which also frees a reader waiting to send.
        self.writer.abort();
    }
}

/// Puts our terminal in raw mode for an interactive container with a
/// terminal (the container's terminal does the line editing), and restores it.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> io::Result<Self> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = io::stdin();
        let saved = tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(io::stdin().as_fd(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Rows and columns of our terminal.
fn terminal_size() -> Option<(i32, i32)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then(|| (i32::from(size.ws_row), i32::from(size.ws_col)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Limits;

    fn spec() -> StepSpec {
        let mut s = StepSpec::new(
            RootSpec::Dir("/srv/root".into()),
            vec!["/bin/sh".into(), "-c".into(), "true".into()],
            Stdio::Capture {
                log: "/tmp/step.log".into(),
                stream: false,
            },
        );
        s.env = vec![
            ("PATH".into(), "/bin".into()),
            ("HOME".into(), "/homeless-shelter".into()),
        ];
        s.binds = vec![
            Bind::read_only("/store/abc-node", "/farm/store/abc-node"),
            Bind::writable("/work/out", "/out"),
        ];
        s.hostname = "farm".into();
        s
    }

    fn engine(kind: EngineKind) -> EngineInfo {
        EngineInfo {
            kind,
            name: format!("{kind:?} Engine 1.0"),
            api_version: "1.41".into(),
            memory_limit: true,
            swap_limit: true,
        }
    }

    fn docker() -> EngineInfo {
        engine(EngineKind::Docker)
    }

    fn mount_of<'a>(body: &'a ContainerCreateBody, target: &str) -> &'a Mount {
        let mounts = body.host_config.as_ref().unwrap().mounts.as_ref().unwrap();
        mounts
            .iter()
            .find(|m| m.target.as_deref() == Some(target))
            .unwrap_or_else(|| panic!("no mount at {target}: {mounts:?}"))
    }

    /// Proves the spec maps onto the container as documented: binds with
    /// their mode, generated /etc files read-only, tmpfs for the writable
    /// dirs that are not binds, no network, no capabilities, no_new_privs,
    /// read-only root, uid:gid, exactly the spec's environment, limits.
    #[test]
    fn the_spec_maps_onto_a_locked_down_container() {
        let s = spec();
        let body = container_body(&s, "farm-root:00", Path::new("/tmp/etc"), false, true, &docker());
        let hc = body.host_config.as_ref().unwrap();
        assert_eq!(body.image.as_deref(), Some("farm-root:00"));
        assert_eq!(body.cmd.as_ref().unwrap(), &s.argv);
        assert_eq!(
            body.env.as_ref().unwrap(),
            &vec!["PATH=/bin".to_string(), "HOME=/homeless-shelter".to_string()]
        );
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.working_dir.as_deref(), Some("/build"));
        assert_eq!(body.hostname.as_deref(), Some("farm"));
        assert_eq!(body.open_stdin, Some(false));

        assert_eq!(mount_of(&body, "/farm/store/abc-node").read_only, Some(true));
        assert_eq!(mount_of(&body, "/out").read_only, Some(false));
        assert_eq!(mount_of(&body, "/out").source.as_deref(), Some("/work/out"));
        for f in ["passwd", "group", "hosts", "resolv.conf"] {
            let m = mount_of(&body, &format!("/etc/{f}"));
            assert_eq!(m.read_only, Some(true));
            assert_eq!(m.source.as_deref(), Some(format!("/tmp/etc/{f}").as_str()));
        }
        let tmpfs = hc.tmpfs.as_ref().unwrap();
        let mut dirs: Vec<&str> = tmpfs.keys().map(String::as_str).collect();
        dirs.sort();
        assert_eq!(dirs, ["/build", "/tmp"], "/out is a bind and /dev/shm the engine's");
        assert_eq!(tmpfs["/build"], "rw,exec,nosuid,nodev,mode=0755,uid=1000,gid=1000");
        assert_eq!(tmpfs["/tmp"], "rw,exec,nosuid,nodev,mode=1777,uid=0,gid=0");

        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop.as_ref().unwrap(), &vec!["ALL".to_string()]);
        assert_eq!(
            hc.security_opt.as_ref().unwrap(),
            &vec!["no-new-privileges".to_string()]
        );
        assert_eq!(hc.privileged, None);
        assert_eq!(hc.init, Some(true));
        assert_eq!(hc.pids_limit, Some(4096));
        assert_eq!(
            (hc.memory, hc.memory_swap),
            (None, None),
            "no memory limit unless the spec sets one"
        );
        let limits: Vec<(String, i64, i64)> = hc
            .ulimits
            .as_ref()
            .unwrap()
            .iter()
            .map(|u| (u.name.clone().unwrap(), u.soft.unwrap(), u.hard.unwrap()))
            .collect();
        assert_eq!(
            limits,
            [
                ("nproc".to_string(), 4096, 4096),
                ("nofile".to_string(), 8192, 8192),
                ("core".to_string(), 0, 0)
            ]
        );
        assert!(body.labels.as_ref().unwrap().contains_key(STEP_LABEL));
    }

    /// Proves fetch steps get the host network and the engine's resolv.conf,
    /// and that every limit the spec sets reaches the container.
    #[test]
    fn host_network_keeps_the_engines_resolv_conf_and_all_limits_map() {
        let mut s = spec();
        s.network = Network::Host;
        s.limits = Limits {
            nproc: None,
            nofile: Some(64),
            address_space: Some(1 << 30),
            memory: Some(512 << 20),
            fsize: Some(1 << 20),
            cpu_seconds: Some(9),
        };
        let body = container_body(&s, "x", Path::new("/e"), false, true, &docker());
        let hc = body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert!(hc
            .mounts
            .as_ref()
            .unwrap()
            .iter()
            .all(|m| m.target.as_deref() != Some("/etc/resolv.conf")));
        assert_eq!(hc.pids_limit, None);
        assert_eq!(hc.memory, Some(512 << 20));
        assert_eq!(hc.memory_swap, Some(512 << 20), "swap = memory: no swap on top");
        let names: Vec<String> = hc
            .ulimits
            .as_ref()
            .unwrap()
            .iter()
            .map(|u| u.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["nofile", "as", "fsize", "cpu", "core"]);
    }

    /// Proves interactive steps attach stdin and use a terminal only when asked.
    #[test]
    fn inherit_opens_stdin_and_capture_does_not() {
        let mut s = spec();
        s.stdio = Stdio::Inherit;
        let body = container_body(&s, "x", Path::new("/e"), true, true, &docker());
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.tty, Some(true));
    }

    /// Proves the engine's init is asked for unless the backend knows the
    /// engine has none, and then `Init` is explicitly off (so an engine
    /// default of `init = true` cannot bring the failure back).
    #[test]
    fn init_is_explicit_either_way() {
        let s = spec();
        let with = container_body(&s, "x", Path::new("/e"), false, true, &docker());
        assert_eq!(with.host_config.unwrap().init, Some(true));
        let without = container_body(&s, "x", Path::new("/e"), false, false, &docker());
        assert_eq!(without.host_config.unwrap().init, Some(false));
        assert_eq!(without.cmd.unwrap(), s.argv, "the command itself, as PID 1");
    }

    /// Proves the decision to run again without an init: taken for the
    /// engines' real "init binary missing" errors (Podman at create, Docker
    /// at start), not for other errors that say "not found" (the step's
    /// own command, an image, a mount), and not when the missing program is
    /// the step's command that happens to be called like an init; and that
    /// the same errors get the hint naming what to install.
    #[test]
    fn a_missing_init_binary_is_recognised_and_hinted() {
        let lacking = [
            // Podman 4.3 (Debian 12) without catatonit, as seen on these machines.
            "Docker responded with status code 500: container create: container-init binary not found on the host: \
             stat /usr/libexec/podman/catatonit: no such file or directory",
            // Podman with init_path set in containers.conf.
            "container create: container-init binary not found on the host: stat /opt/bin/my-init: no such file",
            // Docker without docker-init.
            "Docker responded with status code 500: exec: \"docker-init\": executable file not found in $PATH",
            // Docker with an absolute init-path that is missing.
            "failed to create task for container: error mounting \"/usr/bin/tini\" to rootfs at \"/sbin/docker-init\": \
             stat /usr/bin/tini: no such file or directory",
        ];
        for message in lacking {
            assert!(engine_lacks_init(message, "/bin/sh"), "{message}");
            assert_eq!(start_hint(message, &spec()).as_deref(), Some(NO_INIT_HINT), "{message}");
        }
        let other = [
            "exec: \"npm\": executable file not found in $PATH",
            "crun: executable file `/usr/bin/node` not found: No such file or directory",
            "no such image: farm-root:00",
            "error mounting \"/work/out\" to rootfs at \"/out\": no such file or directory",
            "container init failed: rlimit nproc exceeds the hard limit",
            "container create: initialising: permission denied",
        ];
        for message in other {
            assert!(!engine_lacks_init(message, "/bin/sh"), "{message}");
        }
        // A step whose own command is called `tini` and is missing: that is
        // the step's error, not the engine's.
        assert!(!engine_lacks_init(
            "exec: \"tini\": executable file not found in $PATH",
            "tini"
        ));
        assert!(NO_INIT_HINT.contains("apt-get install catatonit") && NO_INIT_HINT.contains("docker-init"));
    }

    /// Proves every tmpfs gets its mode and owner explicitly, in the form
    /// each engine accepts: Docker `uid=`/`gid=` (it refuses `U`), Podman
    /// `U` for the step's user (it refuses `uid=`) and nothing for root.
    #[test]
    fn tmpfs_modes_and_owners_are_explicit_for_each_engine() {
        let mut s = spec();
        s.binds.retain(|b| b.read_only);
        let options = |s: &StepSpec, kind| {
            let body = container_body(s, "x", Path::new("/e"), false, true, &engine(kind));
            body.host_config.unwrap().tmpfs.unwrap()
        };
        let docker = options(&s, EngineKind::Docker);
        assert_eq!(docker["/build"], "rw,exec,nosuid,nodev,mode=0755,uid=1000,gid=1000");
        assert_eq!(docker["/out"], "rw,exec,nosuid,nodev,mode=0755,uid=1000,gid=1000");
        assert_eq!(docker["/tmp"], "rw,exec,nosuid,nodev,mode=1777,uid=0,gid=0");
        let podman = options(&s, EngineKind::Podman);
        assert_eq!(podman["/build"], "rw,exec,nosuid,nodev,mode=0755,U");
        assert_eq!(podman["/tmp"], "rw,exec,nosuid,nodev,mode=1777");
        s.uid = 0;
        s.gid = 0;
        let as_root = options(&s, EngineKind::Podman);
        assert_eq!(
            as_root["/build"], "rw,exec,nosuid,nodev,mode=0755",
            "root owns a tmpfs without `U`"
        );
    }

    /// Proves a memory limit the engine cannot apply (no memory cgroup)
    /// becomes RLIMIT_AS, the lower of it and `address_space`, and that
    /// swap is only limited where the engine can.
    #[test]
    fn memory_without_engine_support_becomes_rlimit_as() {
        let mut s = spec();
        s.limits.memory = Some(2 << 30);
        let mut e = docker();
        e.swap_limit = false;
        let hc = container_body(&s, "x", Path::new("/e"), false, true, &e)
            .host_config
            .unwrap();
        assert_eq!((hc.memory, hc.memory_swap), (Some(2 << 30), None));
        e.memory_limit = false;
        let as_limit = |s: &StepSpec| {
            let hc = container_body(s, "x", Path::new("/e"), false, true, &e)
                .host_config
                .unwrap();
            assert_eq!(hc.memory, None);
            let ulimits = hc.ulimits.unwrap();
            ulimits
                .iter()
                .find(|u| u.name.as_deref() == Some("as"))
                .map(|u| (u.soft, u.hard))
        };
        assert_eq!(as_limit(&s), Some((Some(2 << 30), Some(2 << 30))));
        s.limits.address_space = Some(1 << 30);
        assert_eq!(as_limit(&s), Some((Some(1 << 30), Some(1 << 30))));
    }

    fn version(api: &str, os: &str, components: &[(&str, &str)]) -> SystemVersion {
        SystemVersion {
            version: Some("20.10.24".into()),
            api_version: Some(api.into()),
            os: Some(os.into()),
            components: Some(
                components
                    .iter()
                    .map(|(name, version)| bollard::models::SystemVersionComponents {
                        name: name.to_string(),
                        version: version.to_string(),
                        details: None,
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// Proves the connect-time check: Docker and Podman are told apart by
    /// their components, memory support comes from /info, and an engine
    /// too old for farm (API 1.24) or running Windows containers is an
    /// error naming the engine, its API version and what farm needs.
    #[test]
    fn engines_are_identified_and_old_or_foreign_ones_refused() {
        let info = SystemInfo {
            memory_limit: Some(true),
            swap_limit: Some(false),
            ..Default::default()
        };
        let docker = engine_info(&version("1.41", "linux", &[("Engine", "20.10.24")]), &info).unwrap();
        assert_eq!(docker.kind, EngineKind::Docker);
        assert_eq!(docker.name, "Docker Engine 20.10.24");
        assert_eq!((docker.memory_limit, docker.swap_limit), (true, false));
        let podman = engine_info(
            &version("1.41", "linux", &[("Podman Engine", "4.3.1"), ("Conmon", "2.1.6")]),
            &SystemInfo::default(),
        )
        .unwrap();
        assert_eq!(
            (podman.kind, podman.name.as_str()),
            (EngineKind::Podman, "Podman Engine 4.3.1")
        );
        assert!(!podman.memory_limit, "unknown means unsupported");

        let (name, problem, hint) = engine_info(&version("1.24", "linux", &[("Engine", "1.12.6")]), &info).unwrap_err();
        assert_eq!(name, "Docker Engine 20.10.24");
        assert!(
            problem.contains("API 1.24") && problem.contains("1.25 or later"),
            "{problem}"
        );
        assert!(hint.contains("upgrade"), "{hint}");
        let (_, problem, _) = engine_info(&version("1.41", "windows", &[]), &info).unwrap_err();
        assert!(problem.contains("windows"), "{problem}");
        let (_, problem, _) = engine_info(&version("", "linux", &[]), &info).unwrap_err();
        assert!(problem.contains("API version"), "{problem}");
        let e = ContainerError::Unsupported {
            host: "unix:///x.sock".into(),
            engine: name,
            problem,
            hint,
        }
        .to_string();
        assert!(
            e.contains("unix:///x.sock") && e.contains("Docker Engine") && e.contains("hint:"),
            "{e}"
        );
    }

    /// Proves a writable dir below a writable bind gets no tmpfs of its own,
    /// and one below a read-only bind does.
    #[test]
    fn tmpfs_only_where_no_writable_bind_covers_the_dir() {
        let mut s = spec();
        s.binds = vec![Bind::writable("/w/build", "/build"), Bind::read_only("/w/src", "/src")];
        s.writable = vec![
            "/build/cache".into(),
            "/src/gen".into(),
            "/tmp".into(),
            "/dev/shm".into(),
        ];
        assert_eq!(tmpfs_dirs(&s), [PathBuf::from("/src/gen"), PathBuf::from("/tmp")]);
    }

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(dir.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(dir.join("etc/b"), b"b").unwrap();
        fs::write(dir.join("etc/a"), b"a").unwrap();
        std::os::unix::fs::symlink("bin", dir.join("sbin")).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(dir.join(&long)).unwrap();
        fs::write(dir.join(&long).join("f".repeat(100)), b"long").unwrap();
    }

    fn tar_of(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write_root_tar(dir, &[], &mut out).unwrap();
        out
    }

    /// Proves the mount points of the writable dirs are written with the
    /// mode and owner of their mount (also the sticky bit of /tmp) and
    /// without their contents, that other directories keep theirs, and that
    /// mount points the root lacks are not added.
    #[test]
    fn mount_points_in_the_root_tar_have_the_mounts_mode_and_no_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        tree(&root);
        fs::create_dir_all(root.join("tmp/leftover")).unwrap();
        fs::write(root.join("tmp/leftover/file"), b"x").unwrap();
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o555)).unwrap();
        let s = spec();
        let points = mount_points(&s);
        let paths: Vec<&Path> = points.iter().map(|p| p.path.as_path()).collect();
        assert_eq!(paths, [Path::new("/build"), Path::new("/out"), Path::new("/tmp")]);
        let mut bytes = Vec::new();
        write_root_tar(&root, &points, &mut bytes).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            let path = entry.path().unwrap().display().to_string();
            let found = (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap());
            match path.as_str() {
                "tmp" => assert_eq!(found, (0o1777, 0, 0)),
                "etc" => assert_eq!(found, (0o755, 0, 0)),
                _ => {}
            }
            seen.push(path);
        }
        assert!(seen.contains(&"tmp".to_string()));
        assert!(!seen.iter().any(|p| p.starts_with("tmp/")), "{seen:?}");
        assert!(!seen.iter().any(|p| p == "build" || p == "out"), "{seen:?}");
        fs::create_dir(root.join("build")).unwrap();
        let mut bytes = Vec::new();
        write_root_tar(&root, &points, &mut bytes).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let build = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap() == Path::new("build"))
            .unwrap();
        let h = build.header();
        assert_eq!(
            (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0o755, 1000, 1000)
        );
    }

    /// Proves the root tar is the same bytes for the same tree regardless of
    /// mtimes and creation order, lists entries sorted with owner 0, mtime 1,
    /// no setuid bit, keeps symlinks, and handles names over 100 bytes.
    #[test]
    fn root_tar_is_deterministic_and_normalised() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        tree(&a);
        std::thread::sleep(Duration::from_millis(10));
        tree(&b);
        let bytes = tar_of(&a);
        assert_eq!(bytes, tar_of(&b));

        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()), (0, 0, 1));
            let path = entry.path().unwrap().display().to_string();
            if path == "bin/tool" {
                assert_eq!(h.mode().unwrap(), 0o755, "setuid dropped");
            }
            if path == "sbin" {
                assert_eq!(entry.link_name().unwrap().unwrap(), Path::new("bin"));
            }
            seen.push(path);
        }
        let long = "d".repeat(120);
        let long_file = format!("{long}/{}", "f".repeat(100));
        assert_eq!(
            seen,
            [
                "bin",
                "bin/tool",
                long.as_str(),
                long_file.as_str(),
                "etc",
                "etc/a",
                "etc/b",
                "sbin"
            ]
        );
    }

    /// Proves special files are refused with the path named.
    #[test]
    fn root_tar_refuses_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &tmp.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = write_root_tar(tmp.path(), &[], io::sink()).unwrap_err().to_string();
        assert!(e.contains("fifo") && e.contains("FIFO"), "{e}");
    }

    /// Proves a store entry is tagged by the digest in its name (its
    /// content is not read), any other directory by its content, and both
    /// by the mount points: a change of any of these gives another tag.
    #[test]
    fn image_tags_come_from_the_store_digest_or_the_content_and_the_mount_points() {
        let tmp = tempfile::tempdir().unwrap();
        let points = mount_points(&spec());
        let hex = "0123456789abcdef".repeat(4);
        let entry = tmp.path().join(format!("{hex}-debian-root"));
        fs::create_dir(&entry).unwrap();
        let tag = root_image_tag(&entry, &points).unwrap();
        assert_eq!(tag.len(), 32);
        assert!(tag.bytes().all(|c| c.is_ascii_hexdigit()));
        fs::write(entry.join("unread"), b"x").unwrap();
        assert_eq!(root_image_tag(&entry, &points).unwrap(), tag, "named by digest");
        let other = tmp.path().join(format!("{}-debian-root", "f".repeat(64)));
        fs::create_dir(&other).unwrap();
        assert_ne!(root_image_tag(&other, &points).unwrap(), tag);
        assert_ne!(root_image_tag(&entry, &points[..1]).unwrap(), tag);
        let mut moved = points.clone();
        moved[0].mode = 0o700;
        assert_ne!(root_image_tag(&entry, &moved).unwrap(), tag);

        let plain = tmp.path().join("root");
        tree(&plain);
        let first = root_image_tag(&plain, &points).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(root_image_tag(&plain, &points).unwrap(), first);
        fs::write(plain.join("etc/a"), b"changed").unwrap();
        let changed = root_image_tag(&plain, &points).unwrap();
        assert_ne!(changed, first);
        fs::create_dir(plain.join("tmp")).unwrap();
        assert_ne!(
            root_image_tag(&plain, &points).unwrap(),
            root_image_tag(&plain, &[]).unwrap()
        );

        // Uppercase or short hex is not a store name: its content is read.
        let upper = tmp.path().join(format!("{}-x", hex.to_uppercase()));
        fs::create_dir(&upper).unwrap();
        let before = root_image_tag(&upper, &points).unwrap();
        fs::write(upper.join("f"), b"x").unwrap();
        assert_ne!(root_image_tag(&upper, &points).unwrap(), before);
    }

    /// Proves commands are looked up through binds, the root and its
    /// symlinks (absolute ones against the container's root), that a
    /// surely missing command is reported, and that paths farm cannot see
    /// (under a tmpfs, relative) are left to the engine.
    #[test]
    fn commands_are_looked_up_like_execvp_inside_the_container() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        fs::write(root.join("usr/bin/tool"), b"").unwrap();
        fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("usr/bin/data"), b"").unwrap();
        std::os::unix::fs::symlink("/usr/bin/tool", root.join("usr/bin/abs-link")).unwrap();
        let node = tmp.path().join("node");
        fs::create_dir_all(node.join("bin")).unwrap();
        fs::write(node.join("bin/node"), b"").unwrap();
        fs::set_permissions(node.join("bin/node"), fs::Permissions::from_mode(0o755)).unwrap();

        let mut s = spec();
        s.binds = vec![Bind::read_only(&node, "/farm/store/x-node")];
        s.env = vec![("PATH".into(), "/farm/store/x-node/bin:/bin".into())];
        let missing = |s: &StepSpec, argv0: &str| {
            let mut s = s.clone();
            s.argv[0] = argv0.into();
            command_missing(&s, &root)
        };
        assert_eq!(missing(&s, "node"), None);
        assert_eq!(missing(&s, "tool"), None);
        assert_eq!(missing(&s, "abs-link"), None);
        assert_eq!(missing(&s, "/bin/tool"), None);
        assert_eq!(missing(&s, "/farm/store/x-node/../x-node/bin/node"), None);
        assert_eq!(missing(&s, "python3").as_deref(), Some("/farm/store/x-node/bin:/bin"));
        assert_eq!(
            missing(&s, "data").as_deref(),
            Some("/farm/store/x-node/bin:/bin"),
            "not executable"
        );
        assert!(missing(&s, "/usr/bin/nope").is_some());
        assert_eq!(
            missing(&s, "./configure"),
            None,
            "relative to the cwd: the engine decides"
        );
        assert_eq!(missing(&s, "/build/run.sh"), None, "under a tmpfs: the engine decides");
        s.env.clear();
        assert_eq!(missing(&s, "python3"), None, "without PATH the engine uses its default");
    }

    /// Proves one backend can be shared by the threads of a parallel build.
    #[test]
    fn the_backend_is_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<ContainerBackend>();
    }

    /// Proves host-path roots are refused before any engine is involved, with a hint.
    #[test]
    fn host_path_roots_are_refused_with_a_hint() {
        let mut s = spec();
        s.root = RootSpec::HostPaths(vec!["/usr".into()]);
        let e = resolve_host_paths(&s).unwrap_err().to_string();
        assert!(
            e.contains("HostPaths") && e.contains("/usr") && e.contains("hint:"),
            "{e}"
        );
    }

    /// Proves opening up a writable bind reaches nested files and dirs and
    /// keeps executables executable.
    #[test]
    fn writable_binds_are_opened_recursively() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("out");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/f"), b"").unwrap();
        fs::write(d.join("x"), b"").unwrap();
        fs::set_permissions(d.join("sub/f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(d.join("x"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
        open_up(&d).unwrap();
        let mode = |p: &str| fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("sub"), 0o777);
        assert_eq!(mode("sub/f"), 0o666);
        assert_eq!(mode("x"), 0o777);
    }

    /// Proves the generated /etc files are those of the native sandbox.
    #[test]
    fn etc_files_match_the_native_sandbox() {
        let s = spec();
        let files: HashMap<_, _> = etc_files(&s).into_iter().collect();
        assert_eq!(files["passwd"], etc::passwd(1000, 1000));
        assert!(files["passwd"].starts_with("build:x:1000:1000:"));
        assert_eq!(files["hosts"], etc::hosts("farm"));
        assert_eq!(files["resolv.conf"], "");
    }

    /// Proves an explicit engine address wins over DOCKER_HOST and defaults.
    #[test]
    fn an_explicit_host_wins() {
        assert_eq!(engine_host(Some("unix:///x/podman.sock")), "unix:///x/podman.sock");
        assert!(engine_host(None).contains("://"));
    }
}
