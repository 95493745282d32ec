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
//! collected: a known `Content-Length` is kept each way (never more bytes
//! than it says go up), anything else is chunked. An upstream may answer
//! before it has read the whole request body: the body keeps going up
//! while the answer comes down. The route's `idle_timeout` bounds the
//! silence between two chunks either way; `timeout` bounds the wait for
//! the response head, counted from the end of the request body (a slow
//! upload is bounded by the idle timeout, not by the head's);
//! `connect_timeout` bounds name resolution, the TCP connection and the
//! TLS handshake together (504 after). A client that goes away drops the
//! upstream exchange.
//!
//! `Upgrade: websocket` is tunnelled when the request is a handshake
//! proper (HTTP/1.1, `Connection: upgrade`); without those it is a 400,
//! since actix-http hands such a request the rest of the connection as its
//! body. `CONNECT` is not proxied (405).
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
mod exchange;
mod failure;
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

use crate::settings::ProxyTarget;
use body::ResponseBody;
use client::Upstream;
pub use client::Upstreams;
use conn::Conn;
use exchange::{Exchange, Upload};
use failure::Failure;
use headers::RequestBody;
use wire::{Decoder, Framing, ResponseHead};

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

    // actix-http hands a request with `Upgrade: websocket` (or a CONNECT)
    // the rest of its connection as its body: only a WebSocket handshake
    // proper may have that, anything else would let the client write
    // upstream past its request.
    let websocket = headers::is_websocket(req);
    if req.method() == Method::CONNECT {
        return short(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: CONNECT is not proxied".into(),
        );
    }
    if !websocket && headers::upgrades_to_websocket(req) {
        return short(
            StatusCode::BAD_REQUEST,
            "bad request: Upgrade: websocket needs HTTP/1.1 and Connection: upgrade".into(),
        );
    }

    // The body: none, or streamed. Its declared length is checked first.
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
            std::task::Poll::Ready(Some(Err(_))) => {
                return Failure::Body(body::Sent::Broken).respond(
                    &label(),
                    &upstream.endpoint.authority,
                    target,
                    max_body,
                )
            }
            std::task::Poll::Pending => RequestBody::Chunked,
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
    let (result, payload) = if has_body {
        let body = Upload {
            payload,
            first,
            chunked: framing == RequestBody::Chunked,
            length,
            max_body,
        };
        (exchange.with_body(body).await, None)
    } else {
        (
            exchange.without_body(idempotent(req.method())).await,
            Some(payload),
        )
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
    let length = head.length;
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
    payload: Option<web::Payload>,
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
    let Some(payload) = payload else {
        log::warn!(target: TARGET, "{label}: the upstream switched protocols but the client's connection could not be taken over");
        return short(
            StatusCode::BAD_GATEWAY,
            "bad gateway: the upstream's WebSocket could not be joined".into(),
        );
    };
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
