//! WebSocket through the proxy, over both listeners: messages of every
//! kind and size come back, pings are answered, either side's close
//! reaches the other, and a route's idle timeout ends a silent connection
//! but not a chatty one.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::{proxy_route, read_head, write_now, RawUpstream};
use crate::tls_util::World;
use crate::util::ws::{
    self, CloseCode, CloseFrame, Event, Message, WebSocket, WsUpstream, CLOSE_ME, DROP_ME,
    UPSTREAM_BYE,
};
use crate::util::{toml_str, wait_until, DEADLINE};

/// Bytes that are not text and not periodic on a frame boundary.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 4093) as u8).collect()
}

/// Text, binary, a 1 MiB message and a ping, each answered in kind.
fn exchange_messages<S: Read + Write>(ws: &mut WebSocket<S>) {
    ws::send(ws, Message::text("hello through clace"));
    assert_eq!(
        ws::read(ws),
        Message::text("hello through clace"),
        "text echoed"
    );

    let small = binary(300);
    ws::send(ws, Message::binary(small.clone()));
    match ws::read(ws) {
        Message::Binary(b) => assert!(b == small, "binary echoed intact"),
        other => panic!("expected a binary echo, got {other:?}"),
    }

    let big = binary(1024 * 1024);
    ws::send(ws, Message::binary(big.clone()));
    match ws::read(ws) {
        Message::Binary(b) => {
            assert_eq!(b.len(), big.len(), "the 1 MiB message comes back whole");
            assert!(b == big, "the 1 MiB message comes back intact");
        }
        other => panic!("expected the 1 MiB echo, got {other:?}"),
    }

    ws::send(ws, Message::Ping(b"are you there".to_vec().into()));
    match ws::read(ws) {
        Message::Pong(p) => {
            assert_eq!(&p[..], b"are you there", "the pong carries the ping's data")
        }
        other => panic!("expected a pong, got {other:?}"),
    }
}

/// The upstream's events for connection 0 include what
/// [`exchange_messages`] sent.
fn assert_upstream_saw_messages(upstream: &WsUpstream) {
    let ok = wait_until(DEADLINE, || {
        upstream
            .events_of(0)
            .iter()
            .any(|e| matches!(e, Event::Ping(_)))
    });
    let events = upstream.events_of(0);
    assert!(ok, "the upstream saw the ping: {events:?}");
    let data: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Data { .. }))
        .collect();
    assert_eq!(
        data,
        vec![
            &Event::Data {
                text: true,
                len: 19
            },
            &Event::Data {
                text: false,
                len: 300
            },
            &Event::Data {
                text: false,
                len: 1024 * 1024
            },
        ],
        "the upstream received each message once, whole"
    );
    assert!(
        events.contains(&Event::Ping(b"are you there".to_vec())),
        "{events:?}"
    );
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn websocket_through_the_http_listener_carries_text_binary_1mib_and_ping() {
    let upstream = WsUpstream::start();
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let started = Instant::now();
    let mut ws = ws::connect(daemon.http, "/live/socket?room=1");
    exchange_messages(&mut ws);
    eprintln!("messages through ws://: {:?}", started.elapsed());
    assert_upstream_saw_messages(&upstream);

    let events = upstream.events_of(0);
    let Some(Event::Opened { target, headers }) = events.first() else {
        panic!("the upstream's first event is the handshake: {events:?}");
    };
    assert_eq!(target, "/live/socket?room=1", "path and query kept");
    assert_eq!(header(headers, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(headers, "host").map(str::to_owned),
        Some(daemon.http.to_string()),
        "the client's Host"
    );
    assert!(
        header(headers, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{headers:?}"
    );
}

#[test]
fn websocket_through_the_https_listener_carries_text_binary_1mib_and_ping() {
    let upstream = WsUpstream::start();
    let world = World::with_certs();
    world.configure(
        "",
        "",
        &format!(
            "[[route]]\npath = \"/\"\nproxy = {}\n",
            toml_str(upstream.url())
        ),
    );
    let tls = world.serve();
    let started = Instant::now();
    let mut ws = ws::connect_tls(tls.https, "localhost", "/wss/socket");
    exchange_messages(&mut ws);
    eprintln!("messages through wss://: {:?}", started.elapsed());
    assert_upstream_saw_messages(&upstream);
    let headers = upstream.opened_headers(0).expect("handshake seen");
    assert_eq!(header(&headers, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(&headers, "host"), Some("localhost"));

    // A close from the client side over TLS too.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "client bye".into(),
    }))
    .expect("send close");
    let ending = ws::read_to_end(&mut ws, DEADLINE).expect("the connection ends");
    assert!(
        ending.close.is_some(),
        "the upstream's close answer came back: {ending:?}"
    );
    assert!(
        wait_until(DEADLINE, || upstream
            .events_of(0)
            .contains(&Event::ClientClose(Some(1000)))),
        "the upstream saw the client's close: {:?}",
        upstream.events_of(0)
    );
}

#[test]
fn websocket_close_from_the_client_reaches_the_upstream() {
    let upstream = WsUpstream::start();
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut ws = ws::connect(daemon.http, "/ws");
    ws::send(&mut ws, Message::text("one"));
    assert_eq!(ws::read(&mut ws), Message::text("one"));

    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "client leaves".into(),
    }))
    .expect("send close");
    let ending = ws::read_to_end(&mut ws, DEADLINE).expect("the connection ends");
    let frame = ending
        .close
        .clone()
        .flatten()
        .unwrap_or_else(|| panic!("the upstream answered the close: {ending:?}"));
    assert_eq!(u16::from(frame.code), 1001, "the close code echoed");
    assert!(
        wait_until(DEADLINE, || upstream.ended(0)),
        "the upstream's connection ended: {:?}",
        upstream.events_of(0)
    );
    let events = upstream.events_of(0);
    assert!(
        events.contains(&Event::ClientClose(Some(1001))),
        "the upstream saw the client's close frame with its code: {events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&Event::Ended("closed".into())),
        "a clean closing handshake"
    );
}

#[test]
fn websocket_close_from_the_upstream_reaches_the_client() {
    let upstream = WsUpstream::start();
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut ws = ws::connect(daemon.http, "/ws");
    ws::send(&mut ws, Message::text(CLOSE_ME));
    let started = Instant::now();
    let frame = match ws::read(&mut ws) {
        Message::Close(Some(frame)) => frame,
        other => panic!("the client sees the upstream's close frame, not {other:?}"),
    };
    let frame_after = started.elapsed();
    let ending = ws::read_to_end(&mut ws, DEADLINE).expect("the connection ends");
    eprintln!(
        "upstream close frame seen after {frame_after:?}, the connection's end after {:?} ({})",
        ending.at - started,
        ending.error
    );
    assert_eq!(frame.code, CloseCode::Normal);
    assert_eq!(frame.reason.as_str(), UPSTREAM_BYE);
    assert!(
        wait_until(DEADLINE, || upstream.ended(0)),
        "the upstream's connection ended: {:?}",
        upstream.events_of(0)
    );
    let events = upstream.events_of(0);
    assert!(events.contains(&Event::SentClose), "{events:?}");
    assert_eq!(
        events.last(),
        Some(&Event::Ended("closed".into())),
        "the client's answer to the close reached the upstream"
    );
}

#[test]
fn websocket_client_vanishing_ends_the_upstream_connection() {
    let upstream = WsUpstream::start();
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut ws = ws::connect(daemon.http, "/ws");
    ws::send(&mut ws, Message::text("one"));
    assert_eq!(ws::read(&mut ws), Message::text("one"));
    // No close frame: the TCP connection just goes.
    let sock = ws.into_inner();
    sock.shutdown(std::net::Shutdown::Both).expect("shutdown");
    drop(sock);
    let started = Instant::now();
    assert!(
        wait_until(DEADLINE, || upstream.ended(0)),
        "the upstream's connection ended when the client's did: {:?}",
        upstream.events_of(0)
    );
    eprintln!("upstream saw the end after {:?}", started.elapsed());
}

#[test]
fn websocket_upstream_vanishing_ends_the_client_connection() {
    let upstream = WsUpstream::start();
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut ws = ws::connect(daemon.http, "/ws");
    ws::send(&mut ws, Message::text("one"));
    assert_eq!(ws::read(&mut ws), Message::text("one"));
    // The upstream drops its TCP connection, no close frame.
    ws::send(&mut ws, Message::text(DROP_ME));
    let started = Instant::now();
    let ending = ws::read_to_end(&mut ws, DEADLINE)
        .expect("the client's connection ends when the upstream's does");
    eprintln!(
        "the client saw the end {:?} after the upstream dropped ({})",
        ending.at - started,
        ending.error
    );
    assert!(
        ending.close.is_none(),
        "no close frame was sent: {ending:?}"
    );
    assert!(upstream.ended(0));
}

#[test]
fn a_websocket_handshake_the_upstream_refuses_gets_its_answer() {
    // The upstream answers the upgrade with a plain 403.
    let upstream = RawUpstream::start(|_, mut sock| {
        if read_head(&mut sock).ok().flatten().is_none() {
            return;
        }
        let _ = write_now(
            &mut sock,
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nContent-Type: text/plain\r\n\r\nno socket",
        );
    });
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let sock = std::net::TcpStream::connect(daemon.http).expect("connect");
    sock.set_read_timeout(Some(DEADLINE)).expect("timeout");
    match tungstenite::client(format!("ws://{}/ws", daemon.http), sock) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 403);
            assert_eq!(
                resp.body().as_deref(),
                Some(&b"no socket"[..]),
                "the upstream's body comes back"
            );
        }
        Err(e) => panic!("expected the upstream's 403, got {e}"),
        Ok((_, resp)) => panic!("the handshake cannot succeed: {resp:?}"),
    }
    // The daemon still serves.
    let resp = crate::util::http::get(daemon.http, "/_clace/health");
    assert_eq!(resp.status, 200);
}

#[test]
fn websocket_idle_timeout_closes_a_silent_connection() {
    let upstream = WsUpstream::start();
    let (_clace, mut daemon) = proxy_route(&upstream.url(), "idle_timeout = 1\n");
    let mut ws = ws::connect(daemon.http, "/ws");
    ws::send(&mut ws, Message::text("one"));
    assert_eq!(ws::read(&mut ws), Message::text("one"));
    let quiet_since = Instant::now();
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let ending = ws::read_to_end(&mut ws, Duration::from_secs(8))
        .expect("a WebSocket silent for longer than idle_timeout = 1 is closed");
    let after = ending.at - quiet_since;
    eprintln!("silent WebSocket closed after {after:?} ({ending:?})");
    assert!(
        after >= Duration::from_millis(900),
        "not closed before the idle timeout: {after:?}"
    );
    assert!(
        after < Duration::from_secs(5),
        "closed within a few seconds: {after:?}"
    );
    assert!(
        wait_until(DEADLINE, || upstream.ended(0)),
        "the upstream's side closed too: {:?}",
        upstream.events_of(0)
    );
    // Whichever direction's timer ends the tunnel, the log says why, with
    // the route and upstream.
    let line = daemon
        .proc
        .wait_for_line("idle_timeout", Duration::from_secs(3));
    assert!(
        line.contains(&format!("route / -> {}", upstream.url())),
        "the idle close is logged with the route and upstream: {line}"
    );
}

#[test]
fn websocket_idle_timeout_spares_a_chatty_connection() {
    let upstream = WsUpstream::start();
    let (_clace, daemon) = proxy_route(&upstream.url(), "idle_timeout = 1\n");
    let mut ws = ws::connect(daemon.http, "/ws");
    let started = Instant::now();
    let mut i = 0;
    // Three idle timeouts long, a message every 300 ms (alternately from
    // the client, and a ping).
    while started.elapsed() < Duration::from_millis(3200) {
        if i % 2 == 0 {
            let text = format!("message {i}");
            ws::send(&mut ws, Message::text(text.clone()));
            assert_eq!(
                ws::read(&mut ws),
                Message::text(text),
                "echo {i} at {:?}",
                started.elapsed()
            );
        } else {
            ws::send(&mut ws, Message::Ping(vec![i as u8].into()));
            assert_eq!(ws::read(&mut ws), Message::Pong(vec![i as u8].into()));
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    ws::send(&mut ws, Message::text("still here"));
    assert_eq!(ws::read(&mut ws), Message::text("still here"));
    assert!(
        !upstream.ended(0),
        "the upstream's connection is still open: {:?}",
        upstream.events_of(0)
    );
}
