//! What 16 HTTP/2 responses of 1 KiB cost to write onto a loopback TCP
//! socket, each as h2 hands it over (a frame head and its payload in one
//! vectored write, then a flush): straight to the socket (one `writev`
//! per response, as before) against through `BatchedWrites` (the flushes
//! held, one write for the 16 when the task next reads). A reader thread
//! drains the other end. TLS is left out: it would add one record per
//! write in the first case and one per 16 KiB in the second.
//!
//! Run with `cargo bench -p clace-actors --bench batched_writes` (add
//! `-- --quick` for a rough figure).

use std::io::{IoSlice, Read as _};

use clace_actors::batched_writes::BatchedWrites;
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::io::{AsyncRead as _, AsyncWriteExt as _};

const RESPONSES: usize = 16;
const BODY: usize = 1024;

/// One batch: 16 frame heads and payloads, each vectored and flushed.
async fn batch<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, head: &[u8], body: &[u8]) {
    for _ in 0..RESPONSES {
        let mut bufs = [IoSlice::new(head), IoSlice::new(body)];
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        while !slices.is_empty() {
            let n = w.write_vectored(slices).await.expect("write");
            IoSlice::advance_slices(&mut slices, n);
        }
        w.flush().await.expect("flush");
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let per_batch = RESPONSES * (9 + BODY);
    // The reader: drains everything, counting nothing.
    let drain = |mut s: std::net::TcpStream| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
        })
    };
    let head = [0u8; 9];
    let body = vec![7u8; BODY];
    let mut group = c.benchmark_group("h2_16_responses_of_1k");
    group.throughput(criterion::Throughput::Bytes(per_batch as u64));

    let direct = rt
        .block_on(tokio::net::TcpStream::connect(addr))
        .expect("connect");
    direct.set_nodelay(true).expect("nodelay");
    let reader = drain(listener.accept().expect("accept").0);
    let mut direct = direct;
    group.bench_function("writev_per_response", |b| {
        b.iter(|| rt.block_on(batch(&mut direct, &head, &body)))
    });
    drop(direct);
    reader.join().expect("reader");

    let batched = rt
        .block_on(tokio::net::TcpStream::connect(addr))
        .expect("connect");
    batched.set_nodelay(true).expect("nodelay");
    let reader = drain(listener.accept().expect("accept").0);
    let mut batched = BatchedWrites::new(batched, true);
    group.bench_function("batched_writes", |b| {
        b.iter(|| {
            rt.block_on(async {
                batch(&mut batched, &head, &body).await;
                // What the connection's next poll does: a read, which
                // writes the held bytes out first (nothing comes back).
                let mut none = [0u8; 1];
                std::future::poll_fn(|cx| {
                    let mut out = tokio::io::ReadBuf::new(&mut none);
                    let _ = std::pin::Pin::new(&mut batched).poll_read(cx, &mut out);
                    std::task::Poll::Ready(())
                })
                .await;
            })
        })
    });
    drop(batched);
    reader.join().expect("reader");
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
