//! The step's system-call filter, installed last before execve (after
//! `no_new_privs`, which lets an unprivileged process install one).
//!
//! The default is to allow: a build runs compilers, interpreters, package
//! managers and test suites whose needs nobody can list. What is denied is
//! an explicit list ([`DENIED`]) of calls no build makes that reach kernel
//! state the host shares with the step (the keyring, the caller's terminal,
//! the clocks, the kernel itself) or widen the kernel surface a step can
//! attack. Each fails with EPERM, as if the step lacked a privilege, so a
//! tool that probes for a feature falls back instead of crashing.
//!
//! Two filters are installed, because a seccompiler filter matches exact
//! system-call numbers and has one action:
//!
//! - the deny list, built by seccompiler; it also checks the calling
//!   convention: a system call of another ABI (i386 through `int 0x80` on
//!   x86_64, AArch32 on aarch64), where every number means something else,
//!   kills the process;
//! - a short hand-assembled filter for the rest ([`abi_filter`]): x32 calls
//!   on x86_64 share x86_64's audit architecture under numbers with bit 30
//!   set, so without it every denied call would be reachable under its x32
//!   number; and `clone3` answers ENOSYS, because its flags sit in memory a
//!   filter cannot read (so the namespace flags denied for `clone` would pass),
//!   and ENOSYS is what makes glibc fall back to `clone`.
//!
//! The filter applies to the step's command and everything it starts; the
//! sandbox's own helper and PID 1 are not filtered (they mount and pivot).

// libc's integer types (c_long, Ioctl) differ between targets; the casts keep the table portable.
#![allow(clippy::unnecessary_cast)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SeccompError {
    #[error("no system-call filter is defined for the {arch} architecture; hint: the native sandbox runs on x86_64 and aarch64, use the container backend elsewhere")]
    UnsupportedArch { arch: &'static str },
    #[error("build the system-call filter: {0}")]
    Build(#[source] seccompiler::BackendError),
    #[error("install the system-call filter: {0}")]
    Install(#[source] seccompiler::Error),
}

/// When a listed call is denied. Arguments are compared as 32-bit values:
/// the kernel reads `ioctl`'s request, `personality`'s persona and `clone`'s
/// flags as 32-bit integers, so garbage in the upper half of the register
/// must not let a call slip past the comparison.
#[derive(Debug, Clone, Copy)]
pub(crate) enum When {
    Always,
    /// When argument `arg` equals one of `values`.
    ArgIsAny {
        arg: u8,
        values: &'static [u64],
    },
    /// When argument `arg` has any of `bits` set.
    ArgHasAnyBit {
        arg: u8,
        bits: &'static [u64],
    },
    /// When argument `arg` is none of `values`.
    ArgIsNone {
        arg: u8,
        values: &'static [u64],
    },
}

/// One entry of the deny list. `name` and `why` are its documentation; the
/// tests check that spec/sandbox.md lists every name.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Denied {
    pub name: &'static str,
    pub nr: i64,
    pub when: When,
    pub why: &'static str,
}

const fn deny(name: &'static str, nr: libc::c_long, why: &'static str) -> Denied {
    Denied {
        name,
        nr: nr as i64,
        when: When::Always,
        why,
    }
}

const TERMINAL_INJECTION: &[u64] = &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

/// The namespace flags of `clone` (CLONE_NEWTIME shares its bit with the exit
/// signal there; only `unshare` and `clone3` take it, and both are denied).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The personalities a step may select: Linux (0), PER_LINUX32 (`linux32`,
/// `setarch i686`), UNAME26, both, and 0xffffffff, which only queries.
/// The same set as Docker's default profile.
const HARMLESS_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const KEYRING: &str =
    "the kernel keyring is not namespaced: the caller's keys (its session keyring, keys of the same uid) \
                       would be readable and keys the step adds would outlive it; a build never needs keys";
const MOUNTS: &str = "the sandbox's mounts are final: a step must not change, hide or add to them (nested user \
                      namespaces could otherwise mount)";
const MODULES: &str = "loads or unloads kernel code";
const CLOCKS: &str = "sets the host's clocks";
const TRACING: &str = "reads or changes another process; before Linux 4.8 a tracer could also rewrite a system call \
                       after this filter checked it. Build tools do not trace (strace, gdb and LeakSanitizer do not \
                       work in a step)";
const IO_URING: &str = "a second system-call interface whose operations this filter does not see, and the largest \
                        recent source of kernel privilege escalations; libuv (Node) and others fall back to threads";

/// What a step may not call. Sorted by concern; `spec/sandbox.md` lists the same.
pub(crate) const DENIED: &[Denied] = &[
    deny("add_key", libc::SYS_add_key, KEYRING),
    deny("request_key", libc::SYS_request_key, KEYRING),
    deny("keyctl", libc::SYS_keyctl, KEYRING),
    Denied {
        name: "ioctl(TIOCSTI, TIOCLINUX)",
        nr: libc::SYS_ioctl as i64,
        when: When::ArgIsAny {
            arg: 1,
            values: TERMINAL_INJECTION,
        },
        why: "TIOCSTI pushes bytes into a terminal's input as if typed, TIOCLINUX pastes a console selection: \
              on a terminal the step shares, commands in the caller's shell",
    },
    deny(
        "bpf",
        libc::SYS_bpf,
        "loads programs into the kernel: a large, often exploited surface",
    ),
    deny(
        "perf_event_open",
        libc::SYS_perf_event_open,
        "observes the CPU and the kernel (side channels, kernel addresses); a frequent source of kernel bugs",
    ),
    deny(
        "userfaultfd",
        libc::SYS_userfaultfd,
        "lets a process stall the kernel's page-fault handling at will, the usual way to win kernel races in exploits",
    ),
    deny("io_uring_setup", libc::SYS_io_uring_setup, IO_URING),
    deny("io_uring_enter", libc::SYS_io_uring_enter, IO_URING),
    deny("io_uring_register", libc::SYS_io_uring_register, IO_URING),
    deny("init_module", libc::SYS_init_module, MODULES),
    deny("finit_module", libc::SYS_finit_module, MODULES),
    deny("delete_module", libc::SYS_delete_module, MODULES),
    deny("kexec_load", libc::SYS_kexec_load, "replaces the running kernel"),
    deny(
        "kexec_file_load",
        libc::SYS_kexec_file_load,
        "replaces the running kernel",
    ),
    deny(
        "reboot",
        libc::SYS_reboot,
        "reboots or halts the machine (in a PID namespace: kills its init)",
    ),
    deny("swapon", libc::SYS_swapon, "changes the host's swap"),
    deny("swapoff", libc::SYS_swapoff, "changes the host's swap"),
    deny(
        "acct",
        libc::SYS_acct,
        "switches the host's process accounting to a file",
    ),
    deny(
        "syslog",
        libc::SYS_syslog,
        "reads the kernel log: kernel addresses and other processes' messages",
    ),
    deny("settimeofday", libc::SYS_settimeofday, CLOCKS),
    deny("clock_settime", libc::SYS_clock_settime, CLOCKS),
    deny("clock_adjtime", libc::SYS_clock_adjtime, CLOCKS),
    deny(
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        "opens a file by its handle without a path walk, around every mount (the 'shocker' container escape)",
    ),
    deny("mount", libc::SYS_mount, MOUNTS),
    deny("umount2", libc::SYS_umount2, MOUNTS),
    deny("pivot_root", libc::SYS_pivot_root, MOUNTS),
    deny("fsopen", libc::SYS_fsopen, MOUNTS),
    deny("fsconfig", libc::SYS_fsconfig, MOUNTS),
    deny("fsmount", libc::SYS_fsmount, MOUNTS),
    deny("fspick", libc::SYS_fspick, MOUNTS),
    deny("move_mount", libc::SYS_move_mount, MOUNTS),
    deny("open_tree", libc::SYS_open_tree, MOUNTS),
    deny("mount_setattr", libc::SYS_mount_setattr, MOUNTS),
    deny(
        "unshare",
        libc::SYS_unshare,
        "new namespaces: a nested user namespace grants every capability over its own objects, the gateway \
         to most unprivileged kernel exploits (nested sandboxes such as Chrome's need --no-sandbox)",
    ),
    deny("setns", libc::SYS_setns, "joins another namespace through a descriptor"),
    Denied {
        name: "clone(CLONE_NEW*)",
        nr: libc::SYS_clone as i64,
        when: When::ArgHasAnyBit {
            arg: 0,
            bits: NAMESPACE_FLAGS,
        },
        why: "the same as unshare, at fork time; clone without namespace flags (fork, threads) is allowed",
    },
    deny("ptrace", libc::SYS_ptrace, TRACING),
    deny("process_vm_readv", libc::SYS_process_vm_readv, TRACING),
    deny("process_vm_writev", libc::SYS_process_vm_writev, TRACING),
    Denied {
        name: "personality(other than 0, 0x8, 0x20000, 0x20008, 0xffffffff)",
        nr: libc::SYS_personality as i64,
        when: When::ArgIsNone {
            arg: 0,
            values: HARMLESS_PERSONALITIES,
        },
        why: "other personalities weaken the process's memory protection (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, \
              MMAP_PAGE_ZERO)",
    },
];

/// The x32 ABI's system calls are x86_64's audit architecture with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn target_arch() -> Result<TargetArch, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        arch => Err(SeccompError::UnsupportedArch { arch }),
    }
}

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(SeccompError::Build)
}

/// The rule chain of one entry: the call is denied when any rule matches
/// (an empty chain matches every call).
fn rules(when: When) -> Result<Vec<SeccompRule>, SeccompError> {
    let rule = |conditions| SeccompRule::new(conditions).map_err(SeccompError::Build);
    match when {
        When::Always => Ok(Vec::new()),
        When::ArgIsAny { arg, values } => values
            .iter()
            .map(|v| rule(vec![condition(arg, SeccompCmpOp::Eq, *v)?]))
            .collect(),
        When::ArgHasAnyBit { arg, bits } => bits
            .iter()
            .map(|b| rule(vec![condition(arg, SeccompCmpOp::MaskedEq(*b), *b)?]))
            .collect(),
        When::ArgIsNone { arg, values } => {
            let all_differ = values
                .iter()
                .map(|v| condition(arg, SeccompCmpOp::Ne, *v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![rule(all_differ)?])
        }
    }
}

/// The deny list as a BPF program: EPERM for every listed call, allow
/// otherwise, and kill on a foreign architecture.
pub(crate) fn deny_filter() -> Result<BpfProgram, SeccompError> {
    let mut chains = BTreeMap::new();
    for d in DENIED {
        chains.insert(d.nr, rules(d.when)?);
    }
    let filter = SeccompFilter::new(
        chains,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(SeccompError::Build)?;
    filter.try_into().map_err(SeccompError::Build)
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// Offset of `nr` in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;

fn insn(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// What seccompiler cannot say: a range of numbers (x32) and a second errno (clone3).
pub(crate) fn abi_filter() -> BpfProgram {
    let mut prog = vec![insn(LD_W_ABS, NR_OFFSET, 0, 0)];
    if cfg!(target_arch = "x86_64") {
        prog.extend([
            // Numbers of 2^31 and above are negative: left to the kernel (ENOSYS).
            insn(JGE_K, 0x8000_0000, 2, 0),
            insn(JGE_K, X32_SYSCALL_BIT, 0, 1),
            insn(RET_K, errno(libc::EPERM), 0, 0),
        ]);
    }
    prog.extend([
        insn(JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        insn(RET_K, errno(libc::ENOSYS), 0, 0),
        insn(RET_K, libc::SECCOMP_RET_ALLOW, 0, 0),
    ]);
    prog
}

/// Installs both filters on the calling thread; they hold for everything it
/// execs and forks, and cannot be removed.
pub(crate) fn install() -> Result<(), SeccompError> {
    let built;
    let deny = match COMPILED.get() {
        Some(deny) => deny,
        None => {
            built = deny_filter()?;
            &built
        }
    };
    seccompiler::apply_filter(&abi_filter()).map_err(SeccompError::Install)?;
    seccompiler::apply_filter(deny).map_err(SeccompError::Install)
}

/// The deny list compiled once per process: a helper forked from the
/// caller inherits it ready to install.
static COMPILED: OnceLock<BpfProgram> = OnceLock::new();

/// Compiles the deny list into [`COMPILED`] (an error is left for
/// `install` to report). Called before forking a helper, so the child never
/// waits on a compilation another thread had under way at the fork.
pub(crate) fn prepare() {
    if COMPILED.get().is_none() {
        if let Ok(deny) = deny_filter() {
            let _ = COMPILED.set(deny);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The filters' decisions, computed by a small interpreter of the BPF
    //! instructions they use, so every listed call (and the ways around the
    //! list) is checked without installing anything.

    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    #[cfg(target_arch = "x86_64")]
    const NATIVE: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const NATIVE: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    const I386: u32 = 0x4000_0003; // AUDIT_ARCH_I386

    /// `struct seccomp_data` as the filter reads it: 32-bit words, little-endian.
    fn data(arch: u32, nr: i64, args: [u64; 6]) -> Vec<u32> {
        let mut words = vec![nr as u32, arch, 0, 0];
        for a in args {
            words.push(a as u32);
            words.push((a >> 32) as u32);
        }
        words
    }

    fn run(prog: &[sock_filter], data: &[u32]) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            pc += 1;
            let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
            match i.code {
                0x20 => acc = data[i.k as usize / 4],
                0x54 => acc &= i.k,                 // BPF_ALU | BPF_AND | BPF_K
                0x05 => pc += i.k as usize,         // BPF_JMP | BPF_JA
                0x15 => pc += jump(acc == i.k),     // JEQ
                0x25 => pc += jump(acc > i.k),      // JGT
                0x35 => pc += jump(acc >= i.k),     // JGE
                0x45 => pc += jump(acc & i.k != 0), // JSET
                0x06 => return i.k,
                code => panic!("instruction {code:#x} not interpreted"),
            }
        }
    }

    /// The combined verdict of both filters: the most restrictive wins (kill, then errno, then allow).
    fn verdict(arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let d = data(arch, nr, args);
        let results = [run(&deny_filter().unwrap(), &d), run(&abi_filter(), &d)];
        let rank = |r: u32| match r & 0xffff_0000 {
            x if x == KILL => 0,
            x if x == libc::SECCOMP_RET_ERRNO => 1,
            _ => 2,
        };
        *results.iter().min_by_key(|r| rank(**r)).unwrap()
    }

    fn call(nr: libc::c_long, args: [u64; 6]) -> u32 {
        verdict(NATIVE, nr as i64, args)
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn every_listed_call_is_denied_with_eperm_and_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for d in DENIED {
            assert!(seen.insert(d.nr), "{} is listed twice", d.name);
            assert!(!d.why.is_empty());
            let args = match d.when {
                When::Always => [0; 6],
                When::ArgIsAny { arg, values } | When::ArgHasAnyBit { arg, bits: values } => {
                    let mut a = [0; 6];
                    a[arg as usize] = values[0];
                    a
                }
                When::ArgIsNone { arg, .. } => {
                    let mut a = [0; 6];
                    a[arg as usize] = 0x0040_0000;
                    a
                }
            };
            assert_eq!(verdict(NATIVE, d.nr, args), EPERM, "{}", d.name);
        }
    }

    #[test]
    fn spec_sandbox_md_lists_every_denied_call() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/sandbox.md");
        let spec = std::fs::read_to_string(path).unwrap();
        for d in DENIED {
            let call = d.name.split('(').next().unwrap();
            assert!(
                spec.contains(&format!("`{call}`")),
                "spec/sandbox.md does not list `{call}`"
            );
        }
    }

    #[test]
    fn ordinary_calls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_wait4,
            libc::SYS_mmap,
            libc::SYS_socket,
        ] {
            assert_eq!(call(nr, [0; 6]), ALLOW, "{nr}");
        }
        // fork and threads.
        let thread_flags = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_THREAD) as u64;
        assert_eq!(call(libc::SYS_clone, [thread_flags, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), ALLOW);
        // Terminal ioctls other than the two injections.
        for req in [
            libc::TCGETS,
            libc::TIOCGWINSZ,
            libc::TIOCSWINSZ,
            libc::TIOCSCTTY,
            libc::FIONREAD,
        ] {
            assert_eq!(call(libc::SYS_ioctl, [0, req as u64, 0, 0, 0, 0]), ALLOW, "{req:#x}");
        }
        for p in HARMLESS_PERSONALITIES {
            assert_eq!(call(libc::SYS_personality, [*p, 0, 0, 0, 0, 0]), ALLOW, "{p:#x}");
        }
    }

    #[test]
    fn argument_checks_see_only_the_32_bits_the_kernel_reads() {
        // The kernel truncates ioctl's request to 32 bits; so does the filter.
        let sti_with_high_bits = (1u64 << 32) | libc::TIOCSTI as u64;
        assert_eq!(call(libc::SYS_ioctl, [0, sti_with_high_bits, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(libc::SYS_ioctl, [0, libc::TIOCLINUX as u64, 0, 0, 0, 0]), EPERM);
        let newuser = (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64;
        assert_eq!(call(libc::SYS_clone, [newuser, 0, 0, 0, 0, 0]), EPERM);
        let newnet = (libc::CLONE_NEWNET | libc::CLONE_VM) as u64;
        assert_eq!(call(libc::SYS_clone, [newnet, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(call(libc::SYS_personality, [0x0040_0000 | 0x8, 0, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn clone3_answers_enosys_so_libc_falls_back_to_clone() {
        assert_eq!(
            call(libc::SYS_clone3, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn other_abis_are_refused() {
        // i386 through int 0x80 (or AArch32): a different numbering, so the process is killed.
        assert_eq!(verdict(I386, 0, [0; 6]), KILL);
        assert_eq!(verdict(I386, 288, [0; 6]), KILL);
        #[cfg(target_arch = "x86_64")]
        {
            // x32: x86_64's arch with bit 30 set, e.g. keyctl and x32's own ioctl.
            assert_eq!(verdict(NATIVE, libc::SYS_keyctl as i64 | 0x4000_0000, [0; 6]), EPERM);
            assert_eq!(verdict(NATIVE, 514 | 0x4000_0000, [0; 6]), EPERM);
            // Negative numbers stay the kernel's to refuse.
            assert_eq!(verdict(NATIVE, -1, [0; 6]), ALLOW);
        }
    }
}
