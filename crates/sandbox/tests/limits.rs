//! The step's memory and process limits: with a root caller (CI) they are
//! a cgroup of the step's own, which stops a fork bomb although the kernel
//! ignores RLIMIT_NPROC for root, kills a step that allocates past its
//! memory limit, and is removed afterwards; with an unprivileged caller
//! (uid 65534 when the suite runs as root), who gets no cgroup on this
//! kind of machine, RLIMIT_NPROC and RLIMIT_AS do the same job. Each
//! attack runs in a `farm-sandbox-run` process, whose pid names the step
//! cgroups it makes, so the test can check that none is left.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use farm_sandbox::{Bind, CgroupParent, CgroupVersion, STEP_PREFIX};
use farm_testkit::{require, require_root, wait_until};
use support::*;

const MEMORY_LIMIT: u64 = 128 << 20;
const PROCESS_LIMIT: u64 = 64;

/// The step cgroups of the farm process `pid` under `parent`.
fn step_cgroups(parent: &CgroupParent, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("{STEP_PREFIX}{pid}-");
    std::fs::read_dir(&parent.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Root and a cgroup for both controllers, as on the CI machine; a skip
/// (a failure in CI) otherwise.
fn root_with_cgroups() -> Option<(CgroupParent, CgroupParent)> {
    if !require_root() {
        return None;
    }
    let parents = farm_sandbox::cgroup_parents();
    let found = parents.memory.clone().zip(parents.pids.clone());
    require(
        found.is_some(),
        format_args!(
            "no writable memory and pids cgroup for farm here ({parents:?}); \
             needs cgroup v1 hierarchies writable by root, or a delegated cgroup v2"
        ),
    )
    .then(|| found.unwrap())
}

/// A fork bomb, then a loop that starts long-lived processes until the
/// kernel refuses one: under a process limit the step fails, without one
/// it runs until its timeout.
fn fork_bomb(mark: &str) -> Step {
    let mut s = shell(&format!(
        "bomb() {{ bomb | bomb & }}; bomb; while :; do sleep 1000 0.{mark} & done"
    ));
    s.spec.limits.nproc = Some(PROCESS_LIMIT);
    s.spec.timeout = Some(Duration::from_secs(60));
    s
}

fn assert_host_is_fine(mark: &str) {
    assert_eq!(
        host_processes_with(mark),
        Vec::<u32>::new(),
        "processes of the step outlived it"
    );
    let status = std::process::Command::new("true").status().unwrap();
    assert!(status.success(), "the host cannot start a process after the step");
}

/// Proves that with a root caller, for whom the kernel does not apply
/// RLIMIT_NPROC, a fork bomb is stopped by the step's cgroup pids limit
/// long before its timeout, with an error that names the limit and the
/// farm.toml key; that nothing of it survives; and that its cgroup is gone.
#[test]
fn a_fork_bomb_as_root_is_stopped_by_the_process_limit() {
    let Some((_, pids)) = root_with_cgroups() else { return };
    let mark = marker();
    let s = fork_bomb(&mark);
    let started = Instant::now();
    let child = start(Caller::Subprocess, &s.spec, &[]).unwrap();
    let farm_pid = child.id();
    let err = finish(child).expect_err("the fork bomb ended without hitting the process limit");
    assert!(
        err.contains(&format!("process limit of {PROCESS_LIMIT} processes"))
            && err.contains("pids.max")
            && err.contains("`processes` under [limits] in farm.toml"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "took {:?}: stopped by the timeout, not the limit",
        started.elapsed()
    );
    assert_host_is_fine(&mark);
    assert_eq!(step_cgroups(&pids, farm_pid), Vec::<PathBuf>::new());
}

/// Proves the fallback: an unprivileged caller gets no cgroup here, and
/// RLIMIT_NPROC (counted in the step's user namespace) stops the same fork
/// bomb; the step fails with the shell's own error, and nothing survives.
#[test]
fn a_fork_bomb_is_stopped_by_rlimit_nproc_for_an_unprivileged_caller() {
    let mark = marker();
    let s = fork_bomb(&mark);
    let started = Instant::now();
    match run_as(Caller::Unprivileged, &s.spec, &[]) {
        Ok(out) => {
            let log = log_of(&out);
            assert!(
                !out.timed_out && out.status == 2 && log.contains("Cannot fork"),
                "{out:?}: {log}"
            );
        }
        // A non-root suite on a machine that delegates a cgroup v2 to the user.
        Err(e) if !is_root() => assert!(e.contains("process limit of 64"), "{e}"),
        Err(e) => panic!("uid {NOBODY} should get the rlimit fallback here: {e}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "took {:?}",
        started.elapsed()
    );
    assert_host_is_fine(&mark);
}

fn allocate(mib: u64) -> Step {
    let mut s = step(vec![
        "python3".into(),
        "-c".into(),
        format!("b = b'x' * ({mib} << 20); print('allocated', len(b) >> 20)"),
    ]);
    s.spec.limits.memory = Some(MEMORY_LIMIT);
    s
}

/// Proves that with a root caller a step allocating beyond its memory limit
/// is killed by the kernel and the error names the limit, its size and the
/// farm.toml key; that a step within the same limit runs; and that no
/// cgroup is left.
#[test]
fn a_step_beyond_its_memory_limit_is_killed_with_a_clear_error() {
    let Some((memory, _)) = root_with_cgroups() else { return };
    let big = allocate(512);
    let child = start(Caller::Subprocess, &big.spec, &[]).unwrap();
    let farm_pid = child.id();
    let err = finish(child).expect_err("allocating 512 MiB under a 128 MiB limit succeeded");
    assert!(
        err.contains("ran out of memory")
            && err.contains("memory limit of 128 MiB")
            && err.contains("`memory` under [limits] in farm.toml"),
        "{err}"
    );
    assert_eq!(step_cgroups(&memory, farm_pid), Vec::<PathBuf>::new());

    let small = allocate(16);
    let out = run_as(Caller::Subprocess, &small.spec, &[]).unwrap();
    assert_eq!((out.status, log_of(&out)), (0, "allocated 16\n".to_string()));
}

/// Proves the fallback: without a cgroup, the memory limit is RLIMIT_DATA
/// of each process, so the allocation fails inside the step (Python's
/// MemoryError) while a small one still works.
#[test]
fn an_allocation_beyond_the_memory_limit_fails_under_rlimit_data_for_an_unprivileged_caller() {
    let big = allocate(512);
    match run_as(Caller::Unprivileged, &big.spec, &[]) {
        Ok(out) => {
            let log = log_of(&out);
            assert!(out.status == 1 && log.contains("MemoryError"), "{out:?}: {log}");
        }
        Err(e) if !is_root() => assert!(e.contains("memory limit of 128 MiB"), "{e}"),
        Err(e) => panic!("uid {NOBODY} should get the rlimit fallback here: {e}"),
    }
    let small = allocate(16);
    let out = run_as(Caller::Unprivileged, &small.spec, &[]).unwrap();
    assert_eq!((out.status, log_of(&out)), (0, "allocated 16\n".to_string()));
}

/// A `farm-sandbox-run` killed if the test fails before it is waited for.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Proves the fallback does not break Node's WebAssembly (Vite's
/// es-module-lexer needs it), which reserves ~10 GiB of address space per
/// memory: under the default 8 GiB limit, four memories are made.
#[test]
fn node_webassembly_works_under_the_default_memory_limit_without_a_cgroup() {
    if !farm_testkit::require_tool("node") {
        return;
    }
    let mut s = step(vec![
        "node".into(),
        "-e".into(),
        "const m = []; for (let i = 0; i < 4; i++) m.push(new WebAssembly.Memory({ initial: 16 })); \
         console.log('memories', m.length)"
            .into(),
    ]);
    s.spec.limits.memory = Some(8 << 30);
    let out = run_as(Caller::Unprivileged, &s.spec, &[]).unwrap();
    assert_eq!((out.status, log_of(&out)), (0, "memories 4\n".to_string()));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Proves, while a step runs, that its cgroups exist with the configured
/// limits (pids.max counts the sandbox's own helper, PID 1 and relay on
/// top) and hold the step's processes from the helper down; that the
/// step sees its cgroup as the root of its cgroup namespace, not the
/// host's path; and that the cgroups are gone when it has ended.
#[test]
fn the_step_cgroup_holds_the_limits_while_it_runs_and_is_gone_afterwards() {
    let Some((memory, pids)) = root_with_cgroups() else {
        return;
    };
    let mut s = shell(
        "echo started > /out/started; i=0; \
         while [ ! -e /out/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; \
         cat /proc/self/cgroup",
    );
    let out_dir = s.dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    s.spec.binds.push(Bind::writable(&out_dir, "/out"));
    s.spec.limits.memory = Some(MEMORY_LIMIT);
    s.spec.limits.nproc = Some(PROCESS_LIMIT);
    let child = start(Caller::Subprocess, &s.spec, &[]).unwrap();
    let farm_pid = child.id();
    let mut guard = Running(Some(child));
    assert!(
        wait_until(Duration::from_secs(30), || out_dir.join("started").exists()),
        "the step did not start"
    );

    let mem_dirs = step_cgroups(&memory, farm_pid);
    let pid_dirs = step_cgroups(&pids, farm_pid);
    assert_eq!((mem_dirs.len(), pid_dirs.len()), (1, 1), "{mem_dirs:?} {pid_dirs:?}");
    let memory_file = match memory.version {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    };
    assert_eq!(read(&mem_dirs[0].join(memory_file)), MEMORY_LIMIT.to_string());
    assert_eq!(read(&pid_dirs[0].join("pids.max")), (PROCESS_LIMIT + 3).to_string());
    let helper = helper_of(farm_pid).expect("the sandbox helper of the farm process");
    for dir in [&mem_dirs[0], &pid_dirs[0]] {
        let procs: Vec<String> = read(&dir.join("cgroup.procs")).lines().map(str::to_string).collect();
        assert!(
            procs.contains(&helper.to_string()) && procs.len() >= 3,
            "{}: {procs:?} (helper {helper})",
            dir.display()
        );
    }

    std::fs::write(out_dir.join("go"), "").unwrap();
    let out = finish(guard.0.take().unwrap()).unwrap();
    let log = log_of(&out);
    assert_eq!(out.status, 0, "{log}");
    for line in log.lines() {
        assert!(line.ends_with(":/"), "the step sees a host cgroup path: {log}");
    }
    assert_eq!(step_cgroups(&memory, farm_pid), Vec::<PathBuf>::new());
    assert_eq!(step_cgroups(&pids, farm_pid), Vec::<PathBuf>::new());
}
