//! The helper: a child forked from the caller, or a re-executed binary
//! (`Sandbox::with_helper`). Three processes, each single-threaded:
//!
//! 1. the helper (outside PID namespace) unshares the namespaces, writes the
//!    id maps, makes itself non-dumpable and forks PID 1, then waits for it
//!    and forwards signals;
//! 2. PID 1 builds the root filesystem and switches into it, starts the
//!    command (sharing its memory until the command's execve) and reaps
//!    (`pid1`);
//! 3. the command process drops everything it must not keep and execs.
//!
//! Failures are sent to the caller as a `Report::SetupFailed` naming the stage.

use std::error::Error as StdError;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, getegid, geteuid, pipe2, setsid, ForkResult, Pid};

use crate::channel::{self, Report, Request};
use crate::error::Stage;
use crate::etc::{self, EtcFiles};
use crate::kernel::Linux;
use crate::spec::{Network, StepSpec};
use crate::{
    caps, dev, exec, idmap, keyring, landlock, namespaces, net, pid1, procfs, proxy, rlimits, rootfs, seccomp,
};

/// Exit code of a helper whose set-up failed (the report says why).
pub(crate) const SETUP_FAILED: i32 = 125;

struct Failure {
    stage: Stage,
    message: String,
    errno: Option<i32>,
}

trait AtStage<T> {
    fn stage(self, stage: Stage) -> Result<T, Failure>;
}

impl<T, E: StdError + 'static> AtStage<T> for Result<T, E> {
    fn stage(self, stage: Stage) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            stage,
            message: e.to_string(),
            errno: errno_of(&e),
        })
    }
}

/// The first OS error code in an error's chain, so the caller can tell
/// "permission denied" (e.g. AppArmor) from other failures.
fn errno_of(e: &(dyn StdError + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        if let Some(n) = err.downcast_ref::<nix::Error>() {
            return Some(*n as i32);
        }
        cur = err.source();
    }
    None
}

fn report_failure(report: BorrowedFd<'_>, f: Failure) {
    channel::send(
        report,
        &Report::SetupFailed {
            stage: f.stage,
            message: f.message,
            errno: f.errno,
        },
    );
}

/// Entry point of the re-executed helper process; returns its exit code.
pub(crate) fn main(args: &[String]) -> i32 {
    let (Some(req_fd), Some(rep_fd)) = (parse_fd(args.get(2)), parse_fd(args.get(3))) else {
        eprintln!(
            "{} is the farm sandbox's internal helper mode and takes two descriptor numbers; it is not meant to be run by hand",
            crate::HELPER_ARG
        );
        return 2;
    };
    // SAFETY: the parent passed these descriptors to us for our exclusive use.
    let (request_fd, report) = unsafe { (OwnedFd::from_raw_fd(req_fd), OwnedFd::from_raw_fd(rep_fd)) };
    serve(request_fd, report)
}

/// The helper's work, in a re-executed binary or in a child forked from the
/// caller: read the request, build the sandbox, report; returns the exit code.
pub(crate) fn serve(request_fd: OwnedFd, report: OwnedFd) -> i32 {
    for fd in [&request_fd, &report] {
        // Nothing the helper execs may inherit them.
        let _ = nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    let mut requests = match RequestReader::new(&request_fd) {
        Ok(r) => r,
        Err(f) => {
            report_failure(report.as_fd(), f);
            return SETUP_FAILED;
        }
    };
    let request = requests.next().and_then(|r| {
        if thread_count() == Some(1) {
            Ok(r)
        } else {
            Err(Failure {
                stage: Stage::Request,
                message: "the helper process has more than one thread, so it cannot enter a user namespace; \
                          hint: call farm_sandbox::helper_main() first thing in main(), before anything starts threads"
                    .into(),
                errno: None,
            })
        }
    });
    let result = match request {
        Ok(Request::Probe) => probe(report.as_fd(), request_fd.as_fd()),
        Ok(Request::Enter { network, uid, gid }) => {
            enter_namespaces(&network, uid, gid).and_then(|signals| match requests.next()? {
                Request::Run {
                    spec,
                    resolv_conf,
                    terminal,
                } if spec.network == network && (spec.uid, spec.gid) == (uid, gid) => run(
                    &spec,
                    resolv_conf,
                    terminal,
                    &signals,
                    report.as_fd(),
                    request_fd.as_fd(),
                ),
                _ => Err(unexpected_request(
                    "a step with the network and ids of the namespaces entered",
                )),
            })
        }
        Ok(_) => Err(unexpected_request("a probe, or the namespaces to enter")),
        Err(f) => Err(f),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            report_failure(report.as_fd(), f);
            SETUP_FAILED
        }
    }
}

fn parse_fd(arg: Option<&String>) -> Option<i32> {
    arg?.parse().ok().filter(|fd| *fd > 2)
}

fn unexpected_request(expected: &str) -> Failure {
    Failure {
        stage: Stage::Request,
        message: format!("the caller's request is not the one expected here ({expected})"),
        errno: None,
    }
}

/// Requests are JSON lines: `Probe`, or `Enter` and then `Run`. After the
/// last the caller keeps the pipe open as the helper's lifeline (EOF means
/// the caller died) and writes nothing more, so what is read past a line
/// is only the next request, kept for `next`.
struct RequestReader {
    file: File,
    pending: Vec<u8>,
}

impl RequestReader {
    fn new(fd: &OwnedFd) -> Result<RequestReader, Failure> {
        Ok(RequestReader {
            file: File::from(fd.try_clone().stage(Stage::Request)?),
            pending: Vec::new(),
        })
    }

    fn next(&mut self) -> Result<Request, Failure> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return serde_json::from_slice(&line[..end]).stage(Stage::Request);
            }
            let n = match self.file.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => other.stage(Stage::Request)?,
            };
            if n == 0 {
                // The caller went away (or never finished its line).
                return serde_json::from_slice(&std::mem::take(&mut self.pending)).stage(Stage::Request);
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Namespaces and id maps, then PID 1 in a child; the helper itself stays
/// outside the new PID namespace and waits.
fn enter_namespaces(network: &Network, uid: u32, gid: u32) -> Result<SigSet, Failure> {
    let (host_uid, host_gid) = (geteuid().as_raw(), getegid().as_raw());
    let signals = pid1::handled_signals();
    signals.thread_block().stage(Stage::Namespaces)?;
    namespaces::unshare(namespaces::flags(network)).stage(Stage::Namespaces)?;
    idmap::write(uid, gid, host_uid, host_gid).stage(Stage::IdMap)?;
    // The helper, PID 1 and the proxy relay are not dumpable: no process of
    // the step can read their memory through /proc/<pid>/mem or ptrace, even
    // at the same uid. A forked helper's memory is a copy of the caller's.
    // (After the id maps: a non-dumpable process cannot write its own.)
    // execve makes the step's command dumpable again.
    nix::sys::prctl::set_dumpable(false).stage(Stage::IdMap)?;
    Ok(signals)
}

/// The step, in the namespaces `enter_namespaces` made: PID 1 in a child.
fn run(
    spec: &StepSpec,
    resolv_conf: Option<String>,
    terminal: bool,
    signals: &SigSet,
    report: BorrowedFd<'_>,
    lifeline: BorrowedFd<'_>,
) -> Result<i32, Failure> {
    let (alive_r, alive_w) = pipe2(OFlag::O_CLOEXEC).stage(Stage::Fork)?;
    // SAFETY: the helper is single-threaded (checked in `main`).
    match unsafe { fork() }.stage(Stage::Fork)? {
        ForkResult::Child => {
            drop(alive_w);
            let code = match init(spec, resolv_conf, terminal, report, alive_r, signals) {
                Ok(code) => code,
                Err(f) => {
                    report_failure(report, f);
                    SETUP_FAILED
                }
            };
            // SAFETY: _exit in a forked child, skipping the parent's atexit state.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(alive_r);
            let code = wait_forwarding(child, signals, lifeline).stage(Stage::Reaper)?;
            drop(alive_w);
            Ok(code)
        }
    }
}

/// PID 1: the set-up sequence, top to bottom, then the reaper.
fn init(
    spec: &StepSpec,
    resolv_conf: Option<String>,
    terminal: bool,
    report: BorrowedFd<'_>,
    alive: OwnedFd,
    signals: &SigSet,
) -> Result<i32, Failure> {
    die_with_helper(alive).stage(Stage::Fork)?;
    let k = &mut Linux;
    rootfs::enter_staging(k).stage(Stage::Rootfs)?;
    rootfs::assemble_root(k, spec).stage(Stage::Rootfs)?;
    let etc_files = EtcFiles {
        uid: spec.uid,
        gid: spec.gid,
        hostname: spec.hostname.clone(),
        network: spec.network.clone(),
        host_resolv_conf: resolv_conf,
    };
    etc::write(k, &etc_files).stage(Stage::Etc)?;
    rootfs::mount_writable_and_binds(k, spec).stage(Stage::Rootfs)?;
    dev::populate(k).stage(Stage::Dev)?;
    procfs::mount(k).stage(Stage::Proc)?;
    rootfs::switch_root(k).stage(Stage::Rootfs)?;
    net::set_hostname(&spec.hostname).stage(Stage::Hostname)?;
    if spec.network.isolated() {
        net::loopback_up().stage(Stage::Network)?;
    }
    if let Network::Proxy { .. } = &spec.network {
        // Before the command: its first connection must find the relay listening.
        proxy::start_relay(spec.uid, spec.gid).stage(Stage::Network)?;
    }

    let command = spawn_command(spec, terminal, report)?;
    let finished = pid1::reap(command, signals);
    channel::send(
        report,
        &Report::Finished {
            status: finished.status,
            peak_rss_kib: finished.peak_rss_kib,
        },
    );
    Ok(finished.status)
}

/// Stack of the command's process until its execve; pages it does not
/// touch cost nothing.
const COMMAND_STACK: usize = 8 << 20;

/// Starts the command's process as posix_spawn does: it shares PID 1's
/// memory (CLONE_VM) and PID 1 waits until its execve (CLONE_VFORK), so no
/// copy of the address space (a forked copy of the caller's) is made for
/// it only to be torn down by the execve. Everything else is its own: the
/// descriptor table, working directory, signal handlers, credentials,
/// rlimits, Landlock domain and filter. PID 1 is single-threaded and
/// suspended meanwhile, so the child may allocate on the shared heap.
fn spawn_command(spec: &StepSpec, terminal: bool, report: BorrowedFd<'_>) -> Result<Pid, Failure> {
    let page = 4096;
    let len = COMMAND_STACK + page;
    // SAFETY: a fresh private anonymous mapping, unmapped below once the
    // child has exec'd or exited.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).stage(Stage::Reaper);
    }
    // The lowest page is a guard: an overflow faults instead of writing over the heap.
    // SAFETY: the first page of the mapping just made.
    let child = if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
        Err(std::io::Error::last_os_error()).stage(Stage::Reaper)
    } else {
        // SAFETY: the mapping is ours and outlives the child's use of it (CLONE_VFORK).
        let stack = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>().add(page), COMMAND_STACK) };
        let run = Box::new(|| {
            let f = exec_command(spec, terminal);
            report_failure(report, f);
            // SAFETY: _exit in the child, which never returns into PID 1's code.
            unsafe { libc::_exit(127) }
        });
        // SAFETY: see above; the callback never returns (execve or _exit).
        unsafe {
            nix::sched::clone(
                run,
                stack,
                nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_VFORK,
                Some(libc::SIGCHLD),
            )
        }
        .stage(Stage::Reaper)
    };
    // SAFETY: nothing runs on it any more: the child exec'd or exited (CLONE_VFORK).
    unsafe { libc::munmap(base, len) };
    child
}

/// The command's process: give up everything, then execve. Only returns on
/// failure. `terminal`: its stdio terminals are its own pseudo-terminal.
fn exec_command(spec: &StepSpec, terminal: bool) -> Failure {
    let steps = || -> Result<std::convert::Infallible, Failure> {
        // A session of its own: the caller's controlling terminal is not the
        // step's (/dev/tty does not lead to it), and signals from the
        // caller's terminal do not reach the step's processes directly.
        setsid().stage(Stage::Exec)?;
        if terminal {
            exec::take_controlling_terminal().stage(Stage::Exec)?;
        }
        keyring::join_new_session().stage(Stage::Keyring)?;
        rlimits::apply(&spec.limits).stage(Stage::Rlimits)?;
        exec::chdir(&spec.cwd).stage(Stage::Exec)?;
        exec::close_extra_fds_on_exec().stage(Stage::Exec)?;
        let program = exec::resolve(&spec.argv[0], &spec.env).stage(Stage::Exec)?;
        caps::drop_all(spec.uid, spec.gid).stage(Stage::Capabilities)?;
        nix::sys::prctl::set_no_new_privs().stage(Stage::Capabilities)?;
        landlock::restrict(&spec.writable).stage(Stage::Landlock)?;
        reset_signals().stage(Stage::Exec)?;
        // Last: nothing above may need a call it denies.
        seccomp::install().stage(Stage::Seccomp)?;
        Err(exec::execve(&program, &spec.argv, &spec.env)).stage(Stage::Exec)
    };
    match steps() {
        Err(f) => f,
        Ok(never) => match never {},
    }
}

/// Signal mask and ignored dispositions survive execve; the step starts from
/// the defaults (the helper, a Rust program, ignores SIGPIPE).
fn reset_signals() -> nix::Result<()> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL has no handler to be unsafe about.
            let _ = unsafe { sigaction(sig, &default) };
        }
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// PID 1 gets SIGKILL when the helper dies (e.g. the caller's timeout), and
/// with it the whole namespace. The pipe closes the race where the helper
/// died before the parent-death signal was registered.
fn die_with_helper(alive: OwnedFd) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::ZERO)?;
    if ready > 0 {
        // The only event on a pipe nobody writes to is the writer going away.
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(SETUP_FAILED) }
    }
    Ok(())
}

/// The helper waits for PID 1 and passes on termination signals; if the
/// caller dies (its end of the lifeline closes), the sandbox is killed too,
/// so no step outlives the farm process that started it.
fn wait_forwarding(pid1: Pid, signals: &SigSet, lifeline: BorrowedFd<'_>) -> nix::Result<i32> {
    // Non-blocking: poll waits; draining must stop when no signal is pending.
    let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let mut lifeline_open = true;
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if lifeline_open {
            fds.push(PollFd::new(lifeline, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let caller_gone = fds.get(1).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
        if caller_gone {
            lifeline_open = false;
            let _ = kill(pid1, Signal::SIGKILL);
        }
        while let Some(info) = sfd.read_signal()? {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => {}
                Ok(sig) => {
                    let _ = kill(pid1, sig);
                }
                Err(_) => {}
            }
        }
        if let Ok(status) = waitpid(pid1, Some(WaitPidFlag::WNOHANG)) {
            if let Some(code) = pid1::exit_code(status) {
                return Ok(code);
            }
        }
    }
}

/// Checks that everything `run` needs works here: namespaces, id maps, a
/// private tmpfs and a new /proc.
fn probe(report: BorrowedFd<'_>, lifeline: BorrowedFd<'_>) -> Result<i32, Failure> {
    let signals = enter_namespaces(&Network::None, crate::spec::BUILD_UID, crate::spec::BUILD_UID)?;
    // SAFETY: the helper is single-threaded (checked in `main`).
    match unsafe { fork() }.stage(Stage::Fork)? {
        ForkResult::Child => {
            let check = || -> Result<(), Failure> {
                use crate::kernel::Kernel;
                let k = &mut Linux;
                rootfs::enter_staging(k).stage(Stage::Rootfs)?;
                let proc_dir = std::path::Path::new("/newroot");
                k.mount_special("proc", proc_dir, nix::mount::MsFlags::MS_NOSUID, "")
                    .stage(Stage::Proc)?;
                Ok(())
            };
            let code = match check() {
                Ok(()) => 0,
                Err(f) => {
                    report_failure(report, f);
                    SETUP_FAILED
                }
            };
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let code = wait_forwarding(child, &signals, lifeline).stage(Stage::Reaper)?;
            if code == 0 {
                channel::send(report, &Report::ProbeOk);
            }
            Ok(code)
        }
    }
}
