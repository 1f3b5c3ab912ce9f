//! The hermetic environment a step runs in, composed from store entries:
//! the merged Debian root, the Node and npm trees, pip's wheel, and a small
//! profile of `bin/` links that puts them on PATH. Every piece is a store
//! entry, so two machines with the same lock compose the same bytes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use farm_lockfiles::Lock;
use farm_store::{Store, StoreEntry};
use sha2::Digest as _;

use crate::step::ActionRecord;

/// Where store entries appear inside the sandbox, whatever `$FARM_HOME` is.
pub const SANDBOX_STORE: &str = "/farm/store";

/// The resolved toolchain of a locked project.
pub struct Toolchain {
    /// The merged Debian root filesystem.
    pub root: StoreEntry,
    /// Entries bound read-only at `/farm/store/<file name>`.
    pub inputs: Vec<StoreEntry>,
    /// The `bin/` profile, also among `inputs`.
    pub profile: StoreEntry,
    pub pip_wheel: Option<StoreEntry>,
}

impl Toolchain {
    pub fn sandbox_path(entry: &StoreEntry) -> PathBuf {
        Path::new(SANDBOX_STORE).join(entry.file_name())
    }

    /// The fixed environment of every step (nothing comes from the host):
    /// the sandbox's standard environment with PATH from the toolchain, and
    /// what keeps Python and npm from writing bytecode or asking the network.
    pub fn env(&self, source_date_epoch: u64) -> Vec<(String, String)> {
        let profile_bin = Self::sandbox_path(&self.profile).join("bin");
        let path = format!("{}:/usr/bin:/bin", profile_bin.display());
        let mut env = farm_sandbox::standard_env(&path, source_date_epoch);
        env.extend(
            [
                ("PYTHONHASHSEED", "0"),
                ("PYTHONDONTWRITEBYTECODE", "1"),
                ("NO_UPDATE_NOTIFIER", "1"),
                ("npm_config_update_notifier", "false"),
                ("npm_config_fund", "false"),
                ("npm_config_audit", "false"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        if let Some(pip) = &self.pip_wheel {
            // pip runs from its wheel: a zip on sys.path is importable as is.
            env.push(("PYTHONPATH".into(), Self::sandbox_path(pip).display().to_string()));
        }
        env
    }
}

/// The toolchain of the lock file whose text is `text` (read from
/// `lock_path`). A lock composed before, byte for byte, is found in the
/// action cache with one lookup per entry it uses, without parsing the lock
/// or looking up each of its artifacts; otherwise the lock is parsed,
/// checked to be fetched ([`require_fetched`]) and composed, and the result
/// recorded.
pub fn for_lock_text(store: &Store, lock_path: &Path, text: &str) -> Result<Toolchain> {
    let row = toolchain_row(text);
    if let Some(tc) = recorded_toolchain(store, &row)? {
        return Ok(tc);
    }
    let lock = Lock::from_toml(&lock_path.display().to_string(), text)?;
    let found = fetched(store, &lock)?;
    let tc = compose_fetched(store, &lock, &found)?;
    let record = ToolchainRecord {
        root: tc.root.file_name(),
        inputs: tc.inputs.iter().map(StoreEntry::file_name).collect(),
        profile: tc.profile.file_name(),
        pip_wheel: tc.pip_wheel.as_ref().map(StoreEntry::file_name),
    };
    store.action_put(&row, &serde_json::to_value(record)?)?;
    Ok(tc)
}

/// The action-cache row of the toolchain composed from a lock's exact text
/// (`toolchain-v1:<hex SHA-256>`; the version changes with what `compose` makes).
fn toolchain_row(lock_text: &str) -> String {
    let mut key = sha2::Sha256::new();
    key.update(b"farm toolchain of a lock v1\0");
    key.update(lock_text.as_bytes());
    format!("toolchain-v1:{}", hex::encode(key.finalize()))
}

/// What the row of a composed toolchain holds: its entries' file names.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ToolchainRecord {
    root: String,
    /// All of them, the profile and pip's wheel included.
    inputs: Vec<String>,
    profile: String,
    pip_wheel: Option<String>,
}

/// The toolchain recorded under `row` if every entry it names is still in
/// the store (each marked used); a row of another shape is a miss.
fn recorded_toolchain(store: &Store, row: &str) -> Result<Option<Toolchain>> {
    let Some(value) = store.action_get(row)? else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_value::<ToolchainRecord>(value) else {
        return Ok(None);
    };
    let Some(root) = store.entry(&record.root)? else {
        return Ok(None);
    };
    let mut inputs = Vec::with_capacity(record.inputs.len());
    for name in &record.inputs {
        let Some(e) = store.entry(name)? else {
            return Ok(None);
        };
        inputs.push(e);
    }
    let among_inputs = |name: &str| inputs.iter().find(|e| e.file_name() == name).cloned();
    let Some(profile) = among_inputs(&record.profile) else {
        return Ok(None);
    };
    let pip_wheel = match &record.pip_wheel {
        Some(name) => match among_inputs(name) {
            Some(e) => Some(e),
            None => return Ok(None),
        },
        None => None,
    };
    Ok(Some(Toolchain {
        root,
        inputs,
        profile,
        pip_wheel,
    }))
}

/// Looks up the store entry of every artifact the toolchain needs; names the
/// first missing one with a hint.
fn entry_for(store: &Store, a: &farm_lockfiles::LockedArtifact) -> Result<StoreEntry> {
    store.artifact(&a.integrity.to_string())?.with_context(|| {
        format!(
            "{} {} ({}) is not in the store\nhint: run `farm fetch`",
            a.name, a.version, a.integrity
        )
    })
}

/// The toolchain of a locked project, from its entries in the store.
pub fn compose(store: &Store, lock: &Lock) -> Result<Toolchain> {
    compose_with(store, lock, |a| entry_for(store, a))
}

/// [`compose`] from the entries [`fetched`] found, without looking them up again.
pub fn compose_fetched(store: &Store, lock: &Lock, fetched: &Fetched) -> Result<Toolchain> {
    compose_with(store, lock, |a| match fetched.get(&a.integrity.to_string()) {
        Some(e) => Ok(e.clone()),
        None => entry_for(store, a),
    })
}

fn compose_with(
    store: &Store,
    lock: &Lock,
    entry_for: impl Fn(&farm_lockfiles::LockedArtifact) -> Result<StoreEntry>,
) -> Result<Toolchain> {
    let debian = lock.debian.as_ref().context("farm.lock has no Debian base\nhint: add [toolchains.node] or [toolchains.python] to farm.toml and run `farm lock`")?;
    let mut debs = Vec::new();
    for p in &debian.packages {
        debs.push(entry_for(&p.artifact)?);
    }
    let root = merged_root(store, &debs)?;

    let mut inputs = Vec::new();
    let mut links: Vec<(String, String)> = Vec::new();
    if let Some(node) = &lock.node {
        let n = entry_for(&node.node)?;
        let npm = entry_for(&node.npm)?;
        let nbin = Toolchain::sandbox_path(&n).join("bin/node");
        let npm_root = Toolchain::sandbox_path(&npm);
        links.push(("node".into(), nbin.display().to_string()));
        links.push(("npm".into(), npm_root.join("bin/npm-cli.js").display().to_string()));
        links.push(("npx".into(), npm_root.join("bin/npx-cli.js").display().to_string()));
        inputs.push(n);
        inputs.push(npm);
    }
    let mut pip_wheel = None;
    if let Some(py) = &lock.python {
        let interpreter = format!("/usr/bin/python{}", py.version);
        links.push(("python3".into(), interpreter.clone()));
        links.push(("python".into(), interpreter));
        let pip = entry_for(&py.pip)?;
        inputs.push(pip.clone());
        pip_wheel = Some(pip);
    }
    let profile = profile_entry(store, &links)?;
    inputs.push(profile.clone());
    Ok(Toolchain {
        root,
        inputs,
        profile,
        pip_wheel,
    })
}

/// pip unpacked from its wheel with every module compiled by the
/// toolchain's own Python (unchecked-hash `.pyc`), for the backend step's
/// PYTHONPATH. Run from the wheel, a zip, pip compiles each module it imports
/// on every run: about 1 s of each backend step, twice what the install
/// itself costs. Made once per root and wheel in the sandbox (no network,
/// one process compiling in sorted order, so the same bytes everywhere) and
/// found again in the action cache; a build that cannot make it runs pip
/// from the wheel as before.
pub fn ready_pip(
    store: &Store,
    tc: &Toolchain,
    wheel: &StoreEntry,
    executor: &dyn crate::executor::Executor,
    source_date_epoch: u64,
    limits: &farm_project::Limits,
) -> Result<StoreEntry> {
    let key = format!("pip-ready-v1:{}:{}", tc.root.file_name(), wheel.file_name());
    cached_entry(store, &key, || {
        let staging = store.temp_dir()?;
        let out = staging.path().join("pip");
        std::fs::create_dir(&out)?;
        let log = staging.path().join("log");
        // co_filename in the .pyc does not matter: importing from __pycache__
        // sets it to the source's real path.
        let script = "set -eu\n\
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \"$1\" /out\n\
python3 -m compileall -q -j 1 --invalidation-mode unchecked-hash /out >/dev/null\n";
        let argv = vec![
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            Toolchain::sandbox_path(wheel).display().to_string(),
        ];
        let mut spec = crate::executor::sandbox_spec(
            tc,
            std::slice::from_ref(wheel),
            argv,
            source_date_epoch,
            farm_sandbox::Stdio::Capture {
                log: log.clone(),
                stream: false,
            },
            limits,
        );
        spec.binds
            .push(farm_sandbox::Bind::writable(&out, farm_sandbox::OUT_DIR));
        spec.timeout = Some(std::time::Duration::from_secs(300));
        let o = executor.run(&spec)?;
        if !o.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().collect();
            bail!(
                "unpacking and compiling {} in the sandbox exited with {}{}:\n  | {}",
                wheel.file_name(),
                o.status,
                if o.timed_out { " (timed out)" } else { "" },
                tail[tail.len().saturating_sub(10)..].join("\n  | ")
            );
        }
        let version = wheel.name.strip_suffix("-py3-none-any.whl").unwrap_or(&wheel.name);
        Ok(store.adopt_tree(&out, &format!("{version}-ready"), "toolchain")?)
    })
}

/// A tiny entry of symlinks (`bin/node` → `/farm/store/…/bin/node`); the
/// targets resolve inside the sandbox only. Cached by its links, so a step
/// finds it with one lookup instead of staging and hashing it again.
fn profile_entry(store: &Store, links: &[(String, String)]) -> Result<StoreEntry> {
    let key = format!("profile:{}", profile_key(links));
    let links = links.to_vec();
    cached_entry(store, &key, || {
        store
            .build_entry("farm-profile", "toolchain", move |dir| {
                let bin = dir.join("bin");
                std::fs::create_dir_all(&bin)?;
                for (name, target) in &links {
                    std::os::unix::fs::symlink(target, bin.join(name))?;
                }
                Ok(())
            })
            .context("composing the toolchain profile")
    })
}

/// Hex SHA-256 of the profile's links: its contents, in order.
fn profile_key(links: &[(String, String)]) -> String {
    let mut key = sha2::Sha256::new();
    key.update(b"farm toolchain profile v1\0");
    for (name, target) in links {
        key.update(name.as_bytes());
        key.update(b"\0");
        key.update(target.as_bytes());
        key.update(b"\0");
    }
    hex::encode(key.finalize())
}

/// Top-level directories of a .deb that a merged-/usr system keeps under /usr.
const MERGED_USR: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// One root filesystem from the unpacked .debs, merged-/usr as Debian's
/// installer lays it out. Cached by the set of packages.
pub fn merged_root(store: &Store, debs: &[StoreEntry]) -> Result<StoreEntry> {
    merged_root_without(store, debs, "debian-root", &[])
}

/// Paths a runtime image leaves out: package manager state and documentation.
const NOT_IN_IMAGES: [&str; 6] = [
    "var/lib/dpkg",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
];

/// [`merged_root`] without `exclude` (paths relative to the root).
fn merged_root_without(store: &Store, debs: &[StoreEntry], name: &str, exclude: &[&str]) -> Result<StoreEntry> {
    let mut key = sha2::Sha256::new();
    key.update(b"farm merged debian root v1\0");
    key.update(name.as_bytes());
    for x in exclude {
        key.update(b"\0-");
        key.update(x.as_bytes());
    }
    let mut names: Vec<String> = debs.iter().map(|d| d.file_name()).collect();
    names.sort();
    for n in &names {
        key.update(n.as_bytes());
        key.update(b"\0");
    }
    let key = format!("root:{}", hex::encode(key.finalize()));
    cached_entry(store, &key, || compose_root(store, debs, name, exclude))
}

fn compose_root(store: &Store, debs: &[StoreEntry], name: &str, exclude: &[&str]) -> Result<StoreEntry> {
    let mut sorted: Vec<&StoreEntry> = debs.iter().collect();
    sorted.sort_by_key(|e| e.file_name());
    let sources: Vec<PathBuf> = sorted.iter().map(|e| e.path.clone()).collect();
    let exclude: Vec<String> = exclude.iter().map(|x| x.to_string()).collect();
    let entry = store
        .build_entry(name, "root", move |dir| {
            for top in MERGED_USR {
                std::fs::create_dir_all(dir.join("usr").join(top))?;
                std::os::unix::fs::symlink(format!("usr/{top}"), dir.join(top))?;
            }
            for src in &sources {
                merge_tree(src, dir, Path::new(""))?;
            }
            // Without maintainer scripts nothing creates /bin/sh; dash's postinst normally does.
            let sh = dir.join("usr/bin/sh");
            if sh.symlink_metadata().is_err() && dir.join("usr/bin/dash").exists() {
                std::os::unix::fs::symlink("dash", &sh)?;
            }
            for d in ["etc", "var/tmp", "root", "home"] {
                std::fs::create_dir_all(dir.join(d))?;
            }
            for x in &exclude {
                let p = dir.join(x);
                if p.symlink_metadata().is_ok() {
                    std::fs::remove_dir_all(&p)?;
                }
            }
            Ok(())
        })
        .context("composing the Debian root filesystem")?;
    Ok(entry)
}

/// The store entry the action cache records under `key`, or `build`'s,
/// recorded there. For entries farm composes from other entries.
pub fn cached_entry(store: &Store, key: &str, build: impl FnOnce() -> Result<StoreEntry>) -> Result<StoreEntry> {
    if let Some((_, e)) = ActionRecord::lookup_row(store, key)? {
        return Ok(e);
    }
    let e = build()?;
    ActionRecord {
        entry: e.file_name(),
        log: None,
    }
    .store_row(store, key)?;
    Ok(e)
}

fn merge_tree(src_root: &Path, dst_root: &Path, rel: &Path) -> std::io::Result<()> {
    let src = src_root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&src)?.collect::<std::io::Result<Vec<_>>>()?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name();
        let mut child_rel = rel.join(&name);
        if rel.as_os_str().is_empty() && MERGED_USR.iter().any(|t| name == *t) {
            child_rel = Path::new("usr").join(&name);
        }
        let from = e.path();
        let to = dst_root.join(&child_rel);
        let ft = e.file_type()?;
        if ft.is_dir() {
            std::fs::create_dir_all(&to)?;
            // `bin`, `lib`, … land in usr/ through the symlinks made first.
            merge_tree(src_root, dst_root, &rel.join(&name))?;
        } else {
            if to.symlink_metadata().is_ok() {
                std::fs::remove_file(&to)?;
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)?;
            }
        }
    }
    Ok(())
}

/// The root filesystem of the app image: the Debian packages the base and
/// Python need, without what only `farm check` uses (libfaketime).
pub fn runtime_root(store: &Store, lock: &Lock) -> Result<StoreEntry> {
    let debian = lock
        .debian
        .as_ref()
        .context("farm.lock has no Debian base\nhint: run `farm lock`")?;
    let mut debs = Vec::new();
    for p in debian
        .packages
        .iter()
        .filter(|p| p.roles.iter().any(|r| r == "base" || r == "python"))
    {
        debs.push(entry_for(store, &p.artifact)?);
    }
    merged_root_without(store, &debs, "runtime-root", &NOT_IN_IMAGES)
}

/// Fails early, naming what is missing, when the store lacks the lock's artifacts.
pub fn require_fetched(store: &Store, lock: &Lock) -> Result<()> {
    fetched(store, lock).map(drop)
}

/// The store entries of a lock's artifacts, by integrity.
pub type Fetched = std::collections::HashMap<String, StoreEntry>;

/// [`require_fetched`], keeping the entries it found (for [`compose_fetched`]).
pub fn fetched(store: &Store, lock: &Lock) -> Result<Fetched> {
    let mut found = Fetched::new();
    let mut missing = Vec::new();
    for (_, a) in lock.artifacts() {
        let integrity = a.integrity.to_string();
        match store.artifact(&integrity)? {
            Some(e) => {
                found.insert(integrity, e);
            }
            None => missing.push(format!("{} {}", a.name, a.version)),
        }
    }
    if !missing.is_empty() {
        let n = missing.len();
        missing.truncate(8);
        bail!(
            "{n} locked artifacts are not in the store ({}{})\nhint: run `farm fetch`",
            missing.join(", "),
            if n > 8 { ", …" } else { "" }
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded toolchain comes back entry for entry while all its entries
    /// are in the store; one entry gone (gc), a row of another shape, or a
    /// profile not among the inputs is a miss, never an error.
    #[test]
    fn recorded_toolchain_needs_every_entry() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let entry = |name: &str| {
            store
                .build_entry(name, "test", |dir| Ok(std::fs::write(dir.join("f"), "x")?))
                .unwrap()
        };
        let (root, node, profile, pip) = (entry("root"), entry("node"), entry("profile"), entry("pip"));
        let record = ToolchainRecord {
            root: root.file_name(),
            inputs: vec![node.file_name(), pip.file_name(), profile.file_name()],
            profile: profile.file_name(),
            pip_wheel: Some(pip.file_name()),
        };
        let row = toolchain_row("version = 1\n");
        assert_ne!(row, toolchain_row("version = 1\n\n"));
        store.action_put(&row, &serde_json::to_value(&record).unwrap()).unwrap();
        let tc = recorded_toolchain(&store, &row).unwrap().unwrap();
        assert_eq!(tc.root, root);
        assert_eq!(tc.inputs, vec![node.clone(), pip.clone(), profile.clone()]);
        assert_eq!(tc.profile, profile);
        assert_eq!(tc.pip_wheel, Some(pip.clone()));

        assert!(recorded_toolchain(&store, "toolchain-v1:none").unwrap().is_none());
        store
            .action_put(&row, &serde_json::json!({"entry": root.file_name()}))
            .unwrap();
        assert!(recorded_toolchain(&store, &row).unwrap().is_none());
        let stray = ToolchainRecord {
            profile: root.file_name(),
            ..record
        };
        store.action_put(&row, &serde_json::to_value(&stray).unwrap()).unwrap();
        assert!(recorded_toolchain(&store, &row).unwrap().is_none());

        let record = ToolchainRecord {
            profile: profile.file_name(),
            ..stray
        };
        store.action_put(&row, &serde_json::to_value(&record).unwrap()).unwrap();
        assert!(recorded_toolchain(&store, &row).unwrap().is_some());
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&node.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_dir_all(&node.path).unwrap();
        assert!(recorded_toolchain(&store, &row).unwrap().is_none());
    }

    /// The profile is found by its key once built: the second compose
    /// returns the same entry from the action cache without staging it
    /// again, different links make a different entry, and a profile whose
    /// entry was removed (gc) is built again.
    #[test]
    fn profile_is_cached_by_its_links() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let links = vec![("node".to_string(), "/farm/store/x-node/bin/node".to_string())];
        let first = profile_entry(&store, &links).unwrap();
        let key = format!("profile:{}", profile_key(&links));
        let (record, cached) = ActionRecord::lookup_row(&store, &key).unwrap().unwrap();
        assert_eq!(record.entry, first.file_name());
        assert_eq!(cached, first);
        assert_eq!(
            std::fs::read_link(first.path.join("bin/node")).unwrap(),
            Path::new("/farm/store/x-node/bin/node")
        );

        // Staging a build needs tmp/; with it gone, only the cached row can answer.
        let tmp = store.tmp_dir();
        std::fs::remove_dir_all(&tmp).unwrap();
        std::fs::write(&tmp, "not a directory").unwrap();
        assert_eq!(profile_entry(&store, &links).unwrap(), first);
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();

        let other = vec![("node".to_string(), "/farm/store/y-node/bin/node".to_string())];
        assert_ne!(profile_key(&other), profile_key(&links));
        assert_ne!(profile_entry(&store, &other).unwrap().digest, first.digest);

        // As gc does: the entry leaves the store (its directories are read-only).
        use std::os::unix::fs::PermissionsExt as _;
        for d in [first.path.join("bin"), first.path.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::remove_dir_all(&first.path).unwrap();
        assert!(!first.path.exists());
        let rebuilt = profile_entry(&store, &links).unwrap();
        assert_eq!(rebuilt, first);
        assert!(rebuilt.path.join("bin/node").symlink_metadata().is_ok());
    }
}
