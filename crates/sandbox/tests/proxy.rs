//! The proxy network mode: a step reaches the `host:port` entries it is
//! allowed through the HTTP(S) proxy inside its sandbox, and nothing else:
//! not a second server on the same host, not another method, and not the
//! allowed server itself without the proxy. Runs with the in-process caller
//! and with an unprivileged one (uid 65534 when the suite runs as root).

mod support;

use farm_sandbox::{Network, PROXY_ADDR};
use farm_testkit::{HttpServer, Reply};
use support::*;

/// Prints `name=result` for each way of reaching the two servers.
const CLIENT_PY: &str = r#"
import errno, http.client, os, socket, sys, urllib.error, urllib.request
allowed, other = sys.argv[1], sys.argv[2]
proxy_host, proxy_port = sys.argv[3].rsplit(":", 1)
out = ["env=" + os.environ.get("HTTPS_PROXY", "unset") + "," + os.environ.get("http_proxy", "unset")]

def get(url, method="GET"):
    req = urllib.request.Request(url, method=method, data=b"x" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return "ok:" + r.read().decode()
    except urllib.error.HTTPError as e:
        return "http%d:%s" % (e.code, e.read().decode().strip())
    except Exception as e:
        return "error:" + type(e).__name__

def tunnel(target, path):
    host, port = target.rsplit(":", 1)
    c = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=20)
    c.set_tunnel(host, int(port))
    try:
        c.request("GET", path)
        return "ok:" + c.getresponse().read().decode()
    except OSError as e:
        return "error:" + str(e)

def direct(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        return "connected"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))

out.append("get-allowed=" + get("http://%s/allowed" % allowed))
out.append("get-other=" + get("http://%s/other" % other))
out.append("connect-allowed=" + tunnel(allowed, "/tunnel"))
out.append("connect-other=" + tunnel(other, "/tunnel-other"))
out.append("post-allowed=" + get("http://%s/post" % allowed, "POST"))
out.append("direct-allowed=" + direct(allowed))
out.append("direct-other=" + direct(other))
print("\n".join(out))
"#;

fn server(body: &'static str) -> (HttpServer, String) {
    let s = HttpServer::start(move |_, _| Reply::Ok(body.as_bytes().to_vec()));
    let authority = s.url.trim_start_matches("http://").to_string();
    (s, authority)
}

fn proxied(caller: Caller) {
    let (allowed, allowed_at) = server("from-the-allowed-server");
    let (other, other_at) = server("from-the-other-server");
    let mut s = step(vec![
        "python3".into(),
        "-c".into(),
        CLIENT_PY.into(),
        allowed_at.clone(),
        other_at.clone(),
        PROXY_ADDR.into(),
    ]);
    s.spec.network = Network::Proxy {
        allow: vec![allowed_at.clone()],
    };
    let out = run_as(caller, &s.spec, &[]).unwrap_or_else(|e| panic!("sandbox failed: {e}"));
    let log = log_of(&out);
    assert_eq!(out.status, 0, "{log}");
    let refused = format!("http403:farm: this step may reach only {allowed_at}; `{other_at}` is not one of them");
    let expected = [
        format!("env=http://{PROXY_ADDR},http://{PROXY_ADDR}"),
        "get-allowed=ok:from-the-allowed-server".into(),
        format!("get-other={refused}"),
        "connect-allowed=ok:from-the-allowed-server".into(),
        "connect-other=error:Tunnel connection failed: 403 Forbidden".into(),
        "post-allowed=http403:farm: the step's proxy relays only CONNECT, and GET or HEAD of http:// URLs; `POST` is refused".into(),
        "direct-allowed=ECONNREFUSED".into(),
        "direct-other=ECONNREFUSED".into(),
    ];
    assert_eq!(log.lines().collect::<Vec<_>>(), expected, "{log}");
    assert_eq!(
        (allowed.hits("/allowed"), allowed.hits("/tunnel"), allowed.hits("/post")),
        (1, 1, 0)
    );
    assert_eq!(other.total_hits(), 0, "the non-allowed server was reached");
}

/// Proves a proxied step fetches from the allowed loopback server by GET
/// and through a CONNECT tunnel, and that a second server, a POST, and
/// direct connections (even to the allowed server) all fail.
#[test]
fn a_proxied_step_reaches_only_the_allowed_server() {
    proxied(Caller::InProcess);
}

/// The same with an unprivileged caller, who runs the host-side proxy as itself.
#[test]
fn a_proxied_step_reaches_only_the_allowed_server_for_an_unprivileged_caller() {
    proxied(Caller::Unprivileged);
}

/// Proves the proxy is the only way out of a proxied step: no DNS, no
/// interface but `lo`, and no route to a non-loopback address.
#[test]
fn a_proxied_step_has_no_dns_and_only_loopback() {
    let mut s = step(vec![
        "python3".into(),
        "-c".into(),
        r#"
import errno, socket
print("resolv.conf=" + repr(open("/etc/resolv.conf").read()))
print("interfaces=" + ",".join(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
try:
    socket.getaddrinfo("index.example", 443)
    print("dns=resolved")
except socket.gaierror:
    print("dns=failed")
try:
    socket.create_connection(("192.0.2.1", 80), timeout=5)
    print("route=connected")
except OSError as e:
    print("route=" + errno.errorcode[e.errno])
"#
        .into(),
    ]);
    s.spec.network = Network::Proxy {
        allow: vec!["index.example:443".into()],
    };
    let (out, log) = run(&s.spec);
    assert_eq!(out.status, 0, "{log}");
    assert_eq!(
        log, "resolv.conf=''\ninterfaces=lo\ndns=failed\nroute=ENETUNREACH\n",
        "{log}"
    );
}

/// Proves an allow-list entry that is not `host:port` is refused before
/// anything starts, naming the entry.
#[test]
fn a_malformed_allow_entry_is_refused_with_its_index() {
    let mut s = shell("true");
    s.spec.network = Network::Proxy {
        allow: vec!["127.0.0.1:80".into(), "https://index.example/simple".into()],
    };
    let e = run_as(Caller::InProcess, &s.spec, &[]).unwrap_err();
    assert!(
        e.contains("network.allow[1]") && e.contains("host:port") && e.contains("index.example/simple"),
        "{e}"
    );
}
