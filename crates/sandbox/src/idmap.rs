//! uid_map / gid_map of the new user namespace: exactly one id each, the
//! step's uid/gid mapped to the caller's. That is all an unprivileged process
//! may map, and as root it keeps every other host id (root included)
//! unmapped inside, so host-root-owned files show as `nobody` and their
//! setuid bits are ignored.

use std::fs;
use std::io;

#[derive(Debug, thiserror::Error)]
#[error("write `{content}` to {file}: {source}")]
pub(crate) struct IdMapError {
    pub file: &'static str,
    pub content: String,
    #[source]
    pub source: io::Error,
}

pub(crate) fn map_line(inside: u32, outside: u32) -> String {
    format!("{inside} {outside} 1\n")
}

/// Maps `uid`/`gid` inside to the caller's effective ids (read before unshare).
/// setgroups must be denied before an unprivileged process may write gid_map.
pub(crate) fn write(uid: u32, gid: u32, host_uid: u32, host_gid: u32) -> Result<(), IdMapError> {
    let files = [
        ("/proc/self/setgroups", "deny\n".to_string()),
        ("/proc/self/uid_map", map_line(uid, host_uid)),
        ("/proc/self/gid_map", map_line(gid, host_gid)),
    ];
    for (file, content) in files {
        fs::write(file, &content).map_err(|source| IdMapError {
            file,
            content: content.trim().to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_map_line_maps_exactly_one_id() {
        assert_eq!(super::map_line(1000, 65534), "1000 65534 1\n");
    }
}
