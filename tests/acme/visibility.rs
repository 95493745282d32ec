//! What the daemon shows of ACME (interface §6, §9): metrics, `clace certs`
//! and `/_clace/certs`, and the acme actor in `/_clace/health`.

use super::{unix_now, Acme};
use crate::tls_util::World;
use crate::util::http::get;
use crate::util::{wait_until, DEADLINE};

/// The samples of `metric` in Prometheus text: (labels, value).
fn samples(text: &str, metric: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let end = r.find('}')?;
                    (r[..end].to_owned(), r[end + 1..].trim())
                }
                None if rest.starts_with(' ') => (String::new(), rest.trim()),
                None => return None,
            };
            Some((labels, value.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The value of the sample whose labels hold every `label="value"` given.
fn value(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    samples(text, metric)
        .into_iter()
        .find(|(l, _)| {
            labels
                .iter()
                .all(|want| l.split(',').any(|have| have.trim() == *want))
        })
        .map(|(_, v)| v)
}

#[test]
fn metrics_show_the_acme_certificate_the_order_and_the_next_attempt() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let leaf = acme.wait_issued(&mut tls, "a.test").leaf();
    let mut text = String::new();
    let ok = wait_until(DEADLINE, || {
        text = get(tls.http, "/_clace/metrics").text();
        value(
            &text,
            "clace_tls_cert_not_after_seconds",
            &["name=\"a.test\"", "source=\"acme\""],
        )
        .is_some()
            && value(&text, "clace_acme_orders_total", &["result=\"ok\""]).is_some_and(|v| v >= 1.0)
    });
    assert!(ok, "metrics after issuance:\n{text}{}", acme.diag(&tls));
    let not_after = value(
        &text,
        "clace_tls_cert_not_after_seconds",
        &["name=\"a.test\"", "source=\"acme\""],
    )
    .unwrap_or(0.0);
    assert!(
        (not_after - leaf.not_after as f64).abs() <= 1.0,
        "not-after {not_after} is the served leaf's {}",
        leaf.not_after
    );
    let next = value(
        &text,
        "clace_acme_next_attempt_seconds",
        &["name=\"a.test\""],
    );
    let next = next.unwrap_or_else(|| {
        panic!("clace_acme_next_attempt_seconds{{name=\"a.test\"}} in:\n{text}")
    });
    assert!(
        next > unix_now() as f64 - 1.0,
        "the next renewal is in the future: {next}"
    );
    assert!(
        next < leaf.not_after as f64,
        "and before the certificate expires: {next} vs {}",
        leaf.not_after
    );
    if let Some(failed) = value(&text, "clace_acme_orders_total", &["result=\"failed\""]) {
        assert_eq!(failed, 0.0, "no failed order");
    }
}

#[test]
fn clace_certs_lists_the_acme_certificate_with_source_acme() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let leaf = acme.wait_issued(&mut tls, "a.test").leaf();
    let crt = acme.cert_dir(&acme.storage, "a.test").join("a.test.crt");

    let check = |list: &serde_json::Value, from: &str| {
        let entries = list
            .as_array()
            .unwrap_or_else(|| panic!("{from}: an array: {list}"));
        let entry = entries
            .iter()
            .find(|e| {
                e["source"] == "acme"
                    && e["names"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|x| x == "a.test"))
            })
            .unwrap_or_else(|| {
                panic!("{from}: no entry with source \"acme\" for a.test: {list:#}")
            });
        assert_eq!(
            entry["file"].as_str(),
            crt.to_str(),
            "{from}: the stored .crt: {entry}"
        );
        assert_eq!(entry["status"], "ok", "{from}: {entry}");
        assert!(
            entry["issuer"]
                .as_str()
                .is_some_and(|i| i.contains("Pebble")),
            "{from}: {entry}"
        );
        assert!(entry["not_after"].as_str().is_some(), "{from}: {entry}");
    };
    let out = acme.clace.run(&["certs", "--json"]);
    assert_eq!(out.code(), Some(0), "clace certs --json: {}", out.stderr);
    let list: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("JSON ({e}): {}", out.stdout));
    check(&list, "clace certs --json");
    check(&get(tls.http, "/_clace/certs").json(), "/_clace/certs");

    let out = acme.clace.run(&["certs", "--json", "--name", "a.test"]);
    assert_eq!(
        out.code(),
        Some(0),
        "clace certs --name a.test: {}",
        out.stderr
    );
    let chosen: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("JSON ({e}): {}", out.stdout));
    assert_eq!(
        chosen["step"], "acme",
        "a.test is served from ACME: {chosen}"
    );
    assert_eq!(chosen["file"].as_str(), crt.to_str(), "{chosen}");
    let _ = leaf;
}

#[test]
fn health_shows_acme_running_and_disabled_without_service_email() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    acme.wait_issued(&mut tls, "a.test");
    let (status, health) = acme.wait_acme_state(&tls, "running");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");

    // Without service_email: disabled, and still 200.
    let world = World::with_certs();
    world.configure("", "", "");
    let daemon = world.serve_ready();
    let resp = get(daemon.http, "/_clace/health");
    let json = resp.json();
    assert_eq!(json["actors"]["acme"], "disabled", "{json}");
    assert_eq!(resp.status, 200, "{json}");
}
