//! The actors of the clace daemon.
//!
//! # Code map
//!
//! The actors, each a module of its own: [`listener`] (HTTP and HTTPS),
//! [`certstore`], [`watcher`], [`acme`] (the issuer), and [`supervisor`],
//! the daemon that starts them and restarts them one at a time.
//!
//! - [`settings`]: the checked settings the actors run on (made by the binary
//!   from the configuration file).
//! - [`supervisor`]: starts the actors in order, restarts one that stops
//!   (with backoff) or is asked to restart, and stops them all gracefully.
//! - [`listener`]: the HTTP and HTTPS listener actors; each owns one
//!   actix-web server and the socket it was bound on.
//! - [`certstore`]: the cert store actor: owns every pair (files, ACME,
//!   challenges) and publishes the snapshot.
//! - [`router`]: the request handling both listeners share: routes
//!   (static files, reverse proxy), redirects and the `/_clace/` endpoints.
//! - [`admin_socket`]: the `/_clace/` endpoints on `$CL_HOME/run/clace.sock`
//!   (mode 0600), whose peers are trusted.
//! - [`certs`]: the certificate logic the actors use: pairs, the immutable
//!   snapshot and the lock-free resolver, the self-signed default, the
//!   inventory, whole-file writes.
//! - [`watcher`]: the filesystem watcher actor (notify, with polling).
//! - [`acme`]: the ACME issuer actor (instant-acme, TLS-ALPN-01,
//!   certmagic's storage layout).
//! - [`keeper`]: keeps each actor alive across panics (restart with
//!   backoff, `failed` after too many in a row), and the panic hook.
//! - [`health`]: the shared table of actor states.
//! - [`limits`]: what one client may cost (head size, static bodies,
//!   connections per IP) and the count of refusals.
//! - [`logonce`]: warnings caused by requests, at most once per cause per
//!   minute.
//! - [`messages`]: every message the actors exchange.
//!
//! # Invariants
//!
//! - Only the cert store publishes snapshots; the resolver never blocks,
//!   locks, sends a message or touches the disk.
//! - A pair is published only whole and valid; a bad file never displaces a
//!   good certificate.
//! - A restart of one actor never touches the others.
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin_socket;
pub mod batched_writes;
pub mod certs;
pub mod certstore;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod health;
pub mod keeper;
pub mod limits;
pub mod listener;
pub mod logonce;
pub mod messages;
pub mod metrics;
#[cfg(test)]
mod proptest_config;
pub mod router;
pub mod settings;
pub mod supervisor;
pub mod watch_barrier;
pub mod watcher;

/// Fault injection hook (see `fault`): panics when the actor was armed by a
/// test; nothing at all in a build without the `fault-injection` feature.
#[inline(always)]
pub fn fault_point(actor: health::ActorName) {
    #[cfg(feature = "fault-injection")]
    fault::check(actor);
    #[cfg(not(feature = "fault-injection"))]
    let _ = actor;
}
