//! SIGTERM and SIGINT (interface §7): a graceful stop lets in-flight
//! requests finish and exits 0; a second SIGINT stops at once.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::http::{get, Request, Response};
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
