//! Bodies through the proxy, streamed both ways in whatever chunks arrive,
//! each bounded by the route's idle timeout (the longest silence between
//! two chunks) and the request by the route's `max_body`.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::time::Sleep;

use super::client::Upstream;
use super::conn::Conn;
use super::exchange::Upload;
use super::wire::{self, Decoder, Step};

/// How the client's request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// All of it went upstream (or there was none).
    Whole,
    /// More than `max_body`: refused (413).
    TooLarge,
    /// Nothing came from the client for the idle timeout.
    Idle,
    /// The client's stream broke (it went away, or sent a short body).
    Broken,
    /// The upstream stopped reading (it answered, failed, or took nothing
    /// for the idle timeout).
    UpstreamGone,
}

/// Streams the client's body to `up`, chunked or as it is, and gives the
/// writer back. A body longer or shorter than its declared length is
/// broken: never more than that length goes up.
pub async fn pump<W: AsyncWrite + Unpin>(body: Upload, mut up: W, idle: Duration) -> (Sent, W) {
    let sent = pump_into(body, &mut up, idle).await;
    (sent, up)
}

async fn pump_into<W: AsyncWrite + Unpin>(body: Upload, up: &mut W, idle: Duration) -> Sent {
    let Upload {
        mut payload,
        first,
        chunked,
        length,
        max_body,
    } = body;
    let mut total: u64 = 0;
    let mut next = first;
    loop {
        let chunk = match next.take() {
            Some(chunk) => chunk,
            None => match tokio::time::timeout(idle, payload.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(_))) => return Sent::Broken,
                Ok(None) => break,
                Err(_) => return Sent::Idle,
            },
        };
        total = total.saturating_add(chunk.len() as u64);
        if max_body.is_some_and(|max| total > max) {
            return Sent::TooLarge;
        }
        if length.is_some_and(|declared| total > declared) {
            return Sent::Broken;
        }
        if chunk.is_empty() {
            continue;
        }
        let framed = if chunked { wire::chunk(&chunk) } else { chunk };
        if !matches!(
            tokio::time::timeout(idle, up.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return Sent::UpstreamGone;
        }
    }
    if length.is_some_and(|declared| total != declared) {
        return Sent::Broken;
    }
    let end = async {
        if chunked {
            up.write_all(wire::LAST_CHUNK).await?;
        }
        up.flush().await
    };
    match tokio::time::timeout(idle, end).await {
        Ok(Ok(())) => Sent::Whole,
        _ => Sent::UpstreamGone,
    }
}

/// The rest of an upstream's response body, as a stream of chunks. At
/// its end a connection that may carry another request goes back to the
/// pool; dropped before (the client went away), the connection is closed
/// and the upstream sees the exchange cancelled. A silence longer than
/// the idle timeout, or a body cut short, ends it with an error (the
/// client's connection is then closed: a body cut short is never passed
/// off as whole), logged with the route and upstream.
pub struct ResponseBody {
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    upstream: Upstream,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    label: Rc<str>,
}

impl ResponseBody {
    pub fn new(
        conn: Conn,
        decoder: Decoder,
        keep_alive: bool,
        upstream: Upstream,
        idle: Duration,
        label: Rc<str>,
    ) -> ResponseBody {
        ResponseBody {
            conn: Some(conn),
            decoder,
            keep_alive,
            upstream,
            idle,
            timer: None,
            label,
        }
    }

    /// Ends the body: the connection goes back to the pool if it can.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && self.decoder.is_done() {
                self.upstream.checkin(conn);
            }
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, what: String) -> Poll<Option<io::Result<Bytes>>> {
        self.conn = None;
        log::warn!(target: super::TARGET, "{}: {what}; the response is cut", self.label);
        Poll::Ready(Some(Err(io::Error::new(kind, what))))
    }
}

impl Stream for ResponseBody {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.next(&mut conn.buf) {
                Ok(Step::Data(data)) => {
                    this.timer = None;
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => {
                    return this.fail(
                        io::ErrorKind::InvalidData,
                        format!("the upstream's body: {e}"),
                    )
                }
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) if this.decoder.ends_at_close() => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return this.fail(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the end of the body".into(),
                    )
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    return this.fail(e.kind(), format!("reading the upstream's body: {e}"))
                }
                Poll::Pending => {
                    let idle = this.idle;
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return this.fail(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the upstream sent nothing for {}s (idle_timeout)",
                                idle.as_secs()
                            ),
                        );
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
