//! What an upstream receives for a plain request (and nothing more), a
//! route's `max_body`, and an upstream port that refuses connections.

use std::time::{Duration, Instant};

use super::proxy_route;
use crate::util::closed_port;
use crate::util::http::Request;
use crate::util::upstream::{Reply, Upstream};

#[test]
fn the_upstream_receives_exactly_the_clients_headers_plus_forwarding_ones() {
    let upstream = Upstream::start(|_| Reply::new(200, "ok"));
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    // Sent as is: Host, Connection (hop-by-hop), and three of the client's.
    let resp = Request::get("/page?q=1")
        .header("Host", "app.example.test")
        .header("Connection", "close")
        .header("Accept", "text/html")
        .header("Accept-Language", "fr")
        .header("X-Client-Thing", "one")
        .send(daemon.http);
    assert_eq!(resp.status, 200, "{}", resp.text());

    let seen = upstream.received();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let req = &seen[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.target, "/page?q=1");
    let mut got: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("host", "app.example.test"),
        ("accept", "text/html"),
        ("accept-language", "fr"),
        ("x-client-thing", "one"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "app.example.test"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    want.sort();
    assert_eq!(
        got, want,
        "the client's headers (less Connection) plus X-Forwarded-*, and nothing of the proxy's own"
    );
    assert!(req.body.is_empty());
}

#[test]
fn a_body_over_max_body_is_413_and_never_reaches_the_upstream() {
    let upstream = Upstream::start(|r| Reply::new(200, format!("got {}", r.body.len())));
    let (_clace, daemon) = proxy_route(&upstream.url(), "max_body = 10\n");

    let resp = Request::new("POST", "/form")
        .body(vec![b'a'; 100])
        .send(daemon.http);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(upstream.count(), 0, "the upstream received nothing");
    assert_eq!(
        upstream.connections(),
        0,
        "a declared length over max_body is refused before connecting"
    );

    // Chunked, so the length is only known as it comes.
    let resp = Request::new("POST", "/form")
        .chunked_body(vec![b'b'; 100])
        .send(daemon.http);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(
        upstream.count(),
        0,
        "no whole request reached the upstream: {:?}",
        upstream.received()
    );

    // At the limit: through.
    let resp = Request::new("POST", "/form")
        .body(vec![b'c'; 10])
        .send(daemon.http);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "got 10");
    assert_eq!(upstream.count(), 1);

    // The two refusals are counted; an upstream's own 413 would not be.
    let metrics = Request::get("/_clace/metrics").send(daemon.http).text();
    assert!(
        metrics.contains("clace_refused_total{reason=\"body\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_closed_upstream_port_is_a_quick_502() {
    let port = closed_port();
    let (_clace, daemon) =
        proxy_route(&format!("http://127.0.0.1:{port}"), "connect_timeout = 1\n");
    let started = Instant::now();
    let resp = Request::get("/x").send(daemon.http);
    let took = started.elapsed();
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(
        resp.text().contains("refused"),
        "the client's line says why: {}",
        resp.text()
    );
    assert!(took < Duration::from_millis(1500), "502 at once: {took:?}");
    eprintln!("502 for a closed port after {took:?}");
}

/// `Upgrade: websocket` without `Connection: upgrade` is no handshake, but
/// actix-http hands such a request the rest of its connection as its body:
/// bytes past the declared length (here a second request, with a forged
/// `X-Forwarded-For`) must never reach the upstream.
#[test]
fn a_request_smuggled_behind_a_false_websocket_upgrade_never_reaches_the_upstream() {
    use std::io::{BufReader, Read};

    use super::{connect, write_now, RawUpstream, Shared};
    use crate::util::http::read_response_from;

    let seen: Shared<Vec<u8>> = Shared::default();
    let upstream = {
        let seen = seen.clone();
        RawUpstream::start(move |_, mut sock| {
            let mut buf = [0u8; 4096];
            let mut answered = false;
            loop {
                match sock.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.update(|s| s.extend_from_slice(&buf[..n])),
                }
                if !answered {
                    answered = true;
                    let _ = write_now(&mut sock, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            }
        })
    };
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut sock = connect(daemon.http);
    write_now(
        &mut sock,
        b"POST /app HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\n\
          helloGET /admin HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    )
    .expect("send");
    let resp = read_response_from(BufReader::new(sock), false).expect("a response");
    assert_eq!(resp.status, 400, "{}", resp.text());
    // A good request after it shows the daemon and upstream are idle.
    let resp = Request::get("/after").send(daemon.http);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = String::from_utf8_lossy(&seen.get()).into_owned();
    assert!(seen.contains("GET /after"), "{seen}");
    assert!(
        !seen.contains("/admin") && !seen.contains("POST /app"),
        "{seen}"
    );
}
