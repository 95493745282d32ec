//! The upstream client: hyper's (hyper-util's pooled client over
//! hyper-rustls), one per worker and per kind of upstream TLS.
//!
//! Why hyper and not awc (which the proxy used first): hyper adds no header
//! of its own (awc's encoder always wrote `Date`), sends body chunks as they
//! come (awc flushed in 8 KiB steps), hands over the connection of a `101`
//! (WebSocket), lets each route trust its own CA and send its own SNI, and
//! retries a request that a pooled connection closed before it was sent.
//! It is also the client the ACME issuer already runs on.
//!
//! Pool: idle connections are kept 90 s, at most 64 per upstream and
//! worker. Connecting (TCP) may take the route's `connect_timeout`; the TLS
//! handshake counts in the route's `timeout`. HTTP/1.1 only, so that the
//! client's `Host` reaches the upstream as it is.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::ServerName;

use crate::settings::ProxyTarget;

/// The error type of request bodies sent upstream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body sent upstream.
pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;
/// One pooled client.
pub type UpClient = Client<HttpsConnector<HttpConnector>, UpBody>;

/// How long an idle upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream and worker.
const POOL_MAX_IDLE: usize = 64;

/// What tells two upstream clients apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    connect_timeout: Duration,
}

/// The clients of one worker, made on first use for each kind of route.
#[derive(Default)]
pub struct Upstreams {
    clients: Mutex<HashMap<Kind, UpClient>>,
}

impl Upstreams {
    /// The client for `target`'s TLS settings (made and kept on first use).
    /// Fails only when its `proxy_ca_file` cannot be read (it was checked
    /// at start; it may have changed since).
    pub fn client(&self, target: &ProxyTarget) -> Result<UpClient, String> {
        let kind = Kind {
            ca_file: target.ca_file.clone(),
            server_name: target.server_name.clone(),
            connect_timeout: target.connect_timeout,
        };
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(&kind) {
            return Ok(c.clone());
        }
        let client = build(&kind)?;
        clients.insert(kind, client.clone());
        Ok(client)
    }
}

fn build(kind: &Kind) -> Result<UpClient, String> {
    let tls = crate::certs::client_tls::client_config(kind.ca_file.as_deref(), "proxy_ca_file")?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(kind.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &kind.server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("proxy_server_name {name}: {e}"))?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let connector = builder.enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        // The client's Host is sent (see headers.rs); the URL's only for
        // a request that had none (an HTTP/1.0 client).
        .set_host(true)
        .build(connector))
}
