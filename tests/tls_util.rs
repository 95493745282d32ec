//! Helpers for the HTTPS and hot-reload tests: certificates made with rcgen
//! (chosen names, validity and serial), PEM files written plainly or
//! atomically, a daemon started with HTTPS on port 0, and a rustls client
//! that reports what the server presented.
//!
//! The client accepts any certificate (the tests check *which* certificate
//! was served, not whether a browser would trust it) but still checks the
//! handshake signature, so a certificate served with a key that does not
//! belong to it fails the handshake.

#![allow(dead_code)]

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ProtocolVersion, SignatureScheme,
    StreamOwned, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::util::http::{read_response_from, Response};
use crate::util::{self, toml_path, wait_until, Clace, Proc, DEADLINE};

/// How long a certificate change may take to reach new handshakes
/// (interface §5: "within 1 second").
pub const RELOAD_LIMIT: Duration = Duration::from_secs(1);

/// How long one handshake may block on the socket.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// 2000-01-01 to 2090-01-01: valid now.
    Valid,
    /// 2000-01-01 to 2001-01-01: expired.
    Expired,
    /// 2090-01-01 to 2091-01-01: not valid yet.
    NotYetValid,
}

/// A certificate and its private key, as PEM, with the leaf's serial.
#[derive(Clone)]
pub struct Pair {
    /// The `.crt` content: the leaf, then any chain.
    pub cert_pem: String,
    /// The `.key` content (PKCS#8 unless converted).
    pub key_pem: String,
    /// The leaf's serial number, lower-case hex of its DER content bytes.
    pub serial: String,
    /// The leaf's DER.
    pub leaf: CertificateDer<'static>,
}

/// What to make.
pub struct Spec<'a> {
    pub names: Vec<String>,
    pub validity: Validity,
    /// The key to certify; a new P-256 key when `None`.
    pub key_pem: Option<String>,
    /// The issuer CN to sign with: a fresh intermediate CA is made and
    /// appended to the chain when `Some`.
    pub chain_ca_cn: Option<&'a str>,
    /// The subject CN (the first name when `None`).
    pub cn: Option<String>,
}

impl<'a> Spec<'a> {
    pub fn new(names: &[&str]) -> Spec<'a> {
        Spec {
            names: names.iter().map(|s| s.to_string()).collect(),
            validity: Validity::Valid,
            key_pem: None,
            chain_ca_cn: None,
            cn: None,
        }
    }

    pub fn validity(mut self, validity: Validity) -> Spec<'a> {
        self.validity = validity;
        self
    }

    pub fn key(mut self, key_pem: &str) -> Spec<'a> {
        self.key_pem = Some(key_pem.to_owned());
        self
    }

    pub fn chain(mut self, ca_cn: &'a str) -> Spec<'a> {
        self.chain_ca_cn = Some(ca_cn);
        self
    }

    pub fn cn(mut self, cn: &str) -> Spec<'a> {
        self.cn = Some(cn.to_owned());
        self
    }

    pub fn make(self) -> Pair {
        make(self)
    }
}

/// A serial no other certificate of this run has: 16 bytes, positive, with
/// a non-zero first byte so its DER content is exactly these bytes.
pub fn new_serial() -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&(nanos ^ u64::from(std::process::id()) << 40).to_be_bytes());
    bytes.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    bytes
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A valid pair for these DNS names (the first is the CN), with a new
/// P-256 key and a new serial.
pub fn make_pair(names: &[&str]) -> Pair {
    Spec::new(names).make()
}

fn make(spec: Spec<'_>) -> Pair {
    let key = match &spec.key_pem {
        Some(pem) => KeyPair::from_pem(pem).expect("rcgen reads the given key"),
        None => KeyPair::generate().expect("generate P-256 key"),
    };
    let mut params = CertificateParams::new(spec.names.clone()).expect("valid SANs");
    let cn = spec
        .cn
        .clone()
        .or_else(|| spec.names.first().cloned())
        .unwrap_or_else(|| "clace test".to_owned());
    params.distinguished_name.push(DnType::CommonName, cn);
    let (nb, na) = match spec.validity {
        Validity::Valid => (date_time_ymd(2000, 1, 1), date_time_ymd(2090, 1, 1)),
        Validity::Expired => (date_time_ymd(2000, 1, 1), date_time_ymd(2001, 1, 1)),
        Validity::NotYetValid => (date_time_ymd(2090, 1, 1), date_time_ymd(2091, 1, 1)),
    };
    params.not_before = nb;
    params.not_after = na;
    let serial = new_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));

    let (cert_pem, leaf) = match spec.chain_ca_cn {
        None => {
            let cert = params.self_signed(&key).expect("self-sign");
            (cert.pem(), cert.der().clone())
        }
        Some(ca_cn) => {
            let ca_key = KeyPair::generate().expect("generate CA key");
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            ca_params.distinguished_name.push(DnType::CommonName, ca_cn);
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            ca_params.not_before = date_time_ymd(2000, 1, 1);
            ca_params.not_after = date_time_ymd(2090, 1, 1);
            ca_params.serial_number = Some(SerialNumber::from_slice(&new_serial()));
            let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
            let issuer = Issuer::new(ca_params, ca_key);
            let cert = params.signed_by(&key, &issuer).expect("sign leaf");
            (
                format!("{}{}", cert.pem(), ca_cert.pem()),
                cert.der().clone(),
            )
        }
    };
    let key_pem = match spec.key_pem {
        Some(pem) => pem,
        None => key.serialize_pem(),
    };
    Pair {
        cert_pem,
        key_pem,
        serial: hex(&serial),
        leaf,
    }
}

/// The certificates of a PEM text, in order.
pub fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

/// What the tests read from a certificate.
#[derive(Debug, Clone)]
pub struct CertFacts {
    pub serial: String,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<std::net::IpAddr>,
    pub subject_cn: String,
    pub issuer_cn: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The public key algorithm OID and its parameter OID (the curve), dotted.
    pub key_alg: String,
    pub key_param: Option<String>,
}

/// Parses a DER certificate.
pub fn facts(der: &[u8]) -> CertFacts {
    let (_, cert) = X509Certificate::from_der(der).expect("DER certificate");
    let mut dns_names = Vec::new();
    let mut ip_addrs = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push(n.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    let a: [u8; 4] = (*b).try_into().expect("4 bytes");
                    ip_addrs.push(std::net::IpAddr::from(a));
                }
                GeneralName::IPAddress(b) if b.len() == 16 => {
                    let a: [u8; 16] = (*b).try_into().expect("16 bytes");
                    ip_addrs.push(std::net::IpAddr::from(a));
                }
                _ => {}
            }
        }
    }
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let spki = &cert.tbs_certificate.subject_pki;
    let key_param = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    CertFacts {
        serial: hex(cert.tbs_certificate.raw_serial()),
        dns_names,
        ip_addrs,
        subject_cn: cn(cert.subject()),
        issuer_cn: cn(cert.issuer()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key_alg: spki.algorithm.algorithm.to_id_string(),
        key_param,
    }
}

/// The serial of the first certificate in a PEM file (`None` while the
/// file is missing or not a certificate).
pub fn file_serial(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    let der = CertificateDer::pem_slice_iter(&bytes).next()?.ok()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    Some(hex(cert.tbs_certificate.raw_serial()))
}

// ---------------------------------------------------------------------------
// Keys in other encodings (through the `openssl` command)
// ---------------------------------------------------------------------------

/// Runs `openssl ARGS` with `input` on stdin and returns stdout; panics
/// with stderr on failure.
pub fn openssl(args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl (the tests need the openssl command)");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("openssl output");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("openssl prints text")
}

/// A new RSA 2048 key as PKCS#8 PEM (ring cannot generate RSA keys).
pub fn rsa_key_pkcs8() -> String {
    let pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        b"",
    );
    assert!(pem.contains("-----BEGIN PRIVATE KEY-----"), "{pem}");
    pem
}

/// The same key in its traditional encoding: PKCS#1 for RSA
/// (`BEGIN RSA PRIVATE KEY`), SEC1 for EC (`BEGIN EC PRIVATE KEY`).
pub fn traditional_key(pkcs8_pem: &str) -> String {
    openssl(&["pkey", "-traditional"], pkcs8_pem.as_bytes())
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Writes `path` by writing a temporary sibling (a dot name, which the
/// daemon ignores) and renaming it over `path`.
pub fn write_atomic(path: &Path, content: &[u8]) {
    let dir = path.parent().expect("parent folder");
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", util::unique("w")));
    fs::write(&tmp, content).expect("write temporary file");
    fs::rename(&tmp, path).expect("rename into place");
}

/// Writes `NAME.key` then `NAME.crt` in `dir`, each atomically.
pub fn install_pair(dir: &Path, name: &str, pair: &Pair) {
    write_atomic(&dir.join(format!("{name}.key")), pair.key_pem.as_bytes());
    write_atomic(&dir.join(format!("{name}.crt")), pair.cert_pem.as_bytes());
}

/// Writes `NAME.key` then `NAME.crt` in `dir` directly (create or truncate).
pub fn write_pair(dir: &Path, name: &str, pair: &Pair) {
    fs::write(dir.join(format!("{name}.key")), &pair.key_pem).expect("write key");
    fs::write(dir.join(format!("{name}.crt")), &pair.cert_pem).expect("write crt");
}

/// The permission bits of a file or folder.
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// A world for an HTTPS test: `root/certs` is `cert_location` (not
/// created: the test decides).
pub struct World {
    pub clace: Clace,
    pub certs: PathBuf,
}

impl World {
    pub fn new() -> World {
        let clace = Clace::new();
        let certs = clace.root().join("certs");
        World { clace, certs }
    }

    /// A world whose `cert_location` exists.
    pub fn with_certs() -> World {
        let world = World::new();
        fs::create_dir_all(&world.certs).expect("create cert_location");
        world
    }

    pub fn root(&self) -> &Path {
        self.clace.root()
    }

    /// Writes the configuration: HTTP and HTTPS on 127.0.0.1, port 0;
    /// `https_extra` goes into `[https]`, `http_extra` into `[http]`,
    /// `rest` after both.
    pub fn configure(&self, http_extra: &str, https_extra: &str, rest: &str) {
        self.clace.write_config(&format!(
            "[http]\nhost = \"127.0.0.1\"\nport = 0\n{http_extra}\n\n\
             [https]\nhost = \"127.0.0.1\"\nport = 0\ncert_location = {}\n{https_extra}\n\n{rest}",
            toml_path(&self.certs)
        ));
    }

    /// Starts `clace serve` and waits for both listeners.
    pub fn serve(&self) -> Tls {
        let mut proc = self.clace.spawn(&["serve"]);
        let https = proc.listening_addr("https");
        let http = proc.listening_addr("http");
        Tls { proc, https, http }
    }

    /// Starts the daemon and waits until its cert store and watcher say
    /// `running` on `/_clace/health`.
    pub fn serve_ready(&self) -> Tls {
        let mut tls = self.serve();
        tls.wait_ready();
        tls
    }

    pub fn crt(&self, name: &str) -> PathBuf {
        self.certs.join(format!("{name}.crt"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.certs.join(format!("{name}.key"))
    }
}

/// A running daemon with both listeners up.
pub struct Tls {
    pub proc: Proc,
    pub https: SocketAddr,
    pub http: SocketAddr,
}

impl Tls {
    /// Waits until `/_clace/health` lists `certstore` and `watcher` as
    /// `running`.
    pub fn wait_ready(&mut self) {
        let http = self.http;
        let mut last = String::new();
        let ok = wait_until(DEADLINE, || {
            match crate::util::http::Request::get("/_clace/health").try_send(http) {
                Ok(resp) => {
                    last = resp.text();
                    let v: serde_json::Value = match serde_json::from_slice(&resp.body) {
                        Ok(v) => v,
                        Err(_) => return false,
                    };
                    v["actors"]["certstore"] == "running" && v["actors"]["watcher"] == "running"
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        assert!(
            ok,
            "cert store and watcher not running; last health: {last}; stderr:\n{}",
            self.proc.stderr()
        );
    }

    /// The serial served for `sni` (panics on a failed handshake).
    pub fn serial(&self, sni: Option<&str>) -> String {
        match handshake(self.https, sni) {
            Ok(h) => h.serial(),
            Err(e) => panic!(
                "handshake for {sni:?} failed: {e}; stderr:\n{}",
                self.proc.stderr()
            ),
        }
    }

    /// Waits (up to the long deadline) until `sni` is served `serial`:
    /// for the state at start, before a test changes anything.
    pub fn wait_serial(&self, sni: Option<&str>, serial: &str) {
        let mut last = String::new();
        let ok = wait_until(DEADLINE, || match handshake(self.https, sni) {
            Ok(h) => {
                last = h.serial();
                last == serial
            }
            Err(e) => {
                last = e;
                false
            }
        });
        assert!(
            ok,
            "{sni:?} never got serial {serial}; last: {last}; stderr:\n{}",
            self.proc.stderr()
        );
    }

    /// Asserts that a handshake for `sni` *started* no later than `limit`
    /// after `since` gets `serial`, and that no handshake fails meanwhile.
    /// Returns the delay after `since` at which that handshake started.
    pub fn assert_served_within(
        &self,
        sni: Option<&str>,
        serial: &str,
        since: Instant,
        limit: Duration,
    ) -> Duration {
        let mut seen = Vec::new();
        loop {
            let started = Instant::now();
            let delay = started - since;
            if delay > limit {
                panic!(
                    "{sni:?} not served serial {serial} within {limit:?} (serials seen: {:?}); stderr:\n{}",
                    dedup(&seen),
                    self.proc.stderr()
                );
            }
            match handshake(self.https, sni) {
                Ok(h) if h.serial() == serial => return delay,
                Ok(h) => seen.push(h.serial()),
                Err(e) => panic!(
                    "a handshake for {sni:?} failed {delay:?} after the change: {e}; stderr:\n{}",
                    self.proc.stderr()
                ),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// How many stderr lines contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.proc
            .stderr_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits for at least `n` stderr lines containing `needle`.
    pub fn wait_lines(&self, needle: &str, n: usize) {
        let ok = wait_until(DEADLINE, || self.count_lines(needle) >= n);
        assert!(
            ok,
            "expected {n} line(s) with {needle:?}; stderr:\n{}",
            self.proc.stderr()
        );
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

fn dedup(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if out.last() != Some(s) {
            out.push(s.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The TLS client
// ---------------------------------------------------------------------------

/// What a client offers.
#[derive(Clone)]
pub struct Hello {
    /// The SNI to send; none when `None`.
    pub sni: Option<String>,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<Vec<u8>>,
    /// Versions offered (both when empty).
    pub versions: Vec<&'static SupportedProtocolVersion>,
}

impl Hello {
    pub fn sni(sni: Option<&str>) -> Hello {
        Hello {
            sni: sni.map(str::to_owned),
            alpn: Vec::new(),
            versions: Vec::new(),
        }
    }

    pub fn alpn(mut self, protocols: &[&str]) -> Hello {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    pub fn versions(mut self, versions: &[&'static SupportedProtocolVersion]) -> Hello {
        self.versions = versions.to_vec();
        self
    }
}

/// The outcome of a completed handshake.
pub struct Handshake {
    /// The certificates the server presented, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    pub version: ProtocolVersion,
    pub alpn: Option<Vec<u8>>,
    /// The open connection, to send requests over.
    pub stream: StreamOwned<ClientConnection, TcpStream>,
}

impl Handshake {
    pub fn leaf(&self) -> CertFacts {
        facts(&self.chain[0])
    }

    pub fn serial(&self) -> String {
        self.leaf().serial
    }

    pub fn alpn_str(&self) -> Option<String> {
        self.alpn
            .as_ref()
            .map(|a| String::from_utf8_lossy(a).into_owned())
    }

    /// Sends an HTTP/1.1 request (raw bytes) and reads the response.
    pub fn http1(mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request)?;
        self.stream.flush()?;
        read_response_from(BufReader::new(self.stream), false)
    }
}

/// A handshake offering both versions and no ALPN.
pub fn handshake(addr: SocketAddr, sni: Option<&str>) -> Result<Handshake, String> {
    handshake_with(addr, &Hello::sni(sni))
}

/// Connects to `addr` and completes a handshake as `hello` says.
pub fn handshake_with(addr: SocketAddr, hello: &Hello) -> Result<Handshake, String> {
    let provider = Arc::new(ring::default_provider());
    let versions: Vec<&'static SupportedProtocolVersion> = if hello.versions.is_empty() {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        hello.versions.clone()
    };
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("client versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny { provider }))
        .with_no_client_auth();
    config.alpn_protocols = hello.alpn.clone();
    // Every handshake is a full one: a resumed session would not show
    // which certificate the server holds now.
    config.resumption = Resumption::disabled();
    config.enable_sni = hello.sni.is_some();
    let name: ServerName<'static> = match &hello.sni {
        Some(sni) => ServerName::try_from(sni.clone()).map_err(|e| format!("SNI {sni:?}: {e}"))?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let _ = sock.set_nodelay(true);
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let chain = stream
        .conn
        .peer_certificates()
        .ok_or("no server certificate")?
        .iter()
        .map(|c| c.clone().into_owned())
        .collect::<Vec<_>>();
    if chain.is_empty() {
        return Err("empty certificate chain".into());
    }
    let version = stream.conn.protocol_version().ok_or("no version")?;
    let alpn = stream.conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok(Handshake {
        chain,
        version,
        alpn,
        stream,
    })
}

/// Accepts any certificate; checks the handshake signatures for real.
#[derive(Debug)]
struct AcceptAny {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------------------
// openssl s_client, for what rustls will not send
// ---------------------------------------------------------------------------

/// The result of `openssl s_client`.
pub struct SClient {
    pub success: bool,
    /// stdout and stderr together.
    pub output: String,
    /// The certificates printed (with `-showcerts`: the whole chain).
    pub chain: Vec<CertificateDer<'static>>,
}

/// Runs `openssl s_client -connect ADDR -showcerts EXTRA...` with an empty
/// stdin (it quits after the handshake), within the long deadline.
pub fn s_client(addr: SocketAddr, extra: &[&str]) -> SClient {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-showcerts")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    let status = proc.wait_exit(DEADLINE);
    let stdout = proc.stdout();
    let output = format!("{stdout}\n{}", proc.stderr());
    let chain = CertificateDer::pem_slice_iter(stdout.as_bytes())
        .filter_map(Result::ok)
        .collect();
    SClient {
        success: status.success(),
        output,
        chain,
    }
}

/// The serial `openssl s_client -servername NAME` is served, or the
/// handshake failure.
pub fn s_client_serial(addr: SocketAddr, servername: &str) -> Result<String, String> {
    let out = s_client(addr, &["-servername", servername]);
    match out.chain.first() {
        Some(leaf) if out.success => Ok(facts(leaf).serial),
        _ => Err(out.output),
    }
}

/// A TLS 1.1 ClientHello (legacy version 3.2, no `supported_versions`),
/// with an SNI, as an old client sends it.
pub fn tls11_client_hello(sni: &str) -> Vec<u8> {
    fn u16be(v: usize) -> [u8; 2] {
        (v as u16).to_be_bytes()
    }
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    // ECDHE-ECDSA/RSA with AES-CBC-SHA, RSA AES-CBC-SHA: what TLS 1.1 has.
    let suites: [u16; 6] = [0xc009, 0xc00a, 0xc013, 0xc014, 0x002f, 0x0035];
    body.extend_from_slice(&u16be(suites.len() * 2));
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut ext = Vec::new();
    // server_name
    let name = sni.as_bytes();
    let mut list = vec![0u8];
    list.extend_from_slice(&u16be(name.len()));
    list.extend_from_slice(name);
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&u16be(list.len() + 2));
    ext.extend_from_slice(&u16be(list.len()));
    ext.extend_from_slice(&list);
    // supported_groups: secp256r1, x25519
    ext.extend_from_slice(&[0, 10, 0, 6, 0, 4, 0, 0x17, 0, 0x1d]);
    // ec_point_formats: uncompressed
    ext.extend_from_slice(&[0, 11, 0, 2, 1, 0]);
    // signature_algorithms (a TLS 1.2 extension that rustls requires before
    // it looks at the version): ecdsa_secp256r1_sha256, rsa_pkcs1_sha256.
    ext.extend_from_slice(&[0, 13, 0, 6, 0, 4, 0x04, 0x03, 0x04, 0x01]);
    body.extend_from_slice(&u16be(ext.len()));
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16be(hs.len()));
    record.extend_from_slice(&hs);
    record
}

/// Sends raw bytes and returns what comes back until the server closes
/// (or the read times out).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut sock = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT).expect("connect");
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .expect("timeout");
    sock.write_all(bytes).expect("write ClientHello");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}
