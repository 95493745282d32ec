//! systemd's readiness protocol (`Type=notify`, sd_notify(3)) without
//! libsystemd: one datagram a state change to the socket named by
//! `NOTIFY_SOCKET`, a path or an abstract name (`@...`).
//!
//! `READY=1` once the listeners serve, `RELOADING=1` (with the
//! `MONOTONIC_USEC` systemd asks for) when a SIGHUP reload starts and
//! `READY=1` again when it is applied, `STOPPING=1` when a graceful stop
//! starts. Without `NOTIFY_SOCKET` nothing is sent; a failure to send is
//! logged and never stops the daemon.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::time::{clock_gettime, ClockId};

const TARGET: &str = "clace::systemd";

/// The service manager's socket, when there is one.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// What `NOTIFY_SOCKET` said, for log messages.
    name: String,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; `None` when it is unset or unusable (logged).
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let Some(name) = name.to_str().map(str::to_owned) else {
            log::warn!(target: TARGET, "NOTIFY_SOCKET is not UTF-8; systemd will not be told when clace is ready");
            return None;
        };
        if name.is_empty() {
            return None;
        }
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
            None => SocketAddr::from_pathname(&name),
        };
        let result = addr.and_then(|addr| Ok((UnixDatagram::unbound()?, addr)));
        match result {
            Ok((socket, addr)) => Some(Notifier { socket, addr, name }),
            Err(e) => {
                log::warn!(target: TARGET, "NOTIFY_SOCKET={name}: {e}; systemd will not be told when clace is ready");
                None
            }
        }
    }

    /// The listeners serve (at start, or once a reload is applied).
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A SIGHUP reload starts.
    pub fn reloading(&self) {
        match clock_gettime(ClockId::CLOCK_MONOTONIC) {
            Ok(now) => {
                let usec = now.tv_sec() * 1_000_000 + now.tv_nsec() / 1_000;
                self.send(&format!(
                    "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration"
                ));
            }
            Err(e) => {
                log::warn!(target: TARGET, "cannot read CLOCK_MONOTONIC ({e}); RELOADING=1 sent without it");
                self.send("RELOADING=1\nSTATUS=reloading the configuration");
            }
        }
    }

    /// A graceful stop starts.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    fn send(&self, message: &str) {
        match self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            Ok(_) => {
                let first = message.lines().next().unwrap_or(message);
                log::debug!(target: TARGET, "told systemd {first}");
            }
            Err(e) => {
                log::warn!(target: TARGET, "cannot notify NOTIFY_SOCKET={}: {e}", self.name);
            }
        }
    }
}
