//! The plain, already-validated settings the actors run on.
//!
//! `src/` turns the configuration file into these; the actors never see the
//! file, the environment or the `config` crate. Every type here can only hold
//! a value that was checked: a port is an enum, paths are absolute and
//! expanded, a route has exactly one target.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the daemon runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub http: HttpSettings,
    pub https: HttpsSettings,
    pub routes: Vec<Route>,
    pub limits: LimitSettings,
    pub admin: AdminSettings,
}

/// `[limits]`: what one client may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Bytes of one request header line, then 431.
    pub max_header_line: usize,
    /// Bytes of the whole request head, then 431.
    pub max_header_total: usize,
    /// TLS handshakes in flight per worker thread.
    pub max_handshakes_per_worker: usize,
    /// Connections per client IP; `None`: no limit.
    pub max_conns_per_ip: Option<usize>,
}

/// `[admin]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSettings {
    /// Serve the loopback-only `/_clace/` endpoints on the listeners too
    /// (they are always on the Unix socket).
    pub on_listeners: bool,
}

/// Where a listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// `-1`: the listener is not started.
    Disabled,
    /// `0` binds any free port; otherwise that port.
    Bind(u16),
}

impl Port {
    /// The configuration-file form: `-1`, `0` or the port number.
    pub fn as_config_value(self) -> i64 {
        match self {
            Port::Disabled => -1,
            Port::Bind(port) => i64::from(port),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    pub host: String,
    pub port: Port,
    /// Answer 308 to the HTTPS port (except under `/_clace/`).
    pub redirect_to_https: bool,
}

/// How certificate folders are watched for changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertWatch {
    /// File events, plus a rescan every `cert_rescan_interval`.
    Auto,
    /// Rescans only.
    Poll,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpsSettings {
    pub host: String,
    pub port: Port,
    pub enable_cert_lookup: bool,
    /// ACME is enabled when this is not empty.
    pub service_email: String,
    pub use_staging: bool,
    pub cert_location: PathBuf,
    /// The storage folder; with PostgreSQL, the local copy of what it holds
    /// (`$CL_HOME/run/storage-cache`), which the cert store reads.
    pub storage_location: PathBuf,
    /// `storage_location` when it is a `postgres://` URL, `$VAR`s expanded.
    pub storage_postgres: Option<String>,
    pub acme_directory_url: String,
    pub acme_ca_file: Option<PathBuf>,
    pub domains: Vec<String>,
    pub cert_watch: CertWatch,
    pub cert_rescan_interval: Duration,
}

impl HttpsSettings {
    pub fn acme_enabled(&self) -> bool {
        !self.service_email.is_empty()
    }

    /// The folder of ACME certificates under `storage_location`, which
    /// `clace certs` and `/_clace/certs` list.
    pub fn acme_certificates(&self) -> PathBuf {
        self.storage_location.join("certificates")
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Lower-case host name to match, without port; `None` matches any host.
    pub domain: Option<String>,
    /// Path prefix; starts with `/`, never under `/_clace/`.
    pub path: String,
    pub target: RouteTarget,
    /// Largest request body in bytes (`max_body`); `None`: no limit.
    pub max_body: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    /// Serve files from this folder (absolute, exists at start).
    Static(PathBuf),
    /// Forward to an upstream.
    Proxy(ProxyTarget),
}

/// A `proxy` route's upstream and the bounds on talking to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyTarget {
    /// `http://` or `https://` URL, no trailing `/`.
    pub url: String,
    /// How long the upstream may take to send its response head (504 after).
    pub timeout: Duration,
    /// How long connecting (TCP and TLS) may take (502 after).
    pub connect_timeout: Duration,
    /// The longest silence between two bytes of a body or two WebSocket
    /// frames, either way; the exchange is ended after it.
    pub idle_timeout: Duration,
    /// PEM roots trusted for an `https://` upstream besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and verified, instead of the URL's host.
    pub server_name: Option<String>,
}
