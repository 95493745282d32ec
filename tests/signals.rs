//! Signals (interface §7): a graceful stop on SIGTERM and SIGINT lets
//! in-flight requests finish and exits 0, a second SIGINT stops at once;
//! SIGUSR2 and SIGRTMIN+1, +2, +3 each restart one actor and only it (the
//! other listener's open connection survives). SIGUSR1 and SIGHUP are in
//! admin.rs.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::admin::restarts;
use crate::tls_util::{handshake, Tls, World};
use crate::util::http::{connect, get, read_response_from, Request, Response};
use crate::util::upstream::{Reply, Upstream};
use crate::util::{config_with, unique, wait_until, Clace, Daemon, DEADLINE};

fn proxy_to(upstream: &Upstream) -> (Clace, Daemon) {
    let clace = Clace::new();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/slow\"\nproxy = \"{}\"\n",
        upstream.url()
    )));
    let daemon = clace.serve();
    (clace, daemon)
}

/// Sends `GET target` on its own thread.
fn in_flight(daemon: &Daemon, target: &str) -> thread::JoinHandle<std::io::Result<Response>> {
    let addr = daemon.http;
    let request = Request::get(target);
    thread::spawn(move || request.try_send(addr))
}

/// A request is in flight to an upstream that answers after 2 s; `signal`
/// must let it finish and then exit 0.
fn graceful_stop_with(signal: Signal) {
    let upstream_delay = Duration::from_secs(2);
    let body = unique("slow-body").repeat(2000);
    let upstream = {
        let body = body.clone();
        Upstream::start(move |_| Reply::new(200, body.clone()).delay(upstream_delay))
    };
    let (_clace, mut daemon) = proxy_to(&upstream);

    let client = in_flight(&daemon, "/slow/report");
    assert!(
        wait_until(DEADLINE, || upstream.count() == 1),
        "the request never reached the upstream; stderr:\n{}",
        daemon.proc.stderr()
    );
    let signalled = Instant::now();
    daemon.proc.signal(signal);

    let resp = client.join().expect("client thread").unwrap_or_else(|e| {
        panic!(
            "the in-flight request must complete after {signal}: {e}; stderr:\n{}",
            daemon.proc.stderr()
        )
    });
    assert_eq!(resp.status, 200, "{signal}: in-flight request completes");
    assert!(resp.text() == body, "{signal}: the whole body arrives");

    let status = daemon.proc.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(0),
        "{signal}: graceful stop exits 0; stderr:\n{}",
        daemon.proc.stderr()
    );
    assert!(
        signalled.elapsed() < upstream_delay + Duration::from_secs(5),
        "the daemon exits soon after the last request"
    );
}

#[test]
fn sigterm_lets_an_in_flight_proxied_request_finish_then_exits_0() {
    graceful_stop_with(Signal::SIGTERM);
}

#[test]
fn sigint_lets_an_in_flight_proxied_request_finish_then_exits_0() {
    graceful_stop_with(Signal::SIGINT);
}

#[test]
fn idle_daemon_exits_0_promptly_on_sigterm_and_sigint() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let clace = Clace::new();
        clace.write_config(&config_with(""));
        let mut daemon = clace.serve();
        assert_eq!(get(daemon.http, "/_clace/health").status, 200);
        daemon.proc.signal(signal);
        let status = daemon.proc.wait_exit(Duration::from_secs(5));
        assert_eq!(
            status.code(),
            Some(0),
            "{signal}: stderr:\n{}",
            daemon.proc.stderr()
        );
    }
}

#[test]
fn second_sigint_stops_at_once() {
    let upstream_delay = Duration::from_secs(30);
    let upstream = Upstream::start(move |_| Reply::new(200, "too late").delay(upstream_delay));
    let (_clace, mut daemon) = proxy_to(&upstream);

    let client = in_flight(&daemon, "/slow/forever");
    assert!(
        wait_until(DEADLINE, || upstream.count() == 1),
        "the request never reached the upstream; stderr:\n{}",
        daemon.proc.stderr()
    );
    let lines_before = daemon.proc.stderr_lines().len();
    daemon.proc.signal(Signal::SIGINT);
    // Two signals sent back to back may be merged into one delivery; the
    // daemon logs the start of its graceful stop, so wait for a new line
    // before sending the second.
    wait_until(Duration::from_secs(3), || {
        daemon.proc.stderr_lines().len() > lines_before
    });
    assert!(
        daemon.proc.is_running(),
        "the first SIGINT waits for the in-flight request; stderr:\n{}",
        daemon.proc.stderr()
    );
    daemon.proc.signal(Signal::SIGINT);
    // At once: well before the upstream's 30 s. The README documents exit
    // code 0 here (the stop was asked for; nothing failed).
    let status = daemon.proc.wait_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.proc.stderr());
    let result = client.join().expect("client thread");
    assert!(
        !matches!(&result, Ok(r) if r.status == 200),
        "the request cannot have completed: {result:?}"
    );
}

/// Sends `SIGRTMIN+n` with the shell's `kill` builtin: nix's `Signal` has
/// no realtime signals, the tests use no unsafe code, and `sh` is on every
/// machine (procps' kill(1) is not). The number is the C library's, as in
/// the daemon.
fn send_realtime(daemon: &Tls, n: i32) {
    let number = nix::libc::SIGRTMIN() + n;
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{number} {}", daemon.proc.pid()))
        .status()
        .expect("run sh");
    assert!(status.success(), "kill -{number} failed");
}

/// One request on an open keep-alive connection (HTTP or TLS).
fn ask(stream: &mut (impl Read + Write)) -> Response {
    stream
        .write_all(b"GET /_clace/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write on the kept-alive connection");
    read_response_from(BufReader::new(stream), false)
        .expect("a response on the kept-alive connection")
}

/// A daemon with both listeners, a keep-alive connection open on each.
struct Both {
    _world: World,
    daemon: Tls,
    http_conn: TcpStream,
    https_conn: crate::tls_util::Handshake,
}

fn both_connected() -> Both {
    let world = World::with_certs();
    world.configure("", "", "");
    let daemon = world.serve_ready();
    let mut http_conn = connect(daemon.http).expect("connect to HTTP");
    assert_eq!(ask(&mut http_conn).status, 200);
    let mut https_conn = handshake(daemon.https, Some("localhost")).expect("TLS handshake");
    assert_eq!(ask(&mut https_conn.stream).status, 200);
    Both {
        _world: world,
        daemon,
        http_conn,
        https_conn,
    }
}

/// The actors' restart counters, in `ActorName` order of the health table.
fn counts(daemon: &Tls) -> [(&'static str, f64); 4] {
    ["http", "https", "certstore", "watcher"].map(|a| (a, restarts(daemon.http, a)))
}

/// Sends `SIGRTMIN+n`, waits for its log line and for `actor`'s restart
/// to be counted, then checks that no other actor was restarted.
fn signal_restarts_only(both: &mut Both, n: i32, actor: &str) {
    let daemon = &mut both.daemon;
    send_realtime(daemon, n);
    daemon.proc.wait_for_line(
        &format!("SIGRTMIN+{n}: restarting the {actor} actor"),
        DEADLINE,
    );
    assert!(
        wait_until(DEADLINE, || restarts(daemon.http, actor) == 1.0),
        "the {actor} restart is counted; stderr:\n{}",
        daemon.proc.stderr()
    );
    for (other, count) in counts(daemon) {
        let expected = if other == actor { 1.0 } else { 0.0 };
        assert_eq!(count, expected, "restarts of {other} after SIGRTMIN+{n}");
    }
}

#[test]
fn sigrtmin_2_restarts_https_alone_and_an_http_connection_survives() {
    let mut both = both_connected();
    signal_restarts_only(&mut both, 2, "https");
    let https = both.daemon.https;
    assert!(
        wait_until(DEADLINE, || handshake(https, Some("localhost")).is_ok()),
        "HTTPS serves new handshakes after its restart"
    );
    let again = ask(&mut both.http_conn);
    assert_eq!(
        again.status, 200,
        "the HTTP connection opened before SIGRTMIN+2 still serves"
    );
}

#[test]
fn sigrtmin_1_restarts_http_alone_and_an_https_connection_survives() {
    let mut both = both_connected();
    signal_restarts_only(&mut both, 1, "http");
    let http = both.daemon.http;
    assert!(
        wait_until(DEADLINE, || Request::get("/_clace/health")
            .try_send(http)
            .is_ok_and(|r| r.status == 200)),
        "HTTP serves new connections after its restart"
    );
    let again = ask(&mut both.https_conn.stream);
    assert_eq!(
        again.status, 200,
        "the HTTPS connection opened before SIGRTMIN+1 still serves"
    );
}

#[test]
fn sigrtmin_3_restarts_the_watcher_alone_and_both_connections_survive() {
    let mut both = both_connected();
    signal_restarts_only(&mut both, 3, "watcher");
    both.daemon.wait_ready();
    assert_eq!(ask(&mut both.http_conn).status, 200);
    assert_eq!(ask(&mut both.https_conn.stream).status, 200);
}

#[test]
fn sigusr2_without_acme_is_logged_and_restarts_nothing() {
    let mut both = both_connected();
    both.daemon.proc.signal(Signal::SIGUSR2);
    both.daemon
        .proc
        .wait_for_line("SIGUSR2: ACME is disabled", DEADLINE);
    for (actor, count) in counts(&both.daemon) {
        assert_eq!(count, 0.0, "restarts of {actor} after SIGUSR2");
    }
    assert_eq!(ask(&mut both.http_conn).status, 200);
    assert_eq!(ask(&mut both.https_conn.stream).status, 200);
    assert!(both.daemon.proc.is_running());
}
