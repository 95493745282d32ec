//! When to renew and when to try again: pure functions of times, so that
//! the rules of interface §9 are tested without a CA or a clock.
//!
//! Times are Unix seconds (`i64`), as everywhere in the cert store.

use std::time::Duration;

/// The first wait after a failed order.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(60);
/// The longest wait between two attempts for one name.
pub const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);

/// When a certificate valid from `not_before` to `not_after` is renewed
/// without renewal information: when a third of its lifetime is left.
pub fn one_third_left(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_after - lifetime / 3
}

/// A time inside an ARI suggested window (RFC 9773 §4.2): uniformly at
/// random between its start and end, `random` being any 64 random bits; a
/// window that has started already is "now". An inverted or empty window
/// gives its start.
pub fn in_window(start: i64, end: i64, now: i64, random: u64) -> i64 {
    let start = start.max(now);
    if end <= start {
        return start;
    }
    let span = u64::try_from(end - start).unwrap_or(0);
    start + i64::try_from(random % (span + 1)).unwrap_or(0)
}

/// When to try again after `failures` failed attempts in a row (1 for the
/// first failure): one minute doubling up to six hours, and never before
/// the CA's `Retry-After` (`retry_after`, Unix seconds).
pub fn next_attempt(now: i64, failures: u32, retry_after: Option<i64>) -> i64 {
    let exponent = failures.saturating_sub(1).min(20);
    let wait = BACKOFF_FIRST
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX);
    let at = now + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2);
    match retry_after {
        Some(ra) => at.max(ra),
        None => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_with_a_third_of_the_lifetime_left() {
        // 90 days: renew 30 days before the end.
        let day = 86_400;
        assert_eq!(one_third_left(0, 90 * day), 60 * day);
        // A 60-second certificate renews 20 s before it expires.
        assert_eq!(one_third_left(1000, 1060), 1040);
        // An inverted window renews at its end (at once, in practice).
        assert_eq!(one_third_left(10, 5), 5);
    }

    #[test]
    fn ari_time_is_inside_the_window_and_not_in_the_past() {
        for r in [0u64, 1, 7, 99, u64::MAX] {
            let t = in_window(1000, 2000, 500, r);
            assert!((1000..=2000).contains(&t), "{t}");
        }
        // The window has started: between now and its end.
        for r in [0u64, 3, 1_000_000] {
            let t = in_window(1000, 2000, 1500, r);
            assert!((1500..=2000).contains(&t), "{t}");
        }
        // Over: now.
        assert_eq!(in_window(1000, 2000, 3000, 5), 3000);
        assert_eq!(in_window(2000, 1000, 0, 5), 2000);
    }

    #[test]
    fn backoff_doubles_from_a_minute_to_six_hours() {
        assert_eq!(next_attempt(0, 1, None), 60);
        assert_eq!(next_attempt(0, 2, None), 120);
        assert_eq!(next_attempt(0, 3, None), 240);
        assert_eq!(next_attempt(0, 9, None), 60 * 256);
        assert_eq!(next_attempt(0, 10, None), 6 * 3600);
        assert_eq!(next_attempt(0, 500, None), 6 * 3600);
        assert_eq!(next_attempt(100, 0, None), 160);
    }

    #[test]
    fn never_sooner_than_retry_after() {
        assert_eq!(next_attempt(0, 1, Some(3600)), 3600);
        // A Retry-After sooner than the backoff changes nothing.
        assert_eq!(next_attempt(0, 3, Some(10)), 240);
    }
}
