//! The HTTP and HTTPS listener actors.
//!
//! One actor type serves both: it owns one bound socket and one actix-web
//! server on it. The socket is bound once, before the actor starts (so a
//! port that cannot be bound stops the daemon at start-up, and port 0 keeps
//! its real port), and kept across restarts: a restart starts a new server
//! on a duplicate of the socket, then stops the old one gracefully, so no
//! connection is refused while it happens and the other listener is never
//! touched.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::HttpServer;

use crate::batched_writes::BatchedWrites;
use crate::health::{ActorName, ActorState, Health};
use crate::messages::{Rebind, Restart, Shutdown};
use crate::router::{self, RouterState, Scheme};

/// Connection limits of both listeners (documented in the README).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a client to send a complete request head (else 408).
    pub request_header_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub keep_alive: Duration,
    /// Time for a TLS handshake to complete.
    pub tls_handshake_timeout: Duration,
    /// Concurrent connections per worker thread.
    pub max_connections_per_worker: usize,
    /// In-flight requests get this long to finish on a graceful stop.
    pub graceful_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_header_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(75),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections_per_worker: 10_000,
            graceful_timeout: Duration::from_secs(30),
        }
    }
}

/// Binds `host:port` (port 0: any free port), with `SO_REUSEADDR` so a
/// restarted daemon can take its port back at once.
pub fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    listen(bind_only(host, port)?)
}

/// The socket bound to `host:port` but not listening yet: a connection to
/// it is refused (a balancer sends it elsewhere) until [`listen`].
pub fn bind_only(host: &str, port: u16) -> std::io::Result<socket2::Socket> {
    let addr: SocketAddr = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Starts listening on a socket from [`bind_only`].
pub fn listen(socket: socket2::Socket) -> std::io::Result<TcpListener> {
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// One listener: `http` or `https`.
pub struct Listener {
    name: ActorName,
    scheme: Scheme,
    host: String,
    socket: Option<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Arc<RouterState>,
    health: Arc<Health>,
    limits: Limits,
    workers: usize,
    server: Option<ServerHandle>,
    /// Consecutive failures, for the restart backoff.
    failures: u32,
    announced: bool,
    shutting_down: bool,
}

impl Listener {
    /// A listener on an already-bound socket. `tls` makes it the HTTPS one.
    pub fn new(
        host: String,
        socket: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        router: Arc<RouterState>,
        health: Arc<Health>,
        limits: Limits,
    ) -> Listener {
        let (name, scheme) = match tls {
            Some(_) => (ActorName::Https, Scheme::Https),
            None => (ActorName::Http, Scheme::Http),
        };
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Listener {
            name,
            scheme,
            host,
            socket: Some(socket),
            tls,
            router,
            health,
            limits,
            workers,
            server: None,
            failures: 0,
            announced: false,
            shutting_down: false,
        }
    }

    fn target(&self) -> &'static str {
        match self.name {
            ActorName::Https => "clace::https",
            _ => "clace::http",
        }
    }

    fn start_server(&mut self, ctx: &mut Context<Self>) {
        let Some(socket) = &self.socket else { return };
        let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        let server = socket.try_clone().and_then(|sock| match &self.tls {
            Some(tls) => https_server(
                sock,
                (**tls).clone(),
                Arc::clone(&self.router),
                self.limits,
                self.workers,
            ),
            None => {
                let router = Arc::clone(&self.router);
                let limits = self.limits;
                let state = Arc::clone(&self.router);
                HttpServer::new(move || router::app(Arc::clone(&router), Scheme::Http))
                    .workers(self.workers)
                    .disable_signals()
                    .shutdown_timeout(limits.graceful_timeout.as_secs())
                    .client_request_timeout(limits.request_header_timeout)
                    .keep_alive(limits.keep_alive)
                    .tcp_nodelay(true)
                    .max_connections(limits.max_connections_per_worker)
                    .on_connect(move |conn, ext| on_connect(&state, conn, ext))
                    .listen(sock)
                    .map(HttpServer::run)
            }
        });
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                log::error!(target: self.target(), "cannot start the {} server on port {port}: {e}", self.name.as_str());
                self.failures += 1;
                ctx.stop();
                return;
            }
        };
        self.server = Some(server.handle());
        let join = actix_rt::spawn(server);
        ctx.spawn(join.into_actor(self).map(|res, act, ctx| {
            // Only the current server can end here: a restart drops this
            // future with the old context, and a shutdown sets the flag.
            if !act.shutting_down {
                log::error!(target: act.target(), "the {} server stopped on its own ({res:?}); restarting it", act.name.as_str());
                act.server = None;
                act.failures += 1;
                ctx.stop();
            }
        }));
        if self.scheme == Scheme::Https {
            self.router
                .https_port
                .store(u32::from(port), Ordering::Release);
        }
        self.health.set(self.name, ActorState::Running);
        let url = format!("{}://{}:{port}", self.scheme.as_str(), self.host);
        if self.announced {
            log::info!(target: self.target(), "{} listener restarted on {url}", self.name.as_str());
        } else {
            // Printed whatever the log level: scripts and tests read it.
            eprintln!("Server listening on {url}");
            log::info!(target: self.target(), "{} listener started with {} workers", self.name.as_str(), self.workers);
            self.announced = true;
        }
        self.failures = 0;
    }

    /// Stops the current server gracefully, in the background.
    fn stop_server(&mut self) {
        if let Some(handle) = self.server.take() {
            actix_rt::spawn(handle.stop(true));
        }
    }
}

type Tcp = actix_web::rt::net::TcpStream;
type Tls = actix_tls::accept::rustls_0_23::TlsStream<Tcp>;

/// Every new connection, HTTP or HTTPS (after its handshake): its local
/// address and the `acme-tls/1` mark; on HTTP the per-IP bound too (HTTPS
/// counts it before the handshake, see [`https_server`]).
fn on_connect(state: &RouterState, conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    router::mark_acme_tls(conn, ext);
    let (tcp, plain) = match (conn.downcast_ref::<Tcp>(), conn.downcast_ref::<Tls>()) {
        (Some(tcp), _) => (tcp, true),
        (None, Some(tls)) => (tls.get_ref().0, false),
        (None, None) => return,
    };
    if let Ok(local) = tcp.local_addr() {
        ext.insert(router::admin::LocalAddr(local));
    }
    if plain {
        let peer = tcp.peer_addr().ok().map(|a| a.ip());
        let conn = crate::limits::Conn(socket2::SockRef::from(tcp));
        (state.limits).on_connect(peer, conn, ext, &state.admin.metrics.refused);
    }
}

/// The HTTPS server: what actix-web's `HttpServer::listen_rustls_0_23`
/// builds (the same HTTP service settings, the acceptor with its handshake
/// timeout, the graceful-shutdown signal), with one step in front of the
/// TLS acceptor: the per-IP bound, counted as the connection is accepted
/// and given back when its service call (handshake and every request)
/// ends. `HttpServer` has no place for that step, and `on_connect` runs
/// only once the handshake is done, too late to keep one address from
/// holding every handshake slot of a worker.
fn https_server(
    sock: TcpListener,
    tls: rustls::ServerConfig,
    router: Arc<RouterState>,
    limits: Limits,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    use actix_service::{IntoServiceFactory as _, Service as _, ServiceFactoryExt as _};

    // `[limits] max_handshakes_per_worker`, as it is now (a SIGHUP may have
    // changed it): actix-tls keeps one value for the process, which each
    // worker thread of this server reads when it starts.
    actix_tls::accept::max_concurrent_tls_connect(router.limits.max_handshakes_per_worker());
    let builder = actix_server::Server::build();
    let graceful = builder.graceful_shutdown_signal();
    let builder = builder
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(limits.graceful_timeout.as_secs())
        .max_concurrent_connections(limits.max_connections_per_worker);
    let server = builder.listen("clace-https", sock, move || {
        let graceful = graceful.clone();
        let state = Arc::clone(&router);
        let app = router::app(Arc::clone(&router), Scheme::Https)
            .into_factory()
            .map_err(|err| err.error_response());
        let http = actix_http::HttpService::build()
            .graceful_shutdown_signal(move || {
                let signal = graceful.clone();
                async move { signal.notified().await }
            })
            .keep_alive(limits.keep_alive)
            .client_request_timeout(limits.request_header_timeout)
            // HttpServer's default: a closing connection gets 1 s to end.
            .client_disconnect_timeout(Duration::from_secs(1))
            .on_connect_ext({
                let state = Arc::clone(&state);
                move |io: &BatchedWrites<Tls>, ext: &mut actix_web::dev::Extensions| {
                    on_connect(&state, io.get_ref() as &dyn std::any::Any, ext)
                }
            })
            // The application reads no part of its config (the admin
            // endpoints take the local address from `on_connect`).
            .finish(actix_service::map_config(app, |_| {
                actix_web::dev::AppConfig::default()
            }));
        let http = tls_acceptor(tls.clone(), limits.tls_handshake_timeout)
            .and_then(http.map_err(actix_tls::accept::TlsError::Service));
        actix_service::apply_fn_factory(http, move |io: Tcp, service| {
            let peer = io.peer_addr().ok().map(|a| a.ip());
            let admitted = state.limits.admit(peer, &state.admin.metrics.refused);
            // Over the bound: `io` is dropped here, which closes it.
            let call = admitted.map(|guard| (guard, service.call(io)));
            async move {
                match call {
                    Ok((guard, call)) => {
                        let result = call.await;
                        drop(guard);
                        result
                    }
                    Err(_) => Ok(()),
                }
            }
        })
    })?;
    Ok(server.run())
}

/// The TLS half of what actix-http's `rustls_0_23_with_config` builds:
/// `h2` and `http/1.1` offered by ALPN (then the config's others, such as
/// `acme-tls/1`), the handshake timeout, then the protocol the client
/// chose, with `TCP_NODELAY` set. The stream comes wrapped in
/// [`BatchedWrites`], which gathers an HTTP/2 connection's small writes
/// (see there why).
fn tls_acceptor(
    mut tls: rustls::ServerConfig,
    handshake_timeout: Duration,
) -> impl actix_service::ServiceFactory<
    Tcp,
    Config = (),
    Response = (BatchedWrites<Tls>, actix_http::Protocol, Option<SocketAddr>),
    Error = actix_tls::accept::TlsError<std::io::Error, actix_http::error::DispatchError>,
    InitError = (),
> {
    use actix_service::ServiceFactoryExt as _;

    let mut protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    for p in std::mem::take(&mut tls.alpn_protocols) {
        if !protocols.contains(&p) {
            protocols.push(p);
        }
    }
    tls.alpn_protocols = protocols;
    let mut acceptor = actix_tls::accept::rustls_0_23::Acceptor::new(tls);
    acceptor.set_handshake_timeout(handshake_timeout);
    acceptor
        .map_err(actix_tls::accept::TlsError::into_service_error)
        .and_then(|io: Tls| async move {
            let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            let protocol = if h2 {
                actix_http::Protocol::Http2
            } else {
                actix_http::Protocol::Http1
            };
            // A response head and body go out as separate TLS records:
            // without this, Nagle holds the second one for the client's
            // delayed ACK (40 ms per request on keep-alive connections).
            let _ = io.get_ref().0.set_nodelay(true);
            let peer = io.get_ref().0.peer_addr().ok();
            Ok((BatchedWrites::new(io, h2), protocol, peer))
        })
}

/// Restart backoff after failures: 0, 0.1 s, 0.2 s, 0.4 s ... at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(30_000))
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::fault_point(self.name);
        if self.shutting_down {
            return;
        }
        let delay = backoff(self.failures);
        if delay.is_zero() {
            self.start_server(ctx);
        } else {
            log::warn!(target: self.target(), "{} listener restarts in {delay:?}", self.name.as_str());
            ctx.run_later(delay, |act, ctx| act.start_server(ctx));
        }
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.stop_server();
        Running::Stop
    }
}

impl Supervised for Listener {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.health.set(self.name, ActorState::Restarting);
        // A panic may have left the old server running: stop it.
        self.stop_server();
        log::info!(target: self.target(), "restarting the {} listener", self.name.as_str());
    }
}

impl Handler<Restart> for Listener {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Context<Self>) {
        crate::fault_point(self.name);
        // Asked for, not a failure: no backoff.
        self.failures = 0;
        ctx.stop();
    }
}

impl Handler<Rebind> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Rebind, ctx: &mut Context<Self>) {
        log::info!(target: self.target(), "{} listener moves to {}", self.name.as_str(), msg.host);
        self.host = msg.host;
        // Replacing our duplicate closes the old port once its server has
        // stopped; the new bind is announced like the first one.
        self.socket = Some(msg.socket);
        self.announced = false;
        self.failures = 0;
        ctx.stop();
    }
}

impl Handler<Shutdown> for Listener {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        // Our duplicate of the socket would keep the port accepting
        // connections that nobody serves: close it with the server.
        self.socket = None;
        let handle = self.server.take();
        let name = self.name.as_str();
        Box::pin(async move {
            if let Some(h) = handle {
                h.stop(true).await;
            }
            log::info!(target: "clace::supervisor", "{name} listener stopped");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_secs(30));
    }
}
