//! How long choosing a certificate takes, with 1 and with 10,000
//! certificates loaded: `Snapshot::select` alone, and through
//! `CertResolver::resolve_name` (the whole handshake path but the
//! `ClientHello`, which only rustls can build: one `ArcSwap` load, the clock,
//! the selection). The two sizes should cost the same (interface §4: every
//! lookup is a hash lookup). Also how long building a 10,000-pair snapshot
//! takes, which bounds the cost of one reload.
//!
//! Run with `cargo bench -p clace-actors --bench resolve` (add `-- --quick`
//! for a rough figure).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use clace_actors::certs::pair::{parse_pair, Pair, Source};
use clace_actors::certs::resolver::CertResolver;
use clace_actors::certs::snapshot::{Snapshot, Step};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use time::OffsetDateTime;

const SIZES: [usize; 2] = [1, 10_000];

/// `n` pairs `site{i}.test` (found by file name), each with the SANs
/// `host{i}.example.com` and `*.w{i}.example.org`, plus `default`. One key
/// signs them all: generating 10,000 keys would only slow the setup, and the
/// selection never looks at the key.
fn pairs(n: usize) -> Vec<Arc<Pair>> {
    let key = KeyPair::generate().expect("generate a key");
    let key_pem = key.serialize_pem();
    let now = OffsetDateTime::now_utc();
    let make = |stem: &str, names: Vec<String>| {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .into_iter()
            .map(|n| SanType::DnsName(n.try_into().expect("a DNS name")))
            .collect();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(90);
        let cert = params.self_signed(&key).expect("sign");
        Arc::new(
            parse_pair(
                stem,
                cert.pem().as_bytes(),
                key_pem.as_bytes(),
                Source::File,
            )
            .expect("parse"),
        )
    };
    let mut out: Vec<_> = (0..n)
        .map(|i| {
            make(
                &format!("site{i}.test"),
                vec![
                    format!("host{i}.example.com"),
                    format!("*.w{i}.example.org"),
                ],
            )
        })
        .collect();
    out.push(make("default", vec!["localhost".to_owned()]));
    out
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn lookups(c: &mut Criterion) {
    let now = unix_now();
    for n in SIZES {
        let started = Instant::now();
        let all = pairs(n);
        eprintln!("made {} pairs in {:?}", all.len(), started.elapsed());
        let snapshot = Snapshot::build(all, vec![], HashMap::new(), true);
        let mid = n / 2;
        let cases = [
            ("file-name", format!("site{mid}.test"), Step::FileName),
            ("san", format!("host{mid}.example.com"), Step::San),
            ("wildcard", format!("a.w{mid}.example.org"), Step::Wildcard),
            ("miss", "nobody.example.net".to_owned(), Step::Default),
        ];
        for (_, name, step) in &cases {
            let got = snapshot.select(Some(name), false, now).map(|s| s.step);
            assert_eq!(got, Some(*step), "{name}");
        }

        let mut group = c.benchmark_group(format!("select/{n}"));
        for (label, name, _) in &cases {
            group.bench_with_input(BenchmarkId::from_parameter(label), name, |b, name| {
                b.iter(|| snapshot.select(black_box(Some(name.as_str())), false, now))
            });
        }
        group.finish();

        let shared = Arc::new(ArcSwap::from_pointee(snapshot));
        let resolver = CertResolver::new(shared);
        let mut group = c.benchmark_group(format!("resolver/{n}"));
        for (label, name, _) in &cases {
            group.bench_with_input(BenchmarkId::from_parameter(label), name, |b, name| {
                b.iter(|| resolver.resolve_name(black_box(Some(name.as_str())), false))
            });
        }
        group.finish();
    }
}

fn build(c: &mut Criterion) {
    let all = pairs(10_000);
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.bench_function("10000", |b| {
        b.iter_batched(
            || all.clone(),
            |files| Snapshot::build(files, vec![], HashMap::new(), true),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookups, build
}
criterion_main!(benches);
