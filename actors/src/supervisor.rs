//! Starts the actors in order, restarts one on request, stops them all.
//!
//! Each actor runs under a [`keeper::Keeper`] (actix's supervisor, with
//! panics caught): when it stops (it failed, or it was asked to restart) or
//! panics, its `restarting` hook is called and it starts again with the same
//! state and the same address, so the other actors' addresses stay valid and
//! they are never touched. After a panic the keeper waits out a backoff; a
//! listener whose server failed waits one out in its `started` hook.
//!
//! Order: the cert store loads every certificate (creating the self-signed
//! default) before anything listens; then the watcher; then the listeners,
//! which share one router.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::acme::{AcmeIssuer, AcmeSettings};
use crate::certs::resolver::{server_config, CertResolver};
use crate::certs::snapshot::Snapshot;
use crate::certstore::{CertStore, StoreSettings};
use crate::health::{ActorName, ActorState, Health};
use crate::keeper;
use crate::listener::{self, Limits, Listener};
use crate::messages::{
    Rebind, ReconfigureAcme, ReconfigureStore, ReconfigureWatcher, Rescan, Restart, Shutdown,
};
use crate::metrics::Metrics;
use crate::router::admin::{Admin, CertFolders, Control};
use crate::router::{RouteTable, RouterState};
use crate::settings::{Port, Settings};
use crate::watcher::Watcher;

/// Sockets bound before the actors start (`None`: that listener is disabled).
#[derive(Debug, Default)]
pub struct Bound {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    /// The admin socket (`None`: another daemon holds it, or it could not
    /// be bound).
    pub admin: Option<UnixListener>,
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
    settings: Settings,
    limits: Limits,
    router: Arc<RouterState>,
    resolver: Arc<CertResolver>,
    /// `http://HOST:PORT` and `https://HOST:PORT` of the bound listeners.
    http_url: Option<String>,
    https_url: Option<String>,
    certstore: Addr<CertStore>,
    watcher: Addr<Watcher>,
    acme: Addr<AcmeIssuer>,
    http: Option<Addr<Listener>>,
    https: Option<Addr<Listener>>,
    admin_socket: Option<actix_web::dev::ServerHandle>,
}

impl Daemon {
    /// Starts every actor; call inside an actix system.
    pub fn start(settings: &Settings, bound: Bound, limits: Limits) -> Result<Daemon, StartError> {
        keeper::install_panic_hook();
        let health = Arc::new(Health::new());
        let metrics = Arc::new(Metrics::default());
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
        let https = &settings.https;

        let store = CertStore::load(
            store_settings(settings),
            Arc::clone(&snapshot),
            Arc::clone(&metrics),
            Arc::clone(&health),
        );
        // The cert store and the watcher get an arbiter (thread) of their
        // own: reading and parsing certificates never delays the listeners'
        // actors, and the handshakes never wait for either.
        let certs_arbiter = Arbiter::new();
        let certstore = keeper::start_in_arbiter(
            &certs_arbiter.handle(),
            ActorName::CertStore,
            Arc::clone(&health),
            move || store,
        );
        let watcher = {
            let store = certstore.clone();
            let (mode, every, h) = (
                https.cert_watch,
                https.cert_rescan_interval,
                Arc::clone(&health),
            );
            keeper::start_in_arbiter(
                &certs_arbiter.handle(),
                ActorName::Watcher,
                Arc::clone(&health),
                move || Watcher::new(store, mode, every, h),
            )
        };

        // The issuer exists whether or not ACME is enabled (a SIGHUP may
        // enable it); disabled, it does nothing. Its own arbiter: key
        // generation and the CA's answers never delay the cert store.
        let https_port = bound
            .https
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port());
        let acme_settings = AcmeSettings::from_settings(settings, https_port);
        let acme_enabled = acme_settings.is_some();
        let acme = {
            let (store, snapshot, h, metrics) = (
                certstore.clone(),
                Arc::clone(&snapshot),
                Arc::clone(&health),
                Arc::clone(&metrics),
            );
            keeper::start_in_arbiter(
                &Arbiter::new().handle(),
                ActorName::Acme,
                Arc::clone(&health),
                move || AcmeIssuer::new(acme_settings, store, snapshot, h, metrics),
            )
        };

        let resolver = Arc::new(CertResolver::new(Arc::clone(&snapshot)));
        let admin = Admin {
            health: Arc::clone(&health),
            metrics: Arc::clone(&metrics),
            snapshot: Arc::clone(&snapshot),
            resolver: Arc::clone(&resolver),
            folders: ArcSwap::from_pointee(cert_folders(settings)),
            control: std::sync::OnceLock::new(),
            on_listeners: settings.admin.on_listeners.into(),
        };
        let router = Arc::new(RouterState::new(
            RouteTable::new(settings.routes.clone()),
            settings.http.redirect_to_https,
            admin,
        ));
        router.limits.set(&settings.limits);
        let admin_socket = bound.admin.and_then(|socket| {
            crate::admin_socket::serve(socket, Arc::clone(&router))
                .map_err(
                    |e| log::error!(target: "clace::admin", "cannot serve the admin socket: {e}"),
                )
                .ok()
        });
        if settings.http.redirect_to_https && bound.https.is_none() {
            log::warn!(target: "clace::http", "redirect_to_https is set but HTTPS is disabled: requests are served on HTTP");
        }

        let http_url = bound
            .http
            .as_ref()
            .map(|s| url("http", &settings.http.host, s));
        let https_url = bound.https.as_ref().map(|s| url("https", &https.host, s));
        let https_listener = match bound.https {
            Some(socket) => {
                let tls = Arc::new(server_config(Arc::clone(&resolver), acme_enabled)?);
                let l = Listener::new(
                    https.host.clone(),
                    socket,
                    Some(tls),
                    Arc::clone(&router),
                    Arc::clone(&health),
                    limits,
                );
                Some(keeper::start(ActorName::Https, Arc::clone(&health), l))
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
                Some(keeper::start(ActorName::Http, Arc::clone(&health), l))
            }
            None => {
                health.set(ActorName::Http, ActorState::Disabled);
                None
            }
        };

        let mut restart: HashMap<ActorName, Recipient<Restart>> = HashMap::new();
        restart.insert(ActorName::CertStore, certstore.clone().recipient());
        restart.insert(ActorName::Watcher, watcher.clone().recipient());
        if acme_enabled {
            restart.insert(ActorName::Acme, acme.clone().recipient());
        }
        if let Some(a) = &http_listener {
            restart.insert(ActorName::Http, a.clone().recipient());
        }
        if let Some(a) = &https_listener {
            restart.insert(ActorName::Https, a.clone().recipient());
        }
        // Set once, right after start; nothing else sets it.
        let _ = router.admin.control.set(Control::new(restart));

        Ok(Daemon {
            health,
            snapshot,
            settings: settings.clone(),
            limits,
            router,
            resolver,
            http_url,
            https_url,
            certstore,
            watcher,
            acme,
            http: http_listener,
            https: https_listener,
            admin_socket,
        })
    }

    /// Restarts one actor; false when it is disabled (or unknown here).
    pub fn restart(&self, actor: ActorName) -> bool {
        // The same table the admin endpoint uses: the enabled actors.
        let recipient = self.router.admin.control.get().and_then(|c| c.get(actor));
        match recipient {
            Some(r) if r.connected() => {
                log::info!(target: "clace::supervisor", "restart of {} asked", actor.as_str());
                r.do_send(Restart);
                true
            }
            Some(_) => {
                log::error!(target: "clace::supervisor", "{} has failed (it panicked too often in a row) and can no longer be restarted; restart the daemon", actor.as_str());
                false
            }
            None => false,
        }
    }

    /// Applies a new configuration (SIGHUP): routes and the redirect switch
    /// are swapped in place (no restart, no dropped connection); a listener
    /// whose host or port changed is moved to a newly bound socket (or
    /// stopped, or started); the cert store and the watcher restart when
    /// their settings changed. Nothing else is touched. A port that cannot
    /// be bound keeps that listener where it was, and the error is returned.
    pub fn reconfigure(&mut self, new: Settings) -> Vec<String> {
        let mut errors = Vec::new();
        let old = std::mem::replace(&mut self.settings, new.clone());
        if old.routes != new.routes || old.http.redirect_to_https != new.http.redirect_to_https {
            self.router
                .routes
                .store(Arc::new(RouteTable::new(new.routes.clone())));
            self.router.redirect_to_https.store(
                new.http.redirect_to_https,
                std::sync::atomic::Ordering::Relaxed,
            );
            log::info!(target: "clace::supervisor", "routes updated: {} routes", new.routes.len());
        }
        for tls in [false, true] {
            let (from, to) = (bind_of(&old, tls), bind_of(&new, tls));
            if let Err(e) = self.move_listener(tls, from.clone(), to) {
                errors.push(e);
                // It stays where it was, and so does what the next reload
                // compares against.
                let (host, port) = from;
                if tls {
                    (self.settings.https.host, self.settings.https.port) = (host, port);
                } else {
                    (self.settings.http.host, self.settings.http.port) = (host, port);
                }
            }
        }
        if old.limits != new.limits {
            // The head and per-IP bounds apply to the next request and
            // connection; the handshake bound at the next HTTPS restart.
            self.router.limits.set(&new.limits);
            log::info!(target: "clace::supervisor", "request limits updated");
        }
        if old.admin != new.admin {
            self.router
                .admin
                .on_listeners
                .store(new.admin.on_listeners, std::sync::atomic::Ordering::Relaxed);
            log::info!(target: "clace::supervisor", "admin endpoints on the listeners: {}", if new.admin.on_listeners { "on" } else { "off (admin socket only)" });
        }
        if cert_folders(&old) != cert_folders(&new) {
            self.router
                .admin
                .folders
                .store(Arc::new(cert_folders(&new)));
        }
        if store_settings(&old) != store_settings(&new) {
            log::info!(target: "clace::supervisor", "certificate settings changed: restarting the cert store");
            self.certstore.do_send(ReconfigureStore {
                settings: store_settings(&new),
            });
        }
        let https_port = self
            .https_url
            .as_deref()
            .and_then(|u| u.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        let (old_acme, new_acme) = (
            AcmeSettings::from_settings(&old, https_port),
            AcmeSettings::from_settings(&new, https_port),
        );
        if old_acme != new_acme {
            log::info!(target: "clace::supervisor", "ACME settings changed: the issuer takes them");
            if let Some(c) = self.router.admin.control.get() {
                if new_acme.is_some() {
                    c.insert(ActorName::Acme, self.acme.clone().recipient());
                } else {
                    c.remove(ActorName::Acme);
                }
            }
            if old_acme.is_some() != new_acme.is_some() && self.https.is_some() {
                log::warn!(target: "clace::supervisor", "ACME was turned {} by a reload: the HTTPS listener offers acme-tls/1 accordingly after its next restart (SIGRTMIN+2 or `clace restart https`)", if new_acme.is_some() { "on" } else { "off" });
            }
            self.acme.do_send(ReconfigureAcme { settings: new_acme });
        }
        if old.https.cert_watch != new.https.cert_watch
            || old.https.cert_rescan_interval != new.https.cert_rescan_interval
        {
            log::info!(target: "clace::supervisor", "watch settings changed: restarting the watcher");
            self.watcher.do_send(ReconfigureWatcher {
                mode: new.https.cert_watch,
                rescan_interval: new.https.cert_rescan_interval,
            });
        }
        errors
    }

    /// Moves, stops or starts one listener after a configuration change.
    fn move_listener(
        &mut self,
        tls: bool,
        (old_host, old_port): (String, Port),
        (host, port): (String, Port),
    ) -> Result<(), String> {
        let (name, scheme) = if tls {
            (ActorName::Https, "https")
        } else {
            (ActorName::Http, "http")
        };
        if old_host == host && old_port == port {
            return Ok(());
        }
        let current = if tls {
            self.https.take()
        } else {
            self.http.take()
        };
        let Port::Bind(number) = port else {
            if let Some(addr) = current {
                addr.do_send(Shutdown);
                log::info!(target: "clace::supervisor", "{scheme} disabled: its listener stops");
            }
            self.health.set(name, ActorState::Disabled);
            if tls {
                // Nothing to redirect to any more.
                self.router
                    .https_port
                    .store(0, std::sync::atomic::Ordering::Release);
            }
            if tls {
                self.https_url = None
            } else {
                self.http_url = None
            }
            if let Some(c) = self.router.admin.control.get() {
                c.remove(name);
            }
            return Ok(());
        };
        let socket = match listener::bind(&host, number) {
            Ok(s) => s,
            Err(e) => {
                if tls {
                    self.https = current
                } else {
                    self.http = current
                }
                return Err(format!("cannot bind the {scheme} listener to {host}:{number}: {e}; it stays where it was"));
            }
        };
        let new_url = Some(url(scheme, &host, &socket));
        if tls {
            self.https_url = new_url
        } else {
            self.http_url = new_url
        }
        let addr = match current {
            Some(addr) => {
                addr.do_send(Rebind { host, socket });
                addr
            }
            None => {
                let tls_config = if tls {
                    match server_config(
                        Arc::clone(&self.resolver),
                        self.settings.https.acme_enabled(),
                    ) {
                        Ok(c) => Some(Arc::new(c)),
                        Err(e) => return Err(format!("cannot build the TLS configuration: {e}")),
                    }
                } else {
                    None
                };
                let l = Listener::new(
                    host,
                    socket,
                    tls_config,
                    Arc::clone(&self.router),
                    Arc::clone(&self.health),
                    self.limits,
                );
                let addr = keeper::start(name, Arc::clone(&self.health), l);
                if let Some(c) = self.router.admin.control.get() {
                    c.insert(name, addr.clone().recipient());
                }
                addr
            }
        };
        if tls {
            self.https = Some(addr)
        } else {
            self.http = Some(addr)
        }
        Ok(())
    }

    /// The URLs the listeners are bound to now, HTTP first.
    pub fn urls(&self) -> Vec<String> {
        self.http_url
            .iter()
            .chain(&self.https_url)
            .cloned()
            .collect()
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
        if let Some(h) = &self.admin_socket {
            h.stop(true).await;
        }
    }
}

/// `SCHEME://HOST:PORT` with the real port of a bound socket.
fn url(scheme: &str, host: &str, socket: &TcpListener) -> String {
    let port = socket.local_addr().map_or(0, |a| a.port());
    format!("{scheme}://{host}:{port}")
}

/// What the cert store runs on, for these settings.
fn store_settings(s: &Settings) -> StoreSettings {
    StoreSettings {
        cert_location: s.https.cert_location.clone(),
        lookup_enabled: s.https.enable_cert_lookup,
        rescan_interval: s.https.cert_rescan_interval,
        acme_dir: AcmeSettings::from_settings(s, None).map(|a| a.certificates_dir()),
    }
}

/// The folders `/_clace/certs` lists for these settings.
fn cert_folders(settings: &Settings) -> CertFolders {
    CertFolders {
        files: settings.https.cert_location.clone(),
        acme: settings.https.acme_certificates(),
    }
}

/// The address one listener binds to in these settings.
fn bind_of(settings: &Settings, tls: bool) -> (String, Port) {
    if tls {
        (settings.https.host.clone(), settings.https.port)
    } else {
        (settings.http.host.clone(), settings.http.port)
    }
}
