//! Proxy routes: forward a request to an upstream with awc and stream the
//! answer back.
//!
//! # What the upstream sees
//!
//! - The method, and the full original path and query appended to the
//!   upstream URL (`http://127.0.0.1:8080/base` + `/app/x?y=1`).
//! - The client's headers, minus the hop-by-hop ones (RFC 9110 §7.6.1:
//!   `Connection` and every header it names, `Keep-Alive`,
//!   `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade`) and `Expect` (actix-web has
//!   already answered `100-continue` to the client).
//! - The original `Host`, kept as Caddy does (nginx's `proxy_pass` puts the
//!   upstream's host there instead): applications behind clace see the name
//!   the user typed, for virtual hosting, absolute links and cookies. An
//!   HTTP/2 client's `:authority` becomes `Host`. Upstreams are spoken to in
//!   HTTP/1.1 only, because over HTTP/2 awc would put the upstream's name in
//!   `:authority` and drop `Host`.
//! - `X-Forwarded-For`: any value the client sent, then the peer IP;
//!   `X-Forwarded-Proto`: the listener's scheme; `X-Forwarded-Host`: the
//!   original host. The last two replace what the client sent.
//! - Nothing awc would add on its own: no `User-Agent`, no `Date`, no
//!   `Accept-Encoding` (responses are not decompressed either), no redirect
//!   following.
//!
//! # Bodies
//!
//! Both bodies are streamed, never collected. A request body keeps its
//! framing: a known `Content-Length` is sent as such, a chunked one (or an
//! HTTP/2 body without length) goes chunked, and a request without a body
//! is sent without one. A response with `Content-Length` keeps it (useful
//! for download progress and HEAD); otherwise it is streamed in whatever
//! framing the client's protocol uses.
//!
//! # Failures
//!
//! An upstream that cannot be reached is 502 (`bad gateway: upstream
//! 127.0.0.1:9 refused the connection`); one that does not accept the
//! connection or send its response head within the client's timeouts is
//! 504. The detail goes to the log, the client gets one short line.
//! WebSocket and other upgrades are not forwarded (`Upgrade` is stripped).

use std::{net::IpAddr, time::Duration};

use actix_web::{
    body::{self, SizedStream},
    http::{
        header::{self, HeaderMap, HeaderName, HeaderValue},
        Method, StatusCode, Version,
    },
    web, HttpRequest, HttpResponse,
};
use awc::error::{ConnectError, SendRequestError};
use futures_util::StreamExt as _;

/// How long connecting to an upstream (DNS, TCP, TLS) may take before 504.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Builds the upstream client of one actix worker.
///
/// `timeout` is the fallback for requests that do not set their own
/// (`forward` always does, with the route's). It bounds the time from sending the request until the upstream's
/// response head has arrived (awc counts the request body in it); the
/// response body is then streamed without a time limit, so long downloads
/// and server-sent events are not cut. Connecting, including the TLS
/// handshake, may take 5 seconds each. HTTPS upstreams are verified against
/// the webpki roots, with rustls' process-default crypto provider: ring is
/// the only one compiled in, so rustls picks it by itself. (Should a second
/// provider ever be compiled in, the binary must install a default before
/// the first worker starts, or `awc::Connector::new` panics.)
///
/// awc's HTTP/1 encoder always writes a `Date` header on requests; that is
/// the only header the upstream sees that the client did not send, besides
/// `X-Forwarded-*` (and `Host` for HTTP/2 clients). A request body is
/// flushed upstream in 8 KiB steps (awc's write buffer), so memory per
/// request stays bounded while a slow upload trickles through.
///
/// awc pools connections per client, so the caller creates one per worker
/// (in the App factory) and reuses it.
pub fn client(timeout: Duration) -> awc::Client {
    let connector = awc::Connector::new()
        .timeout(CONNECT_TIMEOUT)
        .handshake_timeout(CONNECT_TIMEOUT)
        // HTTP/1.1 only, so that `Host` reaches the upstream (see the
        // module documentation).
        .max_http_version(Version::HTTP_11);
    awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .disable_redirects()
        .no_default_headers()
        .finish()
}

/// Forwards `req` with its `body` to `upstream` (`http://host:port` or
/// `https://host[:port]`, optionally with a path prefix, no trailing `/`)
/// and streams the response back. `scheme` is the listener's, `"http"` or
/// `"https"`, sent as `X-Forwarded-Proto`. `timeout` is the route's: how
/// long the upstream may take, from the moment the request is sent, to
/// deliver its response head (504 after); it replaces the client's own
/// timeout for this request.
pub async fn forward(
    req: &HttpRequest,
    body: web::Payload,
    client: &awc::Client,
    upstream: &str,
    scheme: &str,
    timeout: Duration,
) -> HttpResponse {
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{upstream}{path_and_query}");
    let authority = upstream_authority(upstream);

    let mut upstream_req = client
        .request(req.method().clone(), url.as_str())
        .no_decompress()
        .timeout(timeout);
    *upstream_req.headers_mut() = request_headers(req, scheme);

    let sent = match request_body_length(req.headers()) {
        RequestBody::Chunked => upstream_req.send_stream(body).await,
        RequestBody::Length(length) => upstream_req.send_body(SizedStream::new(length, body)).await,
        RequestBody::Unknown => {
            // Without `Content-Length` or `Transfer-Encoding` an HTTP/1.1
            // request has no body (RFC 9112 §6.3), but an HTTP/2 one may
            // still carry DATA frames: look at the first chunk to tell
            // "no body" (sent without one) from "body of unknown length".
            let mut body = body;
            match body.next().await {
                // `send()` would announce `Content-Length: 0`.
                None => upstream_req.send_body(body::None::new()).await,
                Some(first) => {
                    let rest = futures_util::stream::once(async move { first }).chain(body);
                    upstream_req.send_stream(rest).await
                }
            }
        }
    };

    let upstream_res = match sent {
        Ok(res) => res,
        Err(err) => return error_response(&err, upstream, authority),
    };

    let status = upstream_res.status();
    let mut res = HttpResponse::build(status);
    let headers = upstream_res.headers();
    let length = content_length(headers);
    let named = connection_tokens(headers);
    for (name, value) in headers.iter() {
        if is_hop_by_hop(name) || named.contains(name) || name == header::CONTENT_LENGTH {
            continue;
        }
        res.append_header((name.clone(), value.clone()));
    }

    // 1xx, 204 and 304 never have a body (RFC 9110 §6.4.1); sending one
    // with a length would make actix-http wait for bytes that never come.
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return res.body(body::None::new());
    }
    match length {
        // For HEAD the length is announced and the (empty) body is never
        // polled by the dispatcher.
        Some(length) => res.body(SizedStream::new(length, upstream_res)),
        None if req.method() == Method::HEAD => res.body(body::None::new()),
        None => res.streaming(upstream_res),
    }
}

/// How the request body is framed.
enum RequestBody {
    Chunked,
    Length(u64),
    Unknown,
}

fn request_body_length(headers: &HeaderMap) -> RequestBody {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // actix-http accepted the request, so its transfer coding is
        // chunked; it wins over any Content-Length (RFC 9112 §6.3).
        RequestBody::Chunked
    } else if let Some(length) = content_length(headers) {
        RequestBody::Length(length)
    } else {
        RequestBody::Unknown
    }
}

/// A single well-formed `Content-Length`, if present.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH);
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// The headers sent upstream: the client's minus hop-by-hop, plus the
/// `X-Forwarded-*` trio and the original `Host`.
fn request_headers(req: &HttpRequest, scheme: &str) -> HeaderMap {
    let incoming = req.headers();
    let named = connection_tokens(incoming);
    let mut out = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming.iter() {
        if is_hop_by_hop(name)
            || named.contains(name)
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || name == X_FORWARDED_HOST
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }

    // HTTP/2 clients send `:authority` instead of `Host`.
    let host = incoming.get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });
    if let Some(host) = host {
        out.insert(header::HOST, host.clone());
        out.insert(X_FORWARDED_HOST, host);
    }

    if let Some(value) = forwarded_for(incoming, req.peer_addr().map(|peer| peer.ip())) {
        out.insert(X_FORWARDED_FOR, value);
    }
    if let Ok(scheme) = HeaderValue::from_str(scheme) {
        out.insert(X_FORWARDED_PROTO, scheme);
    }
    out
}

/// `X-Forwarded-For`: every value the client sent, comma-joined, then the
/// peer's IP, as nginx's `$proxy_add_x_forwarded_for`.
fn forwarded_for(headers: &HeaderMap, peer: Option<IpAddr>) -> Option<HeaderValue> {
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
    if joined.is_empty() {
        return None;
    }
    // The bytes come from valid header values and an IP address, so this
    // cannot fail; `ok()` instead of a panic all the same.
    HeaderValue::from_bytes(&joined).ok()
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == PROXY_CONNECTION
        || name == KEEP_ALIVE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
}

/// The header names listed in `Connection`, which are hop-by-hop too.
fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

/// `host:port` of the upstream URL, for messages.
fn upstream_authority(upstream: &str) -> &str {
    let without_scheme = upstream
        .split_once("://")
        .map_or(upstream, |(_, rest)| rest);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

/// Maps a failed exchange to 502, 504 (or 400 when the client's own body
/// broke), with one short line for the client and the detail in the log.
fn error_response(err: &SendRequestError, upstream: &str, authority: &str) -> HttpResponse {
    let (status, message) = match err {
        SendRequestError::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("gateway timeout: upstream {authority} did not answer in time"),
        ),
        SendRequestError::Connect(ConnectError::Timeout) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("gateway timeout: upstream {authority} did not accept the connection in time"),
        ),
        SendRequestError::Connect(ConnectError::Io(io))
            if io.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            (
                StatusCode::BAD_GATEWAY,
                format!("bad gateway: upstream {authority} refused the connection"),
            )
        }
        SendRequestError::Connect(
            ConnectError::Resolver(_) | ConnectError::NoRecords | ConnectError::Unresolved,
        ) => (
            StatusCode::BAD_GATEWAY,
            format!("bad gateway: upstream host {authority} could not be resolved"),
        ),
        SendRequestError::Connect(_) => (
            StatusCode::BAD_GATEWAY,
            format!("bad gateway: upstream {authority} could not be reached"),
        ),
        // The stream that failed is the client's request body (a client
        // that went away or sent a short body), not the upstream.
        SendRequestError::Body(_) => (
            StatusCode::BAD_REQUEST,
            "bad request: the request body could not be read".to_owned(),
        ),
        SendRequestError::Url(_) | SendRequestError::Http(_) => (
            StatusCode::BAD_GATEWAY,
            format!("bad gateway: cannot build a request for upstream {authority}"),
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            format!("bad gateway: upstream {authority} failed to answer"),
        ),
    };
    if status == StatusCode::BAD_REQUEST {
        log::debug!("proxy to {upstream}: {err}");
    } else {
        log::warn!("proxy to {upstream} failed: {err}");
    }
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is a test failure.
    #![allow(clippy::unwrap_used)]

    use std::{net::SocketAddr, pin::Pin};

    use actix_web::{
        body::{to_bytes, BodySize, MessageBody},
        dev::{Payload, ServerHandle, ServiceResponse},
        error::PayloadError,
        test, web, App, FromRequest as _, HttpServer,
    };
    use bytes::Bytes;
    use futures_util::future::poll_fn;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        sync::mpsc,
        time::timeout,
    };

    use super::*;

    /// Generous deadline for anything a test waits on; never a fixed sleep.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// The proxy route under test: everything goes to the upstream in
    /// `app_data`, as the HTTPS listener would send it.
    async fn proxy_handler(
        req: HttpRequest,
        body: web::Payload,
        client: web::Data<awc::Client>,
        upstream: web::Data<String>,
        timeout: web::Data<Duration>,
    ) -> HttpResponse {
        forward(&req, body, &client, &upstream, "https", **timeout).await
    }

    /// The app under test; a macro because the request type of
    /// `test::init_service` (`actix_http::Request`) cannot be named here.
    macro_rules! proxy_app {
        ($upstream:expr) => {
            proxy_app!($upstream, DEADLINE)
        };
        ($upstream:expr, $timeout:expr) => {
            test::init_service(
                App::new()
                    // The route's timeout is what applies, not the client's.
                    .app_data(web::Data::new(client(Duration::from_secs(3600))))
                    .app_data(web::Data::new(String::from($upstream)))
                    .app_data(web::Data::new($timeout))
                    .default_service(web::to(proxy_handler)),
            )
            .await
        };
    }

    /// Upstream handler: echoes the request line, the sorted headers and
    /// the body, and sets a few response headers of its own.
    async fn echo(req: HttpRequest, body: Bytes) -> HttpResponse {
        let mut headers: Vec<String> = req
            .headers()
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
            .collect();
        headers.sort();
        let text = format!(
            "{} {}\n{}\n\n{}",
            req.method(),
            req.uri(),
            headers.join("\n"),
            String::from_utf8_lossy(&body)
        );
        HttpResponse::Created()
            .insert_header(("x-upstream", "yes"))
            .append_header((header::SET_COOKIE, "a=1"))
            .append_header((header::SET_COOKIE, "b=2"))
            .body(text)
    }

    async fn redirect() -> HttpResponse {
        HttpResponse::Found()
            .insert_header((header::LOCATION, "/elsewhere"))
            .finish()
    }

    async fn gzipped() -> HttpResponse {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(&b"\x1f\x8b\x08\x00not really gzip"[..])
    }

    /// Streams "one", waits until the test says go, then streams "two".
    async fn stream_out(gate: web::Data<Gate>) -> HttpResponse {
        let receiver = gate.0.lock().await.take();
        let chunks = futures_util::stream::unfold((0, receiver), |(step, receiver)| async move {
            match step {
                0 => Some((
                    Ok::<_, actix_web::Error>(Bytes::from_static(b"one")),
                    (1, receiver),
                )),
                1 => {
                    if let Some(mut receiver) = receiver {
                        let _ = timeout(DEADLINE, receiver.recv()).await;
                    }
                    Some((Ok(Bytes::from_static(b"two")), (2, None)))
                }
                _ => None,
            }
        });
        HttpResponse::Ok().streaming(chunks)
    }

    /// Reads the first request chunk, reports it, then reads the rest and
    /// echoes everything.
    async fn stream_in(
        mut body: web::Payload,
        seen: web::Data<mpsc::Sender<Bytes>>,
    ) -> HttpResponse {
        let mut all = Vec::new();
        let mut first = true;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            if first {
                seen.send(chunk.clone()).await.unwrap();
                first = false;
            }
            all.extend_from_slice(&chunk);
        }
        HttpResponse::Ok().body(all)
    }

    /// A go signal for `stream_out`, shared with the upstream's worker.
    #[derive(Default)]
    struct Gate(tokio::sync::Mutex<Option<mpsc::Receiver<()>>>);

    /// A real upstream on 127.0.0.1:0, stopped by `stop`.
    struct Upstream {
        addr: SocketAddr,
        handle: ServerHandle,
    }

    impl Upstream {
        fn start(gate: web::Data<Gate>, seen: web::Data<mpsc::Sender<Bytes>>) -> Upstream {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(gate.clone())
                    .app_data(seen.clone())
                    .route("/redirect", web::get().to(redirect))
                    .route("/gz", web::get().to(gzipped))
                    .route("/stream-out", web::get().to(stream_out))
                    .route("/stream-in", web::post().to(stream_in))
                    .default_service(web::to(echo))
            })
            .workers(1)
            .disable_signals()
            // The listener is bound already, so connections queue in its
            // backlog until the worker runs: no wait for readiness.
            .listen(listener)
            .unwrap()
            .run();
            let handle = server.handle();
            actix_web::rt::spawn(server);
            Upstream { addr, handle }
        }

        fn simple() -> Upstream {
            let (sender, _receiver) = mpsc::channel(1);
            Upstream::start(web::Data::new(Gate::default()), web::Data::new(sender))
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        async fn stop(self) {
            self.handle.stop(false).await;
        }
    }

    async fn text(res: ServiceResponse) -> String {
        String::from_utf8(to_bytes(res.into_body()).await.unwrap().to_vec()).unwrap()
    }

    fn lines(echo: &str) -> Vec<&str> {
        echo.lines().collect()
    }

    #[actix_web::test]
    async fn method_path_query_and_bodies_round_trip() {
        let upstream = Upstream::simple();
        let app = proxy_app!(format!("{}/base", upstream.url()));

        let req = test::TestRequest::put()
            .uri("/api/x%20y?a=1&b=%20")
            .insert_header((header::HOST, "app.example.com"))
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload("payload")
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(res.headers().get("x-upstream").unwrap(), "yes");
        let cookies: Vec<_> = res.headers().get_all(header::SET_COOKIE).collect();
        assert_eq!(cookies.len(), 2);
        // The upstream's length is kept rather than re-chunked.
        assert!(matches!(res.response().body().size(), BodySize::Sized(_)));
        let echo = text(res).await;
        let lines = lines(&echo);
        assert_eq!(lines[0], "PUT /base/api/x%20y?a=1&b=%20");
        assert!(lines.contains(&"content-length: 7"), "{echo}");
        assert!(lines.contains(&"content-type: text/plain"), "{echo}");
        assert!(!echo.contains("transfer-encoding"), "{echo}");
        assert!(echo.ends_with("\n\npayload"), "{echo}");

        // A GET without a body arrives without one.
        let req = test::TestRequest::get().uri("/?q").to_request();
        let echo = text(test::call_service(&app, req).await).await;
        assert!(echo.starts_with("GET /base/?q\n"), "{echo}");
        assert!(!echo.contains("content-length"), "{echo}");
        assert!(!echo.contains("transfer-encoding"), "{echo}");

        for method in [Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS] {
            let req = test::TestRequest::default()
                .method(method.clone())
                .uri("/m")
                .to_request();
            let echo = text(test::call_service(&app, req).await).await;
            assert!(echo.starts_with(&format!("{method} /base/m\n")), "{echo}");
        }
        upstream.stop().await;
    }

    #[actix_web::test]
    async fn forwarded_headers_and_host() {
        let upstream = Upstream::simple();
        let app = proxy_app!(upstream.url());

        let req = test::TestRequest::get()
            .uri("/")
            .peer_addr("192.0.2.7:5555".parse().unwrap())
            .insert_header((header::HOST, "app.example.com"))
            .insert_header(("x-forwarded-for", "10.0.0.1"))
            .insert_header(("x-forwarded-proto", "gopher"))
            .insert_header(("x-forwarded-host", "evil.example"))
            .insert_header((header::USER_AGENT, "curl/8.0"))
            .to_request();
        let echo = text(test::call_service(&app, req).await).await;
        let got = lines(&echo);
        assert!(got.contains(&"host: app.example.com"), "{echo}");
        assert!(
            got.contains(&"x-forwarded-for: 10.0.0.1, 192.0.2.7"),
            "{echo}"
        );
        assert!(got.contains(&"x-forwarded-proto: https"), "{echo}");
        assert!(got.contains(&"x-forwarded-host: app.example.com"), "{echo}");
        assert!(got.contains(&"user-agent: curl/8.0"), "{echo}");
        assert_eq!(echo.matches("x-forwarded").count(), 3, "{echo}");

        // Without a client User-Agent or Accept-Encoding awc adds none
        // (it does add `Date`: actix-http's HTTP/1 encoder always writes one).
        let req = test::TestRequest::get()
            .uri("/")
            .peer_addr("[2001:db8::1]:5555".parse().unwrap())
            .to_request();
        let echo = text(test::call_service(&app, req).await).await;
        assert!(!echo.contains("user-agent"), "{echo}");
        assert!(!echo.contains("accept-encoding"), "{echo}");
        assert!(
            lines(&echo).contains(&"x-forwarded-for: 2001:db8::1"),
            "{echo}"
        );
        upstream.stop().await;
    }

    #[actix_web::test]
    async fn request_hop_by_hop_headers_are_stripped() {
        let upstream = Upstream::simple();
        let app = proxy_app!(upstream.url());

        let req = test::TestRequest::get()
            .uri("/")
            .insert_header((header::CONNECTION, "keep-alive, X-Secret"))
            .insert_header(("x-secret", "hop"))
            .insert_header((header::PROXY_AUTHORIZATION, "Basic Zm9vOmJhcg=="))
            .insert_header(("keep-alive", "timeout=5"))
            .insert_header(("proxy-connection", "keep-alive"))
            .insert_header((header::TE, "trailers"))
            .insert_header((header::TRAILER, "x-t"))
            .insert_header((header::UPGRADE, "websocket"))
            .insert_header(("x-normal", "kept"))
            .to_request();
        let echo = text(test::call_service(&app, req).await).await;
        for gone in [
            "x-secret:",
            "proxy-authorization:",
            "keep-alive:",
            "proxy-connection:",
            "te:",
            "trailer:",
            "upgrade:",
            "connection:",
        ] {
            assert!(
                !echo.lines().any(|line| line.starts_with(gone)),
                "{gone} reached the upstream:\n{echo}"
            );
        }
        assert!(echo.contains("x-normal: kept"), "{echo}");
        upstream.stop().await;
    }

    /// A raw upstream that answers one request with `response` verbatim.
    async fn raw_upstream(response: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        actix_web::rt::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0_u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response).await.unwrap();
            socket.shutdown().await.unwrap();
        });
        addr
    }

    #[actix_web::test]
    async fn response_hop_by_hop_headers_are_stripped() {
        let addr = raw_upstream(
            b"HTTP/1.1 200 OK\r\n\
              Connection: close, X-Hop\r\n\
              X-Hop: secret\r\n\
              Keep-Alive: timeout=5\r\n\
              Proxy-Authenticate: Basic\r\n\
              Trailer: X-T\r\n\
              Upgrade: h2c\r\n\
              Transfer-Encoding: chunked\r\n\
              X-Kept: yes\r\n\
              \r\n\
              2\r\nok\r\n0\r\n\r\n",
        )
        .await;
        let app = proxy_app!(format!("http://{addr}"));
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        for gone in [
            header::CONNECTION,
            HeaderName::from_static("x-hop"),
            KEEP_ALIVE,
            header::PROXY_AUTHENTICATE,
            header::TRAILER,
            header::UPGRADE,
            header::TRANSFER_ENCODING,
        ] {
            assert!(res.headers().get(&gone).is_none(), "{gone} came back");
        }
        assert_eq!(res.headers().get("x-kept").unwrap(), "yes");
        assert_eq!(res.response().body().size(), BodySize::Stream);
        assert_eq!(text(res).await, "ok");
    }

    #[actix_web::test]
    async fn responses_are_passed_as_they_are() {
        let upstream = Upstream::simple();
        let app = proxy_app!(upstream.url());

        // A redirect is handed to the client, not followed.
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/redirect").to_request()).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(res.headers().get(header::LOCATION).unwrap(), "/elsewhere");

        // A compressed body is not decompressed.
        let req = test::TestRequest::get()
            .uri("/gz")
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.headers().get(header::CONTENT_ENCODING).unwrap(), "gzip");
        assert_eq!(
            to_bytes(res.into_body()).await.unwrap(),
            &b"\x1f\x8b\x08\x00not really gzip"[..]
        );
        upstream.stop().await;
    }

    #[actix_web::test]
    async fn response_body_is_streamed() {
        let (go, receiver) = mpsc::channel::<()>(1);
        let gate = Gate(tokio::sync::Mutex::new(Some(receiver)));
        let (sender, _seen) = mpsc::channel(1);
        let upstream = Upstream::start(web::Data::new(gate), web::Data::new(sender));
        let app = proxy_app!(upstream.url());

        let res = test::call_service(
            &app,
            test::TestRequest::get().uri("/stream-out").to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        // "one" arrives while the upstream is still holding "two" back.
        let first = timeout(DEADLINE, poll_fn(|cx| Pin::new(&mut body).poll_next(cx)))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first, "one");
        go.send(()).await.unwrap();
        let mut rest = Vec::new();
        while let Some(chunk) = timeout(DEADLINE, poll_fn(|cx| Pin::new(&mut body).poll_next(cx)))
            .await
            .unwrap()
        {
            rest.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(rest, b"two");
        upstream.stop().await;
    }

    #[actix_web::test]
    async fn request_body_is_streamed() {
        let (sender, mut seen) = mpsc::channel(1);
        let upstream = Upstream::start(web::Data::new(Gate::default()), web::Data::new(sender));
        // The client's body: chunks from a channel, as from a slow uploader.
        let (chunks, chunk_receiver) = mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(chunk_receiver, |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|chunk| (Ok::<_, PayloadError>(chunk), receiver))
        });
        let mut req = test::TestRequest::post()
            .uri("/stream-in")
            .insert_header((header::TRANSFER_ENCODING, "chunked"))
            .to_srv_request();
        let boxed: Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>> =
            Box::pin(stream);
        req.set_payload(Payload::from(boxed));
        let (req, mut payload) = req.into_parts();
        let body = web::Payload::from_request(&req, &mut payload)
            .await
            .unwrap();

        let call = async {
            let client = client(DEADLINE);
            forward(&req, body, &client, &upstream.url(), "http", DEADLINE).await
        };
        // awc flushes a request body once its 8 KiB write buffer is full
        // (or at the end), so the first chunk is larger than that.
        let first = Bytes::from(vec![b'a'; 16 * 1024]);
        let feed = async {
            chunks.send(first.clone()).await.unwrap();
            // The upstream has part of the body before the rest exists.
            let got = timeout(DEADLINE, seen.recv()).await.unwrap().unwrap();
            assert!(!got.is_empty() && got.iter().all(|&b| b == b'a'));
            chunks.send(Bytes::from_static(b"end")).await.unwrap();
            drop(chunks);
        };
        let (res, ()) = futures_util::join!(call, feed);
        assert_eq!(res.status(), StatusCode::OK);
        let echoed = to_bytes(res.into_body()).await.unwrap();
        assert_eq!(echoed.len(), first.len() + 3);
        assert!(echoed.ends_with(b"aend"));
        upstream.stop().await;
    }

    #[actix_web::test]
    async fn closed_port_is_502() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let app = proxy_app!(format!("http://127.0.0.1:{port}"));
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            text(res).await,
            format!("bad gateway: upstream 127.0.0.1:{port} refused the connection\n")
        );
    }

    #[actix_web::test]
    async fn silent_upstream_is_504() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, mut held) = mpsc::unbounded_channel();
        actix_web::rt::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = hold.send(socket);
            }
        });
        let app = proxy_app!(format!("http://{addr}"), Duration::from_millis(300));
        let res = timeout(
            DEADLINE,
            test::call_service(&app, test::TestRequest::get().uri("/").to_request()),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            text(res).await,
            format!("gateway timeout: upstream {addr} did not answer in time\n")
        );
        held.close();
    }

    #[actix_web::test]
    async fn authority_for_messages() {
        assert_eq!(upstream_authority("http://127.0.0.1:9"), "127.0.0.1:9");
        assert_eq!(
            upstream_authority("https://app.internal/base"),
            "app.internal"
        );
    }
}
