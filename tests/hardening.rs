//! Hardening (issue 11): the admin socket that file permissions guard,
//! `[admin] on_listeners`, request limits and their refusal counters.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::tls_util::{handshake, mode, World};
use crate::util::http::{get, read_response_from, Request, Response, IO_TIMEOUT};
use crate::util::{wait_until, DEADLINE};

/// `$CL_HOME/run/clace.sock`.
fn socket_of(home: &Path) -> PathBuf {
    home.join("run").join("clace.sock")
}

/// `METHOD target` over the admin socket.
fn over_socket(socket: &Path, method: &str, target: &str) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    read_response_from(BufReader::new(stream), method == "HEAD")
}

/// `GET target` on an HTTPS listener (certificate not checked).
fn https_get(addr: std::net::SocketAddr, target: &str) -> Response {
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    handshake(addr, Some("localhost"))
        .unwrap()
        .http1(request.as_bytes())
        .unwrap()
}

/// The value of the sample `name` (full, labels included) in `/_clace/metrics`.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn admin_socket_is_0600_serves_every_endpoint_and_goes_at_stop() {
    let world = World::with_certs();
    world.configure("", "", "");
    let mut daemon = world.serve_ready();
    let socket = socket_of(world.clace.cl_home());
    assert!(
        wait_until(DEADLINE, || socket.exists()),
        "no admin socket; stderr:\n{}",
        daemon.proc.stderr()
    );
    assert_eq!(mode(&socket), 0o600, "admin socket mode");

    let health = over_socket(&socket, "GET", "/_clace/health").unwrap();
    assert_eq!(health.status, 200, "{}", health.text());
    let certs = over_socket(&socket, "GET", "/_clace/certs").unwrap();
    assert_eq!(certs.status, 200, "{}", certs.text());
    assert!(certs.json().is_array());
    let metrics = over_socket(&socket, "GET", "/_clace/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("clace_tls_handshakes_total"));
    // The socket serves /_clace/ only, never the routes.
    assert_eq!(over_socket(&socket, "GET", "/").unwrap().status, 404);

    daemon.proc.signal(Signal::SIGTERM);
    let status = daemon.proc.wait_exit(DEADLINE);
    assert!(status.success(), "{}", daemon.proc.stderr());
    assert!(!socket.exists(), "the admin socket is removed at stop");
}

#[test]
fn restart_and_live_certs_go_through_the_socket_without_the_addr_file() {
    let world = World::with_certs();
    world.configure("", "", "");
    let daemon = world.serve_ready();
    let home = world.clace.cl_home();
    let socket = socket_of(home);
    assert!(wait_until(DEADLINE, || socket.exists()), "no admin socket");
    // Both listeners' ports unknown to the client.
    std::fs::remove_file(home.join("run").join("clace.addr")).unwrap();

    let restart = world.clace.run(&["restart", "certstore"]);
    assert_eq!(restart.code(), Some(0), "{}", restart.stderr);
    assert!(restart.stdout.contains("restarting certstore"));
    assert!(
        wait_until(DEADLINE, || {
            let text = over_socket(&socket, "GET", "/_clace/metrics")
                .map(|r| r.text())
                .unwrap_or_default();
            sample(&text, "clace_actor_restarts_total{actor=\"certstore\"}") == Some(1.0)
        }),
        "the cert store restart is counted; stderr:\n{}",
        daemon.proc.stderr()
    );

    // What the daemon serves: the self-signed default it created.
    let live = world.clace.run(&["certs", "--live", "--json"]);
    assert_eq!(live.code(), Some(0), "{}", live.stderr);
    let listing: serde_json::Value = serde_json::from_str(&live.stdout).unwrap();
    let sources: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["source"].as_str())
        .collect();
    assert_eq!(sources, ["self-signed"], "{}", live.stdout);
    let table = world.clace.run(&["certs", "--live"]);
    assert_eq!(table.code(), Some(0), "{}", table.stderr);
    assert!(table.stdout.contains("self-signed"), "{}", table.stdout);
}

#[test]
fn restart_falls_back_to_the_addr_file_and_says_when_no_daemon_runs() {
    let world = World::with_certs();
    world.configure("", "", "");
    let mut daemon = world.serve_ready();
    let socket = socket_of(world.clace.cl_home());
    assert!(wait_until(DEADLINE, || socket.exists()), "no admin socket");
    // Without the socket file the listeners in clace.addr are asked.
    std::fs::remove_file(&socket).unwrap();
    let restart = world.clace.run(&["restart", "watcher"]);
    assert_eq!(restart.code(), Some(0), "{}", restart.stderr);

    daemon.proc.signal(Signal::SIGTERM);
    daemon.proc.wait_exit(DEADLINE);
    let none = world.clace.run(&["restart", "watcher"]);
    assert_eq!(none.code(), Some(1), "{}", none.stderr);
    assert!(none.stderr.contains("no daemon running"), "{}", none.stderr);
    let live = world.clace.run(&["certs", "--live"]);
    assert_eq!(live.code(), Some(1), "{}", live.stderr);
}

#[test]
fn a_stale_socket_is_replaced() {
    let world = World::with_certs();
    world.configure("", "", "");
    let socket = socket_of(world.clace.cl_home());
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket file whose listener is gone: what a killed daemon leaves.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let daemon = world.serve_ready();
    let health = over_socket(&socket, "GET", "/_clace/health");
    assert_eq!(
        health.map(|r| r.status).ok(),
        Some(200),
        "stderr:\n{}",
        daemon.proc.stderr()
    );
}

#[test]
fn admin_endpoints_off_the_listeners_still_answer_on_the_socket() {
    let world = World::with_certs();
    world.configure("", "", "[admin]\non_listeners = false\n");
    let daemon = world.serve_ready();
    for path in ["/_clace/certs", "/_clace/metrics"] {
        assert_eq!(get(daemon.http, path).status, 404, "http {path}");
        assert_eq!(https_get(daemon.https, path).status, 404, "https {path}");
    }
    let restart = Request::new("POST", "/_clace/actors/watcher/restart").send(daemon.http);
    assert_eq!(restart.status, 404);
    // Health stays public.
    assert_eq!(get(daemon.http, "/_clace/health").status, 200);
    assert_eq!(https_get(daemon.https, "/_clace/health").status, 200);
    let socket = socket_of(world.clace.cl_home());
    let certs = over_socket(&socket, "GET", "/_clace/certs").unwrap();
    assert_eq!(certs.status, 200, "{}", certs.text());
    let restart = over_socket(&socket, "POST", "/_clace/actors/watcher/restart").unwrap();
    assert_eq!(restart.status, 202, "{}", restart.text());
}

#[test]
fn sighup_turns_the_admin_endpoints_off_the_listeners() {
    let world = World::with_certs();
    world.configure("", "", "");
    let daemon = world.serve_ready();
    assert_eq!(get(daemon.http, "/_clace/certs").status, 200);
    world.configure("", "", "[admin]\non_listeners = false\n");
    daemon.proc.signal(Signal::SIGHUP);
    assert!(
        wait_until(DEADLINE, || get(daemon.http, "/_clace/certs").status == 404),
        "certs still served on HTTP after the reload; stderr:\n{}",
        daemon.proc.stderr()
    );
}
