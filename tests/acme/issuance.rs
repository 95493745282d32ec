//! Issuance: a certificate ordered over TLS-ALPN-01, served, stored in
//! certmagic's layout; which names are ordered and which are not.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use super::{is_pebble, Acme, EMAIL, ISSUE_DEADLINE};
use crate::tls_util::{
    facts, file_serial, handshake, install_pair, make_pair, mode, pem_certs, Spec, Validity,
    RELOAD_LIMIT,
};
use crate::util::DEADLINE;

#[test]
fn issued_and_served_within_60s_with_a_chain_to_pebbles_root() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let started = Instant::now();
    let mut tls = acme.serve();
    let h = acme.wait_issued(&mut tls, "a.test");
    let took = started.elapsed();
    assert!(took <= ISSUE_DEADLINE, "issued and served after {took:?}");

    let leaf = h.leaf();
    assert_eq!(
        leaf.dns_names,
        vec!["a.test".to_owned()],
        "the leaf names a.test alone"
    );
    assert!(
        h.chain.len() >= 2,
        "the chain is served whole (leaf and intermediate): {} certificate(s)",
        h.chain.len()
    );
    acme.assert_verifies(&tls, &h, "a.test");
    assert!(
        acme.pebble()
            .issued_serials()
            .iter()
            .any(|s| s.trim_start_matches('0') == leaf.serial.trim_start_matches('0')),
        "the served serial {} is one Pebble issued: {:?}",
        leaf.serial,
        acme.pebble().issued_serials()
    );
    // A fresh ECDSA P-256 key per certificate.
    assert_eq!(leaf.key_alg, "1.2.840.10045.2.1", "an EC key");
    assert_eq!(
        leaf.key_param.as_deref(),
        Some("1.2.840.10045.3.1.7"),
        "on P-256"
    );

    // The order and the issuance are logged with the name.
    acme.wait_log(&mut tls, &["ordering", "certificate", "a.test"], DEADLINE);
    acme.wait_log(&mut tls, &["certificate", "a.test", "issued"], DEADLINE);
    // HTTP over the new certificate, verified for real.
    let resp = super::https_get(tls.https, "a.test", "/_clace/health")
        .expect("GET over the issued certificate");
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn stored_in_certmagics_layout_with_keys_0600_and_folders_0700() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let h = acme.wait_issued(&mut tls, "a.test");
    let served = h.serial();

    // certificates/<issuer>/<name>/<name>.crt|.key|.json, issuer
    // 127.0.0.1-PORT-dir for https://127.0.0.1:PORT/dir.
    let dir = acme.cert_dir(&acme.storage, "a.test");
    let crt = dir.join("a.test.crt");
    let key = dir.join("a.test.key");
    let json = dir.join("a.test.json");
    for f in [&crt, &key, &json] {
        assert!(
            f.is_file(),
            "{} exists (issuer folder {}); storage holds:\n{}{}",
            f.display(),
            acme.pebble().issuer_key(),
            listing(&acme.storage),
            acme.diag(&tls)
        );
    }
    assert_eq!(
        file_serial(&crt).as_deref(),
        Some(served.as_str()),
        "the stored .crt is the served one"
    );
    let chain = pem_certs(&fs::read(&crt).expect("read .crt"));
    assert!(
        chain.len() >= 2,
        "the chain is stored whole, leaf first: {} certificate(s)",
        chain.len()
    );
    assert_eq!(facts(&chain[0]).serial, served, "leaf first");
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(&json).expect("read .json")).expect("the .json is JSON");
    assert!(meta.is_object(), "the .json is an object: {meta}");
    assert!(
        fs::read_to_string(&key)
            .expect("read .key")
            .contains("PRIVATE KEY"),
        "the .key is a PEM private key"
    );

    // The account: acme/<issuer>/users/<email>/<local part>.json and .key.
    let users = acme
        .storage
        .join("acme")
        .join(acme.pebble().issuer_key())
        .join("users")
        .join(EMAIL);
    let account_json = users.join("admin.json");
    let account_key = users.join("admin.key");
    for f in [&account_json, &account_key] {
        assert!(
            f.is_file(),
            "{} exists; storage holds:\n{}",
            f.display(),
            listing(&acme.storage)
        );
    }
    let account: serde_json::Value =
        serde_json::from_slice(&fs::read(&account_json).expect("read account"))
            .expect("account JSON");
    assert!(account.is_object(), "{account}");

    // Keys 0600, every folder (clace made them all) 0700, no temporary
    // file left behind.
    for k in [&key, &account_key] {
        assert_eq!(mode(k), 0o600, "{} is 0600", k.display());
    }
    for d in walk(&acme.storage).into_iter().filter(|p| p.is_dir()) {
        assert_eq!(
            mode(&d),
            0o700,
            "folder {} is 0700; storage holds:\n{}",
            d.display(),
            listing(&acme.storage)
        );
    }
    for f in walk(&acme.storage).into_iter().filter(|p| p.is_file()) {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let temporary = name.starts_with('.') || name.contains(".tmp");
        assert!(!temporary, "a temporary file left behind: {}", f.display());
        if name.ends_with(".key") {
            assert_eq!(
                fs::metadata(&f).expect("stat").permissions().mode() & 0o077,
                0,
                "{} is private",
                f.display()
            );
        }
    }
}

#[test]
fn an_unlisted_name_gets_the_default_and_causes_no_order() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    acme.wait_issued(&mut tls, "a.test");
    let default =
        file_serial(&acme.certs.join("default.crt")).expect("the self-signed default.crt");
    for _ in 0..5 {
        let h = handshake(tls.https, Some("c.test"))
            .unwrap_or_else(|e| panic!("handshake for c.test: {e}{}", acme.diag(&tls)));
        assert_eq!(h.serial(), default, "an unlisted name gets default.crt");
    }
    // Also with acme-tls/1 offered: no challenge is pending, so no order.
    let _ = crate::tls_util::handshake_with(
        tls.https,
        &crate::tls_util::Hello::sni(Some("c.test")).alpn(&["acme-tls/1"]),
    );
    acme.assert_orders_stay(&tls, 1, "only a.test is ordered");
}

#[test]
fn a_wildcard_name_is_skipped_with_a_warning() {
    let acme = Acme::new();
    acme.configure(&["*.w.test", "a.test"], "", "");
    let mut tls = acme.serve();
    let line = acme.wait_log(&mut tls, &["wildcard", "*.w.test"], DEADLINE);
    assert!(
        line.to_ascii_lowercase().contains("warn"),
        "logged as a warning: {line}"
    );
    acme.wait_issued(&mut tls, "a.test");
    let h = handshake(tls.https, Some("x.w.test")).expect("handshake for x.w.test");
    assert!(!is_pebble(&h.leaf()), "no certificate for the wildcard");
    acme.assert_orders_stay(&tls, 1, "the wildcard is never ordered");
}

#[test]
fn a_name_covered_by_a_valid_file_is_not_ordered_one_whose_file_expired_is() {
    let acme = Acme::new();
    let valid = make_pair(&["a.test"]);
    install_pair(&acme.certs, "a.test", &valid);
    let expired = Spec::new(&["b.test"]).validity(Validity::Expired).make();
    install_pair(&acme.certs, "b.test", &expired);
    acme.configure(&["a.test", "b.test"], "", "");
    let mut tls = acme.serve();
    let h = acme.wait_issued(&mut tls, "b.test");
    acme.assert_verifies(&tls, &h, "b.test");
    assert_eq!(
        tls.serial(Some("a.test")),
        valid.serial,
        "a.test keeps its valid file"
    );
    acme.assert_orders_stay(
        &tls,
        1,
        "only b.test (expired file) is ordered, not a.test (valid file)",
    );
    assert_eq!(
        tls.serial(Some("a.test")),
        valid.serial,
        "a.test still gets its file"
    );
}

#[test]
fn two_names_are_ordered_concurrently_and_both_served() {
    let acme = Acme::new();
    // One from https.domains, one from a route.
    acme.configure(&["a.test"], "", &acme.route("b.test"));
    let mut tls = acme.serve();
    let deadline = Instant::now() + ISSUE_DEADLINE;
    let a = acme.wait_issued_within(&mut tls, "a.test", deadline);
    let b = acme.wait_issued_within(&mut tls, "b.test", deadline);
    acme.assert_verifies(&tls, &a, "a.test");
    acme.assert_verifies(&tls, &b, "b.test");
    assert_ne!(a.serial(), b.serial(), "one certificate per name");
    // Concurrently: Pebble received both orders before it issued either.
    let log = acme.pebble().log();
    let lines: Vec<&str> = log.lines().collect();
    let orders: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(crate::util::pebble::ORDERED))
        .map(|(i, _)| i)
        .collect();
    let issued: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(crate::util::pebble::ISSUED))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(orders.len(), 2, "two orders{}", acme.diag(&tls));
    assert!(
        orders[1] < issued[0],
        "the second order reached Pebble before the first issuance (orders run concurrently){}",
        acme.diag(&tls)
    );
    // The route serves over its certificate.
    let resp = super::https_get(tls.https, "b.test", "/").expect("GET b.test");
    assert_eq!(resp.text(), "site\n");
}

/// Every path under `root`, depth first (the root included).
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `ls -lR`-like listing, for messages.
fn listing(root: &Path) -> String {
    walk(root)
        .iter()
        .map(|p| {
            let m = fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0);
            format!("{m:04o} {}", p.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_certificate_written_into_the_storage_by_another_process_is_served_within_1s() {
    let acme = Acme::new();
    acme.configure(&["a.test"], "", "");
    let mut tls = acme.serve();
    let issued = acme.wait_issued(&mut tls, "a.test").serial();
    // Another instance (the Go Clace, Caddy) renews into the shared folder:
    // key first, then the certificate, each renamed into place.
    let dir = acme.cert_dir(&acme.storage, "a.test");
    let other = make_pair(&["a.test"]);
    assert_ne!(other.serial, issued);
    let since = Instant::now();
    install_pair(&dir, "a.test", &other);
    tls.assert_served_within(Some("a.test"), &other.serial, since, RELOAD_LIMIT);
    acme.assert_orders_stay(
        &tls,
        1,
        "a valid certificate in the storage is not ordered again",
    );
}
