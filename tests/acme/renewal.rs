//! Renewal end to end: a 60-second certificate from Pebble is renewed on
//! time (no ARI in Pebble 2.4.0: a third of the lifetime left), and a
//! handshake loop running across the switch sees no failure and never
//! anything but a Pebble certificate.

use std::time::{Duration, Instant};

use super::{instant_at, is_pebble, Acme};
use crate::tls_util::handshake;

/// Pebble's `certificateValidityPeriod` for this test.
const VALIDITY: u64 = 60;

#[test]
fn a_60_second_certificate_is_renewed_before_it_expires_with_no_failed_handshake() {
    let acme = Acme::with(|o| o.validity(VALIDITY));
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let first = acme.wait_issued(&mut tls, "a.test").leaf();
    let lifetime = first.not_after - first.not_before;
    assert!(
        lifetime <= VALIDITY as i64 + 1,
        "Pebble issued a {lifetime} s certificate (asked for {VALIDITY} s)"
    );
    let expires = instant_at(first.not_after);

    let started = Instant::now();
    let mut handshakes = 0usize;
    let mut failures: Vec<String> = Vec::new();
    let mut not_pebble: Vec<String> = Vec::new();
    let renewed = loop {
        if Instant::now() >= expires {
            panic!(
                "no new certificate for a.test before the first ({}) expired, {:?} after \
                 issuance; {handshakes} handshakes, failures: {failures:?}{}",
                first.serial,
                started.elapsed(),
                acme.diag(&tls)
            );
        }
        match handshake(tls.https, Some("a.test")) {
            Ok(h) => {
                handshakes += 1;
                let leaf = h.leaf();
                if !is_pebble(&leaf) {
                    not_pebble.push(format!("{} from {:?}", leaf.serial, leaf.issuer_cn));
                } else if leaf.serial != first.serial {
                    acme.assert_verifies(&tls, &h, "a.test");
                    break leaf;
                }
            }
            Err(e) => failures.push(format!("{:?}: {e}", started.elapsed())),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The new certificate keeps serving (no flap back to the old one).
    for _ in 0..20 {
        match handshake(tls.https, Some("a.test")) {
            Ok(h) => {
                handshakes += 1;
                let serial = h.serial();
                assert_eq!(
                    serial, renewed.serial,
                    "no flap back to an older certificate"
                );
            }
            Err(e) => failures.push(format!("after the switch: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {handshakes} handshakes failed across the renewal: {failures:?}{}",
        failures.len(),
        acme.diag(&tls)
    );
    assert!(
        not_pebble.is_empty(),
        "handshakes got something else than a Pebble certificate across the renewal: \
         {not_pebble:?}"
    );
    assert!(
        renewed.not_after > first.not_after,
        "the new one lasts longer"
    );
    assert_eq!(
        acme.pebble().issued(),
        2,
        "one issuance, one renewal{}",
        acme.diag(&tls)
    );
}
