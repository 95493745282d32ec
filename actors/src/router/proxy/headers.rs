//! Which headers cross the proxy, each way.
//!
//! actix-web speaks `http` 0.2 types and hyper `http` 1: headers are carried
//! across by their bytes, filtered on the way.

use std::net::IpAddr;

use actix_web::http::header::{self as ax, HeaderMap as AxHeaders, HeaderName as AxName};
use actix_web::HttpRequest;
use http::header::{HeaderMap, HeaderName, HeaderValue};

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

/// The headers sent upstream: the client's, minus hop-by-hop ones and
/// `Expect` (actix-web answered `100-continue` already), plus the original
/// `Host` and the `X-Forwarded-*` trio. With `upgrade` (a WebSocket
/// handshake), `Connection: upgrade` and the `Upgrade` header are kept.
pub fn request_headers(req: &HttpRequest, scheme: &str, upgrade: bool) -> HeaderMap {
    let incoming = req.headers();
    let named = connection_tokens(incoming.get_all(ax::CONNECTION).map(|v| v.as_bytes()));
    let mut out = HeaderMap::with_capacity(incoming.len() + 4);
    for (name, value) in incoming.iter() {
        let n = name.as_str();
        if is_hop_by_hop(n)
            || named.iter().any(|t| t == n)
            || n == "expect"
            || n == X_FORWARDED_FOR
            || n == X_FORWARDED_PROTO
            || n == X_FORWARDED_HOST
        {
            continue;
        }
        append(&mut out, n, value.as_bytes());
    }
    if upgrade {
        if let Some(u) = incoming.get(ax::UPGRADE) {
            append(&mut out, "upgrade", u.as_bytes());
            append(&mut out, "connection", b"upgrade");
        }
    }

    // HTTP/2 clients send `:authority` instead of `Host`.
    let host = incoming
        .get(ax::HOST)
        .map(|h| h.as_bytes().to_vec())
        .or_else(|| {
            req.uri()
                .authority()
                .map(|a| a.as_str().as_bytes().to_vec())
        });
    if let Some(host) = host {
        set(&mut out, "host", &host);
        set(&mut out, X_FORWARDED_HOST, &host);
    }
    if let Some(value) = forwarded_for(incoming, req.peer_addr().map(|p| p.ip())) {
        set(&mut out, X_FORWARDED_FOR, &value);
    }
    set(&mut out, X_FORWARDED_PROTO, scheme.as_bytes());
    out
}

/// The upstream's response headers the client gets: all but hop-by-hop
/// ones (and `Content-Length`, which the body carries). A `101` keeps
/// `Upgrade` (and `Connection` is set by actix-http).
pub fn response_headers(
    headers: &HeaderMap,
    upgrade: bool,
) -> impl Iterator<Item = (AxName, ax::HeaderValue)> + '_ {
    let named = connection_tokens(headers.get_all("connection").iter().map(|v| v.as_bytes()));
    headers.iter().filter_map(move |(name, value)| {
        let n = name.as_str();
        let keep_upgrade = upgrade && n == "upgrade";
        if (is_hop_by_hop(n) && !keep_upgrade)
            || named.iter().any(|t| t == n)
            || n == "content-length"
        {
            return None;
        }
        let name = AxName::from_bytes(name.as_str().as_bytes()).ok()?;
        let value = ax::HeaderValue::from_bytes(value.as_bytes()).ok()?;
        Some((name, value))
    })
}

/// `X-Forwarded-For`: every value the client sent, comma-joined, then the
/// peer's IP, as nginx's `$proxy_add_x_forwarded_for`.
fn forwarded_for(headers: &AxHeaders, peer: Option<IpAddr>) -> Option<Vec<u8>> {
    let mut joined: Vec<u8> = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Some(peer) = peer {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(peer.to_string().as_bytes());
    }
    (!joined.is_empty()).then_some(joined)
}

/// A single well-formed `Content-Length`, if present.
pub fn content_length(values: &[&[u8]]) -> Option<u64> {
    match values {
        [one] => std::str::from_utf8(one).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn append(map: &mut HeaderMap, name: &str, value: &[u8]) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_bytes(value),
    ) {
        map.append(n, v);
    }
}

fn set(map: &mut HeaderMap, name: &str, value: &[u8]) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_bytes(value),
    ) {
        map.insert(n, v);
    }
}

/// Whether the client asks for a WebSocket (the one upgrade actix-http
/// hands over as a raw stream): HTTP/1.1, `Connection: upgrade`,
/// `Upgrade: websocket`.
pub fn is_websocket(req: &HttpRequest) -> bool {
    let h = req.headers();
    let connection_upgrade = connection_tokens(h.get_all(ax::CONNECTION).map(|v| v.as_bytes()))
        .iter()
        .any(|t| t == "upgrade");
    let websocket = h
        .get(ax::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    req.version() == actix_web::http::Version::HTTP_11 && connection_upgrade && websocket
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
