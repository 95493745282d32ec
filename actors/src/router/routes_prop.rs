//! Randomized tests (proptest) of route matching: for any routes and any
//! Host and path, the route found is the one the README's rules pick (a
//! matching domain beats none, then the longest prefix matched on segment
//! boundaries, the first written on a tie), and a static route's prefix
//! and the rest it strips make the path again.
//!
//! Cases: `PROPTEST_CASES`, else 2,000 per property.

use std::path::PathBuf;

use proptest::prelude::*;

use super::{normalize_host, strip_prefix, RouteTable};
use crate::settings::{Route, RouteTarget};

use crate::proptest_config::config;

/// Paths built from a few segments, so that prefixes of one another are
/// common (`/a`, `/a/`, `/a/b`, `/ab`).
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "ab", "b", "", "%2e", "."]),
        0..4,
    )
    .prop_flat_map(|segs| {
        (Just(segs), any::<bool>()).prop_map(|(segs, slash)| {
            let mut p = format!("/{}", segs.join("/"));
            if slash && !p.ends_with('/') {
                p.push('/');
            }
            p
        })
    })
}

fn route() -> impl Strategy<Value = Route> {
    (
        prop::option::of(prop::sample::select(vec!["a.test", "b.test"])),
        path(),
        0usize..1000,
    )
        .prop_map(|(domain, path, id)| Route {
            domain: domain.map(str::to_string),
            path,
            // The id tells the routes apart in the assertions.
            target: RouteTarget::Static(PathBuf::from(id.to_string())),
            max_body: Some(0),
        })
}

fn host() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec![
            "a.test",
            "A.TEST:8443",
            "a.test.",
            "b.test:80",
            "c.test",
            "[::1]:80",
            "",
        ])
        .prop_map(str::to_string),
        "\\PC{0,12}",
    ])
}

/// Whether `prefix` covers `path` segment-wise: the path is the prefix
/// (without its one trailing slash) or continues it with a `/`.
fn covers(prefix: &str, path: &str) -> bool {
    let p = prefix.strip_suffix('/').unwrap_or(prefix);
    path == p || path.starts_with(&format!("{p}/"))
}

/// The rules, read plainly: the index of the route to use.
fn by_the_book(routes: &[Route], host: Option<&str>, path: &str) -> Option<usize> {
    let host = host.map(normalize_host);
    let mut best: Option<(usize, bool, usize)> = None;
    for (i, r) in routes.iter().enumerate() {
        let domain_match = match &r.domain {
            Some(d) if host.as_deref() == Some(d.as_str()) => true,
            Some(_) => continue,
            None => false,
        };
        if !covers(&r.path, path) {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, dm, len)) => (domain_match, r.path.len()) > (dm, len),
        };
        if better {
            best = Some((i, domain_match, r.path.len()));
        }
    }
    best.map(|(i, _, _)| i)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_route_found_is_the_one_the_rules_pick(
        routes in prop::collection::vec(route(), 0..6),
        host in host(),
        path in prop_oneof![path(), "\\PC{0,16}"],
    ) {
        let table = RouteTable::new(routes.clone());
        let found = table.find(host.as_deref(), &path);
        let expected = by_the_book(&routes, host.as_deref(), &path).map(|i| &routes[i]);
        prop_assert_eq!(found, expected);
        if let Some(r) = found {
            // A static route: prefix + rest is the path again.
            let rest = strip_prefix(r, &path);
            prop_assert!(rest.is_empty() || rest.starts_with('/'), "rest {:?}", rest);
            prop_assert_eq!(format!("{}{}", r.path.trim_end_matches('/'), rest), path);
        }
    }

    #[test]
    fn host_normalisation_never_panics_and_drops_the_port(host in "\\PC{0,24}", port in 1u16..) {
        let plain = normalize_host(&host);
        prop_assert!(!plain.ends_with('.'));
        prop_assert_eq!(plain.to_ascii_lowercase(), plain.clone());
        if !host.contains(':') && !host.starts_with('[') {
            prop_assert_eq!(normalize_host(&format!("{host}:{port}")), plain);
        }
    }
}
