//! The names every certificate module agrees on: the default pair's file
//! stem, the subject CN of clace's own self-signed default, and what counts
//! as a host name.
//!
//! A leaf: it imports nothing from `certs`, so that `pair`, `snapshot`,
//! `selfsigned` and `inventory` can all use it without importing each other
//! for a name.

use std::borrow::Cow;

/// The file stem of the default pair (interface §4 step 4).
pub const DEFAULT_STEM: &str = "default";

/// The subject CN that marks the default clace generated (interface §4
/// step 5): such a `default.crt` is reported as `self-signed`, and only it
/// is ever replaced by clace.
pub const SELF_SIGNED_CN: &str = "clace self-signed default";

/// Normalises a server name for lookups: lower-case, one trailing dot
/// dropped. `None` unless the result is a valid DNS host name (letters,
/// digits, `-` and `.`; labels of 1 to 63 characters; at most 253 in all,
/// RFC 1035 §2.3.4), so a name such as `../outside/evil.com` is no name at
/// all and can never reach a path or a map key it should not.
pub fn normalize_sni(name: &str) -> Option<String> {
    normalize(name).map(Cow::into_owned)
}

/// [`normalize_sni`] without an allocation when the name is already
/// normalised, which is the common case on the handshake path.
pub(crate) fn normalize(name: &str) -> Option<Cow<'_, str>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return None;
        }
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_sni_cases() {
        assert_eq!(normalize_sni("Example.COM").as_deref(), Some("example.com"));
        assert_eq!(
            normalize_sni("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_sni("a-b.c0.d").as_deref(), Some("a-b.c0.d"));
        assert_eq!(normalize_sni("localhost").as_deref(), Some("localhost"));
        assert_eq!(normalize_sni("example.com.."), None);
        assert_eq!(normalize_sni("a..b"), None);
        assert_eq!(normalize_sni(".a"), None);
        assert_eq!(normalize_sni(".."), None);
        assert_eq!(normalize_sni("."), None);
        assert_eq!(normalize_sni(""), None);
        assert_eq!(normalize_sni("../outside/evil.com"), None);
        assert_eq!(normalize_sni("a/b"), None);
        assert_eq!(normalize_sni("a_b.com"), None);
        assert_eq!(normalize_sni("*.example.com"), None);
        assert_eq!(normalize_sni("a b"), None);
        assert_eq!(normalize_sni("é.com"), None);
        assert_eq!(normalize_sni(&"a".repeat(63)).map(|s| s.len()), Some(63));
        assert_eq!(normalize_sni(&"a".repeat(64)), None);
        // 253 characters is the limit; a trailing dot does not count.
        let name253 = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(name253.len(), 253);
        assert!(normalize_sni(&name253).is_some());
        assert!(normalize_sni(&format!("{name253}.")).is_some());
        let name254 = format!("{name253}d");
        assert_eq!(normalize_sni(&name254), None);
    }
}
