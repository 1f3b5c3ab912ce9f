//! Loopback ports and waiting with a deadline.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now. Another process may take it
/// before the caller binds it; servers that can tell retry on a new port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls until something accepts connections on `addr`; panics after `within`.
pub fn wait_for_port(addr: SocketAddr, within: Duration) {
    let listening = wait_until(within, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    assert!(listening, "nothing listened on {addr} within {within:?}");
}

/// Polls `done` until it holds or `within` passes; true if it held.
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
