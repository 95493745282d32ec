//! Three instances, three names, one storage: exactly one order per name
//! whichever instance the balancer sends each validation to, and every
//! instance serving every certificate within 1 s of its storage.

use std::time::Instant;

use super::{Cluster, Store, NAMES};
use crate::acme::ISSUE_DEADLINE;

/// The scenario, on either storage.
fn three_instances_three_names(store: Store) {
    let mut cluster = Cluster::new(store, &NAMES, |o| o);
    let started = Instant::now();
    cluster.start_all();
    let tracks = cluster.watch(ISSUE_DEADLINE, |t| {
        t.all().all(|track| track.current_pebble().is_some())
    });
    let all_served = started.elapsed();
    cluster.assert_no_failed_handshake(&tracks);

    // One certificate per name, the stored one, served by everyone.
    for name in NAMES {
        let stored = cluster.must_be_stored(name);
        for (i, row) in tracks.by_node.iter().enumerate() {
            let track = &row[tracks.index(name)];
            assert_eq!(
                track.pebble_serials(),
                vec![stored.serial.as_str()],
                "instance #{i} serves {name} the one stored certificate and no other Pebble \
                 one:\n{}{}",
                tracks.summary(),
                cluster.diag()
            );
        }
    }
    let delays = cluster.assert_switched_in_time(&tracks);
    let served = cluster.assert_chains_verify();
    for (i, row) in served.iter().enumerate() {
        for (j, serial) in row.iter().enumerate() {
            assert_eq!(
                serial,
                &tracks.by_node[i][j].pebble_serials()[0],
                "instance #{i} keeps serving the stored certificate of {}",
                NAMES[j]
            );
        }
    }

    // Exactly 3 orders and 3 issuances in Pebble's log, also a little
    // later: an instance that had waited for the lock orders nothing.
    cluster.assert_orders_stay(3, "one order per name across 3 instances");
    assert_eq!(
        cluster.pebble.issued(),
        3,
        "one issuance per name; {}{}",
        cluster.orderers(),
        cluster.diag()
    );
    eprintln!(
        "cluster issuance: every instance served all {} names {all_served:?} after the start; \
         switch delays after storage: {}",
        NAMES.len(),
        delays.join(", ")
    );
}

#[test]
fn folder_three_instances_three_names_three_orders_all_served_within_1s() {
    three_instances_three_names(Store::folder());
}

#[test]
fn postgres_three_instances_three_names_three_orders_all_served_within_1s() {
    three_instances_three_names(Store::postgres());
}
