//! The pure parts of the PostgreSQL back end: the URL (parsed, checked,
//! described without its password), the `LIKE` pattern of a prefix, the
//! advisory-lock number of a key, and error texts.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Config;

/// A parsed `storage_location`: the configuration to connect with and two
/// ways of naming the server without the password.
#[derive(Clone)]
pub(super) struct Target {
    pub config: Config,
    /// `host:port/db`, for messages.
    pub at: String,
    /// `postgres://user@host:port/db`.
    pub described: String,
}

const EXPECTED: &str = "expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE";

/// How long one TCP connection attempt (per host) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Target {
    /// Parses `url` (`postgres://` or `postgresql://`). The error never
    /// repeats the URL (it may hold the password): tokio-postgres' parse
    /// errors name the option, not its value.
    pub fn parse(url: &str) -> Result<Target, String> {
        let url = url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!("is not a PostgreSQL URL: {EXPECTED}"));
        }
        let mut config = Config::from_str(url).map_err(|e| {
            format!(
                "is not a valid PostgreSQL URL ({}): {EXPECTED}",
                error_text(&e)
            )
        })?;
        if config.get_hosts().is_empty() {
            return Err(format!("names no host: {EXPECTED}"));
        }
        if config.get_ssl_mode() == SslMode::Require {
            return Err(
                "asks for sslmode=require, but TLS to PostgreSQL is not supported yet: keep the \
                 server on loopback or a private network, or reach it through a local pgbouncer \
                 or stunnel"
                    .to_string(),
            );
        }
        // With `prefer` (the default) nothing is asked of the server.
        config.ssl_mode(SslMode::Disable);
        if config.get_application_name().is_none() {
            config.application_name("clace");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A dead server or network is noticed within about 20 s rather
        // than the system's 2 hours (a lock holder must learn that its
        // session, and so its lock, may be gone).
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(10));
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(3));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(20));
        }
        let at = at(&config);
        let described = match config.get_user() {
            Some(user) => format!("postgres://{user}@{at}"),
            None => format!("postgres://{at}"),
        };
        Ok(Target {
            config,
            at,
            described,
        })
    }
}

/// `host:port[,host:port...]/db` (the database defaults to the user's
/// name, as PostgreSQL's does).
fn at(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = match ports {
                [] => 5432,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(5432),
            };
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{}/{db}", hosts.join(","))
}

/// The `LIKE` pattern (escape character `\`) of every key under `prefix`:
/// `prefix/%` with `%`, `_` and `\` of the prefix escaped; `None` for the
/// empty prefix (every key).
pub(super) fn like_under(prefix: &str) -> Option<String> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return None;
    }
    let mut pattern = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str("/%");
    Some(pattern)
}

/// The advisory-lock number of a lock name: the 64-bit FNV-1a hash of
/// `clace:` followed by the name's UTF-8 bytes, as a signed bigint. Fixed
/// forever (instances of different versions must agree on it); the
/// prefix keeps clace's numbers apart from other users of advisory locks
/// in the same database.
pub(super) const fn lock_id(name: &str) -> i64 {
    let h = fnv1a64(fnv1a64(FNV_OFFSET, b"clace:"), name.as_bytes());
    i64::from_be_bytes(h.to_be_bytes())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const fn fnv1a64(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// An error with its causes (tokio-postgres' own `Display` says only
/// "db error" or "error connecting to server"), on one line.
pub(super) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text.replace('\n', "; ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn described_without_the_password() {
        let t = parse("postgres://clace:s3cret@db.test:5433/certs");
        assert_eq!(t.described, "postgres://clace@db.test:5433/certs");
        assert_eq!(t.at, "db.test:5433/certs");
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        let t = parse("postgresql://me:p%40ss@127.0.0.1/x?application_name=other");
        assert_eq!(t.described, "postgres://me@127.0.0.1:5432/x");
        assert_eq!(t.config.get_application_name(), Some("other"));
        // The database defaults to the user's name, as PostgreSQL's does.
        assert_eq!(
            parse("postgres://u:pw@h").described,
            "postgres://u@h:5432/u"
        );
        assert_eq!(parse("postgres://h:1/d").described, "postgres://h:1/d");
        assert_eq!(
            parse("postgres://u:pw@a:1,b:2/d").described,
            "postgres://u@a:1,b:2/d"
        );
        assert_eq!(parse("postgres://u@[::1]:7/d").at, "[::1]:7/d");
        assert_eq!(
            parse("postgres://u@%2Frun%2Fpg/d").at,
            "/run/pg:5432/d",
            "a Unix socket folder"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for url in [
            "mysql://u:s3cret@h/d",
            "postgres://u:s3cret@h:port/d",
            "postgres://u:s3cret@h/d?nonsense=1",
            "postgres://u:s3cret@h/d?sslmode=require",
            "postgres://u:s3cret@/d",
            "host=h password=s3cret",
        ] {
            let e = Target::parse(url).map(|_| ()).unwrap_err();
            assert!(!e.contains("s3cret"), "{url}: {e}");
            assert!(!e.is_empty());
        }
        let e = Target::parse("postgres://u:s3cret@h:port/d")
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("port"), "{e}");
        let e = Target::parse("postgres://u@h/d?sslmode=require")
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("TLS"), "{e}");
    }

    #[test]
    fn connection_defaults_and_no_tls() {
        let t = parse("postgres://u@h/d");
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(t.config.get_application_name(), Some("clace"));
        assert_eq!(t.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(t.config.get_keepalives_idle(), Duration::from_secs(10));
        let t = parse("postgres://u@h/d?connect_timeout=2&keepalives_idle=60");
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&Duration::from_secs(2))
        );
        assert_eq!(t.config.get_keepalives_idle(), Duration::from_secs(60));
    }

    #[test]
    fn like_patterns_escape_the_prefix() {
        assert_eq!(like_under(""), None);
        assert_eq!(like_under("/"), None);
        assert_eq!(like_under("certificates"), Some("certificates/%".into()));
        assert_eq!(like_under("certificates/"), Some("certificates/%".into()));
        assert_eq!(
            like_under("a_b/wildcard_.x%y\\z"),
            Some("a\\_b/wildcard\\_.x\\%y\\\\z/%".into())
        );
    }

    #[test]
    fn lock_ids_are_fixed() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        // clace's numbers: never to change (instances of different
        // versions share the locks).
        assert_eq!(
            lock_id("x"),
            i64::from_be_bytes(fnv1a64(FNV_OFFSET, b"clace:x").to_be_bytes())
        );
        assert_eq!(lock_id("issue_cert_a.test"), LOCK_ISSUE_CERT_A_TEST);
        assert_ne!(lock_id("issue_cert_a.test"), lock_id("issue_cert_b.test"));
    }

    /// Pinned (computed apart from this code); a change breaks
    /// mixed-version clusters.
    const LOCK_ISSUE_CERT_A_TEST: i64 = -6_821_811_324_231_801_093;

    #[test]
    fn error_texts_hold_their_causes_on_one_line() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error connecting to server")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("refused\nDETAIL: x"));
        assert_eq!(
            error_text(&e),
            "error connecting to server: refused; DETAIL: x"
        );
    }
}
