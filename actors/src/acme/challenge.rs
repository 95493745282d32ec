//! The TLS-ALPN-01 challenge certificate (RFC 8737 §3): self-signed, exactly
//! one DNS SAN (the name being validated) and the critical acmeIdentifier
//! extension (1.3.6.1.5.5.7.1.31) holding the SHA-256 digest of the key
//! authorization. A fresh ECDSA P-256 key each time.

use std::sync::Arc;

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Makes the challenge certificate for `name` and the SHA-256 `digest` of
/// its key authorization.
pub fn certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params = CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("challenge certificate for {name}: {e}"))?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate for {name}: {e}"))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = any_supported_type(&der).map_err(|e| format!("challenge key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn one_dns_san_and_a_critical_acme_identifier_holding_the_digest() {
        let digest = [7u8; 32];
        let ck = certificate("a.test", &digest).unwrap();
        assert_eq!(ck.cert.len(), 1);
        let (_, cert) = X509Certificate::from_der(ck.cert[0].as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<_> = san
            .value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::DNSName(n) => n.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, vec!["a.test"]);
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        assert!(matches!(
            ext.parsed_extension(),
            ParsedExtension::UnsupportedExtension { .. }
        ));
        // The value is an OCTET STRING (0x04, length 32) holding the digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
    }
}
