//! `farm build --remote-executor` with `farm worker`s against a real REAPI
//! server (BuildGrid with its `!execution` service and PostgreSQL): two
//! workers run a fresh store's hermetic steps and the manifest digest is the
//! local build's; a worker killed in the middle of a step loses its lease
//! and another worker finishes the step; a step that fails on a worker fails
//! the build with the worker's log; a step that tries the network fails on
//! the worker as it does locally; an executor that is down leaves a local
//! build with a warning.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{copy_tree, farm, farm_bin, run, stderr, stdout, workspace};
use farm_testkit::buildgrid_exec::{pg_bin, BuildGridExec};
use farm_testkit::{free_port, require, require_root, require_tool, shared_farm_home, wait_until};

/// The remote-cache fixture (a frontend with no npm packages and a custom
/// step `gen`), locked, in a temp dir.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&workspace().join("tests/fixtures/remote-cache"), dir.path(), &[]);
    dir
}

/// The fixture fetched and built here in a fresh store (its steps in the
/// local action cache), then `extra` appended to its farm.toml: the next
/// build runs only the steps `extra` adds.
fn prebuilt(extra: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = project();
    let home = tempfile::tempdir().unwrap();
    ok(&farm_re(dir.path(), home.path(), &["fetch"]));
    ok(&farm_re(dir.path(), home.path(), &["build", "--hermetic"]));
    let toml = dir.path().join("farm.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}\n{extra}")).unwrap();
    (dir, home)
}

/// `farm ARGS` with no remote settings from the caller's environment.
fn farm_re(p: &Path, home: &Path, args: &[&str]) -> Output {
    let mut c = farm(p, home, args);
    c.env_remove("FARM_REMOTE_CACHE")
        .env_remove("FARM_REMOTE_EXECUTOR")
        .env_remove("FARM_REMOTE_TOKEN");
    run(&mut c)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "farm failed:\n{}", stderr(o));
    stdout(o).trim().to_string()
}

/// A `farm worker` process with its own store; killed when dropped.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
    _home: tempfile::TempDir,
}

impl Worker {
    fn start(url: &str, name: &str) -> Worker {
        let home = tempfile::tempdir().unwrap();
        let log = home.path().join("worker.log");
        let child = std::process::Command::new(farm_bin())
            .args(["worker", "--server", url, "--name", name])
            .env("FARM_HOME", home.path().join("home"))
            .env_remove("FARM_REMOTE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let w = Worker {
            child: Some(child),
            log,
            _home: home,
        };
        w.wait_for("connected to", Duration::from_secs(60));
        w
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the worker's log says `what`; panics with the log after `limit`.
    fn wait_for(&self, what: &str, limit: Duration) {
        assert!(
            wait_until(limit, || self.text().contains(what)),
            "the worker never said {what:?} in {limit:?}:\n{}",
            self.text()
        );
    }

    /// SIGKILL, as a machine that dies.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn last_build(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.join(".farm/last-build.json")).unwrap()).unwrap()
}

fn metrics(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.join(".farm/out/farm-metrics.json")).unwrap()).unwrap()
}

fn can_run() -> bool {
    require_tool("bgd")
        && require(pg_bin().is_some(), "PostgreSQL's initdb under /usr/lib/postgresql")
        && require_root()
}

/// A local hermetic build gives digest D. A fresh store builds the same
/// lock with `--remote-executor` and two workers: every script step says
/// `built remotely` (none ran here), the manifest digest is D, the step
/// records name their REAPI action, the metrics count them. Built again
/// in another fresh store, the server's cache answers; with `--no-cache`
/// the workers run the steps again.
#[test]
fn two_workers_build_a_fresh_store_with_the_local_digest() {
    if !can_run() {
        return;
    }
    let server = BuildGridExec::start();
    let dir = project();
    let p = dir.path();
    let home = shared_farm_home();
    ok(&farm_re(p, &home, &["fetch"]));
    let local = ok(&farm_re(p, &home, &["build", "--hermetic", "--no-cache"]));
    assert!(local.starts_with("sha256:"), "{local}");

    let a = Worker::start(&server.url, "wa");
    let b = Worker::start(&server.url, "wb");
    let fresh = tempfile::tempdir().unwrap();
    ok(&farm_re(p, fresh.path(), &["fetch"]));
    let o = farm_re(
        p,
        fresh.path(),
        &["build", "--hermetic", "--remote-executor", &server.url],
    );
    let err = stderr(&o);
    assert_eq!(ok(&o), local, "remote execution gives the local manifest:\n{err}");
    assert!(
        err.contains("[frontend] built remotely") && err.contains("[gen] built remotely"),
        "{err}\nworker a:\n{}\nworker b:\n{}",
        a.text(),
        b.text()
    );
    assert!(!err.contains("] built\n"), "no step ran here:\n{err}");
    let steps = last_build(p)["steps"].clone();
    for s in ["frontend", "gen"] {
        assert!(steps[s]["remote_action"].is_string(), "{s}: {steps}");
        assert_eq!(steps[s]["cached"], false, "{s}: {steps}");
    }
    let m = metrics(p);
    assert_eq!(m["remote_cache"]["executed_remotely"], 2, "{m}");
    assert!(m["remote_cache"]["bytes_up"].as_u64().unwrap() > 0, "{m}");
    let ran = a.text().matches("exited 0").count() + b.text().matches("exited 0").count();
    assert_eq!(ran, 2, "the workers ran both steps:\n{}\n{}", a.text(), b.text());
    let out = p.join(".farm/out/steps/gen");
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "<h1>hi</h1>\n");
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), PathBuf::from("a.txt"));

    // Another fresh store: the server's action cache answers, no worker runs.
    let again = tempfile::tempdir().unwrap();
    ok(&farm_re(p, again.path(), &["fetch"]));
    let o = farm_re(
        p,
        again.path(),
        &["build", "--hermetic", "--remote-executor", &server.url],
    );
    assert_eq!(ok(&o), local);
    let err = stderr(&o);
    assert!(
        err.contains("[frontend] remote cache hit") && err.contains("[gen] remote cache hit"),
        "{err}"
    );
    let ran = a.text().matches("exited 0").count() + b.text().matches("exited 0").count();
    assert_eq!(ran, 2, "no worker ran a step again");

    // --no-cache runs the steps again: the server does not answer from its cache.
    let o = farm_re(
        p,
        again.path(),
        &["build", "--hermetic", "--no-cache", "--remote-executor", &server.url],
    );
    assert_eq!(ok(&o), local);
    let err = stderr(&o);
    assert!(
        err.contains("[frontend] built remotely") && err.contains("[gen] built remotely"),
        "{err}"
    );
    let ran = a.text().matches("exited 0").count() + b.text().matches("exited 0").count();
    assert_eq!(ran, 4, "the workers ran both steps again");
    assert_eq!(metrics(p)["remote_cache"]["executed_remotely"], 2);
}

/// A worker is killed (SIGKILL) while it runs a slow step: the server
/// notices the silent bot session, gives the lease to the other worker,
/// and the build finishes with the step's output.
#[test]
fn a_killed_worker_s_step_finishes_on_another_worker() {
    if !can_run() {
        return;
    }
    let server = BuildGridExec::start();
    let (dir, home) = prebuilt(
        r#"[[steps]]
name = "slow"
outputs = ["done.txt"]
command = 'sleep 20; echo "slept on $(uname -n)" > "$out/done.txt"'
"#,
    );
    let p = dir.path();
    let mut a = Worker::start(&server.url, "first");
    let mut build = farm(
        p,
        home.path(),
        &["build", "--hermetic", "--remote-executor", &server.url],
    );
    build
        .env_remove("FARM_REMOTE_CACHE")
        .env_remove("FARM_REMOTE_EXECUTOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = build.spawn().unwrap();
    a.wait_for("running action", Duration::from_secs(120));
    a.kill();
    let b = Worker::start(&server.url, "second");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the build did not end after the step");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}\nserver:\n{}", server.log());
    assert!(err.contains("[slow] built remotely"), "{err}");
    assert!(b.text().contains("exited 0"), "the second worker ran it:\n{}", b.text());
    assert_eq!(
        std::fs::read_to_string(p.join(".farm/out/steps/slow/done.txt")).unwrap(),
        "slept on farm\n"
    );
}

/// A step that fails on a worker fails the build with the worker's log
/// (its last lines in the error), as a local failure does; a step that
/// tries the network gets none on the worker.
#[test]
fn remote_failures_show_the_worker_s_log() {
    if !can_run() {
        return;
    }
    let server = BuildGridExec::start();
    let port = server.port;
    let (dir, home) = prebuilt(&format!(
        r#"[[steps]]
name = "net"
outputs = ["x"]
command = 'echo trying the network; node -e "require(\"net\").connect({port}, \"127.0.0.1\").on(\"error\", e => {{ console.log(\"net: \" + e.code); process.exit(7) }}).on(\"connect\", () => process.exit(0))"'
"#
    ));
    let p = dir.path();
    let _w = Worker::start(&server.url, "w");
    let o = farm_re(
        p,
        home.path(),
        &["build", "--hermetic", "--remote-executor", &server.url],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("step net failed on the remote executor")
            && err.contains("exit status 7")
            && err.contains("trying the network")
            && (err.contains("net: ECONNREFUSED") || err.contains("net: ENETUNREACH")),
        "{err}"
    );
    assert!(err.contains("[net] FAILED remotely"), "{err}");
}

/// Nothing listens at the executor's address: the build warns, naming
/// the address, builds every step here and succeeds; a cache and an
/// executor that name two servers are refused before anything runs.
#[test]
fn an_executor_that_is_down_leaves_a_local_build() {
    let dir = project();
    let p = dir.path();
    let home = tempfile::tempdir().unwrap();
    let url = format!("grpc://127.0.0.1:{}", free_port());
    let mut c = farm(p, home.path(), &["build"]);
    c.env_remove("FARM_REMOTE_CACHE").env("FARM_REMOTE_EXECUTOR", &url);
    let o = run(&mut c);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains(&url) && err.contains("every step is built here"), "{err}");
    assert!(err.contains("[frontend] built") && err.contains("[gen] built"), "{err}");

    let other = format!("grpc://127.0.0.1:{}", free_port());
    let o = farm_re(
        p,
        home.path(),
        &["build", "--remote-executor", &url, "--remote-cache", &other],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("farm uses one server for both"), "{err}");
    assert!(!err.contains("] started"), "no step ran: {err}");
}

/// The example app (npm + Vite frontend, pip backend, models, images)
/// built in a fresh store with `--remote-executor` and two workers has the
/// manifest digest of the local hermetic build.
#[test]
fn the_example_app_built_remotely_has_the_local_digest() {
    if !can_run() {
        return;
    }
    let Some(dir) = common::fetched_example() else {
        return;
    };
    let p = dir.path();
    let home = shared_farm_home();
    let t = Instant::now();
    let local = ok(&farm_re(p, &home, &["build", "--hermetic"]));
    eprintln!("local build: {:?}", t.elapsed());
    let server = BuildGridExec::start();
    let _a = Worker::start(&server.url, "wa");
    let _b = Worker::start(&server.url, "wb");
    let t = Instant::now();
    // --no-cache: every step runs again, the script steps on the workers.
    let o = farm_re(
        p,
        &home,
        &["build", "--hermetic", "--no-cache", "--remote-executor", &server.url],
    );
    eprintln!("remote build: {:?}\n{}", t.elapsed(), stderr(&o));
    assert_eq!(ok(&o), local, "{}", stderr(&o));
}

/// The server restarts (same address, CAS and database) while a worker is
/// connected: the worker reconnects on its own and runs the next build's
/// step.
#[test]
fn a_worker_survives_the_server_restarting() {
    if !can_run() {
        return;
    }
    let mut server = BuildGridExec::start();
    let (dir, home) = prebuilt(
        r#"[[steps]]
name = "after-restart"
outputs = ["x.txt"]
command = 'echo restarted > "$out/x.txt"'
"#,
    );
    let p = dir.path();
    let w = Worker::start(&server.url, "w");
    server.restart();
    let o = farm_re(
        p,
        home.path(),
        &["build", "--hermetic", "--remote-executor", &server.url],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}\nworker:\n{}", w.text());
    assert!(err.contains("[after-restart] built remotely"), "{err}");
    assert!(
        w.text().contains("reconnecting"),
        "the worker saw the restart:\n{}",
        w.text()
    );
    assert_eq!(
        std::fs::read_to_string(p.join(".farm/out/steps/after-restart/x.txt")).unwrap(),
        "restarted\n"
    );
}
