//! The proptest configuration every randomized test of this crate shares:
//! 2,000 cases, or `PROPTEST_CASES`; no failure files written into the tree
//! (a failure prints its seed, and a found case becomes a regression test).

use proptest::prelude::ProptestConfig;

pub(crate) fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
