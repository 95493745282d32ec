//! Failures: bad nonces are retried; an unreachable CA backs off with the
//! next attempt logged while everything keeps serving; the port-443 warning.

use std::time::{Duration, Instant};

use super::{has_words, is_pebble, Acme, ISSUE_DEADLINE};
use crate::tls_util::handshake;
use crate::util::{wait_until, DEADLINE};

#[test]
fn issues_with_30_percent_of_nonces_rejected() {
    let acme = Acme::with(|o| o.env("PEBBLE_WFE_NONCEREJECT", "30"));
    acme.configure(&["a.test"], "", "");
    let started = Instant::now();
    let mut tls = acme.serve();
    let h = acme.wait_issued(&mut tls, "a.test");
    assert!(started.elapsed() <= ISSUE_DEADLINE);
    acme.assert_verifies(&tls, &h, "a.test");
}

#[test]
fn an_unreachable_ca_backs_off_with_the_next_attempt_logged_and_everything_serves() {
    let acme = Acme::unreachable();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let line = acme.wait_log(&mut tls, &["next attempt"], Duration::from_secs(30));
    assert!(
        line.contains("a.test"),
        "the attempt names the name: {line}"
    );
    // The issuer backs off but stays running; health is 200.
    let (status, health) = acme.wait_acme_state(&tls, "running");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    // HTTPS keeps serving (the default, for want of anything else), and
    // HTTP over it.
    let h = handshake(tls.https, Some("a.test"))
        .unwrap_or_else(|e| panic!("HTTPS for a.test: {e}{}", acme.diag(&tls)));
    assert!(!is_pebble(&h.leaf()));
    let resp = super::https_get(tls.https, "a.test", "/_clace/health").expect("HTTP over HTTPS");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = crate::util::http::get(tls.http, "/_clace/health");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(tls.proc.is_running());
}

#[test]
fn warns_that_the_https_port_is_not_443() {
    let acme = Acme::unreachable();
    acme.configure(&["a.test"], "", "");
    let tls = acme.serve();
    // A warning naming 443 as a number of its own (not inside a port
    // number that happens to hold those digits).
    let ok = wait_until(DEADLINE, || {
        tls.proc
            .stderr_lines()
            .iter()
            .any(|l| has_words(l, &["warn"]) && names_443(l))
    });
    assert!(
        ok,
        "a warning that the CA validates on port 443{}",
        acme.diag(&tls)
    );
}

/// Whether `line` holds the number 443 alone.
fn names_443(line: &str) -> bool {
    let bytes = line.as_bytes();
    line.match_indices("443").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + 3).copied();
        !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
    })
}
