//! Tests of the back end against a server. The first needs none (nothing
//! listens); the others need a PostgreSQL server whose URL is in
//! `CLACE_TEST_PG_URL` (a role that may create a table), and are ignored
//! otherwise: `CLACE_TEST_PG_URL=postgres://... cargo test -p clace-actors
//! postgres::live -- --ignored`. The black-box tests (`tests/cluster/`)
//! start their own server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use super::*;

fn url(application_name: &str) -> String {
    let base = std::env::var("CLACE_TEST_PG_URL")
        .expect("CLACE_TEST_PG_URL: the URL of a PostgreSQL server to test against");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}application_name={application_name}")
}

/// A prefix no other run uses.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{}-{nanos}", std::process::id())
}

async fn next_change(rx: &mut broadcast::Receiver<String>, want: &str) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Ok(k) if k == want => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no notification of {want}"));
}

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

#[tokio::test]
#[ignore = "needs CLACE_TEST_PG_URL"]
async fn store_load_list_stat_delete_and_notifications() {
    let a = Postgres::connect(&url("clace-live-a")).unwrap();
    let b = Postgres::connect(&url("clace-live-b")).unwrap();
    let mut heard = b.changes();
    // The first connection announces "*".
    next_change(&mut heard, "*").await;
    let p = unique();
    let (k1, k2, k3) = (
        format!("{p}/x_y/a.crt"),
        format!("{p}/x_y/b.json"),
        format!("{p}/xzy/c"),
    );
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    a.store(&k1, b"one").await.unwrap();
    next_change(&mut heard, &k1).await;
    a.store(&k2, b"").await.unwrap();
    a.store(&k3, &[0, 255, 7]).await.unwrap();
    a.store(&k1, b"uno!").await.unwrap();
    next_change(&mut heard, &k1).await;
    assert_eq!(b.load(&k1).await.unwrap().unwrap(), b"uno!");
    assert_eq!(b.load(&k2).await.unwrap().unwrap(), b"");
    assert_eq!(b.load(&k3).await.unwrap().unwrap(), [0, 255, 7]);
    assert_eq!(b.load(&format!("{p}/none")).await.unwrap(), None);
    // `_` of the prefix is no wildcard; `prefix/` is a folder.
    assert_eq!(
        b.list(&format!("{p}/x_y")).await.unwrap(),
        [k1.as_str(), k2.as_str()]
    );
    assert_eq!(
        b.list(&format!("{p}/x_y/")).await.unwrap(),
        [k1.as_str(), k2.as_str()]
    );
    assert_eq!(
        b.list(&p).await.unwrap(),
        [k1.as_str(), k2.as_str(), k3.as_str()]
    );
    assert_eq!(
        b.list(&format!("{p}/x")).await.unwrap(),
        Vec::<String>::new()
    );
    let all = b.list("").await.unwrap();
    assert!(all.contains(&k1) && all.contains(&k3));
    let info = b.stat(&k1).await.unwrap().unwrap();
    assert_eq!(info.size, 4);
    assert!(
        (before - 5..=before + 5).contains(&info.modified),
        "{info:?}"
    );
    assert_eq!(b.stat(&format!("{p}/none")).await.unwrap(), None);
    a.delete(&k1).await.unwrap();
    next_change(&mut heard, &k1).await;
    a.delete(&k1).await.unwrap();
    assert_eq!(b.load(&k1).await.unwrap(), None);
    for k in [&k2, &k3] {
        a.delete(k).await.unwrap();
    }
    assert!(b.list(&p).await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs CLACE_TEST_PG_URL"]
async fn locks_are_exclusive_and_end_with_their_session() {
    let a = Postgres::connect(&url("clace-live-lock-a")).unwrap();
    let b = Postgres::connect(&url("clace-live-lock-b")).unwrap();
    let name = unique();
    let lease = a.try_lock(&name).await.unwrap().expect("free");
    assert!(!lease.lost());
    assert!(b.try_lock(&name).await.unwrap().is_none(), "held by a");
    assert!(
        a.try_lock(&name).await.unwrap().is_none(),
        "held by a, in this instance too"
    );
    lease.release().await;
    let lease = b.try_lock(&name).await.unwrap().expect("released by a");
    assert!(a.try_lock(&name).await.unwrap().is_none());
    drop(lease);
    // The drop unlocks in a task.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lease = loop {
        if let Some(l) = a.try_lock(&name).await.unwrap() {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "a dropped lease was not unlocked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // a's session ends: its lease is lost and b may take the lock.
    let (admin, conn) = tokio_postgres::connect(&url("clace-live-admin"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let killed = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'clace-live-lock-a'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(killed, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lease.lost() {
        assert!(Instant::now() < deadline, "the lease is not lost");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = b.try_lock(&name).await.unwrap().expect("a's session ended");
    // a reconnects, and finds the lock held.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match a.try_lock(&name).await {
            Ok(None) => break,
            Ok(Some(_)) => panic!("a took a lock b holds"),
            Err(_) => {
                assert!(Instant::now() < deadline, "a did not reconnect");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Releasing the lost lease touches nothing of b's.
    lease.release().await;
    assert!(a.try_lock(&name).await.unwrap().is_none());
    taken.release().await;
    a.try_lock(&name)
        .await
        .unwrap()
        .expect("free")
        .release()
        .await;
}
