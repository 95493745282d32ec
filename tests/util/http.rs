//! A deliberately small HTTP/1.1 client over `std::net::TcpStream`.
//!
//! It sends the request target exactly as given (no normalisation, no
//! percent-decoding), always with `Connection: close`, and reads the status,
//! the headers and a body framed by `Content-Length`, `chunked` or the end of
//! the connection.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a read or a write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// A request to build: method, raw target, extra headers, body.
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    chunked: bool,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: None,
            chunked: false,
        }
    }

    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A body sent with `Content-Length`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// A body sent with `Transfer-Encoding: chunked` (in a few chunks).
    pub fn chunked_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self.chunked = true;
        self
    }

    /// The bytes on the wire. `Host` defaults to the address connected to;
    /// `Connection: close` is added unless a `Connection` header is given.
    pub fn to_bytes(&self, addr: SocketAddr) -> Vec<u8> {
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !has("host") {
            head.push_str(&format!("Host: {addr}\r\n"));
        }
        if !has("connection") {
            head.push_str("Connection: close\r\n");
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let mut out;
        match &self.body {
            None => {
                head.push_str("\r\n");
                out = head.into_bytes();
            }
            Some(body) if self.chunked => {
                head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                out = head.into_bytes();
                for chunk in body.chunks(7919) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Some(body) => {
                head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                out = head.into_bytes();
                out.extend_from_slice(body);
            }
        }
        out
    }

    /// Sends the request and reads the response.
    pub fn try_send(&self, addr: SocketAddr) -> io::Result<Response> {
        let head_only = self.method.eq_ignore_ascii_case("HEAD");
        send_raw(addr, &self.to_bytes(addr), head_only)
    }

    /// Sends the request and reads the response; panics on an I/O error.
    pub fn send(&self, addr: SocketAddr) -> Response {
        self.try_send(addr).unwrap_or_else(|e| {
            panic!(
                "{} {} to {addr} failed: {e}",
                self.method,
                self.target.chars().take(200).collect::<String>()
            )
        })
    }
}

/// `GET target` with the default headers.
pub fn get(addr: SocketAddr, target: &str) -> Response {
    Request::get(target).send(addr)
}

/// Connects with the I/O timeouts set.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Writes `bytes` as they are and reads one response. The write happens on
/// its own thread, so a server that answers (and closes) before reading the
/// whole request (431, 413) is still heard.
pub fn send_raw(addr: SocketAddr, bytes: &[u8], head_only: bool) -> io::Result<Response> {
    let stream = connect(addr)?;
    let mut writer = stream.try_clone()?;
    let bytes = bytes.to_vec();
    let write = std::thread::spawn(move || writer.write_all(&bytes));
    let response = read_response(stream, head_only);
    let written = write.join().expect("writer thread");
    match (response, written) {
        (Ok(r), _) => Ok(r),
        (Err(e), Err(w)) => Err(io::Error::new(
            e.kind(),
            format!("{e} (writing the request failed too: {w})"),
        )),
        (Err(e), Ok(())) => Err(e),
    }
}

/// Reads one response from `stream`.
pub fn read_response(stream: TcpStream, head_only: bool) -> io::Result<Response> {
    read_response_from(BufReader::new(stream), head_only)
}

/// Reads one response from any buffered stream: a TCP one, or a TLS one
/// whose peer may close without `close_notify` (not the tests' concern).
pub fn read_response_from(mut reader: impl BufRead, head_only: bool) -> io::Result<Response> {
    let mut status;
    let mut headers;
    loop {
        let status_line = read_line(&mut reader)?;
        if status_line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a status line",
            ));
        }
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("not an HTTP/1 status line: {status_line:?}")));
        }
        status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        headers = read_headers(&mut reader)?;
        // Interim responses (100 Continue) are followed by the real one.
        if !(100..200).contains(&status) || status == 101 {
            break;
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    if !no_body {
        if find("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
            body = read_chunked(&mut reader)?;
        } else if let Some(len) = find("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        } else {
            // Framed by the end of the connection.
            match reader.read_to_end(&mut body) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body (trailers are read and dropped).
/// Reads header lines up to the blank line that ends them; a line without
/// a colon is an error.
pub fn read_headers(reader: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(headers);
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
}

pub fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let crlf = read_line(reader)?;
        if !crlf.is_empty() {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

/// One line without its CRLF; an empty string at EOF or for an empty line
/// (EOF inside a line is an error).
pub fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = reader.read_until(b'\n', &mut buf)?;
    if n > 0 && !buf.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a line",
        ));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| bad("line is not UTF-8"))
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}
