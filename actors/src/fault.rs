//! Fault injection for the supervision tests, compiled only with the
//! `fault-injection` feature (never in a release build: `make test` checks
//! that the release binary holds no trace of [`MARKER`]).
//!
//! `POST /_clace/actors/{name}/panic?times=N` (or `times=always`, loopback
//! only) arms the actor: it panics in its next `Restart` handler, which the
//! endpoint then sends, and in its `started` hook, so that an actor armed
//! for every message panics again at each restart until it is given up.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::health::ActorName;

/// A string found in the binary only when fault injection is compiled in.
pub const MARKER: &str = "clace-fault-injection-armed";

/// `u32::MAX`: panic every time.
pub const ALWAYS: u32 = u32::MAX;

static ARMED: [AtomicU32; 5] = [const { AtomicU32::new(0) }; 5];

fn slot(actor: ActorName) -> &'static AtomicU32 {
    let i = ActorName::ALL.iter().position(|a| *a == actor).unwrap_or(0);
    &ARMED[i]
}

/// Arms `actor` for `times` panics (`ALWAYS` for every one).
pub fn arm(actor: ActorName, times: u32) {
    log::warn!(target: "clace::supervisor", "{MARKER}: the {} actor will panic {} time(s)", actor.as_str(), if times == ALWAYS { "every".to_string() } else { times.to_string() });
    slot(actor).store(times, Ordering::SeqCst);
}

/// Panics if `actor` is armed.
pub fn check(actor: ActorName) {
    let s = slot(actor);
    let left = s.load(Ordering::SeqCst);
    if left == 0 {
        return;
    }
    if left != ALWAYS {
        s.store(left - 1, Ordering::SeqCst);
    }
    panic!("injected panic in the {} actor", actor.as_str());
}
