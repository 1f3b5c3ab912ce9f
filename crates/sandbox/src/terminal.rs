//! The step's own terminal, on the caller's side. When the caller's stdin,
//! stdout or stderr is a terminal (`farm shell`, `farm exec` typed at a
//! prompt), the step must not get that terminal: whoever holds a terminal
//! can push input into it (TIOCSTI) and so type commands into the caller's
//! shell once the step is over. Instead, as `sudo` with `use_pty`, `su
//! --pty` and `docker run -t` do, the caller opens a new pseudo-terminal;
//! each of the helper's stdio descriptors that would have been the caller's
//! terminal is its slave end, and a relay thread here copies the caller's
//! typing to the master and the master's output to the caller's terminal.
//! The step makes the slave its controlling terminal in a session of its own.
//!
//! When the caller types into the step (stdin is a terminal, and stdout or
//! stderr too), the caller's terminal is in raw mode until the step has
//! ended, so echo, line editing and Ctrl-C are the step's terminal's
//! business (Ctrl-C interrupts the step's foreground job, not farm). Its
//! size is copied to the step's terminal at the start and whenever it
//! changes. Otherwise the caller's terminal is left as it is and the
//! step's terminal does no output processing of its own, so lines are not
//! translated twice.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::stat::Mode;
use nix::sys::termios::{
    cfmakeraw, tcgetattr, tcsetattr, LocalFlags, OutputFlags, SetArg, SpecialCharacterIndices, Termios,
};

use crate::error::SandboxError;

/// How often the relay looks at the caller's window size when nothing else happens.
const RESIZE_CHECK_MS: u16 = 200;
/// How long the relay keeps copying output once the helper has ended (normally it stops
/// at once: the master reports that the last process holding the slave is gone).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

fn caller_fd(fd: i32) -> BorrowedFd<'static> {
    // SAFETY: descriptors 0, 1 and 2 stay allocated for the life of the
    // process (a closed one is at worst not a terminal, or /dev/null).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

fn err(context: &'static str) -> impl FnOnce(Errno) -> SandboxError {
    move |e| SandboxError::Terminal {
        context,
        source: e.into(),
    }
}

/// A pseudo-terminal for one step, before the helper starts.
pub(crate) struct StepTerminal {
    master: PtyMaster,
    slave: OwnedFd,
    /// Which of the caller's descriptors 0, 1, 2 are terminals: the helper gets the slave instead.
    replaced: [bool; 3],
    /// The caller's terminal in raw mode while the caller types into the step.
    raw: Option<RawMode>,
}

/// Restores the caller's terminal settings when dropped.
struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

impl StepTerminal {
    /// A new pseudo-terminal when any of the caller's stdin, stdout and
    /// stderr is a terminal; `None` when none is (pipes and files are passed on as they are).
    pub(crate) fn open_if_caller_has_one() -> Result<Option<StepTerminal>, SandboxError> {
        let replaced = [0, 1, 2].map(|fd| is_terminal(caller_fd(fd)));
        let Some(model) = replaced.iter().position(|t| *t) else {
            return Ok(None);
        };
        let model = caller_fd(model as i32);
        // Non-blocking: the relay must never wait on a step that does not read.
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(err("open a pseudo-terminal"))?;
        grantpt(&master).map_err(err("grant the pseudo-terminal"))?;
        unlockpt(&master).map_err(err("unlock the pseudo-terminal"))?;
        let name = ptsname_r(&master).map_err(err("name the pseudo-terminal"))?;
        let slave = open(
            name.as_str(),
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(err("open the pseudo-terminal's slave"))?;

        let typing = replaced[0] && (replaced[1] || replaced[2]);
        let mut settings = tcgetattr(model).map_err(err("read the caller's terminal settings"))?;
        if !typing {
            // The caller's terminal (cooked) translates the output already.
            settings.output_flags.remove(OutputFlags::OPOST);
        }
        tcsetattr(&slave, SetArg::TCSANOW, &settings).map_err(err("set the step's terminal settings"))?;
        if let Some(size) = window_size(model) {
            set_window_size(master.as_fd(), &size);
        }
        let raw = if typing {
            let fd = caller_fd(0);
            let saved = tcgetattr(fd).map_err(err("read the caller's terminal settings"))?;
            let mut raw = saved.clone();
            cfmakeraw(&mut raw);
            let guard = RawMode { fd, saved };
            tcsetattr(fd, SetArg::TCSADRAIN, &raw).map_err(err("put the caller's terminal in raw mode"))?;
            Some(guard)
        } else {
            None
        };
        Ok(Some(StepTerminal {
            master,
            slave,
            replaced,
            raw,
        }))
    }

    /// The slave end for the helper's descriptor `fd` (0, 1 or 2), if the caller's is a terminal.
    pub(crate) fn helper_stdio(&self, fd: usize) -> Result<Option<std::os::fd::OwnedFd>, SandboxError> {
        if !self.replaced[fd] {
            return Ok(None);
        }
        let dup = self.slave.try_clone().map_err(|source| SandboxError::Terminal {
            context: "duplicate the pseudo-terminal's slave",
            source,
        })?;
        Ok(Some(dup))
    }

    /// Once the helper runs: our slave closes (so the master reports the end
    /// when the last sandbox process has gone), and the relay starts.
    pub(crate) fn start_relay(self) -> Relay {
        let StepTerminal {
            master,
            slave,
            replaced,
            raw,
        } = self;
        drop(slave);
        let eof = tcgetattr(master.as_fd()).ok().and_then(|t| {
            t.local_flags
                .contains(LocalFlags::ICANON)
                .then(|| t.control_chars[SpecialCharacterIndices::VEOF as usize])
        });
        let ends = Ends {
            input: replaced[0].then(|| caller_fd(0)),
            output: [1, 2]
                .into_iter()
                .find(|fd| replaced[*fd])
                .map(|fd| caller_fd(fd as i32)),
            size_model: caller_fd(replaced.iter().position(|t| *t).unwrap_or(0) as i32),
            eof,
        };
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || relay(master, ends, &done))
        };
        Relay {
            done,
            thread: Some(thread),
            _raw: raw,
        }
    }
}

/// The running relay. Dropping it (after the helper has ended) lets the
/// relay copy what the step's terminal still holds, then restores the
/// caller's terminal.
pub(crate) struct Relay {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Dropped after the thread has been joined (fields drop after `drop`).
    _raw: Option<RawMode>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The caller's side of the relay.
struct Ends {
    input: Option<BorrowedFd<'static>>,
    output: Option<BorrowedFd<'static>>,
    size_model: BorrowedFd<'static>,
    /// The character that ends the step's input in canonical mode, sent when the caller's stdin ends.
    eof: Option<u8>,
}

fn relay(master: PtyMaster, ends: Ends, done: &AtomicBool) {
    let mut buf = vec![0u8; 16 * 1024];
    // Typed bytes the step's terminal has not taken yet (its input queue is full).
    let mut pending: Vec<u8> = Vec::new();
    let mut input = ends.input;
    let mut size = window_size(ends.size_model);
    let mut finishing_since = None;
    loop {
        let finishing = done.load(Ordering::Acquire);
        if finishing {
            // The caller's keystrokes after the step belong to the caller.
            input = None;
            pending.clear();
            if finishing_since.get_or_insert_with(Instant::now).elapsed() > DRAIN_LIMIT {
                return;
            }
        }
        let master_events = if pending.is_empty() {
            PollFlags::POLLIN
        } else {
            PollFlags::POLLIN | PollFlags::POLLOUT
        };
        let mut fds = vec![PollFd::new(master.as_fd(), master_events)];
        if let Some(fd) = input.filter(|_| pending.is_empty()) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let ready = match poll(&mut fds, PollTimeout::from(RESIZE_CHECK_MS)) {
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(n) => n,
        };
        if ready == 0 && finishing {
            // The helper has ended and the step's terminal has nothing left.
            return;
        }
        let master_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let input_ready = fds.get(1).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
        let wake = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;

        if master_ready.intersects(wake) {
            match nix::unistd::read(master.as_fd(), &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if let Some(out) = ends.output {
                        // A caller's terminal that went away must not stop the draining.
                        let _ = write_all(out, &buf[..n]);
                    }
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                // EIO: every process holding the slave has ended.
                Err(_) => return,
            }
        }
        if input_ready.intersects(wake) {
            if let Some(fd) = input {
                match nix::unistd::read(fd, &mut buf) {
                    Ok(0) | Err(Errno::EIO) | Err(Errno::EBADF) => {
                        input = None;
                        pending.extend(ends.eof);
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
        }
        if !pending.is_empty() {
            match nix::unistd::write(master.as_fd(), &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(_) => pending.clear(),
            }
        }
        let now = window_size(ends.size_model);
        if let Some(new) = now.filter(|n| size.is_none_or(|old| (old.ws_row, old.ws_col) != (n.ws_row, n.ws_col))) {
            // The kernel sends SIGWINCH to the step's foreground job.
            set_window_size(master.as_fd(), &new);
            size = Some(new);
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                // A caller's descriptor in non-blocking mode: wait until it takes more.
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(RESIZE_CHECK_MS));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn window_size(fd: BorrowedFd<'_>) -> Option<libc::winsize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}

fn set_window_size(master: BorrowedFd<'_>, size: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads one struct winsize.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, size as *const libc::winsize) };
}
