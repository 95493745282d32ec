//! The ACME issuer actor (interface §9): decides when each managed name
//! needs an order, runs the orders (concurrently, off its mailbox), and
//! keeps one timer per name for the next renewal or retry.
//!
//! It never touches the snapshot itself: challenge certificates go to the
//! cert store as messages, and issued certificates are written to the
//! storage (certmagic's layout) and then read by the cert store like any
//! other stored certificate. It reads the published snapshot to learn what
//! is served for each name (a file certificate that covers it, the stored
//! ACME certificate and its expiry).
//!
//! - [`names`]: which names are managed.
//! - [`schedule`]: renewal times and backoff, as pure functions.
//! - [`storage`]: the certmagic layout, accounts and atomic writes.
//! - [`order`]: the account and one order with instant-acme.
//! - [`challenge`]: the TLS-ALPN-01 certificate.
//! - [`client`]: the HTTP client under instant-acme (timeouts, Retry-After).
//! - [`cluster`]: instances sharing one storage (heartbeats, challenges
//!   served by all, PostgreSQL's certificates copied locally).

pub mod challenge;
pub mod client;
pub mod cluster;
pub mod names;
pub mod order;
pub mod schedule;
pub mod storage;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::certs::pair::Validity;
use crate::certs::snapshot::Snapshot;
use crate::certstore::CertStore;
use crate::health::{ActorName, ActorState, Health};
use crate::messages::{ReconfigureAcme, Restart, SetChallenge, SnapshotPublished, SubscribeIssuer};
use crate::metrics::Metrics;
use crate::settings::Settings;

use order::{Ca, Issued};
use storage::Storage;

pub(crate) const TARGET: &str = "clace::acme";

/// When the storage (PostgreSQL) cannot be reached, the next attempt.
const STORAGE_RETRY: Duration = Duration::from_secs(5);

/// The longest a timer sleeps before the name is looked at again (tokio
/// timers cannot hold years; a day also catches a clock that jumped).
const MAX_SLEEP: Duration = Duration::from_secs(86_400);

/// What the issuer runs on; `None` from [`AcmeSettings::from_settings`] when
/// `service_email` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub email: String,
    /// The directory URL: `acme_directory_url`, else Let's Encrypt staging
    /// or production by `use_staging`.
    pub directory_url: String,
    pub ca_file: Option<PathBuf>,
    /// The storage folder, or the local copy of what PostgreSQL holds.
    pub storage_location: PathBuf,
    /// `storage_location` when it is a PostgreSQL URL (`$VAR`s expanded).
    pub storage_postgres: Option<String>,
    /// Route domains, then `https.domains`, as configured.
    pub configured: Vec<String>,
    /// The HTTPS port the CA must reach on 443 (`None`: HTTPS disabled).
    pub https_port: Option<u16>,
}

impl AcmeSettings {
    pub fn from_settings(settings: &Settings, https_port: Option<u16>) -> Option<AcmeSettings> {
        let https = &settings.https;
        if !https.acme_enabled() {
            return None;
        }
        let directory_url = if !https.acme_directory_url.is_empty() {
            https.acme_directory_url.clone()
        } else if https.use_staging {
            storage::LETS_ENCRYPT_STAGING.to_string()
        } else {
            storage::LETS_ENCRYPT_PRODUCTION.to_string()
        };
        let configured = settings
            .routes
            .iter()
            .filter_map(|r| r.domain.clone())
            .chain(https.domains.iter().cloned())
            .collect();
        Some(AcmeSettings {
            email: https.service_email.clone(),
            directory_url,
            ca_file: https.acme_ca_file.clone(),
            storage_location: https.storage_location.clone(),
            storage_postgres: https.storage_postgres.clone(),
            configured,
            https_port,
        })
    }

    /// The storage of this CA's certificates and account. With
    /// PostgreSQL this starts a connection: the issuer makes it once.
    pub fn storage(&self) -> Result<Storage, String> {
        match &self.storage_postgres {
            None => Ok(Storage::new(&self.storage_location, &self.directory_url)),
            Some(url) => Ok(Storage::with_backend(
                &self.storage_location,
                &self.directory_url,
                storage::Backend::Postgres(storage::postgres::Postgres::connect(url)?),
            )),
        }
    }

    /// The local folder of this CA's certificates, which the cert store
    /// reads (no connection made).
    pub fn certificates_dir(&self) -> PathBuf {
        Storage::new(&self.storage_location, &self.directory_url).certificates_dir()
    }
}

/// What the issuer knows of one managed name.
#[derive(Default)]
struct NameState {
    /// Failed attempts in a row.
    failures: u32,
    /// Not before this (Unix seconds): the backoff after a failure.
    retry_at: Option<i64>,
    in_flight: bool,
    timer: Option<SpawnHandle>,
    /// The renewal time chosen in the ARI window of this serial.
    ari: Option<(String, i64)>,
    ari_pending: bool,
    /// What the last look said, so that it is logged once.
    covered_by: Option<String>,
}

pub struct AcmeIssuer {
    settings: Option<AcmeSettings>,
    ca: Option<Arc<Ca>>,
    names: Vec<String>,
    states: HashMap<String, NameState>,
    store: Addr<CertStore>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Whether the CA has renewal information (`None`: not known yet).
    ari_supported: Option<bool>,
    look_pending: bool,
    /// This instance's id in the storage.
    instance: String,
    /// The loop of [`cluster::run`] on the current storage.
    cluster: Option<SpawnHandle>,
    /// The storage changed: the loop is started again.
    cluster_stale: bool,
}

impl AcmeIssuer {
    pub fn new(
        settings: Option<AcmeSettings>,
        store: Addr<CertStore>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> AcmeIssuer {
        let mut issuer = AcmeIssuer {
            settings: None,
            ca: None,
            names: Vec::new(),
            states: HashMap::new(),
            store,
            snapshot,
            health,
            metrics,
            ari_supported: None,
            look_pending: false,
            instance: cluster::instance_id(settings.as_ref().and_then(|s| s.https_port)),
            cluster: None,
            cluster_stale: false,
        };
        issuer.apply(settings);
        issuer
    }

    /// Takes new settings: a new CA handle when the CA changed, the names
    /// re-selected (skipped ones logged), health set.
    fn apply(&mut self, settings: Option<AcmeSettings>) {
        let Some(s) = settings else {
            if self.settings.take().is_some() {
                log::info!(target: TARGET, "ACME disabled (no service_email)");
            }
            self.ca = None;
            self.names.clear();
            self.states.clear();
            self.metrics.retain_acme_names(&[]);
            self.health.set(ActorName::Acme, ActorState::Disabled);
            return;
        };
        let same_ca = self.settings.as_ref().is_some_and(|old| {
            (
                &old.directory_url,
                &old.email,
                &old.ca_file,
                &old.storage_location,
                &old.storage_postgres,
            ) == (
                &s.directory_url,
                &s.email,
                &s.ca_file,
                &s.storage_location,
                &s.storage_postgres,
            )
        });
        if !same_ca || self.ca.is_none() {
            match s.storage() {
                Ok(storage) => {
                    self.ca = Some(Arc::new(Ca::new(
                        s.directory_url.clone(),
                        s.email.clone(),
                        storage,
                        s.ca_file.clone(),
                        self.instance.clone(),
                    )));
                }
                Err(e) => {
                    log::error!(target: TARGET, "storage_location: {e}; no certificate can be ordered");
                    self.ca = None;
                }
            }
            self.ari_supported = None;
            self.cluster_stale = true;
        }
        let selection = names::select(s.configured.iter().map(String::as_str));
        for why in &selection.skipped {
            log::warn!(target: TARGET, "{why}");
        }
        if selection.names.is_empty() {
            log::warn!(target: TARGET, "ACME is enabled but no name is managed: add route domains or https.domains");
        }
        self.states.retain(|name, _| selection.names.contains(name));
        self.names = selection.names;
        self.metrics.retain_acme_names(&self.names);
        match s.https_port {
            Some(443) => {}
            Some(port) => {
                log::warn!(target: TARGET, "the HTTPS port is {port}, not 443: the CA validates TLS-ALPN-01 on port 443, so port 443 of every managed name must be forwarded to port {port}")
            }
            None => {
                log::warn!(target: TARGET, "HTTPS is disabled: the CA cannot validate TLS-ALPN-01 on port 443, so no order can succeed")
            }
        }
        log::info!(
            target: TARGET,
            "ACME issuer: directory {}, account {}, storage {}, instance {}, names [{}]",
            s.directory_url,
            s.email,
            self.ca
                .as_ref()
                .map_or_else(|| "(none)".to_string(), |ca| ca.storage.backend().describe()),
            self.instance,
            self.names.join(", ")
        );
        self.settings = Some(s);
        self.health.set(ActorName::Acme, ActorState::Running);
    }

    /// (Re)starts the loop of [`cluster::run`] on the current storage.
    fn run_cluster(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.cluster.take() {
            ctx.cancel_future(h);
        }
        self.cluster_stale = false;
        let Some(ca) = self.ca.clone() else { return };
        let fut = cluster::run(
            ca.storage.clone(),
            self.instance.clone(),
            self.store.clone(),
        );
        self.cluster = Some(ctx.spawn(fut.into_actor(self)));
    }

    /// Looks at every managed name.
    fn look_at_all(&mut self, ctx: &mut Context<Self>) {
        if self.cluster_stale || (self.cluster.is_none() && self.ca.is_some()) {
            self.run_cluster(ctx);
        }
        self.look_pending = false;
        for name in self.names.clone() {
            self.look_at(&name, ctx);
        }
    }

    /// Decides for one name: nothing to do until a time (a timer is set),
    /// or an order now.
    fn look_at(&mut self, name: &str, ctx: &mut Context<Self>) {
        let now = crate::certs::now();
        let snapshot = self.snapshot.load_full();
        let ari_supported = self.ari_supported;
        let state = self.states.entry(name.to_string()).or_default();
        if state.in_flight {
            return;
        }
        if let Some(t) = state.timer.take() {
            ctx.cancel_future(t);
        }

        // A valid certificate file that covers the name beyond its own
        // renewal window: nothing to order until then.
        if snapshot.lookup_enabled() {
            // clace's own self-signed default (it lists the host name)
            // covers nothing worth keeping from the CA.
            if let Some((pair, _)) = snapshot
                .file_candidate(name, now)
                .filter(|(p, _)| p.source != crate::certs::pair::Source::SelfSigned)
            {
                let until = schedule::one_third_left(pair.not_before, pair.not_after);
                if pair.validity(now) == Validity::Valid && until > now {
                    let file = pair
                        .cert_path
                        .as_ref()
                        .map_or_else(|| pair.stem.clone(), |p| p.display().to_string());
                    if state.covered_by.as_deref() != Some(file.as_str()) {
                        log::info!(target: TARGET, "{name} is covered by {file} until {}; not ordered", rfc3339(until));
                        state.covered_by = Some(file);
                    }
                    self.set_timer(name, until, ctx);
                    return;
                }
            }
        }
        state.covered_by = None;

        let current = snapshot.acme_candidate(name, now).cloned();
        let renew_at = match &current {
            Some(pair) if pair.validity(now) == Validity::Valid => match &state.ari {
                Some((serial, at)) if *serial == pair.serial => Some(*at),
                _ => {
                    if ari_supported != Some(false) && !state.ari_pending {
                        self.fetch_ari(name, pair, ctx);
                    }
                    Some(schedule::one_third_left(pair.not_before, pair.not_after))
                }
            },
            Some(pair) => {
                log::warn!(target: TARGET, "the certificate for {name} (serial {}) is {}; it is served until a new one is issued", pair.serial, pair.validity(now).as_status());
                None
            }
            None => None,
        };
        let state = self.states.entry(name.to_string()).or_default();
        match renew_at {
            Some(at) if at > now => self.set_timer(name, at, ctx),
            _ => match state.retry_at {
                Some(at) if at > now => self.set_timer(name, at, ctx),
                _ => {
                    let replaces = match (&current, self.ari_supported) {
                        (Some(pair), Some(true)) => certificate_id(pair),
                        _ => None,
                    };
                    self.start_order(name, current.map(|p| p.serial.clone()), replaces, ctx);
                }
            },
        }
    }

    /// Looks at `name` again at `at` (Unix seconds), or sooner.
    fn set_timer(&mut self, name: &str, at: i64, ctx: &mut Context<Self>) {
        let now = crate::certs::now();
        let wait = Duration::from_secs(u64::try_from(at - now).unwrap_or(0)).min(MAX_SLEEP);
        let owned = name.to_string();
        let handle = ctx.run_later(wait, move |act, ctx| {
            if let Some(s) = act.states.get_mut(&owned) {
                s.timer = None;
            }
            act.look_at(&owned, ctx);
        });
        let state = self.states.entry(name.to_string()).or_default();
        state.timer = Some(handle);
        self.metrics.set_acme_next_attempt(name, at);
    }

    fn start_order(
        &mut self,
        name: &str,
        renewing: Option<String>,
        replaces: Option<instant_acme::CertificateIdentifier<'static>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(ca) = self.ca.clone() else { return };
        let state = self.states.entry(name.to_string()).or_default();
        state.in_flight = true;
        self.metrics
            .set_acme_next_attempt(name, crate::certs::now());
        // "ordering a certificate for ..." is logged by the order, once it
        // holds the name's lock.
        let store = self.store.clone();
        let owned = name.to_string();
        let fut = async move {
            client::with_retry_after(async {
                ca.obtain(&store, &owned, renewing.as_deref(), replaces)
                    .await
            })
            .await
        };
        let name = name.to_string();
        ctx.spawn(
            fut.into_actor(self)
                .map(move |(result, retry_after), act, ctx| {
                    act.order_done(&name, result, retry_after, ctx);
                }),
        );
    }

    fn order_done(
        &mut self,
        name: &str,
        result: Result<Issued, String>,
        retry_after: Option<std::time::SystemTime>,
        ctx: &mut Context<Self>,
    ) {
        let now = crate::certs::now();
        let Some(state) = self.states.get_mut(name) else {
            // No longer managed (SIGHUP) while the order ran.
            return;
        };
        state.in_flight = false;
        // Issued but not served (the storage could not be read back): a
        // failure like any other, so that it is never ordered again at once.
        let result = result.and_then(|issued| {
            let served = self
                .snapshot
                .load()
                .acme_candidate(name, now)
                .is_some_and(|p| p.serial == issued.serial);
            if served {
                Ok(issued)
            } else {
                Err(format!(
                    "the certificate (serial {}) was stored in {} but the cert store does not serve it",
                    issued.serial,
                    issued.path.display()
                ))
            }
        });
        let Some(state) = self.states.get_mut(name) else {
            return;
        };
        match result {
            Ok(issued) if issued.by_another => {
                state.failures = 0;
                state.retry_at = None;
            }
            Ok(issued) => {
                state.failures = 0;
                state.retry_at = None;
                self.metrics.acme_order(true);
                log::info!(target: TARGET, "certificate for {name} issued: serial {}, not after {}; stored in {}", issued.serial, rfc3339(issued.not_after), issued.path.display());
            }
            // The CA was not asked (or its certificate could not be kept):
            // tried again soon, not counted against the CA.
            Err(error) if error.starts_with(order::STORAGE_UNAVAILABLE) => {
                let at = now + STORAGE_RETRY.as_secs() as i64;
                state.retry_at = Some(at);
                log::warn!(target: TARGET, "could not obtain a certificate for {name}: {error}; next attempt at {} (in {}s)", rfc3339(at), at - now);
            }
            Err(error) => {
                state.failures += 1;
                let retry_after = retry_after.map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                });
                let at = schedule::next_attempt(now, state.failures, retry_after);
                state.retry_at = Some(at);
                self.metrics.acme_order(false);
                log::warn!(target: TARGET, "could not obtain a certificate for {name} (attempt {}): {error}; next attempt at {} (in {}s)", state.failures, rfc3339(at), at - now);
            }
        }
        self.look_at(name, ctx);
    }

    /// Asks the CA for the renewal window of the served certificate of
    /// `name`; the name is looked at again with the answer.
    fn fetch_ari(&mut self, name: &str, pair: &crate::certs::pair::Pair, ctx: &mut Context<Self>) {
        let (Some(ca), Some(leaf)) = (self.ca.clone(), pair.certified.cert.first().cloned()) else {
            return;
        };
        if let Some(s) = self.states.get_mut(name) {
            s.ari_pending = true;
        }
        let serial = pair.serial.clone();
        let owned = name.to_string();
        let fut = async move { ca.renewal_window(&leaf).await };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            let Some(state) = act.states.get_mut(&owned) else { return };
            state.ari_pending = false;
            match result {
                Ok(Some((start, end))) => {
                    act.ari_supported = Some(true);
                    let at = schedule::in_window(start, end, crate::certs::now(), random());
                    log::info!(target: TARGET, "{owned}: the CA suggests renewing between {} and {}; renewal at {}", rfc3339(start), rfc3339(end), rfc3339(at));
                    state.ari = Some((serial, at));
                    act.look_at(&owned, ctx);
                        }
                Ok(None) => {
                    if act.ari_supported != Some(false) {
                        log::info!(target: TARGET, "the CA has no renewal information (ARI): renewing with a third of the lifetime left");
                    }
                    act.ari_supported = Some(false);
                }
                // The CA is unreachable, say: the one-third rule stands
                // until the next look.
                Err(e) => log::debug!(target: TARGET, "{owned}: {e}"),
            }
        }));
    }

    /// Removes every challenge certificate (after a restart, orders that
    /// were running are gone).
    fn clear_challenges(&self) {
        for name in &self.names {
            self.store.do_send(SetChallenge {
                name: name.clone(),
                cert: None,
            });
        }
    }
}

/// The ARI identifier of a served certificate, if it can be made.
fn certificate_id(
    pair: &crate::certs::pair::Pair,
) -> Option<instant_acme::CertificateIdentifier<'static>> {
    let leaf = pair.certified.cert.first()?;
    instant_acme::CertificateIdentifier::try_from(leaf)
        .ok()
        .map(instant_acme::CertificateIdentifier::into_owned)
}

/// 64 random bits (for a time inside an ARI window).
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::certs::now().unsigned_abs());
    h.finish()
}

/// Unix seconds as RFC 3339, UTC.
fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

impl Actor for AcmeIssuer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::fault_point(ActorName::Acme);
        self.store.do_send(SubscribeIssuer {
            issuer: ctx.address().recipient(),
        });
        if self.settings.is_some() {
            self.health.set(ActorName::Acme, ActorState::Running);
            self.look_at_all(ctx);
        } else {
            self.health.set(ActorName::Acme, ActorState::Disabled);
        }
    }
}

impl Supervised for AcmeIssuer {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        if self.settings.is_some() {
            self.health.set(ActorName::Acme, ActorState::Restarting);
        }
        // The orders that were running went with the old context, and so
        // did the cluster loop.
        self.cluster = None;
        for state in self.states.values_mut() {
            state.in_flight = false;
            state.timer = None;
            state.ari_pending = false;
        }
        self.clear_challenges();
    }
}

impl Handler<Restart> for AcmeIssuer {
    type Result = ();

    /// SIGUSR2 and `clace restart acme`: re-check every managed name now.
    /// Orders in flight go on; a name waiting out a backoff is tried now
    /// (the operator asked); a name with a valid certificate that is not
    /// due is left alone.
    fn handle(&mut self, _: Restart, ctx: &mut Context<Self>) {
        crate::fault_point(ActorName::Acme);
        self.health.count_restart(ActorName::Acme);
        if self.settings.is_none() {
            log::info!(target: TARGET, "ACME is disabled (no service_email): nothing to re-check");
            return;
        }
        log::info!(target: TARGET, "re-checking every managed name: {} names", self.names.len());
        for state in self.states.values_mut() {
            if !state.in_flight {
                state.retry_at = None;
                state.covered_by = None;
            }
        }
        self.look_at_all(ctx);
    }
}

impl Handler<SnapshotPublished> for AcmeIssuer {
    type Result = ();

    fn handle(&mut self, _: SnapshotPublished, ctx: &mut Context<Self>) {
        if self.settings.is_none() || self.look_pending {
            return;
        }
        // Several snapshots in a burst (a challenge, then the certificate)
        // make one look.
        self.look_pending = true;
        ctx.run_later(Duration::from_millis(50), |act, ctx| act.look_at_all(ctx));
    }
}

impl Handler<ReconfigureAcme> for AcmeIssuer {
    type Result = ();

    fn handle(&mut self, msg: ReconfigureAcme, ctx: &mut Context<Self>) {
        for state in self.states.values_mut() {
            if let Some(t) = state.timer.take() {
                ctx.cancel_future(t);
            }
        }
        self.apply(msg.settings);
        if self.ca.is_none() {
            if let Some(h) = self.cluster.take() {
                ctx.cancel_future(h);
            }
        }
        if self.settings.is_some() {
            self.look_at_all(ctx);
        }
    }
}
