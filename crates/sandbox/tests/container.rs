//! The container backend against real engines: every test runs twice, as
//! `podman::<test>` against Podman's Docker-compatible API service and as
//! `docker::<test>` against Docker Engine (`dockerd`), each started by the
//! test on a socket and storage of its own (farm-testkit), reached with
//! bollard. The step's root is a tiny tree made from the host's static
//! busybox.
//!
//! Needs root, `busybox-static` and the engine's programs (`podman`,
//! `runc`; `dockerd`, `containerd`, `docker`): with CI=true a missing one
//! fails the test, otherwise the test is skipped with a `SKIPPED` line
//! (farm-testkit's skip mechanism).

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use farm_sandbox::container::{
    mount_points, root_image_tag, ContainerBackend, ContainerError, EngineKind as BackendKind, ENGINE_ADDED_ENV,
    STEP_LABEL,
};
use farm_sandbox::{standard_env, Bind, Network, Outcome, RootSpec, Stdio, StepSpec};
use farm_testkit::{require, require_tool, EngineKind, EngineService};

const EPOCH: u64 = 1_700_000_000;
const HOSTNAME: &str = "farm-container-test";
/// Set in this process before anything starts; must never reach a step.
const FAKE_TOKEN: (&str, &str) = ("FARM_TEST_FAKE_TOKEN", "ghp_notarealtoken0123456789");
/// Where the test's own DNS responder listens (any 127/8 address is
/// loopback), one address per engine since both variants run at once.
fn dns_addr(kind: EngineKind) -> Ipv4Addr {
    match kind {
        EngineKind::Podman => Ipv4Addr::new(127, 0, 0, 77),
        EngineKind::Docker => Ipv4Addr::new(127, 0, 0, 78),
    }
}
/// The address it answers every A query with.
const DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

static SETUP: Once = Once::new();

/// Every test calls this first, so the variable is set before any thread
/// reads the environment or any child starts.
fn setup() {
    SETUP.call_once(|| std::env::set_var(FAKE_TOKEN.0, FAKE_TOKEN.1));
}

/// ELF with no PT_INTERP program header, so it runs in a root without libc.
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else { return false };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes.get(at..at + 4) != Some(&3u32.to_le_bytes()[..])
    })
}

/// Root, the engine's programs and a static busybox, or a skip (a failure in CI).
fn ready(kind: EngineKind) -> bool {
    setup();
    kind.require()
        && require(
            is_static_elf(Path::new("/bin/busybox")),
            "/bin/busybox is missing or not static (scripts/install-deps installs busybox-static)",
        )
}

/// Runs each named test (a `fn(EngineKind)`) once per engine, as
/// `podman::<name>` and `docker::<name>`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod podman {
            $(
                /// See the function of the same name in the parent module.
                #[test]
                fn $name() {
                    super::$name(farm_testkit::EngineKind::Podman)
                }
            )*
        }
        mod docker {
            $(
                /// See the function of the same name in the parent module.
                #[test]
                fn $name() {
                    super::$name(farm_testkit::EngineKind::Docker)
                }
            )*
        }
    };
}

on_both_engines!(
    a_step_runs_as_uid_1000_with_its_env_and_binds_only,
    without_network_the_host_and_dns_are_unreachable,
    only_build_out_and_tmp_are_writable_and_unbound_host_files_are_absent,
    the_memory_limit_reaches_the_containers_cgroup,
    a_step_past_its_timeout_is_killed_and_removed,
    missing_commands_fail_clearly_and_the_backend_is_shareable,
    inherit_on_a_terminal_gives_the_step_a_terminal,
    inherit_passes_stdin_stdout_and_stderr_through,
);

/// One engine's API service for one test, with its CLI.
struct Engine {
    service: EngineService,
}

impl Engine {
    fn start(kind: EngineKind) -> Engine {
        Engine {
            service: EngineService::start(kind),
        }
    }

    fn host(&self) -> String {
        self.service.docker_host()
    }

    fn backend(&self) -> ContainerBackend {
        ContainerBackend::connect(Some(&self.host())).unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    fn log(&self) -> String {
        self.service.log()
    }

    /// The engine's CLI (`podman` or `docker`) on this engine.
    fn cli(&self, args: &[&str]) -> String {
        let out = self.service.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            self.service.kind().name(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every container the engine has, running or not.
    fn containers(&self) -> Vec<String> {
        self.cli(&["ps", "-a", "--format", "{{.ID}} {{.Labels}}"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

const APPLETS: &[&str] = &[
    "sh", "id", "cat", "ls", "echo", "env", "nc", "wget", "nslookup", "sleep", "touch", "mkdir", "tr", "sort", "grep",
    "hostname", "pwd", "wc", "true", "test", "readlink", "stat", "chmod", "printf",
];

/// A root made of the host's static busybox: bin/busybox, its applets as
/// symlinks, a /usr with one file, an /open directory and a /tmp with a
/// file in it. No /etc at all: the backend must provide passwd and group
/// itself. /usr, its file and /open are writable for everyone, so only a
/// read-only root stops a write. /tmp is 0555 and root's, as in a store
/// entry (Debian's root): the step's /tmp must not take that mode, nor
/// show the file. There is no /build: the engine makes that mount point.
fn busybox_root(parent: &Path, name: &str) -> PathBuf {
    let root = parent.join(name);
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::write(root.join("tmp/from-the-root"), "hidden\n").unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::create_dir_all(root.join("usr/share")).unwrap();
    fs::create_dir_all(root.join("open")).unwrap();
    fs::write(root.join("usr/share/marker"), "from the root\n").unwrap();
    for (path, mode) in [
        ("usr", 0o777),
        ("usr/share", 0o777),
        ("usr/share/marker", 0o666),
        ("open", 0o777),
        ("tmp", 0o555),
    ] {
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(mode)).unwrap();
    }
    root
}

struct Step {
    spec: StepSpec,
    _dir: tempfile::TempDir,
}

/// `sh -c script` with the standard environment, a 120 s timeout and the log in a temp dir.
fn shell(root: &Path, script: &str) -> Step {
    let tmp = tempfile::Builder::new()
        .prefix("farm-container-step-")
        .tempdir()
        .unwrap();
    let log = tmp.path().join("step.log");
    let mut spec = StepSpec::new(
        RootSpec::Dir(root.to_path_buf()),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        Stdio::Capture { log, stream: false },
    );
    spec.env = standard_env("/bin", EPOCH);
    spec.hostname = HOSTNAME.into();
    spec.timeout = Some(Duration::from_secs(120));
    Step { spec, _dir: tmp }
}

fn log_of(outcome: &Outcome) -> String {
    fs::read_to_string(outcome.log.as_ref().expect("captured step has a log")).unwrap()
}

fn run(backend: &ContainerBackend, engine: &Engine, spec: &StepSpec) -> (Outcome, String) {
    let outcome = backend
        .run(spec)
        .unwrap_or_else(|e| panic!("{e}\nservice log:\n{}", engine.log()));
    let log = log_of(&outcome);
    (outcome, log)
}

fn assert_no_containers(engine: &Engine) {
    let left = engine.containers();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// Lines of `log` between `BEGIN name` and `END name`.
fn section<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    log.lines()
        .skip_while(|l| *l != format!("BEGIN {name}"))
        .skip(1)
        .take_while(|l| *l != format!("END {name}"))
        .collect()
}

/// Proves the normal path: the step runs as uid/gid 1000 (with a passwd
/// entry the root lacks), sees exactly its own environment (plus the
/// documented engine variables, with deterministic values) and none of the
/// caller's, reads its read-only binds (also one nested in the /build
/// tmpfs), writes to /out on the host, works in its cwd with its hostname
/// and stdin /dev/null;
/// the exit status passes through; the root image is imported once and
/// reused; no container is left behind; and the backend identified the
/// engine (kind, API version) when it connected.
fn a_step_runs_as_uid_1000_with_its_env_and_binds_only(kind: EngineKind) {
    if !ready(kind) {
        return;
    }
    assert_eq!(std::env::var(FAKE_TOKEN.0).as_deref(), Ok(FAKE_TOKEN.1));
    let engine = Engine::start(kind);
    let backend = engine.backend();
    backend.probe().unwrap();
    let found = backend.engine();
    let expected = match kind {
        EngineKind::Podman => BackendKind::Podman,
        EngineKind::Docker => BackendKind::Docker,
    };
    assert_eq!(found.kind, expected, "{found:?}");
    let (major, minor) = found.api_version.split_once('.').unwrap();
    assert!(
        (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap()) >= (1, 25),
        "{found:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    // Named like a store entry, so the image tag comes from the digest in the name.
    let digest = "5e1f".repeat(16);
    let root = busybox_root(tmp.path(), &format!("{digest}-busybox-root"));
    let input = tmp.path().join("input");
    fs::create_dir(&input).unwrap();
    fs::write(input.join("data.txt"), "input-data\n").unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("main.txt"), "source-file\n").unwrap();
    // Created by root with mode 0700: the backend must open it up for uid 1000.
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o700)).unwrap();

    let script = "\
        echo BEGIN id; id -u; id -g; id -un; echo END id; \
        echo BEGIN env; tr '\\0' '\\n' < /proc/$$/environ; echo END env; \
        echo BEGIN misc; pwd; hostname; cat /farm/store/input/data.txt /build/src/main.txt /usr/share/marker; \
        readlink /proc/$$/fd/0; echo END misc; \
        echo written-by-step > /out/result.txt";
    let mut step = shell(&root, script);
    step.spec.binds = vec![
        Bind::read_only(&input, "/farm/store/input"),
        Bind::read_only(&src, "/build/src"),
        Bind::writable(&out, "/out"),
    ];
    step.spec.cwd = "/build/src".into();
    let (outcome, log) = run(&backend, &engine, &step.spec);
    assert!(outcome.success(), "{outcome:?}\n{log}");
    assert_eq!(section(&log, "id"), ["1000", "1000", "build"], "{log}");

    let env: Vec<(&str, &str)> = section(&log, "env")
        .into_iter()
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .collect();
    let get = |k: &str| env.iter().find(|(name, _)| *name == k).map(|(_, v)| *v);
    assert_eq!(get("HOME"), Some("/homeless-shelter"), "{log}");
    assert_eq!(get("SOURCE_DATE_EPOCH"), Some("1700000000"), "{log}");
    assert_eq!(get("PATH"), Some("/bin"), "{log}");
    assert_eq!(get(FAKE_TOKEN.0), None, "the caller's environment leaked: {log}");
    for (name, value) in &env {
        let ours = step.spec.env.iter().any(|(k, _)| k == name);
        assert!(
            ours || ENGINE_ADDED_ENV.contains(name),
            "`{name}={value}` is neither the step's nor a documented engine variable"
        );
    }
    if let Some(h) = get("HOSTNAME") {
        assert_eq!(h, HOSTNAME);
    }
    assert_eq!(
        section(&log, "misc"),
        [
            "/build/src",
            HOSTNAME,
            "input-data",
            "source-file",
            "from the root",
            "/dev/null"
        ],
        "{log}"
    );
    assert_eq!(fs::read_to_string(out.join("result.txt")).unwrap(), "written-by-step\n");
    assert_no_containers(&engine);

    let tag = root_image_tag(&root, &mount_points(&step.spec)).unwrap();
    assert_eq!(backend.root_image(&step.spec).unwrap(), format!("farm-root:{tag}"));
    let images_before = engine.cli(&["images", "-q", "--no-trunc"]);
    assert_eq!(images_before.lines().count(), 1, "{images_before}");

    // A second backend (a new farm process) finds the image and does not import it again.
    let second = engine.backend();
    let step = shell(&root, "echo failing; exit 7");
    let (outcome, log) = run(&second, &engine, &step.spec);
    assert_eq!((outcome.status, outcome.timed_out), (7, false), "{log}");
    assert_eq!(log, "failing\n");
    assert_eq!(engine.cli(&["images", "-q", "--no-trunc"]), images_before);
    assert_no_containers(&engine);
}

/// A TCP server on the host that counts the connections it accepts.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

fn tcp_listener() -> Listener {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"hello\n");
        }
    });
    Listener { port, accepted }
}

/// A DNS server that answers every A query with `DNS_ANSWER` (and other
/// types with no data) until dropped.
struct DnsResponder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn dns_responder(addr: Ipv4Addr) -> DnsResponder {
    let socket = UdpSocket::bind(SocketAddr::from((addr, 53)))
        .unwrap_or_else(|e| panic!("bind the test DNS server on {addr}:53: {e}"));
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !flag.load(Ordering::SeqCst) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Some(reply) = dns_reply(&buf[..n]) {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    DnsResponder {
        stop,
        thread: Some(thread),
    }
}

fn dns_reply(query: &[u8]) -> Option<Vec<u8>> {
    // Header (12 bytes), then QNAME labels, QTYPE, QCLASS.
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += 1 + *query.get(at)? as usize;
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let answers: u16 = (qtype == 1).into();
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]);
    reply.extend_from_slice(&[0x81, 0x80, 0, 1]);
    reply.extend_from_slice(&answers.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if answers == 1 {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&DNS_ANSWER.octets());
    }
    Some(reply)
}

/// This host's address on its default route, if it has one.
fn host_address() -> Option<Ipv4Addr> {
    let probe = UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?;
    match probe.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_loopback() && !a.ip().is_unspecified() => Some(*a.ip()),
        _ => None,
    }
}

/// Proves a step without network reaches neither a TCP server on the
/// host's loopback nor on its own address, and cannot resolve a name (no
/// name server in resolv.conf, and a DNS server on the host's loopback is
/// out of reach). The same commands with `Network::Host` succeed, so the
/// failures come from the isolation and not from the commands.
fn without_network_the_host_and_dns_are_unreachable(kind: EngineKind) {
    if !ready(kind) {
        return;
    }
    let engine = Engine::start(kind);
    let backend = engine.backend();
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path(), "busybox-root");
    let listener = tcp_listener();
    let dns = dns_addr(kind);
    let _dns = dns_responder(dns);
    let port = listener.port;
    let mut script = format!(
        "nc -w 5 127.0.0.1 {port} </dev/null && echo LOOPBACK-OPEN || echo LOOPBACK-CLOSED; \
         nslookup farm-probe.example.invalid {dns} && echo DNS-SERVER-OK || echo DNS-SERVER-FAILED; \
         nslookup farm-probe.example.invalid && echo DNS-DEFAULT-OK || echo DNS-DEFAULT-FAILED; \
         echo resolv-bytes=$(wc -c < /etc/resolv.conf); "
    );
    let address = host_address();
    if let Some(ip) = address {
        script += &format!("nc -w 5 {ip} {port} </dev/null && echo ADDRESS-OPEN || echo ADDRESS-CLOSED; ");
    }

    let mut isolated = shell(&root, &script);
    isolated.spec.timeout = Some(Duration::from_secs(60));
    let (outcome, log) = run(&backend, &engine, &isolated.spec);
    assert!(!outcome.timed_out, "{log}");
    for expected in [
        "LOOPBACK-CLOSED",
        "DNS-SERVER-FAILED",
        "DNS-DEFAULT-FAILED",
        "resolv-bytes=0",
    ] {
        assert!(log.contains(expected), "expected {expected}:\n{log}");
    }
    if address.is_some() {
        assert!(log.contains("ADDRESS-CLOSED"), "{log}");
    }
    assert!(!log.contains(&DNS_ANSWER.to_string()), "{log}");
    assert_eq!(listener.accepted.load(Ordering::SeqCst), 0);

    let mut connected = shell(&root, &script);
    connected.spec.network = Network::Host;
    let (outcome, log) = run(&backend, &engine, &connected.spec);
    assert!(!outcome.timed_out, "{log}");
    for expected in ["LOOPBACK-OPEN", "DNS-SERVER-OK", &DNS_ANSWER.to_string()] {
        assert!(
            log.contains(expected),
            "control with host network: expected {expected}:\n{log}"
        );
    }
    assert!(listener.accepted.load(Ordering::SeqCst) >= 1);
    assert_no_containers(&engine);
}

/// Proves the root, /usr, /etc and the read-only binds cannot be written,
/// /build and /tmp can (fresh tmpfs) and hold executables, and host files
/// that are not bound (one in the host's /root) do not exist for the step.
/// The writable dirs have the native sandbox's mode and owner on either
/// engine — /tmp 1777 root's, /build and /out 0755 the step's — although
/// the root's /tmp is 0555 (as in a store entry; Docker with runc used to
/// give the tmpfs that mode) and /build is not in the root at all; and
/// /tmp is empty although the root's has a file (Docker copies a
/// directory's files into a tmpfs mounted on it).
fn only_build_out_and_tmp_are_writable_and_unbound_host_files_are_absent(kind: EngineKind) {
    if !ready(kind) {
        return;
    }
    let engine = Engine::start(kind);
    let backend = engine.backend();
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path(), "busybox-root");
    let input = tmp.path().join("input");
    fs::create_dir(&input).unwrap();
    fs::write(input.join("data.txt"), "input\n").unwrap();
    // Writable for everyone: only the read-only bind stops a write.
    fs::set_permissions(&input, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(input.join("data.txt"), fs::Permissions::from_mode(0o666)).unwrap();
    let secret = PathBuf::from(format!("/root/farm-container-secret-{}", std::process::id()));
    fs::write(&secret, "host secret\n").unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(secret.clone());

    let attempt =
        |what: &str, cmd: &str| format!("if {cmd} 2>/dev/null; then echo {what}-YES; else echo {what}-NO; fi; ");
    let script = [
        "echo BEGIN modes; stat -c '%a %u %g %n' /tmp /build /out; ls -A /tmp; echo END modes; ".to_string(),
        attempt("ROOT-WRITE", "touch /open/x"),
        attempt("INPUT-NEW", "touch /farm/store/input/new"),
        attempt("USR-WRITE", "touch /usr/share/marker"),
        attempt("USR-NEW", "touch /usr/new"),
        attempt("ETC-WRITE", "touch /etc/passwd"),
        attempt("INPUT-WRITE", "touch /farm/store/input/data.txt"),
        attempt("BUILD-WRITE", "echo b > /build/b && test -s /build/b"),
        attempt("TMP-WRITE", "echo t > /tmp/t && test -s /tmp/t"),
        attempt(
            "BUILD-EXEC",
            "printf '#!/bin/sh\\necho ran\\n' > /build/x.sh && chmod +x /build/x.sh && /build/x.sh",
        ),
        attempt("SECRET-READ", &format!("cat {}", secret.display())),
        attempt("ROOT-DIR", "ls /root"),
        attempt("PASSWD-BUILD", "grep -q '^build:x:1000:1000:' /etc/passwd"),
    ]
    .concat();
    let mut step = shell(&root, &script);
    step.spec.binds = vec![Bind::read_only(&input, "/farm/store/input")];
    let (outcome, log) = run(&backend, &engine, &step.spec);
    assert!(outcome.success(), "{outcome:?}\n{log}");
    assert_eq!(
        section(&log, "modes"),
        ["1777 0 0 /tmp", "755 1000 1000 /build", "755 1000 1000 /out"],
        "{log}"
    );
    for expected in [
        "ROOT-WRITE-NO",
        "USR-WRITE-NO",
        "USR-NEW-NO",
        "ETC-WRITE-NO",
        "INPUT-WRITE-NO",
        "INPUT-NEW-NO",
        "BUILD-WRITE-YES",
        "TMP-WRITE-YES",
        "BUILD-EXEC-YES",
        "SECRET-READ-NO",
        "ROOT-DIR-NO",
        "PASSWD-BUILD-YES",
    ] {
        assert!(log.lines().any(|l| l == expected), "expected {expected}:\n{log}");
    }
    assert_eq!(fs::read_to_string(input.join("data.txt")).unwrap(), "input\n");
    assert_eq!(
        fs::read_to_string(root.join("usr/share/marker")).unwrap(),
        "from the root\n"
    );
    assert!(!root.join("open/x").exists() && !root.join("usr/new").exists() && !input.join("new").exists());
    assert_no_containers(&engine);
}

/// Proves `limits.memory` becomes the container's memory limit, read back
/// from inside the container's own memory cgroup (v1 or v2), when the
/// engine reports it can limit memory (both do on these machines; the test
/// requires it, since otherwise it would prove nothing).
fn the_memory_limit_reaches_the_containers_cgroup(kind: EngineKind) {
    if !ready(kind) {
        return;
    }
    let engine = Engine::start(kind);
    let backend = engine.backend();
    if !require(
        backend.engine().memory_limit,
        format_args!("{} cannot limit memory here (no memory cgroup)", backend.engine().name),
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path(), "busybox-root");
    let limit: u64 = 96 << 20;
    let mut step = shell(
        &root,
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    );
    step.spec.limits.memory = Some(limit);
    let (outcome, log) = run(&backend, &engine, &step.spec);
    assert!(outcome.success(), "{outcome:?}\n{log}");
    assert_eq!(log.trim(), limit.to_string(), "{log}");
    assert_no_containers(&engine);
}

/// Proves a step past its timeout is killed: `timed_out`, status 137, well
/// before the command would have ended, and its container is gone.
fn a_step_past_its_timeout_is_killed_and_removed(kind: EngineKind) {
    if !ready(kind) {
        return;
    }
    let engine = Engine::start(kind);
    let backend = engine.backend();
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path(), "busybox-root");
    let mut step = shell(&root, "echo started; sleep 30; echo never");
    // Imported beforehand, so the timing covers the step only.
    backend.root_image(&step.spec).unwrap();
    step.spec.timeout = Some(Duration::from_secs(2));
    let started = Instant::now();
    let (outcome, log) = run(&backend, &engine, &step.spec);
    let took = started.elapsed();
    assert!(outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.status, 137);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(log, "started\n");
    assert_no_containers(&engine);
    let labelled = engine.cli(&["ps", "-a", "-q", "--filter", &format!("label={STEP_LABEL}")]);
    assert_eq!(labelled.trim(), "");
}

/// Proves a command missing from the root is an error that names it, with
/// a hint, and leaves no container; that one backend serves steps from
/// several threads at once; and that it may be called from inside a tokio
/// runtime (farm's async code), where a nested `block_on` would panic.
fn missing_commands_fail_clearly_and_the_backend_is_shareable(kind: EngineKind) {
    if !ready(kind) {
        return;
    }
    let engine = Engine::start(kind);
    let backend = engine.backend();
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path(), "busybox-root");
    let mut missing = shell(&root, "unused");
    missing.spec.argv = vec!["farm-no-such-tool".into(), "--version".into()];
    let err = backend.run(&missing.spec).unwrap_err().to_string();
    assert!(err.contains("farm-no-such-tool") && err.contains("hint:"), "{err}");
    assert_no_containers(&engine);

    let statuses: Vec<i32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let backend = &backend;
                let root = &root;
                let engine = &engine;
                s.spawn(move || {
                    let step = shell(root, &format!("sleep 1; exit {}", 10 + i));
                    run(backend, engine, &step.spec).0.status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses, [10, 11, 12]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let step = shell(&root, "echo from-async");
    let outcome = runtime.block_on(async { backend.run(&step.spec) }).unwrap();
    assert_eq!(log_of(&outcome), "from-async\n");
    assert_no_containers(&engine);
}

const CHILD_ENV: &str = "FARM_CONTAINER_TEST_CHILD";

/// The running test's path (`podman::…` or `docker::…`): libtest names the
/// test's thread after it. A child process runs this test alone.
fn this_test() -> String {
    std::thread::current()
        .name()
        .expect("libtest names test threads")
        .to_string()
}

/// Proves `Stdio::Inherit` on a terminal: the step gets a terminal of its
/// own and the caller's typing reaches it. The child runs under `script`
/// (util-linux), which gives it a pseudo-terminal as stdin and stdout.
fn inherit_on_a_terminal_gives_the_step_a_terminal(kind: EngineKind) {
    if std::env::var(CHILD_ENV).is_ok() {
        return inherit_child_on_tty();
    }
    if !(ready(kind) && require_tool("script")) {
        return;
    }
    let engine = Engine::start(kind);
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path(), "busybox-root");
    let exe = std::env::current_exe().unwrap();
    let command = format!("{} --exact {} --nocapture", exe.display(), this_test());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env(CHILD_ENV, format!("{}\n{}", engine.host(), root.display()))
        .stdin(ProcStdio::piped())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"typed-line\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{stderr}\n{}",
        engine.log()
    );
    assert!(stdout.contains("STDIN-IS-A-TTY"), "{stdout}");
    assert!(stdout.contains("got:typed-line"), "{stdout}");
    assert_no_containers(&engine);
}

fn inherit_child_on_tty() {
    let config = std::env::var(CHILD_ENV).unwrap();
    let (host, root) = config.split_once('\n').unwrap();
    let backend = ContainerBackend::connect(Some(host)).unwrap();
    let mut spec = StepSpec::new(
        RootSpec::Dir(root.into()),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "test -t 0 && test -t 1 && echo STDIN-IS-A-TTY; read line; echo got:$line; exit 4".into(),
        ],
        Stdio::Inherit,
    );
    spec.env = standard_env("/bin", EPOCH);
    spec.timeout = Some(Duration::from_secs(60));
    let outcome = backend.run(&spec).unwrap();
    assert_eq!((outcome.status, outcome.timed_out), (4, false));
}

/// Proves `Stdio::Inherit` without a terminal: the caller's stdin reaches
/// the step (and its end closes the step's stdin), the step's stdout and
/// stderr reach the caller's. Runs itself as a child process with piped
/// stdio, the way `farm shell` would be driven by a script.
fn inherit_passes_stdin_stdout_and_stderr_through(kind: EngineKind) {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        return inherit_child(&config);
    }
    if !ready(kind) {
        return;
    }
    let engine = Engine::start(kind);
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_root(tmp.path(), "busybox-root");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &this_test(), "--nocapture"])
        .env(CHILD_ENV, format!("{}\n{}", engine.host(), root.display()))
        .stdin(ProcStdio::piped())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"first-line\nsecond\nthird\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{stderr}\n{}",
        engine.log()
    );
    assert!(stdout.contains("got:first-line\n"), "{stdout}");
    assert!(stdout.contains("rest:second third\n"), "{stdout}");
    assert!(stderr.contains("to-stderr\n"), "{stderr}");
    assert!(!stdout.contains("to-stderr"), "{stdout}");
    assert_no_containers(&engine);
}

fn inherit_child(config: &str) {
    let (host, root) = config.split_once('\n').unwrap();
    let backend = ContainerBackend::connect(Some(host)).unwrap();
    let mut spec = StepSpec::new(
        RootSpec::Dir(root.into()),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            // `cat` only ends when the caller's stdin has ended.
            "read line; echo got:$line; echo rest:$(cat); echo to-stderr >&2; exit 3".into(),
        ],
        Stdio::Inherit,
    );
    spec.env = standard_env("/bin", EPOCH);
    spec.timeout = Some(Duration::from_secs(60));
    let outcome = backend.run(&spec).unwrap();
    assert_eq!((outcome.status, outcome.timed_out), (3, false));
}

/// Proves a missing engine is a clear error naming the socket, with a hint.
#[test]
fn no_engine_is_a_clear_error() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let host = format!("unix://{}", tmp.path().join("absent.sock").display());
    let err = ContainerBackend::connect(Some(&host)).unwrap_err();
    assert!(matches!(err, ContainerError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("absent.sock") && msg.contains("hint:"), "{msg}");
}
