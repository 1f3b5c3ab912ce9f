//! PID 1 of the sandbox's PID namespace, after set-up: it starts the command,
//! forwards termination signals to it, reaps every process that ends up
//! orphaned, and once the command exits kills whatever the step left
//! behind, so no background process outlives its step.

use nix::errno::Errno;
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals the helper processes wait for synchronously (blocked, then
/// `sigwait`ed): blocked signals are delivered even to a PID 1, which would
/// otherwise ignore them.
pub(crate) fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// The shell convention: exit code, or 128 + the signal that killed it.
pub(crate) fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

pub(crate) struct Finished {
    pub status: i32,
    pub peak_rss_kib: Option<u64>,
}

/// Waits for `command`, reaping everything else on the way, then kills and
/// reaps what is left.
pub(crate) fn reap(command: Pid, signals: &SigSet) -> Finished {
    let status = loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap_ready(command) {
                    break code;
                }
            }
            Ok(sig) => {
                let _ = kill(command, sig);
            }
            Err(_) => {}
        }
    };
    // From PID 1, kill(-1) reaches every other process of the namespace.
    // Again after each reap: a process forking while the first kill went
    // round (a fork bomb) may have left children that it missed.
    loop {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        match waitpid(None, None) {
            Err(Errno::ECHILD) => break,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => break,
        }
    }
    let peak_rss_kib = getrusage(UsageWho::RUSAGE_CHILDREN)
        .ok()
        .map(|u| u.max_rss().max(0) as u64);
    Finished { status, peak_rss_kib }
}

/// Reaps every exited child without blocking; returns the command's exit
/// code if it was among them.
fn reap_ready(command: Pid) -> Option<i32> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => {
                if status.pid() == Some(command) {
                    found = exit_code(status).or(found);
                }
            }
        }
    }
}
