//! ACME end to end (interface §9, §4 steps 1 and 3, §6, §7; issue 8, "How
//! it is proven"): the real `clace` binary against a real CA, Debian's
//! Pebble 2.4.0, started for each test on ports of its own
//! ([`crate::util::pebble`]) and killed by its guard, pass or fail.
//!
//! Names resolve to 127.0.0.1 through Pebble's mock DNS, and Pebble dials
//! every TLS-ALPN-01 validation at clace's HTTPS port on 127.0.0.1. Orders
//! and issued certificates are counted from Pebble's own log, so "no new
//! order" does not depend on what clace says about itself.
//!
//! Port order: clace's HTTPS port must be known before Pebble starts (it is
//! Pebble's `tlsPort`) and Pebble's directory URL before clace starts. So a
//! test picks a free port P (bind 127.0.0.1:0, release), starts Pebble with
//! `tlsPort` P, then clace with `[https] port = P`, and checks P in clace's
//! `Server listening on https://...` line.
//!
//! The log lines matched (loosely: a few words, any case) are the ones the
//! issuer prints: "ordering a certificate for NAME", "certificate for NAME
//! issued", "next attempt at", "re-check", and warnings mentioning
//! "wildcard" and "443".

mod compat;
mod failures;
mod guard;
mod issuance;
mod renewal;
mod restart;
mod visibility;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::tls_util::{handshake, CertFacts, Handshake, Tls};
use crate::util::http::Request;
use crate::util::pebble::{free_port, tail, Pebble, PebbleOptions};
use crate::util::{toml_path, toml_str, wait_until, Clace, DEADLINE};

/// The account's contact (`service_email`).
pub const EMAIL: &str = "admin@example.test";

/// How long an issuance may take, from clace's start to a handshake that
/// gets the certificate (issue 8: "issued and served within 60 s").
pub const ISSUE_DEADLINE: Duration = Duration::from_secs(60);

/// How long a test watches for something that must not happen (a new
/// order) once everything that could cause it has happened.
pub const QUIET: Duration = Duration::from_secs(3);

/// One test's CA and daemon world: `root/certs` is `cert_location`
/// (created, so the self-signed default goes there), `root/storage` is
/// `storage_location` (not created: clace makes it), `root/site` a static
/// folder for routes.
pub struct Acme {
    pub clace: Clace,
    /// clace's HTTPS port, which is Pebble's `tlsPort`.
    pub port: u16,
    pub certs: PathBuf,
    pub storage: PathBuf,
    pub site: PathBuf,
    directory: String,
    ca_file: Option<PathBuf>,
    pebble: Option<Pebble>,
}

impl Acme {
    /// A fresh Pebble (deterministic defaults) and a world for clace.
    pub fn new() -> Acme {
        Acme::with(|o| o)
    }

    /// A fresh Pebble with options changed by `options`.
    pub fn with(options: impl FnOnce(PebbleOptions) -> PebbleOptions) -> Acme {
        let port = free_port();
        let pebble = Pebble::start(options(PebbleOptions::new(port)));
        let directory = pebble.directory_url();
        let ca_file = Some(pebble.api_ca_file());
        Acme::world(port, directory, ca_file, Some(pebble))
    }

    /// No CA at all: the directory URL points at a closed port.
    pub fn unreachable() -> Acme {
        let closed = free_port();
        Acme::world(
            free_port(),
            format!("https://127.0.0.1:{closed}/dir"),
            None,
            None,
        )
    }

    fn world(
        port: u16,
        directory: String,
        ca_file: Option<PathBuf>,
        pebble: Option<Pebble>,
    ) -> Acme {
        let clace = Clace::new();
        let certs = clace.root().join("certs");
        let storage = clace.root().join("storage");
        let site = clace.root().join("site");
        fs::create_dir_all(&certs).expect("create cert_location");
        fs::create_dir_all(&site).expect("create the site folder");
        fs::write(site.join("index.html"), "site\n").expect("write index.html");
        Acme {
            clace,
            port,
            certs,
            storage,
            site,
            directory,
            ca_file,
            pebble,
        }
    }

    pub fn pebble(&self) -> &Pebble {
        self.pebble.as_ref().expect("this test has a Pebble")
    }

    pub fn pebble_mut(&mut self) -> &mut Pebble {
        self.pebble.as_mut().expect("this test has a Pebble")
    }

    /// `certificates/<issuer>/<name>/` under `storage_location`.
    pub fn cert_dir(&self, storage: &Path, name: &str) -> PathBuf {
        storage
            .join("certificates")
            .join(self.pebble().issuer_key())
            .join(name)
    }

    /// Writes clace's configuration: HTTP on a free port, HTTPS on
    /// 127.0.0.1:P, ACME on with `domains`; `https_extra` goes into
    /// `[https]`, `rest` after it (routes).
    pub fn configure(&self, domains: &[&str], https_extra: &str, rest: &str) {
        self.configure_storage(domains, &self.storage, https_extra, rest);
    }

    /// As [`Acme::configure`], with another `storage_location`.
    pub fn configure_storage(
        &self,
        domains: &[&str],
        storage: &Path,
        https_extra: &str,
        rest: &str,
    ) {
        let domains: Vec<String> = domains.iter().map(toml_str).collect();
        let ca_file = match &self.ca_file {
            Some(path) => format!("acme_ca_file = {}\n", toml_path(path)),
            None => String::new(),
        };
        self.clace.write_config(&format!(
            "[http]\nhost = \"127.0.0.1\"\nport = 0\n\n\
             [https]\nhost = \"127.0.0.1\"\nport = {port}\n\
             cert_location = {certs}\nstorage_location = {storage}\n\
             service_email = {email}\nacme_directory_url = {dir}\n{ca_file}\
             domains = [{domains}]\n{https_extra}\n\n{rest}",
            port = self.port,
            certs = toml_path(&self.certs),
            storage = toml_path(storage),
            email = toml_str(EMAIL),
            dir = toml_str(&self.directory),
            domains = domains.join(", "),
        ));
    }

    /// A `[[route]]` for `domain`, serving the site folder.
    pub fn route(&self, domain: &str) -> String {
        format!(
            "[[route]]\ndomain = {}\npath = \"/\"\nstatic = {}\n",
            toml_str(domain),
            toml_path(&self.site)
        )
    }

    /// Starts `clace serve`; waits for both listeners and checks that HTTPS
    /// is on the port Pebble validates at.
    pub fn serve(&self) -> Tls {
        let mut proc = self.clace.spawn(&["serve"]);
        let https = proc.listening_addr("https");
        let http = proc.listening_addr("http");
        let tls = Tls { proc, https, http };
        assert_eq!(
            https.port(),
            self.port,
            "clace must listen where Pebble validates{}",
            self.diag(&tls)
        );
        tls
    }

    /// Stops the daemon with SIGTERM and waits for its exit.
    pub fn stop(&self, tls: &mut Tls) {
        tls.proc.signal(Signal::SIGTERM);
        let status = tls.proc.wait_exit(Duration::from_secs(40));
        assert!(status.success(), "clean stop: {status:?}{}", self.diag(tls));
    }

    /// The tails of clace's stderr and Pebble's log, for assertion messages.
    pub fn diag(&self, tls: &Tls) -> String {
        let pebble = match &self.pebble {
            Some(p) => p.log_tail(30),
            None => "(no Pebble in this test)".into(),
        };
        format!(
            "\n--- clace stderr (last 40 lines) ---\n{}\n--- pebble log (last 30 lines) ---\n{pebble}",
            tail(&tls.proc.stderr(), 40)
        )
    }

    /// Waits (from now, at most [`ISSUE_DEADLINE`]) until a handshake for
    /// `name` gets a certificate issued by Pebble, and returns it. Fails at
    /// once if the daemon exits.
    pub fn wait_issued(&self, tls: &mut Tls, name: &str) -> Handshake {
        self.wait_issued_within(tls, name, Instant::now() + ISSUE_DEADLINE)
    }

    /// As [`Acme::wait_issued`], with a deadline.
    pub fn wait_issued_within(&self, tls: &mut Tls, name: &str, deadline: Instant) -> Handshake {
        let started = Instant::now();
        loop {
            let last = match handshake(tls.https, Some(name)) {
                Ok(h) if is_pebble(&h.leaf()) => return h,
                Ok(h) => {
                    let leaf = h.leaf();
                    format!(
                        "served serial {} issued by {:?}",
                        leaf.serial, leaf.issuer_cn
                    )
                }
                Err(e) => format!("handshake failed: {e}"),
            };
            if !tls.proc.is_running() {
                panic!(
                    "clace exited ({:?}) before {name} was issued; last: {last}{}",
                    tls.proc.try_status(),
                    self.diag(tls)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "no Pebble certificate served for {name} after {:?} (the ACME issuer must \
                     order, validate over TLS-ALPN-01 and serve it); last: {last}{}",
                    started.elapsed(),
                    self.diag(tls)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that Pebble has received exactly `expected` orders, and
    /// still has after [`QUIET`].
    pub fn assert_orders_stay(&self, tls: &Tls, expected: usize, why: &str) {
        let pebble = self.pebble();
        let deadline = Instant::now() + QUIET;
        loop {
            let orders = pebble.orders();
            assert_eq!(
                orders,
                expected,
                "{why}: Pebble received {orders} order(s), expected {expected}{}",
                self.diag(tls)
            );
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Checks the served chain up to Pebble's root, for `name`.
    pub fn assert_verifies(&self, tls: &Tls, h: &Handshake, name: &str) {
        if let Err(e) = self.pebble().verify_chain(&h.chain, name) {
            panic!(
                "the chain served for {name} ({} certificate(s)) does not verify to Pebble's \
                 root: {e}{}",
                h.chain.len(),
                self.diag(tls)
            );
        }
    }

    /// Waits for a stderr line holding every word of `words` (any case).
    pub fn wait_log(&self, tls: &mut Tls, words: &[&str], timeout: Duration) -> String {
        let mut found = None;
        let ok = wait_until(timeout, || {
            found = find_line(&tls.proc.stderr_lines(), words);
            found.is_some() || !tls.proc.is_running()
        });
        match found {
            Some(line) => line,
            None => panic!(
                "no log line with {words:?} after {timeout:?} ({}){}",
                if ok { "clace exited" } else { "timed out" },
                self.diag(tls)
            ),
        }
    }

    /// `GET /_clace/health` on the HTTP listener: status and JSON.
    pub fn health(&self, tls: &Tls) -> (u16, serde_json::Value) {
        let resp = Request::get("/_clace/health").send(tls.http);
        let json = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
        (resp.status, json)
    }

    /// Waits until health lists `acme` as `state`; returns the last answer.
    pub fn wait_acme_state(&self, tls: &Tls, state: &str) -> (u16, serde_json::Value) {
        let mut last = (0, serde_json::Value::Null);
        let ok = wait_until(DEADLINE, || {
            last = self.health(tls);
            last.1["actors"]["acme"] == state
        });
        assert!(
            ok,
            "health never showed acme {state:?}; last: {} {}{}",
            last.0,
            last.1,
            self.diag(tls)
        );
        last
    }
}

/// Whether a certificate was issued by Pebble (its intermediate's CN).
pub fn is_pebble(leaf: &CertFacts) -> bool {
    leaf.issuer_cn.contains("Pebble")
}

/// The first line holding every word (case-insensitive).
pub fn find_line(lines: &[String], words: &[&str]) -> Option<String> {
    lines.iter().find(|l| has_words(l, words)).cloned()
}

/// Whether `line` holds every word (case-insensitive).
pub fn has_words(line: &str, words: &[&str]) -> bool {
    let lower = line.to_ascii_lowercase();
    words
        .iter()
        .all(|w| lower.contains(&w.to_ascii_lowercase()))
}

/// How many lines hold every word (case-insensitive).
pub fn count_lines(lines: &[String], words: &[&str]) -> usize {
    lines.iter().filter(|l| has_words(l, words)).count()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The instant at which a Unix time (seconds) arrives.
pub fn instant_at(unix: i64) -> Instant {
    let now = unix_now();
    Instant::now() + Duration::from_secs(unix.saturating_sub(now).max(0) as u64)
}

/// A GET of `target` over an HTTPS connection made for `sni`.
pub fn https_get(
    addr: SocketAddr,
    sni: &str,
    target: &str,
) -> Result<crate::util::http::Response, String> {
    let h = handshake(addr, Some(sni))?;
    let request = format!("GET {target} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    h.http1(request.as_bytes()).map_err(|e| e.to_string())
}
