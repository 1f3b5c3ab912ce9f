//! A minimal /dev: a few host character devices bound in, a private devpts
//! instance, /dev/shm and the /proc/self/fd links. Nothing else of the
//! host's devices is reachable.

use std::path::Path;

use nix::mount::MsFlags;

use crate::kernel::{FileKind, Kernel, MountAttrs};
use crate::rootfs::{io_err, under, Result, NEW_ROOT, OLD_ROOT};

/// Host devices bound into the sandbox (the same set as Nix and bubblewrap).
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

pub(crate) fn populate(k: &mut impl Kernel) -> Result<()> {
    let dev = under(NEW_ROOT, Path::new("/dev"));
    k.mkdir_all(&dev, 0o755).map_err(io_err("create", &dev))?;
    k.mount_tmpfs(&dev, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, "mode=0755")
        .map_err(io_err("mount a tmpfs on", &dev))?;

    for name in DEVICES {
        let target = dev.join(name);
        let source = under(OLD_ROOT, &Path::new("/dev").join(name));
        // Some containers have no /dev/tty; a step never needs one to build.
        if name == "tty" && k.kind(&source).map_err(io_err("inspect", &source))? == FileKind::Missing {
            continue;
        }
        k.write_file(&target, b"", 0o666).map_err(io_err("create", &target))?;
        k.bind(&source, &target)
            .map_err(io_err("bind the host device onto", &target))?;
    }

    let pts = dev.join("pts");
    k.mkdir_all(&pts, 0o755).map_err(io_err("create", &pts))?;
    // A new devpts instance: the step sees only the terminals it opens itself.
    k.mount_special(
        "devpts",
        &pts,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    .map_err(io_err("mount devpts on", &pts))?;
    let ptmx = dev.join("ptmx");
    k.symlink(Path::new("pts/ptmx"), &ptmx)
        .map_err(io_err("create the symlink", &ptmx))?;

    let shm = dev.join("shm");
    k.mkdir_all(&shm, 0o755).map_err(io_err("create", &shm))?;
    k.mount_tmpfs(&shm, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=1777")
        .map_err(io_err("mount a tmpfs on", &shm))?;

    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        let link = dev.join(name);
        k.symlink(Path::new(target), &link)
            .map_err(io_err("create the symlink", &link))?;
    }

    // Only the tmpfs itself: the device binds, devpts and shm are mounts of their own.
    let attrs = MountAttrs {
        read_only: true,
        nosuid: true,
        nodev: false,
    };
    k.set_attrs(&dev, attrs, false).map_err(io_err("make read-only", &dev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recorder::Recorder;

    #[test]
    fn dev_has_the_listed_devices_a_private_devpts_and_is_read_only_last() {
        let mut k = Recorder::default();
        for name in DEVICES {
            k.file(&format!("/oldroot/dev/{name}"));
        }
        populate(&mut k).unwrap();
        for name in DEVICES {
            let bind = format!("bind /oldroot/dev/{name} /newroot/dev/{name}");
            assert!(k.position(&format!("write /newroot/dev/{name} 666 ")) < k.position(&bind));
        }
        assert!(k.has("mount devpts /newroot/dev/pts newinstance,ptmxmode=0666,mode=0620"));
        assert!(k.has("symlink /newroot/dev/ptmx -> pts/ptmx"));
        assert!(k.has("tmpfs /newroot/dev/shm mode=1777"));
        assert_eq!(k.calls.last().unwrap(), "attrs /newroot/dev ro");
        let binds = k.calls.iter().filter(|c| c.starts_with("bind ")).count();
        assert_eq!(
            binds,
            DEVICES.len(),
            "only the listed host devices are bound: {:#?}",
            k.calls
        );
    }

    #[test]
    fn a_host_without_dev_tty_gets_a_dev_without_tty() {
        let mut k = Recorder::default();
        populate(&mut k).unwrap();
        assert!(!k.calls.iter().any(|c| c.contains("/dev/tty")), "{:#?}", k.calls);
        assert!(k.has("bind /oldroot/dev/null /newroot/dev/null"));
    }
}
