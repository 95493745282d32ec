//! Counters for `/_clace/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::certs::snapshot::Snapshot;
use crate::health::{ActorName, Health};

/// Counters written by the cert store and the ACME issuer (the resolver
/// counts handshakes).
#[derive(Debug, Default)]
pub struct Metrics {
    pub reloads_ok: AtomicU64,
    pub reloads_rejected: AtomicU64,
    pub acme_orders_ok: AtomicU64,
    pub acme_orders_failed: AtomicU64,
    /// Managed name -> Unix time of its next order or renewal.
    acme_next: Mutex<BTreeMap<String, i64>>,
    /// Requests and connections refused by a limit (`clace_refused_total`).
    pub refused: crate::limits::Refused,
}

impl Metrics {
    pub fn acme_order(&self, ok: bool) {
        let counter = if ok {
            &self.acme_orders_ok
        } else {
            &self.acme_orders_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_acme_next_attempt(&self, name: &str, at: i64) {
        self.acme_next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), at);
    }

    /// Forgets the names that are no longer managed.
    pub fn retain_acme_names(&self, names: &[String]) {
        self.acme_next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|n, _| names.contains(n));
    }

    pub fn reload_ok(&self) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reload_rejected(&self) {
        self.reloads_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Every series in the Prometheus text format: these counters, the
    /// not-after of each served certificate, and each actor's restarts.
    pub fn render(&self, snapshot: &Snapshot, health: &Health, handshakes: u64) -> String {
        let mut out = String::new();
        // One sample per (name, source): the latest expiry among the pairs
        // that carry the name, so the series stay unique.
        let mut not_after: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for pair in snapshot.pairs() {
            let source = pair.source.as_str();
            for name in &pair.names {
                let e = not_after
                    .entry((name.clone(), source))
                    .or_insert(pair.not_after);
                *e = (*e).max(pair.not_after);
            }
        }
        out.push_str("# HELP clace_tls_cert_not_after_seconds Unix time of the not-after of each served certificate, by DNS name.\n");
        out.push_str("# TYPE clace_tls_cert_not_after_seconds gauge\n");
        for ((name, source), t) in &not_after {
            let _ = writeln!(
                out,
                "clace_tls_cert_not_after_seconds{{name=\"{}\",source=\"{source}\"}} {t}",
                escape(name)
            );
        }
        out.push_str("# HELP clace_tls_handshakes_total TLS handshakes for which a certificate was chosen.\n");
        out.push_str("# TYPE clace_tls_handshakes_total counter\n");
        let _ = writeln!(out, "clace_tls_handshakes_total {handshakes}");
        out.push_str(
            "# HELP clace_cert_reloads_total Certificate pairs loaded from disk, by result.\n",
        );
        out.push_str("# TYPE clace_cert_reloads_total counter\n");
        let _ = writeln!(
            out,
            "clace_cert_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "clace_cert_reloads_total{{result=\"rejected\"}} {}",
            self.reloads_rejected.load(Ordering::Relaxed)
        );
        out.push_str("# HELP clace_acme_orders_total ACME orders, by result.\n");
        out.push_str("# TYPE clace_acme_orders_total counter\n");
        for (result, counter) in [
            ("ok", &self.acme_orders_ok),
            ("failed", &self.acme_orders_failed),
        ] {
            let _ = writeln!(
                out,
                "clace_acme_orders_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP clace_acme_next_attempt_seconds Unix time of the next ACME order or renewal of each managed name.\n");
        out.push_str("# TYPE clace_acme_next_attempt_seconds gauge\n");
        for (name, at) in self
            .acme_next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "clace_acme_next_attempt_seconds{{name=\"{}\"}} {at}",
                escape(name)
            );
        }
        out.push_str("# HELP clace_actor_restarts_total Restarts of each actor.\n");
        out.push_str("# TYPE clace_actor_restarts_total counter\n");
        for actor in ActorName::ALL {
            let _ = writeln!(
                out,
                "clace_actor_restarts_total{{actor=\"{}\"}} {}",
                actor.as_str(),
                health.restarts(actor)
            );
        }
        self.refused.render(&mut out);
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
