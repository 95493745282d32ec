//! The body of a large file (or of a range of one): read on the worker
//! itself while the data is in the page cache, on the blocking pool when it
//! is not.
//!
//! actix-files reads every 64 KiB chunk on the blocking pool: for a 1 MiB
//! file that is 16 hops to another thread and back, and a profile of the
//! 1 MiB benchmark row (`perf record -g` under `wrk -c8`) put 28% of the
//! daemon's samples in the scheduler (`finish_task_switch`, wake-ups), more
//! than in AES-GCM. Here each chunk is first asked of the page cache with
//! `preadv2(RWF_NOWAIT)`, which copies what is cached and never waits for
//! the disk: a cached file (the common case of a site's assets) is sent
//! without leaving the worker, as nginx does, and a chunk that would wait
//! for the disk still goes to the blocking pool, so a cold file never
//! stalls the other connections of the worker.

use std::{
    fs::File,
    io::{self, IoSliceMut},
    os::unix::fs::FileExt as _,
    sync::Arc,
};

use actix_web::web;
use bytes::Bytes;
use futures_util::Stream;
use rustix::io::{Errno, ReadWriteFlags};

/// Bytes read per step. 128 KiB: eight TLS records, and within actix-http's
/// write buffer retention (larger chunks are not written out faster).
pub(super) const CHUNK: u64 = 128 * 1024;

/// Streams `length` bytes of `file` from `offset`. The stream ends with an
/// `UnexpectedEof` error if the file shrank meanwhile, so a client never
/// takes a short body for the whole file.
pub(super) fn file_body(
    file: File,
    offset: u64,
    length: u64,
) -> impl Stream<Item = Result<Bytes, io::Error>> {
    let state = State {
        file: Arc::new(file),
        next: offset,
        end: offset.saturating_add(length),
        nowait: true,
    };
    futures_util::stream::try_unfold(state, |mut state| async move {
        if state.next >= state.end {
            return Ok(None);
        }
        let want = usize::try_from((state.end - state.next).min(CHUNK))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let chunk = match state.read_cached(want)? {
            Some(chunk) => chunk,
            None => {
                let file = Arc::clone(&state.file);
                let at = state.next;
                web::block(move || read_blocking(&file, at, want))
                    .await
                    .map_err(io::Error::other)??
            }
        };
        if chunk.is_empty() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        state.next += chunk.len() as u64;
        Ok(Some((chunk, state)))
    })
}

struct State {
    file: Arc<File>,
    next: u64,
    end: u64,
    /// Cleared when the file system refuses `RWF_NOWAIT`: every chunk then
    /// goes to the blocking pool.
    nowait: bool,
}

impl State {
    /// Up to `want` bytes at `next` if the page cache has them (`Some`,
    /// possibly fewer bytes); `None` when reading would wait for the disk.
    fn read_cached(&mut self, want: usize) -> io::Result<Option<Bytes>> {
        if !self.nowait {
            return Ok(None);
        }
        let mut buf = vec![0_u8; want];
        let read = rustix::io::preadv2(
            &*self.file,
            &mut [IoSliceMut::new(&mut buf)],
            self.next,
            ReadWriteFlags::NOWAIT,
        );
        match read {
            // 0 is the end of the file, or nothing cached at this offset on
            // some file systems: the blocking read tells which.
            Ok(0) => Ok(None),
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(Bytes::from(buf)))
            }
            Err(Errno::AGAIN | Errno::INTR) => Ok(None),
            Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => {
                self.nowait = false;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Up to `want` bytes at `at`, waiting for the disk if need be; fewer only
/// at the end of the file.
fn read_blocking(file: &File, at: u64, want: usize) -> io::Result<Bytes> {
    let mut buf = vec![0_u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is a test failure.
    #![allow(clippy::unwrap_used)]

    use futures_util::TryStreamExt as _;

    use super::*;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        (f, data)
    }

    async fn collect(file: File, offset: u64, length: u64) -> io::Result<Vec<u8>> {
        let chunks: Vec<Bytes> = file_body(file, offset, length).try_collect().await?;
        Ok(chunks.concat())
    }

    #[actix_web::test]
    async fn whole_files_and_ranges_come_out_byte_for_byte() {
        let len = 3 * CHUNK as usize + 1234;
        let (f, data) = file_of(len);
        let got = collect(f.reopen().unwrap(), 0, len as u64).await.unwrap();
        assert_eq!(got, data);
        let got = collect(f.reopen().unwrap(), 1000, 200_000).await.unwrap();
        assert_eq!(got, data[1000..201_000]);
        let got = collect(f.reopen().unwrap(), len as u64 - 1, 1)
            .await
            .unwrap();
        assert_eq!(got, data[len - 1..]);
    }

    #[actix_web::test]
    async fn a_file_that_shrank_ends_in_an_error_not_a_short_body() {
        let len = 2 * CHUNK as usize;
        let (f, _) = file_of(len);
        let file = f.reopen().unwrap();
        f.as_file().set_len(CHUNK / 2).unwrap();
        let err = collect(file, 0, len as u64).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
