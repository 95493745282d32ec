//! One certificate pair: a PEM certificate chain and its private key, parsed
//! and checked once, when it is loaded.
//!
//! Everything a handshake or `clace certs` needs later (the rustls
//! [`CertifiedKey`], the DNS names, the validity window) is extracted here, so
//! that nothing after loading has to parse DER again. A [`Pair`] exists only
//! if the certificate parses, the key parses and the key belongs to the leaf
//! certificate (interface §5: "a pair is taken only whole and valid").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::names::{normalize_sni, DEFAULT_STEM, SELF_SIGNED_CN};

/// Where a pair comes from; printed by `clace certs` and used as a metric
/// label (interface §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A pair dropped into `cert_location` by the operator.
    File,
    /// A pair obtained by the ACME issuer, under `storage_location`.
    Acme,
    /// The default pair clace generated itself (recognised by its subject).
    SelfSigned,
}

impl Source {
    /// The label used in JSON and in metrics: `file`, `acme`, `self-signed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Acme => "acme",
            Source::SelfSigned => "self-signed",
        }
    }
}

/// A loaded, checked certificate pair.
///
/// Immutable once built; snapshots share it through an `Arc`, so a reload
/// that does not change a pair does not copy it.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The file name without `.crt`; step 2a of interface §4 matches on it.
    pub stem: String,
    /// The certificate file it was read from (`None` when built in memory).
    pub cert_path: Option<PathBuf>,
    /// The key file it was read from (`None` when built in memory).
    pub key_path: Option<PathBuf>,
    /// What rustls serves: the whole chain (leaf first) and the signing key.
    pub certified: Arc<CertifiedKey>,
    /// The DNS subject alternative names of the leaf, lower-cased, in
    /// certificate order; wildcards are kept as written (`*.example.com`).
    pub names: Vec<String>,
    /// The issuer's distinguished name, as x509-parser prints it.
    pub issuer: String,
    /// The subject's distinguished name, as x509-parser prints it.
    pub subject: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Where the pair comes from.
    pub source: Source,
    /// The serial number, lower-case hex without separators.
    pub serial: String,
}

/// Whether a certificate can be served at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validity {
    /// `not_before <= now <= not_after`.
    Valid,
    /// `now > not_after`.
    Expired,
    /// `now < not_before`.
    NotYetValid,
}

impl Validity {
    /// The status word of `clace certs` (interface §6).
    pub fn as_status(self) -> &'static str {
        match self {
            Validity::Valid => "ok",
            Validity::Expired => "expired",
            Validity::NotYetValid => "not-yet-valid",
        }
    }
}

impl Pair {
    /// The validity of the leaf at `now` (Unix seconds); both ends of the
    /// window are inclusive, as in RFC 5280 §4.1.2.5.
    pub fn validity(&self, now: i64) -> Validity {
        validity_at(self.not_before, self.not_after, now)
    }

    /// Whether the leaf covers the already normalised host `name`: an exact
    /// DNS SAN, or a wildcard SAN that stands for exactly one left-most label
    /// (RFC 6125 §6.4.3, as interface §4 step 2c). The stem is not a name.
    pub fn covers(&self, name: &str) -> bool {
        let parent = name.split_once('.').map(|(_, rest)| rest);
        self.names.iter().any(|san| match san.strip_prefix("*.") {
            Some(suffix) => parent == Some(suffix),
            None => san == name,
        })
    }

    /// Whether the pair is found by its file name (step 2a) for a name its
    /// own SANs do not list: served anyway, as Clace does, but worth a
    /// warning at load (interface §4). `default` and stems that are not host
    /// names are never looked up by name, so they never warrant one.
    pub fn stem_not_in_names(&self) -> bool {
        if self.stem == DEFAULT_STEM {
            return false;
        }
        match normalize_sni(&self.stem) {
            Some(name) => !self.covers(&name),
            None => false,
        }
    }
}

/// Why a pair was not taken. `Clone` and `PartialEq` so that a caller can
/// log a reason once and stay quiet while the same reason repeats.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    /// The certificate or the key file cannot be read or parsed.
    #[error("unreadable: {0}")]
    Unreadable(UnreadableReason),
    /// Both parse, but the key does not belong to the leaf certificate.
    #[error("key does not belong to the certificate")]
    KeyMismatch,
}

impl PairError {
    /// The status string of interface §6: `key-mismatch` or
    /// `unreadable: <why>`.
    pub fn status_text(&self) -> String {
        match self {
            PairError::Unreadable(why) => format!("unreadable: {why}"),
            PairError::KeyMismatch => "key-mismatch".to_owned(),
        }
    }
}

impl From<UnreadableReason> for PairError {
    fn from(why: UnreadableReason) -> Self {
        PairError::Unreadable(why)
    }
}

/// What made a file unreadable. Every variant names the file (its base name:
/// the folder is known to whoever prints it, and `clace certs` prints the
/// full path next to the status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnreadableReason {
    /// The file does not exist (a certificate whose key has not arrived yet).
    #[error("missing {file}")]
    Missing { file: String },
    /// Any other I/O error (permissions, a directory, ...).
    #[error("cannot read {file}: {reason}")]
    Io { file: String, reason: String },
    /// A PEM block is malformed (bad base64, no END line, ...).
    #[error("bad PEM in {file}: {reason}")]
    BadPem { file: String, reason: String },
    /// No `CERTIFICATE` block at all (an empty or half-written file).
    #[error("no certificate in {file}")]
    NoCertificate { file: String },
    /// A `CERTIFICATE` block whose DER is not an X.509 certificate.
    #[error("bad certificate in {file}: {reason}")]
    BadCertificate { file: String, reason: String },
    /// No PKCS#8, SEC1 or PKCS#1 private key block.
    #[error("no private key in {file}")]
    NoKey { file: String },
    /// An `ENCRYPTED PRIVATE KEY` block: clace has no passphrase to open it.
    #[error("encrypted private key in {file} (not supported)")]
    EncryptedKey { file: String },
    /// A key that ring cannot sign with (P-521, DSA, a corrupt key, ...).
    #[error("unsupported key type in {file}")]
    UnsupportedKey { file: String },
}

/// The facts `clace certs` shows about a certificate, read from its leaf
/// alone; available even when the key is missing or does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// DNS SANs, lower-cased (see [`Pair::names`]).
    pub names: Vec<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Whether the subject CN is the marker of clace's own default.
    pub self_signed_marker: bool,
}

/// Parses a pair from PEM bytes. Error messages call the files
/// `<stem>.crt` and `<stem>.key`.
///
/// The certificate may hold a chain, leaf first; every certificate in it is
/// served. The key may be PKCS#8, SEC1 or PKCS#1; ECDSA P-256/P-384, RSA and
/// Ed25519 are supported (what ring signs with). A leaf whose subject CN is
/// [`SELF_SIGNED_CN`] is marked [`Source::SelfSigned`] whatever `source_hint`
/// says, so that a restarted daemon still knows which default it made.
pub fn parse_pair(
    stem: &str,
    cert_pem: &[u8],
    key_pem: &[u8],
    source_hint: Source,
) -> Result<Pair, PairError> {
    parse_named(
        stem,
        cert_pem,
        key_pem,
        &format!("{stem}.crt"),
        &format!("{stem}.key"),
        source_hint,
    )
}

/// Reads and parses the pair at `cert_path` + `key_path`.
///
/// Both files are read whole before parsing, so a file replaced while it is
/// read yields either the old or the new content of each, and the key check
/// catches a certificate and a key from different versions.
pub fn read_pair(
    stem: &str,
    cert_path: &Path,
    key_path: &Path,
    source_hint: Source,
) -> Result<Pair, PairError> {
    let cert_name = file_name(cert_path);
    let key_name = file_name(key_path);
    let cert_pem = read_file(cert_path, &cert_name)?;
    let key_pem = read_file(key_path, &key_name)?;
    let mut pair = parse_named(
        stem,
        &cert_pem,
        &key_pem,
        &cert_name,
        &key_name,
        source_hint,
    )?;
    pair.cert_path = Some(cert_path.to_path_buf());
    pair.key_path = Some(key_path.to_path_buf());
    Ok(pair)
}

/// Parses the leaf (first certificate) of a PEM chain without any key; used
/// by `clace certs` to describe a certificate whose key is missing or wrong.
/// `file` names the certificate in error messages.
pub fn parse_leaf(cert_pem: &[u8], file: &str) -> Result<LeafInfo, PairError> {
    let chain = parse_chain(cert_pem, file)?;
    // parse_chain never returns an empty chain.
    match chain.first() {
        Some(leaf) => leaf_info(leaf, file),
        None => Err(UnreadableReason::NoCertificate {
            file: file.to_owned(),
        }
        .into()),
    }
}

/// Reads and parses the leaf of the certificate file at `path`.
pub fn read_leaf(path: &Path) -> Result<LeafInfo, PairError> {
    let name = file_name(path);
    let pem = read_file(path, &name)?;
    parse_leaf(&pem, &name)
}

/// The validity of a `[not_before, not_after]` window at `now`.
pub(crate) fn validity_at(not_before: i64, not_after: i64, now: i64) -> Validity {
    if now < not_before {
        Validity::NotYetValid
    } else if now > not_after {
        Validity::Expired
    } else {
        Validity::Valid
    }
}

fn parse_named(
    stem: &str,
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
    source_hint: Source,
) -> Result<Pair, PairError> {
    // The certificate is checked first: its errors are the more useful ones
    // when both files are bad.
    let chain = parse_chain(cert_pem, cert_name)?;
    let leaf = match chain.first() {
        Some(leaf) => leaf_info(leaf, cert_name)?,
        None => {
            return Err(UnreadableReason::NoCertificate {
                file: cert_name.to_owned(),
            }
            .into())
        }
    };
    let key = parse_key(key_pem, key_name)?;
    let signing_key = any_supported_type(&key).map_err(|_| UnreadableReason::UnsupportedKey {
        file: key_name.to_owned(),
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // keys_match compares the key's SubjectPublicKeyInfo with the leaf's; the
    // ring keys always know their public key, so `Unknown` cannot happen, and
    // is treated as a mismatch rather than trusted.
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => return Err(PairError::KeyMismatch),
        Err(e) => {
            // webpki is stricter than x509-parser about some certificates.
            return Err(UnreadableReason::BadCertificate {
                file: cert_name.to_owned(),
                reason: lower_first(&e.to_string()),
            }
            .into());
        }
    }
    let source = if leaf.self_signed_marker {
        Source::SelfSigned
    } else {
        source_hint
    };
    Ok(Pair {
        stem: stem.to_owned(),
        cert_path: None,
        key_path: None,
        certified: Arc::new(certified),
        names: leaf.names,
        issuer: leaf.issuer,
        subject: leaf.subject,
        not_before: leaf.not_before,
        not_after: leaf.not_after,
        source,
        serial: leaf.serial,
    })
}

/// Every `CERTIFICATE` block, in file order; each must be an X.509
/// certificate, because a corrupt intermediate would break the handshake of
/// every client that needs it.
fn parse_chain(pem: &[u8], file: &str) -> Result<Vec<CertificateDer<'static>>, PairError> {
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|e| pem_error(e, file))?;
        let (rest, _) =
            X509Certificate::from_der(&der).map_err(|e| UnreadableReason::BadCertificate {
                file: file.to_owned(),
                reason: format!("certificate {}: {e}", chain.len() + 1),
            })?;
        if !rest.is_empty() {
            return Err(UnreadableReason::BadCertificate {
                file: file.to_owned(),
                reason: format!("certificate {}: trailing data", chain.len() + 1),
            }
            .into());
        }
        chain.push(der);
    }
    if chain.is_empty() {
        return Err(UnreadableReason::NoCertificate {
            file: file.to_owned(),
        }
        .into());
    }
    Ok(chain)
}

fn parse_key(pem: &[u8], file: &str) -> Result<PrivateKeyDer<'static>, PairError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            // rustls-pki-types skips blocks it does not know, encrypted keys
            // among them; say so rather than "no private key".
            let encrypted = pem
                .windows(ENCRYPTED_MARKER.len())
                .any(|w| w == ENCRYPTED_MARKER);
            Err(if encrypted {
                UnreadableReason::EncryptedKey {
                    file: file.to_owned(),
                }
            } else {
                UnreadableReason::NoKey {
                    file: file.to_owned(),
                }
            }
            .into())
        }
        Err(e) => Err(pem_error(e, file)),
    }
}

const ENCRYPTED_MARKER: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";

fn leaf_info(der: &CertificateDer<'_>, file: &str) -> Result<LeafInfo, PairError> {
    let bad = |reason: String| UnreadableReason::BadCertificate {
        file: file.to_owned(),
        reason,
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("subjectAltName: {e}")))?;
    if let Some(san) = san {
        for general in &san.value.general_names {
            if let GeneralName::DNSName(name) = general {
                let name = name.to_ascii_lowercase();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    let self_signed_marker = cert
        .subject()
        .iter_common_name()
        .any(|cn| cn.as_str().is_ok_and(|cn| cn == SELF_SIGNED_CN));
    Ok(LeafInfo {
        names,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: hex(cert.raw_serial()),
        self_signed_marker,
    })
}

fn pem_error(e: rustls_pki_types::pem::Error, file: &str) -> PairError {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => UnreadableReason::NoCertificate {
            file: file.to_owned(),
        },
        other => UnreadableReason::BadPem {
            file: file.to_owned(),
            reason: lower_first(&other.to_string()),
        },
    }
    .into()
}

/// The largest `.crt` or `.key` read: a long chain of RSA 4096 certificates
/// is a few tens of KiB; anything bigger is not a certificate file.
pub const MAX_PEM_SIZE: u64 = 1024 * 1024;

/// Reads a certificate or key file safely: it is opened without blocking
/// (a FIFO dropped in the folder must not freeze the cert store), must be a
/// regular file, and is read up to [`MAX_PEM_SIZE`] (a link to `/dev/zero`
/// must not fill the memory).
pub fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_PEM_SIZE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_PEM_SIZE / 1024
        )));
    }
    let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_PEM_SIZE + 1).read_to_end(&mut content)?;
    if content.len() as u64 > MAX_PEM_SIZE {
        return Err(std::io::Error::other(
            "grew past the size limit while being read",
        ));
    }
    Ok(content)
}

fn read_file(path: &Path, name: &str) -> Result<Vec<u8>, PairError> {
    read_limited(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            UnreadableReason::Missing {
                file: name.to_owned(),
            }
        } else {
            UnreadableReason::Io {
                file: name.to_owned(),
                reason: lower_first(&io_reason(&e)),
            }
        }
        .into()
    })
}

/// The text of an I/O error without the "(os error 13)" suffix, which means
/// nothing to an operator.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Helpers that make pairs in memory, for the tests of every certs module.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testing {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    use time::OffsetDateTime;

    /// A year, in seconds.
    pub(crate) const YEAR: i64 = 365 * 24 * 3600;

    /// A fixed "now" for tests: 2030-01-01T00:00:00Z.
    pub(crate) const NOW: i64 = 1_893_456_000;

    /// PEM certificate and PKCS#8 key with the given DNS SANs, validity and
    /// subject CN, signed by its own key.
    pub(crate) fn make_pem(
        names: &[&str],
        not_before: i64,
        not_after: i64,
        cn: &str,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = params(names, not_before, not_after, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub(crate) fn params(
        names: &[&str],
        not_before: i64,
        not_after: i64,
        cn: &str,
    ) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().unwrap()))
            .collect();
        params.not_before = OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
    }

    /// A pair valid around [`NOW`], named `stem`, with the given SANs.
    pub(crate) fn pair(stem: &str, names: &[&str]) -> Arc<Pair> {
        pair_at(stem, names, NOW - YEAR, NOW + YEAR, Source::File)
    }

    /// A pair with a chosen validity window and source hint.
    pub(crate) fn pair_at(
        stem: &str,
        names: &[&str],
        not_before: i64,
        not_after: i64,
        source: Source,
    ) -> Arc<Pair> {
        let (cert, key) = make_pem(names, not_before, not_after, stem);
        Arc::new(parse_pair(stem, cert.as_bytes(), key.as_bytes(), source).unwrap())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testing::*;
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P384_SHA384,
        PKCS_ED25519,
    };

    const RSA_KEY: &[u8] = include_bytes!("../../tests/data/rsa-pkcs1.key");
    const RSA_CRT: &[u8] = include_bytes!("../../tests/data/rsa.crt");
    const EC_KEY: &[u8] = include_bytes!("../../tests/data/ec-sec1.key");
    const EC_CRT: &[u8] = include_bytes!("../../tests/data/ec.crt");

    fn unreadable(e: PairError) -> UnreadableReason {
        match e {
            PairError::Unreadable(why) => why,
            other => panic!("expected unreadable, got {other:?}"),
        }
    }

    #[test]
    fn pkcs8_ecdsa_p256() {
        let (cert, key) = make_pem(&["A.Example.com", "*.example.com"], NOW - 10, NOW + 10, "a");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let pair = parse_pair("a", cert.as_bytes(), key.as_bytes(), Source::File).unwrap();
        assert_eq!(pair.stem, "a");
        assert_eq!(pair.names, ["a.example.com", "*.example.com"]);
        assert_eq!(pair.not_before, NOW - 10);
        assert_eq!(pair.not_after, NOW + 10);
        assert_eq!(pair.source, Source::File);
        assert_eq!(pair.subject, "CN=a");
        assert_eq!(pair.issuer, "CN=a");
        assert!(!pair.serial.is_empty());
        assert!(pair.serial.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(pair.certified.cert.len(), 1);
        assert!(pair.cert_path.is_none() && pair.key_path.is_none());
    }

    #[test]
    fn pkcs8_ecdsa_p384_and_ed25519() {
        for alg in [&PKCS_ECDSA_P384_SHA384, &PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).unwrap();
            let cert = params(&["x.test"], NOW - 10, NOW + 10, "x")
                .self_signed(&key)
                .unwrap();
            let pair = parse_pair(
                "x",
                cert.pem().as_bytes(),
                key.serialize_pem().as_bytes(),
                Source::Acme,
            )
            .unwrap();
            assert_eq!(pair.names, ["x.test"]);
            assert_eq!(pair.source, Source::Acme);
        }
    }

    #[test]
    fn pkcs1_rsa() {
        let pair = parse_pair("rsa", RSA_CRT, RSA_KEY, Source::File).unwrap();
        assert_eq!(pair.names, ["rsa.test"]);
        assert_eq!(pair.subject, "CN=rsa.test");
    }

    #[test]
    fn sec1_ecdsa() {
        let pair = parse_pair("ec", EC_CRT, EC_KEY, Source::File).unwrap();
        assert_eq!(pair.names, ["ec.test", "*.ec.test"]);
    }

    #[test]
    fn chain_of_two_is_served_whole() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test ca");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params(&["leaf.test"], NOW - 10, NOW + 10, "leaf")
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
        let pair = parse_pair(
            "leaf",
            chain.as_bytes(),
            leaf_key.serialize_pem().as_bytes(),
            Source::File,
        )
        .unwrap();
        assert_eq!(pair.certified.cert.len(), 2);
        assert_eq!(pair.certified.cert[0].as_ref(), leaf.der().as_ref());
        assert_eq!(pair.certified.cert[1].as_ref(), ca_cert.der().as_ref());
        assert_eq!(pair.issuer, "CN=test ca");
        assert_eq!(pair.subject, "CN=leaf");
        assert_eq!(pair.names, ["leaf.test"]);

        // The chain in the wrong order: the key belongs to the second cert.
        let reversed = format!("{}{}", ca_cert.pem(), leaf.pem());
        let err = parse_pair(
            "leaf",
            reversed.as_bytes(),
            leaf_key.serialize_pem().as_bytes(),
            Source::File,
        )
        .unwrap_err();
        assert_eq!(err, PairError::KeyMismatch);
    }

    #[test]
    fn mismatched_key() {
        let (cert, _) = make_pem(&["a.test"], NOW - 10, NOW + 10, "a");
        let (_, other_key) = make_pem(&["a.test"], NOW - 10, NOW + 10, "a");
        let err = parse_pair("a", cert.as_bytes(), other_key.as_bytes(), Source::File).unwrap_err();
        assert_eq!(err, PairError::KeyMismatch);
        assert_eq!(err.status_text(), "key-mismatch");
        // Different algorithms do not match either.
        let err = parse_pair("a", cert.as_bytes(), RSA_KEY, Source::File).unwrap_err();
        assert_eq!(err, PairError::KeyMismatch);
    }

    #[test]
    fn garbage_and_empty_files() {
        let (cert, key) = make_pem(&["a.test"], NOW - 10, NOW + 10, "a");
        let why =
            unreadable(parse_pair("a", b"garbage", key.as_bytes(), Source::File).unwrap_err());
        assert_eq!(
            why,
            UnreadableReason::NoCertificate {
                file: "a.crt".into()
            }
        );
        let err = parse_pair("a", b"", key.as_bytes(), Source::File).unwrap_err();
        assert_eq!(err.status_text(), "unreadable: no certificate in a.crt");

        let why = unreadable(parse_pair("a", cert.as_bytes(), b"", Source::File).unwrap_err());
        assert_eq!(
            why,
            UnreadableReason::NoKey {
                file: "a.key".into()
            }
        );
        // A key file holding a certificate is not a key.
        let why = unreadable(
            parse_pair("a", cert.as_bytes(), cert.as_bytes(), Source::File).unwrap_err(),
        );
        assert_eq!(
            why,
            UnreadableReason::NoKey {
                file: "a.key".into()
            }
        );
    }

    #[test]
    fn bad_der_and_bad_pem() {
        let (cert, key) = make_pem(&["a.test"], NOW - 10, NOW + 10, "a");
        let bad_der = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
        let why = unreadable(
            parse_pair("a", bad_der.as_bytes(), key.as_bytes(), Source::File).unwrap_err(),
        );
        assert!(
            matches!(&why, UnreadableReason::BadCertificate { file, .. } if file == "a.crt"),
            "{why:?}"
        );
        // A truncated file: the END line has not been written yet.
        let half = &cert[..cert.len() / 2];
        let why =
            unreadable(parse_pair("a", half.as_bytes(), key.as_bytes(), Source::File).unwrap_err());
        assert!(
            matches!(&why, UnreadableReason::BadPem { file, .. } if file == "a.crt"),
            "{why:?}"
        );
        let err =
            parse_pair("a", cert.as_bytes(), &key.as_bytes()[..40], Source::File).unwrap_err();
        assert!(
            err.status_text()
                .starts_with("unreadable: bad PEM in a.key"),
            "{err}"
        );
    }

    #[test]
    fn bad_intermediate_is_rejected() {
        let (cert, key) = make_pem(&["a.test"], NOW - 10, NOW + 10, "a");
        let chain =
            format!("{cert}-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n");
        let why = unreadable(
            parse_pair("a", chain.as_bytes(), key.as_bytes(), Source::File).unwrap_err(),
        );
        assert!(
            matches!(&why, UnreadableReason::BadCertificate { reason, .. } if reason.starts_with("certificate 2")),
            "{why:?}"
        );
    }

    #[test]
    fn encrypted_and_unsupported_keys() {
        let (cert, _) = make_pem(&["a.test"], NOW - 10, NOW + 10, "a");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAECAwQF\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let why = unreadable(
            parse_pair("a", cert.as_bytes(), encrypted.as_bytes(), Source::File).unwrap_err(),
        );
        assert_eq!(
            why,
            UnreadableReason::EncryptedKey {
                file: "a.key".into()
            }
        );
        let junk_key = "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n";
        let why = unreadable(
            parse_pair("a", cert.as_bytes(), junk_key.as_bytes(), Source::File).unwrap_err(),
        );
        assert_eq!(
            why,
            UnreadableReason::UnsupportedKey {
                file: "a.key".into()
            }
        );
    }

    #[test]
    fn marker_makes_self_signed_whatever_the_hint() {
        let (cert, key) = make_pem(&["localhost"], NOW - 10, NOW + 10, SELF_SIGNED_CN);
        for hint in [Source::File, Source::Acme] {
            let pair = parse_pair("default", cert.as_bytes(), key.as_bytes(), hint).unwrap();
            assert_eq!(pair.source, Source::SelfSigned);
        }
    }

    #[test]
    fn validity_window_is_inclusive() {
        let pair = pair_at("a", &["a.test"], NOW, NOW + 100, Source::File);
        assert_eq!(pair.validity(NOW - 1), Validity::NotYetValid);
        assert_eq!(pair.validity(NOW), Validity::Valid);
        assert_eq!(pair.validity(NOW + 100), Validity::Valid);
        assert_eq!(pair.validity(NOW + 101), Validity::Expired);
        assert_eq!(Validity::Valid.as_status(), "ok");
        assert_eq!(Validity::Expired.as_status(), "expired");
        assert_eq!(Validity::NotYetValid.as_status(), "not-yet-valid");
    }

    #[test]
    fn covers_exact_and_one_label_wildcards() {
        let pair = pair("p", &["exact.test", "*.wild.test"]);
        assert!(pair.covers("exact.test"));
        assert!(pair.covers("a.wild.test"));
        assert!(!pair.covers("wild.test"));
        assert!(!pair.covers("a.b.wild.test"));
        assert!(!pair.covers("p"));
    }

    #[test]
    fn stem_not_in_names() {
        assert!(!pair("a.test", &["a.test"]).stem_not_in_names());
        assert!(!pair("A.Test", &["a.test"]).stem_not_in_names());
        assert!(!pair("x.w.test", &["*.w.test"]).stem_not_in_names());
        assert!(pair("a.test", &["b.test"]).stem_not_in_names());
        assert!(!pair("default", &["localhost"]).stem_not_in_names());
        assert!(!pair("my cert", &["b.test"]).stem_not_in_names());
    }

    #[test]
    fn read_pair_names_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (cert, key) = make_pem(&["a.test"], NOW - 10, NOW + 10, "a");
        let crt = dir.join("a.crt");
        let key_path = dir.join("a.key");
        std::fs::write(&crt, &cert).unwrap();
        let err = read_pair("a", &crt, &key_path, Source::File).unwrap_err();
        assert_eq!(err.status_text(), "unreadable: missing a.key");
        std::fs::write(&key_path, &key).unwrap();
        let pair = read_pair("a", &crt, &key_path, Source::File).unwrap();
        assert_eq!(pair.cert_path.as_deref(), Some(crt.as_path()));
        assert_eq!(pair.key_path.as_deref(), Some(key_path.as_path()));
        // A directory where the key should be.
        std::fs::remove_file(&key_path).unwrap();
        std::fs::create_dir(&key_path).unwrap();
        let why = unreadable(read_pair("a", &crt, &key_path, Source::File).unwrap_err());
        assert!(
            matches!(&why, UnreadableReason::Io { file, .. } if file == "a.key"),
            "{why:?}"
        );
        assert_eq!(read_leaf(&crt).unwrap().names, ["a.test"]);
    }

    #[test]
    fn display_texts_are_lower_case() {
        let errors = [
            PairError::KeyMismatch,
            UnreadableReason::Missing {
                file: "a.key".into(),
            }
            .into(),
            UnreadableReason::NoCertificate {
                file: "a.crt".into(),
            }
            .into(),
        ];
        for e in errors {
            let text = e.to_string();
            assert_eq!(text, text.to_lowercase(), "{text}");
        }
        assert_eq!(Source::SelfSigned.as_str(), "self-signed");
        assert_eq!(
            serde_json::to_string(&[Source::File, Source::Acme, Source::SelfSigned]).unwrap(),
            r#"["file","acme","self-signed"]"#
        );
    }
}
