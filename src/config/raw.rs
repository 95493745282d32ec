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
    pub logging: RawLogging,
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
}

/// The `timeout` of a proxy route that gives none.
pub const DEFAULT_PROXY_TIMEOUT: i64 = 60;

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
    ("route", &["domain", "path", "static", "proxy", "timeout"]),
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
];
