//! What one client may cost (`[limits]`, and `max_body` of static routes),
//! and the count of what was refused (`clace_refused_total{reason}`).
//!
//! actix-http parses a request head into a fixed 128 KiB buffer (and at
//! most 96 headers) and has no setting for less: the head limits are
//! checked here on the parsed head, before anything else looks at the
//! request, and the connection is closed with the answer. A head over
//! actix-http's own 128 KiB never gets this far: actix-http refuses it
//! itself (431) and closes the connection.
//!
//! The per-IP bound counts a connection as it is accepted: on HTTPS before
//! the TLS handshake (a service in front of the TLS acceptor, whose call
//! lasts as long as the connection, holds the guard), so that one address
//! cannot hold every handshake slot of a worker; on HTTP from the listener's
//! `on_connect` hook, with the guard in the connection's extensions. A
//! connection over the bound is closed before anything is read from it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::dev::Extensions;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use crate::settings::LimitSettings;

/// Why a request or a connection was refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A request line or header line over `max_header_line`.
    HeaderLine,
    /// A request head over `max_header_total`.
    HeaderTotal,
    /// A request body over the route's `max_body`.
    Body,
    /// A connection over `max_conns_per_ip`.
    PerIp,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::HeaderLine,
        Refusal::HeaderTotal,
        Refusal::Body,
        Refusal::PerIp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HeaderLine => "header_line",
            Refusal::HeaderTotal => "header_total",
            Refusal::Body => "body",
            Refusal::PerIp => "per_ip",
        }
    }
}

/// `clace_refused_total{reason}`.
#[derive(Debug, Default)]
pub struct Refused {
    counts: [AtomicU64; 4],
}

impl Refused {
    pub fn count(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, why: Refusal) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }

    /// The counter in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP clace_refused_total Requests and connections refused by a limit, by reason.\n",
        );
        out.push_str("# TYPE clace_refused_total counter\n");
        for why in Refusal::ALL {
            let _ = writeln!(
                out,
                "clace_refused_total{{reason=\"{}\"}} {}",
                why.as_str(),
                self.get(why)
            );
        }
    }
}

/// The live `[limits]` both listeners read; a SIGHUP stores new values.
#[derive(Debug)]
pub struct RequestLimits {
    max_header_line: AtomicUsize,
    max_header_total: AtomicUsize,
    max_handshakes_per_worker: AtomicUsize,
    /// 0: no bound.
    max_conns_per_ip: AtomicUsize,
    per_ip: Arc<PerIp>,
}

impl Default for RequestLimits {
    /// nginx's defaults (8 KiB a line, 32 KiB a head), no per-IP bound.
    fn default() -> RequestLimits {
        RequestLimits {
            max_header_line: AtomicUsize::new(8192),
            max_header_total: AtomicUsize::new(32768),
            max_handshakes_per_worker: AtomicUsize::new(256),
            max_conns_per_ip: AtomicUsize::new(0),
            per_ip: Arc::default(),
        }
    }
}

impl RequestLimits {
    pub fn set(&self, limits: &LimitSettings) {
        self.max_header_line
            .store(limits.max_header_line, Ordering::Relaxed);
        self.max_header_total
            .store(limits.max_header_total, Ordering::Relaxed);
        self.max_conns_per_ip
            .store(limits.max_conns_per_ip.unwrap_or(0), Ordering::Relaxed);
        self.max_handshakes_per_worker
            .store(limits.max_handshakes_per_worker, Ordering::Relaxed);
    }

    /// TLS handshakes in flight per worker thread, which an HTTPS server
    /// takes when it starts (a change applies at the next HTTPS restart).
    pub fn max_handshakes_per_worker(&self) -> usize {
        self.max_handshakes_per_worker.load(Ordering::Relaxed)
    }

    /// The head check: `Some(answer)` (414 or 431, connection closed) when
    /// the request line, a header line or the whole head is over its limit.
    /// Sizes are those of the HTTP/1.1 text (`name: value` plus CRLF); an
    /// HTTP/2 request is measured the same way on its decoded fields.
    pub fn check_head(&self, req: &HttpRequest, refused: &Refused) -> Option<HttpResponse> {
        let (line_max, total_max) = (
            self.max_header_line.load(Ordering::Relaxed),
            self.max_header_total.load(Ordering::Relaxed),
        );
        let (line, total) = head_sizes(req);
        if line.request > line_max {
            refused.count(Refusal::HeaderLine);
            // nginx's answer to a request line over its buffer.
            return Some(closing(StatusCode::URI_TOO_LONG, "request line too long\n"));
        }
        if line.longest_header > line_max {
            refused.count(Refusal::HeaderLine);
            return Some(closing(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header line too long\n",
            ));
        }
        if total > total_max {
            refused.count(Refusal::HeaderTotal);
            return Some(closing(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header too large\n",
            ));
        }
        None
    }

    /// Whether a new connection from `peer` may go on: `Ok(Some(guard))`
    /// counts it until the guard is dropped with the connection, `Ok(None)`
    /// when there is no bound (or no peer address), `Err` when its IP is at
    /// the bound (counted as a refusal, logged once a minute).
    pub fn admit(
        &self,
        peer: Option<IpAddr>,
        refused: &Refused,
    ) -> Result<Option<PerIpGuard>, OverBound> {
        let max = self.max_conns_per_ip.load(Ordering::Relaxed);
        let Some(ip) = peer.filter(|_| max > 0) else {
            return Ok(None);
        };
        match PerIp::enter(&self.per_ip, ip.to_canonical(), max) {
            Some(guard) => Ok(Some(guard)),
            None => {
                refused.count(Refusal::PerIp);
                crate::logonce::warn(
                    "clace::limits",
                    "per_ip",
                    &format!("connections from {ip} over max_conns_per_ip ({max}): closed"),
                );
                Err(OverBound)
            }
        }
    }

    /// The HTTP listener's `on_connect` part: [`Self::admit`], keeping the
    /// guard in the connection's extensions, or shutting the socket down.
    pub fn on_connect(
        &self,
        peer: Option<IpAddr>,
        conn: Conn<'_>,
        ext: &mut Extensions,
        refused: &Refused,
    ) {
        match self.admit(peer, refused) {
            Ok(Some(guard)) => {
                ext.insert(guard);
            }
            Ok(None) => {}
            Err(OverBound) => conn.shut_down(),
        }
    }

    /// Connections counted now for `ip` (tests, metrics).
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(ip.to_canonical())
    }
}

/// A connection over `max_conns_per_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBound;

/// The socket of a new connection, to shut down one over the per-IP bound.
pub struct Conn<'a>(pub socket2::SockRef<'a>);

impl Conn<'_> {
    fn shut_down(&self) {
        // Reading then sees the end of the stream and actix-http drops the
        // connection without reading a request from it.
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Sizes of a request head as HTTP/1.1 text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LineSizes {
    /// `METHOD target HTTP/1.1`, without CRLF.
    pub request: usize,
    /// The longest `name: value`, without CRLF.
    pub longest_header: usize,
}

/// The line sizes and the whole head's size (lines, CRLFs, the blank line).
pub fn head_sizes(req: &HttpRequest) -> (LineSizes, usize) {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    let request = req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len();
    let mut sizes = LineSizes {
        request,
        longest_header: 0,
    };
    let mut total = request + 2;
    for (name, value) in req.headers() {
        let line = name.as_str().len() + 2 + value.len();
        sizes.longest_header = sizes.longest_header.max(line);
        total += line + 2;
    }
    (sizes, total + 2)
}

/// A static route's request body: `Some(413)` (connection closed) when it
/// is over `max` bytes, by its `Content-Length` or as it is read (chunked);
/// a body within the bound is read and dropped (a static route has no use
/// for it). `None` when the request may go on.
pub async fn static_body(
    req: &HttpRequest,
    mut body: web::Payload,
    max: Option<u64>,
    refused: &Refused,
) -> Option<HttpResponse> {
    let max = max?;
    let too_large = || {
        refused.count(Refusal::Body);
        Some(closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large for this route\n",
        ))
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return too_large();
    }
    let mut seen: u64 = 0;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                seen = seen.saturating_add(bytes.len() as u64);
                if seen > max {
                    return too_large();
                }
            }
            Err(_) => {
                return Some(closing(StatusCode::BAD_REQUEST, "bad request body\n"));
            }
        }
    }
    None
}

/// A plain-text refusal after which the connection is closed (what is left
/// of the request is never read).
fn closing(status: StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .force_close()
        .body(body)
}

/// Open connections per client IP.
#[derive(Debug, Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Counts one more connection from `ip` unless it has `max` already.
    fn enter(this: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut open = this.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(PerIpGuard {
            table: Arc::clone(this),
            ip,
        })
    }

    fn get(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

/// One counted connection; dropped with the connection's extensions.
#[derive(Debug)]
pub struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use actix_web::test::TestRequest;

    use super::*;

    fn limits(line: usize, total: usize) -> RequestLimits {
        let l = RequestLimits::default();
        l.set(&LimitSettings {
            max_header_line: line,
            max_header_total: total,
            max_handshakes_per_worker: 256,
            max_conns_per_ip: Some(2),
        });
        l
    }

    #[test]
    fn head_sizes_are_those_of_the_text() {
        let req = TestRequest::get()
            .uri("/a?b")
            .insert_header(("x-one", "12345"))
            .to_http_request();
        let (lines, total) = head_sizes(&req);
        // "GET /a?b HTTP/1.1" and "x-one: 12345"
        assert_eq!(lines.request, 17);
        assert_eq!(lines.longest_header, 12);
        assert_eq!(total, 17 + 2 + 12 + 2 + 2);
    }

    #[test]
    fn a_long_line_or_a_big_head_is_refused_and_counted() {
        let refused = Refused::default();
        let l = limits(64, 120);
        let ok = TestRequest::get()
            .insert_header(("a", "x".repeat(40)))
            .to_http_request();
        assert!(l.check_head(&ok, &refused).is_none());
        let long = TestRequest::get()
            .insert_header(("a", "x".repeat(80)))
            .to_http_request();
        let resp = l.check_head(&long, &refused).unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(refused.get(Refusal::HeaderLine), 1);
        let big = TestRequest::get()
            .insert_header(("a", "x".repeat(50)))
            .insert_header(("b", "x".repeat(50)))
            .to_http_request();
        let resp = l.check_head(&big, &refused).unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(refused.get(Refusal::HeaderTotal), 1);
        let uri = TestRequest::get()
            .uri(&format!("/{}", "p".repeat(100)))
            .to_http_request();
        let resp = l.check_head(&uri, &refused).unwrap();
        assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(refused.get(Refusal::HeaderLine), 2);
        let mut text = String::new();
        refused.render(&mut text);
        assert!(text.contains("clace_refused_total{reason=\"header_total\"} 1\n"));
        assert!(text.contains("clace_refused_total{reason=\"per_ip\"} 0\n"));
    }

    #[test]
    fn per_ip_places_come_back_when_the_guard_drops() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "::1".parse().unwrap();
        let a = PerIp::enter(&table, ip, 2).unwrap();
        let b = PerIp::enter(&table, ip, 2).unwrap();
        assert!(PerIp::enter(&table, ip, 2).is_none());
        assert!(PerIp::enter(&table, other, 2).is_some());
        drop(a);
        assert_eq!(table.get(ip), 1);
        let c = PerIp::enter(&table, ip, 2).unwrap();
        drop((b, c));
        assert_eq!(table.get(ip), 0);
        assert!(table.open.lock().unwrap().get(&ip).is_none());
    }
}
