//! The daemon's own endpoints and actor restarts (interface §1 `restart`,
//! §6, §7 SIGUSR1): a restart of one actor leaves the others' connections
//! open; metrics, certs listing and restart over the loopback endpoint.

use std::io::Write;

use nix::sys::signal::Signal;

use crate::tls_util::{handshake, install_pair, make_pair, World};
use crate::util::http::{connect, get, read_response, Request};
use crate::util::{wait_until, DEADLINE};

/// The value of a sample line `NAME VALUE` in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// `clace_actor_restarts_total{actor}` from `/_clace/metrics` (-1 when absent).
/// `-1` when the metrics cannot be read (the HTTP listener may be in the
/// middle of its own restart: callers wait until the count shows).
pub fn restarts(http: std::net::SocketAddr, actor: &str) -> f64 {
    let Ok(resp) = crate::util::http::Request::get("/_clace/metrics").try_send(http) else {
        return -1.0;
    };
    let text = resp.text();
    sample(
        &text,
        &format!("clace_actor_restarts_total{{actor=\"{actor}\"}}"),
    )
    .unwrap_or(-1.0)
}

#[test]
fn restarting_https_keeps_an_http_connection_open() {
    let world = World::with_certs();
    world.configure("", "", "");
    let mut daemon = world.serve_ready();

    // A keep-alive connection on the HTTP listener, used before and after.
    let stream = connect(daemon.http).unwrap();
    let ask = |mut s: &std::net::TcpStream| {
        s.write_all(b"GET /_clace/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        read_response(s.try_clone().unwrap(), false).unwrap()
    };
    assert_eq!(ask(&stream).status, 200);

    let resp = Request::new("POST", "/_clace/actors/https/restart").send(daemon.http);
    assert_eq!(resp.status, 202, "{}", resp.text());
    assert!(
        wait_until(DEADLINE, || restarts(daemon.http, "https") == 1.0),
        "https restart counted; stderr:\n{}",
        daemon.proc.stderr()
    );
    daemon.wait_ready();
    assert!(
        wait_until(DEADLINE, || handshake(daemon.https, Some("localhost"))
            .is_ok()),
        "HTTPS serves again after its restart"
    );
    // The HTTP connection opened before the restart still works.
    let again = ask(&stream);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(restarts(daemon.http, "http"), 0.0, "http was not restarted");
    // One listening line per listener, restarts included.
    let lines = daemon.proc.stderr_lines();
    let https_lines = lines
        .iter()
        .filter(|l| l.contains("Server listening on https://"))
        .count();
    assert_eq!(https_lines, 1, "{lines:#?}");
}

#[test]
fn unknown_actor_is_404_and_restart_needs_post() {
    let world = World::with_certs();
    world.configure("", "", "");
    let daemon = world.serve();
    let resp = Request::new("POST", "/_clace/actors/nope/restart").send(daemon.http);
    assert_eq!(resp.status, 404);
    let resp = get(daemon.http, "/_clace/actors/https/restart");
    assert_eq!(resp.status, 405);
}

#[test]
fn sigusr1_restarts_the_cert_store_with_a_full_rescan() {
    let world = World::with_certs();
    // Polling once an hour: only the restart can find the new pair.
    world.configure("", "cert_watch = \"poll\"\ncert_rescan_interval = 3600", "");
    let daemon = world.serve_ready();
    let default_serial = daemon.serial(Some("late.test"));

    let pair = make_pair(&["late.test"]);
    install_pair(&world.certs, "late.test", &pair);
    assert_eq!(
        daemon.serial(Some("late.test")),
        default_serial,
        "nothing rescans before the signal"
    );
    daemon.proc.signal(Signal::SIGUSR1);
    daemon.wait_serial(Some("late.test"), &pair.serial);
    assert!(wait_until(DEADLINE, || restarts(daemon.http, "certstore") == 1.0));
}

#[test]
fn clace_restart_asks_the_running_daemon() {
    let world = World::with_certs();
    world.configure("", "", "");
    let daemon = world.serve_ready();

    let out = world.clace.run(&["restart", "watcher"]);
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(wait_until(DEADLINE, || restarts(daemon.http, "watcher") == 1.0));

    let out = world.clace.run(&["restart", "bogus"]);
    assert_eq!(out.code(), Some(2), "unknown actor: {}", out.stderr);
    assert!(out.stderr.contains("bogus"), "{}", out.stderr);

    drop(daemon);
    // The killed daemon could not remove its address file; nothing answers.
    let out = world.clace.run(&["restart", "certstore"]);
    assert_eq!(out.code(), Some(1), "no daemon: {}", out.stderr);
}

#[test]
fn clace_restart_without_a_daemon_exits_1() {
    let world = World::with_certs();
    world.configure("", "", "");
    let out = world.clace.run(&["restart", "https"]);
    assert_eq!(out.code(), Some(1), "stderr: {}", out.stderr);
}

#[test]
fn metrics_and_certs_endpoints() {
    let world = World::with_certs();
    world.configure("", "", "");
    let pair = make_pair(&["m.test", "*.w.test"]);
    install_pair(&world.certs, "m.test", &pair);
    let daemon = world.serve_ready();
    daemon.wait_serial(Some("m.test"), &pair.serial);

    let text = get(daemon.http, "/_clace/metrics").text();
    assert!(
        text.contains("clace_tls_cert_not_after_seconds{name=\"m.test\",source=\"file\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "clace_tls_cert_not_after_seconds{name=\"localhost\",source=\"self-signed\"}"
        ),
        "{text}"
    );
    assert!(
        sample(&text, "clace_tls_handshakes_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "clace_cert_reloads_total{result=\"ok\"}").unwrap_or(0.0) >= 2.0,
        "{text}"
    );

    let certs = get(daemon.http, "/_clace/certs").json();
    let list = certs.as_array().expect("an array");
    let m = list
        .iter()
        .find(|c| {
            c["names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == "m.test"))
        })
        .expect("m.test listed");
    assert_eq!(m["source"], "file");
    assert_eq!(m["status"], "ok");
    assert!(m["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("m.test.crt")));
    assert!(list.iter().any(|c| c["source"] == "self-signed"), "{certs}");
}

#[test]
fn sighup_applies_a_new_route_and_ignores_an_invalid_file() {
    let world = World::with_certs();
    let site = world.root().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("a.txt"), "from the new route").unwrap();
    world.configure("", "", "");
    let mut daemon = world.serve_ready();
    assert_eq!(get(daemon.http, "/s/a.txt").status, 404, "no route yet");

    // A keep-alive HTTPS-free check: the HTTP connection survives the reload.
    let stream = connect(daemon.http).unwrap();
    let ask = |mut s: &std::net::TcpStream, path: &str| {
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        read_response(s.try_clone().unwrap(), false).unwrap()
    };
    assert_eq!(ask(&stream, "/_clace/health").status, 200);

    world.configure(
        "",
        "",
        &format!(
            "[[route]]\npath = \"/s\"\nstatic = {}\n",
            crate::util::toml_path(&site)
        ),
    );
    daemon.proc.signal(Signal::SIGHUP);
    assert!(
        wait_until(DEADLINE, || get(daemon.http, "/s/a.txt").status == 200),
        "the new route is served after SIGHUP; stderr:\n{}",
        daemon.proc.stderr()
    );
    assert_eq!(ask(&stream, "/s/a.txt").text(), "from the new route");
    assert_eq!(
        restarts(daemon.http, "http"),
        0.0,
        "a route change restarts nothing"
    );

    // An invalid file changes nothing and is logged.
    world.clace.write_config("[http]\nport = \"not a port\"\n");
    daemon.proc.signal(Signal::SIGHUP);
    daemon
        .proc
        .wait_for_line("the configuration is not valid", DEADLINE);
    assert_eq!(
        get(daemon.http, "/s/a.txt").status,
        200,
        "old configuration kept"
    );
    assert!(daemon.proc.is_running());
}

#[test]
fn clace_restart_reaches_an_https_only_daemon() {
    let world = World::with_certs();
    world.clace.write_config(&format!(
        "[http]\nport = -1\n\n[https]\nhost = \"127.0.0.1\"\nport = 0\ncert_location = {}\n",
        crate::util::toml_path(&world.certs)
    ));
    let mut proc = world.clace.spawn(&["serve"]);
    let _https = proc.listening_addr("https");
    let out = world.clace.run(&["restart", "watcher"]);
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    proc.wait_for_line("restarting the file watcher", DEADLINE);
}

#[test]
fn sighup_during_start_up_does_not_kill_the_daemon() {
    let world = World::with_certs();
    // Enough pairs that loading them takes a moment after the bind.
    for i in 0..150 {
        install_pair(
            &world.certs,
            &format!("n{i}.test"),
            &make_pair(&[&format!("n{i}.test")]),
        );
    }
    world.configure("", "", "");
    let mut proc = world.clace.spawn(&["serve"]);
    proc.wait_for_line("bound http", DEADLINE);
    proc.signal(Signal::SIGHUP);
    proc.signal(Signal::SIGUSR2);
    let http = proc.listening_addr("http");
    assert!(proc.is_running(), "stderr:\n{}", proc.stderr());
    assert_eq!(get(http, "/_clace/health").status, 200);
}

#[test]
fn sighup_moves_a_listener_and_disables_another() {
    let world = World::with_certs();
    world.configure("", "", "");
    let mut daemon = world.serve_ready();
    let old_http = daemon.http;
    let new_port = crate::util::closed_port();
    world.clace.write_config(&format!(
        "[http]\nhost = \"127.0.0.1\"\nport = {new_port}\n\n[https]\nport = -1\ncert_location = {}\n",
        crate::util::toml_path(&world.certs)
    ));
    daemon.proc.signal(Signal::SIGHUP);
    daemon.proc.wait_for_line(
        &format!("Server listening on http://127.0.0.1:{new_port}"),
        DEADLINE,
    );
    let moved: std::net::SocketAddr = ([127, 0, 0, 1], new_port).into();
    let health = get(moved, "/_clace/health").json();
    assert_eq!(health["actors"]["https"], "disabled", "{health}");
    assert_eq!(health["actors"]["http"], "running", "{health}");
    assert!(
        wait_until(DEADLINE, || connect(old_http).is_err()),
        "the old HTTP port is closed"
    );
    assert!(
        wait_until(DEADLINE, || connect(daemon.https).is_err()),
        "HTTPS stopped"
    );
    let addr_file = std::fs::read_to_string(world.clace.cl_home().join("run/clace.addr")).unwrap();
    assert_eq!(addr_file.trim(), format!("http://127.0.0.1:{new_port}"));
}
