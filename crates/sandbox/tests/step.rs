//! The normal path of a sandboxed step, its limits and timeout, and the
//! errors a caller sees when a step cannot start.

mod support;

use std::io::Write;
use std::process::{Command, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use farm_sandbox::{Bind, Network, RootSpec, Sandbox, SandboxError, Stage, Stdio, StepSetup};
use farm_testkit::wait_until;
use support::*;

const IDENTITY: &str = "id -u; id -g; id -un; echo HOME=$HOME; echo SDE=$SOURCE_DATE_EPOCH; \
                        echo TZ=$TZ LC_ALL=$LC_ALL TMPDIR=$TMPDIR; hostname; pwd; python3 -c 'print(1)'";

fn identity_expected() -> String {
    format!(
        "1000\n1000\nbuild\nHOME=/homeless-shelter\nSDE={EPOCH}\nTZ=UTC LC_ALL=C.UTF-8 TMPDIR=/tmp\n{HOSTNAME}\n/build\n1\n"
    )
}

#[test]
fn a_step_runs_as_uid_1000_with_the_fixed_home_epoch_and_hostname() {
    let s = shell(IDENTITY);
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    assert!(!out.timed_out);
    assert_eq!(log, identity_expected());
    assert!(out.peak_rss_kib.unwrap() > 0);
}

/// Proves a helper prepared ahead of its step (`Sandbox::prepare`, what
/// `farm exec` uses) runs the step exactly as `run` does, and refuses a
/// step whose network, ids, limits or stdio are not the ones it was
/// prepared for, before any of it runs.
#[test]
fn a_prepared_helper_runs_only_the_step_it_was_prepared_for() {
    let s = shell(IDENTITY);
    let sandbox = Sandbox::default();
    let out = sandbox.prepare(&StepSetup::of(&s.spec)).unwrap().run(&s.spec).unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(log_of(&out), identity_expected());

    let mut other = shell("echo ran > /out/ran");
    let out_dir = other.dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    other.spec.binds.push(Bind::writable(&out_dir, "/out"));
    let prepared_for = StepSetup::of(&other.spec);
    type Change = fn(&mut farm_sandbox::StepSpec);
    let mismatches: [(&str, Change); 4] = [
        ("network", |spec| spec.network = Network::Host),
        ("uid", |spec| spec.uid = 0),
        ("limits", |spec| spec.limits.nproc = Some(7)),
        ("stdio", |spec| spec.stdio = Stdio::Inherit),
    ];
    for (what, change) in mismatches {
        let mut spec = other.spec.clone();
        change(&mut spec);
        let prepared = sandbox.prepare(&prepared_for).unwrap();
        match prepared.run(&spec) {
            Err(SandboxError::InvalidSpec { .. }) => {}
            other => panic!("a step with another {what} ran in a prepared helper: {other:?}"),
        }
        assert!(!out_dir.join("ran").exists(), "the {what} mismatch ran the step");
    }
}

#[test]
fn run_returns_as_soon_as_the_step_ends_not_at_its_timeout() {
    let mut s = shell("true");
    s.spec.timeout = Some(Duration::from_secs(60));
    let started = Instant::now();
    let (out, _) = run(&s.spec);
    assert_eq!((out.status, out.timed_out), (0, false));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_step_runs_the_same_for_an_unprivileged_caller() {
    let s = shell(IDENTITY);
    let out = run_as(Caller::Unprivileged, &s.spec, &[]).unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(log_of(&out), identity_expected());
}

#[test]
fn the_exit_status_and_signal_deaths_are_reported_like_a_shell() {
    let s = shell("echo out; echo err >&2; exit 7");
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 7);
    assert!(!out.success());
    assert_eq!(log, "out\nerr\n", "stdout and stderr go to one log");
    let s = shell("kill -TERM $$");
    let (out, _) = run(&s.spec);
    assert_eq!(out.status, 128 + libc::SIGTERM);
}

#[test]
fn outputs_written_to_a_writable_out_bind_reach_the_host() {
    let out_dir = open_tempdir();
    let src_dir = open_tempdir();
    std::fs::write(src_dir.path().join("input.txt"), "hello").unwrap();
    let mut s = shell("cp /build/src/input.txt /out/copied.txt && echo more >> /out/copied.txt && touch /build/src/x 2>/dev/null || echo src-ro");
    s.spec.binds.push(Bind::read_only(src_dir.path(), "/build/src"));
    s.spec.binds.push(Bind::writable(out_dir.path(), "/out"));
    let (out, log) = run(&s.spec);
    assert_eq!((out.status, log.as_str()), (0, "src-ro\n"));
    assert_eq!(
        std::fs::read_to_string(out_dir.path().join("copied.txt")).unwrap(),
        "hellomore\n"
    );
    assert!(!src_dir.path().join("x").exists());
}

#[test]
fn a_directory_root_supplies_the_tree_and_etc_is_merged_with_generated_files() {
    // A root laid out like the Debian base: merged-/usr symlinks, an etc/ with its own passwd (which must
    // not show) and an empty usr/ that the host's /usr is bound over.
    let base = open_tempdir();
    let b = base.path();
    std::fs::create_dir_all(b.join("etc/ssl")).unwrap();
    std::fs::create_dir_all(b.join("usr")).unwrap();
    std::fs::write(b.join("etc/os-release"), "ID=farmtest\n").unwrap();
    std::fs::write(b.join("etc/passwd"), "intruder:x:0:0::/:/bin/sh\n").unwrap();
    for (link, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        std::os::unix::fs::symlink(target, b.join(link)).unwrap();
    }
    let mut s = shell("cat /etc/os-release; cut -d: -f1 /etc/passwd | tr '\\n' ' '; ls -A /etc | tr '\\n' ' '; ls -A / | tr '\\n' ' '");
    s.spec.root = RootSpec::Dir(b.to_path_buf());
    s.spec.binds.push(Bind::read_only("/usr", "/usr"));
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    assert_eq!(
        log,
        "ID=farmtest\nbuild nobody group hosts os-release passwd resolv.conf ssl \
         bin build dev etc lib lib64 out proc tmp usr "
    );
}

#[test]
fn limits_are_applied_to_the_step() {
    let mut s = shell("ulimit -n; ulimit -p; ulimit -c; ulimit -f");
    s.spec.limits.nofile = Some(512);
    s.spec.limits.nproc = Some(100);
    s.spec.limits.fsize = Some(1024 * 1024);
    let (_, log) = run(&s.spec);
    // dash reports the file size limit in 512-byte blocks.
    assert_eq!(log, "512\n100\n0\n2048\n");
}

#[test]
fn a_step_past_its_timeout_is_killed_and_marked_timed_out() {
    let mark = marker();
    let mut s = shell(&format!("echo begun; sleep 1000.{mark}"));
    s.spec.timeout = Some(Duration::from_millis(1500));
    let started = Instant::now();
    let (out, log) = run(&s.spec);
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.status, 128 + libc::SIGKILL);
    assert_eq!(log, "begun\n");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(20),
        "took {took:?}"
    );
    assert_eq!(host_processes_with(&mark), Vec::<u32>::new());
}

#[test]
fn a_missing_command_is_an_exec_error_naming_it_and_the_path() {
    let s = step(vec!["no-such-farm-tool".into()]);
    let e = Sandbox::with_helper(helper()).run(&s.spec).unwrap_err();
    match &e {
        SandboxError::Setup {
            stage: Stage::Exec,
            message,
            ..
        } => {
            assert!(
                message.contains("no-such-farm-tool") && message.contains("/usr/bin"),
                "{message}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert!(e.to_string().contains("hint:"), "{e}");
}

#[test]
fn a_missing_working_directory_is_an_exec_error() {
    let mut s = shell("true");
    s.spec.cwd = "/build/does-not-exist".into();
    let e = Sandbox::with_helper(helper()).run(&s.spec).unwrap_err().to_string();
    assert!(e.contains("stage `exec`") && e.contains("/build/does-not-exist"), "{e}");
}

#[test]
fn an_invalid_spec_is_rejected_before_any_process_starts() {
    let mut s = shell("true");
    s.spec.binds.push(Bind::read_only("/usr", "relative/target"));
    let e = Sandbox::with_helper("/nonexistent/helper")
        .run(&s.spec)
        .unwrap_err()
        .to_string();
    assert!(e.contains("binds[0].target") && e.contains("relative/target"), "{e}");
}

#[test]
fn a_helper_that_does_not_exist_is_reported_with_a_hint() {
    let s = shell("true");
    let e = Sandbox::with_helper("/nonexistent/farm")
        .run(&s.spec)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/farm") && e.contains("hint:"), "{e}");
}

#[test]
fn a_binary_that_ignores_the_helper_argument_is_reported() {
    // /bin/true exits 0 without reading the request or reporting anything.
    let s = shell("true");
    let e = Sandbox::with_helper("/bin/true").run(&s.spec).unwrap_err();
    assert!(matches!(e, SandboxError::HelperVanished { .. }), "{e}");
    assert!(e.to_string().contains(farm_sandbox::HELPER_ARG));
}

#[test]
fn the_probe_succeeds_here_for_root_and_unprivileged_callers() {
    Sandbox::with_helper(helper()).probe().unwrap();
    Sandbox::default().probe().unwrap();
    let out = spawn_retrying(
        unprivileged_command()
            .arg("--probe")
            .stdout(ProcStdio::piped())
            .stderr(ProcStdio::piped()),
    )
    .unwrap()
    .wait_with_output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn inherit_mode_passes_the_callers_stdio_through() {
    let mut s = shell("read line; echo got:$line; echo to-stderr >&2");
    s.spec.stdio = Stdio::Inherit;
    let spec_file = s.dir.path().join("spec.json");
    std::fs::write(&spec_file, serde_json::to_string(&s.spec).unwrap()).unwrap();
    let mut child = Command::new(helper())
        .arg("--spec")
        .arg(&spec_file)
        .stdin(ProcStdio::piped())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello-from-caller\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("got:hello-from-caller"), "{stdout}");
    let outcome: farm_sandbox::Outcome = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!((outcome.status, outcome.log), (0, None));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
}

#[test]
fn sigterm_to_the_sandbox_is_forwarded_to_the_command() {
    let flag_dir = open_tempdir();
    let mut s = shell("trap 'echo got-term; exit 3' TERM; sleep 1000 & touch /out/ready; wait");
    s.spec.binds.push(Bind::writable(flag_dir.path(), "/out"));
    let spec_file = s.dir.path().join("spec.json");
    std::fs::write(&spec_file, serde_json::to_string(&s.spec).unwrap()).unwrap();
    let caller = Command::new(helper())
        .arg("--spec")
        .arg(&spec_file)
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped())
        .spawn()
        .unwrap();
    // If an assertion fails below, the caller's death ends the sandbox (its lifeline closes).
    let caller_pid = caller.id();
    let _cleanup = scopeguard_kill(caller_pid);
    assert!(
        wait_until(Duration::from_secs(20), || flag_dir.path().join("ready").exists()),
        "step never got ready"
    );
    let helper_pid = helper_of(caller_pid).expect("the helper process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = caller.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let outcome: farm_sandbox::Outcome = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome.status, 3, "the command's trap decided the status");
    assert_eq!(log_of(&outcome), "got-term\n");
}

/// Kills `pid` when dropped, unless it has already been reaped by then.
fn scopeguard_kill(pid: u32) -> impl Drop {
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.0 as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    Guard(pid)
}

#[test]
fn streaming_copies_the_output_to_the_callers_stderr_as_well_as_the_log() {
    let mut s = shell("echo streamed-out; echo streamed-err >&2");
    let log = s.dir.path().join("step.log");
    s.spec.stdio = Stdio::Capture {
        log: log.clone(),
        stream: true,
    };
    let spec_file = s.dir.path().join("spec.json");
    std::fs::write(&spec_file, serde_json::to_string(&s.spec).unwrap()).unwrap();
    let out = Command::new(helper()).arg("--spec").arg(&spec_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "streamed-out\nstreamed-err\n");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "streamed-out\nstreamed-err\n");
}

/// Proves the helper forked from a multi-threaded caller keeps none of the
/// caller's descriptors: with a step still running, the caller closes the
/// write end of a pipe of its own and sees end-of-file at once, which it
/// would not if a sandbox process held a copy.
#[test]
fn a_forked_helper_keeps_none_of_the_callers_descriptors() {
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut s = shell("touch /out/started; sleep 6");
    let out_dir = open_tempdir();
    s.spec.binds.push(Bind::writable(out_dir.path(), "/out"));
    let started = out_dir.path().join("started");
    let spec = s.spec.clone();
    let step = std::thread::spawn(move || Sandbox::default().run(&spec));
    assert!(
        wait_until(Duration::from_secs(30), || started.exists()),
        "the step did not start"
    );
    drop(w);
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&r),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(3000u16)).unwrap();
    let mut byte = [0u8; 1];
    let n = if ready > 0 {
        nix::unistd::read(&r, &mut byte).unwrap()
    } else {
        1
    };
    assert_eq!(
        n, 0,
        "a sandbox process still holds the caller's pipe (poll ready: {ready})"
    );
    assert!(
        !step.is_finished(),
        "the step must still be running for this to prove anything"
    );
    let outcome = step.join().unwrap().unwrap();
    assert_eq!(outcome.status, 0);
}
