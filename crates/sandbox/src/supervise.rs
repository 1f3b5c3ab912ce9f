//! The caller's side: start the helper, hand it the request, capture the
//! step's output, enforce the timeout and turn the helper's reports into an
//! `Outcome` or an error. This side may be multi-threaded.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};

use crate::cgroup::{self, StepCgroup};
use crate::channel::{self, Report, Request};
use crate::error::{SandboxError, Stage};
use crate::namespaces;
use crate::proxy::{self, HostProxy};
use crate::spec::{Bind, Network, Outcome, RootSpec, Stdio, StepSetup, StepSpec};
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
    helper: HelperProcess,
    pidfd: Option<OwnedFd>,
    /// Write end of the request pipe, held until the helper has ended.
    lifeline: File,
    reports: ReportReader,
    output: Option<JoinHandle<io::Result<()>>>,
    terminal: Option<Relay>,
}

struct Ended {
    status: ExitStatus,
    timed_out: bool,
    reports: Vec<Report>,
    output: io::Result<()>,
}

pub(crate) fn run(
    launch: &Launch,
    spec: &StepSpec,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Outcome, SandboxError> {
    spec.validate()?;
    let spec = resolve_host_paths(spec)?;
    let prepared = prepare(launch, &StepSetup::of(&spec))?;
    finish(prepared, spec, cancel)
}

/// A helper started for a step's `StepSetup`: in the step's cgroup and,
/// soon, its namespaces, waiting for the step. Dropped unused, it is ended.
pub(crate) struct Prepared {
    setup: StepSetup,
    launch: Launch,
    /// Whether the helper's stdio are the step's own pseudo-terminal.
    terminal: bool,
    running: Option<Running>,
    cgroup: Option<StepCgroup>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abandon();
        }
        // The cgroup's own Drop removes it.
    }
}

/// Makes the step's cgroup and starts its helper with `Request::Enter`.
pub(crate) fn prepare(launch: &Launch, setup: &StepSetup) -> Result<Prepared, SandboxError> {
    let cgroup = StepCgroup::create(&setup.limits, cgroup::parents());
    let io = match &setup.stdio {
        Stdio::Capture { log, stream } => HelperIo::Capture { log, stream: *stream },
        Stdio::Inherit => HelperIo::Inherit(StepTerminal::open_if_caller_has_one()?),
    };
    let terminal = matches!(io, HelperIo::Inherit(Some(_)));
    let enter = Request::Enter {
        network: setup.network.clone(),
        uid: setup.uid,
        gid: setup.gid,
    };
    let running = spawn(launch, &enter, io, &cgroup)?;
    Ok(Prepared {
        setup: setup.clone(),
        launch: launch.clone(),
        terminal,
        running: Some(running),
        cgroup: Some(cgroup),
    })
}

/// Runs `spec` with the helper `prepared` for it.
pub(crate) fn run_prepared(
    prepared: Prepared,
    spec: &StepSpec,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Outcome, SandboxError> {
    spec.validate()?;
    let found = StepSetup::of(spec);
    if found != prepared.setup {
        return Err(SandboxError::InvalidSpec {
            field: "network, uid, gid, limits and stdio".into(),
            expected: format!("those the helper was prepared for: {:?}", prepared.setup),
            found: format!("{found:?}"),
        });
    }
    let spec = resolve_host_paths(spec)?;
    finish(prepared, spec, cancel)
}

/// The step's request to the prepared helper, then waiting and the outcome.
fn finish(
    mut prepared: Prepared,
    mut spec: StepSpec,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Outcome, SandboxError> {
    if prepared.cgroup.as_ref().is_some_and(|c| c.memory().is_some()) {
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
    let log = match &spec.stdio {
        Stdio::Capture { log, .. } => Some(log.clone()),
        Stdio::Inherit => None,
    };
    let timeout = spec.timeout;
    let request = Request::Run {
        spec: Box::new(spec),
        resolv_conf,
        terminal: prepared.terminal,
    };
    let (Some(mut running), Some(cgroup)) = (prepared.running.take(), prepared.cgroup.take()) else {
        unreachable!("a Prepared is run once");
    };
    let launch = prepared.launch.clone();
    running.send(&request);
    let ended = running.wait(timeout, cancel)?;
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
            helper: launch.describe(),
            status: describe(ended.status),
        }),
    }
}

pub(crate) fn probe(launch: &Launch) -> Result<(), SandboxError> {
    // Generous: set-up takes milliseconds, but a loaded CI machine must not fail the probe.
    let no_cgroup = StepCgroup::create(&crate::spec::Limits::default(), &cgroup::CgroupParents::default());
    let ended =
        spawn(launch, &Request::Probe, HelperIo::Null, &no_cgroup)?.wait(Some(Duration::from_secs(60)), None)?;
    if let Some(e) = first_failure(&ended.reports) {
        return Err(e);
    }
    if ended.reports.contains(&Report::ProbeOk) {
        return Ok(());
    }
    Err(SandboxError::HelperVanished {
        helper: launch.describe(),
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
        Stage::Cgroup => Some(
            "farm makes a cgroup per step for its memory and process limits; \
             check that the calling user may still write to it"
                .to_string(),
        ),
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

/// How the helper process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Launch {
    /// A child forked from this process runs the helper's code directly: no
    /// execve, no dynamic loading, no second start of the program. The
    /// child is single-threaded, as a user namespace requires, even when
    /// this process is not.
    Fork,
    /// The given binary, re-executed with [`HELPER_ARG`].
    Exec(PathBuf),
}

impl Launch {
    fn describe(&self) -> PathBuf {
        match self {
            Launch::Fork => PathBuf::from("(forked from the calling process)"),
            Launch::Exec(helper) => helper.clone(),
        }
    }
}

fn spawn(launch: &Launch, request: &Request, io: HelperIo<'_>, cgroup: &StepCgroup) -> Result<Running, SandboxError> {
    let (req_r, req_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| channel_err("create the request pipe")(e.into()))?;
    let (rep_r, rep_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| channel_err("create the report pipe")(e.into()))?;

    // The helper's descriptors 0, 1 and 2; `None` keeps the caller's.
    let mut stdio: [Option<OwnedFd>; 3] = [None, None, None];
    let mut output_r = None;
    let mut terminal = None;
    let null = || {
        File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(channel_err("open /dev/null"))
    };
    match io {
        HelperIo::Null => {
            for slot in &mut stdio {
                *slot = Some(null()?);
            }
        }
        HelperIo::Inherit(None) => {}
        HelperIo::Inherit(Some(t)) => {
            for (fd, slot) in stdio.iter_mut().enumerate() {
                *slot = t.helper_stdio(fd)?;
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
            stdio = [Some(null()?), Some(out_w), Some(out_w2)];
            output_r = Some((out_r, file, stream, log.to_path_buf()));
        }
    }
    let (pid, self_joined) = match launch {
        Launch::Exec(helper) => (exec_helper(helper, stdio, &req_r, &rep_w)?, false),
        Launch::Fork => {
            let joins = cgroup.open_self_joins()?;
            (fork_helper(stdio, req_r.as_raw_fd(), rep_w.as_raw_fd(), &joins)?, true)
        }
    };
    let helper = HelperProcess { pid, status: None };
    // Our copies of the child's ends must close, or EOF never comes.
    drop(req_r);
    drop(rep_w);
    // Before the request: the helper waits for it before it does anything,
    // so everything of the step starts inside the cgroup.
    if let Err(e) = cgroup.add(pid as u32, self_joined) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = helper.wait_blocking();
        return Err(e.into());
    }
    let pidfd = pidfd_open(pid as u32);
    let terminal = terminal.map(StepTerminal::start_relay);

    let reports = ReportReader::new(File::from(rep_r), pidfd.is_some());
    let output = output_r.map(|(out_r, file, stream, _)| std::thread::spawn(move || copy_output(out_r, file, stream)));
    let mut running = Running {
        helper,
        pidfd,
        lifeline: File::from(req_w),
        reports,
        output,
        terminal,
    };
    running.send(request);
    Ok(running)
}

/// Starts `helper` with [`HELPER_ARG`] and the two pipe ends; returns its pid.
fn exec_helper(
    helper: &Path,
    stdio: [Option<OwnedFd>; 3],
    req_r: &OwnedFd,
    rep_w: &OwnedFd,
) -> Result<libc::pid_t, SandboxError> {
    let mut cmd = Command::new(helper);
    cmd.arg(HELPER_ARG)
        .arg(req_r.as_raw_fd().to_string())
        .arg(rep_w.as_raw_fd().to_string());
    // The helper needs no environment, and the step gets only its own.
    cmd.env_clear();
    let [stdin, stdout, stderr] = stdio;
    if let Some(fd) = stdin {
        cmd.stdin(fd);
    }
    if let Some(fd) = stdout {
        cmd.stdout(fd);
    }
    if let Some(fd) = stderr {
        cmd.stderr(fd);
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
    let child = cmd.spawn().map_err(|source| {
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
    // Reaped by pid (HelperProcess); dropping a Child neither kills nor waits.
    Ok(child.id() as libc::pid_t)
}

/// Forks the helper: the child first moves itself into the step's v1
/// cgroups (`joins`), keeps only its stdio and the two pipe ends, and runs
/// `helper::serve`. What it runs after the fork allocates, which
/// is safe in a child of a multi-threaded process because the C library's
/// fork() (glibc, musl) hands the child an unlocked allocator; it takes no
/// other lock the caller's threads may hold (no stdio, no environment).
fn fork_helper(
    stdio: [Option<OwnedFd>; 3],
    req_r: RawFd,
    rep_w: RawFd,
    joins: &[cgroup::SelfJoin],
) -> Result<libc::pid_t, SandboxError> {
    // Caches the child uses are filled here, so that it never waits on an
    // initialisation another thread of ours had under way at the fork.
    crate::seccomp::prepare();
    let raw: [RawFd; 3] = std::array::from_fn(|i| stdio[i].as_ref().map_or(-1, |fd| fd.as_raw_fd()));
    // SAFETY: libc::fork; the child only calls async-signal-safe functions
    // until `helper::serve`, then exits with _exit, never returning here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SandboxError::Spawn {
            helper: Launch::Fork.describe(),
            source: io::Error::last_os_error(),
            hint: Some("the machine may be out of processes or memory".into()),
        });
    }
    if pid > 0 {
        return Ok(pid);
    }
    // The child. Into the cgroups before anything else, while the
    // descriptors are where the caller opened them.
    let joined = cgroup::join_self(joins);
    // SAFETY: raw descriptor calls on descriptors this process owns.
    unsafe {
        // Every descriptor the child keeps first moves above 2, so that
        // placing stdio cannot overwrite one of them.
        let above_stdio = |fd: RawFd| if fd < 0 { fd } else { libc::fcntl(fd, libc::F_DUPFD, 3) };
        let (req, rep) = (above_stdio(req_r), above_stdio(rep_w));
        let raw = raw.map(above_stdio);
        if req < 0 || rep < 0 || raw.iter().any(|fd| *fd < -1) {
            libc::_exit(SPAWN_FAILED);
        }
        for orig in [req_r, rep_w] {
            if orig < 3 {
                libc::close(orig);
            }
        }
        for (target, fd) in raw.iter().enumerate() {
            if *fd >= 0 && libc::dup2(*fd, target as RawFd) < 0 {
                libc::_exit(SPAWN_FAILED);
            }
        }
        if close_all_but(req, rep).is_err() {
            libc::_exit(SPAWN_FAILED);
        }
        reset_handlers();
        scrub_inherited_strings();
        if let Err((i, errno)) = joined {
            let path = joins.get(i).map(|j| j.path.display().to_string()).unwrap_or_default();
            let message = format!(
                "cgroup `{path}`: move the sandbox helper into it (tasks): {}",
                io::Error::from_raw_os_error(errno)
            );
            let report = Report::SetupFailed {
                stage: Stage::Cgroup,
                message,
                errno: Some(errno),
            };
            channel::send(std::os::fd::BorrowedFd::borrow_raw(rep), &report);
            libc::_exit(crate::helper::SETUP_FAILED)
        }
        let code = crate::helper::serve(OwnedFd::from_raw_fd(req), OwnedFd::from_raw_fd(rep));
        libc::_exit(code)
    }
}

/// Exit code of a forked helper that could not arrange its descriptors.
const SPAWN_FAILED: i32 = 126;

/// Closes every descriptor above 2 but `a` and `b`: the caller's other
/// files, pipes and sockets (another step's output pipe, a lock) must not
/// stay open in the sandbox's processes.
fn close_all_but(a: RawFd, b: RawFd) -> io::Result<()> {
    // Both are above 2 (see fork_helper).
    let (lo, hi) = (a.min(b) as u32, a.max(b) as u32);
    for (first, last) in [(3, lo - 1), (lo + 1, hi - 1), (hi + 1, u32::MAX)] {
        if first > last {
            continue;
        }
        // SAFETY: close_range(2) with integer arguments.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A forked helper's argv and environment are the caller's, and a step
/// can read any process's `/proc/<pid>/cmdline` (the environment is behind
/// the non-dumpable flag the helper sets, but is cleared too): both are
/// blanked in the child's own copy of that memory, and the process is named
/// `farm-sandbox`, as a re-executed helper with an empty environment shows.
fn scrub_inherited_strings() {
    // SAFETY: prctl(2) with a NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"farm-sandbox".as_ptr() as libc::c_ulong, 0, 0, 0) };
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the parenthesised name (which may hold spaces), numbered as in proc(5).
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<usize> = rest.split(' ').map(|f| f.trim().parse().unwrap_or(0)).collect();
    // proc(5): arg_start, arg_end, env_start and env_end are fields 48 to 51; `rest` starts at field 3.
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    for (start, end) in [(field(48), field(49)), (field(50), field(51))] {
        if start != 0 && end > start {
            // SAFETY: the kernel reports these ranges as this process's
            // argument and environment strings, mapped and writable (its stack).
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
        }
    }
}

/// execve resets caught signals to their defaults; a forked helper does the
/// same, so no handler of the caller's runs in it. Ignored ones stay ignored.
fn reset_handlers() {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction(2) reading and then writing plain-data structures.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// The helper's process, reaped by pid.
struct HelperProcess {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl HelperProcess {
    fn wait_with(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        loop {
            let mut raw = 0;
            // SAFETY: waitpid(2) on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                return Ok(None);
            }
            self.status = Some(ExitStatus::from_raw(raw));
            return Ok(self.status);
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_with(libc::WNOHANG)
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        self.wait_with(0)?
            .ok_or_else(|| io::Error::other("waitpid returned no status"))
    }

    fn wait_blocking(mut self) -> io::Result<ExitStatus> {
        self.wait()
    }

    fn kill(&self) {
        if self.status.is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
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

/// The report pipe's reader. Where the helper has a pidfd, the waiting
/// thread polls the pipe beside it and reads reports as they come, which
/// spares every step a thread's start and one more wake-up; without one, a
/// thread reads them. Either way the pipe never fills while the caller
/// waits, so no sandbox process blocks on a report.
enum ReportReader {
    Inline { file: File, text: Vec<u8>, eof: bool },
    Thread(JoinHandle<io::Result<Vec<Report>>>),
}

impl ReportReader {
    fn new(file: File, inline: bool) -> ReportReader {
        let nonblocking = inline && nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok();
        if nonblocking {
            ReportReader::Inline {
                file,
                text: Vec::new(),
                eof: false,
            }
        } else {
            ReportReader::Thread(std::thread::spawn(move || channel::read_reports(file)))
        }
    }

    /// The pipe to poll, until it has reached EOF.
    fn pollable(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            ReportReader::Inline { file, eof: false, .. } => Some(file.as_fd()),
            _ => None,
        }
    }

    /// Reads what the pipe holds now, without blocking.
    fn drain(&mut self) -> io::Result<()> {
        let ReportReader::Inline { file, text, eof } = self else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        while !*eof {
            match file.read(&mut buf) {
                Ok(0) => *eof = true,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every report, once the helper has ended: read up to EOF, which comes
    /// when the last sandbox process is gone.
    fn finish(self) -> io::Result<Vec<Report>> {
        match self {
            ReportReader::Thread(h) => h.join().unwrap_or_else(|_| Ok(Vec::new())),
            ReportReader::Inline { file, mut text, eof } => {
                if !eof {
                    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))?;
                    (&file).read_to_end(&mut text)?;
                }
                Ok(channel::parse_reports(&text))
            }
        }
    }
}

/// How soon a cancelled step is killed.
const CANCEL_POLL: Duration = Duration::from_millis(200);

impl Running {
    /// Sends one request line. The pipe stays open as the helper's lifeline
    /// until we have waited for it. A helper that died already closed its
    /// end: its reports then say why.
    fn send(&mut self, request: &Request) {
        let mut line = serde_json::to_vec(request).unwrap_or_default();
        line.push(b'\n');
        let _ = self.lifeline.write_all(&line);
    }

    /// Ends a helper whose step will not run, and waits for it.
    fn abandon(mut self) {
        self.helper.kill();
        let _ = self.helper.wait();
        drop(self.terminal);
    }

    fn wait(
        mut self,
        timeout: Option<Duration>,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Ended, SandboxError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let timed_out = match (deadline, cancel) {
            (Some(deadline), None) => self.wait_until(deadline).map_err(channel_err("wait for the helper"))?,
            // Reports read on this thread are read while waiting.
            (None, None) if matches!(self.reports, ReportReader::Inline { .. }) => loop {
                let far = Instant::now() + Duration::from_secs(24 * 3600);
                if !self.wait_until(far).map_err(channel_err("wait for the helper"))? {
                    break false;
                }
            },
            (None, None) => false,
            // Cancellable: wake at least every CANCEL_POLL to look at the flag.
            (deadline, Some(cancel)) => loop {
                let next = Instant::now() + CANCEL_POLL;
                let until = deadline.map_or(next, |d| d.min(next));
                if !self.wait_until(until).map_err(channel_err("wait for the helper"))? {
                    break false;
                }
                if cancel.load(std::sync::atomic::Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break true;
                }
            },
        };
        if timed_out {
            // The helper's PID 1 has a parent-death signal: killing the helper kills the whole sandbox.
            self.helper.kill();
        }
        let status = self.helper.wait().map_err(channel_err("wait for the helper"))?;
        // What the step's terminal still holds reaches the caller's, then its settings are restored.
        drop(self.terminal);
        drop(self.lifeline);
        let reports = self.reports.finish().map_err(channel_err("read reports"))?;
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
                return Ok(self.helper.try_wait()?.is_none());
            }
            let left = deadline - now;
            match &self.pidfd {
                Some(fd) => {
                    let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                    let mut fds = vec![PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    if let Some(r) = self.reports.pollable() {
                        fds.push(PollFd::new(r, PollFlags::POLLIN));
                    }
                    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                    let (ended, reports) = match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
                        Ok(n) if n > 0 => (ready(&fds[0]), fds.get(1).is_some_and(ready)),
                        Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    drop(fds);
                    if reports {
                        self.reports.drain()?;
                    }
                    if ended {
                        return Ok(false);
                    }
                }
                None => {
                    // Kernels before 5.3 have no pidfd: check at short intervals up to the deadline.
                    if self.helper.try_wait()?.is_some() {
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

    /// Proves a helper that could not move itself into the step's cgroup
    /// is a set-up error at stage `cgroup` with a hint, and not a reason
    /// to fall back to the container backend.
    #[test]
    fn a_refused_cgroup_move_is_a_cgroup_stage_error() {
        let e = setup_error(
            Stage::Cgroup,
            "cgroup `/sys/fs/cgroup/pids/farm-step-1-0`: move the sandbox helper into it (tasks): EACCES",
            Some(libc::EACCES),
        );
        assert!(!e.is_unavailable());
        let text = e.to_string();
        assert!(
            text.contains("stage `cgroup`") && text.contains("farm-step-1-0") && text.contains("hint:"),
            "{text}"
        );
    }

    /// Proves the caller's inline reader never lets the report pipe fill:
    /// a writer sending far more than a pipe holds (40 reports of ~3.8 KB,
    /// each cut across reads of 4 KiB) finishes while the reader polls and
    /// drains, and `finish` returns every report intact and in order.
    #[test]
    fn reports_read_inline_are_drained_while_waiting_and_none_is_lost() {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut reader = ReportReader::new(File::from(r), true);
        assert!(matches!(reader, ReportReader::Inline { .. }));
        let writer = std::thread::spawn(move || {
            for i in 0..40 {
                let report = Report::SetupFailed {
                    stage: Stage::Rootfs,
                    message: format!("{i}:{}", "x".repeat(3700)),
                    errno: Some(i),
                };
                channel::send(w.as_fd(), &report);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(fd) = reader.pollable() {
            assert!(Instant::now() < deadline, "the writer never finished");
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(1000u16)).unwrap();
            reader.drain().unwrap();
        }
        writer.join().unwrap();
        let got = reader.finish().unwrap();
        assert_eq!(got.len(), 40);
        for (i, r) in got.iter().enumerate() {
            match r {
                Report::SetupFailed { message, errno, .. } => {
                    assert!(message.starts_with(&format!("{i}:")) && message.len() > 3700);
                    assert_eq!(*errno, Some(i as i32));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Proves a prepared helper dropped without its step is ended and
    /// reaped (no process of it is left waiting for a step that never
    /// comes), with or without having entered its namespaces yet.
    #[test]
    fn a_prepared_helper_dropped_unused_is_ended() {
        let setup = StepSetup {
            network: Network::None,
            uid: crate::BUILD_UID,
            gid: crate::BUILD_UID,
            limits: crate::Limits::default(),
            stdio: Stdio::Capture {
                log: std::env::temp_dir().join(format!("farm-prepared-{}.log", std::process::id())),
                stream: false,
            },
        };
        for pause in [Duration::ZERO, Duration::from_millis(200)] {
            let prepared = prepare(&Launch::Fork, &setup).unwrap();
            let pid = prepared.running.as_ref().unwrap().helper.pid;
            std::thread::sleep(pause);
            drop(prepared);
            assert_eq!(
                kill(Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH),
                "helper {pid} still exists"
            );
        }
        if let Stdio::Capture { log, .. } = &setup.stdio {
            let _ = fs::remove_file(log);
        }
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
