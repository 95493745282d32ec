//! Tests of the back end that need no server. Those against a real
//! PostgreSQL (operations, notifications, locks ending with their session)
//! are in `tests/cluster/pg_backend.rs`, which starts a throwaway server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use super::*;

#[tokio::test]
async fn an_unreachable_server_fails_operations_at_once_without_the_password() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let pg = Postgres::connect("postgres://u:s3cret@127.0.0.1:1/d").unwrap();
    assert_eq!(pg.describe(), "postgres://u@127.0.0.1:1/d");
    for _ in 0..2 {
        let started = Instant::now();
        let e = pg.load("k").await.unwrap_err();
        assert!(started.elapsed() <= CONNECTING_WAIT + Duration::from_millis(500));
        assert!(
            e.starts_with("PostgreSQL at 127.0.0.1:1/d is unreachable: "),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = pg.try_lock("k").await.map(|_| ()).unwrap_err();
        assert!(e.contains("is unreachable"), "{e}");
    }
    assert!(lock_held(&pg.shared).is_empty());
}

#[tokio::test]
async fn a_bad_url_is_refused() {
    let e = Postgres::connect("postgres://u:s3cret@h:port/d").unwrap_err();
    assert!(e.contains("port") && !e.contains("s3cret"), "{e}");
}
