//! A new /proc for the sandbox's PID namespace. It must be mounted while the
//! host's /proc is still visible (/oldroot/proc): the kernel only lets a user
//! namespace mount proc when a fully visible one exists in its mount namespace.

use std::path::Path;

use nix::mount::MsFlags;

use crate::kernel::{FileKind, Kernel, MountAttrs};
use crate::rootfs::{io_err, under, Result, NEW_ROOT};

/// Parts of /proc that reach kernel-wide state; read-only whatever Landlock
/// supports (the same set bubblewrap protects).
pub(crate) const READ_ONLY: [&str; 4] = ["sys", "sysrq-trigger", "irq", "bus"];

pub(crate) fn mount(k: &mut impl Kernel) -> Result<()> {
    let proc_dir = under(NEW_ROOT, Path::new("/proc"));
    k.mkdir_all(&proc_dir, 0o555).map_err(io_err("create", &proc_dir))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    k.mount_special("proc", &proc_dir, flags, "")
        .map_err(io_err("mount proc on", &proc_dir))?;
    for name in READ_ONLY {
        let p = proc_dir.join(name);
        if k.kind(&p).map_err(io_err("inspect", &p))? == FileKind::Missing {
            continue;
        }
        k.bind(&p, &p).map_err(io_err("bind over itself", &p))?;
        let attrs = MountAttrs {
            read_only: true,
            nosuid: true,
            nodev: true,
        };
        k.set_attrs(&p, attrs, true).map_err(io_err("make read-only", &p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recorder::Recorder;

    #[test]
    fn proc_is_mounted_then_its_kernel_wide_parts_are_made_read_only() {
        let mut k = Recorder::default();
        k.dir("/newroot/proc/sys");
        k.file("/newroot/proc/sysrq-trigger");
        mount(&mut k).unwrap();
        assert!(k.position("mount proc /newroot/proc ") < k.position("bind /newroot/proc/sys /newroot/proc/sys"));
        assert!(k.has("attrs /newroot/proc/sys ro recursive"));
        assert!(k.has("attrs /newroot/proc/sysrq-trigger ro recursive"));
        // Absent entries (irq, bus on this fake host) are skipped, not errors.
        assert!(!k.calls.iter().any(|c| c.contains("/proc/irq")));
    }
}
