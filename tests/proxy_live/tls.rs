//! `https://` upstreams whose certificate comes from a test CA: trusted
//! with the route's `proxy_ca_file`, refused (502, the log says why)
//! without it; `proxy_server_name` for an upstream reached by IP.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::crypto::ring;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::pool::KeepAlive;
use super::{read_head, write_now, RawUpstream, Shared};
use crate::tls_util::new_serial;
use crate::util::http::Request;
use crate::util::{config_with, toml_path, toml_str, Clace, Daemon, DEADLINE};

/// A test CA and a leaf it signed for `names` (DNS names or IP addresses).
struct TestPki {
    ca_pem: String,
    leaf_pem: String,
    leaf_key_pem: String,
}

fn test_pki(names: &[&str]) -> TestPki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "clace proxy test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = date_time_ymd(2000, 1, 1);
    ca.not_after = date_time_ymd(2090, 1, 1);
    ca.serial_number = Some(SerialNumber::from_slice(&new_serial()));
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = date_time_ymd(2000, 1, 1);
    leaf.not_after = date_time_ymd(2090, 1, 1);
    leaf.serial_number = Some(SerialNumber::from_slice(&new_serial()));
    let leaf_cert = leaf.signed_by(&key, &issuer).expect("sign the leaf");
    TestPki {
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf_cert.pem(),
        leaf_key_pem: key.serialize_pem(),
    }
}

/// What the TLS upstream saw of one connection.
#[derive(Debug, Clone)]
struct Seen {
    /// The upstream connection it came on (from 0).
    conn: usize,
    /// The SNI the client sent.
    sni: Option<String>,
    /// The request line, or the handshake's failure.
    request: Result<String, String>,
}

/// What a [`TlsUpstream`] does after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Closes the connection (`Connection: close`, then close_notify).
    Close,
    /// Keeps it open for the next request.
    KeepAlive,
    /// Keeps it open, and reads the connection's second request whole but
    /// drops the connection without an answer or close_notify (the
    /// keep-alive race, made certain).
    DropSecond,
}

/// An HTTPS upstream on 127.0.0.1 that answers every request with 200
/// `hello over tls`, then does as `then` says.
struct TlsUpstream {
    raw: RawUpstream,
    seen: Shared<Vec<Seen>>,
}

impl TlsUpstream {
    fn start(pki: &TestPki) -> TlsUpstream {
        TlsUpstream::start_with(pki, Then::Close)
    }

    fn start_with(pki: &TestPki, then: Then) -> TlsUpstream {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.leaf_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("leaf PEM");
        let key = PrivateKeyDer::from_pem_slice(pki.leaf_key_pem.as_bytes()).expect("key PEM");
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        let config = Arc::new(config);
        let seen: Shared<Vec<Seen>> = Shared::default();
        let raw = {
            let seen = seen.clone();
            RawUpstream::start(move |conn_no, sock| {
                let conn = ServerConnection::new(Arc::clone(&config)).expect("TLS server");
                let mut tls = StreamOwned::new(conn, sock);
                let mut handshake = Ok(());
                while tls.conn.is_handshaking() {
                    if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                        handshake = Err(e.to_string());
                        break;
                    }
                }
                let sni = tls.conn.server_name().map(str::to_owned);
                for nth in 0.. {
                    let request = handshake.clone().and_then(|()| match read_head(&mut tls) {
                        Ok(Some(head)) => Ok(head.lines().next().unwrap_or("").to_owned()),
                        Ok(None) => Err("no request".to_owned()),
                        Err(e) => Err(e.to_string()),
                    });
                    let ok = request.is_ok();
                    if nth > 0 && !ok {
                        return; // The client closed a kept-alive connection.
                    }
                    seen.update(|s| {
                        s.push(Seen {
                            conn: conn_no,
                            sni: sni.clone(),
                            request,
                        })
                    });
                    if !ok || (then == Then::DropSecond && nth == 1) {
                        return;
                    }
                    let body = "hello over tls";
                    let connection = if then == Then::Close {
                        "close"
                    } else {
                        "keep-alive"
                    };
                    let _ = write_now(
                        &mut tls,
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    if then == Then::Close {
                        tls.conn.send_close_notify();
                        let _ = tls.conn.complete_io(&mut tls.sock);
                        return;
                    }
                }
            })
        };
        TlsUpstream { raw, seen }
    }

    fn port(&self) -> u16 {
        self.raw.addr.port()
    }
}

/// Writes the CA's PEM into the test's folder.
fn write_ca(clace: &Clace, pki: &TestPki) -> PathBuf {
    let path = clace.root().join("upstream-ca.pem");
    fs::write(&path, &pki.ca_pem).expect("write the CA file");
    path
}

/// A daemon with one route on `/` to `upstream`, trusting the test CA.
fn serve_trusted(pki: &TestPki, upstream: &TlsUpstream) -> (Clace, Daemon) {
    let clace = Clace::new();
    let ca = write_ca(&clace, pki);
    let daemon = serve(
        &clace,
        &format!(
            "[[route]]\npath = \"/\"\nproxy = {}\nproxy_ca_file = {}\n",
            toml_str(format!("https://127.0.0.1:{}", upstream.port())),
            toml_path(&ca)
        ),
    );
    (clace, daemon)
}

fn serve(clace: &Clace, routes: &str) -> Daemon {
    clace.write_config(&config_with(routes));
    clace.serve()
}

/// `GET path` through clace answers 200 with the TLS upstream's greeting.
fn expect_hello(daemon: &Daemon, path: &str) {
    let resp = Request::get(path).send(daemon.http);
    assert_eq!(
        resp.status,
        200,
        "body: {}; stderr:\n{}",
        resp.text(),
        daemon.proc.stderr()
    );
    assert_eq!(resp.text(), "hello over tls");
}

#[test]
fn an_https_upstream_from_a_test_ca_is_trusted_with_proxy_ca_file() {
    let pki = test_pki(&["127.0.0.1"]);
    let upstream = TlsUpstream::start(&pki);
    let (_clace, daemon) = serve_trusted(&pki, &upstream);
    expect_hello(&daemon, "/secure/x?y=1");
    let seen = upstream.seen.get();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].request.as_deref(),
        Ok("GET /secure/x?y=1 HTTP/1.1"),
        "{seen:?}"
    );
}

#[test]
fn an_https_upstream_from_an_unknown_ca_is_a_502_whose_log_says_why() {
    let pki = test_pki(&["127.0.0.1"]);
    let upstream = TlsUpstream::start(&pki);
    let clace = Clace::new();
    let mut daemon = serve(
        &clace,
        &format!(
            "[[route]]\npath = \"/\"\nproxy = {}\n",
            toml_str(format!("https://127.0.0.1:{}", upstream.port()))
        ),
    );
    let resp = Request::get("/secure").send(daemon.http);
    assert_eq!(resp.status, 502, "body: {}", resp.text());
    let line = daemon.proc.wait_for_line(
        &format!("-> https://127.0.0.1:{}", upstream.port()),
        DEADLINE,
    );
    let lower = line.to_ascii_lowercase();
    assert!(
        lower.contains("certificate")
            && (lower.contains("unknownissuer") || lower.contains("unknown issuer")),
        "the log line says the issuer is unknown: {line}"
    );
    assert!(
        resp.text().contains("certificate"),
        "the client's line names the certificate, as the proxy's classify() means to \
         (`bad gateway: the certificate of upstream ... cannot be trusted`): {}; log: {line}",
        resp.text()
    );
    let seen = upstream.seen.get();
    assert!(
        seen.iter().all(|s| s.request.is_err()),
        "no request reached the untrusted upstream: {seen:?}"
    );
}

#[test]
fn proxy_server_name_is_sent_and_verified_for_an_upstream_reached_by_ip() {
    let pki = test_pki(&["up.test"]);
    let upstream = TlsUpstream::start(&pki);
    let clace = Clace::new();
    let ca = write_ca(&clace, &pki);
    let url = toml_str(format!("https://127.0.0.1:{}", upstream.port()));
    let mut daemon = serve(
        &clace,
        &format!(
            "[[route]]\npath = \"/named\"\nproxy = {url}\nproxy_ca_file = {ca}\nproxy_server_name = \"up.test\"\n\n\
             [[route]]\npath = \"/by-ip\"\nproxy = {url}\nproxy_ca_file = {ca}\n",
            ca = toml_path(&ca)
        ),
    );
    expect_hello(&daemon, "/named/a");
    let seen = upstream.seen.get();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].sni.as_deref(),
        Some("up.test"),
        "the route's proxy_server_name is the SNI"
    );

    // The same upstream without the name: its certificate is not for
    // 127.0.0.1.
    let resp = Request::get("/by-ip/a").send(daemon.http);
    assert_eq!(resp.status, 502, "body: {}", resp.text());
    let line = daemon.proc.wait_for_line("route /by-ip ->", DEADLINE);
    let lower = line.to_ascii_lowercase();
    assert!(
        lower.contains("certificate")
            && (lower.contains("notvalidforname") || lower.contains("not valid for name")),
        "the log line says the name does not match: {line}"
    );
    assert!(
        resp.text().contains("certificate"),
        "the client's line names the certificate: {}; log: {line}",
        resp.text()
    );
}

/// Two requests over one client connection (so one worker, one pool) go on
/// one TLS connection to the upstream: one handshake.
#[test]
fn an_https_upstream_connection_is_reused() {
    let pki = test_pki(&["127.0.0.1"]);
    let upstream = TlsUpstream::start_with(&pki, Then::KeepAlive);
    let (_clace, daemon) = serve_trusted(&pki, &upstream);
    let mut client = KeepAlive::open(daemon.http);
    for path in ["/one", "/two"] {
        let resp = client.send("GET", path, b"");
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.text(), "hello over tls");
    }
    let seen = upstream.seen.get();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|s| s.conn == 0),
        "one TLS connection: {seen:?}"
    );
    assert_eq!(upstream.raw.accepted(), 1);
}

/// A pooled TLS connection the upstream drops after a request went out,
/// without close_notify (which reads as an unexpected end, not a clean
/// close): a GET is sent once more on a new connection.
#[test]
fn the_keep_alive_race_over_tls_is_retried_when_safe() {
    let pki = test_pki(&["127.0.0.1"]);
    let upstream = TlsUpstream::start_with(&pki, Then::DropSecond);
    let (_clace, mut daemon) = serve_trusted(&pki, &upstream);
    let mut client = KeepAlive::open(daemon.http);
    let resp = client.send("GET", "/first", b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = client.send("GET", "/again", b"");
    assert_eq!(
        resp.status,
        200,
        "{}; stderr:\n{}",
        resp.text(),
        daemon.proc.stderr()
    );
    daemon.proc.wait_for_line("once more", DEADLINE);
    let seen = upstream.seen.get();
    let again: Vec<usize> = seen
        .iter()
        .filter(|s| s.request.as_deref() == Ok("GET /again HTTP/1.1"))
        .map(|s| s.conn)
        .collect();
    assert_eq!(
        again,
        vec![0, 1],
        "sent on the pooled connection, then once on a new one: {seen:?}"
    );
}
