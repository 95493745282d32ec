//! The TLS client configuration clace uses towards other servers (the ACME
//! CA, `https://` upstreams): ring, TLS 1.2 and 1.3, the web PKI roots
//! plus the roots of an operator's PEM file.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A client configuration trusting the web PKI roots and those in
/// `extra` (a PEM file); errors name the file by `key`, the configuration
/// key it came from (`acme_ca_file`, `proxy_ca_file`).
pub fn client_config(extra: Option<&Path>, key: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra {
        let fail = |e: &dyn std::fmt::Display| format!("{key} {}: {e}", path.display());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| fail(&e))?
            .collect::<Result<_, _>>()
            .map_err(|e| fail(&e))?;
        if certs.is_empty() {
            return Err(fail(&"no certificate in it"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| fail(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_or_empty_file_is_named_with_its_key() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem")), "proxy_ca_file")
            .err()
            .unwrap();
        assert!(
            err.starts_with("proxy_ca_file /nonexistent/ca.pem"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(&empty), "acme_ca_file").err().unwrap();
        assert!(err.contains("no certificate"), "{err}");
        assert!(client_config(None, "x").is_ok());
    }
}
