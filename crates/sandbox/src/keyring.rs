//! The step's kernel keyrings. A forked process keeps its parent's session
//! keyring, and the keyring is not namespaced: without this the step would
//! possess every key of the caller's session (tokens, credentials a login
//! or `keyctl` put there) and could read them. The step instead joins a new
//! anonymous session keyring, empty, its own, gone when the step ends.
//! Since Linux 5.3 the user keyrings (`@u`, `@us`) belong to the user
//! namespace, so the step's are new as well. The seccomp filter denies
//! every keyring call besides; this is the second wall.

use std::io;

/// keyctl(2) operation, from <linux/keyctl.h> (libc does not define it).
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;

#[derive(Debug, thiserror::Error)]
#[error("join a new session keyring: {0}")]
pub(crate) struct KeyringError(#[source] io::Error);

/// Leaves the caller's session keyring for a new anonymous one.
pub(crate) fn join_new_session() -> Result<(), KeyringError> {
    // SAFETY: keyctl(2) with an integer operation and a NULL name.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if rc >= 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // A kernel without keys has nothing to share. EPERM means a filter
        // above ours (a container's seccomp profile, an LSM) refuses keyctl:
        // the step inherits that refusal, and our own filter denies it too.
        Some(libc::ENOSYS) | Some(libc::EPERM) => Ok(()),
        _ => Err(KeyringError(err)),
    }
}
