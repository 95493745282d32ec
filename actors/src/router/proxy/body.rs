//! Bodies through the proxy, streamed both ways in whatever chunks arrive,
//! each bounded by the route's idle timeout (the longest silence between
//! two chunks) and the request by the route's `max_body`.

use std::rc::Rc;
use std::time::Duration;

use actix_web::web;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::{mpsc, oneshot};

use super::client::{BoxError, UpBody};

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
    /// The upstream stopped reading (it answered, or failed).
    UpstreamGone,
}

/// A body-less request.
pub fn empty() -> UpBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Streams `payload` upstream from a task of this worker (actix's payload
/// is not `Send`; hyper's body must be). Returns the body and how the
/// client's body ended, once it has.
pub fn request(
    mut payload: web::Payload,
    idle: Duration,
    max_body: Option<u64>,
) -> (UpBody, oneshot::Receiver<Sent>) {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    let (done_tx, done_rx) = oneshot::channel();
    actix_web::rt::spawn(async move {
        let mut total: u64 = 0;
        let sent = loop {
            let chunk = match tokio::time::timeout(idle, payload.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(e))) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    break Sent::Broken;
                }
                Ok(None) => break Sent::Whole,
                Err(_) => {
                    let _ = tx.send(Err("the client's body went silent".into())).await;
                    break Sent::Idle;
                }
            };
            total = total.saturating_add(chunk.len() as u64);
            if max_body.is_some_and(|max| total > max) {
                let _ = tx.send(Err("request body over max_body".into())).await;
                break Sent::TooLarge;
            }
            if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                break Sent::UpstreamGone;
            }
        };
        let _ = done_tx.send(sent);
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (StreamBody::new(frames).boxed_unsync(), done_rx)
}

/// The upstream's response body as a stream of chunks; a silence longer
/// than `idle` ends it with an error (the client's connection is then
/// closed: a body cut short is never passed off as whole), logged with
/// `label` (the route and upstream).
pub fn response(
    body: Incoming,
    idle: Duration,
    label: Rc<str>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(body), move |state| {
        let label = Rc::clone(&label);
        async move {
            let mut body = state?;
            loop {
                match tokio::time::timeout(idle, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), Some(body)));
                        }
                        // Trailers: HTTP/1.1 to the client carries none.
                    }
                    Ok(Some(Err(e))) => return Some((Err(std::io::Error::other(e)), None)),
                    Ok(None) => return None,
                    Err(_) => {
                        log::warn!(target: super::TARGET, "{label}: the upstream sent nothing for {}s (idle_timeout); the response is cut", idle.as_secs());
                        return Some((
                            Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "the upstream's body went silent",
                            )),
                            None,
                        ));
                    }
                }
            }
        }
    })
}
