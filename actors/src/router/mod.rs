//! Request handling shared by the HTTP and HTTPS listeners: the daemon's own
//! `/_clace/` endpoints first, then the redirect to HTTPS, then the routes.

pub mod admin;
pub mod proxy;
pub mod routes;
pub mod static_files;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use arc_swap::ArcSwap;

use crate::settings::RouteTarget;
use admin::Admin;
pub use routes::RouteTable;

/// What every request handler of both listeners shares.
pub struct RouterState {
    /// Swapped whole on SIGHUP; a request reads one version.
    pub routes: ArcSwap<RouteTable>,
    pub redirect_to_https: AtomicBool,
    /// The bound HTTPS port for redirects; 0 while HTTPS is not listening.
    pub https_port: AtomicU32,
    pub admin: Admin,
    /// `[limits]`, read by every request and connection.
    pub limits: crate::limits::RequestLimits,
}

impl RouterState {
    pub fn new(routes: RouteTable, redirect_to_https: bool, admin: Admin) -> RouterState {
        RouterState {
            routes: ArcSwap::from_pointee(routes),
            redirect_to_https: AtomicBool::new(redirect_to_https),
            https_port: AtomicU32::new(0),
            admin,
            limits: crate::limits::RequestLimits::default(),
        }
    }
}

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Builds the actix-web application of one worker of one listener.
pub fn app(
    state: Arc<RouterState>,
    scheme: Scheme,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .app_data(web::Data::from(state))
        .app_data(web::Data::new(scheme))
        // One set of upstream clients per worker, each with its pool.
        .app_data(web::Data::new(proxy::Upstreams::default()))
        .app_data(web::PayloadConfig::new(usize::MAX))
        .default_service(web::to(handle))
}

/// Marks a connection that negotiated `acme-tls/1`: a TLS-ALPN-01
/// validation, on which no HTTP is served (interface §9).
#[derive(Debug, Clone, Copy)]
pub struct AcmeTlsConnection;

/// The listener's `on_connect` hook: sets [`AcmeTlsConnection`] on an
/// `acme-tls/1` connection.
pub fn mark_acme_tls(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>() {
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() == Some(crate::certs::resolver::ACME_TLS_ALPN) {
            ext.insert(AcmeTlsConnection);
        }
    }
}

/// Every request: `/_clace/`, then the redirect, then the routes, else 404.
async fn handle(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<RouterState>,
    scheme: web::Data<Scheme>,
    upstreams: web::Data<proxy::Upstreams>,
) -> HttpResponse {
    if req.conn_data::<AcmeTlsConnection>().is_some() {
        // A TLS-ALPN-01 connection carries no HTTP: refuse and close.
        return HttpResponse::MisdirectedRequest().force_close().finish();
    }
    if let Some(refusal) = state.limits.check_head(&req, &state.admin.metrics.refused) {
        return refusal;
    }
    let path = req.path();
    if path == "/_clace" || path.starts_with("/_clace/") {
        return state.admin.handle(&req).await;
    }
    if *scheme.get_ref() == Scheme::Http && state.redirect_to_https.load(Ordering::Relaxed) {
        if let Some(resp) = redirect(&req, &state) {
            return resp;
        }
    }
    let host = request_host(&req);
    let table = state.routes.load();
    let Some(route) = table.find(host.as_deref(), path) else {
        return plain(
            actix_web::http::StatusCode::NOT_FOUND,
            "not found: no route matches this host and path\n",
        );
    };
    match &route.target {
        RouteTarget::Static(root) => {
            let refused = &state.admin.metrics.refused;
            if let Some(refusal) =
                crate::limits::static_body(&req, body, route.max_body, refused).await
            {
                return refusal;
            }
            let rest = routes::strip_prefix(route, path);
            static_files::serve(&req, root, rest).await
        }
        RouteTarget::Proxy(target) => {
            let name = format!("{}{}", route.domain.as_deref().unwrap_or(""), route.path);
            let res = proxy::forward(
                &req,
                body,
                upstreams.get_ref(),
                target,
                route.max_body,
                scheme.as_str(),
                &name,
            )
            .await;
            if res.extensions().get::<proxy::BodyRefused>().is_some() {
                state
                    .admin
                    .metrics
                    .refused
                    .count(crate::limits::Refusal::Body);
            }
            res
        }
    }
}

/// The Host of a request: the Host header (HTTP/1.1) or the URI authority (HTTP/2).
fn request_host(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
}

/// 308 to the same path and query on the HTTPS port, once HTTPS listens.
fn redirect(req: &HttpRequest, state: &RouterState) -> Option<HttpResponse> {
    let port = state.https_port.load(Ordering::Acquire);
    if port == 0 {
        return None;
    }
    let host =
        request_host(req).map_or_else(|| "localhost".to_string(), |h| routes::normalize_host(&h));
    let path_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{host}{path_query}")
    } else {
        format!("https://{host}:{port}{path_query}")
    };
    Some(
        HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, location))
            .content_type("text/plain; charset=utf-8")
            .body("moved to https\n"),
    )
}

/// A short plain-text response.
pub fn plain(status: actix_web::http::StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}
