//! What farm asks git about a project's checkout: its commit, whether the
//! project's directory has uncommitted changes, and the commit time that
//! SOURCE_DATE_EPOCH defaults to. No git, or no checkout, is `None`.
//!
//! The commit time is asked on every `farm exec` and build, so it avoids
//! starting git where the files answer for sure: with no `.git` above the
//! project there is nothing to ask, and a time git gave for the commit HEAD
//! is at (read from `.git`'s files) is kept in `.farm/commit-time`, since
//! a commit id fixes its history. Whatever this module does not understand
//! (reftable, shallow clones, replace refs, GIT_DIR and the like, …) runs git.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The commit a project directory is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub commit: String,
    /// No uncommitted change under the project directory.
    pub clean: bool,
}

/// `git ARGS` in `root`, its trimmed stdout when it succeeds.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .current_dir(root)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub fn revision(root: &Path) -> Option<Revision> {
    let commit = git(root, &["rev-parse", "HEAD"]).filter(|r| !r.is_empty())?;
    let clean = git(root, &["status", "--porcelain", "--", "."]).is_some_and(|s| s.is_empty());
    Some(Revision { commit, clean })
}

/// The commit time of the last commit touching the project directory.
pub fn commit_time(root: &Path) -> Option<u64> {
    match discover(root) {
        Discovery::NoRepository => None,
        Discovery::Unsure => log_commit_time(root),
        Discovery::Checkout(checkout) => {
            let Some(key) = checkout.cache_key() else {
                return log_commit_time(root);
            };
            let cache = root.join(crate::paths::STATE_DIR).join(CACHE_FILE);
            if let Some(time) = read_cache(&cache, &key) {
                return Some(time);
            }
            let time = log_commit_time(root)?;
            // HEAD may have moved while git ran: then the time is not this key's.
            if checkout.cache_key().as_ref() == Some(&key) {
                write_cache(&cache, &key, time);
            }
            Some(time)
        }
    }
}

/// `git log -1 --format=%ct -- .` in `root`: the answer the files stand in for.
fn log_commit_time(root: &Path) -> Option<u64> {
    git(root, &["log", "-1", "--format=%ct", "--", "."])?.parse().ok()
}

/// What the files above a directory say about the repository git would use.
#[derive(Debug, PartialEq, Eq)]
enum Discovery {
    /// No `.git` (nor anything git could take for a repository) in the
    /// directory or any parent: git finds no repository either.
    NoRepository,
    /// A checkout laid out as this module reads it.
    Checkout(Checkout),
    /// Something only git can interpret.
    Unsure,
}

/// A work tree with its `.git` directory (or a linked worktree's).
#[derive(Debug, PartialEq, Eq)]
struct Checkout {
    /// The project directory (canonical), relative to the work tree's top.
    rel: PathBuf,
    /// Where HEAD and the worktree's own refs live.
    git_dir: PathBuf,
    /// Where the shared refs, packed-refs and config live (`commondir`).
    common_dir: PathBuf,
}

/// Environment variables that change which repository git opens, what its
/// config says or the history it walks: with any of them set, git is asked.
/// (Others, like GIT_SSL_CAINFO, do not matter to a local `git log`.)
const GIT_ENV: [&str; 18] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_GRAFT_FILE",
    "GIT_SHALLOW_FILE",
    "GIT_NAMESPACE",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
];

fn git_env_set() -> bool {
    GIT_ENV.iter().any(|k| std::env::var_os(k).is_some())
}

fn discover(root: &Path) -> Discovery {
    if git_env_set() {
        return Discovery::Unsure;
    }
    // git works from the real path of its working directory.
    let Ok(root) = std::fs::canonicalize(root) else {
        return Discovery::Unsure;
    };
    for dir in root.ancestors() {
        let dot_git = dir.join(".git");
        let git_dir = match std::fs::metadata(&dot_git) {
            Ok(m) if m.is_dir() => dot_git,
            Ok(m) if m.is_file() => match read_gitfile(&dot_git) {
                Some(d) => d,
                None => return Discovery::Unsure,
            },
            Ok(_) => return Discovery::Unsure,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A bare repository (or a directory that looks like one):
                // git may use it as the repository, with no work tree.
                if ["HEAD", "objects", "refs"].iter().all(|n| dir.join(n).exists()) {
                    return Discovery::Unsure;
                }
                continue;
            }
            Err(_) => return Discovery::Unsure,
        };
        // git skips a `.git` that is not a repository and looks further up.
        if !["HEAD", "objects", "refs"]
            .iter()
            .all(|n| git_dir.join(n).exists() || common_dir_of(&git_dir).join(n).exists())
        {
            return Discovery::Unsure;
        }
        let rel = root.strip_prefix(dir).map(Path::to_path_buf).unwrap_or_default();
        let common_dir = common_dir_of(&git_dir);
        return Discovery::Checkout(Checkout {
            rel,
            git_dir,
            common_dir,
        });
    }
    Discovery::NoRepository
}

/// The repository a `.git` file (`gitdir: PATH`, as in linked worktrees and
/// submodules) points at.
fn read_gitfile(file: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(file).ok()?;
    let target = text.strip_prefix("gitdir: ")?.trim_end_matches(['\n', '\r']);
    if target.is_empty() {
        return None;
    }
    Some(file.parent()?.join(target))
}

/// `commondir` names the main repository of a linked worktree.
fn common_dir_of(git_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(text) => git_dir.join(text.trim_end_matches(['\n', '\r'])),
        Err(_) => git_dir.to_path_buf(),
    }
}

/// What a cached answer is valid for: HEAD's commit and the directory in
/// the work tree.
#[derive(Debug, PartialEq, Eq)]
struct CacheKey {
    commit: String,
    rel: String,
}

impl Checkout {
    /// The key of this checkout's answer; None when the history behind the
    /// commit id can change (shallow, grafts, replace refs), the work tree is
    /// configured elsewhere, or HEAD cannot be read for sure.
    fn cache_key(&self) -> Option<CacheKey> {
        let c = &self.common_dir;
        if c.join("shallow").exists() || c.join("info/grafts").exists() || c.join("reftable").exists() {
            return None;
        }
        if std::fs::read_dir(c.join("refs/replace")).is_ok_and(|mut d| d.next().is_some()) {
            return None;
        }
        for config in [c.join("config"), self.git_dir.join("config.worktree")] {
            match std::fs::read_to_string(&config) {
                Ok(text) if !plain_config(&text) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => return None,
            }
        }
        let commit = self.head_commit()?;
        let rel = self.rel.to_str()?.to_string();
        if rel.contains('\n') {
            return None;
        }
        Some(CacheKey { commit, rel })
    }

    /// The commit HEAD points at, through loose refs or packed-refs.
    fn head_commit(&self) -> Option<String> {
        let mut value = read_trimmed(&self.git_dir.join("HEAD"))?;
        // A symbolic ref may point at another; git gives up after 5 levels.
        for _ in 0..5 {
            let Some(name) = value.strip_prefix("ref: ") else {
                return is_object_id(&value).then_some(value);
            };
            let name = name.trim();
            if !name.starts_with("refs/") || name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                return None;
            }
            value = self.read_ref(name)?;
        }
        None
    }

    /// A ref's value: its loose file, else its packed-refs line.
    fn read_ref(&self, name: &str) -> Option<String> {
        // Refs of one worktree live in its own git dir, the rest in the common one.
        let per_worktree = ["refs/bisect/", "refs/worktree/", "refs/rewritten/"]
            .iter()
            .any(|p| name.starts_with(p));
        let base = if per_worktree { &self.git_dir } else { &self.common_dir };
        match std::fs::read_to_string(base.join(name)) {
            Ok(text) => return Some(text.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A directory (refs/heads/a when asking for refs/heads) or unreadable.
            Err(_) => return None,
        }
        let packed = std::fs::read_to_string(base.join("packed-refs")).ok()?;
        packed
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
            .find_map(|l| {
                let (id, ref_name) = l.split_once(' ')?;
                (ref_name == name).then(|| id.to_string())
            })
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|t| t.trim().to_string())
}

/// A full SHA-1 or SHA-256 object id in lowercase hex.
fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A repository config with nothing that moves the work tree, changes the
/// ref storage or pulls in other files (where those settings could hide).
fn plain_config(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim().to_ascii_lowercase();
        let key = line.split('=').next().unwrap_or("").trim();
        !(key == "worktree" || key == "refstorage" || line.starts_with("[include"))
    })
}

/// The cache file in `.farm/`; written only where `.farm/` already exists.
const CACHE_FILE: &str = "commit-time";
const CACHE_HEADER: &str = "farm commit-time v1";

/// The cached time if the file holds one for exactly this key; a missing,
/// foreign or damaged file is a miss.
fn read_cache(path: &Path, key: &CacheKey) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.split('\n');
    let header = lines.next()?;
    let commit = lines.next()?;
    let rel = lines.next()?;
    let time = lines.next()?;
    if header != CACHE_HEADER || commit != key.commit || rel != key.rel || lines.ne([""]) {
        return None;
    }
    time.parse().ok()
}

/// Best effort: a project directory farm cannot write to only loses the cache.
fn write_cache(path: &Path, key: &CacheKey, time: u64) {
    let Some(dir) = path.parent().filter(|d| d.is_dir()) else {
        return;
    };
    let text = format!("{CACHE_HEADER}\n{}\n{}\n{time}\n", key.commit, key.rel);
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().unwrap_or(OsStr::new(CACHE_FILE)).to_string_lossy(),
        std::process::id()
    ));
    if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// Whether the test may go on: `false` after saying why it is skipped;
    /// with CI=true a skip is a failure (as farm_testkit::require does).
    fn require(condition: bool, reason: &str) -> bool {
        if condition {
            return true;
        }
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(!ci, "{reason}; CI must run every test (CI=true)");
        let _ = std::io::stderr().write_all(format!("\nSKIPPED: {reason}\n").as_bytes());
        false
    }

    fn have_git() -> bool {
        require(
            Command::new("git")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "git is not installed (apt-get install git)",
        )
    }

    fn run_git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A repository with `app/` committed at `time` and `other/` at `time + 100`.
    fn repo(time: u64) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        run_git(r, &["init", "-q", "-b", "main"]);
        commit_file(r, "app/a.txt", time);
        commit_file(r, "other/b.txt", time + 100);
        std::fs::create_dir(r.join("app/.farm")).unwrap();
        t
    }

    fn commit_file(repo: &Path, file: &str, time: u64) {
        let path = repo.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{file} {time}")).unwrap();
        run_git(repo, &["add", file]);
        let date = format!("@{time} +0000");
        let out = Command::new("git")
            .args(["commit", "-q", "-m", file])
            .current_dir(repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    fn checkout(dir: &Path) -> Checkout {
        match discover(dir) {
            Discovery::Checkout(c) => c,
            other => panic!("{}: expected a checkout, found {other:?}", dir.display()),
        }
    }

    /// With no `.git` above it, a directory has no commit time and git is
    /// not needed to say so.
    #[test]
    fn a_directory_outside_any_repository_has_none() {
        let t = tempfile::tempdir().unwrap();
        if !require(
            !t.path().ancestors().any(|d| d.join(".git").exists()),
            "the temporary directory is inside a git checkout",
        ) {
            return;
        }
        assert_eq!(discover(t.path()), Discovery::NoRepository);
        assert_eq!(commit_time(t.path()), None);
    }

    /// The answer is git's path-limited one (app/'s commit, not the later
    /// one of other/), cached against HEAD's commit, reused while HEAD stays,
    /// and asked again once HEAD moves.
    #[test]
    fn commit_time_is_cached_by_head_commit() {
        if !have_git() {
            return;
        }
        let t = repo(1_600_000_000);
        let app = t.path().join("app");
        assert_eq!(commit_time(&app), Some(1_600_000_000));
        let cache = app.join(".farm").join(CACHE_FILE);
        let head = run_git(t.path(), &["rev-parse", "HEAD"]);
        let text = std::fs::read_to_string(&cache).unwrap();
        assert_eq!(text, format!("{CACHE_HEADER}\n{head}\napp\n1600000000\n"));

        // A planted time for the same key is what comes back: no git ran.
        std::fs::write(&cache, text.replace("1600000000", "1234")).unwrap();
        assert_eq!(commit_time(&app), Some(1234));

        // Without a .farm/ there is no cache to write, and none is created.
        let other = t.path().join("other");
        assert_eq!(commit_time(&other), Some(1_600_000_100));
        assert!(!other.join(".farm").exists());

        // A new commit touching app/ moves HEAD: the stale cache is not used.
        commit_file(t.path(), "app/c.txt", 1_700_000_000);
        assert_eq!(commit_time(&app), Some(1_700_000_000));
        assert!(std::fs::read_to_string(&cache).unwrap().ends_with("\n1700000000\n"));
    }

    /// Branches in packed-refs only (after `git pack-refs`) and a detached
    /// HEAD both give HEAD's commit.
    #[test]
    fn head_is_read_from_packed_refs_and_detached_head() {
        if !have_git() {
            return;
        }
        let t = repo(1_600_000_000);
        let head = run_git(t.path(), &["rev-parse", "HEAD"]);
        run_git(t.path(), &["pack-refs", "--all", "--prune"]);
        assert!(!t.path().join(".git/refs/heads/main").exists());
        let app = t.path().join("app");
        assert_eq!(checkout(&app).head_commit().as_deref(), Some(head.as_str()));

        let first = run_git(t.path(), &["rev-list", "--max-parents=0", "HEAD"]);
        run_git(t.path(), &["checkout", "-q", "--detach", &first]);
        assert_eq!(checkout(&app).head_commit().as_deref(), Some(first.as_str()));
        assert_eq!(commit_time(&app), Some(1_600_000_000));
    }

    /// A linked worktree: `.git` is a file, HEAD is the worktree's own and
    /// the branch is in the main repository's refs.
    #[test]
    fn linked_worktree_reads_its_own_head() {
        if !have_git() {
            return;
        }
        let t = repo(1_600_000_000);
        let first = run_git(t.path(), &["rev-list", "--max-parents=0", "HEAD"]);
        let wt = t.path().join("wt");
        run_git(
            t.path(),
            &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap(), &first],
        );
        commit_file(&wt, "app/d.txt", 1_650_000_000);
        let wt_app = wt.join("app");
        let c = checkout(&wt_app);
        assert!(wt.join(".git").is_file());
        assert_eq!(
            c.common_dir.canonicalize().unwrap(),
            t.path().join(".git").canonicalize().unwrap()
        );
        assert_eq!(c.head_commit().unwrap(), run_git(&wt, &["rev-parse", "HEAD"]));
        std::fs::create_dir(wt_app.join(".farm")).unwrap();
        assert_eq!(commit_time(&wt_app), Some(1_650_000_000));
        assert_eq!(commit_time(&t.path().join("app")), Some(1_600_000_000));
    }

    /// A damaged ref or HEAD is not guessed at: there is no cache key, and
    /// the answer is git's (here: none, git cannot read HEAD either).
    #[test]
    fn corrupted_refs_fall_back_to_git() {
        if !have_git() {
            return;
        }
        let t = repo(1_600_000_000);
        let app = t.path().join("app");
        let main = t.path().join(".git/refs/heads/main");
        std::fs::write(&main, "not a commit id\n").unwrap();
        assert_eq!(checkout(&app).cache_key(), None);
        assert_eq!(commit_time(&app), None);
        assert!(!app.join(".farm").join(CACHE_FILE).exists());

        std::fs::write(t.path().join(".git/HEAD"), "ref: refs/heads/../../config\n").unwrap();
        assert_eq!(checkout(&app).head_commit(), None);
        // A cache file for another key, or a damaged one, is a miss.
        let key = CacheKey {
            commit: "a".repeat(40),
            rel: "app".into(),
        };
        let cache = app.join(".farm").join(CACHE_FILE);
        for bad in ["", "farm commit-time v1\n", "farm commit-time v1\nbbbb\napp\n5\n"] {
            std::fs::write(&cache, bad).unwrap();
            assert_eq!(read_cache(&cache, &key), None, "{bad:?}");
        }
        std::fs::write(&cache, format!("{CACHE_HEADER}\n{}\napp\nsoon\n", key.commit)).unwrap();
        assert_eq!(read_cache(&cache, &key), None);
        write_cache(&cache, &key, 7);
        assert_eq!(read_cache(&cache, &key), Some(7));
    }

    /// Shallow clones, grafts and replace refs can change the history behind
    /// a commit id, and a configured work tree moves the paths: no cache.
    #[test]
    fn history_that_can_change_is_not_cached() {
        if !have_git() {
            return;
        }
        let t = repo(1_600_000_000);
        let app = t.path().join("app");
        assert!(checkout(&app).cache_key().is_some());
        let git_dir = t.path().join(".git");
        std::fs::write(git_dir.join("shallow"), "").unwrap();
        assert_eq!(checkout(&app).cache_key(), None);
        std::fs::remove_file(git_dir.join("shallow")).unwrap();

        let head = run_git(t.path(), &["rev-parse", "HEAD"]);
        let first = run_git(t.path(), &["rev-list", "--max-parents=0", "HEAD"]);
        run_git(t.path(), &["replace", &head, &first]);
        assert_eq!(checkout(&app).cache_key(), None);
        run_git(t.path(), &["replace", "-d", &head]);
        assert!(checkout(&app).cache_key().is_some());

        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(git_dir.join("config"))
            .unwrap();
        config.write_all(b"[core]\n\tworktree = /elsewhere\n").unwrap();
        assert_eq!(checkout(&app).cache_key(), None);
    }

    /// A `.git` that is not a repository, or a bare-looking directory above
    /// the project, is left to git.
    #[test]
    fn odd_layouts_are_left_to_git() {
        let t = tempfile::tempdir().unwrap();
        let app = t.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(t.path().join(".git"), "gitdir: \n").unwrap();
        assert_eq!(discover(&app), Discovery::Unsure);
        std::fs::write(t.path().join(".git"), "nonsense").unwrap();
        assert_eq!(discover(&app), Discovery::Unsure);
        std::fs::remove_file(t.path().join(".git")).unwrap();
        std::fs::create_dir(t.path().join(".git")).unwrap();
        assert_eq!(discover(&app), Discovery::Unsure);
        std::fs::remove_dir(t.path().join(".git")).unwrap();
        for n in ["objects", "refs"] {
            std::fs::create_dir(t.path().join(n)).unwrap();
        }
        std::fs::write(t.path().join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(discover(&app), Discovery::Unsure);
    }
}
