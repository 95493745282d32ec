//! Randomized tests (proptest) of SNI normalisation and of the selection of
//! interface §4: any server name, any set of pairs in any order, and the
//! snapshot chooses what a plain reading of §4 chooses, without panicking.
//!
//! Cases: `PROPTEST_CASES`, else 2,000 per property.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use proptest::prelude::*;

use super::names::normalize_sni;
use super::pair::testing::{pair_at, NOW, YEAR};
use super::pair::{Pair, Source, Validity};
use super::snapshot::{Snapshot, Step, DEFAULT_STEM};

use crate::proptest_config::config;

const VALID: (i64, i64) = (NOW - YEAR, NOW + YEAR);
const LATER: (i64, i64) = (NOW - YEAR, NOW + 2 * YEAR);
const EXPIRED: (i64, i64) = (NOW - 2 * YEAR, NOW - YEAR);
const EXPIRED_LATER: (i64, i64) = (NOW - 2 * YEAR, NOW - 1);
const FUTURE: (i64, i64) = (NOW + YEAR, NOW + 2 * YEAR);

/// Pairs for `cert_location`: made once (key generation is the slow part),
/// then any subset in any order makes a folder. Stems differ as file names
/// in one folder do, but two may normalise alike (`a.test`, `A.Test`).
static FILES: LazyLock<Vec<Arc<Pair>>> = LazyLock::new(|| {
    let specs: &[(&str, &[&str], (i64, i64))] = &[
        ("a.test", &["a.test"], VALID),
        ("A.Test", &["other.test"], LATER),
        ("a.test.old", &["a.test"], EXPIRED),
        ("b.test", &["b.test", "a.test"], LATER),
        ("b-future", &["b.test"], FUTURE),
        ("wild", &["*.test"], VALID),
        ("wild-later", &["*.test", "c.test"], LATER),
        ("wild-a", &["*.a.test"], EXPIRED_LATER),
        ("x.a.test", &["y.a.test"], EXPIRED),
        ("san-x", &["x.a.test", "B.TEST"], VALID),
        (DEFAULT_STEM, &["localhost"], VALID),
        ("my cert", &["c.test"], EXPIRED),
    ];
    specs
        .iter()
        .map(|(stem, names, (nb, na))| pair_at(stem, names, *nb, *na, Source::File))
        .collect()
});

/// Pairs in the ACME storage.
static ACME: LazyLock<Vec<Arc<Pair>>> = LazyLock::new(|| {
    let specs: &[(&str, &[&str], (i64, i64))] = &[
        ("a.test", &["a.test"], LATER),
        ("c.test", &["c.test"], EXPIRED),
        ("c.test-new", &["c.test"], VALID),
        ("d.test", &["d.test"], EXPIRED),
    ];
    specs
        .iter()
        .map(|(stem, names, (nb, na))| pair_at(stem, names, *nb, *na, Source::Acme))
        .collect()
});

/// Names a handshake may ask for: the ones the pairs know, in any case and
/// with or without the trailing dot, and anything at all.
fn sni() -> impl Strategy<Value = Option<String>> {
    let known = prop::sample::select(vec![
        "a.test",
        "b.test",
        "c.test",
        "d.test",
        "x.a.test",
        "y.a.test",
        "z.a.test",
        "q.test",
        "test",
        "localhost",
        "other.test",
        "wild",
        "default",
        "my cert",
        "*.test",
        "a..test",
        ".test",
        "",
    ]);
    let spelled = (known, any::<u32>(), any::<bool>()).prop_map(|(name, case, dot)| {
        let mut s: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if case & (1 << (i % 32)) != 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        if dot {
            s.push('.');
        }
        s
    });
    prop_oneof![
        6 => spelled.prop_map(Some),
        2 => "[a-zA-Z0-9.*_/ -]{0,24}".prop_map(Some),
        1 => any::<String>().prop_map(Some),
        1 => Just(None),
    ]
}

/// A folder: a subset of `pool` in a random order.
fn subset(pool: &'static [Arc<Pair>]) -> impl Strategy<Value = Vec<Arc<Pair>>> {
    prop::sample::subsequence((0..pool.len()).collect::<Vec<_>>(), 0..=pool.len())
        .prop_shuffle()
        .prop_map(move |idx| idx.into_iter().map(|i| Arc::clone(&pool[i])).collect())
}

/// Interface §4 read plainly, over the pairs as given (no index): what
/// [`Snapshot::select`] must choose (stem and step), or `None`.
fn by_the_book(
    files: &[Arc<Pair>],
    acme: &[Arc<Pair>],
    lookup: bool,
    sni: Option<&str>,
    now: i64,
) -> Option<(String, Step)> {
    let valid = |p: &Pair| p.validity(now) == Validity::Valid;
    // Later expiry first, then the stem.
    let preference = |a: &&Arc<Pair>, b: &&Arc<Pair>| {
        b.not_after
            .cmp(&a.not_after)
            .then_with(|| a.stem.cmp(&b.stem))
    };
    if let Some(name) = sni.and_then(normalize_sni) {
        let parent = name.split_once('.').map(|(_, p)| p.to_owned());
        let norm = |s: &str| normalize_sni(s);
        let lists: [(Vec<&Arc<Pair>>, Step); 3] = [
            (
                files
                    .iter()
                    .filter(|p| norm(&p.stem).as_deref() == Some(name.as_str()))
                    .collect(),
                Step::FileName,
            ),
            (
                files
                    .iter()
                    .filter(|p| {
                        p.names.iter().any(|s| {
                            !s.starts_with("*.") && norm(s).as_deref() == Some(name.as_str())
                        })
                    })
                    .collect(),
                Step::San,
            ),
            (
                files
                    .iter()
                    .filter(|p| {
                        p.names.iter().any(|s| {
                            s.strip_prefix("*.")
                                .and_then(norm)
                                .is_some_and(|suffix| Some(suffix) == parent)
                        })
                    })
                    .collect(),
                Step::Wildcard,
            ),
        ];
        let mut stale = None;
        if lookup {
            let best_valid = lists.iter().find_map(|(list, step)| {
                let mut list = list.clone();
                list.sort_by(preference);
                list.into_iter().find(|p| valid(p)).map(|p| (p, *step))
            });
            if let Some((p, step)) = best_valid {
                return Some((p.stem.clone(), step));
            }
            stale = lists.iter().find_map(|(list, step)| {
                let mut list = list.clone();
                list.sort_by(preference);
                list.first().map(|p| (p.stem.clone(), *step))
            });
        }
        let mut managed: Vec<&Arc<Pair>> = acme
            .iter()
            .filter(|p| {
                p.names
                    .iter()
                    .any(|s| norm(s).as_deref() == Some(name.as_str()))
            })
            .collect();
        managed.sort_by(preference);
        let acme_best = managed
            .iter()
            .find(|p| valid(p))
            .or_else(|| managed.first());
        if let Some(p) = acme_best {
            if stale.is_none() || valid(p) {
                return Some((p.stem.clone(), Step::Acme));
            }
        }
        if stale.is_some() {
            return stale;
        }
    }
    files
        .iter()
        .find(|p| p.stem == DEFAULT_STEM)
        .map(|p| (p.stem.clone(), Step::Default))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn normalized_names_are_host_names_and_stable(name in any::<String>()) {
        if let Some(n) = normalize_sni(&name) {
            prop_assert!(!n.is_empty() && n.len() <= 253);
            prop_assert!(!n.ends_with('.'));
            prop_assert!(n.split('.').all(|l| !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')));
            prop_assert_eq!(normalize_sni(&n), Some(n.clone()));
            prop_assert_eq!(normalize_sni(&name.to_ascii_uppercase()), Some(n));
        } else {
            prop_assert_eq!(normalize_sni(&name.to_ascii_lowercase()), None);
        }
    }

    #[test]
    fn host_like_names_normalize_to_their_lower_case(
        labels in prop::collection::vec("[a-zA-Z0-9-]{1,63}", 1..5),
        dot in any::<bool>(),
    ) {
        let name = labels.join(".");
        let asked = if dot { format!("{name}.") } else { name.clone() };
        let expected = (name.len() <= 253).then(|| name.to_ascii_lowercase());
        prop_assert_eq!(normalize_sni(&asked), expected);
    }

    #[test]
    fn selection_follows_the_contract_whatever_the_order(
        files in subset(&FILES),
        acme in subset(&ACME),
        lookup in any::<bool>(),
        sni in sni(),
        alpn_acme in any::<bool>(),
        now_shift in prop::sample::select(vec![0i64, -YEAR - 1, YEAR + 1]),
    ) {
        let now = NOW + now_shift;
        let expected = by_the_book(&files, &acme, lookup, sni.as_deref(), now);
        let snapshot = Snapshot::build(files.clone(), acme.clone(), HashMap::new(), lookup);
        // No challenge is pending: an acme-tls/1 client is an ordinary one.
        let got = snapshot
            .select(sni.as_deref(), alpn_acme, now)
            .map(|s| (s.pair.map(|p| p.stem.clone()).unwrap_or_default(), s.step));
        prop_assert_eq!(got, expected);
        // The same pairs in the reverse order choose the same.
        let mut rev_files = files;
        rev_files.reverse();
        let mut rev_acme = acme;
        rev_acme.reverse();
        let again = Snapshot::build(rev_files, rev_acme, HashMap::new(), lookup)
            .select(sni.as_deref(), alpn_acme, now)
            .map(|s| (s.pair.map(|p| p.stem.clone()).unwrap_or_default(), s.step));
        prop_assert_eq!(again, snapshot
            .select(sni.as_deref(), alpn_acme, now)
            .map(|s| (s.pair.map(|p| p.stem.clone()).unwrap_or_default(), s.step)));
    }
}
