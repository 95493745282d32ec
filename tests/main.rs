//! Black-box tests of the `clace` binary: each test starts the real daemon
//! (`CARGO_BIN_EXE_clace`) in a temporary `CL_HOME`, on port 0, and talks to
//! it over sockets and signals only. One integration binary keeps link time
//! down; `util` holds the process guard, the HTTP client and the upstreams.
// Tests may unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod util;

mod acme;
mod cluster;

mod cli;
mod config;
mod http_routes;
mod proxy;
mod proxy_live;
mod signals;
mod static_files;
mod systemd;

mod admin;
mod certs_cli;
mod hardening;
mod http2;
mod https;
mod reload;
mod supervision;
mod tls_util;
