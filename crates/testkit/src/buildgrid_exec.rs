//! BuildGrid with remote execution: the `!execution` service (REAPI
//! Execution plus the Remote Workers API's Bots service that workers poll)
//! on an SQL scheduler, which BuildGrid only runs on PostgreSQL. Each
//! server gets a PostgreSQL cluster of its own (Debian's `postgresql`:
//! `initdb` into a temp dir, `pg_ctl` on a free loopback port, `createdb`,
//! `bgd migrate apply`), as ../shared/TESTING.md records.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::buildgrid::spawn_bgd;
use crate::net::free_port;

/// Where Debian puts PostgreSQL's server programs (not on PATH).
const PG_BIN_GLOB: &str = "/usr/lib/postgresql";

/// The platform properties workers and actions are matched on; every
/// other property farm sets is accepted without matching.
pub const MATCH_KEYS: &[&str] = &["OSFamily", "ISA", "farm-sandbox"];
const WILDCARD_KEYS: &[&str] = &["farm-mapping", "farm-key", "farm-toolchain-root", "farm-host-tools"];

/// The directory of `initdb`, `pg_ctl` and `createdb` (the newest
/// PostgreSQL installed), if there is one. Tests check it with
/// `farm_testkit::require(pg_bin().is_some(), …)`.
pub fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(PG_BIN_GLOB)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// A PostgreSQL cluster plus `bgd server start` with CAS, ByteStream,
/// ActionCache and Execution (with Bots) on free loopback ports, all in a
/// temp dir of its own; everything is stopped and removed on drop.
/// Callers check `require_tool("bgd")` and [`pg_bin`] first.
pub struct BuildGridExec {
    bgd: Option<Child>,
    /// `grpc://127.0.0.1:PORT`, as `--remote-executor` and `farm worker --server` take it.
    pub url: String,
    pub port: u16,
    pg_bin: PathBuf,
    pg_data: PathBuf,
    pg_running: bool,
    /// The scheduler's database URL (for a restart).
    db: String,
    dir: tempfile::TempDir,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A PostgreSQL program; as root, run as the `postgres` user, since
/// `initdb` and the server refuse to run as root.
fn pg_command(bin: &Path, program: &str) -> Command {
    let exe = bin.join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    }
}

/// Runs a PostgreSQL program and asserts that it succeeded.
fn pg(bin: &Path, program: &str, args: &[&str]) -> Output {
    let out = pg_command(bin, program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl BuildGridExec {
    pub fn start() -> BuildGridExec {
        let pg_bin = pg_bin().expect("PostgreSQL's initdb (Debian's postgresql; scripts/install-deps installs it)");
        let dir = tempfile::tempdir().unwrap();
        // The postgres user must reach its data directory inside ours.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let pg_dir = dir.path().join("pg");
        fs::create_dir(&pg_dir).unwrap();
        if is_root() {
            let uid = Command::new("id").args(["-u", "postgres"]).output().unwrap();
            let gid = Command::new("id").args(["-g", "postgres"]).output().unwrap();
            let n = |o: Output| String::from_utf8(o.stdout).unwrap().trim().parse::<u32>().unwrap();
            std::os::unix::fs::chown(&pg_dir, Some(n(uid)), Some(n(gid))).unwrap();
        }
        let pg_data = pg_dir.join("data");
        let data = pg_data.to_str().unwrap();
        pg(&pg_bin, "initdb", &["-D", data, "-A", "trust", "-U", "bgd"]);
        let mut this = BuildGridExec {
            bgd: None,
            url: String::new(),
            port: 0,
            pg_bin,
            pg_data: pg_data.clone(),
            pg_running: false,
            db: String::new(),
            dir,
        };
        let pg_port = this.start_postgres(&pg_dir);
        // psycopg2 explicitly: the scheduler's LISTEN loop needs its connection API.
        let db = format!("postgresql+psycopg2://bgd@127.0.0.1:{pg_port}/bgd");
        let created = Command::new(this.pg_bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &pg_port.to_string(), "-U", "bgd", "bgd"])
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let migrated = Command::new("bgd")
            .args(["migrate", "apply", &db])
            .current_dir(this.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("bgd: {e} (scripts/install-deps installs BuildGrid)"));
        assert!(
            migrated.status.success(),
            "bgd migrate apply {db}:\n{}",
            String::from_utf8_lossy(&migrated.stderr)
        );
        this.start_bgd(&db);
        this.db = db;
        this
    }

    /// `pg_ctl start` on a free port (a port taken meanwhile: the next one).
    fn start_postgres(&mut self, pg_dir: &Path) -> u16 {
        let data = self.pg_data.to_str().unwrap().to_string();
        let log = pg_dir.join("postgres.log");
        for _ in 0..5 {
            let port = free_port();
            let opts = format!(
                "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off",
                pg_dir.display()
            );
            let out = pg_command(&self.pg_bin, "pg_ctl")
                .args([
                    "-D",
                    &data,
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &opts,
                    "start",
                ])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                self.pg_running = true;
                return port;
            }
            let text = fs::read_to_string(&log).unwrap_or_default();
            assert!(text.contains("in use"), "pg_ctl start failed:\n{text}");
        }
        panic!("no free port for PostgreSQL in 5 tries");
    }

    fn start_bgd(&mut self, db: &str) {
        let cas = self.dir.path().join("cas");
        let (child, port) = spawn_bgd(self.dir.path(), |port| config_yaml(port, &cas, db));
        self.bgd = Some(child);
        self.port = port;
        self.url = format!("grpc://127.0.0.1:{port}");
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("bgd.log")).unwrap_or_default()
    }

    /// Stops BuildGrid and starts it again on the same port, CAS and
    /// database (a server restart: bot sessions and streams are cut).
    pub fn restart(&mut self) {
        self.stop();
        let cas = self.dir.path().join("cas");
        let config = config_yaml(self.port, &cas, &self.db);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // The old process's port may linger a moment.
        loop {
            if let Some(child) = crate::buildgrid::spawn_bgd_on(self.dir.path(), self.port, &config) {
                self.bgd = Some(child);
                return;
            }
            assert!(std::time::Instant::now() < deadline, "port {} stayed in use", self.port);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Stops BuildGrid (the database stays up until drop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.bgd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BuildGridExec {
    fn drop(&mut self) {
        self.stop();
        if self.pg_running {
            let data = self.pg_data.to_str().unwrap_or_default();
            let _ = pg_command(&self.pg_bin, "pg_ctl")
                .args(["-D", data, "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The cache-only configuration of ../shared/TESTING.md plus the SQL
/// scheduler and the `!execution` service (which brings the Bots service).
fn config_yaml(port: u16, cas: &Path, db: &str) -> String {
    let list = |keys: &[&str]| keys.join(", ");
    format!(
        r#"server:
  - !channel {{ address: "127.0.0.1:{port}", insecure-mode: true }}
authorization: {{ method: none }}
connections:
  - !sql-connection &sql {{ connection-string: "{db}" }}
storages:
  - !disk-storage &store {{ path: {cas} }}
caches:
  - !lru-action-cache &ac {{ storage: *store, max-cached-refs: 100000, allow-updates: true, cache-failed-actions: false }}
schedulers:
  - !sql-scheduler &sched
    sql: *sql
    action-cache: *ac
    storage: *store
    property-set: !dynamic-property-set {{ match-property-keys: [{m}], wildcard-property-keys: [{w}] }}
    # A worker silent for 6 s is dead and its leases go to another: tests kill workers.
    bot-session-keepalive-timeout: 6
    session-expiry-timer-interval: 1
instances:
  - name: ""
    services:
      - !action-cache {{ cache: *ac }}
      - !cas {{ storage: *store }}
      - !bytestream {{ storage: *store }}
      - !execution {{ scheduler: *sched }}
"#,
        cas = cas.display(),
        m = list(MATCH_KEYS),
        w = list(WILDCARD_KEYS),
    )
}
