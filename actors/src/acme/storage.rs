//! The ACME storage under `storage_location`, in certmagic's layout (the Go
//! Clace and Caddy read and write the same files, interface §9):
//!
//! ```text
//! acme/<issuer>/users/<email>/<local part>.json   account: {"location": URL, ...}
//! acme/<issuer>/users/<email>/<local part>.key    account key (PEM: SEC1 or PKCS#8)
//! certificates/<issuer>/<name>/<name>.crt          chain, leaf first
//! certificates/<issuer>/<name>/<name>.key          certificate key, mode 0600
//! certificates/<issuer>/<name>/<name>.json         {"sans": [...], "issuer_data": {...}}
//! ```
//!
//! Every file is written under a temporary name and renamed into place; keys
//! are 0600 from their creation and folders 0700.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::certs::atomic::{create_private_dir, sync_dir, write_atomic};

/// Let's Encrypt's directories (interface §9).
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// certmagic's `StorageKeys.Safe`: lower case, spaces and `+` and `*`
/// spelled out, `:` as `-`, no `..`, and nothing but letters, digits and
/// `_-@.` kept. Makes a name or an e-mail address one path component.
pub fn safe_key(s: &str) -> String {
    let s = s
        .trim()
        .to_lowercase()
        .replace(' ', "_")
        .replace('+', "_plus_")
        .replace('*', "wildcard_")
        .replace(':', "-")
        .replace("..", "");
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@' | '.'))
        .collect()
}

/// The `<issuer>` folder name for a directory URL, as certmagic makes it:
/// the host (with its port, `:` becoming `-`) and the path (`/` becoming
/// `-`, trimmed), lower case. `https://127.0.0.1:14000/dir` gives
/// `127.0.0.1-14000-dir`.
pub fn issuer_key(directory_url: &str) -> String {
    let rest = directory_url
        .split_once("://")
        .map_or(directory_url, |(_, rest)| rest);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    // No query or fragment belongs in a folder name.
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.replace(['/', '\\'], "-");
    let path = path.trim_matches('-');
    let key = if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}-{path}")
    };
    safe_key(&key)
}

/// Paths of one issuer's part of the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    root: PathBuf,
    issuer: String,
}

impl Storage {
    pub fn new(root: &Path, directory_url: &str) -> Storage {
        Storage {
            root: root.to_path_buf(),
            issuer: issuer_key(directory_url),
        }
    }

    /// `certificates/<issuer>`: one folder per name below it.
    pub fn certificates_dir(&self) -> PathBuf {
        self.root.join("certificates").join(&self.issuer)
    }

    /// `certificates/<issuer>/<name>/<name>` without an extension.
    fn cert_base(&self, name: &str) -> PathBuf {
        let name = safe_key(name);
        self.certificates_dir().join(&name).join(name)
    }

    pub fn cert_path(&self, name: &str) -> PathBuf {
        self.cert_base(name).with_ext("crt")
    }

    /// `acme/<issuer>/users/<email>/<local part>` without an extension; an
    /// empty e-mail is certmagic's `default/default`.
    fn account_base(&self, email: &str) -> PathBuf {
        let (folder, local) = if email.is_empty() {
            ("default".to_string(), "default".to_string())
        } else {
            let local = email.split_once('@').map_or(email, |(l, _)| l);
            (safe_key(email), safe_key(local))
        };
        self.root
            .join("acme")
            .join(&self.issuer)
            .join("users")
            .join(folder)
            .join(local)
    }

    /// Reads the stored account for `email`, if there is one.
    pub fn load_account(&self, email: &str) -> Result<Option<StoredAccount>, String> {
        let base = self.account_base(email);
        let (json_path, key_path) = (base.with_ext("json"), base.with_ext("key"));
        let json = match std::fs::read(&json_path) {
            Ok(j) => j,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", json_path.display())),
        };
        let meta: AccountJson = serde_json::from_slice(&json)
            .map_err(|e| format!("{} is not an account: {e}", json_path.display()))?;
        let key_pem = std::fs::read(&key_path)
            .map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
        let key = pkcs8_from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
        Ok(Some(StoredAccount {
            location: meta.location.filter(|l| !l.is_empty()),
            key,
            json_path,
        }))
    }

    /// Stores an account: the key first (0600), then the JSON naming it.
    pub fn save_account(
        &self,
        email: &str,
        location: &str,
        key: &PrivatePkcs8KeyDer<'_>,
    ) -> Result<PathBuf, String> {
        let base = self.account_base(email);
        let dir = base.parent().unwrap_or(&self.root).to_path_buf();
        create_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let key_pem = pem("PRIVATE KEY", key.secret_pkcs8_der());
        let json = AccountJson {
            status: Some("valid".into()),
            contact: if email.is_empty() {
                Vec::new()
            } else {
                vec![format!("mailto:{email}")]
            },
            terms_of_service_agreed: true,
            location: Some(location.to_string()),
        };
        let json = serde_json::to_vec_pretty(&json).map_err(|e| e.to_string())?;
        let (json_path, key_path) = (base.with_ext("json"), base.with_ext("key"));
        write_atomic(&key_path, key_pem.as_bytes(), 0o600)
            .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
        write_atomic(&json_path, &json, 0o600)
            .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
        sync_dir(&dir);
        Ok(json_path)
    }

    /// Stores an issued certificate: key, then JSON, then the chain last,
    /// so that a watcher that sees `<name>.crt` change finds its key there.
    pub fn save_certificate(
        &self,
        name: &str,
        chain_pem: &str,
        key_pem: &str,
        cert_url: &str,
    ) -> Result<PathBuf, String> {
        let base = self.cert_base(name);
        let dir = base.parent().unwrap_or(&self.root).to_path_buf();
        create_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let meta = CertJson {
            sans: vec![name.to_string()],
            issuer_data: IssuerData {
                url: cert_url.to_string(),
            },
        };
        let meta = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
        let crt = base.with_ext("crt");
        for (path, content, mode) in [
            (base.with_ext("key"), key_pem.as_bytes(), 0o600),
            (base.with_ext("json"), &meta[..], 0o600),
            (crt.clone(), chain_pem.as_bytes(), 0o600),
        ] {
            write_atomic(&path, content, mode)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        sync_dir(&dir);
        Ok(crt)
    }
}

/// `path` + `.ext`: names hold dots (`a.test`), so `with_extension` would
/// cut them.
trait WithExt {
    fn with_ext(&self, ext: &str) -> PathBuf;
}

impl WithExt for Path {
    fn with_ext(&self, ext: &str) -> PathBuf {
        let mut s = self.as_os_str().to_os_string();
        s.push(".");
        s.push(ext);
        PathBuf::from(s)
    }
}

/// An account read from the storage.
#[derive(Debug)]
pub struct StoredAccount {
    /// The account URL (`location`), when the JSON has one.
    pub location: Option<String>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub json_path: PathBuf,
}

/// The account JSON as certmagic writes it (its other fields are kept out:
/// unknown fields are ignored on reading).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    contact: Vec<String>,
    #[serde(default)]
    terms_of_service_agreed: bool,
    #[serde(default)]
    location: Option<String>,
}

/// certmagic's certificate resource JSON.
#[derive(Debug, Serialize)]
struct CertJson {
    sans: Vec<String>,
    issuer_data: IssuerData,
}

#[derive(Debug, Serialize)]
struct IssuerData {
    url: String,
}

/// A PEM block.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An ECDSA P-256 private key as PKCS#8, from PEM holding PKCS#8 or SEC1
/// (`EC PRIVATE KEY`, what certmagic writes; instant-acme wants PKCS#8).
pub fn pkcs8_from_pem(pem: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(PrivateKeyDer::Pkcs8(k)) => Ok(k),
        Ok(PrivateKeyDer::Sec1(k)) => Ok(PrivatePkcs8KeyDer::from(p256_sec1_to_pkcs8(
            k.secret_sec1_der(),
        ))),
        Ok(_) => Err("the account key is not an ECDSA key (PKCS#8 or SEC1 expected)".into()),
        Err(e) => Err(format!("no private key in PEM: {e:?}")),
    }
}

/// Wraps a SEC1 `ECPrivateKey` of curve P-256 into a PKCS#8
/// `PrivateKeyInfo` (RFC 5208 §5, RFC 5915): version 0, the algorithm
/// `id-ecPublicKey` with `prime256v1`, and the SEC1 bytes as an octet string.
pub fn p256_sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    const VERSION: [u8; 3] = [0x02, 0x01, 0x00];
    const ALGORITHM: [u8; 21] = [
        0x30, 0x13, // SEQUENCE
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // 1.2.840.10045.2.1
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // 1.2.840.10045.3.1.7
    ];
    let mut octets = vec![0x04];
    der_len(sec1.len(), &mut octets);
    octets.extend_from_slice(sec1);
    let body_len = VERSION.len() + ALGORITHM.len() + octets.len();
    let mut out = vec![0x30];
    der_len(body_len, &mut out);
    out.extend_from_slice(&VERSION);
    out.extend_from_slice(&ALGORITHM);
    out.extend_from_slice(&octets);
    out
}

/// Appends a DER length.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    out.push(0x80 | (bytes.len() - first) as u8);
    out.extend_from_slice(&bytes[first..]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn issuer_folder_names_as_certmagic_makes_them() {
        assert_eq!(
            issuer_key(LETS_ENCRYPT_PRODUCTION),
            "acme-v02.api.letsencrypt.org-directory"
        );
        assert_eq!(
            issuer_key(LETS_ENCRYPT_STAGING),
            "acme-staging-v02.api.letsencrypt.org-directory"
        );
        assert_eq!(
            issuer_key("https://127.0.0.1:14000/dir"),
            "127.0.0.1-14000-dir"
        );
        assert_eq!(
            issuer_key("https://CA.Example:8443/acme/v2/"),
            "ca.example-8443-acme-v2"
        );
        assert_eq!(issuer_key("https://ca.example"), "ca.example");
    }

    #[test]
    fn safe_keys_stay_one_path_component() {
        assert_eq!(safe_key("A.Test"), "a.test");
        assert_eq!(safe_key("*.a.test"), "wildcard_.a.test");
        assert_eq!(safe_key("me+x@a.test"), "me_plus_x@a.test");
        assert_eq!(safe_key("../../etc"), "etc");
        assert!(!safe_key("a/b").contains('/'));
    }

    #[test]
    fn layout_of_certificates_and_accounts() {
        let s = Storage::new(Path::new("/st"), "https://127.0.0.1:14000/dir");
        assert_eq!(
            s.cert_path("a.test"),
            Path::new("/st/certificates/127.0.0.1-14000-dir/a.test/a.test.crt")
        );
        assert_eq!(
            s.account_base("admin@example.test"),
            Path::new("/st/acme/127.0.0.1-14000-dir/users/admin@example.test/admin")
        );
        assert_eq!(
            s.account_base("first.last@example.test").with_ext("json"),
            Path::new("/st/acme/127.0.0.1-14000-dir/users/first.last@example.test/first.last.json")
        );
        assert_eq!(
            s.account_base(""),
            Path::new("/st/acme/127.0.0.1-14000-dir/users/default/default")
        );
    }

    #[test]
    fn sec1_account_keys_become_pkcs8_that_ring_accepts() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // The SEC1 inside rcgen's PKCS#8 is what Go's MarshalECPrivateKey
        // writes: wrap it back and compare.
        let pkcs8 = key.serialize_der();
        let sec1 = extract_sec1(&pkcs8);
        assert_eq!(p256_sec1_to_pkcs8(&sec1), pkcs8);
        let pem_text = pem("EC PRIVATE KEY", &sec1);
        let back = pkcs8_from_pem(pem_text.as_bytes()).unwrap();
        assert_eq!(back.secret_pkcs8_der(), &pkcs8[..]);
        assert!(instant_acme::Key::from_pkcs8_der(back).is_ok());
    }

    /// The octet string at the end of a P-256 PKCS#8 document.
    fn extract_sec1(pkcs8: &[u8]) -> Vec<u8> {
        // SEQUENCE hdr, version (3), algorithm (21), then 0x04 len...
        let hdr = if pkcs8[1] & 0x80 != 0 {
            2 + (pkcs8[1] & 0x7f) as usize
        } else {
            2
        };
        let at = hdr + 3 + 21;
        assert_eq!(pkcs8[at], 0x04);
        let (len, skip) = if pkcs8[at + 1] & 0x80 != 0 {
            let n = (pkcs8[at + 1] & 0x7f) as usize;
            let mut l = 0usize;
            for b in &pkcs8[at + 2..at + 2 + n] {
                l = l << 8 | *b as usize;
            }
            (l, 2 + n)
        } else {
            (pkcs8[at + 1] as usize, 2)
        };
        pkcs8[at + skip..at + skip + len].to_vec()
    }

    #[test]
    fn accounts_and_certificates_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path(), "https://127.0.0.1:14000/dir");
        assert!(s.load_account("me@a.test").unwrap().is_none());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = PrivatePkcs8KeyDer::from(key.serialize_der());
        s.save_account("me@a.test", "https://ca/acct/1", &der)
            .unwrap();
        let back = s.load_account("me@a.test").unwrap().unwrap();
        assert_eq!(back.location.as_deref(), Some("https://ca/acct/1"));
        assert_eq!(back.key.secret_pkcs8_der(), der.secret_pkcs8_der());
        let crt = s
            .save_certificate("a.test", "CHAIN", "KEY", "https://ca/cert/1")
            .unwrap();
        assert_eq!(crt, s.cert_path("a.test"));
        assert!(crt.ends_with("a.test/a.test.crt"));
        let folder = crt.parent().unwrap();
        assert_eq!(
            std::fs::metadata(folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let key_mode = std::fs::metadata(folder.join("a.test.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("a.test.json")).unwrap()).unwrap();
        assert_eq!(json["sans"][0], "a.test");
    }

    #[test]
    fn a_certmagic_account_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path(), "https://127.0.0.1:14000/dir");
        let base = s.account_base("");
        std::fs::create_dir_all(base.parent().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sec1 = extract_sec1(&key.serialize_der());
        std::fs::write(base.with_ext("key"), pem("EC PRIVATE KEY", &sec1)).unwrap();
        std::fs::write(
            base.with_ext("json"),
            r#"{"status":"valid","termsOfServiceAgreed":true,"orders":"https://ca/o","location":"https://ca/my-account/1"}"#,
        )
        .unwrap();
        let acct = s.load_account("").unwrap().unwrap();
        assert_eq!(acct.location.as_deref(), Some("https://ca/my-account/1"));
    }
}
