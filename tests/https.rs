//! Issue 3: the HTTPS listener and which certificate a handshake gets
//! (interface §4), with the real binary and certificates made by rcgen.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use rustls::ProtocolVersion;

use crate::tls_util::{
    facts, file_serial, handshake, handshake_with, install_pair, make_pair, mode, pem_certs,
    raw_exchange, rsa_key_pkcs8, s_client, s_client_serial, tls11_client_hello, traditional_key,
    Hello, Spec, Validity, World,
};
use crate::util::http::Request;
use crate::util::{toml_path, unique};

/// A world with a user-made `default.crt` (so "the default" has a known
/// serial) and the given pairs; returns the default's serial.
fn world_with_default(pairs: &[(&str, &crate::tls_util::Pair)]) -> (World, String) {
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    for (name, pair) in pairs {
        install_pair(&world.certs, name, pair);
    }
    world.configure("", "", "");
    (world, default.serial)
}

#[test]
fn pair_named_after_the_name_is_served() {
    let a = make_pair(&["a.test"]);
    // Named for plain.test but listing another name: still served for
    // plain.test (§4 step 2a, "as Clace does").
    let plain = make_pair(&["not-plain.test"]);
    let (world, default) = world_with_default(&[("a.test", &a), ("plain.test", &plain)]);
    let tls = world.serve();
    assert_eq!(tls.serial(Some("a.test")), a.serial);
    assert_eq!(tls.serial(Some("plain.test")), plain.serial);
    assert_eq!(
        tls.serial(Some("not-plain.test")),
        plain.serial,
        "its SAN is served by SAN lookup"
    );
    assert_eq!(tls.serial(Some("b.test")), default);
}

#[test]
fn san_in_a_differently_named_file_is_served() {
    let example = make_pair(&["example.com", "www.example.com"]);
    let (world, default) = world_with_default(&[("example", &example)]);
    let tls = world.serve();
    assert_eq!(tls.serial(Some("example.com")), example.serial);
    assert_eq!(tls.serial(Some("www.example.com")), example.serial);
    assert_eq!(
        tls.serial(Some("example")),
        example.serial,
        "the file name itself"
    );
    assert_eq!(tls.serial(Some("api.example.com")), default);
}

#[test]
fn wildcard_matches_exactly_one_label() {
    let wild = make_pair(&["*.wild.test"]);
    let (world, default) = world_with_default(&[("wild", &wild)]);
    let tls = world.serve();
    assert_eq!(tls.serial(Some("a.wild.test")), wild.serial);
    assert_eq!(tls.serial(Some("other-1.wild.test")), wild.serial);
    assert_eq!(tls.serial(Some("wild.test")), default, "no label");
    assert_eq!(tls.serial(Some("a.b.wild.test")), default, "two labels");
    assert_eq!(tls.serial(Some("awild.test")), default);
}

#[test]
fn sni_is_lower_cased_and_its_trailing_dot_dropped() {
    let a = make_pair(&["case.test"]);
    let wild = make_pair(&["*.wild.test"]);
    let (world, default) = world_with_default(&[("case.test", &a), ("wild", &wild)]);
    let tls = world.serve();
    // rustls sends the name as given (it drops a trailing dot itself).
    assert_eq!(tls.serial(Some("CASE.TEST")), a.serial);
    assert_eq!(tls.serial(Some("Case.Test")), a.serial);
    assert_eq!(tls.serial(Some("X.WILD.TEST")), wild.serial);
    // openssl sends the trailing dot as it is.
    for name in ["case.test.", "CASE.Test.", "x.wild.test."] {
        let want = if name.contains("wild") {
            &wild.serial
        } else {
            &a.serial
        };
        match s_client_serial(tls.https, name) {
            Ok(serial) => assert_eq!(&serial, want, "SNI {name:?}"),
            Err(out) => panic!(
                "handshake with SNI {name:?} failed:\n{out}\nclace stderr:\n{}",
                tls.stderr()
            ),
        }
    }
    assert_eq!(
        s_client_serial(tls.https, "other.test.").ok(),
        Some(default)
    );
}

#[test]
fn no_sni_and_unknown_names_get_default_crt() {
    let a = make_pair(&["a.test"]);
    let (world, default) = world_with_default(&[("a.test", &a)]);
    let tls = world.serve();
    assert_eq!(tls.serial(None), default, "no SNI");
    assert_eq!(tls.serial(Some("unknown.test")), default);
    assert_eq!(tls.serial(Some("test")), default);
    // The user's default is used as it is, never replaced.
    assert_eq!(
        file_serial(&world.crt("default")).as_deref(),
        Some(default.as_str())
    );
}

#[test]
fn self_signed_default_is_created_private_with_the_local_names() {
    let world = World::new();
    assert!(!world.certs.exists());
    world.configure("", "", "");
    let tls = world.serve();
    let crt = world.crt("default");
    let key = world.key("default");
    assert!(
        crt.is_file() && key.is_file(),
        "default pair not created; stderr:\n{}",
        tls.stderr()
    );
    assert_eq!(mode(&key), 0o600, "key file mode");
    assert_eq!(mode(&world.certs), 0o700, "new cert_location mode");

    let pem = fs::read(&crt).expect("read default.crt");
    let certs = pem_certs(&pem);
    let f = facts(&certs[0]);
    assert_eq!(f.subject_cn, "clace self-signed default");
    assert!(
        f.dns_names.iter().any(|n| n == "localhost"),
        "localhost in {f:?}"
    );
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned();
    assert!(
        f.dns_names.iter().any(|n| n.eq_ignore_ascii_case(&host)),
        "host name {host:?} in {:?}",
        f.dns_names
    );
    for ip in ["127.0.0.1", "::1"] {
        let ip: std::net::IpAddr = ip.parse().expect("ip");
        assert!(f.ip_addrs.contains(&ip), "{ip} in {:?}", f.ip_addrs);
    }
    // ECDSA P-256, one year.
    assert_eq!(f.key_alg, "1.2.840.10045.2.1", "id-ecPublicKey");
    assert_eq!(f.key_param.as_deref(), Some("1.2.840.10045.3.1.7"), "P-256");
    let days = (f.not_after - f.not_before) / 86_400;
    assert!((364..=367).contains(&days), "validity of {days} days");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(f.not_before <= now + 60 && f.not_after > now, "valid now");

    // It is what unknown names and no SNI get (and the handshake proves
    // that the key on disk belongs to it).
    assert_eq!(tls.serial(None), f.serial);
    assert_eq!(tls.serial(Some("anything.test")), f.serial);
    assert_eq!(tls.serial(Some("localhost")), f.serial);
}

#[test]
fn lookup_disabled_serves_default_crt_to_everyone() {
    let a = make_pair(&["a.test"]);
    let example = make_pair(&["example.com"]);
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    install_pair(&world.certs, "a.test", &a);
    install_pair(&world.certs, "example", &example);
    world.configure("", "enable_cert_lookup = false", "");
    let tls = world.serve();
    assert_eq!(tls.serial(Some("a.test")), default.serial);
    assert_eq!(tls.serial(Some("example.com")), default.serial);
    assert_eq!(tls.serial(None), default.serial);
}

#[test]
fn valid_certificate_beats_expired_and_a_lone_expired_one_is_served() {
    // both.test: its own file is expired, another file lists it and is valid.
    let both_expired = Spec::new(&["both.test"]).validity(Validity::Expired).make();
    let both_valid = make_pair(&["both.test", "other.test"]);
    // old.test: only an expired certificate; future.test: only a
    // not-yet-valid one.
    let old = Spec::new(&["old.test"]).validity(Validity::Expired).make();
    let future = Spec::new(&["future.test"])
        .validity(Validity::NotYetValid)
        .make();
    // san.test: an expired SAN match and a valid wildcard match.
    let san_expired = Spec::new(&["x.san.test"])
        .validity(Validity::Expired)
        .make();
    let san_wild = make_pair(&["*.san.test"]);
    let (world, _default) = world_with_default(&[
        ("both.test", &both_expired),
        ("both-valid", &both_valid),
        ("old.test", &old),
        ("future.test", &future),
        ("san-expired", &san_expired),
        ("san-wild", &san_wild),
    ]);
    let tls = world.serve();
    assert_eq!(tls.serial(Some("both.test")), both_valid.serial);
    assert_eq!(tls.serial(Some("x.san.test")), san_wild.serial);
    assert_eq!(tls.serial(Some("old.test")), old.serial);
    assert_eq!(tls.serial(Some("future.test")), future.serial);
}

#[test]
fn whole_chain_is_served() {
    let chain = Spec::new(&["chain.test"]).chain("clace test CA").make();
    let (world, _) = world_with_default(&[("chain.test", &chain)]);
    let tls = world.serve();
    let want = pem_certs(chain.cert_pem.as_bytes());
    assert_eq!(want.len(), 2);
    let h = handshake(tls.https, Some("chain.test")).expect("handshake");
    assert_eq!(h.chain.len(), 2, "leaf and intermediate");
    assert_eq!(h.chain[0].as_ref(), want[0].as_ref(), "leaf first");
    assert_eq!(h.chain[1].as_ref(), want[1].as_ref(), "then the CA");
    assert_eq!(facts(&h.chain[1]).subject_cn, "clace test CA");
}

#[test]
fn rsa_pkcs8_rsa_pkcs1_and_sec1_keys_are_accepted() {
    let rsa8 = rsa_key_pkcs8();
    let rsa1 = traditional_key(&rsa8);
    assert!(rsa1.contains("-----BEGIN RSA PRIVATE KEY-----"), "{rsa1}");
    let rsa8_pair = Spec::new(&["rsa8.test"]).key(&rsa8).make();
    let mut rsa1_pair = Spec::new(&["rsa1.test"]).key(&rsa8).make();
    rsa1_pair.key_pem = rsa1;

    let mut ec_pair = make_pair(&["sec1.test"]);
    let sec1 = traditional_key(&ec_pair.key_pem);
    assert!(sec1.contains("-----BEGIN EC PRIVATE KEY-----"), "{sec1}");
    ec_pair.key_pem = sec1;

    let (world, _) = world_with_default(&[
        ("rsa8.test", &rsa8_pair),
        ("rsa1.test", &rsa1_pair),
        ("sec1.test", &ec_pair),
    ]);
    let tls = world.serve();
    for (name, pair) in [
        ("rsa8.test", &rsa8_pair),
        ("rsa1.test", &rsa1_pair),
        ("sec1.test", &ec_pair),
    ] {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let h = handshake_with(tls.https, &Hello::sni(Some(name)).versions(&[version]))
                .unwrap_or_else(|e| {
                    panic!("{name} over {version:?}: {e}; stderr:\n{}", tls.stderr())
                });
            assert_eq!(h.serial(), pair.serial, "{name}");
        }
    }
}

#[test]
fn mismatched_pair_is_rejected_and_logged() {
    let good = make_pair(&["bad.test"]);
    let other = make_pair(&["other.test"]);
    let mut bad = good.clone();
    bad.key_pem = other.key_pem.clone();
    let (world, default) = world_with_default(&[("bad.test", &bad)]);
    let tls = world.serve();
    assert_eq!(tls.serial(Some("bad.test")), default);
    let crt = world.crt("bad.test");
    tls.wait_lines(&format!("rejected {}", crt.display()), 1);
    let line = tls
        .proc
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains(&format!("rejected {}", crt.display())))
        .expect("line");
    assert!(line.contains(" WARN "), "logged at warn: {line}");
}

#[test]
fn tls_1_1_is_refused_and_1_2_and_1_3_are_accepted() {
    let a = make_pair(&["a.test"]);
    let (world, _) = world_with_default(&[("a.test", &a)]);
    let tls = world.serve();

    // A hand-made TLS 1.1 ClientHello gets a fatal protocol_version alert.
    let answer = raw_exchange(tls.https, &tls11_client_hello("a.test"));
    assert!(
        answer.len() >= 7 && answer[0] == 0x15,
        "expected an alert record, got {answer:02x?}"
    );
    assert_eq!(answer[5], 2, "fatal alert: {answer:02x?}");
    assert_eq!(answer[6], 70, "protocol_version alert: {answer:02x?}");

    // openssl at security level 0 does speak TLS 1.1; clace must refuse it.
    let old = s_client(
        tls.https,
        &[
            "-servername",
            "a.test",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ],
    );
    assert!(
        !old.success && old.chain.is_empty(),
        "TLS 1.1 accepted:\n{}",
        old.output
    );
    // The refusal is the server's: an alert came back (rustls answers a
    // TLS 1.1 hello without signature_algorithms with handshake_failure).
    assert!(
        old.output.contains("SSL alert number"),
        "the server should refuse with an alert:\n{}",
        old.output
    );
    // The same client, asking for TLS 1.2, succeeds: the refusal was the
    // version.
    let ok = s_client(
        tls.https,
        &[
            "-servername",
            "a.test",
            "-tls1_2",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ],
    );
    assert!(ok.success, "TLS 1.2 refused:\n{}", ok.output);
    assert_eq!(facts(&ok.chain[0]).serial, a.serial);

    for (version, want) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let h = handshake_with(tls.https, &Hello::sni(Some("a.test")).versions(&[version]))
            .unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(h.version, want);
        assert_eq!(h.serial(), a.serial);
    }
}

#[test]
fn alpn_offers_h2_and_http_1_1() {
    let (world, _) = world_with_default(&[]);
    let tls = world.serve();
    let h = handshake_with(
        tls.https,
        &Hello::sni(Some("a.test")).alpn(&["h2", "http/1.1"]),
    )
    .expect("handshake");
    assert_eq!(h.alpn_str().as_deref(), Some("h2"));
    let h = handshake_with(
        tls.https,
        &Hello::sni(Some("a.test")).alpn(&["http/1.1", "h2"]),
    )
    .expect("handshake");
    assert!(
        h.alpn_str().as_deref() == Some("h2") || h.alpn_str().as_deref() == Some("http/1.1"),
        "{:?}",
        h.alpn_str()
    );
    let h = handshake_with(tls.https, &Hello::sni(Some("a.test")).alpn(&["http/1.1"]))
        .expect("handshake");
    assert_eq!(h.alpn_str().as_deref(), Some("http/1.1"));
    // HTTP/2 is really served: a request over h2 with curl.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--max-time",
            "10",
        ])
        .arg(format!(
            "https://127.0.0.1:{}/_clace/health",
            tls.https.port()
        ))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "2 200",
        "curl over h2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sni_with_a_path_never_reaches_the_disk() {
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    // A valid pair beside cert_location, and one deeper, that a path-like
    // name could reach if it were ever joined to the folder.
    let outside = world.root().join("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    let evil = make_pair(&["evil.com", "*.outside"]);
    install_pair(&outside, "evil.com", &evil);
    install_pair(world.root(), "evil.com", &evil);
    let sub = world.certs.join("sub");
    fs::create_dir_all(&sub).expect("mkdir");
    install_pair(&sub, "deep.test", &evil);
    world.configure("", "", "");
    let tls = world.serve();

    let abs = format!("{}/evil.com", outside.display());
    let names = [
        "../outside/evil.com",
        "..%2foutside%2fevil.com",
        "..\\outside\\evil.com",
        "../evil.com",
        "sub/deep.test",
        abs.as_str(),
    ];
    for name in names {
        // Either treated as no name (the default) or refused with an alert
        // (§4): never the pair outside.
        match s_client_serial(tls.https, name) {
            Ok(serial) => {
                assert_ne!(serial, evil.serial, "SNI {name:?} got the pair outside");
                assert_eq!(serial, default.serial, "SNI {name:?}");
            }
            Err(out) => assert!(
                out.contains("SSL alert number"),
                "SNI {name:?}: no alert from the server:\n{out}"
            ),
        }
    }
    // Nothing outside the folder (or in a sub-folder) was ever loaded.
    assert_eq!(tls.serial(Some("evil.com")), default.serial);
    assert_eq!(tls.serial(Some("deep.test")), default.serial);
    // The daemon is still serving.
    assert_eq!(tls.serial(None), default.serial);
}

#[test]
fn redirect_to_https_keeps_path_and_query_but_not_health() {
    let world = World::with_certs();
    world.configure("redirect_to_https = true", "", "");
    let tls = world.serve();
    let port = tls.https.port();
    for method in ["GET", "POST", "HEAD"] {
        let target = "/some/path?x=1&y=two";
        let resp = Request::new(method, target)
            .header("Host", &format!("127.0.0.1:{}", tls.http.port()))
            .send(tls.http);
        assert_eq!(resp.status, 308, "{method}");
        assert_eq!(
            resp.header("location"),
            Some(format!("https://127.0.0.1:{port}{target}").as_str()),
            "{method}"
        );
    }
    let health = Request::get("/_clace/health").send(tls.http);
    assert_eq!(health.status, 200, "health is not redirected");
    assert_eq!(health.json()["status"], "ok");
}

#[test]
fn routes_are_served_over_https() {
    let world = World::with_certs();
    let site = world.root().join("site");
    fs::create_dir_all(&site).expect("mkdir");
    let body = unique("over-tls");
    fs::write(site.join("page.txt"), &body).expect("write");
    let a = make_pair(&["a.test"]);
    install_pair(&world.certs, "a.test", &a);
    world.configure(
        "",
        "",
        &format!(
            "[[route]]\npath = \"/site\"\nstatic = {}\n",
            toml_path(&site)
        ),
    );
    let tls = world.serve();
    for alpn in [&["http/1.1"][..], &[] as &[&str]] {
        let h =
            handshake_with(tls.https, &Hello::sni(Some("a.test")).alpn(alpn)).expect("handshake");
        assert_eq!(h.serial(), a.serial);
        let resp = h
            .http1(b"GET /site/page.txt HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .expect("response over TLS");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), body);
    }
    let h = handshake(tls.https, Some("a.test")).expect("handshake");
    let resp = h
        .http1(b"GET /_clace/health HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .expect("health over TLS");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["actors"]["https"], "running");
}

#[test]
fn acme_tls_1_is_offered_with_acme_only_and_serves_no_http() {
    // Without ACME, acme-tls/1 is not offered: rustls refuses a client
    // that offers nothing else.
    let (world, _) = world_with_default(&[]);
    let tls = world.serve();
    assert!(
        handshake_with(tls.https, &Hello::sni(Some("a.test")).alpn(&["acme-tls/1"])).is_err(),
        "acme-tls/1 negotiated without ACME"
    );
    drop(tls);

    // With ACME (a CA that cannot be reached: nothing is ordered), it is
    // negotiated, and such a connection carries no HTTP: 421, closed.
    let (world, default) = world_with_default(&[]);
    world.configure(
        "",
        "service_email = \"admin@example.test\"\nacme_directory_url = \"https://127.0.0.1:1/dir\"\ndomains = [\"a.test\"]",
        "",
    );
    let tls = world.serve();
    let h = handshake_with(tls.https, &Hello::sni(Some("a.test")).alpn(&["acme-tls/1"]))
        .expect("acme-tls/1 handshake");
    assert_eq!(h.alpn_str().as_deref(), Some("acme-tls/1"));
    // No challenge is pending: the normal certificate.
    assert_eq!(h.serial(), default);
    let resp = h
        .http1(b"GET /_clace/health HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .expect("an answer, then the end");
    assert_eq!(resp.status, 421);
    // Ordinary clients are served as ever.
    let h = handshake_with(tls.https, &Hello::sni(Some("a.test")).alpn(&["http/1.1"]))
        .expect("handshake");
    let resp = h
        .http1(b"GET /_clace/health HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .expect("health");
    assert_eq!(resp.status, 200);
}

#[test]
fn load_warnings_name_the_file() {
    // Named for a name it does not list, expired, and a key others can read.
    let plain = make_pair(&["not-plain.test"]);
    let old = Spec::new(&["old.test"]).validity(Validity::Expired).make();
    let private = make_pair(&["private.test"]);
    let (world, _) = world_with_default(&[
        ("plain.test", &plain),
        ("old.test", &old),
        ("private.test", &private),
    ]);
    for name in ["default", "plain.test", "old.test"] {
        fs::set_permissions(world.key(name), fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    fs::set_permissions(world.key("private.test"), fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let tls = world.serve();
    assert_eq!(tls.serial(Some("old.test")), old.serial);
    let warns = |path: &std::path::Path| {
        let p = path.display().to_string();
        tls.proc
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains(" WARN ") && l.contains(&p))
            .collect::<Vec<_>>()
    };
    for (what, path) in [
        ("named for a name it does not list", world.crt("plain.test")),
        ("expired", world.crt("old.test")),
        ("key readable by others", world.key("plain.test")),
        ("key readable by others", world.key("default")),
    ] {
        let ok = crate::util::wait_until(crate::util::DEADLINE, || !warns(&path).is_empty());
        assert!(
            ok,
            "no warning naming {} ({what}); stderr:\n{}",
            path.display(),
            tls.stderr()
        );
    }
    assert!(
        warns(&world.key("private.test")).is_empty(),
        "a 0600 key is fine: {:?}",
        warns(&world.key("private.test"))
    );
}

#[test]
fn expired_self_signed_default_is_replaced_at_start() {
    let world = World::with_certs();
    let stale = Spec::new(&["localhost"])
        .cn("clace self-signed default")
        .validity(Validity::Expired)
        .make();
    install_pair(&world.certs, "default", &stale);
    world.configure("", "", "");
    let tls = world.serve();
    let served = tls.serial(Some("unknown.test"));
    assert_ne!(
        served, stale.serial,
        "the expired self-signed default is served"
    );
    let on_disk = fs::read(world.crt("default")).expect("read default.crt");
    let f = facts(&pem_certs(&on_disk)[0]);
    assert_eq!(f.serial, served, "the new default is on disk");
    assert_eq!(f.subject_cn, "clace self-signed default");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(f.not_after > now, "valid now");
    assert_eq!(mode(&world.key("default")), 0o600);
}

#[test]
fn expired_user_default_is_kept() {
    // Only clace's own self-signed default is replaced; a user's expired
    // default.crt is the user's business (§4 step 4).
    let world = World::with_certs();
    let mine = Spec::new(&["default.test"])
        .cn("My Default")
        .validity(Validity::Expired)
        .make();
    install_pair(&world.certs, "default", &mine);
    world.configure("", "", "");
    let tls = world.serve();
    assert_eq!(tls.serial(Some("unknown.test")), mine.serial);
    assert_eq!(
        file_serial(&world.crt("default")).as_deref(),
        Some(mine.serial.as_str())
    );
}
