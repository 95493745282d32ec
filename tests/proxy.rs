//! `proxy` routes: method, path and query kept, bodies intact both ways,
//! forwarding headers added, hop-by-hop headers dropped, 502 when the
//! upstream is down.

use crate::util::http::{get, Request};
use crate::util::upstream::{Reply, Upstream};
use std::time::{Duration, Instant};

use crate::util::{closed_port, config_with, unique, Clace, Daemon};

fn proxy_to(path: &str, upstream_url: &str) -> (Clace, Daemon) {
    let clace = Clace::new();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"{path}\"\nproxy = \"{upstream_url}\"\n"
    )));
    let daemon = clace.serve();
    (clace, daemon)
}

/// Bytes that are not text, so nothing on the way may treat them as such.
fn binary_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn post_reaches_upstream_with_method_path_query_body_and_forwarded_headers() {
    let marker = unique("upstream");
    let reply_body = binary_body(300 * 1024);
    let upstream = {
        let marker = marker.clone();
        let reply_body = reply_body.clone();
        Upstream::start(move |_| {
            Reply::new(201, reply_body.clone())
                .header("X-Upstream-Id", &marker)
                .header("Content-Type", "application/x-test")
        })
    };
    let (_clace, daemon) = proxy_to("/api", &upstream.url());

    let body = binary_body(100 * 1024);
    let target = "/api/items/7?x=1&y=two%20words&z=%2F";
    let resp = Request::new("POST", target)
        .header("Host", "public.example.test:8080")
        .header("Content-Type", "application/octet-stream")
        .header("X-Custom", "kept")
        .body(body.clone())
        .send(daemon.http);

    assert_eq!(resp.status, 201, "the upstream's status comes back");
    assert_eq!(resp.header("x-upstream-id"), Some(marker.as_str()));
    assert_eq!(resp.header("content-type"), Some("application/x-test"));
    assert!(
        resp.body == reply_body,
        "the upstream's body comes back intact"
    );

    let seen = upstream.received();
    assert_eq!(seen.len(), 1, "one request upstream: {seen:?}");
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, target, "full path and query kept");
    assert!(
        req.body == body,
        "request body intact ({} bytes)",
        req.body.len()
    );
    assert_eq!(req.header("x-custom"), Some("kept"));
    assert_eq!(req.header("content-type"), Some("application/octet-stream"));
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(req.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        req.header("x-forwarded-host"),
        Some("public.example.test:8080"),
        "X-Forwarded-Host is the Host the client sent"
    );
}

#[test]
fn x_forwarded_for_is_appended_to() {
    let upstream = Upstream::start(|_| Reply::new(200, "ok"));
    let (_clace, daemon) = proxy_to("/api", &upstream.url());
    let resp = Request::get("/api/xff")
        .header("X-Forwarded-For", "203.0.113.9")
        .send(daemon.http);
    assert_eq!(resp.status, 200);
    let req = &upstream.received()[0];
    let chain = req.header_all("x-forwarded-for").join(", ");
    assert_eq!(
        chain, "203.0.113.9, 127.0.0.1",
        "the peer is appended to the client's chain"
    );
}

#[test]
fn chunked_request_body_is_streamed_to_the_upstream() {
    let upstream = Upstream::start(|r| Reply::new(200, format!("got {}", r.body.len())));
    let (_clace, daemon) = proxy_to("/up", &upstream.url());
    let body = binary_body(64 * 1024 + 17);
    let resp = Request::new("PUT", "/up/load")
        .chunked_body(body.clone())
        .send(daemon.http);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), format!("got {}", body.len()));
    let seen = upstream.received();
    assert_eq!(seen[0].method, "PUT");
    assert!(seen[0].body == body, "chunked body intact");
}

#[test]
fn upstream_error_statuses_pass_through() {
    let upstream = Upstream::start(|_| Reply::new(418, "short and stout"));
    let (_clace, daemon) = proxy_to("/tea", &upstream.url());
    let resp = Request::new("DELETE", "/tea/pot").send(daemon.http);
    assert_eq!(resp.status, 418);
    assert_eq!(resp.text(), "short and stout");
    assert_eq!(upstream.received()[0].method, "DELETE");
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let upstream = Upstream::start(|_| {
        Reply::new(200, "ok")
            .header("Connection", "X-Resp-Hop")
            .header("X-Resp-Hop", "upstream-only")
            .header("Keep-Alive", "timeout=5")
            .header("X-End-To-End", "yes")
    });
    let (_clace, daemon) = proxy_to("/api", &upstream.url());
    let resp = Request::get("/api/hop")
        .header("Connection", "close, X-Req-Hop")
        .header("X-Req-Hop", "client-only")
        .header("Keep-Alive", "300")
        .header("Proxy-Connection", "keep-alive")
        .header("X-End-To-End", "kept")
        .send(daemon.http);
    assert_eq!(resp.status, 200);

    let req = &upstream.received()[0];
    assert_eq!(req.header("x-end-to-end"), Some("kept"));
    assert_eq!(
        req.header("x-req-hop"),
        None,
        "a header named in Connection is hop-by-hop"
    );
    assert_eq!(req.header("keep-alive"), None);
    assert_eq!(req.header("proxy-connection"), None);
    for value in req.header_all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-req-hop"),
            "the client's Connection header is not forwarded: {value}"
        );
    }

    assert_eq!(resp.header("x-end-to-end"), Some("yes"));
    assert_eq!(
        resp.header("x-resp-hop"),
        None,
        "a header the upstream named in Connection stays between it and the proxy"
    );
    assert_eq!(resp.header("keep-alive"), None);
}

#[test]
fn upstream_down_gives_502() {
    let port = closed_port();
    let (_clace, daemon) = proxy_to("/api", &format!("http://127.0.0.1:{port}"));
    let resp = get(daemon.http, "/api/anything");
    assert_eq!(resp.status, 502, "body: {}", resp.text());
    assert!(!resp.body.is_empty(), "a short message explains the 502");
    assert!(resp.body.len() < 1024, "a short message: {}", resp.text());
    // The daemon keeps serving.
    assert_eq!(get(daemon.http, "/_clace/health").status, 200);
}

#[test]
fn connections_to_the_upstream_are_reused() {
    let upstream = Upstream::start(|r| Reply::new(200, r.target.clone()));
    let (_clace, daemon) = proxy_to("/api", &upstream.url());
    for i in 0..5 {
        let path = format!("/api/n/{i}");
        assert_eq!(get(daemon.http, &path).text(), path);
    }
    assert_eq!(upstream.count(), 5);
    assert!(
        upstream.connections() < 5,
        "sequential requests reuse pooled upstream connections ({} opened)",
        upstream.connections()
    );
}

#[test]
fn upstream_slower_than_the_route_timeout_gives_504() {
    let upstream = Upstream::start(|_| Reply::new(200, "too late").delay(Duration::from_secs(4)));
    let clace = Clace::new();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/slow\"\nproxy = \"{}\"\ntimeout = 1\n",
        upstream.url()
    )));
    let daemon = clace.serve();
    let started = Instant::now();
    let resp = get(daemon.http, "/slow/x");
    assert_eq!(resp.status, 504, "body: {}", resp.text());
    assert!(
        resp.text().contains("gateway timeout"),
        "a short message explains the 504: {}",
        resp.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the 504 comes after the route's 1 s timeout, not the upstream's 4 s: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_route_timeout_is_a_configuration_error() {
    let clace = Clace::new();
    clace.write_config(&config_with(
        "[[route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:9\"\ntimeout = 0\n",
    ));
    let out = clace.run(&["check"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("route[0].timeout"),
        "stderr: {}",
        out.stderr
    );
}
