//! The HTTP listener (interface §3 ports, §6 health, §8 the listening line)
//! and route selection: domain first, then the longest path prefix.

use std::fs;
use std::net::TcpListener;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::http::{get, Request};
use crate::util::upstream::{Reply, Upstream};
use crate::util::{
    config_with, listening_host_port, listening_ports, toml_path, unique, wait_until, Clace,
    DEADLINE,
};

#[test]
fn defaults_without_a_config_file_serve_health() {
    let mut clace = Clace::with_missing_home();
    clace.env("CL_HTTP__PORT", "0").env("CL_HTTPS__PORT", "-1");
    assert!(!clace.cl_home().exists());
    let mut proc = clace.spawn(&["serve"]);
    let line = proc.wait_for_line("Server listening on http://", DEADLINE);
    let (host, port) = listening_host_port(&line, "http").expect("host and port in the line");
    assert_eq!(host, "127.0.0.1", "HTTP binds localhost by default: {line}");
    assert_ne!(port, 0, "the real port is printed: {line}");
    assert!(clace.cl_home().is_dir(), "CL_HOME is created when missing");

    let addr = proc.listening_addr("http");
    assert!(
        listening_ports(proc.pid()).contains(&port),
        "the process listens on the printed port"
    );
    let resp = get(addr, "/_clace/health");
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    assert!(
        resp.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "health is JSON: {:?}",
        resp.headers
    );
    let json = resp.json();
    assert_eq!(json["status"], "ok", "{json}");
    let actors = json["actors"]
        .as_object()
        .unwrap_or_else(|| panic!("actors is an object: {json}"));
    for name in ["http", "https", "certstore", "watcher", "acme"] {
        let state = actors
            .get(name)
            .and_then(|s| s.as_str())
            .unwrap_or_else(|| panic!("actor {name} is listed: {json}"));
        assert!(
            ["running", "restarting", "disabled", "failed"].contains(&state),
            "{name} has a known state: {json}"
        );
        // 200 "ok" means every enabled actor runs.
        assert!(
            state == "running" || state == "disabled",
            "{name} is {state} while status is ok: {json}"
        );
    }
    assert_eq!(actors["http"], "running", "{json}");
    assert_eq!(
        actors["https"], "disabled",
        "port -1 disables HTTPS: {json}"
    );
    assert_eq!(
        actors["acme"], "disabled",
        "ACME is off without service_email: {json}"
    );
    let listening = proc
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("Server listening on"))
        .count();
    assert_eq!(
        listening,
        1,
        "exactly one listening line:\n{}",
        proc.stderr()
    );
}

#[test]
fn environment_override_beats_the_file() {
    // The file asks for a port that is taken: only the override lets the
    // daemon start.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let mut clace = Clace::new();
    clace.write_config(&format!(
        "[http]\nport = {taken_port}\n[https]\nport = -1\n"
    ));
    clace.env("CL_HTTP__PORT", "0");
    let daemon = clace.serve();
    assert_ne!(daemon.http.port(), taken_port);
    assert_eq!(get(daemon.http, "/_clace/health").status, 200);
}

#[test]
fn both_listeners_disabled_keeps_running_until_sigterm() {
    let clace = Clace::new();
    clace.write_config("[http]\nport = -1\n[https]\nport = -1\n");
    let mut proc = clace.spawn(&["serve"]);
    // There is no event to wait for: the claim is that nothing happens, so
    // the daemon is watched for a while and must stay up without listening.
    let stayed = !wait_until(Duration::from_millis(1500), || {
        !proc.is_running() || proc.stderr().contains("Server listening")
    });
    assert!(
        stayed,
        "the daemon must run without listeners and print no listening line; status {:?}; stderr:\n{}",
        proc.try_status(),
        proc.stderr()
    );
    assert_eq!(
        listening_ports(proc.pid()),
        Vec::<u16>::new(),
        "no listening socket with both ports -1 (health is unreachable)"
    );
    proc.signal(Signal::SIGTERM);
    let status = proc.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proc.stderr());
}

#[test]
fn port_that_is_taken_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let clace = Clace::new();
    clace.write_config(&format!("[http]\nport = {port}\n[https]\nport = -1\n"));
    let out = clace.run(&["serve"]);
    assert_eq!(
        out.code(),
        Some(1),
        "bind failure exits 1; stderr:\n{}",
        out.stderr
    );
    let address = format!("127.0.0.1:{port}");
    assert!(
        out.stderr.contains(&address),
        "stderr names {address}:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Server listening on http://"));
    drop(taken);
}

/// Two folders with different content, for routes told apart by the body.
fn folder(clace: &Clace, name: &str) -> (String, String) {
    let dir = clace.root().join(name);
    fs::create_dir_all(&dir).expect("create folder");
    let marker = unique(name);
    fs::write(dir.join("who.txt"), &marker).expect("write file");
    (toml_path(&dir), marker)
}

#[test]
fn domain_route_wins_for_its_host_in_any_case_and_with_a_port() {
    let clace = Clace::new();
    let (a_dir, a_marker) = folder(&clace, "a");
    let (any_dir, any_marker) = folder(&clace, "any");
    // The domain-less route comes first: order must not decide.
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/app\"\nstatic = {any_dir}\n\n\
         [[route]]\ndomain = \"a.test\"\npath = \"/app\"\nstatic = {a_dir}\n"
    )));
    let daemon = clace.serve();

    let resp = Request::get("/app/who.txt")
        .header("Host", "A.TEST:1234")
        .send(daemon.http);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        a_marker,
        "Host A.TEST:1234 matches domain a.test"
    );

    let resp = Request::get("/app/who.txt")
        .header("Host", "a.test")
        .send(daemon.http);
    assert_eq!(resp.text(), a_marker);

    let resp = Request::get("/app/who.txt")
        .header("Host", "b.test")
        .send(daemon.http);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        any_marker,
        "another host gets the domain-less route"
    );

    let resp = get(daemon.http, "/app/who.txt");
    assert_eq!(
        resp.text(),
        any_marker,
        "an IP host gets the domain-less route"
    );
}

#[test]
fn domain_match_beats_a_longer_path_without_domain() {
    let clace = Clace::new();
    let (a_dir, a_marker) = folder(&clace, "a");
    let (any_dir, any_marker) = folder(&clace, "any");
    fs::create_dir_all(clace.root().join("a").join("app")).expect("mkdir");
    fs::write(
        clace.root().join("a").join("app").join("who.txt"),
        &a_marker,
    )
    .expect("write");
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/app\"\nstatic = {any_dir}\n\n\
         [[route]]\ndomain = \"a.test\"\npath = \"/\"\nstatic = {a_dir}\n"
    )));
    let daemon = clace.serve();
    let resp = Request::get("/app/who.txt")
        .header("Host", "a.test")
        .send(daemon.http);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), a_marker, "a domain match beats no domain");
    let resp = Request::get("/app/who.txt")
        .header("Host", "other.test")
        .send(daemon.http);
    assert_eq!(resp.text(), any_marker);
}

#[test]
fn longest_path_prefix_wins_and_unmatched_is_404() {
    let v1 = Upstream::start(|_| Reply::new(200, "from-api"));
    let v2 = Upstream::start(|_| Reply::new(200, "from-api-v2"));
    let clace = Clace::new();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/api/v2\"\nproxy = \"{}\"\n\n\
         [[route]]\npath = \"/api\"\nproxy = \"{}\"\n",
        v2.url(),
        v1.url()
    )));
    let daemon = clace.serve();

    let resp = get(daemon.http, "/api/v2/users");
    assert_eq!(resp.text(), "from-api-v2");
    let resp = get(daemon.http, "/api/v1/users");
    assert_eq!(resp.text(), "from-api");
    let resp = get(daemon.http, "/api");
    assert_eq!(resp.text(), "from-api");
    let v1_seen: Vec<String> = v1.received().into_iter().map(|r| r.target).collect();
    let v2_seen: Vec<String> = v2.received().into_iter().map(|r| r.target).collect();
    assert_eq!(v2_seen, ["/api/v2/users"]);
    assert_eq!(v1_seen, ["/api/v1/users", "/api"]);

    let before = v1.count() + v2.count();
    // Prefixes match whole path segments (README): /api is not /apix.
    let resp = get(daemon.http, "/apix");
    assert_eq!(resp.status, 404, "/api does not match /apix");
    let resp = get(daemon.http, "/elsewhere/x");
    assert_eq!(resp.status, 404, "no route matched");
    let resp = get(daemon.http, "/");
    assert_eq!(resp.status, 404, "no route for /");
    assert_eq!(
        v1.count() + v2.count(),
        before,
        "nothing reached an upstream"
    );
}

#[test]
fn oversized_request_header_gets_431() {
    let clace = Clace::new();
    clace.write_config(&config_with(""));
    let daemon = clace.serve();
    let big = "a".repeat(200 * 1024);
    let resp = Request::get("/_clace/health")
        .header("X-Big", &big)
        .try_send(daemon.http)
        .expect("the daemon answers an oversized header instead of dropping it");
    assert_eq!(resp.status, 431);
    // And the daemon is still fine afterwards.
    assert_eq!(get(daemon.http, "/_clace/health").status, 200);
}

#[test]
fn health_is_served_even_with_a_catch_all_route() {
    let clace = Clace::new();
    let (dir, _) = folder(&clace, "root");
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/\"\nstatic = {dir}\n"
    )));
    let daemon = clace.serve();
    let resp = get(daemon.http, "/_clace/health");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["status"], "ok");
}
