//! Resource limits of the step. Soft and hard limits are set to the same
//! value so the step cannot raise them; a request above the caller's hard
//! limit is lowered to it (nothing in a user namespace may raise a hard
//! limit, and a lower limit is still a limit). Core dumps are always off: a
//! core file would be an unrequested, non-reproducible output.
//!
//! RLIMIT_NPROC: since Linux 5.14 the kernel counts it per user namespace,
//! so inside the sandbox it counts only the processes of the step's uid in
//! the sandbox (plus the helper and PID 1), not every process the calling
//! user owns on the host. On older kernels it counts all of the caller's
//! processes, so a low value there can make the first fork fail. The kernel
//! never enforces it for processes whose host uid is 0, user namespace or
//! not: with a root caller a fork bomb is ended by the timeout (and the PID
//! namespace teardown), not by this limit, unless the step's cgroup
//! bounds it (see `cgroup`).
//!
//! RLIMIT_DATA stands in for the step's `memory` where no cgroup does: per
//! process, it counts private writable memory (heap, anonymous mappings)
//! but not address space that is only reserved. RLIMIT_AS would count
//! that too, and runtimes reserve far more than they use: Node's
//! WebAssembly reserves about 10 GiB per memory, so under any RLIMIT_AS a
//! build could use, tools built on it (es-module-lexer in Vite) fail.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::spec::Limits;

#[derive(Debug, thiserror::Error)]
#[error("setrlimit({resource}, {value}): {source}")]
pub(crate) struct RlimitError {
    pub resource: &'static str,
    pub value: u64,
    pub source: nix::Error,
}

pub(crate) fn wanted(limits: &Limits) -> Vec<(Resource, &'static str, u64)> {
    let mut v = vec![(Resource::RLIMIT_CORE, "RLIMIT_CORE", 0)];
    let optional = [
        (Resource::RLIMIT_NPROC, "RLIMIT_NPROC", limits.nproc),
        (Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", limits.nofile),
        (Resource::RLIMIT_AS, "RLIMIT_AS", limits.address_space),
        // `memory` reaches the helper only when no cgroup enforces it.
        (Resource::RLIMIT_DATA, "RLIMIT_DATA", limits.memory),
        (Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE", limits.fsize),
        (Resource::RLIMIT_CPU, "RLIMIT_CPU", limits.cpu_seconds),
    ];
    v.extend(
        optional
            .into_iter()
            .filter_map(|(r, n, val)| val.map(|val| (r, n, val))),
    );
    v
}

pub(crate) fn apply(limits: &Limits) -> Result<(), RlimitError> {
    for (resource, name, value) in wanted(limits) {
        let (_, hard) = getrlimit(resource).map_err(|source| RlimitError {
            resource: name,
            value,
            source,
        })?;
        let value = value.min(hard);
        setrlimit(resource, value, value).map_err(|source| RlimitError {
            resource: name,
            value,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_dumps_are_always_disabled_and_unset_limits_are_left_alone() {
        let limits = Limits {
            nproc: Some(64),
            nofile: None,
            address_space: None,
            memory: None,
            fsize: Some(1 << 20),
            cpu_seconds: None,
        };
        let names: Vec<(&str, u64)> = wanted(&limits).into_iter().map(|(_, n, v)| (n, v)).collect();
        assert_eq!(
            names,
            [("RLIMIT_CORE", 0), ("RLIMIT_NPROC", 64), ("RLIMIT_FSIZE", 1 << 20)]
        );
        let memory = Limits {
            memory: Some(1 << 30),
            ..limits
        };
        let names: Vec<&str> = wanted(&memory).into_iter().map(|(_, n, _)| n).collect();
        assert!(
            names.contains(&"RLIMIT_DATA") && !names.contains(&"RLIMIT_AS"),
            "{names:?}"
        );
    }
}
