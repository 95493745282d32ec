//! Bodies stream through the proxy as they come, both ways, and a client
//! that goes away cancels the upstream exchange.

use std::io::BufReader;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    connect, contains, head_header, proxy_route, read_head, read_until_contains, write_now,
    RawUpstream, Shared,
};
use crate::util::http::read_response_from;
use crate::util::{wait_until, DEADLINE};

const FIRST: &[u8] = b"first-part-of-the-answer;";
const LAST: &[u8] = b"last-part-of-the-answer.";

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length,
    Chunked,
    /// No length, no chunks: the body ends with the connection.
    Close,
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The upstream answers with the head and [`FIRST`], waits for the test's
/// go, then sends [`LAST`]; `sent_last` is set as it starts to.
fn slow_response(framing: Framing) {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let sent_last: Shared<bool> = Shared::default();
    let upstream = {
        let sent_last = sent_last.clone();
        RawUpstream::start(move |_, mut sock| {
            if read_head(&mut sock).ok().flatten().is_none() {
                return;
            }
            let (head, first, last) = match framing {
                Framing::Length => (
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        FIRST.len() + LAST.len()
                    ),
                    FIRST.to_vec(),
                    LAST.to_vec(),
                ),
                Framing::Chunked => (
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                        .to_owned(),
                    chunk(FIRST),
                    [chunk(LAST), b"0\r\n\r\n".to_vec()].concat(),
                ),
                Framing::Close => (
                    "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_owned(),
                    FIRST.to_vec(),
                    LAST.to_vec(),
                ),
            };
            if write_now(&mut sock, &[head.into_bytes(), first].concat()).is_err() {
                return;
            }
            let go = go_rx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv_timeout(DEADLINE);
            if go.is_err() {
                return;
            }
            // Set before the write: the client may read the last part (and
            // check this) before this thread runs again after the write.
            sent_last.update(|s| *s = true);
            // A failed write shows as the client missing the last part.
            let _ = write_now(&mut sock, &last);
            // Closing ends a close-delimited body; the others are framed.
        })
    };
    let (_clace, daemon) = proxy_route(&upstream.url(), "");

    let mut sock = connect(daemon.http);
    let started = Instant::now();
    write_now(
        &mut sock,
        b"GET /events HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .expect("send the request");
    let mut got = Vec::new();
    assert!(
        read_until_contains(&mut sock, &mut got, FIRST, DEADLINE),
        "{framing:?}: the first part reaches the client while the upstream holds the rest; got {:?}",
        String::from_utf8_lossy(&got)
    );
    eprintln!("{framing:?}: first bytes after {:?}", started.elapsed());
    assert!(
        !sent_last.get(),
        "the upstream has not sent the last part yet"
    );
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        !contains(&got, LAST),
        "the last part cannot have come before it was sent"
    );
    go_tx.send(()).expect("the upstream waits for go");
    assert!(
        read_until_contains(&mut sock, &mut got, LAST, DEADLINE),
        "{framing:?}: the last part follows; got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(sent_last.get());
}

#[test]
fn a_slow_response_with_a_length_reaches_the_client_as_it_comes() {
    slow_response(Framing::Length);
}

#[test]
fn a_slow_chunked_response_reaches_the_client_as_it_comes() {
    slow_response(Framing::Chunked);
}

#[test]
fn a_slow_close_delimited_response_reaches_the_client_as_it_comes() {
    slow_response(Framing::Close);
}

const FIRST_HALF: &[u8] = b"first-half";
const SECOND_HALF: &[u8] = b"secnd-half";

/// The client sends half of its body, waits until the upstream has seen
/// it, then sends the rest.
fn slow_request(chunked: bool) {
    let seen: Shared<Vec<u8>> = Shared::default();
    let upstream = {
        let seen = seen.clone();
        RawUpstream::start(move |_, mut sock| {
            let Ok(Some(head)) = read_head(&mut sock) else {
                return;
            };
            let length: Option<usize> =
                head_header(&head, "content-length").and_then(|l| l.parse().ok());
            let mut buf = [0u8; 4096];
            let mut body = Vec::new();
            loop {
                let done = match length {
                    Some(l) => body.len() >= l,
                    None => body.ends_with(b"0\r\n\r\n"),
                };
                if done {
                    break;
                }
                match std::io::Read::read(&mut sock, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        body.extend_from_slice(&buf[..n]);
                        seen.update(|s| s.extend_from_slice(&buf[..n]));
                    }
                }
            }
            let reply = format!("got {} bytes", body.len());
            let _ = write_now(
                &mut sock,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                )
                .as_bytes(),
            );
        })
    };
    let (_clace, daemon) = proxy_route(&upstream.url(), "");

    let mut sock = connect(daemon.http);
    let (head, first, rest) = if chunked {
        (
            "PUT /upload HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
            chunk(FIRST_HALF),
            [chunk(SECOND_HALF), b"0\r\n\r\n".to_vec()].concat(),
        )
    } else {
        (
            format!(
                "PUT /upload HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                FIRST_HALF.len() + SECOND_HALF.len()
            ),
            FIRST_HALF.to_vec(),
            SECOND_HALF.to_vec(),
        )
    };
    let started = Instant::now();
    write_now(&mut sock, &[head.into_bytes(), first].concat()).expect("send the first half");
    assert!(
        wait_until(DEADLINE, || contains(&seen.get(), FIRST_HALF)),
        "chunked={chunked}: the upstream sees the first half before the client sends the rest; it saw {:?}",
        String::from_utf8_lossy(&seen.get())
    );
    eprintln!(
        "chunked={chunked}: the upstream saw the first half after {:?}",
        started.elapsed()
    );
    assert!(!contains(&seen.get(), SECOND_HALF));
    write_now(&mut sock, &rest).expect("send the rest");
    let resp = read_response_from(BufReader::new(sock), false).expect("a response");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = seen.get();
    assert!(
        contains(&seen, FIRST_HALF) && contains(&seen, SECOND_HALF),
        "the whole body arrived: {:?}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn a_slow_request_body_with_a_length_reaches_the_upstream_as_it_comes() {
    slow_request(false);
}

#[test]
fn a_slow_chunked_request_body_reaches_the_upstream_as_it_comes() {
    slow_request(true);
}

#[test]
fn a_client_that_goes_away_mid_response_cancels_the_upstream_exchange() {
    let failed_at: Shared<Option<(Instant, String)>> = Shared::default();
    let written: Shared<usize> = Shared::default();
    let upstream = {
        let failed_at = failed_at.clone();
        let written = written.clone();
        RawUpstream::start(move |_, mut sock| {
            if read_head(&mut sock).ok().flatten().is_none() {
                return;
            }
            let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            if write_now(&mut sock, head).is_err() {
                return;
            }
            let piece = chunk(&[b'x'; 1024]);
            let started = Instant::now();
            // An endless download, paced like a live feed; bounded so the
            // thread ends even if nobody cancels it.
            while started.elapsed() < Duration::from_secs(30) {
                if let Err(e) = write_now(&mut sock, &piece) {
                    failed_at.update(|f| *f = Some((Instant::now(), e.to_string())));
                    return;
                }
                written.update(|w| *w += 1);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (_clace, daemon) = proxy_route(&upstream.url(), "");

    let mut sock = connect(daemon.http);
    write_now(
        &mut sock,
        b"GET /download HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .expect("send the request");
    let mut got = Vec::new();
    assert!(
        read_until_contains(&mut sock, &mut got, &[b'x'; 1024], DEADLINE),
        "the download starts"
    );
    let gone = Instant::now();
    sock.shutdown(std::net::Shutdown::Both)
        .expect("close the client");
    drop(sock);
    assert!(
        wait_until(DEADLINE, || failed_at.get().is_some()),
        "the upstream's writes fail once the client is gone ({} chunks written)",
        written.get()
    );
    let (at, error) = failed_at.get().expect("set");
    eprintln!(
        "the upstream saw the cancellation {:?} after the client left ({error}; {} chunks written)",
        at - gone,
        written.get()
    );
}

/// An upstream that answers at once and then reads the request body as it
/// comes (a streaming endpoint): the body keeps going up after the
/// response head has come down, and the echo reaches the client.
#[test]
fn a_request_body_keeps_going_up_after_an_early_answer() {
    let seen: Shared<Vec<u8>> = Shared::default();
    let upstream = {
        let seen = seen.clone();
        RawUpstream::start(move |_, mut sock| {
            let Ok(Some(_head)) = read_head(&mut sock) else {
                return;
            };
            // The head first, before any of the body is read.
            if write_now(
                &mut sock,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .is_err()
            {
                return;
            }
            let mut body = Vec::new();
            let mut buf = [0u8; 4096];
            while body.len() < FIRST_HALF.len() + SECOND_HALF.len() {
                match std::io::Read::read(&mut sock, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        body.extend_from_slice(&buf[..n]);
                        seen.update(|s| s.extend_from_slice(&buf[..n]));
                    }
                }
            }
            let _ = write_now(&mut sock, &[chunk(&body), b"0\r\n\r\n".to_vec()].concat());
        })
    };
    let (_clace, daemon) = proxy_route(&upstream.url(), "");

    let mut sock = connect(daemon.http);
    let head = format!(
        "POST /stream HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        FIRST_HALF.len() + SECOND_HALF.len()
    );
    write_now(
        &mut sock,
        &[head.into_bytes(), FIRST_HALF.to_vec()].concat(),
    )
    .expect("send");
    // The answer's head reaches the client while half the body is unsent.
    let mut got = Vec::new();
    assert!(
        read_until_contains(&mut sock, &mut got, b"200 OK", DEADLINE),
        "the early head reached the client: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(wait_until(DEADLINE, || contains(&seen.get(), FIRST_HALF)));
    write_now(&mut sock, SECOND_HALF).expect("send the rest");
    let echo = [FIRST_HALF, SECOND_HALF].concat();
    assert!(
        read_until_contains(&mut sock, &mut got, &echo, DEADLINE),
        "the body sent after the answer began reached the upstream, and its echo the client: {:?}; upstream saw {:?}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&seen.get())
    );
}
