//! The caller's side: start the helper, hand it the request, capture the
//! step's output, enforce the timeout and turn the helper's reports into an
//! `Outcome` or an error. This side may be multi-threaded.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

use crate::cgroup::{self, StepCgroup};
use crate::channel::{self, Report, Request};
use crate::error::{SandboxError, Stage};
use crate::namespaces;
use crate::proxy::{self, HostProxy};
use crate::spec::{Bind, Network, Outcome, RootSpec, Stdio, StepSpec};
use crate::terminal::{Relay, StepTerminal};
use crate::HELPER_ARG;

/// Where the helper's stdin/stdout/stderr come from and go.
enum HelperIo<'a> {
    Null,
    /// The caller's own, except that a terminal among them is replaced by the step's own.
    Inherit(Option<StepTerminal>),
    Capture {
        log: &'a Path,
        stream: bool,
    },
}

struct Running {
    child: Child,
    pidfd: Option<OwnedFd>,
    /// Write end of the request pipe, held until the helper has ended.
    lifeline: File,
    reports: JoinHandle<io::Result<Vec<Report>>>,
    output: Option<JoinHandle<io::Result<()>>>,
    terminal: Option<Relay>,
}

struct Ended {
    status: ExitStatus,
    timed_out: bool,
    reports: Vec<Report>,
    output: io::Result<()>,
}

pub(crate) fn run(helper: &Path, spec: &StepSpec) -> Result<Outcome, SandboxError> {
    spec.validate()?;
    let mut spec = resolve_host_paths(spec)?;
    let cgroup = StepCgroup::create(&spec.limits, cgroup::parents());
    if cgroup.memory().is_some() {
        // The helper sets what the cgroup does not: RLIMIT_DATA is for `memory` without one.
        spec.limits.memory = None;
    }
    let proxy = match &spec.network {
        Network::Proxy { allow } => Some(HostProxy::start(allow)?),
        _ => None,
    };
    if let Some(p) = &proxy {
        // Canonical, as resolve_host_paths made every other source (TMPDIR may be a symlink).
        let socket = fs::canonicalize(p.socket()).map_err(|source| proxy::ProxyError {
            action: "resolve its socket's path",
            source,
        })?;
        spec.binds.push(Bind::read_only(socket, proxy::SOCKET_IN_SANDBOX));
        for (k, v) in proxy::env() {
            spec.env.retain(|(name, _)| *name != k);
            spec.env.push((k, v));
        }
    }
    let resolv_conf = match spec.network {
        Network::Host => fs::read_to_string("/etc/resolv.conf").ok(),
        Network::None | Network::Proxy { .. } => None,
    };
    let (log, stream) = match &spec.stdio {
        Stdio::Capture { log, stream } => (Some(log.clone()), *stream),
        Stdio::Inherit => (None, false),
    };
    let io = match &log {
        Some(log) => HelperIo::Capture { log, stream },
        None => HelperIo::Inherit(StepTerminal::open_if_caller_has_one()?),
    };
    let timeout = spec.timeout;
    let request = Request::Run {
        spec: Box::new(spec),
        resolv_conf,
        terminal: matches!(io, HelperIo::Inherit(Some(_))),
    };
    let ended = spawn(helper, &request, io, &cgroup)?.wait(timeout)?;
    drop(proxy);
    let exceeded = cgroup.exceeded();
    cgroup.remove()?;

    let finished = ended.reports.iter().find_map(|r| match r {
        Report::Finished { status, peak_rss_kib } => Some((*status, *peak_rss_kib)),
        _ => None,
    });
    // A limit only explains a step that did not succeed.
    if let Some(limit) = exceeded {
        let status = match finished {
            Some((status, _)) => Some(status),
            None if ended.timed_out => Some(128 + libc::SIGKILL),
            None => ended.status.code().or(ended.status.signal().map(|s| 128 + s)),
        };
        if ended.timed_out || status != Some(0) {
            return Err(SandboxError::LimitExceeded {
                limit,
                status: status.unwrap_or(128 + libc::SIGKILL),
                log,
            });
        }
    }
    if let Some(e) = first_failure(&ended.reports) {
        return Err(e);
    }
    if let (Err(source), Some(path)) = (ended.output, &log) {
        return Err(SandboxError::Log {
            path: path.clone(),
            source,
        });
    }
    match finished {
        Some((status, peak_rss_kib)) => Ok(Outcome {
            status,
            timed_out: false,
            log,
            peak_rss_kib,
        }),
        None if ended.timed_out => Ok(Outcome {
            status: 128 + libc::SIGKILL,
            timed_out: true,
            log,
            peak_rss_kib: None,
        }),
        None => Err(SandboxError::HelperVanished {
            helper: helper.to_path_buf(),
            status: describe(ended.status),
        }),
    }
}

pub(crate) fn probe(helper: &Path) -> Result<(), SandboxError> {
    // Generous: set-up takes milliseconds, but a loaded CI machine must not fail the probe.
    let no_cgroup = StepCgroup::create(&crate::spec::Limits::default(), &cgroup::CgroupParents::default());
    let ended = spawn(helper, &Request::Probe, HelperIo::Null, &no_cgroup)?.wait(Some(Duration::from_secs(60)))?;
    if let Some(e) = first_failure(&ended.reports) {
        return Err(e);
    }
    if ended.reports.contains(&Report::ProbeOk) {
        return Ok(());
    }
    Err(SandboxError::HelperVanished {
        helper: helper.to_path_buf(),
        status: describe(ended.status),
    })
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

fn first_failure(reports: &[Report]) -> Option<SandboxError> {
    reports.iter().find_map(|r| match r {
        Report::SetupFailed { stage, message, errno } => Some(setup_error(*stage, message, *errno)),
        _ => None,
    })
}

fn read_knob(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn setup_error(stage: Stage, message: &str, errno: Option<i32>) -> SandboxError {
    if matches!(stage, Stage::Namespaces | Stage::IdMap) {
        return SandboxError::UserNamespacesUnavailable {
            message: format!("{stage}: {message}"),
            hint: Some(namespaces::unavailable_hint()),
        };
    }
    let denied = matches!(errno, Some(libc::EPERM) | Some(libc::EACCES));
    let apparmor = read_knob("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1");
    let hint = match stage {
        Stage::Rootfs | Stage::Dev | Stage::Proc | Stage::Hostname | Stage::Network if denied && apparmor => {
            Some(namespaces::unavailable_hint())
        }
        Stage::Proc if denied => Some(
            "the kernel mounts a new /proc in a user namespace only when the host's /proc is fully visible; \
             inside a container that masks parts of /proc, use the container backend"
                .to_string(),
        ),
        _ => None,
    };
    SandboxError::Setup {
        stage,
        message: message.to_string(),
        hint,
    }
}

/// Canonicalises host paths here, where the host's root is the real one:
/// the helper reads them below /oldroot, where an absolute symlink would
/// resolve against the wrong root.
fn resolve_host_paths(spec: &StepSpec) -> Result<StepSpec, SandboxError> {
    let mut spec = spec.clone();
    let host_err = |field: String, path: &Path, problem: String, hint: Option<&str>| SandboxError::HostPath {
        field,
        path: path.to_path_buf(),
        problem,
        hint: hint.map(str::to_string),
    };
    for (i, b) in spec.binds.iter_mut().enumerate() {
        b.source = fs::canonicalize(&b.source)
            .map_err(|e| host_err(format!("binds[{i}].source"), &b.source, e.to_string(), None))?;
    }
    match &mut spec.root {
        RootSpec::Dir(dir) => {
            let real = fs::canonicalize(&*dir).map_err(|e| host_err("root".into(), dir, e.to_string(), None))?;
            if !real.is_dir() {
                return Err(host_err("root".into(), dir, "is not a directory".into(), None));
            }
            *dir = real;
        }
        RootSpec::HostPaths(paths) => {
            for (i, p) in paths.iter().enumerate() {
                if let Err(e) = fs::symlink_metadata(p) {
                    let hint = "leave out root paths this host does not have (e.g. /lib64 on some architectures)";
                    return Err(host_err(format!("root[{i}]"), p, e.to_string(), Some(hint)));
                }
                let parent = p.parent().unwrap_or(Path::new("/"));
                if fs::canonicalize(parent).ok().as_deref() != Some(parent) {
                    return Err(host_err(
                        format!("root[{i}]"),
                        p,
                        "has a symlink among its parent directories".into(),
                        Some("list the path it resolves to instead"),
                    ));
                }
            }
        }
    }
    Ok(spec)
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) with integer arguments; a valid result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn channel_err(context: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Channel { context, source }
}

fn spawn(helper: &Path, request: &Request, io: HelperIo<'_>, cgroup: &StepCgroup) -> Result<Running, SandboxError> {
    let (req_r, req_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| channel_err("create the request pipe")(e.into()))?;
    let (rep_r, rep_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| channel_err("create the report pipe")(e.into()))?;

    let mut cmd = Command::new(helper);
    cmd.arg(HELPER_ARG)
        .arg(req_r.as_raw_fd().to_string())
        .arg(rep_w.as_raw_fd().to_string());
    // The helper needs no environment, and the step gets only its own.
    cmd.env_clear();
    let mut output_r = None;
    let mut terminal = None;
    match io {
        HelperIo::Null => {
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        HelperIo::Inherit(None) => {}
        HelperIo::Inherit(Some(t)) => {
            if let Some(s) = t.helper_stdio(0)? {
                cmd.stdin(s);
            }
            if let Some(s) = t.helper_stdio(1)? {
                cmd.stdout(s);
            }
            if let Some(s) = t.helper_stdio(2)? {
                cmd.stderr(s);
            }
            terminal = Some(t);
        }
        HelperIo::Capture { log, stream } => {
            let file = File::create(log).map_err(|source| SandboxError::Log {
                path: log.to_path_buf(),
                source,
            })?;
            let (out_r, out_w) =
                pipe2(OFlag::O_CLOEXEC).map_err(|e| channel_err("create the output pipe")(e.into()))?;
            let out_w2 = out_w.try_clone().map_err(channel_err("duplicate the output pipe"))?;
            cmd.stdin(std::process::Stdio::null()).stdout(out_w).stderr(out_w2);
            output_r = Some((out_r, file, stream, log.to_path_buf()));
        }
    }
    let inherit = [req_r.as_raw_fd(), rep_w.as_raw_fd()];
    // SAFETY: only fcntl(2), which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| {
        let hint = matches!(source.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound).then(|| {
            "the helper is the farm binary itself (or a test binary calling helper_main); \
             it must exist and be executable by the calling user"
                .to_string()
        });
        SandboxError::Spawn {
            helper: helper.to_path_buf(),
            source,
            hint,
        }
    })?;
    // Our copies of the child's ends must close, or EOF never comes.
    drop(cmd);
    drop(req_r);
    drop(rep_w);
    // Before the request: the helper waits for it before it does anything,
    // so everything of the step starts inside the cgroup.
    if let Err(e) = cgroup.add(child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.into());
    }
    let pidfd = pidfd_open(child.id());
    let terminal = terminal.map(StepTerminal::start_relay);

    // One line; the pipe then stays open as the helper's lifeline until we have waited for it.
    // A helper that died at once closed its end: the reports then say why.
    let mut lifeline = File::from(req_w);
    let mut line = serde_json::to_vec(request).unwrap_or_default();
    line.push(b'\n');
    let _ = lifeline.write_all(&line);

    let reports = std::thread::spawn(move || channel::read_reports(File::from(rep_r)));
    let output = output_r.map(|(out_r, file, stream, _)| std::thread::spawn(move || copy_output(out_r, file, stream)));
    Ok(Running {
        child,
        pidfd,
        lifeline,
        reports,
        output,
        terminal,
    })
}

/// Copies the step's output into the log (and to our stderr when streaming).
/// Keeps draining after a write error so the step never blocks on a full pipe.
fn copy_output(out: OwnedFd, mut log: File, stream: bool) -> io::Result<()> {
    let mut out = File::from(out);
    let mut buf = vec![0u8; 64 * 1024];
    let mut first_err = None;
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if first_err.is_none() {
            if let Err(e) = log.write_all(&buf[..n]) {
                first_err = Some(e);
            }
        }
        if stream {
            // A closed stderr must not fail the build.
            let _ = io::stderr().lock().write_all(&buf[..n]);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => log.flush(),
    }
}

impl Running {
    fn wait(mut self, timeout: Option<Duration>) -> Result<Ended, SandboxError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let timed_out = match deadline {
            Some(deadline) => self.wait_until(deadline).map_err(channel_err("wait for the helper"))?,
            None => false,
        };
        if timed_out {
            // The helper's PID 1 has a parent-death signal: killing the helper kills the whole sandbox.
            let _ = self.child.kill();
        }
        let status = self.child.wait().map_err(channel_err("wait for the helper"))?;
        // What the step's terminal still holds reaches the caller's, then its settings are restored.
        drop(self.terminal);
        drop(self.lifeline);
        let reports = self
            .reports
            .join()
            .unwrap_or_else(|_| Ok(Vec::new()))
            .map_err(channel_err("read reports"))?;
        let output = match self.output {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("output thread panicked"))),
            None => Ok(()),
        };
        Ok(Ended {
            status,
            timed_out,
            reports,
            output,
        })
    }

    /// True when the deadline passed with the helper still running.
    fn wait_until(&mut self, deadline: Instant) -> io::Result<bool> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(self.child.try_wait()?.is_none());
            }
            let left = deadline - now;
            match &self.pidfd {
                Some(fd) => {
                    let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
                        Ok(n) if n > 0 => return Ok(false),
                        Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {
                    // Kernels before 5.3 have no pidfd: check at short intervals up to the deadline.
                    if self.child.try_wait()?.is_some() {
                        return Ok(false);
                    }
                    std::thread::sleep(left.min(Duration::from_millis(20)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_failures_become_user_namespace_errors_with_a_hint() {
        let e = setup_error(Stage::Namespaces, "unshare(...) failed: EPERM", Some(libc::EPERM));
        match e {
            SandboxError::UserNamespacesUnavailable {
                message,
                hint: Some(hint),
            } => {
                assert!(message.contains("EPERM"));
                assert!(!hint.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = setup_error(
            Stage::Rootfs,
            "bind-mount onto `/newroot/x`: ENOENT",
            Some(libc::ENOENT),
        );
        assert!(matches!(
            e,
            SandboxError::Setup {
                stage: Stage::Rootfs,
                hint: None,
                ..
            }
        ));
    }

    #[test]
    fn missing_host_paths_are_reported_before_anything_starts() {
        let mut spec = StepSpec::new(
            RootSpec::HostPaths(vec!["/nonexistent-farm-root".into()]),
            vec!["true".into()],
            Stdio::Inherit,
        );
        let e = resolve_host_paths(&spec).unwrap_err().to_string();
        assert!(
            e.contains("root[0]") && e.contains("/nonexistent-farm-root") && e.contains("hint:"),
            "{e}"
        );

        spec.root = RootSpec::HostPaths(vec![]);
        spec.binds.push(crate::Bind::read_only("/nonexistent-farm-src", "/src"));
        let e = resolve_host_paths(&spec).unwrap_err().to_string();
        assert!(
            e.contains("binds[0].source") && e.contains("/nonexistent-farm-src"),
            "{e}"
        );
    }
}
