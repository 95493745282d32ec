//! Checks a [`RawConfig`] into the actors' [`Settings`] ("parse, don't
//! validate"): after this, a port is an enum, a path is absolute and
//! expanded, a route has exactly one target.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clace_actors::settings::{
    AdminSettings, CertWatch, HttpSettings, HttpsSettings, LimitSettings, Port, ProxyTarget, Route,
    RouteTarget, Settings,
};

use super::expand::expand_path;
use super::raw::{RawConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_PROXY_TIMEOUT};
use super::{err, ConfigError, Origins};

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Returns the settings and the effective configuration with paths expanded.
pub(super) fn check(
    mut raw: RawConfig,
    home: &Path,
    origins: &Origins<'_>,
) -> Result<(Settings, RawConfig), ConfigError> {
    let bad = |key: &str, msg: String| err(format!("{}: `{key}` {msg}", origins.of(key)));

    let http_port = port(raw.http.port).ok_or_else(|| {
        bad(
            "http.port",
            format!(
                "is {}; accepted: -1 (disabled), 0 (any free port) or 1..65535",
                raw.http.port
            ),
        )
    })?;
    let https_port = port(raw.https.port).ok_or_else(|| {
        bad(
            "https.port",
            format!(
                "is {}; accepted: -1 (disabled), 0 (any free port) or 1..65535",
                raw.https.port
            ),
        )
    })?;
    for (key, host) in [
        ("http.host", &raw.http.host),
        ("https.host", &raw.https.host),
    ] {
        if host.trim().is_empty() {
            return Err(bad(
                key,
                "is empty; give an address such as \"127.0.0.1\" or \"0.0.0.0\"".into(),
            ));
        }
        if host.chars().any(char::is_whitespace) {
            return Err(bad(key, format!("{host:?} contains white space")));
        }
    }

    let path_of = |key: &str, value: &mut String| -> Result<PathBuf, ConfigError> {
        let p = expand_path(value, home).map_err(|var| {
            bad(
                key,
                format!("uses ${var}, which is not set in the environment"),
            )
        })?;
        *value = p.display().to_string();
        Ok(p)
    };
    let cert_location = path_of("https.cert_location", &mut raw.https.cert_location)?;
    let (storage_location, storage_postgres) = if is_postgres_url(&raw.https.storage_location) {
        (
            home.join("run").join("storage-cache"),
            Some(
                postgres_url(&raw.https.storage_location, home)
                    .map_err(|m| bad("https.storage_location", m))?,
            ),
        )
    } else {
        (
            path_of("https.storage_location", &mut raw.https.storage_location)?,
            None,
        )
    };
    let acme_ca_file = if raw.https.acme_ca_file.is_empty() {
        None
    } else {
        Some(path_of("https.acme_ca_file", &mut raw.https.acme_ca_file)?)
    };

    let cert_watch = match raw.https.cert_watch.as_str() {
        "auto" => CertWatch::Auto,
        "poll" => CertWatch::Poll,
        other => {
            return Err(bad(
                "https.cert_watch",
                format!("is {other:?}; accepted: \"auto\" or \"poll\""),
            ))
        }
    };
    let interval = u64::try_from(raw.https.cert_rescan_interval)
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| {
            bad(
                "https.cert_rescan_interval",
                format!(
                    "is {}; accepted: a whole number of seconds, at least 1",
                    raw.https.cert_rescan_interval
                ),
            )
        })?;
    if !raw.https.acme_directory_url.is_empty() && !is_http_url(&raw.https.acme_directory_url) {
        return Err(bad(
            "https.acme_directory_url",
            format!(
                "{:?} is not an http:// or https:// URL",
                raw.https.acme_directory_url
            ),
        ));
    }
    let mut domains = Vec::with_capacity(raw.https.domains.len());
    for d in &raw.https.domains {
        domains.push(host_name(d).ok_or_else(|| {
            bad(
                "https.domains",
                format!("holds {d:?}, which is not a DNS name"),
            )
        })?);
    }

    let level = raw.logging.level.to_lowercase();
    if !LEVELS.contains(&level.as_str()) {
        return Err(bad(
            "logging.level",
            format!(
                "is {:?}; accepted: {}",
                raw.logging.level,
                LEVELS.join(", ")
            ),
        ));
    }
    raw.logging.level = level;

    let mut routes = Vec::with_capacity(raw.route.len());
    for (i, r) in raw.route.iter_mut().enumerate() {
        let key = |k: &str| format!("route[{i}].{k}");
        let rbad =
            |k: &str, msg: String| err(format!("{}: `{}` {msg}", origins.of("route"), key(k)));
        if !r.path.starts_with('/') {
            return Err(rbad(
                "path",
                format!("is {:?}; it must start with \"/\"", r.path),
            ));
        }
        if r.path == "/_clace" || r.path.starts_with("/_clace/") {
            return Err(rbad(
                "path",
                format!(
                    "is {:?}; /_clace/ is reserved for the daemon's own endpoints",
                    r.path
                ),
            ));
        }
        let domain = if r.domain.is_empty() {
            None
        } else {
            Some(host_name(&r.domain).ok_or_else(|| {
                rbad(
                    "domain",
                    format!("is {:?}; give a host name without port or scheme", r.domain),
                )
            })?)
        };
        let target = match (r.r#static.as_mut(), r.proxy.as_mut()) {
            (Some(_), Some(_)) => {
                return Err(err(format!(
                    "{}: route[{i}] has both `static` and `proxy`; give exactly one",
                    origins.of("route")
                )))
            }
            (None, None) => {
                return Err(err(format!(
                    "{}: route[{i}] has neither `static` nor `proxy`; give exactly one",
                    origins.of("route")
                )))
            }
            (Some(dir), None) => {
                for (key, given) in [
                    ("timeout", r.timeout.is_some()),
                    ("connect_timeout", r.connect_timeout.is_some()),
                    ("idle_timeout", r.idle_timeout.is_some()),
                    ("proxy_ca_file", r.proxy_ca_file.is_some()),
                    ("proxy_server_name", r.proxy_server_name.is_some()),
                ] {
                    if given {
                        return Err(rbad(
                            key,
                            "is for proxy routes; this route is static".into(),
                        ));
                    }
                }
                let p = expand_path(dir, home)
                    .map_err(|var| rbad("static", format!("uses ${var}, which is not set")))?;
                std::fs::canonicalize(&p)
                    .ok()
                    .filter(|c| c.is_dir())
                    .ok_or_else(|| {
                        rbad(
                            "static",
                            format!("is {}, which is not an existing folder", p.display()),
                        )
                    })?;
                *dir = p.display().to_string();
                // The folder as written (expanded), not canonicalized: the
                // static handler resolves it on every request, so a root
                // that is a link (`current -> releases/v2`) can be switched.
                RouteTarget::Static(p)
            }
            (None, Some(url)) => {
                if !is_http_url(url) {
                    return Err(rbad(
                        "proxy",
                        format!("is {url:?}; it must be an http:// or https:// URL with a host"),
                    ));
                }
                let seconds = |key: &str, value: &mut Option<i64>, default: i64| {
                    let given = *value.get_or_insert(default);
                    u64::try_from(given)
                        .ok()
                        .filter(|t| *t >= 1)
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            rbad(
                                key,
                                format!(
                                    "is {given}; accepted: a whole number of seconds, at least 1"
                                ),
                            )
                        })
                };
                let timeout = seconds("timeout", &mut r.timeout, DEFAULT_PROXY_TIMEOUT)?;
                let connect_timeout = seconds(
                    "connect_timeout",
                    &mut r.connect_timeout,
                    DEFAULT_CONNECT_TIMEOUT,
                )?;
                let idle_timeout =
                    seconds("idle_timeout", &mut r.idle_timeout, DEFAULT_IDLE_TIMEOUT)?;
                let ca_file = match r.proxy_ca_file.as_mut().filter(|f| !f.is_empty()) {
                    Some(f) => {
                        let p = expand_path(f, home).map_err(|var| {
                            rbad("proxy_ca_file", format!("uses ${var}, which is not set"))
                        })?;
                        if !p.is_file() {
                            return Err(rbad(
                                "proxy_ca_file",
                                format!("is {}, which is not a readable file", p.display()),
                            ));
                        }
                        *f = p.display().to_string();
                        Some(p)
                    }
                    None => None,
                };
                let server_name = match r.proxy_server_name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) => Some(host_name(n).ok_or_else(|| {
                        rbad(
                            "proxy_server_name",
                            format!("is {n:?}; give a host name without port or scheme"),
                        )
                    })?),
                    None => None,
                };
                RouteTarget::Proxy(ProxyTarget {
                    url: url.trim_end_matches('/').to_string(),
                    timeout,
                    connect_timeout,
                    idle_timeout,
                    ca_file,
                    server_name,
                })
            }
        };
        let max_body = match r.max_body {
            Some(n) => Some(u64::try_from(n).map_err(|_| {
                rbad(
                    "max_body",
                    format!("is {n}; accepted: a number of bytes, 0 for no body at all"),
                )
            })?),
            // A static route takes no body; a proxy route passes any on.
            None if matches!(target, RouteTarget::Static(_)) => Some(0),
            None => None,
        };
        routes.push(Route {
            domain,
            path: r.path.clone(),
            target,
            max_body,
        });
    }

    let limit = |key: &str, value: i64, least: i64| {
        usize::try_from(value)
            .ok()
            .filter(|v| i64::try_from(*v).is_ok_and(|v| v >= least))
            .ok_or_else(|| {
                bad(
                    key,
                    format!("is {value}; accepted: a whole number, at least {least}"),
                )
            })
    };
    let limits = LimitSettings {
        max_header_line: limit("limits.max_header_line", raw.limits.max_header_line, 256)?,
        max_header_total: limit("limits.max_header_total", raw.limits.max_header_total, 1024)?,
        max_handshakes_per_worker: limit(
            "limits.max_handshakes_per_worker",
            raw.limits.max_handshakes_per_worker,
            1,
        )?,
        max_conns_per_ip: match limit("limits.max_conns_per_ip", raw.limits.max_conns_per_ip, 0)? {
            0 => None,
            n => Some(n),
        },
    };
    if limits.max_header_line > limits.max_header_total {
        return Err(bad(
            "limits.max_header_line",
            format!(
                "is {}, more than limits.max_header_total ({}); a line is part of the head",
                limits.max_header_line, limits.max_header_total
            ),
        ));
    }

    let settings = Settings {
        http: HttpSettings {
            host: raw.http.host.clone(),
            port: http_port,
            redirect_to_https: raw.http.redirect_to_https,
        },
        https: HttpsSettings {
            host: raw.https.host.clone(),
            port: https_port,
            enable_cert_lookup: raw.https.enable_cert_lookup,
            service_email: raw.https.service_email.clone(),
            use_staging: raw.https.use_staging,
            cert_location,
            storage_location,
            storage_postgres,
            acme_directory_url: raw.https.acme_directory_url.clone(),
            acme_ca_file,
            domains,
            cert_watch,
            cert_rescan_interval: Duration::from_secs(interval),
        },
        routes,
        limits,
        admin: AdminSettings {
            on_listeners: raw.admin.on_listeners,
        },
    };
    Ok((settings, raw))
}

fn port(value: i64) -> Option<Port> {
    match value {
        -1 => Some(Port::Disabled),
        0..=65535 => u16::try_from(value).ok().map(Port::Bind),
        _ => None,
    }
}

/// `http://` or `https://` followed by a non-empty host.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            !host.is_empty() && !host.starts_with(':') && !url.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// A lower-cased DNS name (a leading `*.` allowed), without trailing dot.
fn host_name(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    ok.then_some(name)
}

/// Whether `storage_location` names PostgreSQL rather than a folder.
fn is_postgres_url(value: &str) -> bool {
    let v = value.trim_start();
    v.starts_with("postgres://") || v.starts_with("postgresql://")
}

/// `storage_location` as a PostgreSQL URL: `$VAR`s expanded (so that the
/// password comes from the environment), a host required. The expanded
/// URL is never printed (it may hold the password).
fn postgres_url(value: &str, home: &Path) -> Result<String, String> {
    let url = super::expand::expand_value(value.trim(), home)
        .map_err(|var| format!("uses ${var}, which is not set in the environment"))?;
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || rest.chars().any(char::is_whitespace) {
        return Err(
            "is not a PostgreSQL URL: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                .to_string(),
        );
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(port(-1), Some(Port::Disabled));
        assert_eq!(port(0), Some(Port::Bind(0)));
        assert_eq!(port(65535), Some(Port::Bind(65535)));
        assert_eq!(port(65536), None);
        assert_eq!(port(-2), None);
    }

    #[test]
    fn urls() {
        assert!(is_http_url("http://127.0.0.1:8080"));
        assert!(is_http_url("https://example.com/base"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("http://:80"));
        assert!(!is_http_url("127.0.0.1:8080"));
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("A.Test."), Some("a.test".into()));
        assert_eq!(host_name("*.wild.test"), Some("*.wild.test".into()));
        assert_eq!(host_name("a.test:80"), None);
        assert_eq!(host_name("http://a"), None);
        assert_eq!(host_name(""), None);
    }
}
