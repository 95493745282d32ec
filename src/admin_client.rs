//! Talking to the running daemon's `/_clace/` endpoints, for `clace restart`
//! and `clace certs --live`: first over the admin socket
//! (`$CL_HOME/run/clace.sock`, which answers whatever `[admin]
//! on_listeners` says), then over the URLs in `$CL_HOME/run/clace.addr`:
//! the HTTP listener if there is one, else the HTTPS one (its certificate is
//! not checked: this talks to our own daemon on this machine). An
//! any-address listener is reached on loopback; one bound to a specific
//! address is reached there, which the daemon accepts as this host.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clace_actors::certs::resolver::AcceptAnyCert;
use rustls::pki_types::ServerName;

/// How long connecting, sending and reading may each take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends `METHOD path` to the daemon whose home is `home`. The error says
/// that no daemon could be reached, and where it was looked for.
pub fn request(home: &Path, method: &str, path: &str) -> Result<Answer, String> {
    let socket = home.join("run").join("clace.sock");
    let mut why = Vec::new();
    match UnixStream::connect(&socket) {
        Ok(stream) => {
            let result = stream
                .set_read_timeout(Some(TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
                .and_then(|()| exchange(stream, method, path, "localhost"));
            match result {
                Ok(answer) => return Ok(answer),
                Err(e) => why.push(format!("{}: {e}", socket.display())),
            }
        }
        Err(e) => why.push(format!("{}: {e}", socket.display())),
    }
    let addr_file = home.join("run").join("clace.addr");
    let text = match std::fs::read_to_string(&addr_file) {
        Ok(text) => text,
        Err(e) => {
            why.push(format!("{}: {e}", addr_file.display()));
            return Err(why.join("; "));
        }
    };
    let target = text
        .lines()
        .find_map(|l| endpoint(l, "http://").map(|a| (a, false)))
        .or_else(|| {
            text.lines()
                .find_map(|l| endpoint(l, "https://").map(|a| (a, true)))
        });
    let Some((addr, tls)) = target else {
        why.push(format!("{} lists no listener", addr_file.display()));
        return Err(why.join("; "));
    };
    tcp(addr, tls, method, path).map_err(|e| {
        why.push(format!("{addr}: {e}"));
        why.join("; ")
    })
}

/// `SCHEME://HOST:PORT` -> the address to reach it from this machine.
fn endpoint(line: &str, scheme: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix(scheme)?;
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" | "::" => "::1",
        h => h.trim_start_matches('[').trim_end_matches(']'),
    };
    (host, port).to_socket_addrs().ok()?.next()
}

fn tcp(addr: SocketAddr, tls: bool, method: &str, path: &str) -> std::io::Result<Answer> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let host = addr.to_string();
    if !tls {
        return exchange(stream, method, path, &host);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAnyCert::new()))
    .with_no_client_auth();
    let name = ServerName::from(addr.ip());
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    exchange(rustls::StreamOwned::new(conn, stream), method, path, &host)
}

/// One HTTP/1.1 request with `Connection: close`; the response is read to
/// the end of the connection.
fn exchange(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    host: &str,
) -> std::io::Result<Answer> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    // A TLS peer that closes without close_notify still sent the answer.
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    parse(&response).ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

/// Status and body of a whole response (the body framed by the end of the
/// connection, or chunked).
fn parse(response: &[u8]) -> Option<Answer> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let mut body = &response[split + 4..];
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let mut decoded = Vec::new();
    if chunked {
        loop {
            let eol = body.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&body[..eol]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            body = &body[eol + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(body.get(..size)?);
            body = body.get(size + 2..)?;
        }
    } else {
        decoded.extend_from_slice(body);
    }
    Some(Answer {
        status,
        body: String::from_utf8_lossy(&decoded).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let a = parse(b"HTTP/1.1 202 Accepted\r\ncontent-length: 3\r\n\r\nok\n").unwrap();
        assert_eq!((a.status, a.body.as_str()), (202, "ok\n"));
        let a = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "[1,2]"));
        assert!(parse(b"garbage").is_none());
    }

    #[test]
    fn endpoints_of_any_address_listeners_are_loopback() {
        assert_eq!(
            endpoint("https://0.0.0.0:8443", "https://"),
            Some("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(endpoint("http://0.0.0.0:8443", "https://"), None);
    }
}
