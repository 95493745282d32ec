//! Several clace instances sharing one ACME certificate storage (issue 12;
//! interface §3 `storage_location`, §9): a folder, or PostgreSQL.
//!
//! Every part is real and started by the test, on ports of its own: three
//! `clace serve` instances (each its own `CL_HOME` and `cert_location`, the
//! same `storage_location`), Debian's HAProxy in TCP mode balancing
//! round-robin across their HTTPS ports ([`crate::util::haproxy`]), Pebble
//! with its `tlsPort` set to HAProxy's frontend, so that each TLS-ALPN-01
//! validation reaches whichever instance the balancer picks
//! ([`crate::util::pebble`]), and for the PostgreSQL variants a throwaway
//! server ([`crate::util::postgres`]) whose password reaches clace through
//! `$CLACE_TEST_PGPASSWORD` in the URL.
//!
//! Start order: the instances' HTTPS ports are picked free first; HAProxy
//! starts with them as backends; Pebble starts with HAProxy's port as its
//! `tlsPort`; then the three instances start at once (spawned together, so
//! that all are behind the balancer before any order is validated) and
//! each must print `Server listening on https://` with its port.
//!
//! Orders and issuances are counted in Pebble's log, never from what clace
//! says. What each instance serves is read with handshakes on its own port
//! (not through HAProxy), one thread per instance ([`Cluster::watch`]), so
//! the moment an instance switches to a certificate is known to a few tens
//! of milliseconds, and compared with when the storage got it (the folder:
//! the files' modification time; PostgreSQL: the `modified` column of
//! `clace_storage`).

mod certs_cli;
mod issuance;
mod outage;
mod pg_backend;
mod renewal;
mod takeover;

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::acme::{count_lines, is_pebble, EMAIL};
use crate::tls_util::{facts, handshake, pem_certs, CertFacts, Tls};
use crate::util::haproxy::HaProxy;
use crate::util::pebble::{free_port, tail, Pebble, PebbleOptions};
use crate::util::postgres::{Postgres, PASSWORD_VAR};
use crate::util::{toml_path, toml_str, Clace, Proc};

/// The names every scenario manages.
pub const NAMES: [&str; 3] = ["a.test", "b.test", "c.test"];

/// How many instances share the storage.
pub const INSTANCES: usize = 3;

/// How long after its storage every instance must serve a certificate
/// (issue 12: "within 1 s").
pub const SWITCH_LIMIT: Duration = Duration::from_secs(1);

/// The pause between two rounds of handshakes of one watcher thread.
const ROUND: Duration = Duration::from_millis(20);

/// Where the instances share their certificates.
pub enum Store {
    /// A folder (the default back end), removed at the end.
    Folder(tempfile::TempDir),
    /// A PostgreSQL server, stopped and removed at the end.
    Postgres(Postgres),
}

/// A certificate as the storage holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The leaf's serial.
    pub serial: String,
    /// When it was stored: the later of the `.crt` and `.key` writes.
    pub at: SystemTime,
}

impl Store {
    pub fn folder() -> Store {
        Store::Folder(
            tempfile::Builder::new()
                .prefix("clace-shared-storage-")
                .tempdir()
                .expect("create the shared storage folder"),
        )
    }

    pub fn postgres() -> Store {
        Store::Postgres(Postgres::new())
    }

    /// The `storage_location` value.
    pub fn location(&self) -> String {
        match self {
            Store::Folder(dir) => toml_path(dir.path()),
            Store::Postgres(pg) => toml_str(pg.url_with_var()),
        }
    }

    pub fn pg_mut(&mut self) -> &mut Postgres {
        match self {
            Store::Postgres(pg) => pg,
            Store::Folder(_) => panic!("this test's storage is a folder"),
        }
    }

    pub fn dir(&self) -> &Path {
        match self {
            Store::Folder(dir) => dir.path(),
            Store::Postgres(_) => panic!("this test's storage is PostgreSQL"),
        }
    }

    /// The certificate stored for `name` under `issuer`, or why none is
    /// found.
    pub fn stored(&self, issuer: &str, name: &str) -> Result<Stored, String> {
        let base = format!("certificates/{issuer}/{name}/{name}");
        let serial_of = |pem: &[u8], what: &str| {
            let chain = pem_certs(pem);
            let leaf = chain
                .first()
                .ok_or(format!("{what} holds no certificate"))?;
            Ok::<_, String>(facts(leaf).serial)
        };
        match self {
            Store::Folder(dir) => {
                let crt = dir.path().join(format!("{base}.crt"));
                let key = dir.path().join(format!("{base}.key"));
                let mtime = |p: &Path| {
                    fs::metadata(p)
                        .and_then(|m| m.modified())
                        .map_err(|e| format!("{}: {e}", p.display()))
                };
                let pem = fs::read(&crt).map_err(|e| format!("{}: {e}", crt.display()))?;
                Ok(Stored {
                    serial: serial_of(&pem, &crt.display().to_string())?,
                    at: mtime(&crt)?.max(mtime(&key)?),
                })
            }
            Store::Postgres(pg) => {
                let row = pg.try_psql(&format!(
                    "SELECT extract(epoch FROM max(modified)), \
                     encode((array_agg(value) FILTER (WHERE key = '{base}.crt'))[1], 'hex') \
                     FROM clace_storage WHERE key IN ('{base}.crt', '{base}.key') \
                     HAVING count(*) = 2"
                ))?;
                let (epoch, hex) = row.trim().split_once('|').ok_or(format!(
                    "no rows {base}.crt and {base}.key in clace_storage"
                ))?;
                let pem = unhex(hex).ok_or(format!("{base}.crt: bad hex from psql"))?;
                let epoch: f64 = epoch
                    .parse()
                    .map_err(|e| format!("modified {epoch:?}: {e}"))?;
                Ok(Stored {
                    serial: serial_of(&pem, &format!("{base}.crt"))?,
                    at: UNIX_EPOCH + Duration::from_secs_f64(epoch),
                })
            }
        }
    }

    /// Every key the storage holds (relative paths for the folder), sorted.
    pub fn keys(&self) -> Vec<String> {
        match self {
            Store::Folder(dir) => {
                let mut keys = Vec::new();
                walk(dir.path(), dir.path(), &mut keys);
                keys.sort();
                keys
            }
            Store::Postgres(pg) => {
                match pg.try_psql("SELECT key FROM clace_storage ORDER BY key") {
                    Ok(out) => out.lines().map(str::to_owned).collect(),
                    Err(e) => vec![format!("(cannot list clace_storage: {})", e.trim())],
                }
            }
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.display().to_string());
        }
    }
}

/// Bytes from lower-case hex (PostgreSQL's `encode(..., 'hex')`).
fn unhex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim().as_bytes();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(std::str::from_utf8(hex.get(i..i + 2)?).ok()?, 16).ok())
        .collect()
}

/// One clace instance: its world, its HTTPS port (an HAProxy backend) and,
/// once started, the running daemon.
pub struct Node {
    pub clace: Clace,
    pub port: u16,
    pub tls: Option<Tls>,
}

impl Node {
    pub fn tls(&self) -> &Tls {
        self.tls.as_ref().expect("this instance was started")
    }

    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.tls.as_mut().expect("this instance was started").proc
    }

    pub fn is_running(&mut self) -> bool {
        self.tls.as_mut().is_some_and(|t| t.proc.is_running())
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.tls
            .as_ref()
            .map(|t| t.proc.stderr_lines())
            .unwrap_or_default()
    }
}

/// Three instances, HAProxy in front, Pebble behind it, one storage.
/// Dropped in this order: the instances, Pebble, HAProxy, the storage.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub pebble: Pebble,
    pub haproxy: HaProxy,
    pub store: Store,
    pub names: Vec<String>,
}

impl Cluster {
    /// Sets everything up for `names` (nothing of clace runs yet).
    pub fn new(
        store: Store,
        names: &[&str],
        options: impl FnOnce(PebbleOptions) -> PebbleOptions,
    ) -> Cluster {
        let ports: Vec<u16> = (0..INSTANCES).map(|_| free_port()).collect();
        let haproxy = HaProxy::start(free_port(), &ports);
        let pebble = Pebble::start(options(PebbleOptions::new(haproxy.port)));
        let domains: Vec<String> = names.iter().map(toml_str).collect();
        let nodes = ports
            .into_iter()
            .map(|port| {
                let mut clace = Clace::new();
                if let Store::Postgres(pg) = &store {
                    clace.env(PASSWORD_VAR, pg.password());
                }
                let certs = clace.root().join("certs");
                fs::create_dir_all(&certs).expect("create cert_location");
                clace.write_config(&format!(
                    "[http]\nhost = \"127.0.0.1\"\nport = 0\n\n[https]\n\
                     host = \"127.0.0.1\"\nport = {port}\ncert_location = {certs}\n\
                     storage_location = {storage}\nservice_email = {email}\n\
                     acme_directory_url = {directory}\nacme_ca_file = {ca}\n\
                     domains = [{domains}]\n",
                    certs = toml_path(&certs),
                    storage = store.location(),
                    email = toml_str(EMAIL),
                    directory = toml_str(pebble.directory_url()),
                    ca = toml_path(&pebble.api_ca_file()),
                    domains = domains.join(", "),
                ));
                Node {
                    clace,
                    port,
                    tls: None,
                }
            })
            .collect();
        Cluster {
            nodes,
            pebble,
            haproxy,
            store,
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// Starts every instance at once, then waits for each one's listeners
    /// and checks its HTTPS port.
    pub fn start_all(&mut self) {
        let procs: Vec<Proc> = self
            .nodes
            .iter()
            .map(|n| n.clace.spawn(&["serve"]))
            .collect();
        for (i, mut proc) in procs.into_iter().enumerate() {
            let https = proc.listening_addr("https");
            let http = proc.listening_addr("http");
            self.nodes[i].tls = Some(Tls { proc, https, http });
            assert_eq!(
                https.port(),
                self.nodes[i].port,
                "instance {i} must listen on its HAProxy backend port{}",
                self.diag()
            );
        }
    }

    /// The certmagic issuer folder name for this Pebble.
    pub fn issuer(&self) -> String {
        self.pebble.issuer_key()
    }

    /// The certificate the storage holds for `name`.
    pub fn stored(&self, name: &str) -> Result<Stored, String> {
        self.store.stored(&self.issuer(), name)
    }

    /// The certificate the storage holds for `name`; panics if none.
    pub fn must_be_stored(&self, name: &str) -> Stored {
        self.stored(name).unwrap_or_else(|why| {
            panic!(
                "no certificate stored for {name} (issuer {}): {why}{}",
                self.issuer(),
                self.diag()
            )
        })
    }

    /// Which instances logged `ordering a certificate for NAME`, and how
    /// many times, for messages.
    pub fn orderers(&self) -> String {
        let mut out = String::new();
        for name in &self.names {
            let by: Vec<String> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let c = count_lines(&n.stderr_lines(), &["ordering a certificate for", name]);
                    format!("#{i}: {c}")
                })
                .collect();
            let _ = write!(out, "{name} ordered by [{}]; ", by.join(", "));
        }
        out
    }

    /// Everything a failure message needs: each instance's stderr tail,
    /// Pebble's log tail, HAProxy's output, the storage's keys and, with
    /// PostgreSQL, its log tail.
    pub fn diag(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = write!(
                out,
                "\n--- instance #{i} (https port {}) stderr, last 40 lines ---\n{}",
                n.port,
                tail(&n.stderr_lines().join("\n"), 40)
            );
        }
        let _ = write!(
            out,
            "\n--- pebble log, last 30 lines ({} orders, {} issued) ---\n{}\n--- haproxy ---\n{}\
             \n--- storage keys ---\n{}",
            self.pebble.orders(),
            self.pebble.issued(),
            self.pebble.log_tail(30),
            self.haproxy.log_tail(10),
            self.store.keys().join("\n")
        );
        if let Store::Postgres(pg) = &self.store {
            let _ = write!(
                out,
                "\n--- postgres log, last 20 lines ---\n{}",
                pg.log_tail(20)
            );
        }
        out
    }

    /// Asserts that Pebble received exactly `expected` orders, and still
    /// has after [`crate::acme::QUIET`] (a duplicate order would come right
    /// after the first issuance).
    pub fn assert_orders_stay(&self, expected: usize, why: &str) {
        let until = Instant::now() + crate::acme::QUIET;
        while Instant::now() < until {
            let orders = self.pebble.orders();
            if orders != expected {
                panic!(
                    "{why}: Pebble received {orders} order(s), expected {expected}; {}{}",
                    self.orderers(),
                    self.diag()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Checks the chain each running instance serves for each name up to
    /// Pebble's root, and returns the serial each serves (by instance, by
    /// name).
    pub fn assert_chains_verify(&mut self) -> Vec<Vec<String>> {
        let mut serials = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                serials.push(Vec::new());
                continue;
            }
            let addr = self.nodes[i].tls().https;
            let mut row = Vec::new();
            for name in &self.names {
                let h = handshake(addr, Some(name)).unwrap_or_else(|e| {
                    panic!(
                        "instance #{i}: handshake for {name} failed: {e}{}",
                        self.diag()
                    )
                });
                if let Err(e) = self.pebble.verify_chain(&h.chain, name) {
                    panic!(
                        "instance #{i} serves {name} a chain ({} certificate(s), leaf serial {}) \
                         that does not verify to Pebble's root: {e}{}",
                        h.chain.len(),
                        h.serial(),
                        self.diag()
                    );
                }
                row.push(h.serial());
            }
            serials.push(row);
        }
        serials
    }

    /// Handshakes for every name on every instance's own port, a round
    /// every ~20 ms in one thread per instance, until `done` holds for what
    /// was seen; panics (with what was seen and [`Cluster::diag`]) if an
    /// instance exits or `timeout` passes first.
    pub fn watch(&mut self, timeout: Duration, done: impl Fn(&Tracks) -> bool) -> Tracks {
        let addrs: Vec<SocketAddr> = self.nodes.iter().map(|n| n.tls().https).collect();
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let tracks = Mutex::new(Tracks::new(addrs.len(), &names));
        let stop = AtomicBool::new(false);
        let deadline = Instant::now() + timeout;
        let started = Instant::now();
        let nodes = &mut self.nodes;
        let failure = std::thread::scope(|s| {
            for (i, addr) in addrs.iter().enumerate() {
                let (tracks, stop, names) = (&tracks, &stop, &names);
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for (j, name) in names.iter().enumerate() {
                            let start = SystemTime::now();
                            let result = handshake(*addr, Some(name)).map(|h| h.leaf());
                            lock(tracks).by_node[i][j].record(start, result);
                        }
                        std::thread::sleep(ROUND);
                    }
                });
            }
            let failure = loop {
                if done(&lock(&tracks)) {
                    break None;
                }
                if let Some(i) = nodes.iter_mut().position(|n| !n.is_running()) {
                    break Some(format!("instance #{i} exited"));
                }
                if Instant::now() >= deadline {
                    break Some(format!("not done after {timeout:?}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            stop.store(true, Ordering::Relaxed);
            failure
        });
        let tracks = tracks.into_inner().unwrap_or_else(PoisonError::into_inner);
        if let Some(why) = failure {
            panic!(
                "{why} ({:?} after the watch began); what each instance served:\n{}\n{}{}",
                started.elapsed(),
                tracks.summary(),
                self.orderers(),
                self.diag()
            );
        }
        tracks
    }

    /// Asserts that no watched handshake failed.
    pub fn assert_no_failed_handshake(&self, tracks: &Tracks) {
        let failures = tracks.failures();
        assert!(
            failures.is_empty(),
            "{} of {} handshakes failed: {failures:?}\n{}{}",
            failures.len(),
            tracks.handshakes(),
            tracks.summary(),
            self.diag()
        );
    }

    /// Asserts that every instance switched to the stored certificate of
    /// each name within [`SWITCH_LIMIT`] of its storage: the last handshake
    /// that still got another certificate started no later than that.
    /// Returns the measured delays (first handshake that got it, minus the
    /// storage time), by instance and name, for messages.
    pub fn assert_switched_in_time(&self, tracks: &Tracks) -> Vec<String> {
        let mut delays = Vec::new();
        for name in &self.names {
            let stored = self.must_be_stored(name);
            for (i, row) in tracks.by_node.iter().enumerate() {
                let track = &row[tracks.index(name)];
                let change = track
                    .changes
                    .iter()
                    .find(|c| c.serial == stored.serial)
                    .unwrap_or_else(|| {
                        panic!(
                            "instance #{i} never served the stored certificate of {name} \
                             (serial {}):\n{}{}",
                            stored.serial,
                            tracks.summary(),
                            self.diag()
                        )
                    });
                let late = |t: SystemTime| t.duration_since(stored.at).ok();
                if let Some(before) = change.previous_at.and_then(late) {
                    assert!(
                        before <= SWITCH_LIMIT,
                        "instance #{i} still served another certificate for {name} {before:?} \
                         after serial {} was stored (limit {SWITCH_LIMIT:?}):\n{}{}",
                        stored.serial,
                        tracks.summary(),
                        self.diag()
                    );
                }
                delays.push(format!(
                    "#{i} {name}: {}",
                    match late(change.at) {
                        Some(d) => format!("{} ms", d.as_millis()),
                        None => "at once".into(),
                    }
                ));
            }
        }
        delays
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A certificate an instance began to serve.
#[derive(Debug, Clone)]
pub struct Change {
    pub serial: String,
    pub pebble: bool,
    pub not_after: i64,
    /// When the first handshake that got it started.
    pub at: SystemTime,
    /// When the last handshake that still got the previous one started.
    pub previous_at: Option<SystemTime>,
}

/// What one instance served for one name, change by change.
#[derive(Debug, Default)]
pub struct Track {
    pub changes: Vec<Change>,
    pub handshakes: usize,
    /// Handshakes since the last change.
    pub since_change: usize,
    pub failures: Vec<String>,
    last_start: Option<SystemTime>,
}

impl Track {
    fn record(&mut self, start: SystemTime, result: Result<CertFacts, String>) {
        self.handshakes += 1;
        match result {
            Ok(leaf) => {
                if self.changes.last().map(|c| &c.serial) != Some(&leaf.serial) {
                    self.changes.push(Change {
                        pebble: is_pebble(&leaf),
                        serial: leaf.serial,
                        not_after: leaf.not_after,
                        at: start,
                        previous_at: self.last_start,
                    });
                    self.since_change = 0;
                } else {
                    self.since_change += 1;
                }
                self.last_start = Some(start);
            }
            Err(e) => self.failures.push(format!("{}: {e}", clock(start))),
        }
    }

    /// The Pebble certificates served, in order.
    pub fn pebble_serials(&self) -> Vec<&str> {
        self.changes
            .iter()
            .filter(|c| c.pebble)
            .map(|c| c.serial.as_str())
            .collect()
    }

    /// The certificate served last, if a Pebble one.
    pub fn current_pebble(&self) -> Option<&Change> {
        self.changes.last().filter(|c| c.pebble)
    }
}

/// What every instance served for every name.
#[derive(Debug)]
pub struct Tracks {
    pub names: Vec<String>,
    pub by_node: Vec<Vec<Track>>,
}

impl Tracks {
    fn new(nodes: usize, names: &[&str]) -> Tracks {
        Tracks {
            names: names.iter().map(|n| n.to_string()).collect(),
            by_node: (0..nodes)
                .map(|_| names.iter().map(|_| Track::default()).collect())
                .collect(),
        }
    }

    pub fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("a watched name")
    }

    pub fn all(&self) -> impl Iterator<Item = &Track> {
        self.by_node.iter().flatten()
    }

    pub fn handshakes(&self) -> usize {
        self.all().map(|t| t.handshakes).sum()
    }

    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, row) in self.by_node.iter().enumerate() {
            for (j, t) in row.iter().enumerate() {
                for f in &t.failures {
                    out.push(format!("#{i} {}: {f}", self.names[j]));
                }
            }
        }
        out
    }

    /// One line per instance and name: the serials served, with when.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (i, row) in self.by_node.iter().enumerate() {
            for (j, t) in row.iter().enumerate() {
                let changes: Vec<String> = t
                    .changes
                    .iter()
                    .map(|c| {
                        format!(
                            "{}{} at {}",
                            if c.pebble { "" } else { "non-Pebble " },
                            c.serial,
                            clock(c.at)
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  #{i} {}: {} handshakes, {} failed; {}",
                    self.names[j],
                    t.handshakes,
                    t.failures.len(),
                    changes.join(" -> ")
                );
            }
        }
        out
    }
}

/// A wall-clock time as seconds.milliseconds since the epoch (comparable
/// with the logs and the storage times).
pub fn clock(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// The folder of `name`'s certificate in a storage folder.
pub fn cert_folder(storage: &Path, issuer: &str, name: &str) -> PathBuf {
    storage.join("certificates").join(issuer).join(name)
}
