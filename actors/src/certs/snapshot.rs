//! The immutable index of every servable certificate, built once by the cert
//! store and read by the resolver on every handshake.
//!
//! All the work that depends only on the pairs (normalising names, grouping
//! candidates per name, ordering them) is done in [`Snapshot::build`]; a
//! selection is then a handful of hash lookups whose cost does not grow with
//! the number of certificates. Only validity is checked at selection time,
//! because it depends on the clock.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use serde::Serialize;

use super::names::normalize;
use super::pair::{Pair, Source, Validity};

// Re-exported for the cert store and the ACME issuer, which import them from here.
pub use super::names::{normalize_sni, DEFAULT_STEM};

/// Which step of interface §4 chose a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// 1: a pending TLS-ALPN-01 challenge (RFC 8737).
    Challenge,
    /// 2a: the pair named `<name>.crt`.
    FileName,
    /// 2b: a pair listing the name as a DNS SAN.
    San,
    /// 2c: a pair with a matching wildcard SAN.
    Wildcard,
    /// 3: the ACME certificate for the name.
    Acme,
    /// 4: `default.crt`.
    Default,
    /// 4/5: `default.crt`, when it is the self-signed one clace made.
    SelfSigned,
}

impl Step {
    /// The name used by `clace certs --name` (interface §6).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Challenge => "challenge",
            Step::FileName => "file-name",
            Step::San => "san",
            Step::Wildcard => "wildcard",
            Step::Acme => "acme",
            Step::Default => "default",
            Step::SelfSigned => "self-signed",
        }
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone)]
pub struct Selection {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// The pair it comes from; `None` for a challenge certificate.
    pub pair: Option<Arc<Pair>>,
    /// The step that chose it.
    pub step: Step,
}

/// An immutable index of the loaded pairs. See the module documentation.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Pairs from `cert_location`, sorted by stem.
    files: Vec<Arc<Pair>>,
    /// Pairs from the ACME storage, sorted by stem.
    acme: Vec<Arc<Pair>>,
    /// Step 2a: normalised stem -> indexes into `files`.
    by_stem: HashMap<String, Vec<usize>>,
    /// Step 2b: exact DNS SAN -> indexes into `files`.
    by_san: HashMap<String, Vec<usize>>,
    /// Step 2c: the part after `*.` of a wildcard SAN -> indexes into `files`.
    by_wildcard: HashMap<String, Vec<usize>>,
    /// Step 3: DNS SAN -> indexes into `acme`.
    acme_by_name: HashMap<String, Vec<usize>>,
    /// Step 1: normalised name -> challenge certificate.
    challenges: HashMap<String, Arc<CertifiedKey>>,
    /// Step 4: index of `default` in `files`.
    default: Option<usize>,
    /// `enable_cert_lookup`: whether step 2 runs.
    lookup_enabled: bool,
}

impl Snapshot {
    /// A snapshot with no certificate at all: every selection is `None`, so
    /// handshakes fail until the cert store publishes a real one.
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    /// Builds the index.
    ///
    /// Every candidate list is sorted once here by (later `not_after` first,
    /// then stem, then position), so that a selection only has to walk a list
    /// until the first pair that is valid now, and the result never depends
    /// on the order the pairs were given in.
    pub fn build(
        files: Vec<Arc<Pair>>,
        acme: Vec<Arc<Pair>>,
        challenges: HashMap<String, Arc<CertifiedKey>>,
        lookup_enabled: bool,
    ) -> Snapshot {
        let mut files = files;
        let mut acme = acme;
        sort_pairs(&mut files);
        sort_pairs(&mut acme);

        let mut by_stem: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_san: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, pair) in files.iter().enumerate() {
            // A stem that is not a host name (`my cert`) can never be asked
            // for, so it is simply not indexed.
            if let Some(stem) = normalize(&pair.stem) {
                push_unique(&mut by_stem, stem.into_owned(), i);
            }
            for san in &pair.names {
                match san.strip_prefix("*.") {
                    Some(suffix) => {
                        if let Some(suffix) = normalize(suffix) {
                            push_unique(&mut by_wildcard, suffix.into_owned(), i);
                        }
                    }
                    None => {
                        if let Some(name) = normalize(san) {
                            push_unique(&mut by_san, name.into_owned(), i);
                        }
                    }
                }
            }
        }

        // ACME certificates are never wildcards (TLS-ALPN-01 cannot validate
        // them, interface §9), so exact names are all there is to index.
        let mut acme_by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, pair) in acme.iter().enumerate() {
            for san in &pair.names {
                if let Some(name) = normalize(san) {
                    push_unique(&mut acme_by_name, name.into_owned(), i);
                }
            }
        }

        for map in [&mut by_stem, &mut by_san, &mut by_wildcard] {
            for list in map.values_mut() {
                sort_candidates(list, &files);
            }
        }
        for list in acme_by_name.values_mut() {
            sort_candidates(list, &acme);
        }

        let challenges = challenges
            .into_iter()
            .filter_map(|(name, key)| normalize(&name).map(|n| (n.into_owned(), key)))
            .collect();
        // Sorted by stem, so the first `default` is the only one unless the
        // caller passed two (it does not: file names are unique in a folder).
        let default = files.iter().position(|p| p.stem == DEFAULT_STEM);

        Snapshot {
            files,
            acme,
            by_stem,
            by_san,
            by_wildcard,
            acme_by_name,
            challenges,
            default,
            lookup_enabled,
        }
    }

    /// Chooses the certificate for a handshake, following interface §4 in
    /// order: challenge, `cert_location` lookup, ACME, default.
    ///
    /// `sni` is the raw server name (normalised here; an invalid one counts
    /// as no name), `alpn_acme` whether the client offered `acme-tls/1`, and
    /// `now` Unix seconds. A step-2 candidate that is not valid now is served
    /// only when no valid step-2 or step-3 certificate exists for the name: an
    /// "expired" error in the browser tells the operator what is wrong, a
    /// name mismatch on the default would not. `None` only when there is
    /// nothing at all to serve (no default).
    pub fn select(&self, sni: Option<&str>, alpn_acme: bool, now: i64) -> Option<Selection> {
        if let Some(name) = sni.and_then(normalize) {
            let name: &str = &name;
            if alpn_acme {
                // Without a pending challenge an `acme-tls/1` client is an
                // ordinary one: the handshake goes on with the normal choice.
                if let Some(certified) = self.challenges.get(name) {
                    return Some(Selection {
                        certified: Arc::clone(certified),
                        pair: None,
                        step: Step::Challenge,
                    });
                }
            }
            let mut stale = None;
            if self.lookup_enabled {
                // clace's own self-signed default lists the host name among
                // its SANs; it never shadows a managed certificate for it.
                if let Some((pair, step)) = self.file_candidate(name, now).filter(|(p, _)| {
                    p.source != Source::SelfSigned || !self.has_valid_acme(name, now)
                }) {
                    if pair.validity(now) == Validity::Valid {
                        return Some(selection(pair, step));
                    }
                    stale = Some((pair, step));
                }
            }
            if let Some(pair) = self.acme_candidate(name, now) {
                if stale.is_none() || pair.validity(now) == Validity::Valid {
                    return Some(selection(pair, Step::Acme));
                }
            }
            if let Some((pair, step)) = stale {
                return Some(selection(pair, step));
            }
        }
        let pair = self.default_pair()?;
        let step = if pair.source == Source::SelfSigned {
            Step::SelfSigned
        } else {
            Step::Default
        };
        Some(selection(pair, step))
    }

    /// The best step-2 candidate for an already normalised `name`, whether
    /// or not lookup is enabled (the ACME issuer asks this to skip names a
    /// file already covers): a valid candidate beats an invalid one, then 2a
    /// beats 2b beats 2c, then the later `not_after`, then the stem.
    pub fn file_candidate(&self, name: &str, now: i64) -> Option<(&Arc<Pair>, Step)> {
        let lists = [
            (self.by_stem.get(name), Step::FileName),
            (self.by_san.get(name), Step::San),
            (
                name.split_once('.')
                    .and_then(|(_, parent)| self.by_wildcard.get(parent)),
                Step::Wildcard,
            ),
        ];
        // Each list is already in preference order, so the first valid pair
        // of the first list that has one is the answer...
        for (list, step) in &lists {
            if let Some(pair) = list
                .iter()
                .flat_map(|l| l.iter())
                .map(|&i| &self.files[i])
                .find(|p| p.validity(now) == Validity::Valid)
            {
                return Some((pair, *step));
            }
        }
        // ...and, if none is valid, the head of the first non-empty list.
        lists.iter().find_map(|(list, step)| {
            list.and_then(|l| l.first())
                .map(|&i| (&self.files[i], *step))
        })
    }

    /// The ACME pair for an already normalised `name`: a valid one if any,
    /// the one expiring last among valid ones, else the latest to expire.
    pub fn acme_candidate(&self, name: &str, now: i64) -> Option<&Arc<Pair>> {
        let list = self.acme_by_name.get(name)?;
        let mut pairs = list.iter().map(|&i| &self.acme[i]);
        pairs
            .clone()
            .find(|p| p.validity(now) == Validity::Valid)
            .or_else(|| pairs.next())
    }

    /// Whether a valid ACME certificate exists for `name` now.
    fn has_valid_acme(&self, name: &str, now: i64) -> bool {
        self.acme_candidate(name, now)
            .is_some_and(|p| p.validity(now) == Validity::Valid)
    }

    /// The pair named `default`, if loaded.
    pub fn default_pair(&self) -> Option<&Arc<Pair>> {
        self.default.and_then(|i| self.files.get(i))
    }

    /// Whether a challenge certificate is pending for `name`.
    pub fn has_challenge(&self, name: &str) -> bool {
        normalize(name).is_some_and(|n| self.challenges.contains_key(n.as_ref()))
    }

    /// Whether step 2 runs (`enable_cert_lookup`).
    pub fn lookup_enabled(&self) -> bool {
        self.lookup_enabled
    }

    /// The number of pairs (files and ACME; challenges are not counted).
    pub fn len(&self) -> usize {
        self.files.len() + self.acme.len()
    }

    /// Whether there is no pair at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pair: the files sorted by stem, then the ACME pairs.
    pub fn pairs(&self) -> impl Iterator<Item = &Arc<Pair>> {
        self.files.iter().chain(self.acme.iter())
    }

    /// The pairs from `cert_location`, sorted by stem.
    pub fn files(&self) -> &[Arc<Pair>] {
        &self.files
    }

    /// The ACME pairs, sorted by stem.
    pub fn acme(&self) -> &[Arc<Pair>] {
        &self.acme
    }
}

fn selection(pair: &Arc<Pair>, step: Step) -> Selection {
    Selection {
        certified: Arc::clone(&pair.certified),
        pair: Some(Arc::clone(pair)),
        step,
    }
}

fn push_unique(map: &mut HashMap<String, Vec<usize>>, key: String, i: usize) {
    let list = map.entry(key).or_default();
    // Pairs are visited in index order, so a repeat is always the last entry.
    if list.last() != Some(&i) {
        list.push(i);
    }
}

fn sort_pairs(pairs: &mut [Arc<Pair>]) {
    // Stable, and the paths break ties between equal stems, so the order does
    // not depend on the order of directory entries.
    pairs.sort_by(|a, b| {
        a.stem
            .cmp(&b.stem)
            .then_with(|| a.cert_path.cmp(&b.cert_path))
    });
}

fn sort_candidates(list: &mut [usize], pairs: &[Arc<Pair>]) {
    list.sort_by(|&a, &b| {
        let (pa, pb) = (&pairs[a], &pairs[b]);
        pb.not_after
            .cmp(&pa.not_after)
            .then_with(|| pa.stem.cmp(&pb.stem))
            .then_with(|| a.cmp(&b))
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::pair::testing::*;
    use super::*;

    const PAST: i64 = NOW - 2 * YEAR;
    const EXPIRED: i64 = NOW - YEAR;

    fn snap(files: Vec<Arc<Pair>>, acme: Vec<Arc<Pair>>) -> Snapshot {
        Snapshot::build(files, acme, HashMap::new(), true)
    }

    fn chosen(s: &Snapshot, name: &str) -> (String, Step) {
        let sel = s.select(Some(name), false, NOW).unwrap();
        (sel.pair.unwrap().stem.clone(), sel.step)
    }

    fn expired(stem: &str, names: &[&str]) -> Arc<Pair> {
        pair_at(stem, names, PAST, EXPIRED, Source::File)
    }

    fn future(stem: &str, names: &[&str]) -> Arc<Pair> {
        pair_at(stem, names, NOW + YEAR, NOW + 2 * YEAR, Source::File)
    }

    #[test]
    fn step_names() {
        let all = [
            Step::Challenge,
            Step::FileName,
            Step::San,
            Step::Wildcard,
            Step::Acme,
            Step::Default,
            Step::SelfSigned,
        ];
        let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "challenge",
                "file-name",
                "san",
                "wildcard",
                "acme",
                "default",
                "self-signed"
            ]
        );
        for step in all {
            assert_eq!(
                serde_json::to_string(&step).unwrap(),
                format!("\"{}\"", step.as_str())
            );
        }
    }

    #[test]
    fn empty_snapshot_selects_nothing() {
        let s = Snapshot::empty();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert!(s.select(Some("a.test"), false, NOW).is_none());
        assert!(s.select(None, true, NOW).is_none());
        assert!(s.default_pair().is_none());
    }

    #[test]
    fn file_name_then_san_then_wildcard() {
        let s = snap(
            vec![
                pair("a.test", &["other.test"]),
                pair("san", &["a.test", "b.test"]),
                pair("wild", &["*.test", "*.example.com"]),
                pair("default", &["localhost"]),
            ],
            vec![],
        );
        // 2a even though the pair's SANs do not list the name (as Clace does).
        assert_eq!(chosen(&s, "a.test"), ("a.test".into(), Step::FileName));
        assert_eq!(chosen(&s, "b.test"), ("san".into(), Step::San));
        assert_eq!(chosen(&s, "c.test"), ("wild".into(), Step::Wildcard));
        assert_eq!(chosen(&s, "x.example.com"), ("wild".into(), Step::Wildcard));
        assert_eq!(chosen(&s, "other.test"), ("a.test".into(), Step::San));
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let s = snap(
            vec![
                pair("wild", &["*.example.com"]),
                pair("default", &["localhost"]),
            ],
            vec![],
        );
        assert_eq!(chosen(&s, "a.example.com"), ("wild".into(), Step::Wildcard));
        assert_eq!(chosen(&s, "example.com"), ("default".into(), Step::Default));
        assert_eq!(
            chosen(&s, "a.b.example.com"),
            ("default".into(), Step::Default)
        );
        assert_eq!(chosen(&s, "com"), ("default".into(), Step::Default));
    }

    #[test]
    fn sni_is_normalised() {
        let s = snap(
            vec![
                pair("a.test", &[]),
                pair("san", &["b.test"]),
                pair("default", &[]),
            ],
            vec![],
        );
        assert_eq!(chosen(&s, "A.TEST."), ("a.test".into(), Step::FileName));
        assert_eq!(chosen(&s, "B.Test"), ("san".into(), Step::San));
        // An upper-case file name still matches.
        let s = snap(vec![pair("Upper.Test", &[])], vec![]);
        assert_eq!(
            chosen(&s, "upper.test"),
            ("Upper.Test".into(), Step::FileName)
        );
    }

    #[test]
    fn invalid_sni_is_no_name() {
        let s = snap(
            vec![pair("..", &[]), pair("a", &["a"]), pair("default", &[])],
            vec![],
        );
        for name in ["../a", "..", "a/..", "", "a..", "*.a"] {
            assert_eq!(
                chosen(&s, name),
                ("default".into(), Step::Default),
                "{name}"
            );
        }
        assert_eq!(s.select(None, false, NOW).unwrap().step, Step::Default);
    }

    #[test]
    fn valid_beats_invalid_across_steps() {
        // An expired 2a loses to a valid 2b, which loses to nothing valid in
        // 2a; an expired 2b loses to a valid 2c.
        let s = snap(
            vec![
                expired("a.test", &[]),
                pair("san", &["a.test"]),
                expired("san-old", &["b.test"]),
                pair("wild", &["*.test"]),
                future("c.test", &[]),
            ],
            vec![],
        );
        assert_eq!(chosen(&s, "a.test"), ("san".into(), Step::San));
        assert_eq!(chosen(&s, "b.test"), ("wild".into(), Step::Wildcard));
        // Not yet valid counts as invalid, too.
        assert_eq!(chosen(&s, "c.test"), ("wild".into(), Step::Wildcard));
    }

    #[test]
    fn among_valid_a_beats_b_beats_c_even_if_it_expires_sooner() {
        let s = snap(
            vec![
                pair_at("a.test", &[], NOW - 10, NOW + 10, Source::File),
                pair_at(
                    "san",
                    &["a.test", "b.test"],
                    NOW - 10,
                    NOW + 5 * YEAR,
                    Source::File,
                ),
                pair_at("wild", &["*.test"], NOW - 10, NOW + 9 * YEAR, Source::File),
            ],
            vec![],
        );
        assert_eq!(chosen(&s, "a.test"), ("a.test".into(), Step::FileName));
        assert_eq!(chosen(&s, "b.test"), ("san".into(), Step::San));
    }

    #[test]
    fn later_expiry_wins_within_a_step() {
        let s = snap(
            vec![
                pair_at(
                    "one",
                    &["a.test", "*.w.test"],
                    NOW - 10,
                    NOW + YEAR,
                    Source::File,
                ),
                pair_at(
                    "two",
                    &["a.test", "*.w.test"],
                    NOW - 10,
                    NOW + 2 * YEAR,
                    Source::File,
                ),
                pair_at(
                    "three",
                    &["a.test", "*.w.test"],
                    NOW - 10,
                    NOW + YEAR / 2,
                    Source::File,
                ),
            ],
            vec![],
        );
        assert_eq!(chosen(&s, "a.test"), ("two".into(), Step::San));
        assert_eq!(chosen(&s, "x.w.test"), ("two".into(), Step::Wildcard));
    }

    #[test]
    fn equal_expiry_ties_break_by_stem_whatever_the_input_order() {
        let (cert, key) = make_pem(&["a.test"], NOW - 10, NOW + 10, "same");
        let make = |stem: &str| {
            Arc::new(
                super::super::pair::parse_pair(stem, cert.as_bytes(), key.as_bytes(), Source::File)
                    .unwrap(),
            )
        };
        let forward = snap(vec![make("b"), make("c"), make("a")], vec![]);
        let backward = snap(vec![make("a"), make("c"), make("b")], vec![]);
        assert_eq!(chosen(&forward, "a.test"), ("a".into(), Step::San));
        assert_eq!(chosen(&backward, "a.test"), ("a".into(), Step::San));
    }

    #[test]
    fn among_invalid_a_beats_b_then_later_expiry() {
        let s = snap(
            vec![
                pair_at("a.test", &[], PAST, EXPIRED, Source::File),
                pair_at(
                    "san",
                    &["a.test", "b.test"],
                    PAST,
                    EXPIRED + 100,
                    Source::File,
                ),
                pair_at("san2", &["b.test"], PAST, EXPIRED + 200, Source::File),
                pair_at("default", &[], NOW - 10, NOW + 10, Source::File),
            ],
            vec![],
        );
        // No valid step-2 or step-3 pair: the expired one is served rather
        // than the (valid) default.
        assert_eq!(chosen(&s, "a.test"), ("a.test".into(), Step::FileName));
        assert_eq!(chosen(&s, "b.test"), ("san2".into(), Step::San));
    }

    #[test]
    fn acme_after_files_and_before_default() {
        let s = snap(
            vec![pair("file", &["a.test"]), pair("default", &[])],
            vec![
                pair_at("a.test", &["a.test"], NOW - 10, NOW + YEAR, Source::Acme),
                pair_at("b.test", &["b.test"], NOW - 10, NOW + YEAR, Source::Acme),
            ],
        );
        assert_eq!(chosen(&s, "a.test"), ("file".into(), Step::San));
        assert_eq!(chosen(&s, "b.test"), ("b.test".into(), Step::Acme));
        assert_eq!(chosen(&s, "c.test"), ("default".into(), Step::Default));
    }

    #[test]
    fn the_self_signed_default_never_shadows_a_managed_certificate() {
        // clace's default lists the machine's host name; so does the ACME
        // certificate of a server named after its public name.
        let s = snap(
            vec![pair_at(
                "default",
                &["localhost", "host.example"],
                NOW - 10,
                NOW + YEAR,
                Source::SelfSigned,
            )],
            vec![pair_at(
                "host.example",
                &["host.example"],
                NOW - 10,
                NOW + YEAR,
                Source::Acme,
            )],
        );
        assert_eq!(
            chosen(&s, "host.example"),
            ("host.example".into(), Step::Acme)
        );
        // Without an ACME certificate, the default is still found by SAN.
        assert_eq!(chosen(&s, "localhost"), ("default".into(), Step::San));
    }

    #[test]
    fn valid_acme_beats_invalid_file() {
        let s = snap(
            vec![expired("a.test", &["a.test"]), pair("default", &[])],
            vec![pair_at(
                "acme-a",
                &["a.test"],
                NOW - 10,
                NOW + YEAR,
                Source::Acme,
            )],
        );
        assert_eq!(chosen(&s, "a.test"), ("acme-a".into(), Step::Acme));
    }

    #[test]
    fn invalid_file_beats_invalid_acme() {
        let s = snap(
            vec![expired("a.test", &[]), pair("default", &[])],
            vec![pair_at("acme-a", &["a.test"], PAST, EXPIRED, Source::Acme)],
        );
        assert_eq!(chosen(&s, "a.test"), ("a.test".into(), Step::FileName));
    }

    #[test]
    fn invalid_acme_alone_is_still_served() {
        let s = snap(
            vec![pair("default", &[])],
            vec![pair_at("acme-a", &["a.test"], PAST, EXPIRED, Source::Acme)],
        );
        assert_eq!(chosen(&s, "a.test"), ("acme-a".into(), Step::Acme));
    }

    #[test]
    fn acme_prefers_valid_then_later_expiry() {
        let s = snap(
            vec![],
            vec![
                pair_at("old", &["a.test"], PAST, EXPIRED, Source::Acme),
                pair_at("new", &["a.test"], NOW - 10, NOW + YEAR, Source::Acme),
                pair_at(
                    "future",
                    &["a.test"],
                    NOW + 10,
                    NOW + 2 * YEAR,
                    Source::Acme,
                ),
            ],
        );
        assert_eq!(chosen(&s, "a.test"), ("new".into(), Step::Acme));
    }

    #[test]
    fn lookup_disabled_skips_step_two() {
        let files = vec![pair("a.test", &["a.test"]), pair("default", &[])];
        let s = Snapshot::build(
            files.clone(),
            vec![pair_at(
                "acme-b",
                &["b.test"],
                NOW - 10,
                NOW + YEAR,
                Source::Acme,
            )],
            HashMap::new(),
            false,
        );
        assert!(!s.lookup_enabled());
        assert_eq!(chosen(&s, "a.test"), ("default".into(), Step::Default));
        assert_eq!(chosen(&s, "b.test"), ("acme-b".into(), Step::Acme));
        // The ACME issuer can still ask what a file would cover.
        assert!(s.file_candidate("a.test", NOW).is_some());
    }

    #[test]
    fn challenge_only_with_acme_alpn() {
        let challenge = pair("challenge", &["a.test"]).certified.clone();
        let mut challenges = HashMap::new();
        challenges.insert("A.Test".to_owned(), Arc::clone(&challenge));
        let s = Snapshot::build(
            vec![pair("a.test", &[]), pair("default", &[])],
            vec![],
            challenges,
            true,
        );
        assert!(s.has_challenge("a.test"));
        let sel = s.select(Some("a.test"), true, NOW).unwrap();
        assert_eq!(sel.step, Step::Challenge);
        assert!(sel.pair.is_none());
        assert!(Arc::ptr_eq(&sel.certified, &challenge));
        // Without acme-tls/1 the challenge is never served.
        assert_eq!(chosen(&s, "a.test"), ("a.test".into(), Step::FileName));
        // acme-tls/1 for a name without a challenge falls through.
        let sel = s.select(Some("b.test"), true, NOW).unwrap();
        assert_eq!(sel.step, Step::Default);
        // No name, no challenge.
        assert_eq!(s.select(None, true, NOW).unwrap().step, Step::Default);
    }

    #[test]
    fn default_and_self_signed_default() {
        let s = snap(vec![pair("default", &["localhost"])], vec![]);
        assert_eq!(s.select(None, false, NOW).unwrap().step, Step::Default);
        let s = snap(
            vec![pair_at(
                "default",
                &["localhost"],
                NOW - 10,
                NOW + 10,
                Source::SelfSigned,
            )],
            vec![],
        );
        assert_eq!(
            s.select(Some("x.test"), false, NOW).unwrap().step,
            Step::SelfSigned
        );
        // An expired default is still served: there is nothing else.
        let s = snap(vec![expired("default", &[])], vec![]);
        assert_eq!(chosen(&s, "x.test"), ("default".into(), Step::Default));
        // No default and no match: nothing.
        let s = snap(vec![pair("a.test", &[])], vec![]);
        assert!(s.select(Some("x.test"), false, NOW).is_none());
        assert!(s.select(None, false, NOW).is_none());
    }

    #[test]
    fn selection_carries_the_pair_key() {
        let a = pair("a.test", &[]);
        let s = snap(vec![Arc::clone(&a)], vec![]);
        let sel = s.select(Some("a.test"), false, NOW).unwrap();
        assert!(Arc::ptr_eq(&sel.certified, &a.certified));
        assert!(Arc::ptr_eq(sel.pair.as_ref().unwrap(), &a));
    }

    #[test]
    fn accessors() {
        let s = snap(
            vec![pair("b", &[]), pair("default", &[]), pair("a", &[])],
            vec![pair_at("z", &["z.test"], NOW - 10, NOW + 10, Source::Acme)],
        );
        assert_eq!(s.len(), 4);
        assert!(!s.is_empty());
        let stems: Vec<_> = s.pairs().map(|p| p.stem.as_str()).collect();
        assert_eq!(stems, ["a", "b", "default", "z"]);
        assert_eq!(s.default_pair().unwrap().stem, "default");
        assert_eq!(s.files().len(), 3);
        assert_eq!(s.acme().len(), 1);
    }
}
