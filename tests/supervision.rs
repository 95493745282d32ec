//! Supervision that survives panics (issue 7, "How it is proven"; interface
//! §6 health and metrics, §7 "an actor that panics is restarted"). Built
//! only with the `fault-injection` feature, whose
//! `POST /_clace/actors/NAME/panic?times=N|always` makes one actor panic in
//! its next message (and, with `always`, in every restart).
//!
//! For each actor: one panic, and the actor runs again within 1 s (health
//! `running`, the restart counted, the panic message logged), while the
//! keep-alive connections on the listeners that did not panic stay open
//! and a loop of full TLS handshakes sees no failure and always the same
//! certificate (handshakes go on from the last snapshot). A panicking HTTPS
//! listener may refuse handshakes only while it restarts. A panic on every
//! message ends in `failed`, with the daemon still serving.
#![cfg(feature = "fault-injection")]

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::tls_util::{handshake, Handshake, Tls, World};
use crate::util::http::{connect, read_response_from, Request, Response};
use crate::util::{toml_path, unique, wait_until, DEADLINE};

/// Interface §7 and issue 7: a panicked actor runs again within this.
const BACK_WITHIN: Duration = Duration::from_secs(1);

/// A panic on every message: 8 panics with 0.1 + 0.2 + ... + 6.4 s of
/// backoff (12.7 s) before the give-up, with room to spare.
const GIVE_UP_DEADLINE: Duration = Duration::from_secs(30);

/// Every actor, as health and metrics name them.
const ACTORS: [&str; 5] = ["http", "https", "certstore", "watcher", "acme"];

/// The SNI of every handshake: the self-signed default answers it.
const SNI: &str = "localhost";

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// The listener a request goes through.
#[derive(Clone, Copy)]
enum Via {
    Http(SocketAddr),
    Https(SocketAddr),
}

impl Via {
    /// `METHOD path` on a new connection (TLS for `Https`).
    fn send(self, method: &str, path: &str) -> io::Result<Response> {
        match self {
            Via::Http(addr) => Request::new(method, path).try_send(addr),
            Via::Https(addr) => handshake(addr, Some(SNI)).map_err(io::Error::other)?.http1(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: {SNI}\r\n\
                         Connection: close\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            ),
        }
    }
}

/// `GET path` on an open keep-alive connection (TCP or TLS).
fn ask(stream: &mut (impl Read + Write), path: &str) -> io::Result<Response> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {SNI}\r\n\r\n")?;
    stream.flush()?;
    read_response_from(BufReader::new(stream), false)
}

/// `clace_actor_restarts_total{actor}` in a metrics text.
fn restart_count(metrics: &str, actor: &str) -> Option<f64> {
    let name = format!("clace_actor_restarts_total{{actor=\"{actor}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&name).and_then(|v| v.trim().parse().ok()))
}

// ---------------------------------------------------------------------------
// The daemon, its keep-alive connections and its static file
// ---------------------------------------------------------------------------

/// A daemon with both listeners, every enabled actor running, a static
/// file under `/site/`, and a keep-alive connection open on each listener.
struct Fixture {
    daemon: Tls,
    http_conn: TcpStream,
    https_conn: Handshake,
    /// Dropped after the daemon is killed.
    _world: World,
    /// The content of `/site/hello.txt`.
    hello: String,
    /// The serial served for [`SNI`] at start.
    serial: String,
}

impl Fixture {
    /// `acme`: enable the issuer against a CA that cannot be reached (it
    /// backs off and stays `running`).
    fn start(acme: bool) -> Fixture {
        let world = World::with_certs();
        let site = world.root().join("site");
        std::fs::create_dir_all(&site).unwrap();
        let hello = unique("hello");
        std::fs::write(site.join("hello.txt"), &hello).unwrap();
        let acme_keys = if acme {
            "service_email = \"ops@a.test\"\n\
             acme_directory_url = \"https://127.0.0.1:1/dir\"\n\
             domains = [\"a.test\"]\n"
        } else {
            ""
        };
        world.configure(
            "",
            acme_keys,
            &format!(
                "[[route]]\npath = \"/site\"\nstatic = {}\n",
                toml_path(&site)
            ),
        );
        let daemon = world.serve_ready();
        let http = Via::Http(daemon.http);
        let mut last = String::new();
        let all_running = wait_until(DEADLINE, || match http.send("GET", "/_clace/health") {
            Ok(r) => {
                last = r.text();
                r.status == 200 && (!acme || r.json()["actors"]["acme"] == "running")
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        });
        assert!(
            all_running,
            "every enabled actor running at start; last health: {last}; stderr:\n{}",
            daemon.stderr()
        );
        let serial = daemon.serial(Some(SNI));
        let http_conn = connect(daemon.http).expect("connect to HTTP");
        let https_conn = handshake(daemon.https, Some(SNI)).expect("TLS handshake");
        let mut fixture = Fixture {
            _world: world,
            daemon,
            http_conn,
            https_conn,
            hello,
            serial,
        };
        fixture.assert_keep_alive_serves(true, true, "at start");
        fixture
    }

    /// The listener to ask the daemon through while `actor` panics: the
    /// other one for a listener, HTTP otherwise.
    fn admin_via(&self, actor: &str) -> Via {
        match actor {
            "http" => Via::Https(self.daemon.https),
            _ => Via::Http(self.daemon.http),
        }
    }

    /// `/_clace/health`: the status code and the JSON.
    fn health(&self, via: Via) -> io::Result<(u16, serde_json::Value)> {
        let resp = via.send("GET", "/_clace/health")?;
        let json = serde_json::from_slice(&resp.body).map_err(io::Error::other)?;
        Ok((resp.status, json))
    }

    /// What health says of `actor` (empty when it cannot be asked).
    fn state(&self, via: Via, actor: &str) -> String {
        self.health(via)
            .ok()
            .and_then(|(_, json)| json["actors"][actor].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// `clace_actor_restarts_total{actor}`, if it can be read.
    fn restarts(&self, via: Via, actor: &str) -> Option<f64> {
        let metrics = via.send("GET", "/_clace/metrics").ok()?;
        restart_count(&metrics.text(), actor)
    }

    /// Makes `actor` panic `times` times (`"1"`, `"always"`).
    fn inject(&self, actor: &str, times: &str) {
        let via = self.admin_via(actor);
        let resp = via
            .send(
                "POST",
                &format!("/_clace/actors/{actor}/panic?times={times}"),
            )
            .expect("ask for a panic");
        assert_eq!(
            resp.status,
            202,
            "panic?times={times} for {actor}: {}",
            resp.text()
        );
    }

    /// Whether `via` serves the static file on a new connection.
    fn serves_new_connection(&self, via: Via) -> bool {
        via.send("GET", "/site/hello.txt")
            .is_ok_and(|r| r.status == 200 && r.text() == self.hello)
    }

    /// The static file over the kept-alive connections that are asked for.
    fn assert_keep_alive_serves(&mut self, http: bool, https: bool, when: &str) {
        let check = |name: &str, resp: io::Result<Response>| {
            let resp = resp.unwrap_or_else(|e| {
                panic!(
                    "the kept-alive {name} connection failed {when}: {e}; stderr:\n{}",
                    self.daemon.stderr()
                )
            });
            assert_eq!(resp.status, 200, "{name} {when}: {}", resp.text());
            assert_eq!(resp.text(), self.hello, "{name} {when}");
        };
        if http {
            check("HTTP", ask(&mut self.http_conn, "/site/hello.txt"));
        }
        if https {
            check("HTTPS", ask(&mut self.https_conn.stream, "/site/hello.txt"));
        }
    }

    /// Waits at most [`BACK_WITHIN`] after `asked` until `actor` has been
    /// restarted once, is `running` again, and both listeners serve new
    /// connections; returns when that was seen.
    fn assert_back_within_1s(&self, actor: &str, asked: Instant) -> Instant {
        let via = self.admin_via(actor);
        let (http, https) = (Via::Http(self.daemon.http), Via::Https(self.daemon.https));
        let left = (asked + BACK_WITHIN).saturating_duration_since(Instant::now());
        let back = wait_until(left, || {
            self.restarts(via, actor) == Some(1.0)
                && self.state(via, actor) == "running"
                && self.serves_new_connection(http)
                && self.serves_new_connection(https)
        });
        let seen = Instant::now();
        assert!(
            back,
            "{actor} not restarted and running with both listeners serving within \
             {BACK_WITHIN:?} (restarts {:?}, state {:?}); stderr:\n{}",
            self.restarts(via, actor),
            self.state(via, actor),
            self.daemon.stderr()
        );
        eprintln!(
            "{actor}: running again {:?} after the panic was asked",
            seen - asked
        );
        seen
    }

    /// Every actor but `actor` has not been restarted.
    fn assert_others_untouched(&self, actor: &str) {
        let via = self.admin_via(actor);
        for other in ACTORS.iter().filter(|a| **a != actor) {
            let count = self.restarts(via, other).unwrap_or(0.0);
            assert_eq!(count, 0.0, "{other} restarted after a panic of {actor}");
        }
    }

    /// Waits for the panic hook's line for `actor`.
    fn wait_panic_logged(&mut self, actor: &str) -> String {
        self.daemon.proc.wait_for_line(
            &format!("the {actor} actor panicked: injected panic in the {actor} actor"),
            DEADLINE,
        )
    }
}

// ---------------------------------------------------------------------------
// A loop of full TLS handshakes on its own thread
// ---------------------------------------------------------------------------

/// One handshake: when it started and the serial served (or the error).
struct Attempt {
    started: Instant,
    result: Result<String, String>,
}

/// Full handshakes for [`SNI`], back to back, until stopped or dropped.
struct HandshakeLoop {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    thread: Option<JoinHandle<()>>,
}

impl HandshakeLoop {
    fn start(addr: SocketAddr) -> HandshakeLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, attempts) = (Arc::clone(&stop), Arc::clone(&attempts));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = handshake(addr, Some(SNI)).map(|h| h.serial());
                    attempts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Attempt { started, result });
                    thread::sleep(Duration::from_millis(5));
                }
            })
        };
        HandshakeLoop {
            stop,
            attempts,
            thread: Some(thread),
        }
    }

    /// How many handshakes started at or after `since` succeeded.
    fn successes_since(&self, since: Instant) -> usize {
        self.attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|a| a.started >= since && a.result.is_ok())
            .count()
    }

    /// Waits until `n` handshakes started at or after `since` succeeded.
    fn wait_successes(&self, since: Instant, n: usize) {
        assert!(
            wait_until(DEADLINE, || self.successes_since(since) >= n),
            "fewer than {n} handshakes succeeded"
        );
    }

    /// Stops the loop and returns every attempt.
    fn stop(mut self) -> Vec<Attempt> {
        self.halt();
        std::mem::take(&mut *self.attempts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HandshakeLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Asserts that every handshake started at or after `from` succeeded with
/// `serial`; `what` says which part of the run that is.
fn assert_handshakes_served(attempts: &[Attempt], from: Instant, serial: &str, what: &str) {
    let considered: Vec<&Attempt> = attempts.iter().filter(|a| a.started >= from).collect();
    let bad: Vec<String> = considered
        .iter()
        .filter_map(|a| match &a.result {
            Ok(s) if s == serial => None,
            Ok(s) => Some(format!("served serial {s}")),
            Err(e) => Some(e.clone()),
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} handshakes {what} did not get serial {serial}: {bad:?}",
        bad.len(),
        considered.len()
    );
    eprintln!("{} handshakes {what}, none failed", considered.len());
}

// ---------------------------------------------------------------------------
// One panic
// ---------------------------------------------------------------------------

/// One panic of `actor`: it runs again within 1 s, the others are not
/// restarted, the connections on the listeners that did not panic survive,
/// and handshakes go on from the last snapshot (for the HTTPS listener
/// itself, refused at most until it serves again).
fn panic_once_and_recover(actor: &str) {
    let mut fixture = Fixture::start(actor == "acme");
    let handshakes = HandshakeLoop::start(fixture.daemon.https);
    let began = Instant::now();
    handshakes.wait_successes(began, 5);

    let asked = Instant::now();
    fixture.inject(actor, "1");
    let back = fixture.assert_back_within_1s(actor, asked);
    handshakes.wait_successes(back, 20);
    let attempts = handshakes.stop();

    let line = fixture.wait_panic_logged(actor);
    assert!(line.contains(" at "), "the place of the panic: {line}");
    fixture.assert_others_untouched(actor);
    let serial = fixture.serial.clone();
    match actor {
        "https" => {
            let refused = attempts
                .iter()
                .filter(|a| a.started < back && a.result.is_err())
                .count();
            eprintln!("{refused} handshakes refused while HTTPS restarted");
            assert_handshakes_served(&attempts, back, &serial, "after HTTPS served again");
            fixture.assert_keep_alive_serves(true, false, "after the HTTPS listener panicked");
        }
        "http" => {
            assert_handshakes_served(&attempts, began, &serial, "across the panic");
            fixture.assert_keep_alive_serves(false, true, "after the HTTP listener panicked");
        }
        _ => {
            assert_handshakes_served(&attempts, began, &serial, "across the panic");
            fixture.assert_keep_alive_serves(true, true, &format!("after {actor} panicked"));
        }
    }
    assert!(fixture.daemon.proc.is_running());
}

#[test]
fn a_panicking_http_listener_runs_again_within_1s_and_https_keeps_its_connections() {
    panic_once_and_recover("http");
}

#[test]
fn a_panicking_https_listener_runs_again_within_1s_and_http_keeps_its_connections() {
    panic_once_and_recover("https");
}

#[test]
fn a_panicking_cert_store_runs_again_within_1s_and_both_listeners_keep_serving() {
    panic_once_and_recover("certstore");
}

#[test]
fn a_panicking_watcher_runs_again_within_1s_and_both_listeners_keep_serving() {
    panic_once_and_recover("watcher");
}

#[test]
fn a_panicking_acme_issuer_runs_again_within_1s_and_both_listeners_keep_serving() {
    panic_once_and_recover("acme");
}

// ---------------------------------------------------------------------------
// A panic on every message
// ---------------------------------------------------------------------------

/// Arms `actor` to panic on every message and waits until it is given up:
/// health `failed` and 503 `degraded` (the other actors `running`), the
/// give-up logged, a restart request answered 503.
fn panic_always_until_failed(fixture: &mut Fixture, actor: &str) {
    let via = fixture.admin_via(actor);
    fixture.inject(actor, "always");
    let failed = wait_until(GIVE_UP_DEADLINE, || fixture.state(via, actor) == "failed");
    assert!(
        failed,
        "{actor} never failed; stderr:\n{}",
        fixture.daemon.stderr()
    );
    fixture.daemon.proc.wait_for_line(
        &format!("the {actor} actor panicked 8 times in a row; giving up"),
        DEADLINE,
    );

    let (status, health) = fixture.health(via).expect("health");
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    for other in ACTORS.iter().filter(|a| **a != actor && **a != "acme") {
        assert_eq!(health["actors"][other], "running", "{health}");
    }

    let resp = via
        .send("POST", &format!("/_clace/actors/{actor}/restart"))
        .expect("restart request");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(fixture.daemon.proc.is_running());
}

#[test]
fn an_https_listener_panicking_on_every_message_fails_and_http_keeps_serving() {
    let mut fixture = Fixture::start(false);
    panic_always_until_failed(&mut fixture, "https");
    fixture.assert_keep_alive_serves(true, false, "after HTTPS failed");
    assert!(
        fixture.serves_new_connection(Via::Http(fixture.daemon.http)),
        "HTTP serves new connections after HTTPS failed"
    );
}

#[test]
fn a_cert_store_panicking_on_every_message_fails_and_handshakes_go_on_from_the_last_snapshot() {
    let mut fixture = Fixture::start(false);
    let handshakes = HandshakeLoop::start(fixture.daemon.https);
    let began = Instant::now();
    handshakes.wait_successes(began, 5);

    panic_always_until_failed(&mut fixture, "certstore");
    let failed = Instant::now();
    handshakes.wait_successes(failed, 20);
    let attempts = handshakes.stop();
    assert_handshakes_served(&attempts, began, &fixture.serial, "across the panics");
    fixture.assert_keep_alive_serves(true, true, "after the cert store failed");
    for via in [
        Via::Http(fixture.daemon.http),
        Via::Https(fixture.daemon.https),
    ] {
        assert!(fixture.serves_new_connection(via));
    }
}
