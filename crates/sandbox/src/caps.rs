//! Dropping privileges before the command runs. The helper holds every
//! capability of the new user namespace (it created it); the step must hold
//! none, so it can neither mount nor change the hostname nor regain anything
//! through execve: the bounding and ambient sets are emptied, the ids are
//! set to the step's, and the permitted/effective/inheritable sets cleared.

use std::io;

use nix::unistd::{setresgid, setresuid, Gid, Uid};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CapsError {
    #[error("drop capability {cap} from the bounding set: {source}")]
    Bounding { cap: u32, source: io::Error },
    #[error("{what}: {source}")]
    Call { what: &'static str, source: io::Error },
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

pub(crate) fn drop_all(uid: u32, gid: u32) -> Result<(), CapsError> {
    for cap in 0..=last_cap() {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let source = io::Error::last_os_error();
            // Capabilities this kernel does not know need no dropping.
            if source.raw_os_error() != Some(libc::EINVAL) {
                return Err(CapsError::Bounding { cap, source });
            }
        }
    }
    // SAFETY: as above.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(CapsError::Call {
            what: "clear the ambient capabilities",
            source: io::Error::last_os_error(),
        });
    }
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setresgid(gid, gid, gid).map_err(|e| CapsError::Call {
        what: "setresgid",
        source: e.into(),
    })?;
    setresuid(uid, uid, uid).map_err(|e| CapsError::Call {
        what: "setresuid",
        source: e.into(),
    })?;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) with a v3 header and the two data structs v3 requires.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } != 0 {
        return Err(CapsError::Call {
            what: "capset to no capabilities",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
