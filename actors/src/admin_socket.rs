//! The admin socket, `$CL_HOME/run/clace.sock` (interface §6): every
//! `/_clace/` endpoint over HTTP on a Unix socket that only its owner may
//! connect to (mode 0600), so the loopback-only endpoints stay reachable
//! for `clace restart` and `clace certs --live` even where they are turned
//! off on the listeners (`[admin] on_listeners = false`).
//!
//! A peer on the socket counts as trusted: the file permissions did the
//! checking that the peer address does on the listeners.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpRequest, HttpResponse, HttpServer};

use crate::router::admin::SocketPeer;
use crate::router::{plain, RouterState};

const TARGET: &str = "clace::admin";

/// Binds the socket at `path`, mode 0600; its folder is created if missing.
///
/// A socket file left by a daemon that died (nothing accepts on it) is
/// replaced. One that a live daemon holds is left alone: `Ok(None)`, with a
/// warning, and this daemon runs without a socket. Any other file there is
/// an error (it is not ours to remove).
pub fn bind(path: &Path) -> io::Result<Option<UnixListener>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                log::warn!(target: TARGET, "{} is held by another running daemon: left alone; this one serves no admin socket (`clace restart` reaches the other one first)", path.display());
                return Ok(None);
            }
            log::info!(target: TARGET, "replacing the stale admin socket {} (its daemon is gone)", path.display());
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // connect(2) on a Unix socket needs write permission on its file: with
    // the usual umask (022 or stricter) nobody else can connect even in the
    // instant before the chmod below.
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// Serves the `/_clace/` endpoints on `listener` (one worker: a few
/// administrative requests, never the traffic). The caller stops the server
/// with the returned handle and removes the file.
pub fn serve(listener: UnixListener, router: Arc<RouterState>) -> io::Result<ServerHandle> {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_default();
    let server = HttpServer::new(move || {
        actix_web::App::new()
            .app_data(web::Data::from(Arc::clone(&router)))
            .app_data(SocketPeer)
            .default_service(web::to(handle))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen_uds(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = server.await {
            log::error!(target: TARGET, "the admin socket server stopped: {e}");
        }
    });
    log::info!(target: TARGET, "admin socket listening on {path}");
    Ok(handle)
}

async fn handle(req: HttpRequest, state: web::Data<RouterState>) -> HttpResponse {
    let path = req.path();
    if path == "/_clace" || path.starts_with("/_clace/") {
        return state.admin.handle(&req).await;
    }
    plain(
        actix_web::http::StatusCode::NOT_FOUND,
        "not found: the admin socket serves /_clace/ only\n",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn binds_0600_replaces_a_stale_socket_and_leaves_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("clace.sock");
        let live = bind(&path).unwrap().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Held by a live listener: left alone.
        assert!(bind(&path).unwrap().is_none());
        assert!(path.exists());
        // Its daemon is gone (the listener closed, the file stays): replaced.
        drop(live);
        let again = bind(&path).unwrap();
        assert!(again.is_some());
        assert!(UnixStream::connect(&path).is_ok());
    }

    #[test]
    fn another_kind_of_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clace.sock");
        std::fs::write(&path, "x").unwrap();
        assert!(bind(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }
}
