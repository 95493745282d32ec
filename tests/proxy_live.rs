//! The proxy against live upstreams that the tests drive step by step
//! (issue 9, "How it is proven"): WebSocket through both listeners,
//! bodies that stream slowly either way, a client that goes away, upstream
//! TLS from a test CA, pooled connections the upstream closes, the exact
//! headers an upstream receives, and the limits of a route.
//!
//! Each test starts its own upstream(s) on 127.0.0.1:0 and its own daemon
//! on port 0; every wait has a deadline, and every thread a test starts
//! ends with it.

mod exchange;
mod framing;
mod pool;
mod streaming;
mod tls;
mod websocket;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::util::http::IO_TIMEOUT;
use crate::util::{config_with, toml_str, Clace, Daemon};

/// A daemon with one `proxy` route on `/` to `upstream_url`; `extra` is
/// added to the route (`idle_timeout = 1\n`, ...).
fn proxy_route(upstream_url: &str, extra: &str) -> (Clace, Daemon) {
    let clace = Clace::new();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/\"\nproxy = {}\n{extra}",
        toml_str(upstream_url)
    )));
    let daemon = clace.serve();
    (clace, daemon)
}

/// A plain TCP connection to `addr` with the usual I/O timeouts.
fn connect(addr: SocketAddr) -> TcpStream {
    let sock = crate::util::http::connect(addr).expect("connect");
    let _ = sock.set_nodelay(true);
    sock
}

/// Reads from `sock` into `buf` until `buf` contains `needle` or `timeout`
/// passes (or the peer closes); returns whether it was seen.
fn read_until_contains(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    needle: &[u8],
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let old = sock.read_timeout().ok().flatten();
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let mut chunk = [0u8; 16 * 1024];
    let found = loop {
        if contains(buf, needle) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        match sock.read(&mut chunk) {
            Ok(0) => break contains(buf, needle),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break contains(buf, needle),
        }
    };
    let _ = sock.set_read_timeout(old);
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads a request head (up to the blank line) byte by byte, so nothing
/// after it is consumed; `None` at a clean EOF before any byte.
fn read_head(sock: &mut impl Read) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match sock.read(&mut byte)? {
            0 if head.is_empty() => return Ok(None),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a request head",
                ))
            }
            _ => head.push(byte[0]),
        }
        if head.ends_with(b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
    }
}

/// The value of a header in a head read by [`read_head`] (any case).
fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The body after a head read by [`read_head`]: its `Content-Length`
/// bytes (none without one).
fn read_length_body(sock: &mut impl Read, head: &str) -> io::Result<Vec<u8>> {
    let length: usize = head_header(head, "content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    sock.read_exact(&mut body)?;
    Ok(body)
}

/// The method of a head read by [`read_head`].
fn head_method(head: &str) -> &str {
    head.split(' ').next().unwrap_or("")
}

type ConnHandler = dyn Fn(usize, TcpStream) + Send + Sync;

/// An accepted socket (to shut down) and the thread that serves it.
type Conn = (TcpStream, JoinHandle<()>);

/// A raw upstream on 127.0.0.1: each accepted connection (numbered from 0)
/// goes to `handler` on its own thread, and is closed when the handler
/// returns. Dropping it stops the accept loop,
/// shuts every accepted socket down (so a handler blocked on it returns)
/// and joins every thread.
struct RawUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<Conn>>>,
    accepted: Arc<AtomicUsize>,
}

impl RawUpstream {
    fn start(handler: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler: Arc<ConnHandler> = Arc::new(handler);
        let accept = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            let accepted = Arc::clone(&accepted);
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
                    let _ = conn.set_nodelay(true);
                    let (Ok(keep), Ok(closer)) = (conn.try_clone(), conn.try_clone()) else {
                        continue;
                    };
                    let id = accepted.fetch_add(1, Ordering::SeqCst);
                    let handler = Arc::clone(&handler);
                    let handle = thread::spawn(move || {
                        handler(id, conn);
                        // The handler is done with it: the peer sees the end.
                        let _ = closer.shutdown(Shutdown::Both);
                    });
                    conns
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((keep, handle));
                }
            })
        };
        RawUpstream {
            addr,
            stop,
            accept: Some(accept),
            conns,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections were accepted so far.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        crate::util::ws::stop_accept_loop(&self.stop, self.addr, &mut self.accept);
        let conns: Vec<_> = self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for (sock, handle) in conns {
            let _ = sock.shutdown(Shutdown::Both);
            let _ = handle.join();
        }
    }
}

/// A value shared between a test and its upstream's threads.
#[derive(Clone, Default)]
struct Shared<T>(Arc<Mutex<T>>);

impl<T: Clone> Shared<T> {
    fn get(&self) -> T {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Writes all of `bytes` and flushes.
fn write_now(sock: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    sock.write_all(bytes)?;
    sock.flush()
}
