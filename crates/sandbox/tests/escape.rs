//! Escape attempts: each runs a step that tries to reach beyond its
//! sandbox and asserts that it could not. A representative subset also runs
//! with an unprivileged caller (uid 65534 when the suite runs as root).

mod support;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use farm_sandbox::{Bind, Network};
use farm_testkit::wait_until;
use support::*;

/// A secret in the invoking user's home and one in a world-readable
/// directory; neither is bound into the sandbox.
struct Secrets {
    paths: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Secrets {
    fn new(include_home: bool) -> Secrets {
        let dir = open_tempdir();
        let mut paths = vec![dir.path().join("world-readable-secret")];
        if include_home {
            let home = if is_root() {
                PathBuf::from("/root")
            } else {
                PathBuf::from(std::env::var("HOME").unwrap())
            };
            paths.push(home.join(format!(".farm-sandbox-secret-{}", marker())));
        }
        // A home the user cannot write to (e.g. nobody's) holds no secret to protect.
        paths.retain(|p| std::fs::write(p, "TOP-SECRET").is_ok());
        for p in &paths {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        assert!(!paths.is_empty());
        Secrets { paths, _dir: dir }
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn read_outside(caller: Caller) {
    let secrets = Secrets::new(caller == Caller::InProcess);
    let mut script = String::new();
    for p in &secrets.paths {
        let p = p.display();
        script.push_str(&format!(
            "cat {p} 2>/dev/null; cat /proc/1/root{p} 2>/dev/null; cat /proc/self/root{p} 2>/dev/null; \
             test -e {p} && echo EXISTS {p}; "
        ));
    }
    script.push_str("echo done");
    let s = shell(&script);
    let out = run_as(caller, &s.spec, &[]).unwrap();
    let log = log_of(&out);
    assert_eq!(out.status, 0, "{log}");
    assert!(
        !log.contains("TOP-SECRET") && !log.contains("EXISTS"),
        "a host file was readable:\n{log}"
    );
    assert_eq!(log.trim(), "done");
}

#[test]
fn host_files_outside_the_root_cannot_be_read_even_through_proc_root() {
    read_outside(Caller::InProcess);
}

#[test]
fn host_files_outside_the_root_cannot_be_read_by_an_unprivileged_caller() {
    read_outside(Caller::Unprivileged);
}

#[test]
fn listing_the_root_shows_only_the_sandbox_entries() {
    let s = shell("ls -A /");
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    let mut entries: Vec<&str> = log.lines().collect();
    entries.sort();
    assert_eq!(
        entries,
        ["bin", "build", "dev", "etc", "lib", "lib64", "out", "proc", "sbin", "tmp", "usr"]
    );
    // /etc holds only the generated files, not the host's.
    let s = shell("ls -A /etc");
    let (_, log) = run(&s.spec);
    let mut etc: Vec<&str> = log.lines().collect();
    etc.sort();
    assert_eq!(etc, ["group", "hosts", "passwd", "resolv.conf"]);
}

fn write_outside(caller: Caller) {
    let out_dir = open_tempdir();
    let mut s = shell(
        "for d in /usr /etc / /bin/ /proc/sys/kernel /dev; do \
           if touch $d/farm-escape 2>/dev/null; then echo WROTE $d; fi; done; \
         echo x > /etc/passwd 2>/dev/null && echo WROTE passwd; \
         for d in /build /out /tmp /dev/shm; do touch $d/ok && echo ok $d; done",
    );
    s.spec.binds.push(Bind::writable(out_dir.path(), "/out"));
    let out = run_as(caller, &s.spec, &[]).unwrap();
    let log = log_of(&out);
    assert_eq!(out.status, 0, "{log}");
    assert!(
        !log.contains("WROTE"),
        "a write outside the writable dirs succeeded:\n{log}"
    );
    assert_eq!(log.lines().filter(|l| l.starts_with("ok ")).count(), 4, "{log}");
    // The /out bind is the host directory: the write reached it.
    assert!(out_dir.path().join("ok").exists());
    assert!(!Path::new("/usr/farm-escape").exists() && !Path::new("/farm-escape").exists());
}

#[test]
fn writes_succeed_only_in_build_out_tmp_and_shm() {
    write_outside(Caller::InProcess);
}

#[test]
fn writes_succeed_only_in_build_out_tmp_and_shm_for_an_unprivileged_caller() {
    write_outside(Caller::Unprivileged);
}

#[test]
fn landlock_denies_writes_to_a_writable_bind_not_listed_as_writable() {
    let scratch = open_tempdir();
    let mut s = shell("touch /scratch/x 2>&1; echo status=$?");
    s.spec.binds.push(Bind::writable(scratch.path(), "/scratch"));
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    assert!(log.contains("Permission denied") && log.contains("status=1"), "{log}");
    assert!(!scratch.path().join("x").exists());
}

const CONNECT_PY: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect((host, port))
    print("CONNECTED")
except OSError as e:
    print("ERRNO", e.errno)
"#;

fn connect_step(host: &str, port: u16) -> Step {
    step(vec![
        "python3".into(),
        "-c".into(),
        CONNECT_PY.into(),
        host.into(),
        port.to_string(),
    ])
}

fn loopback_server_unreachable(caller: Caller) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = connect_step("127.0.0.1", port);
    let out = run_as(caller, &s.spec, &[]).unwrap();
    let log = log_of(&out);
    // The sandbox's own loopback has nothing on that port.
    assert_eq!(log.trim(), format!("ERRNO {}", libc::ECONNREFUSED), "{log}");
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the host server got a connection"
    );
}

#[test]
fn a_server_on_the_host_loopback_is_unreachable() {
    loopback_server_unreachable(Caller::InProcess);
}

#[test]
fn a_server_on_the_host_loopback_is_unreachable_for_an_unprivileged_caller() {
    loopback_server_unreachable(Caller::Unprivileged);
}

#[test]
fn with_host_network_the_same_server_is_reachable() {
    // The contrast that shows the test above measures the sandbox, not the test.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = connect_step("127.0.0.1", port);
    s.spec.network = Network::Host;
    let (_, log) = run(&s.spec);
    assert_eq!(log.trim(), "CONNECTED", "{log}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_ok(), "the host server saw no connection");
}

#[test]
fn non_loopback_addresses_are_unreachable() {
    // Documentation addresses (RFC 5737 / RFC 3849): routable syntax, no real host.
    for host in ["192.0.2.1", "2001:db8::1"] {
        let s = connect_step(host, 80);
        let (_, log) = run(&s.spec);
        assert_eq!(log.trim(), format!("ERRNO {}", libc::ENETUNREACH), "{host}: {log}");
    }
}

#[test]
fn a_server_on_the_sandbox_loopback_works() {
    let script = r#"
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=5)
conn, _ = srv.accept(); conn.sendall(b"pong"); print(c.recv(4).decode())
print(socket.gethostbyname("localhost"), socket.gethostbyname(socket.gethostname()))
"#;
    let s = step(vec!["python3".into(), "-c".into(), script.into()]);
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    assert_eq!(log, "pong\n127.0.0.1 127.0.0.1\n");
}

#[test]
fn name_resolution_fails_and_the_hosts_resolver_is_unreachable() {
    let host_resolver = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|r| {
            r.lines()
                .find_map(|l| l.strip_prefix("nameserver").map(|a| a.trim().to_string()))
        })
        .filter(|a| !a.contains(':'))
        .unwrap_or_else(|| "192.0.2.53".to_string());
    // A name the host would ask its resolver for, and a raw DNS query to that resolver.
    let script = r#"
import socket, sys
try:
    socket.getaddrinfo("farm-sandbox-dns-check.example.invalid", 80)
    print("RESOLVED")
except socket.gaierror as e:
    print("GAIERROR")
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
try:
    s.sendto(q, (sys.argv[1], 53)); s.recvfrom(512); print("ANSWERED")
except OSError as e:
    print("DNS ERRNO", e.errno)
print(open("/etc/resolv.conf").read() == "")
"#;
    let s = step(vec![
        "python3".into(),
        "-c".into(),
        script.into(),
        host_resolver.clone(),
    ]);
    let started = Instant::now();
    let (_, log) = run(&s.spec);
    let expect_errno = if host_resolver.starts_with("127.") {
        libc::ECONNREFUSED
    } else {
        libc::ENETUNREACH
    };
    assert_eq!(
        log,
        format!("GAIERROR\nDNS ERRNO {expect_errno}\nTrue\n"),
        "resolver {host_resolver}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "lookups must fail fast, not time out"
    );
}

#[test]
fn proc_shows_only_the_steps_processes() {
    let s = shell("ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; cat /proc/1/cmdline | tr '\\0' ' '");
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    let mut lines = log.lines();
    let pids: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // PID 1 (the reaper), the shell (2) and the pipeline's children.
    assert!(pids.len() <= 5 && pids.iter().all(|p| *p < 10), "pids seen: {pids:?}");
    assert!(pids.contains(&1) && pids.contains(&2), "{pids:?}");
    let pid1 = lines.next().unwrap_or_default();
    assert!(
        pid1.trim().is_empty(),
        "PID 1, forked from this test process, shows no command line of the caller's: {pid1:?}"
    );
}

/// What the sandbox's own processes show the step of the caller they were
/// forked from: `/proc/1/cmdline` (the caller's argv unless blanked),
/// `/proc/1/environ` and `/proc/1/mem` (the caller's environment and heap),
/// and every process's environment and command line. The step uses the
/// proxy network, so the proxy relay runs too: forked from PID 1, without
/// capabilities, at the step's uid. Two layers keep the step out of its
/// `/proc/<pid>/environ` and memory: the non-dumpable flag the helper sets,
/// and the step's Landlock domain (ptrace access checks refuse processes
/// outside it), so on a kernel with Landlock this passes with either alone.
fn callers_strings_view(caller: Caller, token: &str) -> String {
    let mut s = shell(
        "echo comm=$(cat /proc/1/comm); echo cmdline=$(tr '\\0' ' ' </proc/1/cmdline); \
         cat /proc/1/environ 2>&1 | tr '\\0' ' '; echo; cat /proc/1/mem 2>&1; \
         cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'; \
         echo relays=$(grep -l farm-sandbox /proc/[0-9]*/comm | wc -l)",
    );
    s.spec.network = Network::Proxy {
        allow: vec!["127.0.0.1:9".into()],
    };
    let extra: Vec<(&str, &str)> = if caller == Caller::InProcess {
        Vec::new()
    } else {
        vec![("FARM_FAKE_TOKEN", token)]
    };
    let out = run_as(caller, &s.spec, &extra).unwrap();
    assert_eq!(out.status, 0);
    let log = log_of(&out);
    assert!(
        log.contains("relays=2\n"),
        "PID 1 and the relay must both be there: {log}"
    );
    log
}

/// Proves a step cannot read the caller's command line, environment or
/// memory through the sandbox's PID 1 and proxy relay, both forked from the
/// caller: their command lines are blank, their environments and memory
/// are refused.
#[test]
fn the_callers_command_line_environment_and_memory_are_not_readable_through_the_sandbox_processes() {
    let me = std::env::args().next().unwrap();
    let log = callers_strings_view(Caller::InProcess, "");
    assert!(log.contains("comm=farm-sandbox\n"), "{log}");
    assert!(log.contains("cmdline=\n"), "{log}");
    assert!(!log.contains(&me), "the caller's argv[0] `{me}` is visible:\n{log}");
    let refused = log.matches("Permission denied").count();
    assert!(refused >= 2, "environ and mem of PID 1 must be refused:\n{log}");

    let token = format!("tok-{}", marker());
    let log = callers_strings_view(Caller::Subprocess, &token);
    assert!(!log.contains(&token), "the caller's environment is visible:\n{log}");
    assert!(log.matches("Permission denied").count() >= 2, "{log}");
}

#[test]
fn a_host_process_cannot_be_signalled() {
    let mark = marker();
    let mut victim = KillOnDrop(Command::new("sleep").arg(format!("1000.{mark}")).spawn().unwrap());
    let pid = victim.0.id();
    let s = shell(&format!(
        "kill -9 {pid} 2>&1; echo status=$?; test -e /proc/{pid} && echo VISIBLE"
    ));
    let (_, log) = run(&s.spec);
    assert!(log.contains("status=1") || log.contains("status=2"), "{log}");
    assert!(!log.contains("VISIBLE"), "{log}");
    assert!(
        victim.0.try_wait().unwrap().is_none(),
        "the host process was killed from the sandbox"
    );
}

#[test]
fn only_stdin_stdout_and_stderr_are_open_in_the_step() {
    let script = r#"
import os
fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
print(fds)
for fd in fds[:3]:
    print(fd, os.readlink(f"/proc/self/fd/{fd}").split(":")[0])
"#;
    let s = step(vec!["python3".into(), "-c".into(), script.into()]);
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    // fd 3 is the directory listdir itself opened.
    assert_eq!(log, "[0, 1, 2, 3]\n0 /dev/null\n1 pipe\n2 pipe\n");
}

fn host_env_does_not_leak(caller: Caller) {
    let s = step(vec!["/usr/bin/env".into()]);
    let out = run_as(
        caller,
        &s.spec,
        &[("FARM_FAKE_TOKEN", "tok-3f9a"), ("PATH", "/usr/bin:/bin:/leak")],
    )
    .unwrap();
    let log = log_of(&out);
    assert!(!log.contains("tok-3f9a") && !log.contains("/leak"), "{log}");
    let mut seen: Vec<String> = log.lines().map(str::to_string).collect();
    let mut expected: Vec<String> = s.spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "the environment is exactly the spec's");
}

#[test]
fn the_callers_environment_does_not_leak_into_the_step() {
    host_env_does_not_leak(Caller::Subprocess);
}

#[test]
fn the_callers_environment_does_not_leak_for_an_unprivileged_caller() {
    host_env_does_not_leak(Caller::Unprivileged);
}

#[test]
fn a_setuid_root_binary_does_not_raise_privileges() {
    let bin_dir = open_tempdir();
    let id_copy = bin_dir.path().join("id");
    std::fs::copy("/usr/bin/id", &id_copy).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&id_copy, Some(0), Some(0)).unwrap();
    }
    std::fs::set_permissions(&id_copy, std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert_ne!(std::fs::metadata(&id_copy).unwrap().permissions().mode() & 0o4000, 0);
    let mut s = shell(
        "/opt/suid/id -u; /opt/suid/id -ru; grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
    );
    s.spec.binds.push(Bind::read_only(bin_dir.path(), "/opt/suid"));
    let (_, log) = run(&s.spec);
    let zero = "0000000000000000";
    let expected =
        format!("1000\n1000\nCapPrm:\t{zero}\nCapEff:\t{zero}\nCapBnd:\t{zero}\nCapAmb:\t{zero}\nNoNewPrivs:\t1\n");
    assert_eq!(log, expected);
}

#[test]
fn mounting_is_refused_even_from_a_nested_user_namespace() {
    let s = shell(
        "mkdir -p /tmp/x; mount -t tmpfs none /tmp/x 2>/dev/null && echo MOUNTED; \
         unshare -Urm sh -c 'mount -t tmpfs none /tmp/x && echo NESTED-MOUNTED' 2>/dev/null; \
         unshare -Urm sh -c 'mount --bind / /tmp/x && echo NESTED-BIND' 2>/dev/null; echo done",
    );
    let (_, log) = run(&s.spec);
    assert_eq!(log.trim(), "done", "a mount succeeded:\n{log}");
}

#[test]
fn the_hostname_cannot_be_changed() {
    let host_before = nix::unistd::gethostname().unwrap();
    let s = shell("hostname evil 2>/dev/null && echo CHANGED; hostname");
    let (_, log) = run(&s.spec);
    assert_eq!(log.trim(), HOSTNAME, "{log}");
    assert_eq!(nix::unistd::gethostname().unwrap(), host_before);
}

#[test]
fn background_processes_do_not_outlive_the_step() {
    let mark = marker();
    let s = shell(&format!(
        "sleep 1000.{mark} & (setsid sleep 1001.{mark} &) ; echo started"
    ));
    let (out, log) = run(&s.spec);
    assert_eq!((out.status, log.trim()), (0, "started"));
    assert_eq!(
        host_processes_with(&mark),
        Vec::<u32>::new(),
        "a process of the step survived it"
    );

    // The scan itself finds such a process when there is one.
    let control = KillOnDrop(Command::new("sleep").arg(format!("1002.{mark}")).spawn().unwrap());
    // The new argv becomes visible a moment after spawn returns (vfork resumes the parent mid-exec).
    wait_until(Duration::from_secs(10), || !host_processes_with(&mark).is_empty());
    assert_eq!(host_processes_with(&mark), vec![control.0.id()]);
}

/// RLIMIT_NPROC holds for unprivileged callers only: the kernel exempts
/// host root's processes from it even inside a user namespace, so with a
/// root caller the step's cgroup pids limit is what ends a fork bomb (next
/// test, and limits.rs).
#[test]
fn a_fork_bomb_hits_the_process_limit_for_an_unprivileged_caller_and_everything_is_killed() {
    let mark = marker();
    let script = format!(
        r#"
import os
n = 0
try:
    while True:
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/sleep", ["sleep", "1000.{mark}"])
        n += 1
except OSError as e:
    print("fork failed", e.errno, n < 64)
"#
    );
    let mut s = step(vec!["python3".into(), "-c".into(), script]);
    s.spec.limits.nproc = Some(64);
    s.spec.timeout = Some(Duration::from_secs(30));
    let out = run_as(Caller::Unprivileged, &s.spec, &[]).unwrap();
    let log = log_of(&out);
    assert_eq!(log.trim(), format!("fork failed {} True", libc::EAGAIN), "{log}");
    assert_eq!((out.status, out.timed_out), (0, false));
    assert_eq!(host_processes_with(&mark), Vec::<u32>::new());
}

/// Proves an endless fork loop ends at the process limit: the cgroup's
/// (an error naming the limit) where farm gets a cgroup, else RLIMIT_NPROC
/// (dash gives up), else, for root without a cgroup, the timeout.
#[test]
fn an_endless_fork_loop_is_contained_by_the_limit_and_the_timeout() {
    let mark = marker();
    let mut s = shell(&format!("while :; do sleep 1000.{mark} & done"));
    s.spec.limits.nproc = Some(64);
    s.spec.timeout = Some(Duration::from_secs(2));
    let started = Instant::now();
    let result = run_as(Caller::InProcess, &s.spec, &[]);
    if farm_sandbox::cgroup_parents().pids.is_some() {
        let e = result.unwrap_err();
        assert!(e.contains("process limit of 64"), "{e}");
    } else if is_root() {
        // The kernel does not apply RLIMIT_NPROC to host root: the timeout ends it.
        let out = result.unwrap();
        assert!(out.timed_out && out.status == 128 + libc::SIGKILL, "{out:?}");
    } else {
        // dash gives up when fork fails under the limit.
        let out = result.unwrap();
        let log = log_of(&out);
        assert!(
            !out.timed_out && out.status == 2 && log.contains("Cannot fork"),
            "{out:?}: {log}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(host_processes_with(&mark), Vec::<u32>::new());
}

#[test]
fn devices_other_than_the_minimal_set_are_absent() {
    let s = shell("ls /dev | tr '\\n' ' '; cat /dev/vda 2>/dev/null; cat /dev/mem 2>/dev/null; echo; ls /dev/pts");
    let (_, log) = run(&s.spec);
    // A fresh devpts instance holds only its ptmx: none of the host's terminals.
    assert_eq!(
        log,
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \nptmx\n"
    );
}

#[test]
fn killing_the_caller_kills_the_whole_sandbox() {
    let mark = marker();
    // The marker comes from the environment so that only the two sleeps carry it in their argv.
    let mut s = shell("sleep 1000.$MARK & sleep 1001.$MARK");
    s.spec.env.push(("MARK".into(), mark.clone()));
    s.spec.timeout = None;
    let spec_file = s.dir.path().join("spec.json");
    std::fs::write(&spec_file, serde_json::to_string(&s.spec).unwrap()).unwrap();
    let mut caller = KillOnDrop(
        Command::new(helper())
            .arg("--spec")
            .arg(&spec_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || host_processes_with(&mark).len() == 2),
        "the step never started"
    );
    caller.0.kill().unwrap();
    caller.0.wait().unwrap();
    // The helper sees its lifeline close and kills PID 1, which takes the namespace with it.
    assert!(
        wait_until(Duration::from_secs(20), || host_processes_with(&mark).is_empty()),
        "processes of the step outlived their caller: {:?}",
        host_processes_with(&mark)
    );
}

/// What /proc/self/mountinfo shows a step that has a read-only bind (the
/// project, in `farm exec`) and a writable one (`/out`).
fn mountinfo_view(caller: Caller) {
    let host = open_tempdir();
    let project = host.path().join(format!("project-{}", marker()));
    let out_dir = host.path().join("out");
    for d in [&project, &out_dir] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut s = shell("cat /proc/self/mountinfo; echo ===; cat /proc/self/mounts /proc/self/mountstats");
    s.spec.binds.push(Bind::read_only(&project, "/build/src"));
    s.spec.binds.push(Bind::writable(&out_dir, "/out"));
    let out = run_as(caller, &s.spec, &[]).unwrap();
    let log = log_of(&out);
    assert_eq!(out.status, 0, "{log}");
    let (mountinfo, others) = log.split_once("===\n").unwrap();

    let root_paths: Vec<PathBuf> = match &s.spec.root {
        farm_sandbox::RootSpec::HostPaths(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    let bind_sources = [
        std::fs::canonicalize(&project).unwrap(),
        std::fs::canonicalize(&out_dir).unwrap(),
    ];
    let mut seen_sources = Vec::new();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (root, point) = (Path::new(f[3]), f[4]);
        let fstype = line.split(" - ").nth(1).unwrap().split(' ').next().unwrap();
        let documented = root == Path::new("/")
            || root_paths.iter().any(|p| p == root)
            || bind_sources.iter().any(|p| p == root)
            || (fstype == "devtmpfs" && ["/null", "/zero", "/full", "/random", "/urandom", "/tty"].contains(&f[3]))
            || (fstype == "proc" && ["/sys", "/sysrq-trigger", "/irq", "/bus"].contains(&f[3]));
        assert!(
            documented,
            "mount `{point}` shows the undocumented host path `{}`:\n{mountinfo}",
            root.display()
        );
        if bind_sources.iter().any(|p| p == root) {
            seen_sources.push(root.to_path_buf());
        }
    }
    // Pinned: the bind sources' host paths are visible (spec/sandbox.md,
    // "Still shared with the host"). If this changes, update the spec.
    assert_eq!(seen_sources.len(), 2, "{mountinfo}");
    // The other mount tables show devices and mount points, not host paths.
    assert!(!others.contains(host.path().to_str().unwrap()), "{others}");
}

/// Proves /proc/self/mountinfo shows no host path but the documented ones:
/// the roots of the binds the caller asked for (and of the root's entries
/// and device nodes), nothing of the host's other directories; and that
/// /proc/self/mounts and mountstats show none at all.
#[test]
fn mountinfo_shows_only_the_documented_host_paths() {
    mountinfo_view(Caller::InProcess);
}

#[test]
fn mountinfo_shows_only_the_documented_host_paths_for_an_unprivileged_caller() {
    mountinfo_view(Caller::Unprivileged);
}
