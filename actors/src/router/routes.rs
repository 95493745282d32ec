//! Route matching: a domain match beats no domain, then the longest prefix.

use crate::settings::{Route, RouteTarget};

/// The configured routes, in a form that is quick to match.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        RouteTable { routes }
    }

    /// The route for a request. `host` is the Host header (any case, with or
    /// without port); `path` the request path as received.
    ///
    /// A prefix matches on segment boundaries: `/api` matches `/api`,
    /// `/api/` and `/api/x`, not `/apix` (a prefix ending in `/` matches
    /// anything under it). Ties cannot happen between distinct routes
    /// except for duplicates, where the first one written wins.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let host = host.map(normalize_host);
        let mut best: Option<(&Route, (bool, usize))> = None;
        for route in &self.routes {
            let domain_match = match &route.domain {
                Some(d) => match &host {
                    Some(h) if h == d => true,
                    _ => continue,
                },
                None => false,
            };
            if !prefix_matches(&route.path, path) {
                continue;
            }
            let rank = (domain_match, route.path.len());
            if best.as_ref().is_none_or(|(_, r)| rank > *r) {
                best = Some((route, rank));
            }
        }
        best.map(|(r, _)| r)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// What is left of the path once the route's prefix is stripped, for static
/// routes (proxies keep the full path).
pub fn strip_prefix<'a>(route: &Route, path: &'a str) -> &'a str {
    match route.target {
        RouteTarget::Static(_) => {
            let prefix = route.path.trim_end_matches('/');
            path.get(prefix.len()..).unwrap_or("")
        }
        RouteTarget::Proxy(_) => path,
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if let Some(bare) = prefix.strip_suffix('/') {
        // One slash only: `/a//` is `/a/` plus an empty segment, so `/a/`
        // is under it and `/a` is not (found by the randomized tests).
        return path.starts_with(prefix) || path == bare;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Lower-case, without port and trailing dot. `[::1]:80` keeps its brackets.
pub fn normalize_host(host: &str) -> String {
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
#[path = "routes_prop.rs"]
mod prop;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn route(domain: Option<&str>, path: &str, name: &str) -> Route {
        Route {
            domain: domain.map(str::to_string),
            path: path.to_string(),
            target: RouteTarget::Static(PathBuf::from(name)),
            max_body: Some(0),
        }
    }

    fn name(r: Option<&Route>) -> Option<String> {
        r.map(|r| match &r.target {
            RouteTarget::Static(p) => p.display().to_string(),
            RouteTarget::Proxy(p) => p.url.clone(),
        })
    }

    #[test]
    fn domain_beats_no_domain_then_longest_prefix() {
        let t = RouteTable::new(vec![
            route(None, "/", "root"),
            route(None, "/api", "api"),
            route(None, "/api/v2", "v2"),
            route(Some("a.test"), "/", "a-root"),
        ]);
        assert_eq!(name(t.find(Some("b.test"), "/api/x")), Some("api".into()));
        assert_eq!(name(t.find(Some("b.test"), "/api/v2/x")), Some("v2".into()));
        assert_eq!(name(t.find(Some("b.test"), "/apix")), Some("root".into()));
        assert_eq!(
            name(t.find(Some("A.TEST:8443"), "/api/v2")),
            Some("a-root".into())
        );
        assert_eq!(name(t.find(Some("a.test."), "/")), Some("a-root".into()));
        assert_eq!(name(t.find(None, "/api")), Some("api".into()));
    }

    #[test]
    fn nothing_matched() {
        let t = RouteTable::new(vec![
            route(Some("a.test"), "/", "a"),
            route(None, "/x", "x"),
        ]);
        assert!(t.find(Some("b.test"), "/y").is_none());
        assert!(t.find(None, "/").is_none());
    }

    #[test]
    fn prefixes() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/a", "/a"));
        assert!(prefix_matches("/a", "/a/b"));
        assert!(!prefix_matches("/a", "/ab"));
        assert!(prefix_matches("/a/", "/a"));
        assert!(prefix_matches("/a/", "/a/b"));
        // Regression (randomized tests): a prefix with two trailing slashes.
        assert!(prefix_matches("//", "/"));
        assert!(prefix_matches("/a//", "/a/"));
        assert!(!prefix_matches("/a//", "/a"));
    }

    #[test]
    fn strips_static_prefix_only() {
        let r = route(None, "/site", "s");
        assert_eq!(strip_prefix(&r, "/site/a.html"), "/a.html");
        assert_eq!(strip_prefix(&r, "/site"), "");
        let r = route(None, "/", "s");
        assert_eq!(strip_prefix(&r, "/a.html"), "/a.html");
    }

    #[test]
    fn hosts() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("a.test."), "a.test");
    }
}
