//! The PostgreSQL back end itself against a throwaway server (white-box:
//! through `clace_actors`' storage API): every operation, notifications to
//! another handle, advisory locks exclusive across handles and within one,
//! and a lock that ends with its session (the holder's connection killed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clace_actors::acme::storage::postgres::Postgres;
use tokio::sync::broadcast;

use crate::util::postgres::Postgres as Server;

/// The server's URL for one handle, named so that a test can find its
/// session in `pg_stat_activity`.
fn url(server: &Server, application_name: &str) -> String {
    format!(
        "postgres://clace:{}@127.0.0.1:{}/clace?application_name={application_name}",
        server.password(),
        server.port
    )
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
async fn store_load_list_stat_delete_and_notifications() {
    let server = Server::new();
    let a = Postgres::connect(&url(&server, "clace-live-a")).unwrap();
    let b = Postgres::connect(&url(&server, "clace-live-b")).unwrap();
    let mut heard = b.changes();
    // The first connection announces "*".
    next_change(&mut heard, "*").await;
    let p = unique();
    let (k1, k2, k3) = (
        format!("{p}/x_y/a.crt"),
        format!("{p}/x_y/b.json"),
        format!("{p}/xzy/c"),
    );
    let before = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
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
async fn locks_are_exclusive_and_end_with_their_session() {
    let server = Server::new();
    let a = Postgres::connect(&url(&server, "clace-live-lock-a")).unwrap();
    let b = Postgres::connect(&url(&server, "clace-live-lock-b")).unwrap();
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
    let killed = server.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'clace-live-lock-a'",
    );
    assert_eq!(killed.trim(), "1", "one session of a terminated");
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
