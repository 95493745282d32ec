//! The daemon's own endpoints under `/_clace/` (interface §6).
//!
//! `health` answers anyone; `certs`, `metrics` and `actors/{name}/restart`
//! answer trusted peers only: a peer on the admin socket (file permissions
//! guard it), or on a listener a loopback peer (the TCP peer address
//! decides, never a header) while `[admin] on_listeners` is on; with it off
//! they are 404 on the listeners.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix::Recipient;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use arc_swap::ArcSwap;

use crate::certs::inventory;
use crate::certs::pair::Source;
use crate::certs::resolver::CertResolver;
use crate::certs::snapshot::Snapshot;
use crate::health::{ActorName, Health};
use crate::messages::Restart;
use crate::metrics::Metrics;

use super::plain;

/// Where the admin endpoints read from and send to.
pub struct Admin {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Counts the handshakes it resolves.
    pub resolver: Arc<CertResolver>,
    /// The folders `/_clace/certs` lists; replaced when a SIGHUP moves them.
    pub folders: ArcSwap<CertFolders>,
    /// Set once the actors have started (the listeners start last).
    pub control: OnceLock<Control>,
    /// `[admin] on_listeners`: serve the loopback-only endpoints on the
    /// listeners too (a SIGHUP may change it).
    pub on_listeners: AtomicBool,
}

/// App data of the admin socket's application: its peers are trusted.
#[derive(Debug, Clone, Copy)]
pub struct SocketPeer;

/// The local address of a listener's connection, set by its `on_connect`
/// hook (the HTTPS server's application config does not carry it).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub std::net::SocketAddr);

/// Where the certificates are: `cert_location` and the ACME certificates
/// under `storage_location`.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFolders {
    pub files: PathBuf,
    pub acme: PathBuf,
}

/// The actors that can be restarted on request. A listener started or
/// stopped by a configuration reload is added or removed; the lock is held
/// only to copy one recipient out.
pub struct Control {
    restart: Mutex<HashMap<ActorName, Recipient<Restart>>>,
}

impl Control {
    pub fn new(restart: HashMap<ActorName, Recipient<Restart>>) -> Control {
        Control {
            restart: Mutex::new(restart),
        }
    }

    pub fn get(&self, actor: ActorName) -> Option<Recipient<Restart>> {
        self.restart.lock().ok()?.get(&actor).cloned()
    }

    pub fn insert(&self, actor: ActorName, recipient: Recipient<Restart>) {
        if let Ok(mut map) = self.restart.lock() {
            map.insert(actor, recipient);
        }
    }

    pub fn remove(&self, actor: ActorName) {
        if let Ok(mut map) = self.restart.lock() {
            map.remove(&actor);
        }
    }
}

impl Admin {
    pub async fn handle(&self, req: &HttpRequest) -> HttpResponse {
        let path = req.path();
        if path == "/_clace/health" {
            return self.health_response(req);
        }
        let known = path == "/_clace/certs"
            || path == "/_clace/metrics"
            || (path.starts_with("/_clace/actors/") && path.ends_with("/restart"))
            || (cfg!(feature = "fault-injection")
                && path.starts_with("/_clace/actors/")
                && path.ends_with("/panic"));
        let on_socket = req.app_data::<SocketPeer>().is_some();
        if !known || !(on_socket || self.on_listeners.load(Ordering::Relaxed)) {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        if !on_socket && !from_this_host(req) {
            return plain(
                StatusCode::FORBIDDEN,
                "forbidden: this endpoint answers loopback clients only\n",
            );
        }
        match path {
            "/_clace/certs" => self.certs_response(req).await,
            "/_clace/metrics" => self.metrics_response(req),
            _ => self.restart_response(req, path),
        }
    }

    fn health_response(&self, req: &HttpRequest) -> HttpResponse {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return method_not_allowed("GET, HEAD");
        }
        let (ok, json) = self.health.to_json();
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        HttpResponse::build(status)
            .insert_header(("cache-control", "no-store"))
            .json(json)
    }

    async fn certs_response(&self, req: &HttpRequest) -> HttpResponse {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return method_not_allowed("GET, HEAD");
        }
        let folders = self.folders.load_full();
        let (files, acme) = (folders.files.clone(), folders.acme.clone());
        // Reading the folders is blocking work: keep it off the worker thread.
        let listing = web::block(move || {
            let now = crate::certs::now();
            let mut infos = inventory::scan_folder(&files, Source::File, now);
            infos.extend(inventory::scan_pairs(
                inventory::all_managed_pair_files(&acme),
                Source::Acme,
                now,
            ));
            infos
        })
        .await;
        match listing {
            Ok(infos) => HttpResponse::Ok().json(infos),
            Err(_) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "listing the certificates failed\n",
            ),
        }
    }

    fn metrics_response(&self, req: &HttpRequest) -> HttpResponse {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return method_not_allowed("GET, HEAD");
        }
        let body = self.metrics.render(
            &self.snapshot.load(),
            &self.health,
            self.resolver.handshakes(),
        );
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(body)
    }

    fn restart_response(&self, req: &HttpRequest, path: &str) -> HttpResponse {
        let name = path
            .trim_start_matches("/_clace/actors/")
            .trim_end_matches("/restart")
            .trim_end_matches("/panic");
        let Some(actor) = ActorName::parse(name) else {
            return plain(
                StatusCode::NOT_FOUND,
                "unknown actor: expected http, https, certstore, acme or watcher\n",
            );
        };
        if req.method() != Method::POST {
            return method_not_allowed("POST");
        }
        let recipient = self.control.get().and_then(|c| c.get(actor));
        #[cfg(feature = "fault-injection")]
        if path.ends_with("/panic") {
            return self.panic_response(req, actor, recipient);
        }
        match recipient {
            Some(r) if !r.connected() => HttpResponse::ServiceUnavailable()
                .content_type("text/plain; charset=utf-8")
                .body(format!(
                    "{} has failed (it panicked too often in a row) and can no longer be restarted; restart the daemon\n",
                    actor.as_str()
                )),
            Some(r) => {
                log::info!(target: "clace::supervisor", "restart of {} asked over /_clace/", actor.as_str());
                r.do_send(Restart);
                HttpResponse::Accepted()
                    .content_type("text/plain; charset=utf-8")
                    .body(format!("restarting {}\n", actor.as_str()))
            }
            None => HttpResponse::Conflict()
                .content_type("text/plain; charset=utf-8")
                .body(format!(
                    "{} is disabled and cannot be restarted\n",
                    actor.as_str()
                )),
        }
    }
}

#[cfg(feature = "fault-injection")]
impl Admin {
    /// `POST /_clace/actors/{name}/panic?times=N|always` (test builds
    /// only): arms the actor, then sends it a `Restart`, whose handler
    /// panics.
    fn panic_response(
        &self,
        req: &HttpRequest,
        actor: ActorName,
        recipient: Option<actix::Recipient<Restart>>,
    ) -> HttpResponse {
        let times = match req.query_string().strip_prefix("times=") {
            Some("always") => crate::fault::ALWAYS,
            Some(n) => n.parse().unwrap_or(1),
            None => 1,
        };
        let Some(r) = recipient.filter(actix::Recipient::connected) else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "that actor is not running\n",
            );
        };
        crate::fault::arm(actor, times);
        r.do_send(Restart);
        HttpResponse::Accepted().finish()
    }
}

/// A loopback peer, or (for a listener bound to one specific address) a
/// peer with that very address: a client on this machine that had to use
/// the listener's address. The TCP peer decides; headers never do.
fn from_this_host(req: &HttpRequest) -> bool {
    let Some(peer) = req.peer_addr().map(|a| a.ip().to_canonical()) else {
        return false;
    };
    if peer.is_loopback() {
        return true;
    }
    let local = req
        .conn_data::<LocalAddr>()
        .map_or_else(|| req.app_config().local_addr(), |l| l.0)
        .ip()
        .to_canonical();
    !local.is_unspecified() && local == peer
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("allow", allow))
        .content_type("text/plain; charset=utf-8")
        .body("method not allowed\n")
}
