//! Proxy routes: forward a request to an upstream and stream the answer
//! back, with hyper's client (see [`client`] for why).
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
//! A request that a pooled connection closed before it was sent is sent
//! again on another (hyper does this, whatever the method: nothing reached
//! the upstream). A body-less request with an idempotent method whose
//! pooled connection closed after it was sent but before any answer (the
//! keep-alive race) is sent once more; nothing else is ever retried.

mod body;
pub mod client;
mod headers;
mod upgrade;

use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{self as ax_body, SizedStream};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use hyper::body::Incoming;

use crate::settings::ProxyTarget;
use body::Sent;
pub use client::Upstreams;

pub(crate) const TARGET: &str = "clace::proxy";

/// Forwards `req` with its `body` to the route's upstream and streams the
/// response back. `scheme` is the listener's (`X-Forwarded-Proto`),
/// `route` names the route in log lines.
pub async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    upstreams: &Upstreams,
    target: &ProxyTarget,
    max_body: Option<u64>,
    scheme: &str,
    route: &str,
) -> HttpResponse {
    let authority = upstream_authority(&target.url);
    let label: Rc<str> = Rc::from(format!("route {route} -> {}", target.url));
    let client = match upstreams.client(target) {
        Ok(c) => c,
        Err(e) => {
            log::error!(target: TARGET, "{label}: {e}");
            return short(
                StatusCode::BAD_GATEWAY,
                format!("bad gateway: the TLS settings for upstream {authority} cannot be used"),
            );
        }
    };
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let uri: http::Uri = match format!("{}{path_and_query}", target.url).parse() {
        Ok(u) => u,
        Err(e) => {
            log::warn!(target: TARGET, "{label}: cannot build the upstream URL: {e}");
            return short(
                StatusCode::BAD_GATEWAY,
                format!("bad gateway: cannot build a request for upstream {authority}"),
            );
        }
    };
    let websocket = headers::is_websocket(req);
    let head_headers = headers::request_headers(req, scheme, websocket);
    let method = match http::Method::from_bytes(req.method().as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            return short(
                StatusCode::BAD_REQUEST,
                "bad request: unknown method".into(),
            )
        }
    };

    // The body: none, or streamed. Its declared length is checked first.
    let declared: Vec<&[u8]> = req
        .headers()
        .get_all(actix_web::http::header::CONTENT_LENGTH)
        .map(|v| v.as_bytes())
        .collect();
    let length = headers::content_length(&declared);
    if let (Some(max), Some(len)) = (max_body, length) {
        if len > max {
            return too_large(&label, max);
        }
    }
    let has_body = !websocket
        && (length.is_some_and(|l| l > 0)
            || req
                .headers()
                .contains_key(actix_web::http::header::TRANSFER_ENCODING)
            || (length.is_none() && req.version() == actix_web::http::Version::HTTP_2));
    let (mut payload, mut sent_rx) = (Some(payload), None);
    let request = |body: client::UpBody| {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(uri.clone());
        if let Some(h) = builder.headers_mut() {
            *h = head_headers.clone();
            if length.is_some() && !has_body {
                h.remove(http::header::CONTENT_LENGTH);
            } else if let Some(l) = length {
                if let Ok(v) = http::HeaderValue::from_str(&l.to_string()) {
                    h.insert(http::header::CONTENT_LENGTH, v);
                }
            }
        }
        builder.body(body)
    };
    let up_body = if has_body {
        let (b, rx) = body::request(
            payload.take().expect("the payload is taken once"),
            target.idle_timeout,
            max_body,
        );
        sent_rx = Some(rx);
        b
    } else {
        body::empty()
    };
    let up_req = match request(up_body) {
        Ok(r) => r,
        Err(e) => {
            log::warn!(target: TARGET, "{label}: cannot build the upstream request: {e}");
            return short(
                StatusCode::BAD_GATEWAY,
                format!("bad gateway: cannot build a request for upstream {authority}"),
            );
        }
    };

    // The head's wait starts when the body has gone up.
    let head = async {
        let mut result = head_in_time(&client, up_req, sent_rx.take(), target.timeout).await;
        let retryable = matches!(&result, Err(Failure::Upstream(e)) if closed_before_answer(e));
        if retryable && !has_body && idempotent(req.method()) {
            log::info!(target: TARGET, "{label}: the pooled connection closed before an answer; sending the request once more");
            if let Ok(again) = request(body::empty()) {
                result = head_in_time(&client, again, None, target.timeout).await;
            }
        }
        result
    };
    let response = match head.await {
        Ok(r) => r,
        Err(failure) => return failure.respond(&label, authority, target, max_body),
    };

    if websocket && response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return switch(response, payload, target.idle_timeout, label).await;
    }
    respond(req, response, target.idle_timeout, label)
}

/// Why no response head came.
enum Failure {
    Upstream(hyper_util::client::legacy::Error),
    HeadTimeout,
    Body(Sent),
}

/// Sends the request and waits for the head, at most `timeout` after the
/// request body has been sent (`sent`: when it ends; `None`: no body).
async fn head_in_time(
    client: &client::UpClient,
    req: http::Request<client::UpBody>,
    sent: Option<tokio::sync::oneshot::Receiver<Sent>>,
    timeout: Duration,
) -> Result<http::Response<Incoming>, Failure> {
    let exchange = client.request(req);
    tokio::pin!(exchange);
    if let Some(sent) = sent {
        // While the body goes up, only the idle timeout (in the body pump)
        // bounds the wait; the upstream may answer early.
        let outcome = tokio::select! {
            result = &mut exchange => return result.map_err(Failure::Upstream),
            outcome = sent => outcome.unwrap_or(Sent::Whole),
        };
        if !matches!(outcome, Sent::Whole | Sent::UpstreamGone) {
            // The upstream may still answer (a 413 of its own): give it a
            // moment, else the body's failure is the answer.
            return match tokio::time::timeout(Duration::from_millis(100), &mut exchange).await {
                Ok(Ok(r)) => Ok(r),
                _ => Err(Failure::Body(outcome)),
            };
        }
    }
    match tokio::time::timeout(timeout, &mut exchange).await {
        Ok(result) => result.map_err(Failure::Upstream),
        Err(_) => Err(Failure::HeadTimeout),
    }
}

impl Failure {
    fn respond(
        self,
        label: &str,
        authority: &str,
        target: &ProxyTarget,
        max_body: Option<u64>,
    ) -> HttpResponse {
        match self {
            Failure::HeadTimeout => {
                log::warn!(target: TARGET, "{label}: no response head within {}s (timeout)", target.timeout.as_secs());
                short(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("gateway timeout: upstream {authority} did not answer in time"),
                )
            }
            Failure::Body(Sent::TooLarge) => too_large(label, max_body.unwrap_or(0)),
            Failure::Body(Sent::Idle) => {
                log::info!(target: TARGET, "{label}: the client's request body went silent for {}s (idle_timeout)", target.idle_timeout.as_secs());
                short(
                    StatusCode::REQUEST_TIMEOUT,
                    "request timeout: the request body stopped arriving".into(),
                )
            }
            Failure::Body(_) => {
                log::debug!(target: TARGET, "{label}: the client's request body broke off");
                short(
                    StatusCode::BAD_REQUEST,
                    "bad request: the request body could not be read".into(),
                )
            }
            Failure::Upstream(e) => {
                let (status, message) = classify(&e, authority, target);
                log::warn!(target: TARGET, "{label}: {message}: {}", chain(&e));
                short(status, message)
            }
        }
    }
}

/// 502 or 504 and the client's line for an upstream error.
fn classify(
    e: &hyper_util::client::legacy::Error,
    authority: &str,
    target: &ProxyTarget,
) -> (StatusCode, String) {
    let text = chain(e);
    if let Some(io) = find::<std::io::Error>(e) {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                return (StatusCode::BAD_GATEWAY, format!("bad gateway: upstream {authority} refused the connection"))
            }
            std::io::ErrorKind::TimedOut => {
                return (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("gateway timeout: upstream {authority} did not accept the connection within {}s", target.connect_timeout.as_secs()),
                )
            }
            _ => {}
        }
    }
    if let Some(tls) = find::<rustls::Error>(e) {
        return (
            StatusCode::BAD_GATEWAY,
            format!(
                "bad gateway: the certificate of upstream {authority} cannot be trusted ({tls})"
            ),
        );
    }
    if text.contains("dns error") || text.contains("failed to lookup address") {
        return (
            StatusCode::BAD_GATEWAY,
            format!("bad gateway: upstream host {authority} could not be resolved"),
        );
    }
    if e.is_connect() {
        return (
            StatusCode::BAD_GATEWAY,
            format!("bad gateway: upstream {authority} could not be reached"),
        );
    }
    (
        StatusCode::BAD_GATEWAY,
        format!("bad gateway: upstream {authority} failed to answer"),
    )
}

/// The first error of type `T` in `e`'s source chain. An `io::Error`
/// wrapping another error (hyper-rustls wraps rustls' that way) is looked
/// into: its `source()` skips the wrapped error itself.
fn find<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if let Some(t) = inner.and_then(|i| i.downcast_ref::<T>()) {
            return Some(t);
        }
        current = inner.or_else(|| err.source());
    }
    None
}

/// An error and its causes, for the log.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The keep-alive race: the upstream closed a pooled connection after the
/// request went out and before any answer.
fn closed_before_answer(e: &hyper_util::client::legacy::Error) -> bool {
    find::<hyper::Error>(e).is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The upstream's response, streamed to the client.
fn respond(
    req: &HttpRequest,
    response: http::Response<Incoming>,
    idle: Duration,
    label: Rc<str>,
) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut res = HttpResponse::build(status);
    for (name, value) in headers::response_headers(&parts.headers, false) {
        res.append_header((name, value));
    }
    // 1xx, 204 and 304 never have a body (RFC 9110 §6.4.1); sending one
    // with a length would make actix-http wait for bytes that never come.
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return res.body(ax_body::None::new());
    }
    let lengths: Vec<&[u8]> = parts
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let stream = body::response(body, idle, label);
    match headers::content_length(&lengths) {
        // For HEAD the length is announced and the (empty) body is never
        // polled by the dispatcher.
        Some(length) => res.body(SizedStream::new(length, Box::pin(stream))),
        None if req.method() == Method::HEAD => res.body(ax_body::None::new()),
        None => res.streaming(stream),
    }
}

/// The upstream switched protocols: join the two connections.
async fn switch(
    mut response: http::Response<Incoming>,
    payload: Option<web::Payload>,
    idle: Duration,
    label: Rc<str>,
) -> HttpResponse {
    let protocol = response
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("websocket")
        .to_string();
    let mut res = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    res.upgrade(protocol);
    for (name, value) in headers::response_headers(response.headers(), false) {
        res.append_header((name, value));
    }
    let (Some(payload), Ok(upgraded)) = (payload, hyper::upgrade::on(&mut response).await) else {
        log::warn!(target: TARGET, "{label}: the upstream switched protocols but its connection could not be taken over");
        return short(
            StatusCode::BAD_GATEWAY,
            "bad gateway: the upstream's WebSocket could not be joined".into(),
        );
    };
    log::debug!(target: TARGET, "{label}: WebSocket open");
    res.streaming(upgrade::tunnel(payload, upgraded, idle, label))
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
