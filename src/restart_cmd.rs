//! `clace restart ACTOR`: asks the running daemon, over its admin endpoint,
//! to restart one actor. The daemon is found through `$CL_HOME/run/clace.addr`
//! (its URLs, one a line): the HTTP listener if there is one, else the HTTPS
//! one (its certificate is not checked: this talks to our own daemon on this
//! machine). An any-address listener is reached on loopback; one bound to a
//! specific address is reached there, which the daemon accepts as this host.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clace_actors::certs::resolver::AcceptAnyCert;
use clace_actors::health::ActorName;
use rustls::pki_types::ServerName;

use crate::config::Loaded;

pub fn run(loaded: &Loaded, actor: &str) -> ExitCode {
    let Some(actor) = ActorName::parse(actor) else {
        eprintln!(
            "clace: unknown actor {actor:?}; accepted: http, https, certstore, acme, watcher"
        );
        return ExitCode::from(2);
    };
    let addr_file = loaded.home.join("run").join("clace.addr");
    let Ok(text) = std::fs::read_to_string(&addr_file) else {
        eprintln!(
            "clace: no daemon running ({} not found)",
            addr_file.display()
        );
        return ExitCode::from(1);
    };
    let target = text
        .lines()
        .find_map(|l| endpoint(l, "http://").map(|a| (a, false)))
        .or_else(|| {
            text.lines()
                .find_map(|l| endpoint(l, "https://").map(|a| (a, true)))
        });
    let Some((addr, tls)) = target else {
        eprintln!(
            "clace: no daemon running ({} lists no listener)",
            addr_file.display()
        );
        return ExitCode::from(1);
    };
    match post(
        addr,
        tls,
        &format!("/_clace/actors/{}/restart", actor.as_str()),
    ) {
        Ok((202, _)) => {
            println!("restarting {}", actor.as_str());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("clace: the daemon answered {status}: {}", body.trim());
            ExitCode::from(if status == 404 { 2 } else { 1 })
        }
        Err(e) => {
            eprintln!("clace: no daemon running at {addr}: {e}");
            ExitCode::from(1)
        }
    }
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

fn post(addr: SocketAddr, tls: bool, path: &str) -> std::io::Result<(u16, String)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut response = Vec::new();
    if tls {
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
        let mut tls = rustls::StreamOwned::new(conn, stream);
        tls.write_all(request.as_bytes())?;
        // A peer that closes without close_notify still sent the answer.
        match tls.read_to_end(&mut response) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
            Err(e) => return Err(e),
        }
    } else {
        let mut stream = stream;
        stream.write_all(request.as_bytes())?;
        stream.read_to_end(&mut response)?;
    }
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}
