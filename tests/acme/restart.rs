//! Stored certificates across restarts: served again without contacting
//! the CA, even when the CA is gone; SIGUSR2 (and a restart of the acme
//! actor) re-checks without ordering.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{count_lines, Acme};
use crate::util::http::Request;
use crate::util::{wait_until, DEADLINE};

#[test]
fn a_restarted_daemon_serves_the_same_serial_with_no_new_order() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let first = acme.wait_issued(&mut tls, "a.test").serial();
    acme.stop(&mut tls);
    assert_eq!(acme.pebble().orders(), 1, "one order before the restart");

    let mut again = acme.serve();
    let h = acme.wait_issued_within(&mut again, "a.test", Instant::now() + DEADLINE);
    assert_eq!(
        h.serial(),
        first,
        "the stored certificate is served after a restart"
    );
    acme.assert_verifies(&again, &h, "a.test");
    acme.assert_orders_stay(&again, 1, "a restart orders nothing");
    assert_eq!(again.serial(Some("a.test")), first);
}

#[test]
fn sigusr2_logs_a_recheck_and_orders_nothing_nor_does_an_acme_restart() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let first = acme.wait_issued(&mut tls, "a.test").serial();
    acme.wait_acme_state(&tls, "running");
    let before = count_lines(&tls.proc.stderr_lines(), &["re-check"]);
    tls.proc.signal(Signal::SIGUSR2);
    let seen = wait_until(Duration::from_secs(10), || {
        count_lines(&tls.proc.stderr_lines(), &["re-check"]) > before
    });
    assert!(seen, "SIGUSR2 logs a re-check{}", acme.diag(&tls));
    acme.assert_orders_stay(&tls, 1, "a re-check of a valid certificate orders nothing");
    assert_eq!(
        tls.serial(Some("a.test")),
        first,
        "the same certificate serves"
    );
    assert!(tls.proc.is_running(), "the daemon survives SIGUSR2");
    acme.wait_acme_state(&tls, "running");

    // The same through the admin endpoint (what `clace restart acme` asks).
    let resp = Request::new("POST", "/_clace/actors/acme/restart").send(tls.http);
    assert_eq!(resp.status, 202, "{}{}", resp.text(), acme.diag(&tls));
    acme.wait_acme_state(&tls, "running");
    acme.assert_orders_stay(&tls, 1, "a restart of the acme actor orders nothing");
    assert_eq!(tls.serial(Some("a.test")), first);
}

#[test]
fn with_the_ca_stopped_a_restarted_daemon_still_serves_the_stored_certificate() {
    let mut acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let first = acme.wait_issued(&mut tls, "a.test").serial();
    acme.stop(&mut tls);
    acme.pebble_mut().stop();

    let mut again = acme.serve();
    let h = acme.wait_issued_within(&mut again, "a.test", Instant::now() + DEADLINE);
    assert_eq!(
        h.serial(),
        first,
        "the stored certificate serves without the CA"
    );
    acme.assert_verifies(&again, &h, "a.test");
    let (status, health) = acme.wait_acme_state(&again, "running");
    assert_eq!(status, 200, "{health}");
}
