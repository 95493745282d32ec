//! The configuration as written: serde structs that mirror the TOML keys.
//!
//! Every field is required here because the embedded defaults provide every
//! key; a file or the environment only overrides some of them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub http: RawHttp,
    pub https: RawHttps,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RawRoute>,
    pub limits: RawLimits,
    pub admin: RawAdmin,
    pub logging: RawLogging,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_line: i64,
    pub max_header_total: i64,
    pub max_handshakes_per_worker: i64,
    pub max_conns_per_ip: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub on_listeners: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub host: String,
    pub port: i64,
    pub redirect_to_https: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttps {
    pub host: String,
    pub port: i64,
    pub enable_cert_lookup: bool,
    pub service_email: String,
    pub use_staging: bool,
    pub cert_location: String,
    pub storage_location: String,
    pub acme_directory_url: String,
    pub acme_ca_file: String,
    pub domains: Vec<String>,
    pub cert_watch: String,
    pub cert_rescan_interval: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub domain: String,
    #[serde(default = "root_path")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#static: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Seconds a proxied upstream may take to send its response head
    /// (proxy routes only; 60 when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Seconds connecting to the upstream may take (proxy routes; 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<i64>,
    /// Seconds of silence between body bytes or WebSocket frames (proxy
    /// routes; 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<i64>,
    /// PEM roots for an `https://` upstream (proxy routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_ca_file: Option<String>,
    /// The name sent as SNI and verified (proxy routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_server_name: Option<String>,
    /// Largest request body in bytes; 0: none allowed (static routes'
    /// default); proxy routes: no limit unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<i64>,
}

/// The `timeout` of a proxy route that gives none.
pub const DEFAULT_PROXY_TIMEOUT: i64 = 60;
/// The `connect_timeout` of a proxy route that gives none.
pub const DEFAULT_CONNECT_TIMEOUT: i64 = 5;
/// The `idle_timeout` of a proxy route that gives none (five minutes).
pub const DEFAULT_IDLE_TIMEOUT: i64 = 300;

fn root_path() -> String {
    "/".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub level: String,
}

/// The known keys of each section, for unknown-key errors and suggestions.
pub const SECTIONS: &[(&str, &[&str])] = &[
    ("http", &["host", "port", "redirect_to_https"]),
    (
        "https",
        &[
            "host",
            "port",
            "enable_cert_lookup",
            "service_email",
            "use_staging",
            "cert_location",
            "storage_location",
            "acme_directory_url",
            "acme_ca_file",
            "domains",
            "cert_watch",
            "cert_rescan_interval",
        ],
    ),
    (
        "route",
        &[
            "domain",
            "path",
            "static",
            "proxy",
            "timeout",
            "connect_timeout",
            "idle_timeout",
            "proxy_ca_file",
            "proxy_server_name",
            "max_body",
        ],
    ),
    (
        "limits",
        &[
            "max_header_line",
            "max_header_total",
            "max_handshakes_per_worker",
            "max_conns_per_ip",
        ],
    ),
    ("admin", &["on_listeners"]),
    ("logging", &["level"]),
];

/// The keys that take a whole number (`route.timeout`: that key of every
/// `[[route]]`). The `config` crate would round a float given there
/// (`1.5` -> 2) and turn `true` into 1; `load_from` refuses both first.
pub const WHOLE_NUMBERS: &[&str] = &[
    "http.port",
    "https.port",
    "https.cert_rescan_interval",
    "route.timeout",
    "route.connect_timeout",
    "route.idle_timeout",
    "route.max_body",
    "limits.max_header_line",
    "limits.max_header_total",
    "limits.max_handshakes_per_worker",
    "limits.max_conns_per_ip",
];
