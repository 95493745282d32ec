//! Batched writes for HTTP/2 connections: the frames of every response
//! that is ready go out in one TLS write, not one each.
//!
//! The `h2` crate keeps a DATA payload of 256 bytes or more aside (to
//! write it without a copy) and must flush the transport before it can
//! encode the next frame, so with actix-http's dispatcher each response
//! of a busy connection became its own `writev` and TLS record: 1 KiB
//! responses cost twice the CPU of 240-byte ones (8-10 µs against 15-18
//! per request, `h2load -c 8 -m 16`).
//!
//! [`BatchedWrites`] sits between actix-http and the TLS stream. On an
//! HTTP/2 connection a flush with bytes waiting is answered at once: the
//! bytes stay in its buffer and the connection's task is woken, so that
//! every response made ready meanwhile joins them. They go out when the
//! task next touches the stream (a read, a write that would pass the
//! buffer's bound, a shutdown), which the wake makes happen right after
//! the current poll. A write of [`PASS_THROUGH`] bytes or more (the
//! 16 KiB frames of a large body) goes to the TLS stream as it is, after
//! what is buffered: large bodies are not copied once more.
//!
//! The buffer is allocated for a batch (32 KiB) and given back once it
//! has gone out: an idle connection holds none. A stream dropped without
//! a shutdown still writes out what it held, as far as the socket takes
//! it.
//!
//! HTTP/1.1 connections (one response per request) pass every call
//! straight through.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// At most this much is held before it is written out.
const LIMIT: usize = 32 * 1024;
/// Writes of at least this much are not buffered.
pub const PASS_THROUGH: usize = 8 * 1024;

/// A stream whose small writes are gathered until the task yields (see
/// the module's documentation).
#[derive(Debug)]
pub struct BatchedWrites<T: AsyncWrite + Unpin> {
    io: T,
    /// What is held: at most [`LIMIT`] bytes, allocated for a batch and
    /// given back when it has gone out (an idle connection holds none).
    buf: Vec<u8>,
    batch: bool,
    /// The last attempt to write the buffer out found the socket full:
    /// the stream will wake the task when it drains, so a flush waits
    /// for that instead of waking the task at once (which would spin).
    blocked: bool,
}

impl<T: AsyncWrite + Unpin> BatchedWrites<T> {
    /// `batch`: gather writes (HTTP/2); else every call passes through.
    pub fn new(io: T, batch: bool) -> BatchedWrites<T> {
        BatchedWrites {
            io,
            buf: Vec::new(),
            batch,
            blocked: false,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Holds `data`: the batch's buffer is allocated at its full size on
    /// its first bytes, so it never grows past [`LIMIT`].
    fn hold(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(LIMIT);
        }
        self.buf.extend_from_slice(data);
    }

    /// Writes out everything held into the stream (TLS: into rustls,
    /// which sends what the socket takes; the rest goes at the next
    /// flush), then gives the buffer back.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.buf) {
                Poll::Pending => {
                    self.blocked = true;
                    return Poll::Pending;
                }
                Poll::Ready(n) => n?,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        self.blocked = false;
        self.buf = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Writes out everything held and flushes the stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Makes room for `len` more bytes: Ready(true) when they are to be
    /// buffered, Ready(false) when they go straight to the stream.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if len >= PASS_THROUGH {
            ready!(self.poll_write_out(cx))?;
            return Poll::Ready(Ok(false));
        }
        if self.buf.len() + len > LIMIT {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(true))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            // The batch goes out before the task waits for the peer. A
            // full socket (Pending) has registered the task for when it
            // drains; reading goes on meanwhile.
            if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.batch {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        if ready!(this.poll_room(cx, data.len()))? {
            this.hold(data);
            Poll::Ready(Ok(data.len()))
        } else {
            Pin::new(&mut this.io).poll_write(cx, data)
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.batch {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        let len = bufs.iter().map(|b| b.len()).sum();
        if ready!(this.poll_room(cx, len))? {
            for b in bufs {
                this.hold(b);
            }
            Poll::Ready(Ok(len))
        } else {
            Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.batch || self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if this.blocked {
            // The socket was full: wait for it like any flush would.
            return this.poll_drain(cx);
        }
        // Deferred to the next poll of this task, which the wake makes
        // come right after the current one.
        cx.waker().wake_by_ref();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<T: AsyncWrite + Unpin> Drop for BatchedWrites<T> {
    /// A connection dropped without a shutdown (actix-http ends an HTTP/2
    /// connection whose PING went unanswered that way) still sends what
    /// it held, as far as the socket takes it now.
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.poll_drain(&mut cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn small_writes_wait_for_the_next_read_and_large_ones_pass_in_order() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut s = BatchedWrites::new(near, true);
        s.write_all(b"one ").await.unwrap();
        s.write_all(b"two ").await.unwrap();
        s.flush().await.unwrap();
        // Nothing has reached the peer: the flush was deferred.
        let mut got = [0u8; 64];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), far.read(&mut got)).await;
        assert!(early.is_err(), "bytes went out before the task yielded");
        // A large write goes out after what was buffered, unbuffered.
        let big = vec![b'x'; PASS_THROUGH];
        s.write_all(&big).await.unwrap();
        s.write_all(b" three").await.unwrap();
        far.write_all(b"ping").await.unwrap();
        let mut four = [0u8; 4];
        s.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"ping");
        s.shutdown().await.unwrap();
        let mut all = Vec::new();
        far.read_to_end(&mut all).await.unwrap();
        let mut want = b"one two ".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b" three");
        assert_eq!(all, want);
    }

    #[tokio::test]
    async fn a_deferred_flush_wakes_its_task() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let (near, _far) = tokio::io::duplex(1024);
        let mut s = BatchedWrites::new(near, true);
        s.write_all(b"abc").await.unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flagged = std::task::Waker::from(Arc::new(Flag(flag.clone())));
        let mut cx = Context::from_waker(&flagged);
        assert!(matches!(
            Pin::new(&mut s).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(flag.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_flush_waits_for_a_full_socket_instead_of_spinning() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(AtomicUsize::new(0));
        let waker = std::task::Waker::from(Arc::new(Count(wakes.clone())));
        let mut cx = Context::from_waker(&waker);
        // The peer reads nothing and its pipe holds 8 bytes.
        let (near, mut far) = tokio::io::duplex(8);
        let mut s = BatchedWrites::new(near, true);
        let data = [7u8; 20];
        assert!(matches!(
            Pin::new(&mut s).poll_write(&mut cx, &data),
            Poll::Ready(Ok(20))
        ));
        // The first flush is deferred (a wake); the read that follows
        // finds the pipe full.
        assert!(Pin::new(&mut s).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        let mut space = [0u8; 4];
        let mut out = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut s).poll_read(&mut cx, &mut out).is_pending());
        // Now a flush waits for the pipe, without waking the task itself.
        let before = wakes.load(Ordering::SeqCst);
        assert!(Pin::new(&mut s).poll_flush(&mut cx).is_pending());
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            before,
            "the flush woke its own task"
        );
        // The peer reads: the task is woken and the rest goes out.
        let mut got = vec![0u8; 8];
        far.read_exact(&mut got).await.unwrap();
        assert!(
            wakes.load(Ordering::SeqCst) > before,
            "no wake when the pipe drained"
        );
        let mut rest = vec![0u8; 12];
        let (flushed, read) = tokio::join!(s.flush(), far.read_exact(&mut rest));
        flushed.unwrap();
        read.unwrap();
        assert_eq!([got, rest].concat(), data);
    }

    #[tokio::test]
    async fn a_batch_that_went_out_leaves_no_buffer_behind() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut s = BatchedWrites::new(near, true);
        s.write_all(&[1u8; 1000]).await.unwrap();
        assert_eq!(s.buf.capacity(), LIMIT, "allocated once, at its bound");
        for _ in 0..40 {
            s.write_all(&[2u8; 1000]).await.unwrap();
        }
        assert!(s.buf.capacity() <= LIMIT, "grew past its bound");
        s.flush().await.unwrap();
        far.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        assert_eq!(s.buf.capacity(), 0, "an idle connection holds a buffer");
        let mut got = vec![0u8; 41_000];
        far.read_exact(&mut got).await.unwrap();
        assert!(got[..1000].iter().all(|&b| b == 1) && got[1000..].iter().all(|&b| b == 2));
    }

    #[tokio::test]
    async fn a_stream_dropped_without_a_shutdown_still_sends_what_it_held() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut s = BatchedWrites::new(near, true);
        s.write_all(b"goaway").await.unwrap();
        s.flush().await.unwrap();
        drop(s);
        let mut all = Vec::new();
        far.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"goaway");
    }

    #[tokio::test]
    async fn http1_passes_through() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut s = BatchedWrites::new(near, false);
        s.write_all(b"now").await.unwrap();
        let mut got = [0u8; 3];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"now");
    }
}
