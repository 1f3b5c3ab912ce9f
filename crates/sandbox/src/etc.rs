//! The generated /etc files: the only users, groups and host names a step
//! can see, and no DNS unless the step has the host's network.

use std::path::Path;

use crate::kernel::Kernel;
use crate::rootfs::{io_err, under, Result, NEW_ROOT};
use crate::spec::{Network, HOMELESS_SHELTER};

/// Files in /etc that farm writes and that are never taken from the root.
pub(crate) const GENERATED: [&str; 4] = ["passwd", "group", "hosts", "resolv.conf"];

pub(crate) fn is_generated(p: &Path) -> bool {
    p.parent() == Some(Path::new("/etc")) && GENERATED.iter().any(|g| p.file_name() == Some(g.as_ref()))
}

pub(crate) fn passwd(uid: u32, gid: u32) -> String {
    format!(
        "build:x:{uid}:{gid}:farm build user:{HOMELESS_SHELTER}:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
}

pub(crate) fn group(gid: u32) -> String {
    format!("build:x:{gid}:\nnogroup:x:65534:\n")
}

pub(crate) fn hosts(hostname: &str) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    if hostname != "localhost" {
        s.push_str(&format!("127.0.0.1\t{hostname}\n"));
    }
    s
}

/// Without network there is no name server at all, so lookups fail at once
/// instead of timing out. A proxied step has none either: its proxy
/// resolves names on the host.
pub(crate) fn resolv_conf(network: Network, host_resolv_conf: Option<&str>) -> String {
    match network {
        Network::None | Network::Proxy { .. } => String::new(),
        Network::Host => host_resolv_conf.unwrap_or_default().to_string(),
    }
}

pub(crate) struct EtcFiles {
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub network: Network,
    pub host_resolv_conf: Option<String>,
}

/// Writes the generated files into the new root's /etc.
pub(crate) fn write(k: &mut impl Kernel, f: &EtcFiles) -> Result<()> {
    let etc = under(NEW_ROOT, Path::new("/etc"));
    k.mkdir_all(&etc, 0o755).map_err(io_err("create", &etc))?;
    let files = [
        ("passwd", passwd(f.uid, f.gid)),
        ("group", group(f.gid)),
        ("hosts", hosts(&f.hostname)),
        (
            "resolv.conf",
            resolv_conf(f.network.clone(), f.host_resolv_conf.as_deref()),
        ),
    ];
    for (name, contents) in files {
        let path = etc.join(name);
        k.write_file(&path, contents.as_bytes(), 0o444)
            .map_err(io_err("write", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_group_hold_only_the_build_user_and_nobody() {
        assert_eq!(
            passwd(1000, 1000),
            "build:x:1000:1000:farm build user:/homeless-shelter:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
        assert_eq!(group(1000), "build:x:1000:\nnogroup:x:65534:\n");
    }

    #[test]
    fn hosts_maps_the_fixed_hostname_to_loopback() {
        assert_eq!(
            hosts("farm-test"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\tfarm-test\n"
        );
        assert_eq!(hosts("localhost"), "127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    }

    #[test]
    fn resolv_conf_is_empty_without_network_even_if_the_host_has_one() {
        assert_eq!(resolv_conf(Network::None, Some("nameserver 10.0.0.1\n")), "");
        let proxied = Network::Proxy {
            allow: vec!["index.example:443".into()],
        };
        assert_eq!(resolv_conf(proxied, Some("nameserver 10.0.0.1\n")), "");
        assert_eq!(
            resolv_conf(Network::Host, Some("nameserver 10.0.0.1\n")),
            "nameserver 10.0.0.1\n"
        );
    }

    #[test]
    fn generated_names_are_recognised_only_directly_in_etc() {
        assert!(is_generated(Path::new("/etc/passwd")));
        assert!(is_generated(Path::new("/etc/resolv.conf")));
        assert!(!is_generated(Path::new("/etc/ssl/passwd")));
        assert!(!is_generated(Path::new("/etc/os-release")));
    }
}
