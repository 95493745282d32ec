//! Hardening (issue 11): the admin socket that file permissions guard,
//! `[admin] on_listeners`, request limits and their refusal counters.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::tls_util::{handshake, mode, World};
use crate::util::http::{
    connect, get, read_response, read_response_from, Request, Response, IO_TIMEOUT,
};
use crate::util::{config_with, h2, toml_path, wait_until, Clace, DEADLINE};

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

/// `/_clace/metrics` over the admin socket (a connection to a listener
/// would count against the per-IP bound under test).
fn refused(home: &Path, reason: &str) -> f64 {
    let text = over_socket(&socket_of(home), "GET", "/_clace/metrics")
        .map(|r| r.text())
        .unwrap_or_default();
    sample(
        &text,
        &format!("clace_refused_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// Reads until the peer closes; true when it does (EOF or reset) before the
/// I/O timeout.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A keep-alive GET on an open connection; the response.
fn keep_alive_get(stream: &TcpStream, extra: &str) -> Response {
    let mut s = stream;
    write!(
        s,
        "GET /_clace/health HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n"
    )
    .unwrap();
    read_response(stream.try_clone().unwrap(), false).unwrap()
}

#[test]
fn a_long_header_line_or_a_big_head_is_431_and_closes_the_connection() {
    let clace = Clace::new();
    clace.write_config(&config_with(""));
    let daemon = clace.serve();
    let home = clace.cl_home();

    // 9 KiB in one line (the default bound is 8 KiB).
    let mut stream = connect(daemon.http).unwrap();
    let resp = keep_alive_get(&stream, &format!("X-Long: {}\r\n", "a".repeat(9 * 1024)));
    assert_eq!(resp.status, 431, "{}", resp.text());
    assert!(closed_by_peer(&mut stream), "connection closed after 431");
    assert_eq!(refused(home, "header_line"), 1.0);

    // 40 KiB in lines of 5 KiB (the default head bound is 32 KiB).
    let headers: String = (0..8)
        .map(|i| format!("X-Part-{i}: {}\r\n", "b".repeat(5 * 1024)))
        .collect();
    let mut stream = connect(daemon.http).unwrap();
    let resp = keep_alive_get(&stream, &headers);
    assert_eq!(resp.status, 431, "{}", resp.text());
    assert!(closed_by_peer(&mut stream), "connection closed after 431");
    assert_eq!(refused(home, "header_total"), 1.0);

    // A request line over the line bound: 414, as nginx answers.
    let resp = get(daemon.http, &format!("/{}", "p".repeat(9 * 1024)));
    assert_eq!(resp.status, 414);
    assert_eq!(refused(home, "header_line"), 2.0);

    // Within the bounds (7 KiB + 7 KiB + 7 KiB): served; the daemon is up.
    let fine: String = (0..3)
        .map(|i| format!("X-Ok-{i}: {}\r\n", "c".repeat(7 * 1024)))
        .collect();
    let resp = keep_alive_get(&connect(daemon.http).unwrap(), &fine);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(get(daemon.http, "/_clace/health").status, 200);
}

#[test]
fn configured_header_limits_apply_on_https_too() {
    let world = World::with_certs();
    world.configure("", "", "[limits]\nmax_header_line = 1024\n");
    let daemon = world.serve_ready();
    let request = format!(
        "GET /_clace/health HTTP/1.1\r\nHost: localhost\r\nX-Long: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(2000)
    );
    let resp = handshake(daemon.https, Some("localhost"))
        .unwrap()
        .http1(request.as_bytes())
        .unwrap();
    assert_eq!(resp.status, 431);
    assert_eq!(https_get(daemon.https, "/_clace/health").status, 200);
}

#[test]
fn a_body_over_a_static_routes_limit_is_413() {
    let clace = Clace::new();
    let site = clace.root().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("a.txt"), "static\n").unwrap();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/\"\nstatic = {}\n\n\
         [[route]]\npath = \"/small\"\nstatic = {}\nmax_body = 16\n",
        toml_path(&site),
        toml_path(&site)
    )));
    let daemon = clace.serve();
    let home = clace.cl_home();

    // The default for a static route is no body at all.
    let resp = Request::get("/a.txt").body("x").send(daemon.http);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(refused(home, "body"), 1.0);
    let resp = Request::get("/a.txt")
        .chunked_body(vec![b'y'; 100])
        .send(daemon.http);
    assert_eq!(resp.status, 413);
    // max_body = 16: by Content-Length, and as a chunked body is read.
    let resp = Request::get("/small/a.txt")
        .body(vec![b'z'; 17])
        .send(daemon.http);
    assert_eq!(resp.status, 413);
    let resp = Request::get("/small/a.txt")
        .chunked_body(vec![b'z'; 20_000])
        .send(daemon.http);
    assert_eq!(resp.status, 413);
    let resp = Request::get("/small/a.txt")
        .body(vec![b'z'; 16])
        .send(daemon.http);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "static\n");
    assert_eq!(refused(home, "body"), 4.0);
    // No body: served as ever.
    assert_eq!(get(daemon.http, "/a.txt").status, 200);
}

#[test]
fn connections_over_the_per_ip_bound_are_closed_while_the_others_stay_open() {
    const N: usize = 4;
    let clace = Clace::new();
    clace.write_config(&config_with(&format!("[limits]\nmax_conns_per_ip = {N}\n")));
    let daemon = clace.serve();
    let home = clace.cl_home();
    // Wait for the socket (metrics are read there, not on the listener).
    assert!(wait_until(DEADLINE, || refused(home, "per_ip") == 0.0));

    let open: Vec<TcpStream> = (0..N)
        .map(|_| {
            let s = connect(daemon.http).unwrap();
            assert_eq!(keep_alive_get(&s, "").status, 200);
            s
        })
        .collect();
    let mut extra = connect(daemon.http).unwrap();
    // The N+1th is shut down at accept, before it sends anything.
    assert!(closed_by_peer(&mut extra), "connection N+1 closed");
    assert_eq!(refused(home, "per_ip"), 1.0);
    for s in &open {
        assert_eq!(keep_alive_get(s, "").status, 200, "the first N stay open");
    }
    // One place given back: a new connection is served.
    drop(open.into_iter().next());
    assert!(
        wait_until(DEADLINE, || {
            connect(daemon.http)
                .ok()
                .and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
                    let mut w = &s;
                    w.write_all(
                        b"GET /_clace/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    )
                    .ok()?;
                    read_response(s.try_clone().ok()?, false).ok()
                })
                .is_some_and(|r| r.status == 200)
        }),
        "a place freed by a closed connection is taken again"
    );
}

#[test]
fn a_static_root_gone_bad_is_logged_once_a_minute_not_once_a_request() {
    let clace = Clace::new();
    let site = clace.root().join("site");
    std::fs::create_dir_all(&site).unwrap();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/\"\nstatic = {}\n",
        toml_path(&site)
    )));
    let mut daemon = clace.serve();
    std::fs::remove_dir(&site).unwrap();
    for _ in 0..50 {
        assert_eq!(get(daemon.http, "/a.txt").status, 404);
    }
    // Every request has been answered, so every warning has been written;
    // a line logged after them tells that the reader has seen them all.
    daemon.proc.signal(Signal::SIGUSR1);
    daemon.proc.wait_for_line("SIGUSR1", DEADLINE);
    let lines = daemon.proc.stderr_lines();
    let warnings = lines.iter().filter(|l| l.contains("is not usable")).count();
    assert_eq!(warnings, 1, "{lines:#?}");
}

/// The soft limit on open files of this test process.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

#[test]
fn a_thousand_idle_connections_leave_a_normal_request_served_within_a_second() {
    let clace = Clace::new();
    clace.write_config(&config_with(""));
    let daemon = clace.serve();
    // 1,000 as the issue asks, fewer if this process may not open them.
    let n = 1000.min(open_files_limit().saturating_sub(200));
    let idle: Vec<TcpStream> = (0..n).map(|_| connect(daemon.http).unwrap()).collect();
    // Half of them started a request and stopped (slowloris).
    for s in idle.iter().step_by(2) {
        let mut w = s;
        w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
    }
    let started = std::time::Instant::now();
    let resp = get(daemon.http, "/_clace/health");
    let took = started.elapsed();
    assert_eq!(resp.status, 200);
    assert!(took < Duration::from_secs(1), "{n} idle: {took:?}");
    drop(idle);
}

/// A small deterministic generator (xorshift64*): a failing case is
/// replayed with the seed the test prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A modern ClientHello (TLS 1.3 and 1.2, h2 and http/1.1), as rustls
/// sends it.
fn client_hello(sni: &str) -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn random_bytes_and_truncated_client_hellos_leave_both_ports_serving() {
    let world = World::with_certs();
    world.configure("", "", "");
    let mut daemon = world.serve_ready();
    let cases: usize = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed = std::env::var("CLACE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c1ac_e000_0011u64);
    eprintln!("random inputs: {cases} cases, CLACE_FUZZ_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let hello = client_hello("localhost");
    let request =
        b"GET /_clace/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello";
    for case in 0..cases {
        let tls = rng.below(2) == 0;
        let addr = if tls { daemon.https } else { daemon.http };
        let base: &[u8] = if tls { &hello } else { request };
        let bytes = match rng.below(5) {
            // Anything at all.
            0 => {
                let n = rng.below(3000);
                rng.bytes(n)
            }
            // The real thing cut short.
            1 => base[..rng.below(base.len())].to_vec(),
            // The real thing with a few bytes changed.
            2 => {
                let mut b = base.to_vec();
                for _ in 0..=rng.below(8) {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                b
            }
            // The real thing, then garbage.
            3 => {
                let mut b = base.to_vec();
                let n = rng.below(2000);
                b.extend(rng.bytes(n));
                b
            }
            // The other port's protocol.
            _ => {
                if tls {
                    request.to_vec()
                } else {
                    hello.clone()
                }
            }
        };
        let Ok(mut stream) = connect(addr) else {
            panic!(
                "case {case}: cannot connect; stderr:\n{}",
                daemon.proc.stderr()
            );
        };
        let _ = stream.write_all(&bytes);
        if rng.below(2) == 0 {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        // Read a little of the answer, if any, without waiting on a server
        // that (rightly) waits for the rest.
        stream
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut sink = [0u8; 4096];
        let _ = stream.read(&mut sink);
    }
    assert!(daemon.proc.is_running(), "{}", daemon.proc.stderr());
    assert_eq!(get(daemon.http, "/_clace/health").status, 200);
    assert_eq!(https_get(daemon.https, "/_clace/health").status, 200);
    let stderr = daemon.proc.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_per_ip_bound_counts_https_connections_once_their_handshake_is_done() {
    let world = World::with_certs();
    world.configure("", "", "[limits]\nmax_conns_per_ip = 2\n");
    let daemon = world.serve_ready();
    let home = world.clace.cl_home();
    assert!(wait_until(DEADLINE, || refused(home, "per_ip") == 0.0));
    // The health checks of serve_ready() may still hold their places for an
    // instant: two connections that answer a keep-alive request, kept.
    let ask = |stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        stream
            .write_all(b"GET /_clace/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        read_response_from(BufReader::new(stream), false).ok()
    };
    let mut keep = Vec::new();
    assert!(wait_until(DEADLINE, || {
        if let Ok(mut h) = handshake(daemon.https, Some("localhost")) {
            if ask(&mut h.stream).is_some_and(|r| r.status == 200) {
                keep.push(h.stream);
            }
        }
        keep.len() == 2
    }));
    // The third completes its handshake, then is closed unanswered.
    let third = handshake(daemon.https, Some("localhost"));
    let answered = third.and_then(|h| {
        h.http1(b"GET /_clace/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())
    });
    assert!(answered.is_err(), "the third connection was served");
    assert!(refused(home, "per_ip") >= 1.0);
    // The plain listener counts against the same bound.
    let mut plain = connect(daemon.http).unwrap();
    assert!(
        closed_by_peer(&mut plain),
        "an HTTP connection over the bound"
    );
    for mut stream in keep {
        let resp = ask(&mut stream).map(|r| r.status);
        assert_eq!(resp, Some(200), "the first two are served");
    }
}

#[test]
fn a_half_open_handshake_flood_from_one_ip_leaves_others_served() {
    let world = World::with_certs();
    // HTTPS on both families: the flood comes from ::1, the others from
    // 127.0.0.1, two client addresses on any machine. Few handshake slots,
    // so that the flood would take them all without the per-IP bound.
    world.clace.write_config(&format!(
        "[http]\nhost = \"127.0.0.1\"\nport = 0\n\n\
         [https]\nhost = \"::\"\nport = 0\ncert_location = {}\n\n\
         [limits]\nmax_conns_per_ip = 8\nmax_handshakes_per_worker = 16\n",
        toml_path(&world.certs)
    ));
    let mut proc = world.clace.spawn(&["serve"]);
    let https = proc.listening_addr("https");
    let port = https.port();
    let v4: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let v6: std::net::SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
    let home = world.clace.cl_home();
    assert!(wait_until(DEADLINE, || handshake(v4, Some("localhost")).is_ok()));

    // A ClientHello that never ends, on 300 connections from ::1.
    let flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| {
            let mut s = TcpStream::connect(v6).ok()?;
            s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4])
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(flood.len(), 300);
    assert!(
        wait_until(DEADLINE, || refused(home, "per_ip") >= 1.0),
        "the flood is refused past the bound"
    );
    let started = std::time::Instant::now();
    let served = handshake(v4, Some("localhost"));
    let took = started.elapsed();
    assert!(served.is_ok(), "{:?}", served.err());
    assert!(took < Duration::from_secs(1), "a handshake took {took:?}");
    let resp = served
        .unwrap()
        .http1(b"GET /_clace/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(resp.status, 200);
    // The flood ends: ::1 gets its places back.
    drop(flood);
    assert!(wait_until(DEADLINE, || handshake(v6, Some("localhost")).is_ok()));
}

/// What an HTTP/2 server did, as far as a test reads.
#[derive(Debug, PartialEq, Eq)]
enum H2Seen {
    /// A GOAWAY with this error code.
    GoAway(u32),
    /// A response HEADERS frame.
    Headers,
    /// The connection ended (closed, reset, or our pending write hit its
    /// end: broken pipe) before either.
    Closed,
    /// Another I/O error (a timeout).
    Error(String),
}

/// Reads frames until a GOAWAY or a response HEADERS arrives, or the
/// connection ends.
fn h2_read(stream: &mut impl Read) -> H2Seen {
    let mut head = [0u8; 9];
    let ended = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset => H2Seen::Closed,
        _ => H2Seen::Error(e.to_string()),
    };
    loop {
        if let Err(e) = stream.read_exact(&mut head) {
            return ended(e);
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if let Err(e) = stream.read_exact(&mut payload) {
            return ended(e);
        }
        match head[3] {
            1 => return H2Seen::Headers,
            7 if len >= 8 => {
                return H2Seen::GoAway(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]))
            }
            _ => {}
        }
    }
}

fn h2_connect(addr: std::net::SocketAddr) -> crate::tls_util::Handshake {
    let h2 = crate::tls_util::handshake_with(
        addr,
        &crate::tls_util::Hello::sni(Some("localhost")).alpn(&["h2"]),
    )
    .unwrap();
    assert_eq!(h2.alpn_str().as_deref(), Some("h2"));
    h2
}

#[test]
fn an_http2_client_resetting_streams_in_a_loop_is_cut_off() {
    let world = World::with_certs();
    world.configure("", "", "");
    let daemon = world.serve_ready();
    // The frames are well formed: one request gets its answer.
    let mut h2 = h2_connect(daemon.https);
    let mut out = h2::preface();
    out.extend(h2::frame(1, 0x5, 1, &h2::get("/_clace/health")));
    h2.stream.write_all(&out).unwrap();
    assert_eq!(h2_read(&mut h2.stream), H2Seen::Headers);

    // HEADERS (END_STREAM | END_HEADERS) then RST_STREAM (CANCEL), again
    // and again: the rapid reset attack (CVE-2023-44487).
    let mut h2 = h2_connect(daemon.https);
    let mut out = h2::preface();
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        out.extend(h2::frame(1, 0x5, id, &h2::get("/_clace/health")));
        out.extend(h2::frame(3, 0, id, &8u32.to_be_bytes()));
    }
    let _ = h2.stream.write_all(&out);
    let _ = h2.stream.flush();
    let seen = h2_read(&mut h2.stream);
    // ENHANCE_YOUR_CALM (0xb), or the connection ends while the attacker
    // is still writing (the GOAWAY is then lost with it).
    assert!(
        matches!(seen, H2Seen::GoAway(0xb) | H2Seen::Closed),
        "{seen:?}"
    );
    // Everyone else is still served.
    assert_eq!(https_get(daemon.https, "/_clace/health").status, 200);
    assert_eq!(get(daemon.http, "/_clace/health").status, 200);
}

#[test]
fn malformed_requests_do_not_multiply_library_log_lines() {
    let clace = Clace::new();
    clace.write_config(&config_with(""));
    let mut daemon = clace.serve();
    for i in 0..50u8 {
        let mut s = connect(daemon.http).unwrap();
        // A header line without a colon: actix-http logs a parse error.
        let _ = s.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nbroken{i}\r\n\r\n").as_bytes());
        let _ = read_response(s, false);
    }
    // A line logged after them tells that the reader has seen them all.
    daemon.proc.signal(Signal::SIGUSR1);
    daemon.proc.wait_for_line("SIGUSR1", DEADLINE);
    let lines = daemon.proc.stderr_lines();
    let library = lines.iter().filter(|l| l.contains("actix_http")).count();
    assert!(library <= 1, "{lines:#?}");
    assert_eq!(get(daemon.http, "/_clace/health").status, 200);
}
