//! Which names the issuer manages (interface §9): every route `domain` and
//! every entry of `https.domains`, and nothing else ever. Wildcards cannot
//! be validated over TLS-ALPN-01 and IP addresses are not ordered: both are
//! skipped, and so is anything that is not a DNS host name.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::certs::snapshot::normalize_sni;

/// The managed names, normalised and sorted, and a warning for each name
/// skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub names: Vec<String>,
    pub skipped: Vec<String>,
}

/// Selects the managed names among the configured ones.
pub fn select<'a>(configured: impl IntoIterator<Item = &'a str>) -> Selection {
    let mut names = BTreeSet::new();
    let mut skipped = Vec::new();
    for raw in configured {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("*.") || trimmed.contains('*') {
            skipped.push(format!(
                "{trimmed}: a wildcard name cannot be validated over TLS-ALPN-01; not ordered (use a certificate file in cert_location)"
            ));
        } else if trimmed.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            skipped.push(format!(
                "{trimmed}: an IP address is not ordered over ACME; not ordered"
            ));
        } else {
            match normalize_sni(trimmed) {
                Some(n) if n.contains('.') || n == "localhost" => {
                    if n == "localhost" {
                        skipped.push(format!(
                            "{trimmed}: localhost cannot get a public certificate; not ordered"
                        ));
                    } else {
                        names.insert(n);
                    }
                }
                Some(n) => {
                    // A single label is a host name, but no CA issues for it.
                    skipped.push(format!("{n}: a name without a dot cannot be ordered"));
                }
                None => skipped.push(format!("{trimmed}: not a DNS host name; not ordered")),
            }
        }
    }
    Selection {
        names: names.into_iter().collect(),
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_domains_and_listed_names_normalised_and_unique() {
        let s = select(["A.test", "b.test.", "a.test", "", "c.test"]);
        assert_eq!(s.names, vec!["a.test", "b.test", "c.test"]);
        assert!(s.skipped.is_empty());
    }

    #[test]
    fn wildcards_addresses_and_junk_are_skipped_with_a_reason() {
        let s = select([
            "*.a.test",
            "127.0.0.1",
            "::1",
            "[::1]",
            "bad name",
            "localhost",
            "host",
        ]);
        assert!(s.names.is_empty(), "{:?}", s.names);
        assert_eq!(s.skipped.len(), 7, "{:?}", s.skipped);
        assert!(s.skipped[0].contains("wildcard"));
        assert!(s.skipped[1].contains("IP address"));
    }
}
