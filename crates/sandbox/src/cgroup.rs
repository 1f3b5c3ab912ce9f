//! The step's memory and process limits as a cgroup of its own, where the
//! kernel gives farm one. rlimits are per process (RLIMIT_AS) or ignored
//! for root (RLIMIT_NPROC); a cgroup bounds the whole step, whoever the
//! caller is.
//!
//! Where the step cgroups go is decided once per process, per controller:
//!
//! 1. cgroup v2, when the unified hierarchy is mounted, farm's own cgroup
//!    has the controller and farm may write there (delegated, or root). A
//!    cgroup that holds processes cannot hand controllers to children, so
//!    when farm is the only process of its cgroup it first moves itself
//!    into the leaf `farm-supervisor` (as systemd expects of a delegated
//!    cgroup); when other processes share it, v2 is not used.
//! 2. cgroup v1, when the controller's hierarchy is mounted and farm's
//!    cgroup in it is writable (typically: root on a v1 host).
//! 3. Otherwise none: the caller falls back to RLIMIT_AS and RLIMIT_NPROC.
//!
//! Each step gets `farm-step-<pid>-<n>` below those parents. A forked
//! helper moves itself into its v1 cgroups first thing after the fork
//! (`join_self`); the caller (the supervisor) writes the helper's pid into
//! v2 ones, and into all for a re-executed helper, before sending the
//! request. Either way the helper, PID 1 and everything the command starts
//! are in it from the first instruction; the cgroup namespace the helper then
//! creates has the step cgroup as its root. After the step, the cgroup's
//! counters tell whether a limit ended it, and it is removed.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::spec::Limits;

/// Tasks of the sandbox itself in the step's cgroup (the helper, PID 1 and,
/// with the proxy network, its relay): pids.max is the step's limit plus these.
pub(crate) const SANDBOX_TASKS: u64 = 3;

/// Name prefix of every step cgroup.
pub const STEP_PREFIX: &str = "farm-step-";
/// The leaf farm moves itself into in a delegated v2 cgroup.
pub const SUPERVISOR_LEAF: &str = "farm-supervisor";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A directory under which step cgroups are made, for one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupParent {
    pub version: CgroupVersion,
    pub dir: PathBuf,
}

/// Where this process puts step cgroups; `None` means the rlimit fallback.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupParents {
    pub memory: Option<CgroupParent>,
    pub pids: Option<CgroupParent>,
}

/// The parents this process uses, detected on first use.
pub fn parents() -> &'static CgroupParents {
    static PARENTS: OnceLock<CgroupParents> = OnceLock::new();
    PARENTS.get_or_init(|| {
        let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let parents = detect(&cgroup, &mountinfo, std::process::id(), &Host);
        for p in [&parents.memory, &parents.pids].into_iter().flatten() {
            remove_stale(&p.dir);
        }
        parents
    })
}

/// What detection asks of the machine; a trait so tests can fake it.
pub(crate) trait Access {
    fn writable(&self, p: &Path) -> bool;
}

struct Host;

impl Access for Host {
    fn writable(&self, p: &Path) -> bool {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: faccessat(2) with a valid C string; AT_EACCESS checks the effective ids.
        unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) == 0 }
    }
}

struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    super_options: Vec<String>,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(f.get(3)?),
                point: PathBuf::from(unescape(f.get(4)?)),
                fstype: r.first()?.to_string(),
                super_options: r
                    .get(2)
                    .map(|o| o.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// `hierarchy-id:controllers:path` lines of /proc/self/cgroup.
fn parse_memberships(cgroup: &str) -> Vec<(Vec<String>, String)> {
    cgroup
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let list = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((list, path.to_string()))
        })
        .collect()
}

/// The directory of cgroup `path` in `mount`, if the mount shows it.
fn dir_in(mount: &Mount, path: &str) -> Option<PathBuf> {
    if path.split('/').any(|c| c == "..") || path.ends_with(" (deleted)") {
        return None;
    }
    let rel = if mount.root == "/" {
        path.trim_start_matches('/')
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest.trim_start_matches('/')
    };
    Some(if rel.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(rel)
    })
}

fn words(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

pub(crate) fn detect(cgroup: &str, mountinfo: &str, pid: u32, access: &impl Access) -> CgroupParents {
    let mounts = parse_mounts(mountinfo);
    let memberships = parse_memberships(cgroup);
    let mut parents = CgroupParents::default();

    let v2_path = memberships.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p.as_str());
    let v2_dir = v2_path.and_then(|path| {
        mounts
            .iter()
            .filter(|m| m.fstype == "cgroup2")
            .find_map(|m| dir_in(m, path))
    });
    if let Some(dir) = v2_dir {
        let enabled = prepare_v2(&dir, pid, access);
        let parent = |c: &str| {
            enabled.iter().any(|e| e == c).then(|| CgroupParent {
                version: CgroupVersion::V2,
                dir: dir.clone(),
            })
        };
        parents.memory = parent("memory");
        parents.pids = parent("pids");
    }
    let v1 = |controller: &str| -> Option<CgroupParent> {
        let (_, path) = memberships.iter().find(|(c, _)| c.iter().any(|c| c == controller))?;
        let dir = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
            .find_map(|m| dir_in(m, path))?;
        (dir.is_dir() && access.writable(&dir) && access.writable(&dir.join("cgroup.procs"))).then_some(CgroupParent {
            version: CgroupVersion::V1,
            dir,
        })
    };
    if parents.memory.is_none() {
        parents.memory = v1("memory");
    }
    if parents.pids.is_none() {
        parents.pids = v1("pids");
    }
    parents
}

/// Makes `dir` (farm's own v2 cgroup) hand memory and pids to children;
/// returns those of the two that it does.
fn prepare_v2(dir: &Path, pid: u32, access: &impl Access) -> Vec<String> {
    let available = words(&dir.join("cgroup.controllers"));
    let wanted: Vec<String> = ["memory", "pids"]
        .into_iter()
        .filter(|c| available.iter().any(|a| a == c))
        .map(str::to_string)
        .collect();
    let control = dir.join("cgroup.subtree_control");
    if wanted.is_empty() || !access.writable(dir) || !access.writable(&control) {
        return Vec::new();
    }
    let enabled = || words(&control);
    let missing: Vec<&String> = wanted.iter().filter(|w| !enabled().contains(w)).collect();
    if !missing.is_empty() {
        let request: String = missing.iter().map(|c| format!("+{c} ")).collect();
        let first = fs::write(&control, request.trim_end());
        if matches!(&first, Err(e) if e.raw_os_error() == Some(libc::EBUSY)) {
            // A cgroup with processes cannot enable controllers for its
            // children: leave it for a leaf when farm is its only process.
            let procs = words(&dir.join("cgroup.procs"));
            if procs != [pid.to_string()] {
                return Vec::new();
            }
            let leaf = dir.join(SUPERVISOR_LEAF);
            let moved = match fs::create_dir(&leaf) {
                Ok(()) => true,
                Err(e) => e.kind() == io::ErrorKind::AlreadyExists,
            } && fs::write(leaf.join("cgroup.procs"), pid.to_string()).is_ok();
            if !moved || fs::write(&control, request.trim_end()).is_err() {
                return Vec::new();
            }
        } else if first.is_err() {
            return Vec::new();
        }
    }
    let now = enabled();
    wanted.into_iter().filter(|w| now.contains(w)).collect()
}

/// Removes step cgroups left by farm processes that no longer exist (a
/// farm killed mid-step); one still holding processes is left alone.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STEP_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(owner), None) == Err(nix::errno::Errno::ESRCH);
        if gone {
            let _ = fs::remove_dir(e.path());
        }
    }
}

/// Which limit ended a step, as the kernel counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceededLimit {
    /// The memory limit in bytes was reached and the kernel killed a process of the step.
    Memory { bytes: u64, version: CgroupVersion },
    /// The kernel refused to start a process or thread beyond the step's limit.
    Processes { count: u64, version: CgroupVersion },
}

#[derive(Debug, thiserror::Error)]
#[error("cgroup `{}`: {action}: {source}", .path.display())]
pub struct CgroupError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

struct Dir {
    version: CgroupVersion,
    path: PathBuf,
    memory: bool,
    pids: bool,
}

/// The cgroup(s) of one step: one directory with v2, one per hierarchy with v1.
pub(crate) struct StepCgroup {
    dirs: Vec<Dir>,
    memory: Option<u64>,
    processes: Option<u64>,
    removed: bool,
}

impl StepCgroup {
    /// Makes the step's cgroups below `parents` for the limits that are set.
    /// A controller whose cgroup cannot be made is left out (the rlimit
    /// fallback applies to it); what was made is undone.
    pub(crate) fn create(limits: &Limits, parents: &CgroupParents) -> StepCgroup {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{STEP_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = StepCgroup {
            dirs: Vec::new(),
            memory: None,
            processes: None,
            removed: false,
        };
        let wanted = [
            (limits.memory, parents.memory.as_ref(), true),
            (limits.nproc, parents.pids.as_ref(), false),
        ];
        for (value, parent, is_memory) in wanted {
            let (Some(value), Some(parent)) = (value, parent) else {
                continue;
            };
            let path = parent.dir.join(&name);
            let existing = cg.dirs.iter().position(|d| d.path == path);
            if existing.is_none() && fs::create_dir(&path).is_err() {
                continue;
            }
            if configure(parent.version, &path, is_memory, value).is_err() {
                if existing.is_none() {
                    let _ = fs::remove_dir(&path);
                }
                continue;
            }
            let i = match existing {
                Some(i) => i,
                None => {
                    cg.dirs.push(Dir {
                        version: parent.version,
                        path,
                        memory: false,
                        pids: false,
                    });
                    cg.dirs.len() - 1
                }
            };
            if is_memory {
                cg.dirs[i].memory = true;
                cg.memory = Some(value);
            } else {
                cg.dirs[i].pids = true;
                cg.processes = Some(value);
            }
        }
        cg
    }

    /// The memory limit the cgroup enforces, if it does.
    pub(crate) fn memory(&self) -> Option<u64> {
        self.memory
    }

    /// Opens the `tasks` file of each of the step's v1 cgroups, for a forked
    /// helper to move itself in with (`join_self`). The kernel moves a
    /// thread that moves itself without its global threadgroup lock, whose
    /// writer waits for an RCU grace period: 5–15 ms of each step's wall
    /// time when the caller moved the helper by pid. v2 has no such path for
    /// a process leaving its domain; `add` moves the helper there.
    pub(crate) fn open_self_joins(&self) -> Result<Vec<SelfJoin>, CgroupError> {
        self.dirs
            .iter()
            .filter(|d| d.version == CgroupVersion::V1)
            .map(|d| {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(d.path.join("tasks"))
                    .map_err(|source| CgroupError {
                        action: "open its tasks file",
                        path: d.path.clone(),
                        source,
                    })?;
                Ok(SelfJoin {
                    file,
                    path: d.path.clone(),
                })
            })
            .collect()
    }

    /// Moves process `pid` (with all its threads) into the step's cgroups;
    /// with `self_joined`, only into those `open_self_joins` leaves out (v2).
    pub(crate) fn add(&self, pid: u32, self_joined: bool) -> Result<(), CgroupError> {
        for d in &self.dirs {
            if self_joined && d.version == CgroupVersion::V1 {
                continue;
            }
            let procs = d.path.join("cgroup.procs");
            fs::write(&procs, pid.to_string()).map_err(|source| CgroupError {
                action: "move the sandbox helper into it (cgroup.procs)",
                path: d.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The limit the kernel enforced on the step, if one was hit fatally.
    pub(crate) fn exceeded(&self) -> Option<ExceededLimit> {
        let memory = self.dirs.iter().filter(|d| d.memory).find_map(|d| {
            let hit = match d.version {
                CgroupVersion::V2 => {
                    let ev = counters(&d.path.join("memory.events"));
                    count(&ev, "oom_kill") > 0 || count(&ev, "oom") > 0
                }
                CgroupVersion::V1 => {
                    let ev = counters(&d.path.join("memory.oom_control"));
                    if ev.iter().any(|(k, _)| k == "oom_kill") {
                        count(&ev, "oom_kill") > 0 || count(&ev, "under_oom") > 0
                    } else {
                        // Kernels before 4.13: any failed charge.
                        read_u64(&d.path.join("memory.failcnt")) > 0
                    }
                }
            };
            hit.then_some(ExceededLimit::Memory {
                bytes: self.memory.unwrap_or(0),
                version: d.version,
            })
        });
        memory.or_else(|| {
            self.dirs.iter().filter(|d| d.pids).find_map(|d| {
                (count(&counters(&d.path.join("pids.events")), "max") > 0).then_some(ExceededLimit::Processes {
                    count: self.processes.unwrap_or(0),
                    version: d.version,
                })
            })
        })
    }

    /// Kills whatever is left in the step's cgroups and removes them.
    pub(crate) fn remove(mut self) -> Result<(), CgroupError> {
        self.removed = true;
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = remove_dir(d) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        if !self.removed {
            for d in &self.dirs {
                let _ = remove_dir(d);
            }
        }
    }
}

/// A v1 step cgroup's `tasks` file, opened by the caller for the helper.
pub(crate) struct SelfJoin {
    pub(crate) file: fs::File,
    pub(crate) path: PathBuf,
}

/// Moves the calling thread into each cgroup of `joins`; for a
/// single-threaded process (a freshly forked helper) that is the whole
/// process. Only write(2): safe in the child of a multi-threaded fork.
/// Returns the index of the cgroup that refused and the errno.
pub(crate) fn join_self(joins: &[SelfJoin]) -> Result<(), (usize, i32)> {
    use std::os::fd::AsRawFd;
    for (i, j) in joins.iter().enumerate() {
        // "0" is the writer itself; `tasks` moves one thread.
        // SAFETY: write(2) of a 1-byte buffer to a descriptor we own.
        let n = unsafe { libc::write(j.file.as_raw_fd(), b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err((
                i,
                if n < 0 {
                    nix::errno::Errno::last_raw()
                } else {
                    libc::EIO
                },
            ));
        }
    }
    Ok(())
}

fn configure(version: CgroupVersion, dir: &Path, memory: bool, value: u64) -> io::Result<()> {
    let set = |file: &str, v: String| fs::write(dir.join(file), v);
    // Without swap accounting the files are absent: the limit is on RAM only.
    let optional = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    match (version, memory) {
        (CgroupVersion::V2, true) => {
            set("memory.max", value.to_string())?;
            // Swap would let the step go past its limit, only slower.
            optional(set("memory.swap.max", "0".into()))
        }
        (CgroupVersion::V1, true) => {
            set("memory.limit_in_bytes", value.to_string())?;
            optional(set("memory.memsw.limit_in_bytes", value.to_string()))
        }
        (_, false) => set("pids.max", value.saturating_add(SANDBOX_TASKS).to_string()),
    }
}

fn remove_dir(d: &Dir) -> Result<(), CgroupError> {
    let err = |action, source| CgroupError {
        action,
        path: d.path.clone(),
        source,
    };
    // The sandbox's processes end with its PID 1; after a timeout the
    // namespace may still be dying, so wait a little and then kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fs::remove_dir(&d.path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                kill_all(d);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(err("remove it after the step", e)),
        }
    }
}

fn kill_all(d: &Dir) {
    if d.version == CgroupVersion::V2 && fs::write(d.path.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in words(&d.path.join("cgroup.procs")) {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn counters(p: &Path) -> Vec<(String, u64)> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn count(c: &[(String, u64)], key: &str) -> u64 {
    c.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or(0)
}

fn read_u64(p: &Path) -> u64 {
    fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Everything;
    impl Access for Everything {
        fn writable(&self, _: &Path) -> bool {
            true
        }
    }
    struct Nothing;
    impl Access for Nothing {
        fn writable(&self, _: &Path) -> bool {
            false
        }
    }

    /// A fake cgroup tree: `mountinfo` lines pointing into a temporary directory.
    fn tree() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn mountinfo(base: &Path) -> String {
        let b = base.display();
        format!(
            "35 31 0:32 / {b}/memory rw,relatime - cgroup cgroup rw,memory\n\
             39 31 0:36 / {b}/pids rw,relatime - cgroup cgroup rw,pids\n\
             41 31 0:38 / {b}/unified rw,relatime - cgroup2 cgroup2 rw\n"
        )
    }

    /// Proves the v1 layout of this CI machine is understood: memory at a
    /// nested path, pids at the root, and the v2 mount without controllers
    /// ignored; and that nothing is used when it is not writable.
    #[test]
    fn v1_hierarchies_are_found_at_the_callers_own_paths() {
        let t = tree();
        let base = t.path();
        fs::create_dir_all(base.join("memory/process_api/abc")).unwrap();
        fs::create_dir_all(base.join("pids")).unwrap();
        fs::create_dir_all(base.join("unified")).unwrap();
        fs::write(base.join("unified/cgroup.controllers"), "").unwrap();
        let cgroup = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        let p = detect(cgroup, &mountinfo(base), 42, &Everything);
        assert_eq!(
            p.memory,
            Some(CgroupParent {
                version: CgroupVersion::V1,
                dir: base.join("memory/process_api/abc")
            })
        );
        assert_eq!(
            p.pids,
            Some(CgroupParent {
                version: CgroupVersion::V1,
                dir: base.join("pids")
            })
        );
        assert_eq!(detect(cgroup, &mountinfo(base), 42, &Nothing), CgroupParents::default());
    }

    /// Proves a delegated v2 cgroup with memory and pids enabled for its
    /// children is preferred over v1; that when they are not enabled farm
    /// asks for them and trusts only what the kernel then shows (a plain
    /// file here, which echoes the request instead of enabling anything);
    /// and that a v2 cgroup without the controllers leaves v1 in charge.
    #[test]
    fn a_delegated_v2_cgroup_is_used_when_its_controllers_are_enabled() {
        let t = tree();
        let base = t.path();
        let own = base.join("unified/user.slice/farm.scope");
        fs::create_dir_all(&own).unwrap();
        fs::create_dir_all(base.join("pids")).unwrap();
        fs::write(own.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::write(own.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        let cgroup = "0::/user.slice/farm.scope\n8:pids:/\n";
        let p = detect(cgroup, &mountinfo(base), 42, &Everything);
        let v2 = Some(CgroupParent {
            version: CgroupVersion::V2,
            dir: own.clone(),
        });
        assert_eq!((p.memory, p.pids), (v2.clone(), v2));

        fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        let p = detect(cgroup, &mountinfo(base), 42, &Everything);
        assert_eq!(
            fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids",
            "farm must ask for both controllers"
        );
        assert_eq!(p.memory, None);
        assert_eq!(p.pids.map(|p| p.version), Some(CgroupVersion::V1));

        fs::write(own.join("cgroup.controllers"), "cpu\n").unwrap();
        fs::write(own.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        let p = detect(cgroup, &mountinfo(base), 42, &Everything);
        assert_eq!(p.memory, None);
        assert_eq!(p.pids.map(|p| p.version), Some(CgroupVersion::V1));
    }

    /// Proves a cgroup path outside the mount's root (another cgroup
    /// namespace) is not guessed at.
    #[test]
    fn paths_outside_the_mount_root_are_not_used() {
        let m = Mount {
            root: "/a/b".into(),
            point: "/sys/fs/cgroup/memory".into(),
            fstype: "cgroup".into(),
            super_options: vec!["memory".into()],
        };
        assert_eq!(dir_in(&m, "/a/b/c"), Some(PathBuf::from("/sys/fs/cgroup/memory/c")));
        assert_eq!(dir_in(&m, "/a/b"), Some(PathBuf::from("/sys/fs/cgroup/memory")));
        assert_eq!(dir_in(&m, "/a/bc"), None);
        assert_eq!(dir_in(&m, "/../x"), None);
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    /// Proves a forked helper's self-move writes "0" (the writer itself) to
    /// each cgroup's file in turn, and that one refusing it stops the move
    /// with the cgroup's index and the errno, instead of being skipped.
    #[test]
    fn join_self_writes_the_caller_and_names_the_cgroup_that_refuses() {
        let t = tree();
        let (a, b) = (t.path().join("a-tasks"), t.path().join("b-tasks"));
        fs::write(&a, "").unwrap();
        fs::write(&b, "").unwrap();
        let joins = vec![
            SelfJoin {
                file: fs::OpenOptions::new().write(true).open(&a).unwrap(),
                path: t.path().join("a"),
            },
            // Read-only: write(2) fails as a refusing cgroup would.
            SelfJoin {
                file: fs::File::open(&b).unwrap(),
                path: t.path().join("b"),
            },
        ];
        assert_eq!(join_self(&joins), Err((1, libc::EBADF)));
        assert_eq!(fs::read_to_string(&a).unwrap(), "0");
        assert_eq!(fs::read_to_string(&b).unwrap(), "");
        assert_eq!(join_self(&joins[..1]), Ok(()));
        assert_eq!(join_self(&[]), Ok(()));
    }

    /// Proves only v1 cgroups are left to the helper's self-move: a v2 step
    /// cgroup is still moved into by the caller (`add`), and a missing
    /// `tasks` file is an error naming the cgroup, not a silent skip.
    #[test]
    fn self_joins_cover_exactly_the_v1_cgroups() {
        let t = tree();
        let (v1, v2) = (t.path().join("v1"), t.path().join("v2"));
        fs::create_dir(&v1).unwrap();
        fs::create_dir(&v2).unwrap();
        fs::write(v1.join("tasks"), "").unwrap();
        let dir = |version, path: &Path| Dir {
            version,
            path: path.to_path_buf(),
            memory: true,
            pids: false,
        };
        let cg = StepCgroup {
            dirs: vec![dir(CgroupVersion::V1, &v1), dir(CgroupVersion::V2, &v2)],
            memory: None,
            processes: None,
            removed: true,
        };
        let joins = cg.open_self_joins().unwrap();
        assert_eq!(
            joins.iter().map(|j| j.path.clone()).collect::<Vec<_>>(),
            vec![v1.clone()]
        );
        cg.add(4242, true).unwrap();
        assert!(
            !v1.join("cgroup.procs").exists(),
            "the caller moved the helper into a v1 cgroup itself"
        );
        assert_eq!(fs::read_to_string(v2.join("cgroup.procs")).unwrap(), "4242");
        cg.add(4243, false).unwrap();
        assert_eq!(fs::read_to_string(v1.join("cgroup.procs")).unwrap(), "4243");

        fs::remove_file(v1.join("tasks")).unwrap();
        let e = cg.open_self_joins().err().expect("a cgroup without a tasks file");
        assert_eq!(e.path, v1);
        assert!(e.to_string().contains("tasks"), "{e}");
    }

    /// Proves the kernel's counters are read as the documented limit hits.
    #[test]
    fn counters_name_the_limit_that_was_hit() {
        let t = tree();
        let d = t.path().join("step");
        fs::create_dir(&d).unwrap();
        let cg = StepCgroup {
            dirs: vec![Dir {
                version: CgroupVersion::V2,
                path: d.clone(),
                memory: true,
                pids: true,
            }],
            memory: Some(1 << 26),
            processes: Some(64),
            removed: true,
        };
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 12\noom 0\noom_kill 0\n").unwrap();
        fs::write(d.join("pids.events"), "max 0\n").unwrap();
        assert_eq!(cg.exceeded(), None, "reclaim at the limit is not a kill");
        fs::write(d.join("pids.events"), "max 3\n").unwrap();
        assert_eq!(
            cg.exceeded(),
            Some(ExceededLimit::Processes {
                count: 64,
                version: CgroupVersion::V2
            })
        );
        fs::write(d.join("memory.events"), "max 12\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(
            cg.exceeded(),
            Some(ExceededLimit::Memory {
                bytes: 1 << 26,
                version: CgroupVersion::V2
            })
        );
    }
}
