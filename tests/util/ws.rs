//! WebSocket helpers for the proxy tests: an echo upstream (a thread per
//! connection, tungstenite on a plain `TcpStream`) that records what
//! happened on each connection, and clients over TCP or TLS.
//!
//! The echo upstream answers every text or binary message with the same
//! message, answers pings with pongs (tungstenite does), and on the text
//! message [`CLOSE_ME`] starts the closing handshake itself; on [`DROP_ME`]
//! it drops the connection without one. Every thread it
//! starts ends when it is dropped (connections are polled for a stop flag).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};
pub use tungstenite::protocol::frame::coding::CloseCode;
pub use tungstenite::protocol::CloseFrame;
pub use tungstenite::{Error, Message, WebSocket};

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::handshake::HandshakeError;

/// The text message on which the echo upstream closes the connection
/// (close code 1000, reason [`UPSTREAM_BYE`]).
pub const CLOSE_ME: &str = "please close";
/// The reason of the upstream's close frame.
pub const UPSTREAM_BYE: &str = "bye from upstream";
/// The text message on which the echo upstream drops the TCP connection
/// without a close frame.
pub const DROP_ME: &str = "please vanish";

/// How often an upstream connection looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What happened on one upstream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake was accepted: the request target and headers as the
    /// upstream received them.
    Opened {
        target: String,
        headers: Vec<(String, String)>,
    },
    /// A text or binary message arrived (and was echoed).
    Data { text: bool, len: usize },
    /// A ping arrived (and was answered).
    Ping(Vec<u8>),
    /// The client's close frame arrived, with its code.
    ClientClose(Option<u16>),
    /// The upstream sent its own close frame.
    SentClose,
    /// The connection is over: `"closed"` after a clean closing handshake,
    /// else the error that ended it.
    Ended(String),
}

/// One connection's events, tagged with its number (from 0, in accept
/// order).
pub type Tagged = (usize, Event);

/// A running echo upstream on 127.0.0.1.
pub struct WsUpstream {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<Tagged>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl WsUpstream {
    pub fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind WebSocket upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let events = Arc::clone(&events);
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            let counter = AtomicUsize::new(0);
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let id = counter.fetch_add(1, Ordering::SeqCst);
                    let events = Arc::clone(&events);
                    let stop = Arc::clone(&stop);
                    let handle = thread::spawn(move || echo(id, conn, &events, &stop));
                    conns
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(handle);
                }
            })
        };
        WsUpstream {
            addr,
            events,
            stop,
            accept: Some(accept),
            conns,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for a `proxy =` value.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Tagged> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The events of connection `id`.
    pub fn events_of(&self, id: usize) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, e)| e)
            .collect()
    }

    /// Whether connection `id` has ended.
    pub fn ended(&self, id: usize) -> bool {
        self.events_of(id)
            .iter()
            .any(|e| matches!(e, Event::Ended(_)))
    }

    /// The headers connection `id`'s handshake arrived with.
    pub fn opened_headers(&self, id: usize) -> Option<Vec<(String, String)>> {
        self.events_of(id).into_iter().find_map(|e| match e {
            Event::Opened { headers, .. } => Some(headers),
            _ => None,
        })
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        stop_accept_loop(&self.stop, self.addr, &mut self.accept);
        let conns: Vec<_> = self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for conn in conns {
            let _ = conn.join();
        }
    }
}

fn echo(id: usize, conn: TcpStream, events: &Mutex<Vec<Tagged>>, stop: &AtomicBool) {
    let record = |e: Event| {
        events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, e));
    };
    if stop.load(Ordering::SeqCst) {
        return;
    }
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(POLL));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let mut opened = None;
    // The signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        opened = Some(Event::Opened {
            target: req.uri().to_string(),
            headers,
        });
        Ok(resp)
    };
    // The handshake may meet the read timeout: resume it until done.
    let mut result = tungstenite::accept_hdr(conn, callback);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        match result {
            Ok(ws) => break ws,
            Err(HandshakeError::Interrupted(mid))
                if Instant::now() < deadline && !stop.load(Ordering::SeqCst) =>
            {
                result = mid.handshake();
            }
            Err(e) => {
                record(Event::Ended(format!("handshake: {e}")));
                return;
            }
        }
    };
    if let Some(opened) = opened {
        record(opened);
    }
    let mut closing = false;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) if t.as_str() == CLOSE_ME => {
                closing = true;
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: UPSTREAM_BYE.into(),
                };
                record(Event::SentClose);
                if let Err(e) = ws.close(Some(frame)) {
                    if !would_block(&e) {
                        record(Event::Ended(format!("sending close: {e}")));
                        return;
                    }
                }
            }
            Ok(Message::Text(t)) if t.as_str() == DROP_ME => {
                let _ = ws.get_ref().shutdown(std::net::Shutdown::Both);
                record(Event::Ended("dropped".into()));
                return;
            }
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                record(Event::Data {
                    text: msg.is_text(),
                    len: msg.len(),
                });
                if let Err(e) = send_all(&mut ws, msg, stop) {
                    record(Event::Ended(format!("echo: {e}")));
                    return;
                }
            }
            Ok(Message::Ping(p)) => record(Event::Ping(p.to_vec())),
            Ok(Message::Close(frame)) => {
                if closing {
                    // The answer to our own close: the handshake is done.
                    continue;
                }
                record(Event::ClientClose(frame.map(|f| u16::from(f.code))));
            }
            Ok(_) => {}
            Err(Error::ConnectionClosed) => {
                record(Event::Ended("closed".into()));
                return;
            }
            Err(e) if would_block(&e) => {
                if stop.load(Ordering::SeqCst) {
                    record(Event::Ended("stopped".into()));
                    return;
                }
            }
            Err(e) => {
                record(Event::Ended(e.to_string()));
                return;
            }
        }
    }
}

/// Sends a message and flushes it, riding out the read timeout's
/// `WouldBlock` (tungstenite keeps what it could not write yet).
fn send_all<S: Read + Write>(
    ws: &mut WebSocket<S>,
    msg: Message,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let mut result = ws.send(msg);
    loop {
        match result {
            Ok(()) => return Ok(()),
            Err(e) if would_block(&e) && !stop.load(Ordering::SeqCst) => result = ws.flush(),
            Err(e) => return Err(e),
        }
    }
}

/// A read or write that met the socket's timeout.
pub fn would_block(e: &Error) -> bool {
    matches!(e, Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// How long a client read may block before a test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS stream to the daemon's HTTPS listener.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Opens a WebSocket to `ws://HOST/path` over plain TCP to `addr` (Host is
/// `addr`). Panics if the handshake fails.
pub fn connect(addr: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let sock = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).expect("connect to clace");
    sock.set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("read timeout");
    sock.set_write_timeout(Some(CLIENT_TIMEOUT))
        .expect("write timeout");
    let _ = sock.set_nodelay(true);
    handshake(&format!("ws://{addr}{path}"), sock)
}

/// Opens a WebSocket over TLS to `addr` (the daemon's HTTPS listener),
/// with SNI and Host `sni`; the server's certificate is not checked.
pub fn connect_tls(addr: SocketAddr, sni: &str, path: &str) -> WebSocket<TlsStream> {
    let tls = crate::tls_util::handshake(addr, Some(sni))
        .unwrap_or_else(|e| panic!("TLS handshake with clace: {e}"));
    let stream = tls.stream;
    stream
        .sock
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("read timeout");
    stream
        .sock
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .expect("write timeout");
    handshake(&format!("ws://{sni}{path}"), stream)
}

fn handshake<S: Read + Write>(url: &str, stream: S) -> WebSocket<S> {
    match tungstenite::client(url, stream) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101, "the handshake switches");
            ws
        }
        Err(HandshakeError::Failure(e)) => panic!("WebSocket handshake for {url}: {e}"),
        Err(HandshakeError::Interrupted(_)) => {
            panic!("WebSocket handshake for {url}: timed out")
        }
    }
}

/// Sends a message (panics on failure).
pub fn send<S: Read + Write>(ws: &mut WebSocket<S>, msg: Message) {
    ws.send(msg).expect("send a WebSocket message");
}

/// The next message (panics on an error or a timeout).
pub fn read<S: Read + Write>(ws: &mut WebSocket<S>) -> Message {
    ws.read().expect("read a WebSocket message")
}

/// How a client's connection ended.
#[derive(Debug)]
pub struct Ending {
    /// The close frame received from the other side, if any.
    pub close: Option<Option<CloseFrame>>,
    /// The error that ended the reads (`ConnectionClosed` after a clean
    /// closing handshake).
    pub error: String,
    /// When the connection was seen to end.
    pub at: Instant,
}

/// Reads until the connection ends (or `timeout` passes: `None`);
/// messages on the way are dropped.
pub fn read_to_end<S: Read + Write>(ws: &mut WebSocket<S>, timeout: Duration) -> Option<Ending> {
    let deadline = Instant::now() + timeout;
    let mut close = None;
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => close = Some(frame),
            Ok(_) => {}
            Err(e) if would_block(&e) => {
                if Instant::now() >= deadline {
                    return None;
                }
            }
            Err(e) => {
                return Some(Ending {
                    close,
                    error: e.to_string(),
                    at: Instant::now(),
                })
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Stops a test server's accept loop: sets its flag, wakes it with one
/// connection so it sees the flag and closes its socket, and joins it.
pub fn stop_accept_loop(stop: &AtomicBool, addr: SocketAddr, accept: &mut Option<JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    if let Some(accept) = accept.take() {
        let _ = accept.join();
    }
}
