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

pub mod backend;
pub mod folder;
pub mod lockfile;
pub mod postgres;

pub use backend::{Backend, KeyInfo, Lease};
use folder::Folder;

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

/// One issuer's part of the storage: its keys, the back end holding them,
/// and the local folder the cert store reads (the storage folder itself,
/// or the local copy of what PostgreSQL holds).
#[derive(Debug, Clone)]
pub struct Storage {
    /// The local folder of certmagic's layout.
    root: PathBuf,
    issuer: String,
    backend: Backend,
}

impl PartialEq for Storage {
    fn eq(&self, other: &Storage) -> bool {
        (&self.root, &self.issuer, self.backend.describe())
            == (&other.root, &other.issuer, other.backend.describe())
    }
}

impl Storage {
    /// A storage folder.
    pub fn new(root: &Path, directory_url: &str) -> Storage {
        Storage::with_backend(root, directory_url, Backend::Folder(Folder::new(root)))
    }

    /// `backend` holds the keys; `local` is where the cert store reads
    /// them (the same folder for the folder back end).
    pub fn with_backend(local: &Path, directory_url: &str, backend: Backend) -> Storage {
        Storage {
            root: local.to_path_buf(),
            issuer: issuer_key(directory_url),
            backend,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Whether the keys live elsewhere than the local folder.
    pub fn is_remote(&self) -> bool {
        !matches!(self.backend, Backend::Folder(_))
    }

    /// `certificates/<issuer>` in the local folder: one folder per name.
    pub fn certificates_dir(&self) -> PathBuf {
        self.root.join("certificates").join(&self.issuer)
    }

    /// `certificates/<issuer>` as a key prefix.
    pub fn certificates_prefix(&self) -> String {
        format!("certificates/{}", self.issuer)
    }

    /// `certificates/<issuer>/<name>/<name>` without an extension.
    fn cert_key_base(&self, name: &str) -> String {
        let name = safe_key(name);
        format!("{}/{name}/{name}", self.certificates_prefix())
    }

    pub fn cert_path(&self, name: &str) -> PathBuf {
        Folder::new(&self.root).path(&format!("{}.crt", self.cert_key_base(name)))
    }

    /// The lock of one name's orders (certmagic's `issue_cert_<name>`).
    pub fn order_lock_key(name: &str) -> String {
        format!("issue_cert_{}", safe_key(name))
    }

    /// `acme/<issuer>/challenge_tokens`: the TLS-ALPN-01 challenges being
    /// validated, for every instance to serve.
    pub fn challenges_prefix(&self) -> String {
        format!("acme/{}/challenge_tokens", self.issuer)
    }

    pub fn challenge_key(&self, name: &str) -> String {
        format!("{}/{}.json", self.challenges_prefix(), safe_key(name))
    }

    /// `instances/<id>.json`: each running instance's heartbeat.
    pub const INSTANCES_PREFIX: &'static str = "instances";

    pub fn instance_key(id: &str) -> String {
        format!("{}/{}.json", Storage::INSTANCES_PREFIX, safe_key(id))
    }

    /// `acme/<issuer>/users/<email>/<local part>` without an extension; an
    /// empty e-mail is certmagic's `default/default`.
    fn account_key_base(&self, email: &str) -> String {
        let (folder, local) = if email.is_empty() {
            ("default".to_string(), "default".to_string())
        } else {
            let local = email.split_once('@').map_or(email, |(l, _)| l);
            (safe_key(email), safe_key(local))
        };
        format!("acme/{}/users/{folder}/{local}", self.issuer)
    }

    /// Where a key is shown to the operator: its file, or the back end and
    /// the key.
    pub fn show(&self, key: &str) -> String {
        match &self.backend {
            Backend::Folder(f) => f.path(key).display().to_string(),
            other => format!("{} key {key}", other.describe()),
        }
    }

    /// Reads the stored account for `email`, if there is one.
    pub async fn load_account(&self, email: &str) -> Result<Option<StoredAccount>, String> {
        let base = self.account_key_base(email);
        let (json_key, key_key) = (format!("{base}.json"), format!("{base}.key"));
        let Some(json) = self.backend.load(&json_key).await? else {
            return Ok(None);
        };
        let meta: AccountJson = serde_json::from_slice(&json)
            .map_err(|e| format!("{} is not an account: {e}", self.show(&json_key)))?;
        let key_pem = self
            .backend
            .load(&key_key)
            .await?
            .ok_or_else(|| format!("{} is missing", self.show(&key_key)))?;
        let key = pkcs8_from_pem(&key_pem).map_err(|e| format!("{}: {e}", self.show(&key_key)))?;
        Ok(Some(StoredAccount {
            location: meta.location.filter(|l| !l.is_empty()),
            key,
            json_path: self.show(&json_key),
        }))
    }

    /// Stores an account: the key first (0600), then the JSON naming it.
    pub async fn save_account(
        &self,
        email: &str,
        location: &str,
        key: &PrivatePkcs8KeyDer<'_>,
    ) -> Result<String, String> {
        let base = self.account_key_base(email);
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
        let json_key = format!("{base}.json");
        self.backend
            .store(&format!("{base}.key"), key_pem.as_bytes())
            .await?;
        self.backend.store(&json_key, &json).await?;
        Ok(self.show(&json_key))
    }

    /// Stores an issued certificate: key, then JSON, then the chain last,
    /// so that a watcher that sees `<name>.crt` change finds its key there.
    /// With a remote back end, the local copy is written too.
    pub async fn save_certificate(
        &self,
        name: &str,
        chain_pem: &str,
        key_pem: &str,
        cert_url: &str,
    ) -> Result<PathBuf, String> {
        let base = self.cert_key_base(name);
        let meta = CertJson {
            sans: vec![name.to_string()],
            issuer_data: IssuerData {
                url: cert_url.to_string(),
            },
        };
        let meta = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
        let files = [
            (format!("{base}.key"), key_pem.as_bytes()),
            (format!("{base}.json"), &meta[..]),
            (format!("{base}.crt"), chain_pem.as_bytes()),
        ];
        for (key, content) in &files {
            self.backend.store(key, content).await?;
        }
        if self.is_remote() {
            let local = Folder::new(&self.root);
            for (key, content) in &files {
                local.store(key, content, true)?;
            }
        }
        Ok(self.cert_path(name))
    }

    /// The stored chain and key of `name`, if both are there.
    pub async fn load_certificate(&self, name: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>, String> {
        let base = self.cert_key_base(name);
        let Some(chain) = self.backend.load(&format!("{base}.crt")).await? else {
            return Ok(None);
        };
        let Some(key) = self.backend.load(&format!("{base}.key")).await? else {
            return Ok(None);
        };
        Ok(Some((chain, key)))
    }

    /// Copies what the remote back end holds under `certificates/<issuer>`
    /// (or under one name's folder) into the local folder, removing local
    /// files the back end no longer has. Nothing to do for a folder.
    /// Returns the names (folder names) whose files changed.
    pub async fn mirror(&self, name: Option<&str>) -> Result<Vec<String>, String> {
        if !self.is_remote() {
            return Ok(Vec::new());
        }
        let prefix = match name {
            Some(n) => format!("{}/{}", self.certificates_prefix(), safe_key(n)),
            None => self.certificates_prefix(),
        };
        let local = Folder::new(&self.root);
        let remote: Vec<String> = self.backend.list(&prefix).await?;
        let prefix_len = self.certificates_prefix().len() + 1;
        let mut changed: Vec<String> = Vec::new();
        let mut note = |key: &str| {
            let name = key[prefix_len..]
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            if !name.is_empty() && !changed.contains(&name) {
                changed.push(name);
            }
        };
        // Key and JSON before the chain, as [`Storage::save_certificate`]
        // writes them, so that the watcher never pairs a new chain with an
        // old key for longer than it waits.
        let mut ordered = remote.clone();
        ordered.sort_by_key(|k| k.ends_with(".crt"));
        for key in &ordered {
            let Some(value) = self.backend.load(key).await? else {
                continue;
            };
            if local.load(key)?.as_deref() != Some(&value[..]) {
                local.store(key, &value, true)?;
                note(key);
            }
        }
        for key in local.list(&prefix)? {
            if !remote.contains(&key) {
                local.delete(&key)?;
                note(&key);
            }
        }
        Ok(changed)
    }
}

/// An account read from the storage.
#[derive(Debug)]
pub struct StoredAccount {
    /// The account URL (`location`), when the JSON has one.
    pub location: Option<String>,
    pub key: PrivatePkcs8KeyDer<'static>,
    /// Where it is, for log lines.
    pub json_path: String,
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
            s.account_key_base("admin@example.test"),
            "acme/127.0.0.1-14000-dir/users/admin@example.test/admin"
        );
        assert_eq!(
            s.account_key_base("first.last@example.test"),
            "acme/127.0.0.1-14000-dir/users/first.last@example.test/first.last"
        );
        assert_eq!(
            s.account_key_base(""),
            "acme/127.0.0.1-14000-dir/users/default/default"
        );
        assert_eq!(
            s.challenge_key("A.test"),
            "acme/127.0.0.1-14000-dir/challenge_tokens/a.test.json"
        );
        assert_eq!(Storage::order_lock_key("a.test"), "issue_cert_a.test");
        assert_eq!(Storage::instance_key("h-1/x"), "instances/h-1x.json");
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

    #[tokio::test]
    async fn accounts_and_certificates_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path(), "https://127.0.0.1:14000/dir");
        assert!(s.load_account("me@a.test").await.unwrap().is_none());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = PrivatePkcs8KeyDer::from(key.serialize_der());
        s.save_account("me@a.test", "https://ca/acct/1", &der)
            .await
            .unwrap();
        let back = s.load_account("me@a.test").await.unwrap().unwrap();
        assert_eq!(back.location.as_deref(), Some("https://ca/acct/1"));
        assert_eq!(back.key.secret_pkcs8_der(), der.secret_pkcs8_der());
        let crt = s
            .save_certificate("a.test", "CHAIN", "KEY", "https://ca/cert/1")
            .await
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

    #[tokio::test]
    async fn a_certmagic_account_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path(), "https://127.0.0.1:14000/dir");
        let base = dir.path().join(s.account_key_base(""));
        std::fs::create_dir_all(base.parent().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sec1 = extract_sec1(&key.serialize_der());
        std::fs::write(base.with_extension("key"), pem("EC PRIVATE KEY", &sec1)).unwrap();
        std::fs::write(
            base.with_extension("json"),
            r#"{"status":"valid","termsOfServiceAgreed":true,"orders":"https://ca/o","location":"https://ca/my-account/1"}"#,
        )
        .unwrap();
        let acct = s.load_account("").await.unwrap().unwrap();
        assert_eq!(acct.location.as_deref(), Some("https://ca/my-account/1"));
    }
}
