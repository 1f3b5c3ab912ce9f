//! The namespaces a step gets, and the hints shown when the kernel refuses
//! to create them.

use std::fs;

use nix::sched::CloneFlags;

use crate::spec::Network;

#[derive(Debug, thiserror::Error)]
#[error("unshare({flags}) failed: {source}")]
pub(crate) struct NamespaceError {
    pub flags: String,
    #[source]
    pub source: nix::Error,
}

/// User, mount, PID, UTS, IPC and cgroup always; network unless the step
/// uses the host's (a proxied step has a namespace of its own too). The PID namespace applies to children of the caller,
/// which is why the helper forks the namespace's PID 1 afterwards.
pub(crate) fn flags(network: &Network) -> CloneFlags {
    let mut f = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if network.isolated() {
        f |= CloneFlags::CLONE_NEWNET;
    }
    f
}

pub(crate) fn unshare(flags: CloneFlags) -> Result<(), NamespaceError> {
    nix::sched::unshare(flags).map_err(|source| NamespaceError {
        flags: format!("{flags:?}"),
        source,
    })
}

fn read_knob(path: &str) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Why user namespaces may be unavailable here and what to do about it,
/// from the kernel knobs that control them (read on the caller's side).
pub(crate) fn unavailable_hint() -> String {
    let mut hints = Vec::new();
    if read_knob("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        hints.push(
            "kernel.unprivileged_userns_clone is 0: enable it with `sysctl -w kernel.unprivileged_userns_clone=1`"
                .to_string(),
        );
    }
    if read_knob("/proc/sys/user/max_user_namespaces") == Some(0) {
        hints.push("user.max_user_namespaces is 0: raise it with `sysctl -w user.max_user_namespaces=15000`".into());
    }
    if read_knob("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        hints.push(
            "kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu 24.04 and later): AppArmor denies \
             capabilities in new user namespaces unless a profile allows them; install an AppArmor profile \
             for the farm binary containing `userns,`, or set the sysctl to 0"
                .into(),
        );
    }
    if hints.is_empty() {
        hints.push(
            "if farm runs inside a container, its seccomp profile or missing privileges may block \
             unshare(2); run the step with the container backend instead"
                .into(),
        );
    }
    hints.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_namespace_only_without_host_network() {
        assert!(flags(&Network::None).contains(CloneFlags::CLONE_NEWNET));
        assert!(flags(&Network::Proxy { allow: vec![] }).contains(CloneFlags::CLONE_NEWNET));
        assert!(!flags(&Network::Host).contains(CloneFlags::CLONE_NEWNET));
        for f in [
            CloneFlags::CLONE_NEWUSER,
            CloneFlags::CLONE_NEWPID,
            CloneFlags::CLONE_NEWNS,
        ] {
            assert!(flags(&Network::Host).contains(f));
        }
    }
}
