//! A local HTTP server that misbehaves on purpose, for fetch-error tests.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tiny HTTP/1.1 server on loopback whose reply to each request is decided
/// by `respond(path, attempt)` (`attempt` counts from 1 per path); it counts
/// the requests per path. Stopped on drop, also mid-stall.
pub struct HttpServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the server does with one request.
pub enum Reply {
    Ok(Vec<u8>),
    /// The status with an empty body.
    Status(u16),
    /// Announces `len` bytes, sends `body`, closes.
    Truncated {
        len: usize,
        body: Vec<u8>,
    },
    /// Sends headers, then stalls for this long before the body.
    Stall {
        body: Vec<u8>,
        wait: Duration,
    },
}

impl HttpServer {
    pub fn start(respond: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let respond = Arc::new(respond);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        let (h, respond, s) = (h.clone(), respond.clone(), s.clone());
                        std::thread::spawn(move || serve(conn, &h, &*respond, &s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        HttpServer {
            url: format!("http://{addr}"),
            hits,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Requests for any path so far.
    pub fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

/// Answers one connection: reads the request head, counts it, replies.
fn serve(
    mut conn: TcpStream,
    hits: &Mutex<HashMap<String, usize>>,
    respond: &(impl Fn(&str, usize) -> Reply + ?Sized),
    stop: &AtomicBool,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let attempt = {
        let mut m = hits.lock().unwrap();
        let c = m.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let write = |conn: &mut TcpStream, status: u16, len: usize, body: &[u8]| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        );
        let _ = conn.write_all(body);
    };
    match respond(&path, attempt) {
        Reply::Ok(body) => write(&mut conn, 200, body.len(), &body),
        Reply::Status(code) => write(&mut conn, code, 0, b""),
        Reply::Truncated { len, body } => write(&mut conn, 200, len, &body),
        Reply::Stall { body, wait } => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let start = Instant::now();
            while start.elapsed() < wait && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = conn.write_all(&body);
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
