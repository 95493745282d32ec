//! Running under systemd and on ports 80 and 443: the `Type=notify`
//! messages (READY=1, RELOADING=1, STOPPING=1) sent to `NOTIFY_SOCKET`,
//! the unit file `config/clace.service` as `systemd-analyze verify` reads
//! it, and a port below 1024 bound by an unprivileged user with
//! `setcap cap_net_bind_service=+ep` (and refused, with both ways out
//! named, without it).

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use nix::sys::signal::Signal;
use nix::time::{clock_gettime, ClockId};

use crate::tls_util::{handshake, World};
use crate::util::http::get;
use crate::util::{config_with, unique, Clace, Proc, DEADLINE};

// ---------------------------------------------------------------------------
// Type=notify
// ---------------------------------------------------------------------------

/// The next datagram on `socket`, waiting at most [`DEADLINE`].
fn next_message(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("set read timeout");
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no message on NOTIFY_SOCKET within {DEADLINE:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The value of `KEY=` in a notification.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The next notification, which must set `KEY=1`; `when` says what led
/// to it, for the failure message.
fn expect_next(socket: &UnixDatagram, key: &str, when: &str) -> String {
    let message = next_message(socket);
    assert_eq!(
        field(&message, key),
        Some("1"),
        "{when}: expected {key}=1, got {message:?}"
    );
    message
}

/// CLOCK_MONOTONIC now, in microseconds (the clock systemd's
/// MONOTONIC_USEC is on).
fn monotonic_usec() -> i64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    now.tv_sec() * 1_000_000 + now.tv_nsec() / 1_000
}

#[test]
fn notify_socket_gets_ready_reloading_and_stopping() {
    let mut world = World::with_certs();
    world.configure("", "", "");
    let socket_path = world.root().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    world.clace.env("NOTIFY_SOCKET", &socket_path);
    let mut proc = world.clace.spawn(&["serve"]);

    let ready = expect_next(&socket, "READY", "at start");
    // READY=1 comes once both listeners have printed their line and serve.
    // (The lines are read from the pipe by a thread: give it a moment.)
    let http = proc.listening_addr("http");
    let https = proc.listening_addr("https");
    assert_eq!(get(http, "/_clace/health").status, 200);
    handshake(https, Some("localhost")).expect("HTTPS serves at READY=1");
    let status = field(&ready, "STATUS").unwrap_or_default();
    assert!(
        status.contains(&format!("http://127.0.0.1:{}", http.port())),
        "STATUS names the URLs: {ready:?}"
    );

    // SIGHUP: RELOADING=1 with the time it started, then READY=1.
    let before = monotonic_usec();
    proc.signal(Signal::SIGHUP);
    let reloading = expect_next(&socket, "RELOADING", "on SIGHUP");
    let after = monotonic_usec();
    let usec: i64 = field(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC {usec} is the daemon's CLOCK_MONOTONIC ({before}..={after})"
    );
    expect_next(&socket, "READY", "after the reload");
    proc.wait_for_line("SIGHUP: configuration applied", DEADLINE);

    // SIGTERM: STOPPING=1, then a clean exit.
    proc.signal(Signal::SIGTERM);
    expect_next(&socket, "STOPPING", "on SIGTERM");
    let status = proc.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proc.stderr());
}

#[test]
fn notify_socket_may_be_an_abstract_name() {
    let name = unique("clace-notify");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract socket");
    let mut clace = Clace::new();
    clace.write_config(&config_with(""));
    clace.env("NOTIFY_SOCKET", format!("@{name}"));
    let mut proc = clace.spawn(&["serve"]);
    expect_next(&socket, "READY", "at start");
    proc.listening_addr("http");
    proc.signal(Signal::SIGINT);
    expect_next(&socket, "STOPPING", "on SIGINT");
    assert_eq!(proc.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn a_notify_socket_nobody_reads_is_not_fatal() {
    let mut clace = Clace::new();
    clace.write_config(&config_with(""));
    let missing = clace.root().join("no-such.sock");
    clace.env("NOTIFY_SOCKET", &missing);
    let mut proc = clace.spawn(&["serve"]);
    let http = proc.listening_addr("http");
    proc.wait_for_line("cannot notify NOTIFY_SOCKET", DEADLINE);
    assert_eq!(get(http, "/_clace/health").status, 200);
    assert!(proc.is_running(), "stderr:\n{}", proc.stderr());
}

// ---------------------------------------------------------------------------
// The unit file
// ---------------------------------------------------------------------------

fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/clace.service")
}

#[test]
fn unit_file_says_what_the_readme_promises() {
    let unit = fs::read_to_string(unit_file()).expect("read config/clace.service");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in [
        "Type=notify",
        "ExecStart=/usr/local/bin/clace serve",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=clace",
        "Group=clace",
        "Environment=CL_HOME=/var/lib/clace",
        "StateDirectory=clace",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/clace",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "Restart=on-failure",
    ] {
        assert!(
            lines.contains(&wanted),
            "config/clace.service lacks {wanted}"
        );
    }
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        eprintln!(
            "SKIPPED unit_file_passes_systemd_analyze_verify: systemd-analyze is not installed"
        );
        return;
    };
    // `verify` refuses an ExecStart= binary that does not exist, and
    // /usr/local/bin/clace is not installed where the tests run: the unit
    // is checked as a copy whose ExecStart= is the binary under test,
    // every other line as shipped. (It does not resolve User=, so the
    // `clace` user need not exist here.)
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = fs::read_to_string(unit_file()).expect("read config/clace.service");
    let exec = "ExecStart=/usr/local/bin/clace ";
    assert!(unit.contains(exec), "the unit starts /usr/local/bin/clace");
    let copy = dir.path().join("clace.service");
    fs::write(
        &copy,
        unit.replace(exec, &format!("ExecStart={} ", env!("CARGO_BIN_EXE_clace"))),
    )
    .expect("write the copy");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    // An unknown key or a value it cannot parse is only a warning (exit
    // code 0): any line about our unit fails the test. Lines about other
    // units of this machine are not ours to judge.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("clace")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns:\n{text}");
}

// ---------------------------------------------------------------------------
// Ports 80 and 443
// ---------------------------------------------------------------------------

/// Ports 80 and 443 on 127.0.0.1 are machine-wide: one test at a time.
static PRIVILEGED_PORTS: Mutex<()> = Mutex::new(());

/// Why these tests cannot run here, if they cannot.
fn privileged_skip_reason() -> Option<String> {
    if uid_of(std::process::id()) != Some(0) {
        return Some("not root (setcap and switching to user nobody need root)".into());
    }
    for port in [80, 443] {
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            return Some(format!(
                "127.0.0.1:{port} cannot be bound ({e}); something else uses it"
            ));
        }
    }
    None
}

/// A copy of the binary under test in a folder user `nobody` can read,
/// with `CAP_NET_BIND_SERVICE` as a file capability when `capable`.
fn binary_copy(clace: &Clace, capable: bool) -> PathBuf {
    // nobody must be able to walk down to it.
    for dir in clace.root().ancestors().skip(1) {
        let mode = fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by others (mode {mode:o}): user nobody cannot reach \
             the binary; set TMPDIR to a folder that is",
            dir.display()
        );
    }
    // The world's root is private to root (0700): let nobody through.
    fs::set_permissions(clace.root(), fs::Permissions::from_mode(0o755)).expect("chmod root");
    let bin = clace.root().join("bin");
    fs::create_dir_all(&bin).expect("mkdir bin");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod bin");
    let copy = bin.join("clace");
    fs::copy(env!("CARGO_BIN_EXE_clace"), &copy).expect("copy the binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    if capable {
        let out = Command::new("setcap")
            .arg("cap_net_bind_service=+ep")
            .arg(&copy)
            .output()
            .expect("run setcap (Debian: apt-get install libcap2-bin; scripts/test-deps.sh does)");
        assert!(
            out.status.success(),
            "setcap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // CL_HOME belongs to nobody: the daemon writes its self-signed default
    // and run/ there.
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(clace.cl_home())
        .status()
        .expect("run chown");
    assert!(chown.success(), "chown CL_HOME to nobody");
    copy
}

/// `EXE serve` as user nobody (no supplementary groups), with the world's
/// environment.
fn serve_as_nobody(clace: &Clace, exe: &Path) -> Proc {
    let template = clace.command(&["serve"]);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(exe)
        .arg("serve");
    for (key, value) in template.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Proc::spawn(cmd)
}

fn privileged_world() -> Clace {
    let clace = Clace::new();
    clace.write_config(
        "[http]\nhost = \"127.0.0.1\"\nport = 80\n\n[https]\nhost = \"127.0.0.1\"\nport = 443\n",
    );
    clace
}

/// The user id a process runs as (`Uid:` in /proc/PID/status, real id).
fn uid_of(pid: impl std::fmt::Display) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn nobody_with_setcap_serves_ports_80_and_443() {
    let _ports = PRIVILEGED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(why) = privileged_skip_reason() {
        eprintln!("SKIPPED nobody_with_setcap_serves_ports_80_and_443: {why}");
        return;
    }
    let clace = privileged_world();
    let exe = binary_copy(&clace, true);
    let mut proc = serve_as_nobody(&clace, &exe);
    let http = proc.listening_addr("http");
    let https = proc.listening_addr("https");
    assert_eq!(http, SocketAddr::from(([127, 0, 0, 1], 80)));
    assert_eq!(https, SocketAddr::from(([127, 0, 0, 1], 443)));
    assert_eq!(uid_of(proc.pid()), Some(65534), "the daemon runs as nobody");
    handshake(https, Some("localhost")).unwrap_or_else(|e| {
        panic!(
            "no handshake on 127.0.0.1:443: {e}; stderr:\n{}",
            proc.stderr()
        )
    });
    assert_eq!(get(http, "/_clace/health").status, 200);
    proc.signal(Signal::SIGTERM);
    assert_eq!(
        proc.wait_exit(DEADLINE).code(),
        Some(0),
        "stderr:\n{}",
        proc.stderr()
    );
}

#[test]
fn nobody_without_the_capability_exits_1_naming_the_port_and_both_ways_out() {
    let _ports = PRIVILEGED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(why) = privileged_skip_reason() {
        eprintln!(
            "SKIPPED nobody_without_the_capability_exits_1_naming_the_port_and_both_ways_out: {why}"
        );
        return;
    }
    let clace = privileged_world();
    let exe = binary_copy(&clace, false);
    let mut proc = serve_as_nobody(&clace, &exe);
    let status = proc.wait_exit(DEADLINE);
    let stderr = proc.stderr();
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    for needle in [
        "127.0.0.1:80",
        "port 80",
        &format!("sudo setcap cap_net_bind_service=+ep {}", exe.display()),
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "config/clace.service",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert!(!stderr.contains("Server listening"), "{stderr}");
}
