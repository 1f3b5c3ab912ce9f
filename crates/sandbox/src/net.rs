//! Identity and network of the UTS/network namespaces: the fixed hostname
//! and `lo` brought up, so servers a step starts on 127.0.0.1 work while
//! nothing else is reachable (a new network namespace has no other device).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    #[error("sethostname({name:?}): {source}")]
    Hostname { name: String, source: nix::Error },
    #[error("bring up the loopback interface `lo` ({action}): {source}")]
    Loopback { action: &'static str, source: io::Error },
}

pub(crate) fn set_hostname(name: &str) -> Result<(), NetError> {
    nix::unistd::sethostname(name).map_err(|source| NetError::Hostname {
        name: name.to_string(),
        source,
    })?;
    // The NIS domain name is copied from the host when the namespace is made.
    let domain = b"(none)";
    // SAFETY: setdomainname(2) with a valid buffer and its length.
    if unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) } != 0 {
        return Err(NetError::Hostname {
            name: "(none) as domain name".into(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

pub(crate) fn loopback_up() -> Result<(), NetError> {
    let sock: OwnedFd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(|e| {
        NetError::Loopback {
            action: "socket",
            source: e.into(),
        }
    })?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which outlives both calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(NetError::Loopback {
                action: "SIOCGIFFLAGS",
                source: io::Error::last_os_error(),
            });
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(NetError::Loopback {
                action: "SIOCSIFFLAGS",
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}
