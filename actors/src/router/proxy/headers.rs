//! Which headers cross the proxy, each way: the request head written
//! upstream from the client's header bytes, and the upstream's header
//! values passed to the client as slices of what was read.

use std::fmt::Write as _;
use std::net::IpAddr;

use actix_web::http::header::{self as ax, HeaderMap as AxHeaders};
use actix_web::HttpRequest;
use bytes::{Bytes, BytesMut};

use super::client::Endpoint;
use super::wire::{field, ResponseHead};

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// Headers that describe one connection, not the message (RFC 9110
/// §7.6.1), by their lower-case names.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// The header names listed in `Connection` (hop-by-hop too), lower case.
fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// How the request body goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// None, and no length said.
    None,
    /// `Content-Length` (0 included: the client said so).
    Length(u64),
    /// Chunked: its length is not known.
    Chunked,
}

/// The request head written upstream: the method, the URL's base path
/// and the client's path and query, then the client's headers minus
/// hop-by-hop ones and `Expect` (actix-web answered `100-continue`
/// already), the original `Host` (the URL's for a client that sent none)
/// and the `X-Forwarded-*` trio, then the body's framing. With `upgrade`
/// (a WebSocket handshake), `Connection: upgrade` and `Upgrade` are kept.
pub fn request_head(
    req: &HttpRequest,
    endpoint: &Endpoint,
    scheme: &str,
    upgrade: bool,
    body: RequestBody,
) -> BytesMut {
    let incoming = req.headers();
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(endpoint.base.as_bytes());
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let named = connection_tokens(incoming.get_all(ax::CONNECTION).map(|v| v.as_bytes()));
    for (name, value) in incoming.iter() {
        let n = name.as_str();
        if is_hop_by_hop(n)
            || named.iter().any(|t| t == n)
            || n == "expect"
            || n == "host"
            || n == "content-length"
            || n == X_FORWARDED_FOR
            || n == X_FORWARDED_PROTO
            || n == X_FORWARDED_HOST
        {
            continue;
        }
        field(&mut out, n.as_bytes(), value.as_bytes());
    }
    if upgrade {
        if let Some(u) = incoming.get(ax::UPGRADE) {
            field(&mut out, b"upgrade", u.as_bytes());
            field(&mut out, b"connection", b"upgrade");
        }
    }

    // HTTP/2 clients send `:authority` instead of `Host`.
    let host = incoming
        .get(ax::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()));
    match host {
        Some(host) => {
            field(&mut out, b"host", host);
            field(&mut out, X_FORWARDED_HOST.as_bytes(), host);
        }
        None => field(&mut out, b"host", endpoint.authority.as_bytes()),
    }
    forwarded_for(&mut out, incoming, req.peer_addr().map(|p| p.ip()));
    field(&mut out, X_FORWARDED_PROTO.as_bytes(), scheme.as_bytes());
    match body {
        RequestBody::None => {}
        RequestBody::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        RequestBody::Chunked => field(&mut out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Appends the upstream's response headers the client gets to `to`: all
/// but hop-by-hop ones (and `Content-Length`, which the body carries). A
/// `101` keeps `Upgrade` (and `Connection` is set by actix-http). Values
/// are slices of the head as read: nothing is copied.
pub fn response_headers(head: &ResponseHead, to: &mut AxHeaders, upgrade: bool) {
    let values: Vec<Bytes> = head.get_all("connection").collect();
    let named = connection_tokens(values.iter().map(|v| &v[..]));
    for (name, range) in &head.headers {
        let n = name.as_str();
        let keep_upgrade = upgrade && n == "upgrade";
        if (is_hop_by_hop(n) && !keep_upgrade)
            || named.iter().any(|t| t == n)
            || n == "content-length"
        {
            continue;
        }
        if let Ok(value) = ax::HeaderValue::from_maybe_shared(head.value(range)) {
            to.append(name.clone(), value);
        }
    }
}

/// `X-Forwarded-For`: every value the client sent, comma-joined, then the
/// peer's IP, as nginx's `$proxy_add_x_forwarded_for`.
fn forwarded_for(out: &mut BytesMut, headers: &AxHeaders, peer: Option<IpAddr>) {
    let mut first = true;
    for value in headers.get_all(X_FORWARDED_FOR) {
        out.extend_from_slice(if first { b"x-forwarded-for: " } else { b", " });
        out.extend_from_slice(value.as_bytes());
        first = false;
    }
    if let Some(peer) = peer {
        out.extend_from_slice(if first { b"x-forwarded-for: " } else { b", " });
        let _ = write!(out, "{peer}");
        first = false;
    }
    if !first {
        out.extend_from_slice(b"\r\n");
    }
}

/// A single well-formed `Content-Length`, if present.
pub fn content_length(values: &[&[u8]]) -> Option<u64> {
    match values {
        [one] => std::str::from_utf8(one).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Whether actix-http took the request for a WebSocket upgrade: any
/// `Upgrade` field that is `websocket` (and no chunked body). It then hands
/// the rest of the connection over as the request's body, whatever the
/// request's `Connection` or version.
pub fn upgrades_to_websocket(req: &HttpRequest) -> bool {
    let h = req.headers();
    h.get_all(ax::UPGRADE)
        .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        && !h.contains_key(ax::TRANSFER_ENCODING)
}

/// Whether the client asks for a WebSocket, which is tunnelled: HTTP/1.1,
/// `Connection: upgrade`, and `Upgrade: websocket` as actix-http sees it
/// ([`upgrades_to_websocket`]).
pub fn is_websocket(req: &HttpRequest) -> bool {
    let connection_upgrade =
        connection_tokens(req.headers().get_all(ax::CONNECTION).map(|v| v.as_bytes()))
            .iter()
            .any(|t| t == "upgrade");
    req.version() == actix_web::http::Version::HTTP_11
        && connection_upgrade
        && upgrades_to_websocket(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(content_length(&[b"12"]), Some(12));
        assert_eq!(content_length(&[b" 7 "]), Some(7));
        assert_eq!(content_length(&[b"1", b"1"]), None);
        assert_eq!(content_length(&[b"x"]), None);
        assert_eq!(content_length(&[]), None);
    }

    #[test]
    fn connection_tokens_are_lower_case_and_trimmed() {
        let v: Vec<&[u8]> = vec![b"keep-alive, X-Secret", b"Upgrade"];
        assert_eq!(
            connection_tokens(v.into_iter()),
            vec!["keep-alive", "x-secret", "upgrade"]
        );
    }
}
