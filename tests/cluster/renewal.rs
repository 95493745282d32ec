//! Renewal across the cluster: with 60-second certificates from Pebble
//! (renewed when a third of the lifetime is left, as the single-instance
//! test `acme::renewal` shows), each name is renewed once, not once per
//! instance; every instance switches to the new certificate within 1 s of
//! its storage, never back, and not one handshake on any instance fails
//! across the switch.

use std::time::Duration;

use super::{Cluster, Store, NAMES};
use crate::acme::ISSUE_DEADLINE;

/// Pebble's `certificateValidityPeriod` for these tests.
const VALIDITY: u64 = 60;

/// Handshakes each instance must answer with the new certificate, after
/// its switch, before the watch ends (no flap back).
const AFTER_SWITCH: usize = 10;

fn renewed_once_per_name(store: Store) {
    let mut cluster = Cluster::new(store, &NAMES, |o| o.validity(VALIDITY));
    cluster.start_all();
    // Issuance, then the renewal a third of the lifetime before expiry.
    let timeout = ISSUE_DEADLINE + Duration::from_secs(VALIDITY);
    let tracks = cluster.watch(timeout, |t| {
        t.all()
            .all(|track| track.pebble_serials().len() >= 2 && track.since_change >= AFTER_SWITCH)
    });
    cluster.assert_no_failed_handshake(&tracks);

    for name in NAMES {
        let j = tracks.index(name);
        let first = &tracks.by_node[0][j];
        let serials = first.pebble_serials();
        let pebble: Vec<_> = first.changes.iter().filter(|c| c.pebble).collect();
        assert!(
            serials.len() == 2 && pebble[1].not_after > pebble[0].not_after,
            "{name}: instance #0 served the first certificate, then a renewed one lasting \
             longer, and nothing after:\n{}{}",
            tracks.summary(),
            cluster.diag()
        );
        for (i, row) in tracks.by_node.iter().enumerate() {
            let track = &row[j];
            assert_eq!(
                track.pebble_serials(),
                serials,
                "instance #{i} served {name} the same two certificates as instance #0, in that \
                 order:\n{}{}",
                tracks.summary(),
                cluster.diag()
            );
            let after_first = track.changes.iter().skip_while(|c| !c.pebble);
            assert!(
                after_first.clone().all(|c| c.pebble),
                "instance #{i} served {name} nothing but Pebble certificates once it had one:\n{}",
                tracks.summary()
            );
        }
        assert_eq!(
            cluster.must_be_stored(name).serial,
            serials[1],
            "the renewed certificate of {name} is the stored one"
        );
    }
    let delays = cluster.assert_switched_in_time(&tracks);
    cluster.assert_chains_verify();
    // 3 issuances and 3 renewals: 2 orders per name, not 2 per instance.
    cluster.assert_orders_stay(6, "one order and one renewal per name across 3 instances");
    assert_eq!(
        cluster.pebble.issued(),
        6,
        "two issuances per name; {}{}",
        cluster.orderers(),
        cluster.diag()
    );
    eprintln!(
        "cluster renewal: {} handshakes, none failed; switch delays after the renewal's storage: \
         {}",
        tracks.handshakes(),
        delays.join(", ")
    );
}

#[test]
fn folder_renewal_one_order_per_name_every_instance_switches_with_no_failed_handshake() {
    renewed_once_per_name(Store::folder());
}

#[test]
fn postgres_renewal_one_order_per_name_every_instance_switches_with_no_failed_handshake() {
    renewed_once_per_name(Store::postgres());
}
