//! One connection to an upstream, plain or TLS, with the bytes read from
//! it and not yet used.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};
use tokio::net::TcpStream;

/// How much room a read is given.
pub const READ_ROOM: usize = 16 * 1024;

/// The byte stream under a connection.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// The reading half of a connection whose other half still streams a
    /// request body up (the upstream answered early); never pooled.
    Reading(Box<ReadHalf<Io>>),
}

/// Writing on [`Io::Reading`].
fn read_only() -> io::Error {
    io::Error::other("this upstream connection only reads")
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Reading(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Reading(_) => Poll::Ready(Err(read_only())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Io::Reading(_) => Poll::Ready(Err(read_only())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            Io::Reading(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Reading(_) => Poll::Ready(Err(read_only())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Reading(_) => Poll::Ready(Err(read_only())),
        }
    }
}

/// A connection, the bytes read ahead on it, and whether it came from the
/// pool (a request on it may meet a close the upstream made meanwhile).
pub struct Conn {
    pub io: Io,
    pub buf: BytesMut,
    pub reused: bool,
    /// When it was last put back in the pool.
    pub idle_since: Instant,
}

impl Conn {
    pub fn new(io: Io) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            reused: false,
            idle_since: Instant::now(),
        }
    }

    /// Reads what has arrived into `buf`: `Ok(0)` at the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_ROOM);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Whether an idle connection still looks usable: the upstream has
    /// neither closed it nor sent anything unasked, as far as the worker's
    /// reactor has seen (as nginx's idle upstream connections), and no
    /// TLS record left unread. One read is tried with a waker that does
    /// nothing: on a socket where nothing happened it makes no system call
    /// (the last read of an exchange left its readiness clear; a close or
    /// a stray byte since sets it again); anything but "not yet" means the
    /// connection is not used again.
    pub fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() || matches!(self.io, Io::Reading(_)) {
            return false;
        }
        if !tokio::task::coop::has_budget_remaining() {
            // The read would say "not yet" without looking.
            return self.peek_open();
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Whether the kernel holds nothing on the connection (no close, no
    /// byte): one `recv(MSG_PEEK)`, which also sees a close the worker's
    /// reactor has not yet. For requests that cannot be sent again.
    pub fn peek_open(&self) -> bool {
        let tcp = match &self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
            Io::Reading(_) => return false,
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(tcp).peek(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write as _;
    use std::time::{Duration, Instant};

    use super::*;

    /// A pooled connection whose upstream closes: the kernel knows at once
    /// (`peek_open`), the reactor once it has run (`is_open`).
    #[actix_web::test]
    async fn a_closed_idle_connection_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(b"x").unwrap();
        let mut conn = Conn::new(Io::Plain(client));
        let read = std::future::poll_fn(|cx| conn.poll_fill(cx)).await;
        assert_eq!(read.unwrap(), 1);
        conn.buf.clear();
        assert!(conn.is_open() && conn.peek_open(), "idle and open");

        drop(server);
        assert!(!conn.peek_open(), "the kernel has the close at once");
        let deadline = Instant::now() + Duration::from_secs(10);
        while conn.is_open() {
            assert!(Instant::now() < deadline, "the reactor never saw the close");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        // Bytes left unread: never reused.
        let mut conn = conn;
        conn.buf.extend_from_slice(b"stray");
        assert!(!conn.is_open());
    }
}
