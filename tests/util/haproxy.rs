//! A real TCP (TLS pass-through) balancer for one test: Debian's HAProxy in
//! `mode tcp`, `balance roundrobin` across the given backends on
//! 127.0.0.1, run in the foreground (`-db`) and killed by its guard's
//! `Drop`, pass or fail.
//!
//! Backends have no health checks: a connection refused by a dead one is
//! retried and redispatched to the next server (`retries`, `option
//! redispatch 1`), as a balancer in front of a cluster is set up, so a
//! killed instance costs a retry, not a failed connection.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::pebble::tail;
use super::{wait_until, Proc, DEADLINE};

/// The binary to run: `$HAPROXY_BIN`, else `haproxy` on the PATH, else
/// Debian's `/usr/sbin/haproxy` (not on a non-root PATH).
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HAPROXY_BIN") {
        return PathBuf::from(bin);
    }
    let sbin = PathBuf::from("/usr/sbin/haproxy");
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from("haproxy")
    }
}

/// A running HAProxy; killed when dropped.
pub struct HaProxy {
    /// The frontend's port on 127.0.0.1.
    pub port: u16,
    pub backends: Vec<u16>,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Writes the configuration and starts HAProxy with its frontend on
    /// 127.0.0.1:`frontend_port` and one server per backend port; waits
    /// until the frontend accepts connections.
    pub fn start(frontend_port: u16, backends: &[u16]) -> HaProxy {
        let dir = tempfile::Builder::new()
            .prefix("clace-haproxy-")
            .tempdir()
            .expect("create temp dir");
        let cfg = dir.path().join("haproxy.cfg");
        fs::write(&cfg, config(frontend_port, backends)).expect("write haproxy.cfg");
        let mut cmd = Command::new(binary());
        cmd.arg("-f")
            .arg(&cfg)
            .arg("-db")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if cmd.get_program().to_str() == Some("haproxy") && which_missing() {
            panic!("cannot run haproxy: install it with: apt-get install -y haproxy");
        }
        let mut proc = Proc::spawn(cmd);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, frontend_port));
        let up = wait_until(DEADLINE, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                || !proc.is_running()
        });
        if !up || !proc.is_running() {
            panic!(
                "HAProxy did not listen on {addr} ({}); its output:\n{}\n{}",
                match proc.try_status() {
                    Some(status) => format!("exited: {status}"),
                    None => "timed out".into(),
                },
                proc.stdout(),
                proc.stderr()
            );
        }
        HaProxy {
            port: frontend_port,
            backends: backends.to_vec(),
            proc,
            _dir: dir,
        }
    }

    /// The frontend's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The last `n` lines HAProxy printed (warnings, alerts).
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.proc.stderr(), n)
    }
}

/// Whether `haproxy` is nowhere on the PATH.
fn which_missing() -> bool {
    std::env::var_os("PATH")
        .is_none_or(|path| !std::env::split_paths(&path).any(|dir| dir.join("haproxy").is_file()))
}

/// The configuration: TCP pass-through, round-robin, a short connect
/// timeout, refused connections retried on the next server.
fn config(frontend_port: u16, backends: &[u16]) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, port)| format!("    server s{i} 127.0.0.1:{port}\n"))
        .collect();
    format!(
        "global\n    maxconn 2000\n\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    \
         timeout server 30s\n    retries 3\n    option redispatch 1\n\n\
         frontend clace\n    bind 127.0.0.1:{frontend_port}\n    default_backend instances\n\n\
         backend instances\n    balance roundrobin\n{servers}"
    )
}
