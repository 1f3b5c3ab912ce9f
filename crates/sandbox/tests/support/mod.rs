//! Shared set-up for the sandbox's integration tests: steps rooted in the
//! host's /usr, /lib, /lib64, /bin and /sbin (so /bin/sh, coreutils and
//! python3 exist), run either in this (multi-threaded) test process or
//! through the `farm-sandbox-run` binary as an unprivileged user.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use farm_sandbox::{standard_env, Outcome, RootSpec, Sandbox, SandboxError, Stdio, StepSpec};

pub const HOSTNAME: &str = "farm-sandbox-test";
pub const EPOCH: u64 = 1_700_000_000;
/// The unprivileged user the tests switch to when they run as root.
pub const NOBODY: u32 = 65534;

pub fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_farm-sandbox-run"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A string no other process on the machine has in its argv.
pub fn marker() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}{:09}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory that an unprivileged user can use too.
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("farm-sandbox-test-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

pub struct Step {
    pub spec: StepSpec,
    /// Holds the log (and whatever the test puts there); removed on drop.
    pub dir: tempfile::TempDir,
}

/// A step running `sh -c script` with the standard environment.
pub fn shell(script: &str) -> Step {
    step(vec!["/bin/sh".into(), "-c".into(), script.into()])
}

pub fn step(argv: Vec<String>) -> Step {
    let dir = open_tempdir();
    let root: Vec<PathBuf> = ["/usr", "/lib", "/lib64", "/bin", "/sbin"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    let log = dir.path().join("step.log");
    let mut spec = StepSpec::new(RootSpec::HostPaths(root), argv, Stdio::Capture { log, stream: false });
    spec.env = standard_env("/usr/local/bin:/usr/bin:/bin", EPOCH);
    spec.hostname = HOSTNAME.to_string();
    spec.timeout = Some(Duration::from_secs(60));
    Step { spec, dir }
}

pub fn log_of(outcome: &Outcome) -> String {
    std::fs::read_to_string(outcome.log.as_ref().expect("captured step has a log")).unwrap()
}

/// Who calls the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// This test process (multi-threaded, as `farm` is), as the current user, with the helper forked from it.
    InProcess,
    /// `farm-sandbox-run` as uid/gid 65534 when the tests run as root, else as the current user.
    Unprivileged,
    /// `farm-sandbox-run` as the current user, with extra variables in its environment.
    Subprocess,
}

/// A world-readable copy of the helper binary: the build directory may not
/// be reachable by the unprivileged user. Kept in one directory and keyed
/// by the binary's size and mtime, so runs reuse it and stale copies go.
fn helper_copy() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let src = helper();
        let meta = std::fs::metadata(&src).unwrap();
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("farm-sandbox-test-helper-{}", nix::unistd::geteuid()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join(format!("farm-sandbox-run-{}-{mtime}", meta.len()));
        if !bin.exists() {
            for stale in std::fs::read_dir(&dir).unwrap().flatten() {
                let _ = std::fs::remove_file(stale.path());
            }
            // Copied by `cp`, not by this process: a child another test thread forks while we held the
            // file open for writing would keep it busy (ETXTBSY) for every later exec.
            let partial = dir.join(format!(".partial-{}", std::process::id()));
            let status = Command::new("cp").arg(&src).arg(&partial).status().unwrap();
            assert!(status.success(), "cp of the helper failed");
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&partial, &bin).unwrap();
        }
        bin
    })
}

/// `farm-sandbox-run` as the unprivileged user (or as the current user when the suite is not root).
pub fn unprivileged_command() -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ]);
        c.arg(helper_copy());
        c
    } else {
        Command::new(helper_copy())
    }
}

/// Spawns, retrying on ETXTBSY: a process that another test thread forked while the helper copy was being
/// written holds it open for writing until that process execs.
pub fn spawn_retrying(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Runs the step as `caller`; `extra_env` is added to the *caller's* environment.
pub fn run_as(caller: Caller, spec: &StepSpec, extra_env: &[(&str, &str)]) -> Result<Outcome, String> {
    match caller {
        Caller::InProcess => {
            assert!(
                extra_env.is_empty(),
                "in-process runs cannot change the environment safely"
            );
            // The helper forked from this multi-threaded process, as farm does.
            Sandbox::default().run(spec).map_err(|e: SandboxError| e.to_string())
        }
        Caller::Unprivileged | Caller::Subprocess => finish(start(caller, spec, extra_env)?),
    }
}

/// Starts `farm-sandbox-run` as `caller` (not `InProcess`) on `spec`; the
/// child's pid is the farm process that makes the step's cgroups.
pub fn start(caller: Caller, spec: &StepSpec, extra_env: &[(&str, &str)]) -> Result<std::process::Child, String> {
    let mut cmd = match caller {
        Caller::Unprivileged => unprivileged_command(),
        Caller::Subprocess => Command::new(helper_copy()),
        Caller::InProcess => panic!("start() runs a subprocess"),
    };
    cmd.envs(extra_env.iter().copied())
        .stdin(ProcStdio::piped())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped());
    let mut child = spawn_retrying(&mut cmd).map_err(|e| format!("spawn farm-sandbox-run: {e}"))?;
    // A caller that failed early closed stdin; its stderr says why.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(spec).unwrap().as_bytes());
    Ok(child)
}

/// Waits for a `farm-sandbox-run` started by [`start`]: its outcome, or its error message.
pub fn finish(child: std::process::Child) -> Result<Outcome, String> {
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("outcome JSON: {e}: {:?}", out.stdout))
}

/// Runs in-process and expects the step to have run (any status).
pub fn run(spec: &StepSpec) -> (Outcome, String) {
    let outcome = run_as(Caller::InProcess, spec, &[]).unwrap_or_else(|e| panic!("sandbox failed: {e}"));
    let log = log_of(&outcome);
    (outcome, log)
}

/// Host processes whose command line contains `marker`.
pub fn host_processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

/// The sandbox helper started by the caller process `caller_pid`.
pub fn helper_of(caller_pid: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|p| p.trim().to_string());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        // A re-executed helper shows its argument; a forked one its name.
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let is_helper =
            String::from_utf8_lossy(&cmdline).contains(farm_sandbox::HELPER_ARG) || comm == "farm-sandbox\n";
        if ppid == Some(caller_pid.to_string()) && is_helper {
            return Some(pid);
        }
    }
    None
}

/// A child process that is killed and reaped when the test ends, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
