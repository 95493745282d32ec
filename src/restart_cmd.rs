//! `clace restart ACTOR`: asks the running daemon, over its loopback admin
//! endpoint, to restart one actor. The daemon is found through
//! `$CL_HOME/run/clace.addr` (its HTTP URL; the admin endpoint answers
//! loopback clients only).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clace_actors::health::ActorName;

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
    let Some(addr) = text.lines().find_map(http_addr) else {
        eprintln!(
            "clace: {} lists no HTTP listener; restart needs the daemon's HTTP port (on loopback)",
            addr_file.display()
        );
        return ExitCode::from(1);
    };
    match post(addr, &format!("/_clace/actors/{}/restart", actor.as_str())) {
        Ok((202, _)) => {
            println!("restarting {}", actor.as_str());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("clace: the daemon answered {status}: {}", body.trim());
            ExitCode::from(if status == 404 { 2 } else { 1 })
        }
        Err(e) => {
            eprintln!("clace: no daemon answering at {addr}: {e}");
            ExitCode::from(1)
        }
    }
}

/// `http://HOST:PORT` -> a loopback address to reach it (an any-address
/// bind is reached on 127.0.0.1).
fn http_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix("http://")?;
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "::1",
        h => h.trim_start_matches('[').trim_end_matches(']'),
    };
    (host, port).to_socket_addrs().ok()?.next()
}

fn post(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
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
