//! One request's exchange with its upstream: the request head written on
//! a pooled or new connection, the body streamed up, the response head
//! read within the route's `timeout`, and the only retries that are safe.

use std::time::Duration;

use actix_web::web;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use super::body::{self, Sent};
use super::client::Upstream;
use super::conn::{Conn, Io, READ_ROOM};
use super::failure::Failure;
use super::wire::{self, ResponseHead, WireError};
use super::TARGET;
use crate::settings::ProxyTarget;

/// The client's request body, to stream upstream.
pub struct Upload {
    pub payload: web::Payload,
    /// A chunk already taken from the payload.
    pub first: Option<Bytes>,
    /// Chunked; else exactly `length` bytes.
    pub chunked: bool,
    pub length: Option<u64>,
    pub max_body: Option<u64>,
}

/// One request and the upstream it goes to.
pub struct Exchange<'a, L: Fn() -> String> {
    pub upstream: &'a Upstream,
    pub target: &'a ProxyTarget,
    pub head: &'a Bytes,
    pub head_request: bool,
    pub label: &'a L,
}

impl<L: Fn() -> String> Exchange<'_, L> {
    /// A pooled connection, else a new one, with the request head written
    /// on it. A pooled connection that fails the write (the upstream
    /// closed it; nothing reached it) is replaced by a new one. `strict`:
    /// the request cannot be sent again, so the pooled connection is
    /// checked with the kernel too.
    async fn send_head(&self, strict: bool) -> Result<Conn, Failure> {
        if let Some(mut conn) = self.upstream.checkout(strict) {
            if matches!(self.write_head(&mut conn).await, Ok(Ok(()))) {
                return Ok(conn);
            }
        }
        self.send_head_on_new().await
    }

    async fn send_head_on_new(&self) -> Result<Conn, Failure> {
        let mut conn = self
            .upstream
            .connect(self.target.connect_timeout)
            .await
            .map_err(Failure::Connect)?;
        match self.write_head(&mut conn).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => Err(Failure::Answer(ReadError::Io(e))),
            Err(_) => Err(Failure::HeadTimeout),
        }
    }

    /// Writes the request head; an upstream that takes none of it within
    /// the route's `timeout` is as one that does not answer.
    async fn write_head(
        &self,
        conn: &mut Conn,
    ) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
        let write = async {
            conn.io.write_all(self.head).await?;
            conn.io.flush().await
        };
        tokio::time::timeout(self.target.timeout, write).await
    }

    /// A request without a body: sent, and its response head read within
    /// the route's `timeout`. When a pooled connection closes after the
    /// request went out and before any answer (the keep-alive race), an
    /// `idempotent` request is sent once more on a new connection.
    pub async fn without_body(&self, idempotent: bool) -> Result<(ResponseHead, Conn), Failure> {
        let mut conn = self.send_head(!idempotent).await?;
        let result = self.head_in_time(&mut conn.io, &mut conn.buf).await;
        if matches!(result, Err(Failure::Answer(ReadError::Closed))) && conn.reused && idempotent {
            log::info!(target: TARGET, "{}: the pooled connection closed before an answer; sending the request once more", (self.label)());
            let mut conn = self.send_head_on_new().await?;
            let head = self.head_in_time(&mut conn.io, &mut conn.buf).await?;
            return Ok((head, conn));
        }
        result.map(|head| (head, conn))
    }

    async fn head_in_time<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        buf: &mut BytesMut,
    ) -> Result<ResponseHead, Failure> {
        in_time(
            self.target.timeout,
            read_head(reader, buf, self.head_request),
        )
        .await
    }

    /// A request with a body: the body streams up while the response head
    /// is awaited. The upstream may answer before it has read the whole
    /// body (a 413 of its own, or a streaming endpoint that answers first
    /// and reads as it goes): the body then keeps going up, from a task of
    /// its own, while the response comes down, and the connection ends
    /// with the exchange. Otherwise the head's `timeout` counts from the
    /// end of the body.
    pub async fn with_body(&self, body: Upload) -> Result<(ResponseHead, Conn), Failure> {
        let Conn {
            io,
            mut buf,
            reused,
            idle_since,
        } = self.send_head(true).await?;
        let (mut reader, writer) = tokio::io::split(io);
        let mut pump = Box::pin(body::pump(body, writer, self.target.idle_timeout));
        let race = {
            let head = read_head(&mut reader, &mut buf, self.head_request);
            tokio::pin!(head);
            tokio::select! {
                result = &mut head => {
                    // The head came first; the body may have ended in the
                    // same turn (an HTTP/2 client's END_STREAM in a DATA
                    // frame of its own): then the connection can be kept.
                    match futures_util::FutureExt::now_or_never(&mut pump) {
                        Some((sent, writer)) => {
                            Race::BodyDone(result.map_err(Failure::Answer), sent, writer)
                        }
                        None => Race::Early(result),
                    }
                }
                (sent, writer) = &mut pump => {
                    let result = if matches!(sent, Sent::Whole | Sent::UpstreamGone) {
                        in_time(self.target.timeout, &mut head).await
                    } else {
                        // The upstream may still answer (a 413 of its
                        // own): give it a moment, else the body's failure
                        // is the answer.
                        match tokio::time::timeout(Duration::from_millis(100), &mut head).await {
                            Ok(Ok(r)) => Ok(r),
                            _ => Err(Failure::Body(sent)),
                        }
                    };
                    Race::BodyDone(result, sent, writer)
                }
            }
        };
        let (head, io) = match race {
            Race::Early(result) => {
                let mut head = result.map_err(Failure::Answer)?;
                head.keep_alive = false;
                if head.status != 101 {
                    // The body goes on; one that fails is ended for the
                    // upstream too (else it would wait for the rest).
                    actix_web::rt::spawn(async move {
                        let (sent, mut writer) = pump.await;
                        if sent != Sent::Whole {
                            let _ = writer.shutdown().await;
                        }
                    });
                }
                (head, Io::Reading(Box::new(reader)))
            }
            Race::BodyDone(result, sent, writer) => {
                let mut head = result?;
                if sent != Sent::Whole {
                    // The body did not go up whole: the connection carries
                    // nothing after this answer.
                    head.keep_alive = false;
                }
                (head, reader.unsplit(writer))
            }
        };
        let conn = Conn {
            io,
            buf,
            reused,
            idle_since,
        };
        Ok((head, conn))
    }
}

/// How the race between a request body going up and its response head
/// coming down ended.
enum Race<W> {
    /// The head came while the body was still going up.
    Early(Result<ResponseHead, ReadError>),
    /// The body ended (however it did); then the head, or why none came.
    BodyDone(Result<ResponseHead, Failure>, Sent, W),
}

/// `head`, read within `timeout`.
async fn in_time(
    timeout: Duration,
    head: impl std::future::Future<Output = Result<ResponseHead, ReadError>>,
) -> Result<ResponseHead, Failure> {
    match tokio::time::timeout(timeout, head).await {
        Ok(result) => result.map_err(Failure::Answer),
        Err(_) => Err(Failure::HeadTimeout),
    }
}

/// Why no response head came.
#[derive(Debug)]
pub enum ReadError {
    /// The upstream closed before sending a byte of an answer.
    Closed,
    Io(std::io::Error),
    Wire(WireError),
}

/// Reads a final response head (1xx ones but `101` are skipped).
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<ResponseHead, ReadError> {
    let mut answered = !buf.is_empty();
    loop {
        if let Some(head) = wire::parse_head(buf, head_request).map_err(ReadError::Wire)? {
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
        buf.reserve(READ_ROOM);
        match reader.read_buf(buf).await {
            Ok(0) if answered => {
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => answered = true,
            // A TLS upstream closing without close_notify reads as an
            // unexpected end; a reset or a broken pipe is a close too.
            Err(e) if !answered && closed(&e) => return Err(ReadError::Closed),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

fn closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}
