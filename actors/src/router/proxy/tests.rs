//! Unit tests of the proxy against real upstreams on 127.0.0.1.
// Tests may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, pin::Pin};

use actix_web::http::header::{self, HeaderName};
use actix_web::{
    body::{to_bytes, BodySize, MessageBody},
    dev::{Payload, ServerHandle, ServiceResponse},
    error::PayloadError,
    test, web, App, FromRequest as _, HttpServer,
};
use bytes::Bytes;
use futures_util::future::poll_fn;
use futures_util::StreamExt as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::mpsc,
    time::timeout,
};

use super::*;

/// Generous deadline for anything a test waits on; never a fixed sleep.
const DEADLINE: Duration = Duration::from_secs(10);

/// A route to `url` whose head timeout is `timeout`.
fn target(url: &str, timeout: Duration) -> ProxyTarget {
    ProxyTarget {
        url: url.to_string(),
        timeout,
        connect_timeout: Duration::from_secs(5),
        idle_timeout: DEADLINE,
        ca_file: None,
        server_name: None,
    }
}

/// The proxy route under test: everything goes to the upstream in
/// `app_data`, as the HTTPS listener would send it.
async fn proxy_handler(
    req: HttpRequest,
    body: web::Payload,
    upstreams: web::Data<Upstreams>,
    target: web::Data<ProxyTarget>,
) -> HttpResponse {
    forward(&req, body, &upstreams, &target, None, "https", "/").await
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
                .app_data(web::Data::new(Upstreams::default()))
                .app_data(web::Data::new(target(&$upstream, $timeout)))
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
async fn stream_in(mut body: web::Payload, seen: web::Data<mpsc::Sender<Bytes>>) -> HttpResponse {
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

    // Without a client User-Agent, Accept-Encoding or Date, none is added.
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
        .insert_header((header::UPGRADE, "h2c"))
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

    // `Upgrade: websocket` without `Connection: upgrade` is no handshake,
    // yet actix-http would hand it the rest of the connection: refused.
    let req = test::TestRequest::post()
        .uri("/")
        .insert_header((header::UPGRADE, "websocket"))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
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
        HeaderName::from_static("keep-alive"),
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
        let upstreams = Upstreams::default();
        let target = target(&upstream.url(), DEADLINE);
        forward(&req, body, &upstreams, &target, None, "http", "/").await
    };
    // A small first chunk: it goes up as it is, not held for more.
    let first = Bytes::from_static(b"aaaa");
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
