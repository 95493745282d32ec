//! Framing on the wire between the proxy and an upstream that writes exact
//! bytes: chunked bodies with extensions and trailers, interim (1xx)
//! responses, HTTP/1.0 and close-delimited answers, `Connection: close`,
//! HEAD, 204 and 304, malformed and oversized heads, bodies cut short, and
//! a client's ambiguous request framing.
//!
//! Every upstream records which of its connections (numbered from 0) each
//! request came on, so reuse is seen from the upstream's side. The client
//! talks to the daemon over one kept-alive connection where reuse matters,
//! so every request lands on the same worker and so in the same pool.

use std::io::{BufReader, Cursor, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{
    connect, contains, head_header, head_method, proxy_route, read_head, read_length_body,
    write_now, RawUpstream, Shared,
};
use crate::util::http::{read_line, read_response_from, send_raw, Response};
use crate::util::DEADLINE;

/// A request as the upstream read it.
#[derive(Debug, Clone)]
struct Seen {
    /// The upstream connection it came on (from 0).
    conn: usize,
    method: String,
    target: String,
    head: String,
    body: Vec<u8>,
}

/// What the upstream writes for one request: `pieces`, each written and
/// flushed on its own, then it closes the connection or waits for the
/// next request on it.
struct Answer {
    pieces: Vec<Vec<u8>>,
    close: bool,
}

impl Answer {
    /// `bytes` in one write; the connection stays open.
    fn keep(bytes: impl Into<Vec<u8>>) -> Answer {
        Answer {
            pieces: vec![bytes.into()],
            close: false,
        }
    }

    /// `pieces` one write each; the connection stays open.
    fn pieces(pieces: Vec<Vec<u8>>) -> Answer {
        Answer {
            pieces,
            close: false,
        }
    }

    /// `pieces` one write each, then the upstream closes.
    fn then_close(pieces: Vec<Vec<u8>>) -> Answer {
        Answer {
            pieces,
            close: true,
        }
    }
}

/// A raw upstream that reads requests (and their bodies, by length or
/// chunked),
/// records each, and writes what `answer` says for it.
fn scripted(
    answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
) -> (RawUpstream, Shared<Vec<Seen>>) {
    let log: Shared<Vec<Seen>> = Shared::default();
    let raw = {
        let log = log.clone();
        RawUpstream::start(move |conn, mut sock| loop {
            let Ok(Some(head)) = read_head(&mut sock) else {
                return;
            };
            let chunked = head_header(&head, "transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
            let body = if chunked {
                // Raw, up to the last chunk (the tests send no trailers).
                let mut body = Vec::new();
                let mut byte = [0u8; 1];
                while !body.ends_with(b"0\r\n\r\n") {
                    if sock.read_exact(&mut byte).is_err() {
                        return;
                    }
                    body.push(byte[0]);
                }
                body
            } else {
                let Ok(body) = read_length_body(&mut sock, &head) else {
                    return;
                };
                body
            };
            let seen = Seen {
                conn,
                method: head_method(&head).to_owned(),
                target: head.split(' ').nth(1).unwrap_or("").to_owned(),
                head,
                body,
            };
            log.update(|l| l.push(seen.clone()));
            let answer = answer(&seen);
            for piece in &answer.pieces {
                if write_now(&mut sock, piece).is_err() {
                    return;
                }
            }
            if answer.close {
                return;
            }
        })
    };
    (raw, log)
}

/// `(connection, target)` of every request the upstream read, in order.
fn conns(log: &Shared<Vec<Seen>>) -> Vec<(usize, String)> {
    log.get().into_iter().map(|s| (s.conn, s.target)).collect()
}

/// One kept-alive client connection to the daemon.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn open(addr: SocketAddr) -> Client {
        let writer = connect(addr);
        let reader = BufReader::new(writer.try_clone().expect("clone the socket"));
        Client { writer, reader }
    }

    /// Sends `method target` (HTTP/1.1, so kept alive) and reads one
    /// response: its status line exactly as sent (an interim response
    /// would show here), and the response.
    fn send(&mut self, method: &str, target: &str) -> (String, Response) {
        write_now(
            &mut self.writer,
            format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes(),
        )
        .expect("send a request");
        let status_line = read_line(&mut self.reader).expect("a status line");
        let resp = read_response_from(
            Cursor::new(format!("{status_line}\r\n").into_bytes()).chain(&mut self.reader),
            method == "HEAD",
        )
        .unwrap_or_else(|e| panic!("{method} {target}: a response after {status_line:?}: {e}"));
        (status_line, resp)
    }
}

/// Reads from `sock` until the peer closes (or resets) or `timeout`
/// passes; returns the bytes and whether the peer closed.
fn read_until_close(sock: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return (got, false);
        }
        match sock.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
}

/// `wire` cut into pieces of 1, 2, 3, 5, 8, 13 and 4096 bytes in turn, so
/// the proxy meets lines, sizes and heads split at odd places.
fn ragged(wire: &[u8]) -> Vec<Vec<u8>> {
    const SIZES: [usize; 7] = [1, 2, 3, 5, 8, 13, 4096];
    let mut pieces = Vec::new();
    let mut rest = wire;
    for size in SIZES.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at((*size).min(rest.len()));
        pieces.push(piece.to_vec());
        rest = after;
    }
    pieces
}

fn ok_with_length(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A body of `n` bytes that is not all one byte.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
fn a_chunked_response_with_extensions_and_trailers_arrives_whole_on_a_reused_connection() {
    let big = pattern(70_000);
    let mut wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
7;name=value\r\nhello, \r\n\
5 ; quoted=\"a;b\" ; flag\r\nworld\r\n"
        .to_vec();
    wire.extend_from_slice(format!("{:X};big\r\n", big.len()).as_bytes());
    wire.extend_from_slice(&big);
    wire.extend_from_slice(b"\r\n0;last=yes\r\nX-Checksum: abc123\r\nX-Other: 1\r\n\r\n");
    let mut expected = b"hello, world".to_vec();
    expected.extend_from_slice(&big);

    let (upstream, log) = scripted(move |seen| {
        if seen.target == "/whole" {
            Answer::keep(wire.clone())
        } else {
            Answer::pieces(ragged(&wire))
        }
    });
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for target in ["/whole", "/ragged"] {
        let (status_line, resp) = client.send("GET", target);
        assert!(
            status_line.starts_with("HTTP/1.1 200 "),
            "{target}: {status_line:?}; stderr:\n{}",
            daemon.proc.stderr()
        );
        assert_eq!(resp.header("content-type"), Some("text/plain"), "{target}");
        assert_eq!(
            resp.body.len(),
            expected.len(),
            "{target}: the whole body, its extensions and trailers not in it"
        );
        assert!(resp.body == expected, "{target}: the body's bytes");
    }
    assert_eq!(
        conns(&log),
        vec![(0, "/whole".to_owned()), (0, "/ragged".to_owned())],
        "the second request went on the connection the first one used"
    );
    assert_eq!(upstream.accepted(), 1);
}

#[test]
fn interim_responses_before_the_final_one_are_skipped() {
    let interim: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n".to_vec(),
        b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nX-Final: yes\r\n\r\nfinal answer.".to_vec(),
    ];
    let (upstream, log) = scripted(move |seen| {
        if seen.target == "/apart" {
            Answer::pieces(interim.clone())
        } else {
            // All three heads in one write: one read holds them all.
            Answer::keep(interim.concat())
        }
    });
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for target in ["/apart", "/together"] {
        let (status_line, resp) = client.send("GET", target);
        assert!(
            status_line.starts_with("HTTP/1.1 200 "),
            "{target}: the client's first status line is the final one: {status_line:?}"
        );
        assert_eq!(resp.text(), "final answer.", "{target}");
        assert_eq!(resp.header("x-final"), Some("yes"), "{target}");
        assert_eq!(
            resp.header("link"),
            None,
            "{target}: the 103's fields are not the final response's"
        );
    }
    assert_eq!(
        conns(&log),
        vec![(0, "/apart".to_owned()), (0, "/together".to_owned())],
        "nothing of the interim responses was left on the connection"
    );
}

#[test]
fn a_close_delimited_http10_response_arrives_whole_and_its_connection_is_not_reused() {
    let body = pattern(40_000);
    let (upstream, log) = {
        let body = body.clone();
        scripted(move |_| {
            Answer::then_close(vec![
                b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec(),
                body[..1000].to_vec(),
                body[1000..].to_vec(),
            ])
        })
    };
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for target in ["/first", "/second"] {
        let (status_line, resp) = client.send("GET", target);
        assert!(status_line.starts_with("HTTP/1.1 200 "), "{status_line:?}");
        assert_eq!(resp.body.len(), body.len(), "{target}: the whole body");
        assert!(resp.body == body, "{target}: the body's bytes");
    }
    assert_eq!(
        conns(&log),
        vec![(0, "/first".to_owned()), (1, "/second".to_owned())],
        "the second request opened a new upstream connection"
    );
    assert_eq!(upstream.accepted(), 2);
}

#[test]
fn an_http10_response_is_reused_only_when_it_says_keep_alive() {
    // The upstream never closes: only the proxy's reading of the head
    // decides whether the connection carries the next request.
    let (upstream, log) = scripted(|seen| {
        if seen.target.starts_with("/ka") {
            Answer::keep(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nka"
                    .to_vec(),
            )
        } else {
            Answer::keep(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nplain".to_vec())
        }
    });
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for (target, text) in [
        ("/ka/1", "ka"),
        ("/ka/2", "ka"),
        ("/plain", "plain"),
        ("/ka/3", "ka"),
    ] {
        let (_, resp) = client.send("GET", target);
        assert_eq!(resp.status, 200, "{target}: {}", resp.text());
        assert_eq!(resp.text(), text, "{target}");
    }
    assert_eq!(
        conns(&log),
        vec![
            (0, "/ka/1".to_owned()),
            (0, "/ka/2".to_owned()),
            (0, "/plain".to_owned()),
            (1, "/ka/3".to_owned()),
        ],
        "an HTTP/1.0 answer with keep-alive keeps its connection, one without ends it"
    );
}

#[test]
fn a_response_with_connection_close_ends_its_upstream_connection() {
    // The upstream says close but keeps the connection open and would
    // answer more on it: the proxy must not send another request there.
    let (upstream, log) = scripted(|seen| {
        let body = format!("{} answered", seen.target);
        Answer::keep(
            format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for target in ["/a", "/b"] {
        let (_, resp) = client.send("GET", target);
        assert_eq!(resp.status, 200, "{target}: {}", resp.text());
        assert_eq!(resp.text(), format!("{target} answered"));
    }
    assert_eq!(
        conns(&log),
        vec![(0, "/a".to_owned()), (1, "/b".to_owned())],
        "the second request went on a new upstream connection"
    );
    assert_eq!(upstream.accepted(), 2);
}

/// Asserts `resp` is the proxy's own short 502.
fn assert_short_502(what: &str, resp: &Response) {
    assert_eq!(resp.status, 502, "{what}: {}", resp.text());
    let text = resp.text();
    assert!(
        text.starts_with("bad gateway") && text.ends_with('\n') && text.lines().count() == 1,
        "{what}: one short line: {text:?}"
    );
    assert!(text.len() < 200, "{what}: short: {text:?}");
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{what}: {:?}",
        resp.headers
    );
}

#[test]
fn a_malformed_response_head_is_a_502_and_the_daemon_keeps_serving() {
    let (upstream, log) = scripted(|seen| match seen.target.as_str() {
        "/garbage" => Answer::keep(b"garbage\r\n\r\n".to_vec()),
        "/two-lengths" => Answer::keep(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
        ),
        "/bad-length" => {
            Answer::keep(b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello".to_vec())
        }
        "/bad-status" => Answer::keep(b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
        _ => Answer::keep(ok_with_length("good")),
    });
    let (_clace, mut daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for target in ["/garbage", "/two-lengths", "/bad-length", "/bad-status"] {
        let (_, resp) = client.send("GET", target);
        assert_short_502(target, &resp);
        assert!(
            !contains(&resp.body, b"hello") && !contains(&resp.body, b"garbage"),
            "{target}: nothing of the upstream's answer: {}",
            resp.text()
        );
        // The client's connection still carries requests, and the daemon
        // still answers them.
        let (_, resp) = client.send("GET", "/good");
        assert_eq!(resp.status, 200, "after {target}: {}", resp.text());
        assert_eq!(resp.text(), "good");
    }
    assert!(daemon.proc.is_running(), "{}", daemon.proc.stderr());
    // A connection that sent a malformed answer is never used again.
    let seen = conns(&log);
    for pair in seen.windows(2) {
        if pair[0].1 != "/good" {
            assert!(
                pair[1].0 > pair[0].0,
                "a new connection after {}: {seen:?}",
                pair[0].1
            );
        }
    }
}

#[test]
fn a_response_head_over_64_kib_is_a_502() {
    let filler: String = (0..100)
        .map(|i| format!("X-Filler-{i:03}: {}\r\n", "f".repeat(700)))
        .collect();
    let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{filler}\r\nok");
    let one_line = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Long: {}\r\n\r\nok",
        "l".repeat(70 * 1024)
    );
    // Never ends, and the upstream keeps the connection open.
    let endless = format!("HTTP/1.1 200 OK\r\n{filler}");
    assert!(huge.len() > 64 * 1024 && endless.len() > 64 * 1024);
    let (upstream, log) = scripted(move |seen| match seen.target.as_str() {
        "/huge" => Answer::keep(huge.clone()),
        "/one-line" => Answer::keep(one_line.clone()),
        "/endless" => Answer::pieces(ragged(endless.as_bytes())),
        _ => Answer::keep(ok_with_length("good")),
    });
    let (_clace, mut daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for target in ["/huge", "/one-line", "/endless"] {
        let started = Instant::now();
        let (_, resp) = client.send("GET", target);
        assert_short_502(target, &resp);
        assert!(
            started.elapsed() < DEADLINE,
            "{target}: at once, not at a timeout"
        );
        let (_, resp) = client.send("GET", "/good");
        assert_eq!(resp.status, 200, "after {target}: {}", resp.text());
        assert_eq!(resp.text(), "good");
    }
    assert!(daemon.proc.is_running(), "{}", daemon.proc.stderr());
    assert_eq!(log.get().len(), 6, "{:?}", conns(&log));
}

#[test]
fn a_head_request_gets_the_length_without_a_body_and_its_connection_is_reused() {
    let body = pattern(1234);
    let (upstream, log) = {
        let body = body.clone();
        scripted(move |seen| {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if seen.target == "/stream" {
                // A HEAD answered as a chunked GET would be: no length.
                Answer::keep("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            } else if seen.method == "HEAD" {
                Answer::keep(head)
            } else {
                Answer::keep([head.into_bytes(), body.clone()].concat())
            }
        })
    };
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    let (status_line, resp) = client.send("HEAD", "/stream");
    assert!(status_line.starts_with("HTTP/1.1 200 "), "{status_line:?}");
    assert!(
        !resp.has_header("content-length"),
        "no length the upstream did not give: {:?}",
        resp.headers
    );
    let (status_line, resp) = client.send("HEAD", "/file");
    assert!(
        status_line.starts_with("HTTP/1.1 200 "),
        "no body bytes after the first HEAD's head: {status_line:?}"
    );
    assert_eq!(
        resp.header("content-length"),
        Some("1234"),
        "the upstream's length: {:?}",
        resp.headers
    );
    assert!(
        resp.header("transfer-encoding").is_none(),
        "{:?}",
        resp.headers
    );
    // Any body byte after the HEAD's head would spoil the next status line.
    let (status_line, resp) = client.send("GET", "/file");
    assert!(
        status_line.starts_with("HTTP/1.1 200 "),
        "no body bytes after the HEAD's head: {status_line:?}"
    );
    assert_eq!(resp.body.len(), body.len());
    assert!(resp.body == body, "the GET's body is intact");
    assert_eq!(
        conns(&log),
        vec![
            (0, "/stream".to_owned()),
            (0, "/file".to_owned()),
            (0, "/file".to_owned())
        ],
        "the HEADs and the GET went on one connection"
    );
    assert_eq!(
        log.get()
            .iter()
            .map(|s| s.method.clone())
            .collect::<Vec<_>>(),
        ["HEAD", "HEAD", "GET"]
    );
}

#[test]
fn no_content_and_not_modified_have_no_body_and_their_connection_is_reused() {
    let (upstream, log) = scripted(|seen| match seen.target.as_str() {
        "/empty" => Answer::keep(b"HTTP/1.1 204 No Content\r\nX-Deleted: yes\r\n\r\n".to_vec()),
        "/cached" => Answer::keep(
            // The length of the representation, not of a body.
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 42\r\n\r\n".to_vec(),
        ),
        _ => Answer::keep(ok_with_length("page body")),
    });
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    let (status_line, resp) = client.send("GET", "/empty");
    assert!(status_line.starts_with("HTTP/1.1 204 "), "{status_line:?}");
    assert_eq!(resp.header("x-deleted"), Some("yes"));
    assert!(
        !resp.has_header("transfer-encoding") && !resp.has_header("content-length"),
        "a 204 has no body framing: {:?}",
        resp.headers
    );
    let (status_line, resp) = client.send("GET", "/cached");
    assert!(
        status_line.starts_with("HTTP/1.1 304 "),
        "no body bytes after the 204: {status_line:?}"
    );
    assert_eq!(resp.header("etag"), Some("\"v1\""));
    assert!(
        !resp.has_header("transfer-encoding"),
        "a 304 has no body framing: {:?}",
        resp.headers
    );
    assert!(
        matches!(resp.header("content-length"), None | Some("42")),
        "a 304's length, if any, is the representation's: {:?}",
        resp.headers
    );
    let (status_line, resp) = client.send("GET", "/page");
    assert!(
        status_line.starts_with("HTTP/1.1 200 "),
        "no body bytes after the 304: {status_line:?}"
    );
    assert_eq!(resp.text(), "page body");
    assert_eq!(
        conns(&log),
        vec![
            (0, "/empty".to_owned()),
            (0, "/cached".to_owned()),
            (0, "/page".to_owned())
        ],
        "one upstream connection for all three"
    );
}

#[test]
fn a_body_cut_short_by_the_upstream_never_looks_complete_to_the_client() {
    let (upstream, _log) = scripted(|seen| match seen.target.as_str() {
        "/length-with-head" => Answer::then_close(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
        ]),
        "/length-later" => Answer::then_close(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(),
            b"0123456789".to_vec(),
        ]),
        "/chunked-between-chunks" => Answer::then_close(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            b"a\r\n0123456789\r\n".to_vec(),
        ]),
        "/chunked-inside-a-chunk" => Answer::then_close(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            b"20\r\n0123456789".to_vec(),
        ]),
        _ => Answer::keep(ok_with_length("good")),
    });
    let (_clace, mut daemon) = proxy_route(&upstream.url(), "");

    for target in [
        "/length-with-head",
        "/length-later",
        "/chunked-between-chunks",
        "/chunked-inside-a-chunk",
    ] {
        let mut sock = connect(daemon.http);
        // Kept alive: a close is then the daemon's way of saying "cut".
        write_now(
            &mut sock,
            format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes(),
        )
        .expect("send the request");
        let started = Instant::now();
        let (raw, closed) = read_until_close(&mut sock, DEADLINE);
        let shown = String::from_utf8_lossy(&raw);
        assert!(
            closed,
            "{target}: the client's connection is closed, not left hanging; got {shown:?}"
        );
        eprintln!(
            "{target}: closed after {:?} with {} bytes: {shown:?}",
            started.elapsed(),
            raw.len()
        );
        match read_response_from(&raw[..], false) {
            Err(e) => eprintln!("{target}: incomplete for the client ({e})"),
            Ok(resp) => assert!(
                resp.status >= 500,
                "{target}: a response that looks complete: {} {:?}",
                resp.status,
                resp.text()
            ),
        }
    }
    let (_, resp) = Client::open(daemon.http).send("GET", "/good");
    assert_eq!(resp.text(), "good");
    assert!(daemon.proc.is_running(), "{}", daemon.proc.stderr());
}

#[test]
fn a_request_with_ambiguous_framing_is_refused_or_forwarded_with_one_length() {
    let (upstream, log) = scripted(|_| Answer::keep(ok_with_length("ok")));
    let (_clace, daemon) = proxy_route(&upstream.url(), "");

    let smuggled = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "length then chunked",
            "POST /cl-te HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_owned(),
        ),
        (
            "chunked then length",
            "POST /te-cl HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_owned(),
        ),
        (
            "a request hidden after the last chunk",
            format!(
                "POST /te-cl-smuggle HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "two different lengths",
            "POST /cl-cl HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
                .to_owned(),
        ),
    ];
    for (what, request) in &cases {
        let resp = send_raw(daemon.http, request.as_bytes(), false)
            .unwrap_or_else(|e| panic!("{what}: a response: {e}"));
        let target = request.split(' ').nth(1).unwrap_or("");
        let forwarded: Vec<Seen> = log
            .get()
            .into_iter()
            .filter(|s| s.target == target)
            .collect();
        if forwarded.is_empty() {
            assert_eq!(
                resp.status,
                400,
                "{what}: refused, not answered otherwise: {}",
                resp.text()
            );
            eprintln!("{what}: refused by the daemon with 400; nothing reached the upstream");
        } else {
            assert_eq!(forwarded.len(), 1, "{what}: {forwarded:?}");
            let head = &forwarded[0].head;
            let framings = head
                .split("\r\n")
                .filter(|l| {
                    let name = l.split(':').next().unwrap_or("").trim();
                    name.eq_ignore_ascii_case("content-length")
                        || name.eq_ignore_ascii_case("transfer-encoding")
                })
                .count();
            assert_eq!(framings, 1, "{what}: one framing header upstream: {head}");
            eprintln!(
                "{what}: forwarded with one framing header:\n{head}body {:?}",
                String::from_utf8_lossy(&forwarded[0].body)
            );
        }
    }
    // Nothing hidden in a body became a request of its own upstream.
    let (_, resp) = Client::open(daemon.http).send("GET", "/good");
    assert_eq!(resp.text(), "ok");
    let seen = log.get();
    assert!(
        seen.iter()
            .all(|s| s.target != "/smuggled" && (s.method == "GET" || s.method == "POST")),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(|s| s.target.as_str()), Some("/good"));
}

#[test]
fn bytes_past_the_end_of_a_response_are_never_taken_as_the_next_one() {
    const FORGED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";
    let log: Shared<Vec<(usize, String)>> = Shared::default();
    let extra_written: Shared<usize> = Shared::default();
    let upstream = {
        let log = log.clone();
        let extra_written = extra_written.clone();
        RawUpstream::start(move |conn, mut sock| loop {
            let Ok(Some(head)) = read_head(&mut sock) else {
                return;
            };
            let target = head.split(' ').nth(1).unwrap_or("").to_owned();
            log.update(|l| l.push((conn, target.clone())));
            let answer = format!("{target} answered");
            let answer = ok_with_length(&answer);
            let written = match target.as_str() {
                // A response, and another nobody asked for, in one write.
                "/same-write" => write_now(&mut sock, &[answer, FORGED.to_vec()].concat()),
                // The same, the unasked one in a write of its own.
                "/later" => {
                    write_now(&mut sock, &answer).and_then(|()| write_now(&mut sock, FORGED))
                }
                _ => write_now(&mut sock, &answer),
            };
            if written.is_err() {
                return;
            }
            if target != "/next" {
                extra_written.update(|n| *n += 1);
            }
        })
    };
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for (n, target) in ["/same-write", "/later"].into_iter().enumerate() {
        let (_, resp) = client.send("GET", target);
        assert_eq!(resp.text(), format!("{target} answered"));
        // On loopback, a write that returned is in the daemon's socket.
        assert!(
            crate::util::wait_until(DEADLINE, || extra_written.get() > n),
            "the upstream wrote its unasked response"
        );
        let (_, resp) = client.send("GET", "/next");
        assert_eq!(
            resp.text(),
            "/next answered",
            "after {target}: the answer to this request, not the unasked one"
        );
    }
    let seen = log.get();
    assert_eq!(
        seen.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        // The first /next's clean connection carries /later.
        [0, 1, 1, 2],
        "a connection that sent more than it was asked is not used again: {seen:?}"
    );
}

#[test]
fn a_response_with_both_chunked_and_a_length_is_read_as_chunked() {
    let (upstream, log) = scripted(|_| {
        Answer::keep(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
b\r\nchunked won\r\n0\r\n\r\n"
                .to_vec(),
        )
    });
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = Client::open(daemon.http);

    for target in ["/one", "/two"] {
        let (status_line, resp) = client.send("GET", target);
        assert!(status_line.starts_with("HTTP/1.1 200 "), "{status_line:?}");
        assert_eq!(
            resp.text(),
            "chunked won",
            "{target}: Transfer-Encoding overrides Content-Length (RFC 9112 §6.3)"
        );
        assert_ne!(
            resp.header("content-length"),
            Some("3"),
            "{target}: the upstream's Content-Length is not passed on: {:?}",
            resp.headers
        );
    }
    assert_eq!(log.get().len(), 2, "{:?}", conns(&log));
}
