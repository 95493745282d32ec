//! Helpers shared by the black-box tests: starting the real `clace` binary
//! in a throw-away home, waiting for conditions with a deadline, a minimal
//! HTTP/1.1 client and recording upstream servers.
//!
//! Every process a test starts is owned by a [`Proc`] whose `Drop` kills and
//! reaps it, so a failing assertion never leaves a daemon behind.

#![allow(dead_code)]

pub mod h2;
pub mod haproxy;
pub mod http;
pub mod pebble;
pub mod postgres;
pub mod upstream;
pub mod ws;

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a test waits for anything that should happen "at once".
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(15);

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
/// Returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Asserts that a condition becomes true before a deadline (10 s unless
/// given), polling it; the message says what was awaited.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {
        assert!(
            $crate::util::wait_until($crate::util::DEADLINE, || $cond),
            $($msg)+
        )
    };
}

/// A string that no other test (or earlier run) produces, to recognise
/// content without hard-coding it.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{tag}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TOML basic string holding `s`, quoted and escaped.
pub fn toml_str(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_owned()).to_string()
}

/// A TOML string for a path.
pub fn toml_path(p: &Path) -> String {
    toml_str(p.to_str().expect("test paths are UTF-8"))
}

/// The configuration every listener test starts from: HTTP on a free port,
/// HTTPS disabled; `extra` is appended (routes, more keys).
pub fn config_with(extra: &str) -> String {
    format!("[http]\nport = 0\n\n[https]\nport = -1\n\n{extra}")
}

/// A temporary world for one `clace` run: a root folder holding `CL_HOME`,
/// the user's `HOME` and anything else the test needs (sites, secrets).
pub struct Clace {
    root: tempfile::TempDir,
    cl_home: PathBuf,
    user_home: PathBuf,
    envs: Vec<(OsString, OsString)>,
}

impl Default for Clace {
    fn default() -> Clace {
        Clace::new()
    }
}

impl Clace {
    /// A fresh world whose `CL_HOME` exists (so a config file can go there).
    pub fn new() -> Clace {
        let clace = Clace::with_missing_home();
        fs::create_dir_all(&clace.cl_home).expect("create CL_HOME");
        clace
    }

    /// A fresh world whose `CL_HOME` does not exist yet.
    pub fn with_missing_home() -> Clace {
        let root = tempfile::Builder::new()
            .prefix("clace-test-")
            .tempdir()
            .expect("create temp dir");
        let cl_home = root.path().join("clhome");
        let user_home = root.path().join("user");
        fs::create_dir_all(&user_home).expect("create HOME");
        Clace {
            root,
            cl_home,
            user_home,
            envs: Vec::new(),
        }
    }

    /// The folder that holds everything of this world.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn cl_home(&self) -> &Path {
        &self.cl_home
    }

    /// Writes `$CL_HOME/clace.toml` (found by the daemon without `-c`) and
    /// returns its path.
    pub fn write_config(&self, toml: &str) -> PathBuf {
        let path = self.cl_home.join("clace.toml");
        fs::write(&path, toml).expect("write clace.toml");
        path
    }

    /// Adds an environment variable for every later run.
    pub fn env(&mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> &mut Clace {
        self.envs
            .push((OsString::from(key), value.as_ref().to_os_string()));
        self
    }

    /// The command line for `clace ARGS`, with a clean environment: no
    /// `CL_*` or `RUST_LOG` inherited from whoever runs the tests.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clace"));
        cmd.args(args);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("CL_") || k == "RUST_LOG" {
                cmd.env_remove(&key);
            }
        }
        cmd.env("CL_HOME", &self.cl_home);
        cmd.env("HOME", &self.user_home);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts `clace ARGS`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args))
    }

    /// Runs `clace ARGS` to its end (at most [`DEADLINE`]).
    pub fn run(&self, args: &[&str]) -> Finished {
        let mut proc = self.spawn(args);
        let status = proc.wait_exit(DEADLINE);
        Finished {
            status,
            stdout: proc.stdout(),
            stderr: proc.stderr(),
        }
    }

    /// Starts `clace serve` and waits for its HTTP listener.
    pub fn serve(&self) -> Daemon {
        let mut proc = self.spawn(&["serve"]);
        let http = proc.listening_addr("http");
        Daemon { proc, http }
    }
}

/// A process that ran to its end.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A running daemon whose HTTP listener is up.
pub struct Daemon {
    pub proc: Proc,
    pub http: SocketAddr,
}

/// A child process with its output collected by reader threads; killed and
/// reaped when dropped.
pub struct Proc {
    child: Child,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("start clace");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let buf = Arc::clone(&stdout);
            readers.push(thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = out.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&chunk[..n]);
                }
            }));
        }
        if let Some(err) = child.stderr.take() {
            let lines = Arc::clone(&stderr);
            readers.push(thread::spawn(move || {
                let mut reader = BufReader::new(err);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line);
                            lines
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(text.trim_end_matches(['\r', '\n']).to_owned());
                        }
                    }
                }
            }));
        }
        Proc {
            child,
            status: None,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Everything printed on standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything printed on standard output so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// The exit status, if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                // The pipes are at EOF once the process is gone: collect the
                // last lines before anyone reads the output.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits for the process to end; panics (showing its stderr) if it is
    /// still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if !wait_until(timeout, || self.try_status().is_some()) {
            panic!(
                "clace still running after {timeout:?}; stderr:\n{}",
                self.stderr()
            );
        }
        self.status.expect("status set by try_status")
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("send signal");
    }

    /// Waits for a stderr line containing `needle` and returns it; panics if
    /// the process ends first or the deadline passes.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let mut found = None;
        let ok = wait_until(timeout, || {
            found = self
                .stderr
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            found.is_some() || self.try_status().is_some()
        });
        match found {
            Some(line) => line,
            None if ok => panic!(
                "clace exited ({:?}) before printing {needle:?}; stderr:\n{}",
                self.status,
                self.stderr()
            ),
            None => panic!(
                "no line with {needle:?} after {timeout:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Waits for `Server listening on SCHEME://HOST:PORT` and returns the
    /// address to connect to.
    pub fn listening_addr(&mut self, scheme: &str) -> SocketAddr {
        let needle = format!("Server listening on {scheme}://");
        let line = self.wait_for_line(&needle, DEADLINE);
        parse_listening(&line, scheme)
            .unwrap_or_else(|| panic!("cannot read the address in {line:?}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `HOST:PORT` from a `Server listening on SCHEME://HOST:PORT` line, as the
/// daemon printed it (host and port), plus a connectable socket address
/// (an unspecified host is reached through loopback).
pub fn listening_host_port(line: &str, scheme: &str) -> Option<(String, u16)> {
    let needle = format!("Server listening on {scheme}://");
    let rest = &line[line.find(&needle)? + needle.len()..];
    let authority: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/')
        .collect();
    let colon = authority.rfind(':')?;
    let host = authority[..colon].to_owned();
    let port: String = authority[colon + 1..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some((host, port.parse().ok()?))
}

fn parse_listening(line: &str, scheme: &str) -> Option<SocketAddr> {
    let (host, port) = listening_host_port(line, scheme)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "0.0.0.0" | "" => "127.0.0.1".parse().ok()?,
        "::" => "::1".parse().ok()?,
        "localhost" => "127.0.0.1".parse().ok()?,
        other => other.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// The TCP ports a process has in the LISTEN state (Linux: its socket file
/// descriptors matched against `/proc/net/tcp{,6}`).
pub fn listening_ports(pid: Pid) -> Vec<u16> {
    let mut inodes = Vec::new();
    if let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in entries.flatten() {
            if let Ok(target) = fs::read_link(entry.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.push(inode.to_owned());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                if let Some(port) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

/// A free TCP port on 127.0.0.1 that nothing listens on (bound, then
/// released): connecting to it is refused.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    port
}
