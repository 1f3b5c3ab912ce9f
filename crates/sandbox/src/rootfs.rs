//! The sandbox's root filesystem: a tmpfs holding read-only binds of the root
//! spec and the step's binds, a tmpfs for every writable directory that no
//! writable bind provides, and finally pivot_root into it.
//!
//! Layout while building (inside the private mount namespace): a staging
//! tmpfs is mounted over /tmp and pivoted to, so the host's tree is at
//! `/oldroot` and the new root at `/newroot`. Host paths are therefore read
//! as `/oldroot/<path>`; the caller canonicalises them beforehand, because an
//! absolute symlink would otherwise resolve against the staging root.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::etc;
use crate::kernel::{FileKind, Kernel, MountAttrs};
use crate::spec::{RootSpec, StepSpec};

/// Where the staging tmpfs is mounted before the first pivot_root; any
/// directory present on every host works, and /tmp is (bubblewrap does the same).
const STAGING: &str = "/tmp";
pub(crate) const OLD_ROOT: &str = "/oldroot";
pub(crate) const NEW_ROOT: &str = "/newroot";

#[derive(Debug, thiserror::Error)]
pub(crate) enum RootfsError {
    #[error("{action} `{}`: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} `{}` does not exist on the host", .path.display())]
    MissingSource { what: &'static str, path: PathBuf },
    #[error(
        "cannot create the mount point `{}` for {what}: {source}; \
         hint: its parent lies inside a read-only root entry, so the directory must already exist there, \
         or the bind must target a path outside the root's entries",
        .target.display()
    )]
    MountPoint {
        what: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) type Result<T> = std::result::Result<T, RootfsError>;

pub(crate) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// `/oldroot/<p>` or `/newroot/<p>` for an absolute in-sandbox or host path.
pub(crate) fn under(base: &str, p: &Path) -> PathBuf {
    let rel = p.strip_prefix("/").unwrap_or(p);
    if rel.as_os_str().is_empty() {
        PathBuf::from(base)
    } else {
        Path::new(base).join(rel)
    }
}

const READ_ONLY: MountAttrs = MountAttrs {
    read_only: true,
    nosuid: true,
    nodev: true,
};
const WRITABLE: MountAttrs = MountAttrs {
    read_only: false,
    nosuid: true,
    nodev: true,
};

/// Makes every mount private (nothing propagates back to the host) and moves
/// onto the staging tmpfs with the host tree at /oldroot.
pub(crate) fn enter_staging(k: &mut impl Kernel) -> Result<()> {
    let root = Path::new("/");
    k.make_rprivate(root).map_err(io_err("make mounts private", root))?;
    let staging = Path::new(STAGING);
    k.mount_tmpfs(staging, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=0755")
        .map_err(io_err("mount the staging tmpfs on", staging))?;
    for dir in ["oldroot", "newroot"] {
        let p = staging.join(dir);
        k.mkdir_all(&p, 0o755).map_err(io_err("create", &p))?;
    }
    let put_old = staging.join("oldroot");
    k.pivot_root(staging, &put_old)
        .map_err(io_err("pivot_root to the staging tmpfs", staging))?;
    k.chdir(root).map_err(io_err("chdir", root))
}

/// Mounts the new root's tmpfs and places the root spec's entries in it.
pub(crate) fn assemble_root(k: &mut impl Kernel, spec: &StepSpec) -> Result<()> {
    let new_root = Path::new(NEW_ROOT);
    k.mount_tmpfs(new_root, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=0755")
        .map_err(io_err("mount the root tmpfs on", new_root))?;
    match &spec.root {
        RootSpec::Dir(dir) => {
            let host_dir = under(OLD_ROOT, dir);
            let names = k
                .read_dir(&host_dir)
                .map_err(io_err("list the root directory", &host_dir))?;
            for name in names {
                let target = Path::new("/").join(&name);
                if provided_by_sandbox(spec, &target) {
                    continue;
                }
                if target == Path::new("/etc") {
                    merge_etc(k, &host_dir.join("etc"))?;
                } else {
                    place(k, &host_dir.join(&name), &target, "root entry")?;
                }
            }
        }
        RootSpec::HostPaths(paths) => {
            for p in by_depth(paths.iter().map(PathBuf::as_path)) {
                if provided_by_sandbox(spec, p) || etc::is_generated(p) {
                    continue;
                }
                if p == Path::new("/etc") {
                    merge_etc(k, &under(OLD_ROOT, p))?;
                } else {
                    if let Some(parent) = p.parent() {
                        let dir = under(NEW_ROOT, parent);
                        k.mkdir_all(&dir, 0o755).map_err(io_err("create", &dir))?;
                    }
                    place(k, &under(OLD_ROOT, p), p, "root path")?;
                }
            }
        }
    }
    Ok(())
}

/// Mounts a tmpfs on each writable directory that no writable bind
/// provides, and the step's binds, parents before children.
pub(crate) fn mount_writable_and_binds(k: &mut impl Kernel, spec: &StepSpec) -> Result<()> {
    enum Item<'a> {
        Tmpfs(&'a Path),
        Bind(&'a crate::spec::Bind),
    }
    let mut items: Vec<(usize, Item)> = Vec::new();
    for w in &spec.writable {
        let from_bind = spec.binds.iter().any(|b| !b.read_only && w.starts_with(&b.target));
        if !w.starts_with("/dev") && !from_bind {
            items.push((w.components().count(), Item::Tmpfs(w)));
        }
    }
    for b in &spec.binds {
        items.push((b.target.components().count(), Item::Bind(b)));
    }
    items.sort_by_key(|(depth, _)| *depth);

    for (_, item) in items {
        match item {
            Item::Tmpfs(w) => {
                let target = under(NEW_ROOT, w);
                k.mkdir_all(&target, 0o755).map_err(|source| RootfsError::MountPoint {
                    what: "a writable directory".into(),
                    target: w.to_path_buf(),
                    source,
                })?;
                let options = if w == Path::new("/tmp") {
                    "mode=1777".to_string()
                } else {
                    format!("mode=0755,uid={},gid={}", spec.uid, spec.gid)
                };
                k.mount_tmpfs(&target, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, &options)
                    .map_err(io_err("mount a tmpfs on", &target))?;
            }
            Item::Bind(b) => {
                let source = under(OLD_ROOT, &b.source);
                let target = under(NEW_ROOT, &b.target);
                let what = format!("the bind of `{}`", b.source.display());
                let mount_point_err = |source| RootfsError::MountPoint {
                    what: what.clone(),
                    target: b.target.clone(),
                    source,
                };
                match k.kind(&source).map_err(io_err("inspect", &source))? {
                    FileKind::Missing => {
                        return Err(RootfsError::MissingSource {
                            what: "bind source",
                            path: b.source.clone(),
                        });
                    }
                    FileKind::Dir => k.mkdir_all(&target, 0o755).map_err(mount_point_err)?,
                    FileKind::File | FileKind::Symlink => {
                        if let Some(parent) = target.parent() {
                            k.mkdir_all(parent, 0o755).map_err(mount_point_err)?;
                        }
                        if k.kind(&target).map_err(io_err("inspect", &target))? == FileKind::Missing {
                            k.write_file(&target, b"", 0o444).map_err(mount_point_err)?;
                        }
                    }
                }
                k.bind(&source, &target).map_err(io_err("bind-mount onto", &target))?;
                let attrs = if b.read_only { READ_ONLY } else { WRITABLE };
                k.set_attrs(&target, attrs, true)
                    .map_err(io_err("set mount flags of", &target))?;
            }
        }
    }
    Ok(())
}

/// Detaches the host tree and makes /newroot the root, read-only.
pub(crate) fn switch_root(k: &mut impl Kernel) -> Result<()> {
    let old = Path::new(OLD_ROOT);
    k.umount_detach(old).map_err(io_err("detach the host tree at", old))?;
    let new_root = Path::new(NEW_ROOT);
    k.chdir(new_root).map_err(io_err("chdir", new_root))?;
    // pivot_root(".", ".") stacks the staging root on top of the new one; detaching "." then drops it.
    let dot = Path::new(".");
    k.pivot_root(dot, dot).map_err(io_err("pivot_root into", new_root))?;
    k.umount_detach(dot)
        .map_err(io_err("detach the staging root at", dot))?;
    let root = Path::new("/");
    k.chdir(root).map_err(io_err("chdir", root))?;
    k.set_attrs(root, READ_ONLY, false)
        .map_err(io_err("make read-only", root))
}

/// Paths the sandbox mounts itself, so a root entry there would only be hidden.
fn provided_by_sandbox(spec: &StepSpec, target: &Path) -> bool {
    target == Path::new("/dev") || target == Path::new("/proc") || spec.writable.iter().any(|w| w == target)
}

fn by_depth<'a>(paths: impl Iterator<Item = &'a Path>) -> Vec<&'a Path> {
    let mut v: Vec<&Path> = paths.collect();
    v.sort_by_key(|p| p.components().count());
    v
}

/// /etc is assembled entry by entry, so that the generated passwd, group,
/// hosts and resolv.conf sit in the root tmpfs and the host's never show.
fn merge_etc(k: &mut impl Kernel, host_etc: &Path) -> Result<()> {
    let etc_dir = under(NEW_ROOT, Path::new("/etc"));
    k.mkdir_all(&etc_dir, 0o755).map_err(io_err("create", &etc_dir))?;
    let names: Vec<OsString> = k.read_dir(host_etc).map_err(io_err("list", host_etc))?;
    for name in names {
        let target = Path::new("/etc").join(&name);
        if !etc::is_generated(&target) {
            place(k, &host_etc.join(&name), &target, "/etc entry")?;
        }
    }
    Ok(())
}

/// Re-creates a symlink, or binds a directory or file read-only, at `target`.
fn place(k: &mut impl Kernel, source: &Path, target: &Path, what: &'static str) -> Result<()> {
    let dest = under(NEW_ROOT, target);
    match k.kind(source).map_err(io_err("inspect", source))? {
        FileKind::Missing => {
            return Err(RootfsError::MissingSource {
                what,
                path: source.to_path_buf(),
            })
        }
        FileKind::Symlink => {
            let link = k.read_link(source).map_err(io_err("read the symlink", source))?;
            return k.symlink(&link, &dest).map_err(io_err("create the symlink", &dest));
        }
        FileKind::Dir => k.mkdir_all(&dest, 0o755).map_err(io_err("create", &dest))?,
        FileKind::File => k.write_file(&dest, b"", 0o444).map_err(io_err("create", &dest))?,
    }
    k.bind(source, &dest).map_err(io_err("bind-mount onto", &dest))?;
    k.set_attrs(&dest, READ_ONLY, true)
        .map_err(io_err("make read-only", &dest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recorder::Recorder;
    use crate::spec::{Bind, Stdio};

    fn spec(root: RootSpec) -> StepSpec {
        StepSpec::new(root, vec!["true".into()], Stdio::Inherit)
    }

    #[test]
    fn host_paths_bind_dirs_read_only_and_recreate_symlinks() {
        let mut k = Recorder::default();
        k.dir("/oldroot/usr");
        k.link("/oldroot/bin", "usr/bin");
        k.dir("/oldroot/etc/alternatives");
        let s = spec(RootSpec::HostPaths(vec![
            "/usr".into(),
            "/bin".into(),
            "/etc/alternatives".into(),
        ]));
        assemble_root(&mut k, &s).unwrap();
        assert!(k.has("bind /oldroot/usr /newroot/usr"));
        assert!(k.has("attrs /newroot/usr ro recursive"));
        assert!(k.has("symlink /newroot/bin -> usr/bin"));
        // The parent of a nested root path is a plain directory in the root tmpfs.
        assert!(
            k.position("mkdir /newroot/etc 755")
                < k.position("bind /oldroot/etc/alternatives /newroot/etc/alternatives")
        );
    }

    #[test]
    fn a_missing_root_path_is_an_error_naming_it() {
        let mut k = Recorder::default();
        let s = spec(RootSpec::HostPaths(vec!["/lib64".into()]));
        let e = assemble_root(&mut k, &s).unwrap_err().to_string();
        assert!(e.contains("/oldroot/lib64") && e.contains("does not exist"), "{e}");
    }

    #[test]
    fn dir_root_skips_dev_proc_and_writable_dirs_and_merges_etc_without_generated_files() {
        let mut k = Recorder::default();
        for d in [
            "/oldroot/base/usr",
            "/oldroot/base/dev",
            "/oldroot/base/proc",
            "/oldroot/base/tmp",
        ] {
            k.dir(d);
        }
        k.link("/oldroot/base/lib", "usr/lib");
        k.file("/oldroot/base/etc/passwd");
        k.file("/oldroot/base/etc/os-release");
        k.dir("/oldroot/base/etc/ssl");
        k.dir("/oldroot/base/etc");
        let s = spec(RootSpec::Dir("/base".into()));
        assemble_root(&mut k, &s).unwrap();
        assert!(k.has("bind /oldroot/base/usr /newroot/usr"));
        assert!(k.has("symlink /newroot/lib -> usr/lib"));
        assert!(k.has("bind /oldroot/base/etc/os-release /newroot/etc/os-release"));
        assert!(k.has("bind /oldroot/base/etc/ssl /newroot/etc/ssl"));
        for hidden in ["dev", "proc", "tmp"] {
            assert!(
                !k.calls.iter().any(|c| c.contains(&format!("/base/{hidden}"))),
                "{hidden}: {:#?}",
                k.calls
            );
        }
        assert!(
            !k.calls.iter().any(|c| c.contains("etc/passwd")),
            "host passwd was bound: {:#?}",
            k.calls
        );
        assert!(!k.has("bind /oldroot/base/etc /newroot/etc"));
    }

    #[test]
    fn writable_dirs_get_tmpfs_unless_a_writable_bind_provides_them_and_parents_mount_first() {
        let mut k = Recorder::default();
        k.dir("/oldroot/host/out");
        k.dir("/oldroot/host/src");
        k.dir("/oldroot/store/abc-node");
        let mut s = spec(RootSpec::HostPaths(vec![]));
        s.binds = vec![
            Bind::read_only("/host/src", "/build/src"),
            Bind::writable("/host/out", "/out"),
            Bind::read_only("/store/abc-node", "/farm/store/abc-node"),
        ];
        mount_writable_and_binds(&mut k, &s).unwrap();
        assert!(k.has("tmpfs /newroot/build mode=0755,uid=1000,gid=1000"));
        assert!(k.has("tmpfs /newroot/tmp mode=1777"));
        assert!(
            !k.calls.iter().any(|c| c.starts_with("tmpfs /newroot/out")),
            "{:#?}",
            k.calls
        );
        assert!(
            !k.calls.iter().any(|c| c.starts_with("tmpfs /newroot/dev")),
            "{:#?}",
            k.calls
        );
        assert!(
            k.position("tmpfs /newroot/build mode=0755,uid=1000,gid=1000")
                < k.position("bind /oldroot/host/src /newroot/build/src")
        );
        assert!(k.has("attrs /newroot/build/src ro recursive"));
        assert!(k.has("attrs /newroot/out rw recursive"));
        assert!(k.has("attrs /newroot/farm/store/abc-node ro recursive"));
    }

    #[test]
    fn a_file_bind_gets_a_file_mount_point() {
        let mut k = Recorder::default();
        k.file("/oldroot/host/tool");
        let mut s = spec(RootSpec::HostPaths(vec![]));
        s.writable.clear();
        s.binds = vec![Bind::read_only("/host/tool", "/opt/tool")];
        mount_writable_and_binds(&mut k, &s).unwrap();
        assert!(k.position("mkdir /newroot/opt 755") < k.position("write /newroot/opt/tool 444 "));
        assert!(k.position("write /newroot/opt/tool 444 ") < k.position("bind /oldroot/host/tool /newroot/opt/tool"));
    }

    #[test]
    fn switch_root_detaches_the_host_before_pivoting_and_ends_read_only() {
        let mut k = Recorder::default();
        enter_staging(&mut k).unwrap();
        switch_root(&mut k).unwrap();
        let expected = [
            "rprivate /",
            "tmpfs /tmp mode=0755",
            "mkdir /tmp/oldroot 755",
            "mkdir /tmp/newroot 755",
            "pivot_root /tmp /tmp/oldroot",
            "chdir /",
            "umount /oldroot",
            "chdir /newroot",
            "pivot_root . .",
            "umount .",
            "chdir /",
            "attrs / ro",
        ];
        assert_eq!(k.calls, expected);
    }
}
