//! WebSocket through the proxy: once the upstream answers `101`, the two
//! connections are joined byte for byte (frames are never parsed or
//! buffered whole: a 1 MiB message streams through in whatever pieces
//! arrive; pings, pongs and closes pass like any other frame). Either side
//! closing closes the other; a tunnel silent both ways for the route's idle
//! timeout is closed.
//!
//! actix-http hands over a WebSocket request's connection as a raw stream
//! (the request payload, then the response body after the `101`); it does
//! so for `Upgrade: websocket` only, so other upgrades are not tunnelled:
//! their `Upgrade` header is dropped and the request is answered as a plain
//! one, which RFC 9110 §7.8 allows. HTTP/2 clients cannot ask for a
//! WebSocket here: actix-http does not offer RFC 8441's extended CONNECT,
//! so browsers open an HTTP/1.1 connection for it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The time of the last byte either way, shared by the two directions,
/// and whether the idle close was logged (by the first side to see it).
#[derive(Clone)]
struct Activity(Rc<(Cell<Instant>, Cell<bool>)>);

impl Activity {
    fn touch(&self) {
        self.0 .0.set(Instant::now());
    }

    /// Whether nothing moved either way for `idle`; logged once.
    fn silent_for(&self, idle: Duration, label: &str) -> bool {
        let silent = self.0 .0.get().elapsed() >= idle;
        if silent && !self.0 .1.replace(true) {
            log::info!(target: super::TARGET, "{label}: WebSocket silent for {}s (idle_timeout); closed", idle.as_secs());
        }
        silent
    }
}

/// Joins the client (its raw `payload`) and the upstream connection that
/// answered `101`; returns the stream of upstream bytes for the `101`'s
/// body (first those read with the head).
pub fn tunnel(
    mut payload: web::Payload,
    upstream: super::conn::Conn,
    idle: Duration,
    label: Rc<str>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let ahead = upstream.buf.freeze();
    let (up_read, mut up_write) = tokio::io::split(upstream.io);
    let activity = Activity(Rc::new((Cell::new(Instant::now()), Cell::new(false))));

    // Client -> upstream.
    let client_side = activity.clone();
    let client_label = Rc::clone(&label);
    actix_web::rt::spawn(async move {
        loop {
            match tokio::time::timeout(idle, payload.next()).await {
                Ok(Some(Ok(chunk))) => {
                    client_side.touch();
                    // An upstream that takes nothing for the idle timeout
                    // (hung, its socket still open) ends the tunnel.
                    match tokio::time::timeout(idle, up_write.write_all(&chunk)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            log::info!(target: super::TARGET, "{client_label}: the upstream took nothing for {}s (idle_timeout); WebSocket closed", idle.as_secs());
                            break;
                        }
                    }
                }
                // The client closed (or broke): the upstream sees the end.
                Ok(Some(Err(_)) | None) => break,
                Err(_) if client_side.silent_for(idle, &client_label) => break,
                Err(_) => {}
            }
        }
        let _ = up_write.shutdown().await;
    });

    // Upstream -> client.
    let first = (!ahead.is_empty()).then(|| Ok(ahead));
    // One buffer, reused once the bytes handed on have been written out
    // (a read takes what has arrived, without zeroing its room first).
    let rest = futures_util::stream::unfold(Some((up_read, BytesMut::new())), move |state| {
        let activity = activity.clone();
        let label = Rc::clone(&label);
        async move {
            let (mut up_read, mut buf) = state?;
            loop {
                buf.reserve(16 * 1024);
                match tokio::time::timeout(idle, up_read.read_buf(&mut buf)).await {
                    Ok(Ok(0)) => return None,
                    Ok(Ok(_)) => {
                        activity.touch();
                        let data = buf.split().freeze();
                        return Some((Ok(data), Some((up_read, buf))));
                    }
                    Ok(Err(e)) => return Some((Err(e), None)),
                    Err(_) if activity.silent_for(idle, &label) => return None,
                    Err(_) => {}
                }
            }
        }
    });
    futures_util::stream::iter(first).chain(rest)
}
