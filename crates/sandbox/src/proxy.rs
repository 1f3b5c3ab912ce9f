//! The proxy network mode (`Network::Proxy`): the step has a network
//! namespace with only `lo`, and a relay that PID 1 forks listens on
//! [`PROXY_ADDR`] inside it. The relay carries each connection, byte for
//! byte, over a unix socket bound into the sandbox at
//! [`SOCKET_IN_SANDBOX`] to a proxy the caller runs on the host for the
//! step's lifetime. Only that host-side proxy decides where a connection
//! goes: `CONNECT` to an allowed `host:port`, or `GET`/`HEAD` of an
//! `http://` URL on one; everything else is answered `403 Forbidden`. The
//! relay and the socket reach nothing but that proxy, so it does not
//! matter which of them the step talks to.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::unistd::{fork, ForkResult, Pid};

use crate::spec::PROXY_ADDR;

/// Where the host-side proxy's socket is bound inside the sandbox.
pub(crate) const SOCKET_IN_SANDBOX: &str = "/.farm-proxy.sock";

/// The variables that point HTTP clients (pip, curl, npm, urllib) at the proxy.
pub(crate) fn env() -> Vec<(String, String)> {
    let url = format!("http://{PROXY_ADDR}");
    ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
        .into_iter()
        .map(|k| (k.to_string(), url.clone()))
        .collect()
}

/// Longest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `host:port` with a lower-case host (brackets kept around IPv6) and a
/// port in 1..=65535.
pub(crate) fn parse_authority(s: &str) -> Result<String, &'static str> {
    let (host, port) = s.rsplit_once(':').ok_or("no `:port`")?;
    let port: u16 = port.parse().map_err(|_| "the port is not a number in 1-65535")?;
    if port == 0 {
        return Err("the port is not a number in 1-65535");
    }
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    let valid_host = if bracketed {
        host[1..host.len() - 1]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    if !valid_host {
        return Err("the host is not a name, an IPv4 address or a bracketed IPv6 address");
    }
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// What the proxy does with one request.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// `CONNECT`: a tunnel to the target.
    Tunnel(String),
    /// A plain HTTP request, rewritten for the origin server.
    Forward {
        target: String,
        head: Vec<u8>,
    },
    Refuse {
        status: u16,
        reason: String,
    },
}

fn refuse(status: u16, reason: impl Into<String>) -> Decision {
    Decision::Refuse {
        status,
        reason: reason.into(),
    }
}

/// Decides on a request head (everything up to and including the blank line).
fn decide(head: &[u8], allow: &[String]) -> Decision {
    let Ok(text) = std::str::from_utf8(head) else {
        return refuse(400, "the request head is not UTF-8");
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return refuse(400, "the request line is not `METHOD TARGET VERSION`");
    };
    if !version.starts_with("HTTP/1.") {
        return refuse(400, "only HTTP/1.x is relayed");
    }
    let not_allowed = |authority: &str| {
        refuse(
            403,
            format!(
                "this step may reach only {}; `{authority}` is not one of them",
                allow.join(", ")
            ),
        )
    };
    if method == "CONNECT" {
        return match parse_authority(target) {
            Ok(a) if allow.contains(&a) => Decision::Tunnel(a),
            Ok(a) => not_allowed(&a),
            Err(_) => refuse(400, "CONNECT needs `host:port`"),
        };
    }
    if method != "GET" && method != "HEAD" {
        return refuse(
            403,
            format!("the step's proxy relays only CONNECT, and GET or HEAD of http:// URLs; `{method}` is refused"),
        );
    }
    let Some(rest) = target
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])
    else {
        return refuse(
            403,
            "the step's proxy relays only CONNECT, and GET or HEAD of absolute http:// URLs",
        );
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // Credentials in the URL are the origin's business, never printed.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let with_port = if host_port.ends_with(']') || !host_port.contains(':') {
        format!("{host_port}:80")
    } else {
        host_port.to_string()
    };
    let target_authority = match parse_authority(&with_port) {
        Ok(a) => a,
        Err(_) => return refuse(400, "the URL has no valid host"),
    };
    if !allow.contains(&target_authority) {
        return not_allowed(&target_authority);
    }
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    let mut out = format!("{method} {path} {version}\r\n");
    let mut has_host = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
        ) {
            continue;
        }
        has_host |= name == "host";
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !has_host {
        out.push_str(&format!("Host: {host_port}\r\n"));
    }
    // One request per connection: the proxy never parses a second one.
    out.push_str("Connection: close\r\n\r\n");
    Decision::Forward {
        target: target_authority,
        head: out.into_bytes(),
    }
}

/// Reads up to the end of the request head; returns the head and whatever
/// came after it in the same reads.
fn read_head(s: &mut impl Read) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too long"));
        }
        match s.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Bad Gateway",
    }
}

fn respond(client: &mut UnixStream, status: u16, reason: &str) {
    let body = format!("farm: {reason}\n");
    let _ = write!(
        client,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status_text(status),
        body.len()
    );
}

fn connect(target: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for addr in target.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A connected stream the relays can split into two directions.
trait Stream: Read + Write + Send + Sized + 'static {
    fn duplicate(&self) -> io::Result<Self>;
    fn close(&self, how: Shutdown);
}

impl Stream for TcpStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

impl Stream for UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

/// Copies both ways until both sides are done; `a`'s end of input becomes
/// `b`'s, and when `b` is done, both are closed.
fn splice<A: Stream, B: Stream>(mut a: A, mut b: B) {
    let (Ok(mut a2), Ok(mut b2)) = (a.duplicate(), b.duplicate()) else {
        return;
    };
    let forward = std::thread::Builder::new().spawn(move || {
        let _ = io::copy(&mut a2, &mut b2);
        b2.close(Shutdown::Write);
    });
    if forward.is_ok() {
        let _ = io::copy(&mut b, &mut a);
    }
    a.close(Shutdown::Both);
    b.close(Shutdown::Both);
    if let Ok(h) = forward {
        let _ = h.join();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the step's network proxy: {action}: {source}")]
pub struct ProxyError {
    pub action: &'static str,
    #[source]
    pub source: io::Error,
}

/// Sockets of live connections, shut down when the proxy stops.
type Live = Arc<Mutex<HashMap<u64, Vec<Box<dyn Fn() + Send>>>>>;

/// The caller's side: a proxy on a unix socket in a private temporary
/// directory, for one step.
pub(crate) struct HostProxy {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    live: Live,
    accept: Option<JoinHandle<()>>,
}

impl HostProxy {
    /// Starts the proxy; `allow` holds validated `host:port` entries.
    pub(crate) fn start(allow: &[String]) -> Result<HostProxy, ProxyError> {
        let err = |action| move |source| ProxyError { action, source };
        let allow: Arc<Vec<String>> = Arc::new(allow.iter().filter_map(|a| parse_authority(a).ok()).collect());
        // 0700: only the caller (and the sandbox, which runs as the caller) gets in.
        let dir = tempfile::Builder::new()
            .prefix("farm-proxy-")
            .tempdir()
            .map_err(err("create its directory"))?;
        let socket = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&socket).map_err(err("bind its socket"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let live: Live = Arc::default();
        let (stop2, live2) = (stop.clone(), live.clone());
        let accept = std::thread::Builder::new()
            .name("farm-proxy".into())
            .spawn(move || {
                let next = AtomicU64::new(0);
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let (allow, live) = (allow.clone(), live2.clone());
                    let _ = std::thread::Builder::new().spawn(move || {
                        serve(conn, &allow, &live, id);
                        live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    });
                }
            })
            .map_err(err("start its thread"))?;
        Ok(HostProxy {
            _dir: dir,
            socket,
            stop,
            live,
            accept: Some(accept),
        })
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

fn track(live: &Live, id: u64, s: &impl Stream) {
    if let Ok(dup) = s.duplicate() {
        let mut map = live.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id)
            .or_default()
            .push(Box::new(move || dup.close(Shutdown::Both)));
    }
}

fn serve(mut client: UnixStream, allow: &[String], live: &Live, id: u64) {
    track(live, id, &client);
    let Ok((head, rest)) = read_head(&mut client) else {
        respond(&mut client, 400, "the request head is incomplete or longer than 64 KiB");
        return;
    };
    let (target, preamble) = match decide(&head, allow) {
        Decision::Refuse { status, reason } => {
            respond(&mut client, status, &reason);
            return;
        }
        Decision::Tunnel(target) => (target, Vec::new()),
        Decision::Forward { target, head } => (target, head),
    };
    let mut upstream = match connect(&target) {
        Ok(s) => s,
        Err(e) => {
            respond(&mut client, 502, &format!("cannot connect to `{target}`: {e}"));
            return;
        }
    };
    track(live, id, &upstream);
    if preamble.is_empty()
        && client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .is_err()
    {
        return;
    }
    if upstream.write_all(&preamble).is_err() || upstream.write_all(&rest).is_err() {
        return;
    }
    splice(client, upstream);
}

impl Drop for HostProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // The step is over: whatever is still connected goes too.
        let map = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        for closers in map.values() {
            for close in closers {
                close();
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the proxy relay inside the sandbox: {action}: {source}")]
pub(crate) struct RelayError {
    action: &'static str,
    source: io::Error,
}

/// In PID 1, after the switch into the new root and with `lo` up: listens
/// on [`PROXY_ADDR`] and forks the relay, which gives up its capabilities
/// and then carries each connection to [`SOCKET_IN_SANDBOX`]. It ends with
/// the sandbox (PID 1 kills it with everything else).
pub(crate) fn start_relay(uid: u32, gid: u32) -> Result<Pid, RelayError> {
    let listener = TcpListener::bind(PROXY_ADDR).map_err(|source| RelayError {
        action: "listen on the proxy address",
        source,
    })?;
    // SAFETY: PID 1 is single-threaded.
    match unsafe { fork() } {
        Err(e) => Err(RelayError {
            action: "fork",
            source: e.into(),
        }),
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => {
            let code = match crate::caps::drop_all(uid, gid).map(|()| nix::sys::prctl::set_no_new_privs()) {
                Ok(Ok(())) => {
                    relay(listener);
                    0
                }
                _ => 1,
            };
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(code) }
        }
    }
}

fn relay(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        // A step at its process limit gets no thread: the connection closes.
        let _ = std::thread::Builder::new().spawn(move || {
            if let Ok(host) = UnixStream::connect(SOCKET_IN_SANDBOX) {
                splice(tcp, host);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Vec<String> {
        vec!["index.example:443".into(), "127.0.0.1:8080".into(), "[::1]:81".into()]
    }

    /// Proves the allow-list syntax: host:port, lower-cased, bracketed IPv6.
    #[test]
    fn authorities_are_normalised_and_garbage_is_refused() {
        assert_eq!(parse_authority("Index.Example:443").unwrap(), "index.example:443");
        assert_eq!(parse_authority("[::1]:81").unwrap(), "[::1]:81");
        for bad in [
            "index.example",
            "x:0",
            "x:65536",
            ":80",
            "a b:80",
            "u@h:80",
            "h/p:80",
            "[]:80",
        ] {
            assert!(parse_authority(bad).is_err(), "{bad} was accepted");
        }
    }

    /// Proves CONNECT reaches only allowed entries and everything else is 403.
    #[test]
    fn connect_is_tunnelled_only_to_allowed_entries() {
        let d = decide(b"CONNECT INDEX.example:443 HTTP/1.1\r\nHost: x\r\n\r\n", &allow());
        assert_eq!(d, Decision::Tunnel("index.example:443".into()));
        match decide(b"CONNECT index.example:22 HTTP/1.1\r\n\r\n", &allow()) {
            Decision::Refuse { status: 403, reason } => {
                assert!(
                    reason.contains("index.example:22") && reason.contains("index.example:443"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    /// Proves a plain GET is rewritten to origin form, loses proxy and
    /// connection headers, never carries URL credentials into a message,
    /// and that other methods and schemes are refused.
    #[test]
    fn plain_http_gets_are_rewritten_and_other_requests_refused() {
        let head =
            b"GET http://user:secret@127.0.0.1:8080/simple/pkg/?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n";
        match decide(head, &allow()) {
            Decision::Forward { target, head } => {
                assert_eq!(target, "127.0.0.1:8080");
                assert_eq!(
                    String::from_utf8(head).unwrap(),
                    "GET /simple/pkg/?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                );
            }
            other => panic!("{other:?}"),
        }
        match decide(b"GET http://user:secret@127.0.0.1:9/ HTTP/1.1\r\n\r\n", &allow()) {
            Decision::Refuse { status: 403, reason } => assert!(!reason.contains("secret"), "{reason}"),
            other => panic!("{other:?}"),
        }
        for refused in [
            &b"POST http://127.0.0.1:8080/ HTTP/1.1\r\n\r\n"[..],
            b"GET https://index.example:443/ HTTP/1.1\r\n\r\n",
            b"GET /relative HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(decide(refused, &allow()), Decision::Refuse { status: 403, .. }),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        assert!(matches!(
            decide(b"GET http://[::1]:81 HTTP/1.1\r\n\r\n", &allow()),
            Decision::Forward { .. }
        ));
        assert!(matches!(
            decide(b"garbage\r\n\r\n", &allow()),
            Decision::Refuse { status: 400, .. }
        ));
    }
}
