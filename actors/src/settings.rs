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
    pub storage_location: PathBuf,
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
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    /// Serve files from this folder (absolute, exists at start).
    Static(PathBuf),
    /// Forward to this upstream: `http://` or `https://` URL, no trailing `/`.
    Proxy {
        url: String,
        /// How long the upstream may take to send its response head (504 after).
        timeout: std::time::Duration,
    },
}
