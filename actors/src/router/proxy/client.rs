//! The upstream side of the proxy: where an upstream is, connecting to it
//! (TCP, then TLS for `https://`), and the pool of kept-alive connections
//! of one worker.
//!
//! Why our own HTTP/1.1 client and not hyper's or awc: the exchange runs
//! inside the request's own task (no connection task to hand each request
//! to and each response back from, no pool behind a lock), the client's
//! header bytes are written upstream as they are and the upstream's are
//! passed on as slices of what was read (hyper speaks `http` 1 and
//! actix-web `http` 0.2: every header was copied twice), and a response
//! that arrived whole with its head is answered without a body stream.
//! That halved the proxy's own CPU per request (README "Measured").
//! Heads are parsed by `httparse` (hyper's parser); bodies are framed in
//! [`super::wire`].
//!
//! Pool: per worker and per upstream (URL, CA file and server name), last
//! in first out, at most 64 idle connections, each kept 90 s. An idle
//! connection the upstream closed (or sent something unasked on) meanwhile
//! is never used again: the worker's reactor has seen it readable (see
//! [`Conn::is_open`]); a sweep every 10 s closes the expired and the
//! closed ones.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::conn::{Conn, Io};
use crate::settings::ProxyTarget;

/// How long an idle upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream and worker.
const POOL_MAX_IDLE: usize = 64;
/// How often idle connections are looked over.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Where an upstream is, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// Host name or IP address (without brackets).
    pub host: String,
    pub port: u16,
    /// `host[:port]` as the URL has it: messages, and `Host` for a client
    /// that sent none.
    pub authority: String,
    /// The URL's path, prepended to every request's (no trailing `/`).
    pub base: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/base]` or `https://...`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = || format!("bad upstream URL {url}");
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(bad()),
        };
        let (authority, base) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || base.contains(['?', '#']) {
            return Err(bad());
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(bad)?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tls => 443,
            None => 80,
        };
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            base: base.trim_end_matches('/').to_string(),
        })
    }
}

/// Why an upstream could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("connection refused")]
    Refused,
    #[error("no connection within the connect timeout")]
    Timeout,
    #[error("{0}")]
    Unreachable(io::Error),
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
}

/// One upstream's idle connections and how to make new ones.
struct Pool {
    url: String,
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    endpoint: Rc<Endpoint>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: Vec<Conn>,
}

type Pools = Rc<RefCell<Vec<Pool>>>;

/// The upstream connections of one worker.
#[derive(Default)]
pub struct Upstreams {
    pools: Pools,
    sweeping: Cell<bool>,
}

/// One upstream of [`Upstreams`]: connections to it, new or pooled.
#[derive(Clone)]
pub struct Upstream {
    pools: Pools,
    index: usize,
    pub endpoint: Rc<Endpoint>,
}

impl Upstreams {
    /// The upstream of `target` (its TLS settings made on first use).
    /// Fails when its URL is bad or its `proxy_ca_file` cannot be read (it
    /// was checked at start; it may have changed since).
    pub fn upstream(&self, target: &ProxyTarget) -> Result<Upstream, String> {
        let mut pools = self.pools.borrow_mut();
        let found = pools.iter().position(|p| {
            p.url == target.url
                && p.ca_file == target.ca_file
                && p.server_name == target.server_name
        });
        let index = match found {
            Some(i) => i,
            None => {
                pools.push(new_pool(target)?);
                pools.len() - 1
            }
        };
        let endpoint = Rc::clone(&pools[index].endpoint);
        drop(pools);
        if !self.sweeping.replace(true) {
            sweep(Rc::downgrade(&self.pools));
        }
        Ok(Upstream {
            pools: Rc::clone(&self.pools),
            index,
            endpoint,
        })
    }
}

fn new_pool(target: &ProxyTarget) -> Result<Pool, String> {
    let endpoint = Endpoint::parse(&target.url)?;
    let tls = if endpoint.tls {
        let mut config =
            crate::certs::client_tls::client_config(target.ca_file.as_deref(), "proxy_ca_file")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = target.server_name.as_deref().unwrap_or(&endpoint.host);
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| format!("TLS server name {name}: {e}"))?;
        Some((TlsConnector::from(Arc::new(config)), name))
    } else {
        None
    };
    Ok(Pool {
        url: target.url.clone(),
        ca_file: target.ca_file.clone(),
        server_name: target.server_name.clone(),
        endpoint: Rc::new(endpoint),
        tls,
        idle: Vec::new(),
    })
}

/// Whether an idle connection may carry another request: not kept past
/// [`POOL_IDLE`], and still open as far as the worker has seen.
fn usable(conn: &mut Conn) -> bool {
    conn.idle_since.elapsed() < POOL_IDLE && conn.is_open()
}

/// Closes expired and closed idle connections every [`SWEEP_EVERY`], for
/// as long as the worker's [`Upstreams`] lives.
fn sweep(pools: Weak<RefCell<Vec<Pool>>>) {
    actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let Some(pools) = pools.upgrade() else { return };
            for pool in pools.borrow_mut().iter_mut() {
                pool.idle.retain_mut(usable);
            }
        }
    });
}

impl Upstream {
    /// The most recently pooled connection that is still open, if any;
    /// `strict`: for a request that cannot be sent again, the kernel is
    /// asked too (see [`Conn::peek_open`]).
    pub fn checkout(&self, strict: bool) -> Option<Conn> {
        let mut pools = self.pools.borrow_mut();
        let idle = &mut pools.get_mut(self.index)?.idle;
        while let Some(mut conn) = idle.pop() {
            if usable(&mut conn) && (!strict || conn.peek_open()) {
                return Some(conn);
            }
        }
        None
    }

    /// Gives a connection that finished an exchange cleanly back.
    pub fn checkin(&self, mut conn: Conn) {
        if !conn.buf.is_empty() || matches!(conn.io, Io::Reading(_)) {
            return; // Bytes nobody asked for, or half a connection.
        }
        conn.reused = true;
        conn.idle_since = std::time::Instant::now();
        let mut pools = self.pools.borrow_mut();
        if let Some(pool) = pools.get_mut(self.index) {
            if pool.idle.len() < POOL_MAX_IDLE {
                pool.idle.push(conn);
            }
        }
    }

    /// A new connection (TCP, and TLS for `https://`), all within
    /// `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Conn, ConnectError> {
        let tls = self
            .pools
            .borrow()
            .get(self.index)
            .and_then(|p| p.tls.clone());
        let endpoint = Rc::clone(&self.endpoint);
        let connect = async move {
            let tcp = tcp(&endpoint.host, endpoint.port, timeout).await?;
            let io = match tls {
                None => Io::Plain(tcp),
                Some((connector, name)) => {
                    let tls = connector.connect(name, tcp).await.map_err(|e| {
                        let inner = e
                            .get_ref()
                            .and_then(|i| i.downcast_ref::<rustls::Error>())
                            .cloned();
                        match inner {
                            Some(tls) => ConnectError::Tls(tls),
                            None => ConnectError::Handshake(e),
                        }
                    })?;
                    Io::Tls(Box::new(tls))
                }
            };
            Ok(Conn::new(io))
        };
        tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    }
}

/// A TCP connection to the first address of `host` that takes one, each
/// address given an equal share of what is left of `timeout` (so that a
/// black-holed first address leaves time for the next, and one refused at
/// once passes its time on).
async fn tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::Resolve(host.to_string(), e.to_string()))?
            .collect(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let count = addrs.len();
    let mut last = None;
    for (i, addr) in addrs.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let share = left / u32::try_from(count - i).unwrap_or(u32::MAX);
        let attempt = match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(attempt) => attempt,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        };
        match attempt {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
                let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        None => ConnectError::Resolve(host.to_string(), "no address".into()),
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        Some(e) if e.kind() == io::ErrorKind::TimedOut => ConnectError::Timeout,
        Some(e) => ConnectError::Unreachable(e),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080/base/").unwrap();
        assert_eq!(
            (
                e.tls,
                e.host.as_str(),
                e.port,
                e.authority.as_str(),
                e.base.as_str()
            ),
            (false, "127.0.0.1", 8080, "127.0.0.1:8080", "/base")
        );
        let e = Endpoint::parse("https://app.internal").unwrap();
        assert_eq!((e.tls, e.port, e.base.as_str()), (true, 443, ""));
        let e = Endpoint::parse("http://[::1]:9/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("::1", 9, "[::1]:9")
        );
        let e = Endpoint::parse("HTTP://[::1]").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 80));
        for bad in [
            "ftp://x",
            "x",
            "http://",
            "http://u@x",
            "http://x:y",
            "http://x/?q",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
