//! Pooled upstream connections that the upstream closes: a request never
//! fails for it when it is safe to send again, and a POST is never sent
//! twice.
//!
//! The client talks to the daemon over one kept-alive connection, so every
//! request lands on the same worker and so in the same pool.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{
    connect, head_method, proxy_route, read_head, read_length_body, write_now, RawUpstream, Shared,
};
use crate::util::http::{read_response_from, Response};
use crate::util::{wait_until, DEADLINE};

/// A request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Req {
    /// The upstream connection it came on (from 0).
    conn: usize,
    method: String,
    target: String,
    body: Vec<u8>,
}

/// What the upstream does with the `nth` request (from 0) of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Answers it and waits for the next one.
    Answer,
    /// Answers it (keep-alive), waits a moment and closes the connection.
    AnswerThenClose,
    /// Reads it whole and closes without an answer.
    Drop,
}

/// An upstream that records every request it reads and treats each as
/// `policy(nth)` says; `closed` counts the connections it closed itself.
fn upstream(policy: fn(usize) -> Then) -> (RawUpstream, Shared<Vec<Req>>, Shared<usize>) {
    let log: Shared<Vec<Req>> = Shared::default();
    let closed: Shared<usize> = Shared::default();
    let raw = {
        let log = log.clone();
        let closed = closed.clone();
        RawUpstream::start(move |conn, mut sock| {
            for nth in 0.. {
                let Ok(Some(head)) = read_head(&mut sock) else {
                    return;
                };
                let Ok(body) = read_length_body(&mut sock, &head) else {
                    return;
                };
                let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                log.update(|l| {
                    l.push(Req {
                        conn,
                        method: head_method(&head).to_owned(),
                        target: target.clone(),
                        body,
                    })
                });
                let then = policy(nth);
                if then == Then::Drop {
                    closed.update(|c| *c += 1);
                    return;
                }
                let answer = format!("{target} on {conn}");
                if write_now(
                    &mut sock,
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nKeep-Alive: timeout=60\r\n\r\n{answer}",
                        answer.len()
                    )
                    .as_bytes(),
                )
                .is_err()
                {
                    return;
                }
                if then == Then::AnswerThenClose {
                    // A short keep-alive of the upstream's own.
                    std::thread::sleep(Duration::from_millis(200));
                    let _ = sock.shutdown(std::net::Shutdown::Both);
                    closed.update(|c| *c += 1);
                    return;
                }
            }
        })
    };
    (raw, log, closed)
}

/// One kept-alive client connection to the daemon.
pub(super) struct KeepAlive {
    addr: SocketAddr,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    pub(super) fn open(addr: SocketAddr) -> KeepAlive {
        let writer = connect(addr);
        let reader = BufReader::new(writer.try_clone().expect("clone the socket"));
        KeepAlive {
            addr,
            writer,
            reader,
        }
    }

    pub(super) fn send(&mut self, method: &str, target: &str, body: &[u8]) -> Response {
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n",
            self.addr
        );
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        write_now(
            &mut self.writer,
            &[req.into_bytes(), body.to_vec()].concat(),
        )
        .expect("send a request");
        read_response_from(&mut self.reader, method == "HEAD").expect("a response")
    }
}

fn count(log: &[Req], method: &str, target: &str) -> usize {
    log.iter()
        .filter(|r| r.method == method && r.target == target)
        .count()
}

#[test]
fn a_pooled_connection_the_upstream_closed_meanwhile_is_not_a_failure() {
    let (upstream, log, closed) = upstream(|_| Then::AnswerThenClose);
    let (_clace, daemon) = proxy_route(&upstream.url(), "");
    let mut client = KeepAlive::open(daemon.http);

    let mut expected_closed = 0;
    for (method, body) in [("GET", &b""[..]), ("POST", &b"form=1"[..])] {
        for i in 0..2 {
            let target = format!("/{method}/{i}");
            let resp = client.send(method, &target, body);
            assert_eq!(
                resp.status,
                200,
                "{method} {target}: {}; stderr:\n{}",
                resp.text(),
                daemon.proc.stderr()
            );
            expected_closed += 1;
            // The upstream closes the pooled connection before the next
            // request.
            assert!(
                wait_until(DEADLINE, || closed.get() >= expected_closed),
                "the upstream closed its connection"
            );
        }
    }
    let log = log.get();
    for method in ["GET", "POST"] {
        for i in 0..2 {
            assert_eq!(
                count(&log, method, &format!("/{method}/{i}")),
                1,
                "{method} /{method}/{i} reached the upstream exactly once: {log:?}"
            );
        }
    }
    assert!(
        log.iter()
            .filter(|r| r.method == "POST")
            .all(|r| r.body == b"form=1"),
        "{log:?}"
    );
    assert_eq!(upstream.accepted(), 4, "a new connection for each request");
}

#[test]
fn a_request_the_upstream_drops_unanswered_is_sent_again_only_when_safe() {
    // Every upstream connection answers its first request and drops its
    // second, read whole, without an answer (the keep-alive race, made
    // certain).
    let (upstream, log, _closed) = upstream(|nth| if nth == 0 { Then::Answer } else { Then::Drop });
    let (_clace, mut daemon) = proxy_route(&upstream.url(), "");
    let mut client = KeepAlive::open(daemon.http);

    // Connection 0 answers this and stays pooled.
    let resp = client.send("GET", "/first", b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "/first on 0");

    // Sent on connection 0, dropped; a GET is safe to send again: it is
    // answered on connection 1, which then stays pooled.
    let resp = client.send("GET", "/again", b"");
    assert_eq!(
        resp.status,
        200,
        "{}; stderr:\n{}",
        resp.text(),
        daemon.proc.stderr()
    );
    assert_eq!(resp.text(), "/again on 1");
    daemon.proc.wait_for_line("once more", DEADLINE);
    let seen = log.get();
    assert_eq!(
        count(&seen, "GET", "/again"),
        2,
        "the GET went once more, once: {seen:?}"
    );

    // Sent on connection 1, dropped: a POST is never sent again.
    let resp = client.send("POST", "/order", b"buy=1");
    assert_eq!(resp.status, 502, "the POST is not retried: {}", resp.text());
    let seen = log.get();
    assert_eq!(
        count(&seen, "POST", "/order"),
        1,
        "the POST reached the upstream exactly once: {seen:?}"
    );
    assert_eq!(upstream.accepted(), 2, "no third connection: {seen:?}");
}
