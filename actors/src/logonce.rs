//! Log lines that anonymous traffic cannot multiply: a warning caused by a
//! request (a static route whose folder became unusable, a connection over
//! the per-IP bound) is logged at most once per cause per minute; the next
//! one after the minute says how many were held back in between.
//!
//! A cause is a short key the caller chooses from its configuration (the
//! route's folder), never from the request, so the table stays as small as
//! the configuration; it is pruned of quiet causes if it grows anyway.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per cause in this window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Causes kept before the quiet ones are pruned.
const MAX_CAUSES: usize = 1024;

static GLOBAL: LazyLock<LogOnce> = LazyLock::new(|| LogOnce::new(WINDOW));

/// `log::warn!` at most once per `cause` per minute (see the module doc).
pub fn warn(target: &str, cause: &str, message: &str) {
    if let Some(line) = GLOBAL.admit(cause, Instant::now()) {
        log::warn!(target: target, "{message}{line}");
    }
}

/// The rate limiter behind [`warn`].
#[derive(Debug)]
pub struct LogOnce {
    window: Duration,
    causes: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    logged_at: Instant,
    held: u64,
}

impl LogOnce {
    pub fn new(window: Duration) -> LogOnce {
        LogOnce {
            window,
            causes: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suffix)` when a line for `cause` may be logged now (the suffix
    /// counts the ones held back since the last line, empty if none);
    /// `None` when it is held back.
    pub fn admit(&self, cause: &str, now: Instant) -> Option<String> {
        let mut causes = self.causes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = causes.get_mut(cause) {
            if now.saturating_duration_since(e.logged_at) < self.window {
                e.held += 1;
                return None;
            }
            let held = std::mem::take(&mut e.held);
            e.logged_at = now;
            return Some(if held == 0 {
                String::new()
            } else {
                format!(
                    " ({held} more like it held back in the last {} s)",
                    self.window.as_secs()
                )
            });
        }
        if causes.len() >= MAX_CAUSES {
            let window = self.window;
            causes.retain(|_, e| now.saturating_duration_since(e.logged_at) < window);
        }
        causes.insert(
            cause.to_owned(),
            Entry {
                logged_at: now,
                held: 0,
            },
        );
        Some(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_cause_per_window_with_the_count_held_back() {
        let limiter = LogOnce::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limiter.admit("a", t0).as_deref(), Some(""));
        for i in 1..=5 {
            assert_eq!(limiter.admit("a", t0 + Duration::from_secs(i)), None);
        }
        // Another cause is not held back by the first one.
        assert_eq!(limiter.admit("b", t0).as_deref(), Some(""));
        let later = t0 + Duration::from_secs(61);
        let line = limiter.admit("a", later).unwrap();
        assert!(line.contains("5 more"), "{line}");
        assert_eq!(limiter.admit("a", later), None);
        assert_eq!(
            limiter
                .admit("a", later + Duration::from_secs(60))
                .as_deref(),
            Some(" (1 more like it held back in the last 60 s)")
        );
    }

    #[test]
    fn the_table_is_pruned_of_quiet_causes() {
        let limiter = LogOnce::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..MAX_CAUSES {
            limiter.admit(&i.to_string(), t0);
        }
        limiter.admit("new", t0 + Duration::from_secs(2));
        assert_eq!(limiter.causes.lock().unwrap().len(), 1);
    }
}
