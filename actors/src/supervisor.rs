//! Starts the actors in order, restarts one on request, stops them all.
//!
//! Each actor runs under an [`actix::Supervisor`]: when it stops (it failed,
//! or it was asked to restart) the supervisor calls its `restarting` hook and
//! starts it again with the same state and the same address, so the other
//! actors' addresses stay valid and they are never touched. An actor that
//! failed waits out a backoff in its `started` hook.
//!
//! Order: the cert store loads every certificate (creating the self-signed
//! default) before anything listens; then the watcher; then the listeners,
//! which share one router.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::certs::resolver::{server_config, CertResolver};
use crate::certs::snapshot::Snapshot;
use crate::certs::store::{CertStore, StoreSettings};
use crate::health::{ActorName, ActorState, Health};
use crate::listener::{Limits, Listener};
use crate::messages::{Rescan, Restart, Shutdown};
use crate::metrics::Metrics;
use crate::router::admin::{Admin, Control};
use crate::router::{RouteTable, RouterState};
use crate::settings::Settings;
use crate::watcher::Watcher;

/// Sockets bound before the actors start (`None`: that listener is disabled).
#[derive(Debug, Default)]
pub struct Bound {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The running actors.
pub struct Daemon {
    pub health: Arc<Health>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    certstore: Addr<CertStore>,
    watcher: Addr<Watcher>,
    http: Option<Addr<Listener>>,
    https: Option<Addr<Listener>>,
}

impl Daemon {
    /// Starts every actor; call inside an actix system.
    pub fn start(settings: &Settings, bound: Bound, limits: Limits) -> Result<Daemon, StartError> {
        let health = Arc::new(Health::new());
        let metrics = Arc::new(Metrics::default());
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
        let https = &settings.https;

        let store = CertStore::load(
            StoreSettings {
                cert_location: https.cert_location.clone(),
                lookup_enabled: https.enable_cert_lookup,
                rescan_interval: https.cert_rescan_interval,
            },
            Arc::clone(&snapshot),
            Arc::clone(&metrics),
            Arc::clone(&health),
        );
        // The cert store and the watcher get an arbiter (thread) of their
        // own: reading and parsing certificates never delays the listeners'
        // actors, and the handshakes never wait for either.
        let certs_arbiter = Arbiter::new();
        let certstore = Supervisor::start_in_arbiter(&certs_arbiter.handle(), move |_| store);
        let watcher = {
            let store = certstore.clone();
            let (mode, every, health) = (
                https.cert_watch,
                https.cert_rescan_interval,
                Arc::clone(&health),
            );
            Supervisor::start_in_arbiter(&certs_arbiter.handle(), move |_| {
                Watcher::new(store, mode, every, health)
            })
        };

        if https.acme_enabled() {
            log::warn!(target: "clace::acme", "service_email is set, but this build has no ACME issuer yet: no certificate will be ordered");
            health.set(ActorName::Acme, ActorState::Failed);
        } else {
            health.set(ActorName::Acme, ActorState::Disabled);
        }

        let resolver = Arc::new(CertResolver::new(Arc::clone(&snapshot)));
        let admin = Admin {
            health: Arc::clone(&health),
            metrics: Arc::clone(&metrics),
            snapshot: Arc::clone(&snapshot),
            resolver: Arc::clone(&resolver),
            cert_location: https.cert_location.clone(),
            acme_certs: https.storage_location.join("certificates"),
            control: std::sync::OnceLock::new(),
        };
        let router = Arc::new(RouterState::new(
            RouteTable::new(settings.routes.clone()),
            settings.http.redirect_to_https,
            admin,
        ));
        if settings.http.redirect_to_https && bound.https.is_none() {
            log::warn!(target: "clace::http", "redirect_to_https is set but HTTPS is disabled: requests are served on HTTP");
        }

        let https_listener = match bound.https {
            Some(socket) => {
                let tls = Arc::new(server_config(resolver)?);
                let l = Listener::new(
                    https.host.clone(),
                    socket,
                    Some(tls),
                    Arc::clone(&router),
                    Arc::clone(&health),
                    limits,
                );
                Some(Supervisor::start(move |_| l))
            }
            None => {
                health.set(ActorName::Https, ActorState::Disabled);
                None
            }
        };
        let http_listener = match bound.http {
            Some(socket) => {
                let l = Listener::new(
                    settings.http.host.clone(),
                    socket,
                    None,
                    Arc::clone(&router),
                    Arc::clone(&health),
                    limits,
                );
                Some(Supervisor::start(move |_| l))
            }
            None => {
                health.set(ActorName::Http, ActorState::Disabled);
                None
            }
        };

        let mut restart: HashMap<ActorName, Recipient<Restart>> = HashMap::new();
        restart.insert(ActorName::CertStore, certstore.clone().recipient());
        restart.insert(ActorName::Watcher, watcher.clone().recipient());
        if let Some(a) = &http_listener {
            restart.insert(ActorName::Http, a.clone().recipient());
        }
        if let Some(a) = &https_listener {
            restart.insert(ActorName::Https, a.clone().recipient());
        }
        // Set once, right after start; nothing else sets it.
        let _ = router.admin.control.set(Control { restart });

        Ok(Daemon {
            health,
            snapshot,
            certstore,
            watcher,
            http: http_listener,
            https: https_listener,
        })
    }

    /// Restarts one actor; false when it is disabled (or unknown here).
    pub fn restart(&self, actor: ActorName) -> bool {
        log::info!(target: "clace::supervisor", "restart of {} asked", actor.as_str());
        match actor {
            ActorName::CertStore => self.certstore.do_send(Restart),
            ActorName::Watcher => self.watcher.do_send(Restart),
            ActorName::Http => match &self.http {
                Some(a) => a.do_send(Restart),
                None => return false,
            },
            ActorName::Https => match &self.https {
                Some(a) => a.do_send(Restart),
                None => return false,
            },
            ActorName::Acme => return false,
        }
        true
    }

    /// A full rescan of the certificate folders, now.
    pub fn rescan(&self) {
        self.certstore.do_send(Rescan);
    }

    /// Stops both listeners gracefully (in-flight requests finish, up to the
    /// graceful timeout); returns when they have stopped.
    pub async fn shutdown(&self) {
        let http = self.http.as_ref().map(|a| a.send(Shutdown));
        let https = self.https.as_ref().map(|a| a.send(Shutdown));
        if let Some(f) = http {
            let _ = f.await;
        }
        if let Some(f) = https {
            let _ = f.await;
        }
    }
}
