//! PostgreSQL unreachable: the instances start and serve without it, and
//! order once it is back (one order per name); with the certificates
//! issued, a 30-second outage changes nothing for clients: every instance
//! keeps serving them and stays healthy, and nothing is ordered again.

use std::time::{Duration, Instant};

use super::{Cluster, Store, NAMES};
use crate::acme::ISSUE_DEADLINE;
use crate::tls_util::handshake;
use crate::util::http::Request;

/// The outage at start. Shorter than the issue's 30 s (the long outage is
/// the second one, below): what it proves, that the instances start and
/// serve without their storage and order nothing meanwhile, shows within
/// seconds, and the test's run time counts.
const OUTAGE_AT_START: Duration = Duration::from_secs(10);

/// The outage once the certificates are issued (issue 12: "PostgreSQL
/// stopped for 30 s: every instance keeps serving").
const OUTAGE_ISSUED: Duration = Duration::from_secs(30);

/// How often the instances are checked during an outage.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Checks every `CHECK_EVERY` for `how_long` that each instance runs,
/// answers `/_clace/health` with 200 and completes a handshake for every
/// name (with `serials[i][j]` when given), and that Pebble's order count
/// stays `orders`.
fn keeps_serving(
    cluster: &mut Cluster,
    how_long: Duration,
    serials: Option<&[Vec<String>]>,
    orders: usize,
) {
    let until = Instant::now() + how_long;
    let started = Instant::now();
    while Instant::now() < until {
        for i in 0..cluster.nodes.len() {
            let at = started.elapsed();
            assert!(
                cluster.nodes[i].is_running(),
                "instance #{i} exited {at:?} into the outage{}",
                cluster.diag()
            );
            let tls = cluster.nodes[i].tls();
            let health = Request::get("/_clace/health").try_send(tls.http);
            let status = health.as_ref().map(|r| r.status);
            assert!(
                matches!(status, Ok(200)),
                "instance #{i}: /_clace/health {at:?} into the outage: {:?}{}",
                health.map(|r| format!("{} {}", r.status, r.text())),
                cluster.diag()
            );
            for (j, name) in NAMES.iter().enumerate() {
                let got = handshake(tls.https, Some(name)).map(|h| h.serial());
                let want = serials.map(|s| &s[i][j]);
                let ok = match (&got, want) {
                    (Ok(serial), Some(want)) => serial == want,
                    (Ok(_), None) => true,
                    (Err(_), _) => false,
                };
                assert!(
                    ok,
                    "instance #{i} {at:?} into the outage, handshake for {name}: {got:?} \
                     (expected serial {want:?}){}",
                    cluster.diag()
                );
            }
        }
        let now = cluster.pebble.orders();
        assert_eq!(
            now,
            orders,
            "nothing is ordered while PostgreSQL is down{}",
            cluster.diag()
        );
        std::thread::sleep(CHECK_EVERY);
    }
}

#[test]
fn postgres_down_instances_serve_and_order_once_it_is_back_then_keep_serving_through_30s_outage() {
    // The role and the database exist; the server is down before any
    // instance starts.
    let mut store = Store::postgres();
    store.pg_mut().stop();
    let mut cluster = Cluster::new(store, &NAMES, |o| o);
    cluster.start_all();
    keeps_serving(&mut cluster, OUTAGE_AT_START, None, 0);

    // Back: every name ordered once and served everywhere.
    cluster.store.pg_mut().start();
    let back = Instant::now();
    let tracks = cluster.watch(ISSUE_DEADLINE, |t| {
        t.all().all(|track| track.current_pebble().is_some())
    });
    let resumed = back.elapsed();
    cluster.assert_no_failed_handshake(&tracks);
    let serials = cluster.assert_chains_verify();
    for (j, name) in NAMES.iter().enumerate() {
        let stored = cluster.must_be_stored(name);
        for (i, row) in serials.iter().enumerate() {
            assert_eq!(
                row[j],
                stored.serial,
                "instance #{i} serves {name} the stored certificate{}",
                cluster.diag()
            );
        }
    }
    cluster.assert_orders_stay(3, "one order per name once PostgreSQL is back");

    // Down again, for 30 s, with everything issued: nothing changes.
    cluster.store.pg_mut().stop();
    keeps_serving(&mut cluster, OUTAGE_ISSUED, Some(&serials), 3);
    cluster.store.pg_mut().start();
    cluster.assert_orders_stay(3, "nothing ordered after the outage");
    assert_eq!(
        cluster.assert_chains_verify(),
        serials,
        "the same certificates after the outage"
    );
    assert_eq!(
        cluster.pebble.issued(),
        3,
        "one issuance per name{}",
        cluster.diag()
    );
    eprintln!("cluster outage: all names served {resumed:?} after PostgreSQL came back");
}
