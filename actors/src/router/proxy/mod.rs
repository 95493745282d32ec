//! Proxy routes: forward a request to an upstream and stream the answer
//! back, over HTTP/1.1 connections of our own (see [`client`] for why).
//!
//! # What the upstream sees
//!
//! - The method, and the full original path and query appended to the
//!   upstream URL (`http://127.0.0.1:8080/base` + `/app/x?y=1`).
//! - The client's headers, minus the hop-by-hop ones (RFC 9110 §7.6.1:
//!   `Connection` and every header it names, `Keep-Alive`,
//!   `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade`) and `Expect` (actix-web has
//!   already answered `100-continue` to the client). A WebSocket handshake
//!   keeps `Upgrade` and `Connection: upgrade`.
//! - The original `Host`, kept as Caddy does (nginx's `proxy_pass` puts the
//!   upstream's host there instead): applications behind clace see the name
//!   the user typed. An HTTP/2 client's `:authority` becomes `Host`.
//! - `X-Forwarded-For`: any value the client sent, then the peer IP;
//!   `X-Forwarded-Proto`: the listener's scheme; `X-Forwarded-Host`: the
//!   original host. The last two replace what the client sent.
//! - Nothing else: no `Date`, `User-Agent` or `Accept-Encoding` of the
//!   proxy's own (responses are not decompressed either), no redirect
//!   following.
//!
//! # Bodies and timeouts
//!
//! Both bodies stream in whatever chunks arrive ([`body`]), never
//! collected: a known `Content-Length` is kept each way, anything else is
//! chunked. The route's `idle_timeout` bounds the silence between two
//! chunks either way; `timeout` bounds the wait for the response head,
//! counted from the end of the request body (a slow upload is bounded by
//! the idle timeout, not by the head's); `connect_timeout` bounds the TCP
//! connection. A client that goes away drops the upstream exchange.
//!
//! # Failures
//!
//! An upstream that cannot be reached is 502 (`bad gateway: upstream
//! 127.0.0.1:9 refused the connection`), one whose certificate does not
//! verify is 502 (the log says why); one that does not accept the
//! connection or send its response head in time is 504. The detail goes to
//! the log with the route and upstream, the client gets one short line. A
//! request body over the route's `max_body` is 413.
//!
//! # Retries
//!
//! A pooled connection is checked before use (the upstream may have closed
//! it); one that fails the write of the request head (nothing reached the
//! upstream) is replaced by a new one, whatever the method. A body-less
//! request with an idempotent method whose pooled connection closed after
//! it was sent but before any answer (the keep-alive race) is sent once
//! more on a new connection; nothing else is ever retried.

mod body;
pub mod client;
mod conn;
mod headers;
mod upgrade;
mod wire;

use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{self as ax_body, SizedStream};
use actix_web::http::{Method, StatusCode, Version};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::settings::ProxyTarget;
use body::{ResponseBody, Sent};
pub use client::Upstreams;
use client::{ConnectError, Upstream};
use conn::Conn;
use headers::RequestBody;
use wire::{Decoder, Framing, ResponseHead, WireError};

pub(crate) const TARGET: &str = "clace::proxy";

/// Forwards `req` with its `body` to the route's upstream and streams the
/// response back. `scheme` is the listener's (`X-Forwarded-Proto`),
/// `route` names the route in log lines.
pub async fn forward(
    req: &HttpRequest,
    mut payload: web::Payload,
    upstreams: &Upstreams,
    target: &ProxyTarget,
    max_body: Option<u64>,
    scheme: &str,
    route: &str,
) -> HttpResponse {
    let label = || format!("route {route} -> {}", target.url);
    let upstream = match upstreams.upstream(target) {
        Ok(u) => u,
        Err(e) => {
            log::error!(target: TARGET, "{}: {e}", label());
            let authority = upstream_authority(&target.url);
            return short(
                StatusCode::BAD_GATEWAY,
                format!("bad gateway: the TLS settings for upstream {authority} cannot be used"),
            );
        }
    };

    // The body: none, or streamed. Its declared length is checked first.
    let websocket = headers::is_websocket(req);
    let declared: Vec<&[u8]> = req
        .headers()
        .get_all(actix_web::http::header::CONTENT_LENGTH)
        .map(|v| v.as_bytes())
        .collect();
    let length = headers::content_length(&declared);
    if let (Some(max), Some(len)) = (max_body, length) {
        if len > max {
            return too_large(&label(), max);
        }
    }
    let mut first = None;
    let framing = if websocket {
        RequestBody::None
    } else if let Some(l) = length {
        RequestBody::Length(l)
    } else if req
        .headers()
        .contains_key(actix_web::http::header::TRANSFER_ENCODING)
    {
        RequestBody::Chunked
    } else if req.version() == Version::HTTP_2 {
        // An HTTP/2 request without a length may still carry a body: look.
        match std::future::poll_fn(|cx| std::task::Poll::Ready(payload.poll_next_unpin(cx))).await {
            std::task::Poll::Ready(None) => RequestBody::None,
            std::task::Poll::Ready(Some(Ok(chunk))) => {
                first = Some(chunk);
                RequestBody::Chunked
            }
            _ => RequestBody::Chunked,
        }
    } else {
        RequestBody::None
    };
    let has_body = matches!(framing, RequestBody::Chunked)
        || matches!(framing, RequestBody::Length(l) if l > 0);
    let head = headers::request_head(req, &upstream.endpoint, scheme, websocket, framing).freeze();
    let exchange = Exchange {
        upstream: &upstream,
        target,
        head: &head,
        head_request: req.method() == Method::HEAD,
        label: &label,
    };
    let result = if has_body {
        let body = Upload {
            payload: &mut payload,
            first,
            chunked: framing == RequestBody::Chunked,
            max_body,
        };
        exchange.with_body(body).await
    } else {
        exchange.without_body(idempotent(req.method())).await
    };
    let (response, conn) = match result {
        Ok(r) => r,
        Err(failure) => {
            return failure.respond(&label(), &upstream.endpoint.authority, target, max_body)
        }
    };

    if response.status == 101 {
        if websocket {
            return switch(&response, conn, payload, target.idle_timeout, label());
        }
        log::warn!(target: TARGET, "{}: the upstream switched protocols unasked", label());
        return short(
            StatusCode::BAD_GATEWAY,
            format!(
                "bad gateway: upstream {} failed to answer",
                upstream.endpoint.authority
            ),
        );
    }
    respond(req, response, conn, upstream, target.idle_timeout, &label)
}

/// The client's request body, to stream upstream.
struct Upload<'a> {
    payload: &'a mut web::Payload,
    /// A chunk already taken from the payload.
    first: Option<Bytes>,
    chunked: bool,
    max_body: Option<u64>,
}

/// One request and the upstream it goes to.
struct Exchange<'a, L: Fn() -> String> {
    upstream: &'a Upstream,
    target: &'a ProxyTarget,
    head: &'a Bytes,
    head_request: bool,
    label: &'a L,
}

impl<L: Fn() -> String> Exchange<'_, L> {
    /// A pooled connection, else a new one, with the request head written
    /// on it. A pooled connection that fails the write (the upstream
    /// closed it; nothing reached it) is replaced by a new one.
    async fn send_head(&self) -> Result<Conn, Failure> {
        if let Some(mut conn) = self.upstream.checkout() {
            if write_head(&mut conn, self.head).await.is_ok() {
                return Ok(conn);
            }
        }
        let mut conn = self
            .upstream
            .connect(self.target.connect_timeout)
            .await
            .map_err(Failure::Connect)?;
        write_head(&mut conn, self.head)
            .await
            .map_err(|e| Failure::Answer(ReadError::Io(e)))?;
        Ok(conn)
    }

    /// A request without a body: sent, and its response head read within
    /// the route's `timeout`. When a pooled connection closes after the
    /// request went out and before any answer (the keep-alive race), an
    /// `idempotent` request is sent once more on a new connection.
    async fn without_body(&self, idempotent: bool) -> Result<(ResponseHead, Conn), Failure> {
        let mut conn = self.send_head().await?;
        let result = self.head_in_time(&mut conn).await;
        if matches!(result, Err(Failure::Answer(ReadError::Closed))) && conn.reused && idempotent {
            log::info!(target: TARGET, "{}: the pooled connection closed before an answer; sending the request once more", (self.label)());
            let mut conn = self
                .upstream
                .connect(self.target.connect_timeout)
                .await
                .map_err(Failure::Connect)?;
            write_head(&mut conn, self.head)
                .await
                .map_err(|e| Failure::Answer(ReadError::Io(e)))?;
            let head = self.head_in_time(&mut conn).await?;
            return Ok((head, conn));
        }
        result.map(|head| (head, conn))
    }

    async fn head_in_time(&self, conn: &mut Conn) -> Result<ResponseHead, Failure> {
        match tokio::time::timeout(
            self.target.timeout,
            read_head(&mut conn.io, &mut conn.buf, self.head_request),
        )
        .await
        {
            Ok(result) => result.map_err(Failure::Answer),
            Err(_) => Err(Failure::HeadTimeout),
        }
    }

    /// A request with a body: the body streams up while the response head
    /// is awaited (the upstream may answer early, a 413 of its own); the
    /// head's `timeout` counts from the end of the body.
    async fn with_body(&self, body: Upload<'_>) -> Result<(ResponseHead, Conn), Failure> {
        let mut conn = self.send_head().await?;
        let idle = self.target.idle_timeout;
        let (result, sent) = {
            let (mut reader, mut writer) = tokio::io::split(&mut conn.io);
            let buf = &mut conn.buf;
            let head = read_head(&mut reader, buf, self.head_request);
            tokio::pin!(head);
            let pump = body::pump(
                body.payload,
                body.first,
                &mut writer,
                body.chunked,
                idle,
                body.max_body,
            );
            tokio::pin!(pump);
            tokio::select! {
                result = &mut head => (result.map_err(Failure::Answer), None),
                sent = &mut pump => {
                    if matches!(sent, Sent::Whole | Sent::UpstreamGone) {
                        match tokio::time::timeout(self.target.timeout, &mut head).await {
                            Ok(result) => (result.map_err(Failure::Answer), Some(sent)),
                            Err(_) => (Err(Failure::HeadTimeout), Some(sent)),
                        }
                    } else {
                        // The upstream may still answer (a 413 of its own):
                        // give it a moment, else the body's failure is the
                        // answer.
                        match tokio::time::timeout(Duration::from_millis(100), &mut head).await {
                            Ok(Ok(r)) => (Ok(r), Some(sent)),
                            _ => (Err(Failure::Body(sent)), Some(sent)),
                        }
                    }
                }
            }
        };
        let mut head = result?;
        if sent != Some(Sent::Whole) {
            // The body did not go up whole: the connection carries nothing
            // after this answer.
            head.keep_alive = false;
        }
        Ok((head, conn))
    }
}

async fn write_head(conn: &mut Conn, head: &[u8]) -> std::io::Result<()> {
    conn.io.write_all(head).await?;
    conn.io.flush().await
}

/// Why no response head came.
#[derive(Debug)]
enum ReadError {
    /// The upstream closed before sending a byte of an answer.
    Closed,
    Io(std::io::Error),
    Wire(WireError),
}

/// Reads a final response head (1xx ones but `101` are skipped).
async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut bytes::BytesMut,
    head_request: bool,
) -> Result<ResponseHead, ReadError> {
    let mut answered = !buf.is_empty();
    loop {
        if let Some(head) = wire::parse_head(buf, head_request).map_err(ReadError::Wire)? {
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
        buf.reserve(16 * 1024);
        match reader.read_buf(buf).await {
            Ok(0) if answered => {
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => answered = true,
            Err(e) if !answered && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ReadError::Closed)
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Why no response head came.
enum Failure {
    Connect(ConnectError),
    Answer(ReadError),
    HeadTimeout,
    Body(Sent),
}

impl Failure {
    fn respond(
        self,
        label: &str,
        authority: &str,
        target: &ProxyTarget,
        max_body: Option<u64>,
    ) -> HttpResponse {
        let (status, message, detail) = match self {
            Failure::HeadTimeout => {
                log::warn!(target: TARGET, "{label}: no response head within {}s (timeout)", target.timeout.as_secs());
                return short(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("gateway timeout: upstream {authority} did not answer in time"),
                );
            }
            Failure::Body(Sent::TooLarge) => return too_large(label, max_body.unwrap_or(0)),
            Failure::Body(Sent::Idle) => {
                log::info!(target: TARGET, "{label}: the client's request body went silent for {}s (idle_timeout)", target.idle_timeout.as_secs());
                return short(
                    StatusCode::REQUEST_TIMEOUT,
                    "request timeout: the request body stopped arriving".into(),
                );
            }
            Failure::Body(_) => {
                log::debug!(target: TARGET, "{label}: the client's request body broke off");
                return short(
                    StatusCode::BAD_REQUEST,
                    "bad request: the request body could not be read".into(),
                );
            }
            Failure::Connect(e) => {
                let (status, message) = match &e {
                    ConnectError::Refused => (
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: upstream {authority} refused the connection"),
                    ),
                    ConnectError::Timeout => (
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "gateway timeout: upstream {authority} did not accept the connection within {}s",
                            target.connect_timeout.as_secs()
                        ),
                    ),
                    ConnectError::Resolve(..) => (
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: upstream host {authority} could not be resolved"),
                    ),
                    ConnectError::Tls(tls) => (
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: the certificate of upstream {authority} cannot be trusted ({tls})"),
                    ),
                    ConnectError::Unreachable(_) | ConnectError::Handshake(_) => (
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: upstream {authority} could not be reached"),
                    ),
                };
                (status, message, e.to_string())
            }
            Failure::Answer(e) => {
                let detail = match e {
                    ReadError::Closed => "the connection closed before an answer".to_string(),
                    ReadError::Io(e) => e.to_string(),
                    ReadError::Wire(e) => e.to_string(),
                };
                (
                    StatusCode::BAD_GATEWAY,
                    format!("bad gateway: upstream {authority} failed to answer"),
                    detail,
                )
            }
        };
        log::warn!(target: TARGET, "{label}: {message}: {detail}");
        short(status, message)
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The upstream's response, passed to the client: whole when it came
/// with its head, else streamed.
fn respond(
    req: &HttpRequest,
    head: ResponseHead,
    mut conn: Conn,
    upstream: Upstream,
    idle: Duration,
    label: &dyn Fn() -> String,
) -> HttpResponse {
    let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let length = head
        .get("content-length")
        .and_then(|v| headers::content_length(&[&v[..]]));
    let body = match head.framing {
        // 1xx, 204 and 304 never have a body (RFC 9110 §6.4.1); a HEAD's
        // length is announced and its (empty) body never polled.
        Framing::Empty => {
            if head.keep_alive {
                upstream.checkin(conn);
            }
            match length {
                Some(n)
                    if req.method() == Method::HEAD
                        && !status.is_informational()
                        && status != StatusCode::NO_CONTENT
                        && status != StatusCode::NOT_MODIFIED =>
                {
                    ax_body::BoxBody::new(SizedStream::new(
                        n,
                        futures_util::stream::empty::<std::io::Result<Bytes>>(),
                    ))
                }
                _ => ax_body::BoxBody::new(ax_body::None::new()),
            }
        }
        Framing::Length(n) if conn.buf.len() as u64 >= n => {
            // It came whole with the head.
            let whole = conn.buf.split_to(n as usize).freeze();
            if head.keep_alive {
                upstream.checkin(conn);
            }
            ax_body::BoxBody::new(whole)
        }
        framing => {
            let stream = ResponseBody::new(
                conn,
                Decoder::new(framing),
                head.keep_alive,
                upstream,
                idle,
                Rc::from(label()),
            );
            match framing {
                Framing::Length(n) => ax_body::BoxBody::new(SizedStream::new(n, stream)),
                _ => ax_body::BoxBody::new(ax_body::BodyStream::new(stream)),
            }
        }
    };
    let mut res = HttpResponse::with_body(status, body);
    headers::response_headers(&head, res.headers_mut(), false);
    res
}

/// The upstream switched protocols: join the two connections.
fn switch(
    head: &ResponseHead,
    conn: Conn,
    payload: web::Payload,
    idle: Duration,
    label: String,
) -> HttpResponse {
    let protocol = head
        .get("upgrade")
        .and_then(|v| std::str::from_utf8(&v).ok().map(str::to_string))
        .unwrap_or_else(|| "websocket".into());
    let mut res = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    res.upgrade(protocol);
    let label: Rc<str> = Rc::from(label);
    log::debug!(target: TARGET, "{label}: WebSocket open");
    let mut res = res.streaming(upgrade::tunnel(payload, conn, idle, label));
    headers::response_headers(head, res.headers_mut(), false);
    res
}

/// Marks a 413 the proxy gave itself (not the upstream's), for the
/// router to count in `clace_refused_total{reason="body"}`.
#[derive(Debug, Clone, Copy)]
pub struct BodyRefused;

fn too_large(label: &str, max: u64) -> HttpResponse {
    log::info!(target: TARGET, "{label}: request body over max_body ({max} bytes); refused");
    let mut res = short(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("payload too large: this route takes at most {max} bytes of body"),
    );
    res.extensions_mut().insert(BodyRefused);
    res
}

/// `host:port` of the upstream URL, for messages.
fn upstream_authority(upstream: &str) -> &str {
    let without_scheme = upstream
        .split_once("://")
        .map_or(upstream, |(_, rest)| rest);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

/// A short plain-text answer.
fn short(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}

#[cfg(test)]
mod tests;
