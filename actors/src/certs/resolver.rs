//! The certificate resolver rustls calls on every handshake, and the
//! `ServerConfig` built around it.
//!
//! The resolver reads the current [`Snapshot`] with one `ArcSwap::load` and
//! nothing else: no lock, no I/O, no actor message, no log line. A handshake
//! therefore never waits for the cert store, and a reload (one atomic store
//! of a new snapshot) never waits for handshakes in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::snapshot::Snapshot;

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How many TLS 1.2 sessions (and TLS 1.3 stateful tickets) are remembered.
const SESSION_CACHE_SIZE: usize = 4096;

/// Picks a certificate from the published snapshot.
#[derive(Debug)]
pub struct CertResolver {
    shared: Arc<ArcSwap<Snapshot>>,
    handshakes: AtomicU64,
}

impl CertResolver {
    /// A resolver reading `shared`, which only the cert store stores into.
    pub fn new(shared: Arc<ArcSwap<Snapshot>>) -> CertResolver {
        CertResolver {
            shared,
            handshakes: AtomicU64::new(0),
        }
    }

    /// How many handshakes asked for a certificate since start (the counter
    /// `clace_tls_handshakes_total`). rustls asks on every handshake, before
    /// it decides whether to resume a session, so resumed ones count too.
    pub fn handshakes(&self) -> u64 {
        // Relaxed: a statistic, ordered with nothing else.
        self.handshakes.load(Ordering::Relaxed)
    }

    /// What [`ResolvesServerCert::resolve`] does, without a `ClientHello`
    /// (which only rustls can build): lets tests and benchmarks drive the
    /// handshake path directly.
    pub fn resolve_name(&self, sni: Option<&str>, alpn_acme: bool) -> Option<Arc<CertifiedKey>> {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        let snapshot = self.shared.load();
        snapshot
            .select(sni, alpn_acme, super::now())
            .map(|selection| selection.certified)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let alpn_acme = client_hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        self.resolve_name(client_hello.server_name(), alpn_acme)
    }
}

/// The rustls configuration of the HTTPS listener.
///
/// ring only, TLS 1.2 and 1.3, no client authentication. ALPN prefers `h2`,
/// then `http/1.1` (interface §4). With `acme`, `acme-tls/1` is accepted
/// last, because rustls refuses a client whose protocols it does not list
/// and the ACME validator offers nothing else (RFC 8737 §3); browsers never
/// offer it. Without an ACME issuer it is not offered at all. Session resumption is on: an in-memory
/// session cache for TLS 1.2 and stateless tickets, which spare the
/// resolver and a full key exchange on a reconnection.
pub fn server_config(
    resolver: Arc<CertResolver>,
    acme: bool,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer = ring::Ticketer::new()?;
    Ok(config)
}

/// A client-side verifier that accepts any certificate but still checks the
/// handshake signatures: for `clace restart` talking to its own daemon on
/// this machine (whose certificate may be the self-signed default), and for
/// tests that look at which certificate is served, not whether to trust it.
#[derive(Debug)]
pub struct AcceptAnyCert(pub Arc<rustls::crypto::CryptoProvider>);

impl AcceptAnyCert {
    pub fn new() -> AcceptAnyCert {
        AcceptAnyCert(Arc::new(ring::default_provider()))
    }
}

impl Default for AcceptAnyCert {
    fn default() -> AcceptAnyCert {
        AcceptAnyCert::new()
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, ServerConnection};

    use super::super::pair::testing::*;
    use super::super::pair::{Pair, Source};
    use super::*;

    fn client_config(
        alpn: &[&[u8]],
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<ClientConfig> {
        let provider = Arc::new(ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Runs a handshake in memory (rustls's own test pattern); returns the
    /// leaf the client received and the ALPN protocol agreed.
    fn handshake(
        server_config: &Arc<ServerConfig>,
        client_config: Arc<ClientConfig>,
        sni: &str,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), rustls::Error> {
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        let mut server = ServerConnection::new(Arc::clone(server_config)).unwrap();
        transfer(&mut client, &mut server)?;
        let leaf = client.peer_certificates().unwrap()[0].to_vec();
        Ok((leaf, client.alpn_protocol().map(<[u8]>::to_vec)))
    }

    /// Moves TLS records between the two ends until neither is handshaking
    /// (and the client has read the server's tickets).
    fn transfer(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..20 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets()?;
            }
        }
        Ok(())
    }

    /// Like [`handshake`], returning whether the session was resumed.
    fn handshake_kind(
        server_config: &Arc<ServerConfig>,
        client_config: Arc<ClientConfig>,
        sni: &str,
    ) -> rustls::HandshakeKind {
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        let mut server = ServerConnection::new(Arc::clone(server_config)).unwrap();
        transfer(&mut client, &mut server).unwrap();
        client.handshake_kind().unwrap()
    }

    fn leaf_of(pair: &Pair) -> Vec<u8> {
        pair.certified.cert[0].to_vec()
    }

    struct Fixture {
        server: Arc<ServerConfig>,
        resolver: Arc<CertResolver>,
        shared: Arc<ArcSwap<Snapshot>>,
    }

    fn fixture(snapshot: Snapshot) -> Fixture {
        let shared = Arc::new(ArcSwap::from_pointee(snapshot));
        let resolver = Arc::new(CertResolver::new(Arc::clone(&shared)));
        let server = Arc::new(server_config(Arc::clone(&resolver), true).unwrap());
        Fixture {
            server,
            resolver,
            shared,
        }
    }

    #[test]
    fn serves_by_sni_and_counts_handshakes() {
        let a = pair_at("a.test", &["a.test"], 0, i64::from(i32::MAX), Source::File);
        let default = pair_at(
            "default",
            &["localhost"],
            0,
            i64::from(i32::MAX),
            Source::File,
        );
        let f = fixture(Snapshot::build(
            vec![Arc::clone(&a), Arc::clone(&default)],
            vec![],
            HashMap::new(),
            true,
        ));
        let client = client_config(&[b"h2", b"http/1.1"], &rustls::version::TLS13);
        let (leaf, alpn) = handshake(&f.server, Arc::clone(&client), "a.test").unwrap();
        assert_eq!(leaf, leaf_of(&a));
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let (leaf, _) = handshake(&f.server, client, "other.test").unwrap();
        assert_eq!(leaf, leaf_of(&default));
        assert_eq!(f.resolver.handshakes(), 2);
    }

    #[test]
    fn tls12_and_http11() {
        let a = pair_at("a.test", &["a.test"], 0, i64::from(i32::MAX), Source::File);
        let f = fixture(Snapshot::build(
            vec![Arc::clone(&a)],
            vec![],
            HashMap::new(),
            true,
        ));
        let client = client_config(&[b"http/1.1"], &rustls::version::TLS12);
        let (leaf, alpn) = handshake(&f.server, client, "a.test").unwrap();
        assert_eq!(leaf, leaf_of(&a));
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    }

    #[test]
    fn acme_alpn_gets_the_challenge() {
        let a = pair_at("a.test", &["a.test"], 0, i64::from(i32::MAX), Source::File);
        let challenge = pair_at(
            "challenge",
            &["a.test"],
            0,
            i64::from(i32::MAX),
            Source::Acme,
        );
        let mut challenges = HashMap::new();
        challenges.insert("a.test".to_owned(), Arc::clone(&challenge.certified));
        let f = fixture(Snapshot::build(
            vec![Arc::clone(&a)],
            vec![],
            challenges,
            true,
        ));
        let acme = client_config(&[ACME_TLS_ALPN], &rustls::version::TLS13);
        let (leaf, alpn) = handshake(&f.server, acme, "a.test").unwrap();
        assert_eq!(leaf, leaf_of(&challenge));
        assert_eq!(alpn.as_deref(), Some(ACME_TLS_ALPN));
        // A browser never gets it.
        let browser = client_config(&[b"h2"], &rustls::version::TLS13);
        let (leaf, _) = handshake(&f.server, browser, "a.test").unwrap();
        assert_eq!(leaf, leaf_of(&a));
    }

    #[test]
    fn a_published_snapshot_is_used_by_the_next_handshake() {
        let old = pair_at("a.test", &["a.test"], 0, i64::from(i32::MAX), Source::File);
        let new = pair_at("a.test", &["a.test"], 0, i64::from(i32::MAX), Source::File);
        let f = fixture(Snapshot::build(
            vec![Arc::clone(&old)],
            vec![],
            HashMap::new(),
            true,
        ));
        let client = || client_config(&[b"h2"], &rustls::version::TLS13);
        assert_eq!(
            handshake(&f.server, client(), "a.test").unwrap().0,
            leaf_of(&old)
        );
        f.shared.store(Arc::new(Snapshot::build(
            vec![Arc::clone(&new)],
            vec![],
            HashMap::new(),
            true,
        )));
        // A new client (a resuming one keeps the session's certificate).
        assert_eq!(
            handshake(&f.server, client(), "a.test").unwrap().0,
            leaf_of(&new)
        );
    }

    #[test]
    fn sessions_resume_and_still_count() {
        let a = pair_at("a.test", &["a.test"], 0, i64::from(i32::MAX), Source::File);
        let f = fixture(Snapshot::build(
            vec![Arc::clone(&a)],
            vec![],
            HashMap::new(),
            true,
        ));
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = client_config(&[b"h2"], version);
            let before = f.resolver.handshakes();
            let first = handshake_kind(&f.server, Arc::clone(&client), "a.test");
            let second = handshake_kind(&f.server, client, "a.test");
            assert_eq!(first, rustls::HandshakeKind::Full);
            assert_eq!(second, rustls::HandshakeKind::Resumed, "{version:?}");
            assert_eq!(f.resolver.handshakes(), before + 2);
        }
    }

    #[test]
    fn nothing_to_serve_fails_the_handshake() {
        let f = fixture(Snapshot::empty());
        let client = client_config(&[b"h2"], &rustls::version::TLS13);
        assert!(handshake(&f.server, client, "a.test").is_err());
        assert_eq!(f.resolver.handshakes(), 1);
        assert!(f.resolver.resolve_name(Some("a.test"), false).is_none());
        assert_eq!(f.resolver.handshakes(), 2);
    }

    #[test]
    fn config_shape() {
        let f = fixture(Snapshot::empty());
        assert_eq!(
            f.server.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()]
        );
        assert!(f.server.ticketer.enabled());
    }

    #[test]
    fn resolve_name_reads_the_current_snapshot() {
        let a = pair_at("a.test", &["a.test"], 0, i64::from(i32::MAX), Source::File);
        let f = fixture(Snapshot::build(
            vec![Arc::clone(&a)],
            vec![],
            HashMap::new(),
            true,
        ));
        let got = f.resolver.resolve_name(Some("A.TEST"), false).unwrap();
        assert!(Arc::ptr_eq(&got, &a.certified));
        assert!(f.resolver.resolve_name(Some("b.test"), false).is_none());
        assert_eq!(f.resolver.handshakes(), 2);
    }
}
