//! What a step cannot reach through the kernel rather than the file system:
//! the caller's keyring, the caller's terminal, and the system calls the
//! sandbox's filter denies. Each attack is performed from inside a step and
//! asserted to fail with the errno the filter gives; ordinary tools (sh, cp,
//! Python, Node, npm, pip) must keep working under the same filter, and an
//! interactive shell on a terminal must too. The keyring and terminal
//! attacks also run with an unprivileged caller (uid 65534 when the suite
//! runs as root).

mod support;

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use farm_sandbox::{Outcome, Stdio};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{tcgetattr, LocalFlags, Termios};
use support::*;

/// Runs each `name=nr:arg,arg,...` call given on the command line through
/// syscall(3) and prints `name=ok` or `name=ERRNO`.
const SYSCALLS_PY: &str = r#"
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
out = []
for spec in sys.argv[1:]:
    name, rest = spec.split("=", 1)
    nr, _, args = rest.partition(":")
    args = [ctypes.c_long(int(a)) for a in args.split(",") if a]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(int(nr)), *args)
    out.append(name + "=" + ("ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]))
print(" ".join(out))
"#;

fn syscall_arg(name: &str, nr: libc::c_long, args: &[i64]) -> String {
    let args: Vec<String> = args.iter().map(i64::to_string).collect();
    format!("{name}={nr}:{}", args.join(","))
}

/// The step's answers, by call name.
fn answers(log: &str) -> std::collections::BTreeMap<String, String> {
    log.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// The keyring

const KEYCTL_GET_KEYRING_ID: i64 = 0;
const KEYCTL_JOIN_SESSION_KEYRING: i64 = 1;
const KEY_SPEC_SESSION_KEYRING: i64 = -3;

/// A key in a session keyring of the calling thread (keyrings are per
/// thread credentials, so each test has its own), as a logged-in caller
/// holds tokens there; children spawned from this thread inherit it.
struct CallerKey {
    id: i64,
    description: String,
    payload: String,
}

fn caller_key() -> CallerKey {
    let session = CString::new(format!("farm-test-session-{}", marker())).unwrap();
    // SAFETY: keyctl(2) with a valid C string.
    let ring = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, session.as_ptr()) };
    assert!(ring > 0, "join a session keyring: {}", Errno::last());
    let description = format!("farm-test-secret-{}", marker());
    let payload = format!("TOP-SECRET-{}", marker());
    let (kind, desc) = (
        CString::new("user").unwrap(),
        CString::new(description.clone()).unwrap(),
    );
    // SAFETY: add_key(2) with valid C strings and a payload of the given length.
    let id = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            kind.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_SESSION_KEYRING,
        )
    };
    assert!(id > 0, "add_key: {}", Errno::last());
    CallerKey {
        id,
        description,
        payload,
    }
}

/// What a process of the caller (any uid) sees of its keyrings: the key read
/// by id, and whether a key with the planted description is anywhere it searches.
const CALLER_VIEW_PY: &str = r#"
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
key, planted, SYS_keyctl = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
def keyctl(*args):
    ctypes.set_errno(0)
    conv = [a if isinstance(a, (bytes, ctypes.Array)) else ctypes.c_long(a) for a in args]
    r = libc.syscall(ctypes.c_long(SYS_keyctl), *conv)
    return r, errno.errorcode.get(ctypes.get_errno(), "0")
buf = ctypes.create_string_buffer(256)
r, e = keyctl(11, key, buf, 256)  # KEYCTL_READ
print("read=" + (buf.raw[:r].decode() if r > 0 else e))
for ring, name in ((-3, "session"), (-4, "user"), (-5, "user-session")):
    r, e = keyctl(10, ring, b"user", planted, 0)  # KEYCTL_SEARCH
    print(f"planted-in-{name}=" + ("FOUND" if r > 0 else e))
print("planted-in-proc-keys=" + ("FOUND" if planted in open("/proc/keys", "rb").read() else "no"))
"#;

/// The keyring attack, from inside the step: read the caller's key by id,
/// describe it, find it by name, ask for it, and plant keys of its own.
fn keyring_attack(key: &CallerKey, planted: &str) -> Step {
    step(vec![
        "python3".into(),
        "-c".into(),
        KEYRING_PY.into(),
        key.id.to_string(),
        key.description.clone(),
        planted.into(),
        libc::SYS_keyctl.to_string(),
        libc::SYS_request_key.to_string(),
        libc::SYS_add_key.to_string(),
    ])
}

const KEYRING_PY: &str = r#"
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
key, desc, planted = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
SYS_keyctl, SYS_request_key, SYS_add_key = (int(a) for a in sys.argv[4:7])
def call(nr, *args):
    ctypes.set_errno(0)
    conv = [a if isinstance(a, (bytes, ctypes.Array)) or a is None else ctypes.c_long(a) for a in args]
    r = libc.syscall(ctypes.c_long(nr), *conv)
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
buf = ctypes.create_string_buffer(256)
# KEYCTL_READ 11, KEYCTL_DESCRIBE 6, KEYCTL_SEARCH 10, KEYCTL_GET_KEYRING_ID 0; @s -3, @u -4
out = {
    "read": call(SYS_keyctl, 11, key, buf, 256),
    "describe": call(SYS_keyctl, 6, key, buf, 256),
    "search-session": call(SYS_keyctl, 10, -3, b"user", desc, 0),
    "search-user": call(SYS_keyctl, 10, -4, b"user", desc, 0),
    "session-id": call(SYS_keyctl, 0, -3, 0),
    "request_key": call(SYS_request_key, b"user", desc, None, 0),
    "add_key-session": call(SYS_add_key, b"user", planted, b"x", 1, -3),
    "add_key-user": call(SYS_add_key, b"user", planted, b"x", 1, -4),
}
print(" ".join(k + "=" + v for k, v in out.items()))
print("payload-seen=" + str(b"TOP-SECRET" in buf.raw))
"#;

fn caller_view(caller: Caller, key: &CallerKey, planted: &str) -> String {
    let mut cmd = match caller {
        Caller::Unprivileged if is_root() => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
                "/usr/bin/python3".into(),
            ]);
            c
        }
        _ => Command::new("/usr/bin/python3"),
    };
    let out = cmd
        .args(["-c", CALLER_VIEW_PY])
        .arg(key.id.to_string())
        .arg(planted)
        .arg(libc::SYS_keyctl.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn keyring_out_of_reach(caller: Caller) {
    let key = caller_key();
    let planted = format!("farm-test-planted-{}", marker());

    // The control: the caller itself can read its key, and nothing is planted yet.
    let before = caller_view(caller, &key, &planted);
    assert!(
        before.contains(&format!("read={}", key.payload)),
        "the caller must hold the key the step attacks:\n{before}"
    );

    let s = keyring_attack(&key, &planted);
    let out = run_as(caller, &s.spec, &[]).unwrap();
    let log = log_of(&out);
    assert_eq!(out.status, 0, "{log}");
    let got = answers(&log);
    for call in [
        "read",
        "describe",
        "search-session",
        "search-user",
        "session-id",
        "request_key",
        "add_key-session",
        "add_key-user",
    ] {
        assert_eq!(got.get(call).map(String::as_str), Some("EPERM"), "{call}: {log}");
    }
    assert!(
        log.contains("payload-seen=False") && !log.contains(&key.payload),
        "{log}"
    );

    // Nothing the step did reached the caller's keyrings.
    let after = caller_view(caller, &key, &planted);
    assert!(after.contains(&format!("read={}", key.payload)), "{after}");
    for ring in ["session", "user", "user-session"] {
        assert!(after.contains(&format!("planted-in-{ring}=ENOKEY")), "{ring}:\n{after}");
    }
    assert!(after.contains("planted-in-proc-keys=no"), "{after}");
}

#[test]
fn the_callers_keyring_is_out_of_reach_and_keys_cannot_be_planted() {
    keyring_out_of_reach(Caller::InProcess);
}

#[test]
fn the_callers_keyring_is_out_of_reach_for_an_unprivileged_caller() {
    keyring_out_of_reach(Caller::Unprivileged);
}

// ---------------------------------------------------------------------------
// The kernel surface

const UFFD_USER_MODE_ONLY: i64 = 1;
const PTRACE_TRACEME: i64 = 0;
const SYSLOG_ACTION_SIZE_BUFFER: i64 = 10;
const ADDR_NO_RANDOMIZE: i64 = 0x0040000;

/// Each call with arguments that would make it succeed, or fail with another
/// errno, if the filter let it through.
fn denied_calls() -> Vec<String> {
    let mut calls = vec![
        syscall_arg("bpf", libc::SYS_bpf, &[0, 0, 0]),
        syscall_arg("perf_event_open", libc::SYS_perf_event_open, &[0, 0, -1, -1, 0]),
        syscall_arg("userfaultfd", libc::SYS_userfaultfd, &[UFFD_USER_MODE_ONLY]),
        syscall_arg("io_uring_setup", libc::SYS_io_uring_setup, &[1, 0]),
        syscall_arg("init_module", libc::SYS_init_module, &[0, 0, 0]),
        syscall_arg("finit_module", libc::SYS_finit_module, &[-1, 0, 0]),
        syscall_arg("delete_module", libc::SYS_delete_module, &[0, 0]),
        syscall_arg("reboot", libc::SYS_reboot, &[0, 0, 0, 0]),
        syscall_arg("kexec_load", libc::SYS_kexec_load, &[0, 0, 0, 0]),
        syscall_arg("kexec_file_load", libc::SYS_kexec_file_load, &[-1, -1, 0, 0, 0]),
        syscall_arg(
            "keyctl",
            libc::SYS_keyctl,
            &[KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0],
        ),
        syscall_arg("request_key", libc::SYS_request_key, &[0, 0, 0, 0]),
        syscall_arg("add_key", libc::SYS_add_key, &[0, 0, 0, 0, 0]),
        syscall_arg("ptrace", libc::SYS_ptrace, &[PTRACE_TRACEME, 0, 0, 0]),
        syscall_arg("process_vm_readv", libc::SYS_process_vm_readv, &[1, 0, 0, 0, 0, 0]),
        syscall_arg("unshare", libc::SYS_unshare, &[libc::CLONE_NEWUSER as i64]),
        syscall_arg("setns", libc::SYS_setns, &[-1, 0]),
        syscall_arg("mount", libc::SYS_mount, &[0, 0, 0, 0, 0]),
        syscall_arg("umount2", libc::SYS_umount2, &[0, 0]),
        syscall_arg("pivot_root", libc::SYS_pivot_root, &[0, 0]),
        syscall_arg("open_tree", libc::SYS_open_tree, &[-1, 0, 0]),
        syscall_arg("swapon", libc::SYS_swapon, &[0, 0]),
        syscall_arg("acct", libc::SYS_acct, &[0]),
        syscall_arg("syslog", libc::SYS_syslog, &[SYSLOG_ACTION_SIZE_BUFFER, 0, 0]),
        syscall_arg("clock_settime", libc::SYS_clock_settime, &[0, 0]),
        syscall_arg("settimeofday", libc::SYS_settimeofday, &[0, 0]),
        syscall_arg("open_by_handle_at", libc::SYS_open_by_handle_at, &[-1, 0, 0]),
        syscall_arg("personality-no-aslr", libc::SYS_personality, &[ADDR_NO_RANDOMIZE]),
    ];
    if cfg!(target_arch = "x86_64") {
        // The x32 ABI: x86_64's numbers with bit 30 set.
        calls.push(syscall_arg("x32-getpid", 0x4000_0000 | libc::SYS_getpid, &[]));
        calls.push(syscall_arg(
            "x32-keyctl",
            0x4000_0000 | libc::SYS_keyctl,
            &[KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0],
        ));
    }
    calls
}

fn kernel_surface_denied(caller: Caller) {
    let mut argv = vec!["python3".to_string(), "-c".into(), SYSCALLS_PY.into()];
    argv.extend(denied_calls());
    // Allowed, for contrast: the same script gets answers other than EPERM.
    argv.push(syscall_arg("getpid", libc::SYS_getpid, &[]));
    argv.push(syscall_arg("personality-query", libc::SYS_personality, &[0xffff_ffff]));
    argv.push(syscall_arg("clone3", libc::SYS_clone3, &[0, 0]));
    let s = step(argv);
    let out = run_as(caller, &s.spec, &[]).unwrap();
    let log = log_of(&out);
    assert_eq!(out.status, 0, "{log}");
    let got = answers(&log);
    for call in denied_calls() {
        let name = call.split('=').next().unwrap();
        assert_eq!(got.get(name).map(String::as_str), Some("EPERM"), "{name}: {log}");
    }
    assert_eq!(got["getpid"], "ok", "{log}");
    assert_eq!(got["personality-query"], "ok", "{log}");
    // ENOSYS, so that glibc falls back to clone(2), whose flags the filter can see.
    assert_eq!(got["clone3"], "ENOSYS", "{log}");
}

#[test]
fn kernel_surface_calls_fail_with_eperm() {
    kernel_surface_denied(Caller::InProcess);
}

#[test]
fn kernel_surface_calls_fail_with_eperm_for_an_unprivileged_caller() {
    kernel_surface_denied(Caller::Unprivileged);
}

/// getpid through the i386 entry point (int 0x80, number 20).
const INT80_GETPID_PY: &str = r#"
import ctypes, mmap
code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20; int 0x80; ret
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
print("before", flush=True)
ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
print("SURVIVED")
"#;

#[test]
fn foreign_abi_system_calls_kill_the_step() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    // The contrast: on this host, outside the sandbox, the i386 call works.
    let host = Command::new("/usr/bin/python3")
        .args(["-c", INT80_GETPID_PY])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&host.stdout).contains("SURVIVED") {
        eprintln!("this kernel runs no i386 system calls (no IA32 emulation): nothing to filter, test skipped");
        return;
    }
    // Inside, another numbering is refused outright: SIGSYS.
    let s = step(vec!["python3".into(), "-c".into(), INT80_GETPID_PY.into()]);
    let (out, log) = run(&s.spec);
    assert_eq!(log, "before\n");
    assert_eq!(out.status, 128 + libc::SIGSYS, "{log}");
}

#[test]
fn ordinary_build_tools_still_work_under_the_filter() {
    let mut script = String::from(
        "set -e; \
         cp /etc/passwd /tmp/copy && cmp /etc/passwd /tmp/copy && echo cp-ok; \
         (sleep 0 & wait) && echo jobs-ok; \
         python3 -c 'import threading, subprocess, multiprocessing as mp; \
t = threading.Thread(target=lambda: None); t.start(); t.join(); \
assert subprocess.run([\"true\"]).returncode == 0; \
print(\"python-ok\", mp.Pool(2).map(abs, [-1, -2]))'; \
         python3 -m pip --version >/dev/null && echo pip-ok; ",
    );
    let node = std::path::Path::new("/usr/bin/node").exists();
    if node {
        script.push_str(
            "node -e 'const cp = require(\"child_process\"); const { Worker } = require(\"worker_threads\"); \
require(\"fs\").writeFileSync(\"/tmp/n\", cp.execSync(\"echo spawned\")); \
new Worker(\"1\", { eval: true }).on(\"exit\", () => console.log(\"node-ok\"))'; \
             npm --version >/dev/null && echo npm-ok; ",
        );
    } else {
        eprintln!("node is not installed in /usr/bin: its part of this test is skipped");
    }
    let s = shell(&script);
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    let mut expected = "cp-ok\njobs-ok\npython-ok [1, 2]\npip-ok\n".to_string();
    if node {
        expected.push_str("node-ok\nnpm-ok\n");
    }
    assert_eq!(log, expected);
}

// ---------------------------------------------------------------------------
// The terminal

/// A pseudo-terminal playing the caller's terminal: the caller runs in a
/// session of its own with the slave as its controlling terminal, as
/// `farm shell` typed at a prompt does; the test is the person at the keyboard.
struct CallerTerminal {
    master: OwnedFd,
    slave: OwnedFd,
}

impl CallerTerminal {
    fn new() -> CallerTerminal {
        let pty = nix::pty::openpty(None, None).unwrap();
        let flags = OFlag::from_bits_truncate(fcntl(&pty.master, FcntlArg::F_GETFL).unwrap());
        fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
        CallerTerminal {
            master: pty.master,
            slave: pty.slave,
        }
    }

    fn stdio(&self) -> ProcStdio {
        self.slave.try_clone().unwrap().into()
    }

    fn settings(&self) -> Termios {
        tcgetattr(&self.slave).unwrap()
    }

    /// Bytes in the caller's terminal's input queue that nobody has read:
    /// whatever was pushed into it after the caller stopped reading.
    fn unread_input(&self) -> i32 {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        assert_eq!(
            unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut n) },
            0
        );
        n
    }
}

/// Which of the caller's stdio descriptors are the terminal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wiring {
    /// stdin, stdout and stderr: a person typing.
    All,
    /// stdout and stderr only; stdin is /dev/null (output watched on a terminal).
    OutputOnly,
}

/// `farm-sandbox-run` running one step on a caller's terminal.
struct TerminalSession {
    term: CallerTerminal,
    /// The caller's terminal settings before the caller started.
    before: Termios,
    child: KillOnDrop,
    seen: String,
    _step: Step,
}

impl TerminalSession {
    fn start(caller: Caller, step: Step, wiring: Wiring) -> TerminalSession {
        let spec_file = step.dir.path().join("spec.json");
        std::fs::write(&spec_file, serde_json::to_string(&step.spec).unwrap()).unwrap();
        let term = CallerTerminal::new();
        let before = term.settings();
        let mut cmd = match caller {
            Caller::Unprivileged => unprivileged_command(),
            _ => Command::new(helper()),
        };
        cmd.arg("--spec").arg(&spec_file);
        match wiring {
            Wiring::All => cmd.stdin(term.stdio()),
            Wiring::OutputOnly => cmd.stdin(ProcStdio::null()),
        };
        cmd.stdout(term.stdio()).stderr(term.stdio());
        let tty = term.slave.as_raw_fd();
        // SAFETY: only setsid(2) and ioctl(2), async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(tty, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = KillOnDrop(spawn_retrying(&mut cmd).unwrap());
        TerminalSession {
            term,
            before,
            child,
            seen: String::new(),
            _step: step,
        }
    }

    fn read_some(&mut self, wait: Duration) {
        let mut fds = [PollFd::new(self.term.master.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) == 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = nix::unistd::read(&self.term.master, &mut buf) {
            if n == 0 {
                break;
            }
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Waits until the terminal has shown `needle` `times` times in all.
    fn wait_for(&mut self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.seen.matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear {times} times; the terminal showed:\n{}",
                self.seen
            );
            self.read_some(Duration::from_millis(100));
        }
    }

    fn type_keys(&self, keys: &[u8]) {
        let mut f = std::fs::File::from(self.term.master.try_clone().unwrap());
        f.write_all(keys).unwrap();
    }

    /// Waits for the caller to exit; its outcome is the JSON line it printed.
    fn finish(mut self) -> (ExitStatus, Option<Outcome>, String, CallerTerminal) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            self.read_some(Duration::from_millis(100));
            if let Some(status) = self.child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the caller did not exit:\n{}", self.seen);
        };
        self.read_some(Duration::from_millis(200));
        let outcome = self
            .seen
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("{\"status\"")
                    .map(|rest| format!("{{\"status\"{rest}"))
            })
            .and_then(|json| serde_json::from_str(&json).ok());
        let seen = std::mem::take(&mut self.seen);
        (status, outcome, seen, self.term)
    }
}

/// The step with the caller's stdio (`farm shell`, `farm exec`).
fn on_terminal(mut step: Step) -> Step {
    step.spec.stdio = Stdio::Inherit;
    step
}

/// Pushes a marker into every terminal the step has (its stdio and
/// /dev/tty), with TIOCSTI (also with garbage in the request's upper 32
/// bits) and TIOCLINUX, then looks for it in its own input.
const INJECT_PY: &str = r#"
import ctypes, errno, os, select, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_ioctl, TIOCSTI, TIOCLINUX = (int(a) for a in sys.argv[1:4])
marker = sys.argv[4].encode()
def ioctl(fd, req, byte):
    c = ctypes.c_char(byte)
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(SYS_ioctl), ctypes.c_long(fd), ctypes.c_ulong(req), ctypes.byref(c))
    return None if r == 0 else errno.errorcode[ctypes.get_errno()]
def inject(fd, req):
    for b in marker + b"\r":
        e = ioctl(fd, req, bytes([b]))
        if e:
            return e
    return "INJECTED"
out = []
for fd in (0, 1, 2):
    out.append(f"fd{fd}={inject(fd, TIOCSTI)}")
    out.append(f"fd{fd}-high={inject(fd, TIOCSTI | (1 << 32))}")
try:
    tty = os.open("/dev/tty", os.O_RDWR)
    out.append(f"devtty={inject(tty, TIOCSTI)}")
except OSError as e:
    out.append("devtty=open-" + errno.errorcode[e.errno])
out.append(f"tioclinux={ioctl(0, TIOCLINUX, bytes([3])) or 'ok'}")  # 3: paste the selection
if os.isatty(0):
    ready, _, _ = select.select([0], [], [], 1.0)
    out.append("own-input=" + ("GOT" if ready else "nothing"))
print(" ".join(out), flush=True)
"#;

fn terminal_injection(caller: Caller, wiring: Wiring) {
    let mark = format!("INJECTED{}", marker());
    let s = step(vec![
        "python3".into(),
        "-c".into(),
        INJECT_PY.into(),
        libc::SYS_ioctl.to_string(),
        libc::TIOCSTI.to_string(),
        libc::TIOCLINUX.to_string(),
        mark.clone(),
    ]);
    let s = on_terminal(s);
    let session = TerminalSession::start(caller, s, wiring);
    let term_before = session.before.clone();
    let (status, outcome, seen, term) = session.finish();
    assert!(status.success(), "{seen}");
    assert_eq!(outcome.map(|o| o.status), Some(0), "{seen}");
    let got = answers(&seen);
    for fd in [
        "fd0",
        "fd1",
        "fd2",
        "fd0-high",
        "fd1-high",
        "fd2-high",
        "devtty",
        "tioclinux",
    ] {
        assert_eq!(
            got.get(fd).map(String::as_str),
            Some("EPERM"),
            "{fd} ({wiring:?}):\n{seen}"
        );
    }
    if wiring == Wiring::All {
        assert_eq!(got.get("own-input").map(String::as_str), Some("nothing"), "{seen}");
    }
    // Neither echoed on the caller's terminal nor waiting in its input.
    assert!(!seen.contains(&mark), "{seen}");
    assert_eq!(term.unread_input(), 0, "bytes were pushed into the caller's terminal");
    assert_eq!(term.settings().local_flags, term_before.local_flags);
}

#[test]
fn a_step_cannot_push_input_into_the_callers_terminal() {
    terminal_injection(Caller::Subprocess, Wiring::All);
    terminal_injection(Caller::Subprocess, Wiring::OutputOnly);
}

#[test]
fn a_step_cannot_push_input_into_the_callers_terminal_for_an_unprivileged_caller() {
    terminal_injection(Caller::Unprivileged, Wiring::All);
    terminal_injection(Caller::Unprivileged, Wiring::OutputOnly);
}

#[test]
fn without_a_terminal_the_step_has_no_controlling_terminal() {
    // The caller's session has a terminal, but the step's stdio are pipes:
    // /dev/tty must not lead back to the caller's terminal.
    let s = step(vec![
        "python3".into(),
        "-c".into(),
        "import os\ntry:\n    os.open('/dev/tty', os.O_RDWR); print('OPENED')\nexcept OSError as e:\n    print(e.errno)".into(),
    ]);
    let s = on_terminal(s);
    let spec_file = s.dir.path().join("spec.json");
    std::fs::write(&spec_file, serde_json::to_string(&s.spec).unwrap()).unwrap();
    let term = CallerTerminal::new();
    let tty = term.slave.as_raw_fd();
    let mut cmd = Command::new(helper());
    cmd.arg("--spec")
        .arg(&spec_file)
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped());
    // SAFETY: only setsid(2) and ioctl(2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(tty, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.lines().next(),
        Some(libc::ENXIO.to_string().as_str()),
        "{stdout}"
    );
}

fn interactive_shell(caller: Caller) {
    let mut s = step(vec!["/bin/sh".into(), "-i".into()]);
    s.spec.env.push(("PS1".into(), "farm-prompt$ ".into()));
    let s = on_terminal(s);
    let mut session = TerminalSession::start(caller, s, Wiring::All);
    let before = session.before.clone();
    session.wait_for("farm-prompt$ ", 1);
    // Typed as keys (a carriage return for Enter): the step's own terminal edits and echoes.
    session.type_keys(b"test -t 0 && test -t 1 && echo IS-A-TTY; echo typed-$((6 * 7))\r");
    session.wait_for("typed-42", 1);
    // Ctrl-C interrupts the step's foreground job through its own terminal, and not farm.
    // (Arithmetic in the output, so the echo of the typed line does not count as seeing it.)
    session.type_keys(
        b"sh -c 'trap \"echo GOT-INT-$((1 + 1)); exit 0\" INT; echo READY-$((2 + 2)); while :; do sleep 0.1; done'\r",
    );
    session.wait_for("READY-4", 1);
    session.type_keys(b"\x03");
    session.wait_for("GOT-INT-2", 1);
    session.wait_for("farm-prompt$ ", 3);
    session.type_keys(b"exit 5\r");
    let (status, outcome, seen, term) = session.finish();
    assert!(status.success(), "{seen}");
    assert!(seen.contains("IS-A-TTY"), "{seen}");
    let outcome = outcome.unwrap_or_else(|| panic!("no outcome in:\n{seen}"));
    assert_eq!((outcome.status, outcome.timed_out), (5, false), "{seen}");
    // The caller's terminal is back in the mode it was in (raw only while the step ran).
    let after = term.settings();
    assert_eq!(after.local_flags, before.local_flags);
    assert!(after.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO));
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
}

#[test]
fn an_interactive_shell_works_on_its_own_terminal() {
    interactive_shell(Caller::Subprocess);
}

#[test]
fn an_interactive_shell_works_on_its_own_terminal_for_an_unprivileged_caller() {
    interactive_shell(Caller::Unprivileged);
}
