//! What one static request for a 1 KiB file costs in the daemon's handler
//! (`static_files::serve`, the response built but not written): a plain GET,
//! answered from the worker's cache after the first one, against a GET with
//! `If-Modified-Since` long past, which takes the full path to the disk
//! (root open, `openat2`, `statx`, read, close) every time.
//!
//! And a 1 MiB GET with its body drained: clace's reader (from the page
//! cache on the calling thread, `preadv2(RWF_NOWAIT)`) against actix-files'
//! own `NamedFile` body, which reads every 64 KiB on the blocking pool.
//!
//! Run with `cargo bench -p clace-actors --bench static_file` (add
//! `-- --quick` for a rough figure).

use std::hint::black_box;

use actix_files::NamedFile;
use actix_web::body::to_bytes;
use actix_web::http::header;
use actix_web::test::TestRequest;
use clace_actors::router::static_files::serve;
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("1k.bin"), vec![7_u8; 1024]).expect("write");
    let root = dir.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let plain = TestRequest::get().uri("/1k.bin").to_http_request();
    let disk = TestRequest::get()
        .uri("/1k.bin")
        .insert_header((header::IF_MODIFIED_SINCE, "Thu, 01 Jan 1970 00:00:01 GMT"))
        .to_http_request();
    let mut group = c.benchmark_group("static_1k");
    group.bench_function("plain_get_cached", |b| {
        b.iter(|| black_box(rt.block_on(serve(&plain, &root, "/1k.bin"))))
    });
    group.bench_function("conditional_get_from_disk", |b| {
        b.iter(|| black_box(rt.block_on(serve(&disk, &root, "/1k.bin"))))
    });
    group.finish();

    std::fs::write(dir.path().join("1m.bin"), vec![7_u8; 1 << 20]).expect("write");
    let big = TestRequest::get().uri("/1m.bin").to_http_request();
    let drain = |res: actix_web::HttpResponse| async move {
        let body = to_bytes(res.into_body())
            .await
            .map_err(|_| ())
            .expect("body");
        assert_eq!(body.len(), 1 << 20);
    };
    let mut group = c.benchmark_group("static_1m");
    group.bench_function("get_read_on_the_worker", |b| {
        b.iter(|| rt.block_on(async { drain(serve(&big, &root, "/1m.bin").await).await }))
    });
    let path = dir.path().join("1m.bin");
    group.bench_function("actix_files_blocking_pool", |b| {
        b.iter(|| {
            rt.block_on(async {
                let named = NamedFile::open(&path).expect("open");
                drain(named.into_response(&big)).await
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
