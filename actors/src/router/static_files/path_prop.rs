//! Randomized tests (proptest) of the request-path decoding: any input is
//! a relative path of plain names or a refusal, never a panic or a way
//! out; names encoded any way come back as they were; `..` in any spelling
//! is refused.
//!
//! Cases: `PROPTEST_CASES`, else 2,000 per property.

use std::path::Component;

use proptest::prelude::*;

use super::{decode_path, PathError};

use crate::proptest_config::config;

/// `s` with each byte percent-encoded or not, as `mask` says (bit i for
/// byte i, repeating); bytes that must be encoded always are.
fn encode(s: &str, mask: u64, upper: bool) -> String {
    s.bytes()
        .enumerate()
        .map(|(i, b)| {
            let must = b == b'/' || b == b'%' || !b.is_ascii_graphic();
            if must || mask & (1 << (i % 64)) != 0 {
                if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            } else {
                char::from(b).to_string()
            }
        })
        .collect()
}

/// A file name a request may ask for: no `/`, `\`, NUL, not `.` or `..`.
fn name() -> impl Strategy<Value = String> {
    "[^/\\\\\u{0}]{1,40}".prop_filter("not a dot segment", |s| s != "." && s != "..")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_path_is_plain_names_or_refused(raw in "\\PC{0,80}|[%./a-f0-9]{0,40}") {
        if let Ok(rel) = decode_path(&raw) {
            prop_assert!(rel.is_relative());
            prop_assert!(rel.as_os_str().len() <= 3072);
            for c in rel.components() {
                let Component::Normal(n) = c else {
                    return Err(TestCaseError::fail(format!("{raw:?} gave {c:?}")));
                };
                let n = n.to_str().unwrap_or_default();
                prop_assert!(!n.is_empty() && n.len() <= 255);
                prop_assert!(n != "." && n != "..");
                prop_assert!(!n.contains(['/', '\\', '\0']));
            }
        }
    }

    #[test]
    fn names_encoded_any_way_come_back(
        names in prop::collection::vec(name(), 1..5),
        mask in any::<u64>(),
        upper in any::<bool>(),
        trailing in any::<bool>(),
    ) {
        let mut raw: String = names.iter().map(|n| format!("/{}", encode(n, mask, upper))).collect();
        if trailing {
            raw.push('/');
        }
        let decoded = decode_path(&raw);
        let too_long = names.iter().any(|n| n.len() > 255);
        if too_long {
            prop_assert_eq!(decoded, Err(PathError::TooLong));
        } else {
            let expected: std::path::PathBuf = names.iter().collect();
            prop_assert_eq!(decoded, Ok(expected));
        }
    }

    #[test]
    fn dot_dot_in_any_spelling_is_refused(
        before in prop::collection::vec("[a-z]{1,5}", 0..3),
        mask in 0u64..4,
        upper in any::<bool>(),
    ) {
        let dots = encode("..", mask, upper);
        let raw = format!("/{}/{dots}/etc/passwd", before.join("/"));
        prop_assert_eq!(decode_path(&raw), Err(PathError::DotSegment));
        // An encoded slash or backslash never makes a new segment.
        let sneaky = format!("/{}/..%2fetc", before.join("/"));
        prop_assert!(decode_path(&sneaky).is_err());
        let sneaky = format!("/{}/..%5cetc", before.join("/"));
        prop_assert!(decode_path(&sneaky).is_err());
    }
}
