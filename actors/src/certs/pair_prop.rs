//! Randomized tests (proptest) of PEM pair loading: whatever lands in the
//! certificate folder (random bytes, a real pair cut short, with bytes of
//! its DER changed, with lines dropped or repeated, keys of another kind),
//! parsing gives a pair or an error, never a panic, and an untouched pair
//! always loads.
//!
//! Cases: `PROPTEST_CASES`, else 2,000 per property.

use std::sync::LazyLock;

use base64::Engine as _;
use proptest::prelude::*;

use super::pair::testing::{make_pem, NOW, YEAR};
use super::pair::{parse_leaf, parse_pair, Source};

use crate::proptest_config::config;

/// Real pairs (certificate PEM, key PEM): ECDSA P-256 in PKCS#8 made here,
/// and the fixed RSA (PKCS#1) and EC (SEC1) ones of `tests/data`.
static PAIRS: LazyLock<Vec<(Vec<u8>, Vec<u8>)>> = LazyLock::new(|| {
    let (cert, key) = make_pem(&["a.test", "*.b.test"], NOW - YEAR, NOW + YEAR, "a.test");
    vec![
        (cert.into_bytes(), key.into_bytes()),
        (
            include_bytes!("../../tests/data/rsa.crt").to_vec(),
            include_bytes!("../../tests/data/rsa-pkcs1.key").to_vec(),
        ),
        (
            include_bytes!("../../tests/data/ec.crt").to_vec(),
            include_bytes!("../../tests/data/ec-sec1.key").to_vec(),
        ),
    ]
});

/// The PEM blocks of `pem`: (label, DER).
fn blocks(pem: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut label = None;
    let mut body = String::new();
    for line in text.lines() {
        if let Some(l) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            label = Some(l.to_owned());
            body.clear();
        } else if line.starts_with("-----END ") {
            if let Some(l) = label.take() {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(body.trim())
                    .unwrap_or_default();
                out.push((l, der));
            }
        } else if label.is_some() {
            body.push_str(line.trim());
        }
    }
    out
}

fn pem(blocks: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = String::new();
    for (label, der) in blocks {
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
    }
    out.into_bytes()
}

/// A way to spoil one file.
#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Cut after this many bytes (modulo the length).
    Truncate(usize),
    /// Change DER bytes of the first block: (position, xor) pairs.
    Der(Vec<(usize, u8)>),
    /// Cut the DER of the first block short.
    DerTruncate(usize),
    /// Change bytes of the PEM text.
    Text(Vec<(usize, u8)>),
    /// Drop a line, or repeat one.
    DropLine(usize),
    RepeatLine(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        1 => Just(Damage::None),
        2 => any::<usize>().prop_map(Damage::Truncate),
        4 => prop::collection::vec((any::<usize>(), 1u8..), 1..6).prop_map(Damage::Der),
        2 => any::<usize>().prop_map(Damage::DerTruncate),
        2 => prop::collection::vec((any::<usize>(), any::<u8>()), 1..6).prop_map(Damage::Text),
        1 => any::<usize>().prop_map(Damage::DropLine),
        1 => any::<usize>().prop_map(Damage::RepeatLine),
    ]
}

fn apply(file: &[u8], damage: &Damage) -> Vec<u8> {
    let lines =
        |f: &[u8]| -> Vec<Vec<u8>> { f.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect() };
    match damage {
        Damage::None => file.to_vec(),
        Damage::Truncate(n) => file[..n % (file.len() + 1)].to_vec(),
        Damage::Der(changes) => {
            let mut b = blocks(file);
            if let Some((_, der)) = b.first_mut() {
                for (at, xor) in changes {
                    if !der.is_empty() {
                        let i = at % der.len();
                        der[i] ^= xor;
                    }
                }
            }
            pem(&b)
        }
        Damage::DerTruncate(n) => {
            let mut b = blocks(file);
            if let Some((_, der)) = b.first_mut() {
                let keep = n % (der.len() + 1);
                der.truncate(keep);
            }
            pem(&b)
        }
        Damage::Text(changes) => {
            let mut f = file.to_vec();
            for (at, byte) in changes {
                if !f.is_empty() {
                    let i = at % f.len();
                    f[i] = *byte;
                }
            }
            f
        }
        Damage::DropLine(n) => {
            let mut l = lines(file);
            let i = n % l.len();
            l.remove(i);
            l.join(&b'\n')
        }
        Damage::RepeatLine(n) => {
            let mut l = lines(file);
            let i = n % l.len();
            let line = l[i].clone();
            l.insert(i, line);
            l.join(&b'\n')
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_are_an_error_not_a_panic(
        cert in prop::collection::vec(any::<u8>(), 0..600),
        key in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        prop_assert!(parse_pair("x", &cert, &key, Source::File).is_err());
        let _ = parse_leaf(&cert, "x.crt");
    }

    #[test]
    fn damaged_pairs_load_or_fail_without_panicking(
        which in 0usize..3,
        key_of in 0usize..3,
        cert_damage in damage(),
        key_damage in damage(),
    ) {
        let (cert, _) = &PAIRS[which];
        let (_, key) = &PAIRS[key_of];
        let cert = apply(cert, &cert_damage);
        let key = apply(key, &key_damage);
        let result = parse_pair("x", &cert, &key, Source::File);
        let _ = parse_leaf(&cert, "x.crt");
        if matches!((&cert_damage, &key_damage), (Damage::None, Damage::None)) {
            // Untouched: loads with its own key, and only with it.
            prop_assert_eq!(result.is_ok(), which == key_of, "{:?}", result.err());
        }
    }
}
