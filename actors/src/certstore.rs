//! The cert store actor: owns every certificate pair and publishes the
//! snapshot the resolver reads.
//!
//! Files are checked metadata first: a pair is re-read only when the
//! identity (device, inode), size, mtime or ctime of one of its files (after
//! following symbolic links) differs from the version last examined. So a
//! rescan of 10,000 unchanged pairs is 20,000 `stat` calls, and a bad
//! version is logged once: it is not examined again until it changes.
//!
//! A pair is taken only whole and valid; until then the last good version
//! keeps serving. Only this actor publishes snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use crate::certs::inventory::pair_files;
use crate::certs::pair::{read_pair, Pair, Source};
use crate::certs::selfsigned;
use crate::certs::snapshot::{Snapshot, DEFAULT_STEM};
use crate::health::{ActorName, ActorState, Health};
use crate::messages::{
    AcmeStored, EagerCheck, EagerChecked, PathsChanged, ReconfigureStore, Rescan, Restart,
    SetChallenge, SnapshotPublished, SubscribeIssuer, SubscribeWatcher, WatchDirs,
};
use crate::metrics::Metrics;

const TARGET: &str = "clace::certstore";

/// What the store needs to know of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    pub cert_location: PathBuf,
    pub lookup_enabled: bool,
    pub rescan_interval: Duration,
    /// `certificates/<issuer>` under `storage_location` when ACME is
    /// enabled: one `<name>/<name>.crt` + `.key` per managed name.
    pub acme_dir: Option<PathBuf>,
}

/// Where a pair lives: `cert_location`, or the ACME storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Acme,
}

/// One `NAME.crt` + `NAME.key` in `cert_location`.
#[derive(Debug, Default)]
struct Slot {
    /// The last good version: what is served.
    good: Option<Arc<Pair>>,
    /// The version last examined, good or bad.
    seen: Option<Fingerprint>,
    /// Folders along the symbolic links of the two files.
    dirs: BTreeSet<PathBuf>,
}

/// Identity and change marks of the files a pair resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    crt: FileId,
    key: Option<FileId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A file changed less than this long ago may still be being written.
const YOUNG: Duration = Duration::from_millis(250);

/// Whether a file changed (content or metadata) less than [`YOUNG`] ago.
fn recent(meta: &Metadata) -> bool {
    let at = |secs: i64, nanos: i64| {
        std::time::UNIX_EPOCH
            + Duration::new(
                u64::try_from(secs).unwrap_or(0),
                u32::try_from(nanos).unwrap_or(0),
            )
    };
    let changed = at(meta.mtime(), meta.mtime_nsec()).max(at(meta.ctime(), meta.ctime_nsec()));
    // A time in the future (a skewed clock) counts as recent: the re-check
    // a moment later takes the pair without this test.
    changed.elapsed().map_or(true, |age| age < YOUNG)
}

/// Which pairs a refresh looks at.
#[derive(Debug)]
enum Scope {
    All,
    /// Pairs of `cert_location`, by stem.
    Stems(BTreeSet<String>),
    /// ACME pairs, by name.
    Acme(BTreeSet<String>),
}

pub struct CertStore {
    settings: StoreSettings,
    shared: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    slots: BTreeMap<String, Slot>,
    /// ACME certificates from the storage, by name.
    acme_slots: BTreeMap<String, Slot>,
    /// Pending TLS-ALPN-01 challenge certificates, by name.
    challenges: HashMap<String, Arc<CertifiedKey>>,
    watcher: Option<Recipient<WatchDirs>>,
    issuer: Option<Recipient<SnapshotPublished>>,
    watched: BTreeSet<PathBuf>,
    /// `default.key` without `default.crt` was reported (log it once).
    lone_default_key: bool,
    /// A pair was added, removed or re-examined since the watched folders
    /// were last computed (so a rescan of unchanged pairs skips that).
    dirs_changed: bool,
    /// During a periodic rescan: put off pairs changed in the last second.
    defer_young: bool,
    /// Pairs put off by the last periodic rescan.
    deferred: BTreeSet<String>,
    deferred_acme: BTreeSet<String>,
    /// While handling `PathsChanged`: files the watcher saw still open.
    busy: BTreeSet<PathBuf>,
    /// While handling an eager `PathsChanged`: take only pairs whole and
    /// valid now; remember and log nothing else.
    eager: bool,
    /// The watcher's `EagerCheck` recipient.
    checks: Option<Recipient<EagerCheck>>,
    /// While handling an eager `PathsChanged` with `since`: hold what is found.
    confirming: bool,
    /// While handling an eager `PathsChanged` the watcher can confirm: the
    /// pairs found whole and valid, held for its answer.
    found: Vec<Candidate>,
    /// Pairs waiting for the watcher's `EagerChecked`, by token, each with
    /// the paths of its files that the watcher was asked about.
    held: BTreeMap<u64, Vec<(Candidate, Vec<PathBuf>)>>,
    next_token: u64,
}

/// A pair read whole and valid by an eager look, not served yet.
struct Candidate {
    kind: Kind,
    stem: String,
    crt: PathBuf,
    key: PathBuf,
    fp: Fingerprint,
    /// The slot's fingerprint when it was read: served only if still so.
    prev: Option<Fingerprint>,
    pair: Pair,
}

/// Bound on the eager looks waiting for the watcher (one that restarted
/// never answers; the debounced look takes those pairs anyway).
const MAX_HELD: usize = 64;

impl CertStore {
    /// Loads every pair (creating the self-signed default if needed) and
    /// publishes the first snapshot, before any listener starts.
    pub fn load(
        settings: StoreSettings,
        shared: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> CertStore {
        let mut store = CertStore {
            settings,
            shared,
            metrics,
            health,
            slots: BTreeMap::new(),
            acme_slots: BTreeMap::new(),
            challenges: HashMap::new(),
            watcher: None,
            issuer: None,
            watched: BTreeSet::new(),
            lone_default_key: false,
            dirs_changed: true,
            defer_young: false,
            deferred: BTreeSet::new(),
            deferred_acme: BTreeSet::new(),
            busy: BTreeSet::new(),
            eager: false,
            checks: None,
            confirming: false,
            found: Vec::new(),
            held: BTreeMap::new(),
            next_token: 0,
        };
        store.ensure_default();
        store.refresh(Scope::All);
        store.check_expired_self_signed();
        store
    }

    /// The snapshot as published now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.load_full()
    }

    /// Creates the self-signed default when neither `default.crt` nor
    /// `default.key` exists. One file without the other is a pair on its
    /// way (or half deleted): it is never overwritten, and until it is whole
    /// there is no default to serve, which the log says once.
    fn ensure_default(&mut self) {
        let dir = &self.settings.cert_location;
        let crt = dir.join("default.crt");
        let key = dir.join("default.key");
        // `symlink_metadata`: a dangling link is still the operator's file.
        let crt_there = std::fs::symlink_metadata(&crt).is_ok();
        let key_there = std::fs::symlink_metadata(&key).is_ok();
        match (crt_there, key_there) {
            (false, false) => {
                self.lone_default_key = false;
                if let Err(e) = selfsigned::generate(dir, false) {
                    log::error!(target: TARGET, "cannot create the self-signed default in {}: {e}", dir.display());
                }
            }
            (false, true) if !self.lone_default_key => {
                self.lone_default_key = true;
                log::warn!(
                    target: TARGET,
                    "{} exists without {}: no default certificate until the pair is whole",
                    key.display(),
                    crt.display()
                );
            }
            _ => {}
        }
    }

    /// An expired clace self-signed default is replaced.
    fn check_expired_self_signed(&mut self) {
        let now = crate::certs::now();
        let expired = self
            .slots
            .get(DEFAULT_STEM)
            .and_then(|s| s.good.as_ref())
            .is_some_and(|p| selfsigned::is_expired_self_signed(p, now));
        if expired {
            log::warn!(target: TARGET, "the self-signed default certificate has expired; making a new one");
            let dir = self.settings.cert_location.clone();
            match selfsigned::generate(&dir, true) {
                Ok(()) => self.refresh(Scope::Stems(BTreeSet::from([DEFAULT_STEM.to_string()]))),
                Err(e) => {
                    log::error!(target: TARGET, "cannot replace the self-signed default in {}: {e}", dir.display())
                }
            }
        }
    }

    /// Re-checks the pairs in scope; publishes a new snapshot if any changed.
    fn refresh(&mut self, scope: Scope) {
        let (stems, names) = match scope {
            Scope::All => {
                let mut stems = self.list_stems();
                // Pairs that disappeared from the folder are checked too.
                stems.extend(self.slots.keys().cloned());
                let mut names = self.list_acme_names();
                names.extend(self.acme_slots.keys().cloned());
                (stems, names)
            }
            Scope::Stems(s) => (s, BTreeSet::new()),
            Scope::Acme(n) => (BTreeSet::new(), n),
        };
        let mut changed = false;
        for stem in &stems {
            changed |= self.check_pair(Kind::File, stem);
        }
        for name in &names {
            changed |= self.check_pair(Kind::Acme, name);
        }
        if !self.slots.contains_key(DEFAULT_STEM) && !self.eager {
            self.ensure_default();
            changed |= self.check_pair(Kind::File, DEFAULT_STEM);
        }
        if changed {
            self.publish();
        }
        self.update_watch();
    }

    /// The `NAME` of every `NAME.crt` directly in the folder (links count,
    /// names starting with `.` do not). A name that is not UTF-8 cannot be
    /// a DNS name and is left to `clace certs` to report.
    fn list_stems(&self) -> BTreeSet<String> {
        let dir = &self.settings.cert_location;
        pair_files(dir)
            .into_iter()
            .filter(|(stem, crt, _)| *crt == dir.join(format!("{stem}.crt")))
            .map(|(stem, _, _)| stem)
            .collect()
    }

    /// The `NAME` of every `NAME/NAME.crt` in the ACME folder (certmagic's
    /// layout); none when ACME is disabled.
    fn list_acme_names(&self) -> BTreeSet<String> {
        let Some(dir) = &self.settings.acme_dir else {
            return BTreeSet::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return BTreeSet::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .filter(|name| dir.join(name).join(format!("{name}.crt")).exists())
            .collect()
    }

    /// The certificate and key paths of a pair.
    fn pair_paths(&self, kind: Kind, stem: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = match kind {
            Kind::File => self.settings.cert_location.clone(),
            Kind::Acme => self.settings.acme_dir.as_ref()?.join(stem),
        };
        Some((
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        ))
    }

    /// Whether `crt` is a link whose target is missing (certbot re-points
    /// its links with unlink + symlink): the pair is incomplete, the last
    /// good version keeps serving, and the folders on the way to the target
    /// are watched for its arrival.
    fn dangling(&mut self, kind: Kind, stem: &str, crt: &Path, key: &Path) -> bool {
        if std::fs::symlink_metadata(crt).is_err() {
            return false;
        }
        let slots = match kind {
            Kind::File => &mut self.slots,
            Kind::Acme => &mut self.acme_slots,
        };
        let slot = slots.entry(stem.to_string()).or_default();
        slot.seen = None;
        slot.dirs = link_dirs(crt);
        slot.dirs.extend(link_dirs(key));
        self.dirs_changed = true;
        true
    }

    /// An ACME `NAME.crt` cannot be read: a link whose target is missing
    /// keeps the last good version, anything else stops being served.
    fn acme_missing(&mut self, name: &str, crt: &Path, key: &Path) -> bool {
        if self.dangling(Kind::Acme, name, crt, key) {
            return false;
        }
        self.dirs_changed |= self.acme_slots.contains_key(name);
        match self.acme_slots.remove(name) {
            Some(slot) if slot.good.is_some() => {
                log::info!(target: TARGET, "{} was removed; no longer served", crt.display());
                true
            }
            _ => false,
        }
    }

    /// `NAME.crt` cannot be read as a file: a dangling link, a half-deleted
    /// default, or a pair deleted. True if what is served changed.
    fn crt_missing(&mut self, stem: &str, crt: &Path, key: &Path) -> bool {
        let dir = self.settings.cert_location.clone();
        if self.dangling(Kind::File, stem, crt, key) {
            return false;
        }
        if stem == DEFAULT_STEM && std::fs::symlink_metadata(key).is_ok() {
            let good = self.slots.get(stem).and_then(|s| s.good.clone());
            match good {
                // clace's own pair, half deleted: make a whole new one.
                Some(pair) if pair.source == Source::SelfSigned => {
                    log::info!(target: TARGET, "{} was removed; making a new self-signed default", crt.display());
                    if let Err(e) = selfsigned::generate(&dir, true) {
                        log::error!(target: TARGET, "cannot replace the self-signed default in {}: {e}", dir.display());
                        return false;
                    }
                    return self.check_pair(Kind::File, stem);
                }
                // The operator's default, half deleted (or half
                // replaced): the last good one keeps serving, rather
                // than no default at all.
                Some(_) => {
                    if !self.lone_default_key {
                        self.lone_default_key = true;
                        log::warn!(target: TARGET, "{} was removed but {} is still there; the previous default keeps serving until the pair is whole", crt.display(), key.display());
                    }
                    return false;
                }
                None => {}
            }
        }
        // The certificate is gone: the pair stops being served.
        self.dirs_changed |= self.slots.contains_key(stem);
        match self.slots.remove(stem) {
            Some(slot) if slot.good.is_some() => {
                log::info!(target: TARGET, "{} was removed; no longer served", crt.display());
                true
            }
            _ => false,
        }
    }

    /// Checks one pair; true if what is served for it changed.
    fn check_pair(&mut self, kind: Kind, stem: &str) -> bool {
        let Some((crt, key)) = self.pair_paths(kind, stem) else {
            return false;
        };
        let Ok(crt_meta) = std::fs::metadata(&crt) else {
            if self.eager {
                // A deletion (or a link on its way) waits for the burst.
                return false;
            }
            return match kind {
                Kind::File => self.crt_missing(stem, &crt, &key),
                Kind::Acme => self.acme_missing(stem, &crt, &key),
            };
        };
        let key_meta = std::fs::metadata(&key).ok();
        let fp = Fingerprint {
            crt: FileId::of(&crt_meta),
            key: key_meta.as_ref().map(FileId::of),
        };
        if self.is_busy(&crt) || self.is_busy(&key) {
            // Still being written: its close event brings it back.
            return false;
        }
        if self.defer_young && (recent(&crt_meta) || key_meta.as_ref().is_some_and(recent)) {
            // Found by a periodic rescan, not by an event: the file may be
            // in the middle of a write that no close event will announce
            // (no watcher, a network filesystem). Look again in a moment.
            match kind {
                Kind::File => self.deferred.insert(stem.to_string()),
                Kind::Acme => self.deferred_acme.insert(stem.to_string()),
            };
            return false;
        }
        let source = match kind {
            Kind::File => Source::File,
            Kind::Acme => Source::Acme,
        };
        if self.eager {
            let prev = match kind {
                Kind::File => &self.slots,
                Kind::Acme => &self.acme_slots,
            }
            .get(stem)
            .and_then(|slot| slot.seen.clone());
            let held = self
                .held
                .values()
                .flatten()
                .map(|(c, _)| c)
                .chain(&self.found)
                .any(|c| c.kind == kind && c.stem == stem && c.fp == fp);
            if prev.as_ref() == Some(&fp) || held || key_meta.is_none() {
                return false;
            }
            let Ok(pair) = read_pair(stem, &crt, &key, source) else {
                return false;
            };
            let candidate = Candidate {
                kind,
                stem: stem.to_string(),
                crt,
                key,
                fp,
                prev,
                pair,
            };
            if self.checks.is_some() && self.confirming {
                self.found.push(candidate);
                return false;
            }
            return self.take(candidate);
        }
        let slots = match kind {
            Kind::File => &mut self.slots,
            Kind::Acme => &mut self.acme_slots,
        };
        let slot = slots.entry(stem.to_string()).or_default();
        if slot.seen.as_ref() == Some(&fp) {
            return false;
        }
        slot.seen = Some(fp);
        slot.dirs = link_dirs(&crt);
        slot.dirs.extend(link_dirs(&key));
        self.dirs_changed = true;
        if key_meta.is_none() {
            self.metrics.reload_rejected();
            let keeping = if slot.good.is_some() {
                "; the previous version keeps serving"
            } else {
                ""
            };
            log::warn!(target: TARGET, "{} has no {}{keeping}", crt.display(), key.display());
            return false;
        }
        match read_pair(stem, &crt, &key, source) {
            Ok(pair) => self.serve(kind, stem, &crt, &key, pair),
            Err(e) => {
                self.metrics.reload_rejected();
                let keeping = if slot.good.is_some() {
                    "the previous version keeps serving"
                } else {
                    "the pair is not served"
                };
                log::warn!(target: TARGET, "rejected {} + {}: {e}; {keeping}", crt.display(), key.display());
                false
            }
        }
    }

    /// Serves a pair read whole and valid by an eager look: remembered as
    /// the pair's version, then served.
    fn take(&mut self, c: Candidate) -> bool {
        let slots = match c.kind {
            Kind::File => &mut self.slots,
            Kind::Acme => &mut self.acme_slots,
        };
        let slot = slots.entry(c.stem.clone()).or_default();
        if slot.seen != c.prev {
            // Another look took a version since: never go back to this one.
            return false;
        }
        slot.seen = Some(c.fp);
        slot.dirs = link_dirs(&c.crt);
        slot.dirs.extend(link_dirs(&c.key));
        self.dirs_changed = true;
        self.serve(c.kind, &c.stem, &c.crt, &c.key, c.pair)
    }

    /// Puts a pair read whole and valid into its slot (logged); true: what
    /// is served changed.
    fn serve(&mut self, kind: Kind, stem: &str, crt: &Path, key: &Path, pair: Pair) -> bool {
        let slots = match kind {
            Kind::File => &mut self.slots,
            Kind::Acme => &mut self.acme_slots,
        };
        let slot = slots.entry(stem.to_string()).or_default();
        if kind == Kind::File && pair.stem_not_in_names() {
            log::warn!(target: TARGET, "{} is named for {stem} but its names are [{}]; it is served for {stem} anyway", crt.display(), pair.names.join(", "));
        }
        selfsigned::warn_if_key_readable(key);
        let now = crate::certs::now();
        if pair.not_after < now {
            log::warn!(target: TARGET, "{} has expired", crt.display());
        } else if pair.not_before > now {
            log::warn!(target: TARGET, "{} is not valid yet", crt.display());
        }
        let verb = if slot.good.is_some() {
            "reloaded"
        } else {
            "loaded"
        };
        log::info!(
            target: TARGET,
            "{verb} {} (names [{}], serial {}, not after {})",
            crt.display(),
            pair.names.join(", "),
            pair.serial,
            pair.not_after
        );
        slot.good = Some(Arc::new(pair));
        self.metrics.reload_ok();
        if kind == Kind::File && stem == DEFAULT_STEM {
            // Whole again: a later half-deletion is reported anew.
            self.lone_default_key = false;
        }
        true
    }

    /// Whether `path` (as named in the folder, or where its links lead) is a
    /// file the watcher saw still open for writing.
    fn is_busy(&self, path: &Path) -> bool {
        !self.busy.is_empty()
            && (self.busy.contains(path)
                || std::fs::canonicalize(path).is_ok_and(|real| self.busy.contains(&real)))
    }

    fn publish(&mut self) {
        let files: Vec<Arc<Pair>> = self.slots.values().filter_map(|s| s.good.clone()).collect();
        let acme: Vec<Arc<Pair>> = self
            .acme_slots
            .values()
            .filter_map(|s| s.good.clone())
            .collect();
        let count = files.len() + acme.len();
        let snapshot = Snapshot::build(
            files,
            acme,
            self.challenges.clone(),
            self.settings.lookup_enabled,
        );
        self.shared.store(Arc::new(snapshot));
        log::debug!(target: TARGET, "published a snapshot of {count} pairs");
        if let Some(issuer) = &self.issuer {
            issuer.do_send(SnapshotPublished);
        }
    }

    /// Tells the watcher the folders to watch, when they changed.
    fn update_watch(&mut self) {
        if !self.dirs_changed {
            return;
        }
        self.dirs_changed = false;
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        dirs.insert(canonical_or(&self.settings.cert_location));
        if let Some(acme) = &self.settings.acme_dir {
            // The folder of new names (or, until it exists, the nearest
            // folder on the way to it).
            dirs.extend(link_dirs(&acme.join(".clace-watch")));
        }
        for slot in self.slots.values().chain(self.acme_slots.values()) {
            dirs.extend(slot.dirs.iter().cloned());
        }
        if dirs != self.watched {
            self.watched = dirs;
            self.send_watch();
        }
    }

    fn send_watch(&self) {
        if let Some(w) = &self.watcher {
            w.do_send(WatchDirs {
                dirs: self.watched.clone(),
            });
        }
    }

    /// Maps changed paths to the pairs to re-check: a `NAME.crt`/`NAME.key`
    /// directly in the folder is that pair; anything else (a link target
    /// folder, Kubernetes' `..data`) may concern any pair: check them all.
    fn scope_of(&self, paths: &BTreeSet<PathBuf>) -> Scope {
        let dir = canonical_or(&self.settings.cert_location);
        let acme = self
            .settings
            .acme_dir
            .as_ref()
            .map(|a| (a.clone(), canonical_or(a)));
        let mut stems = BTreeSet::new();
        let mut names = BTreeSet::new();
        for p in paths {
            if let Some(name) = acme.as_ref().and_then(|(a, real)| acme_name_of(p, a, real)) {
                names.insert(name);
                continue;
            }
            let in_dir = p
                .parent()
                .is_some_and(|parent| parent == self.settings.cert_location || parent == dir);
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let stem = name
                .strip_suffix(".crt")
                .or_else(|| name.strip_suffix(".key"));
            match stem {
                Some(s) if in_dir && !s.is_empty() && !name.starts_with('.') => {
                    stems.insert(s.to_string());
                }
                // Temporary files of an editor or deploy tool: the rename
                // that follows names the real file.
                _ if in_dir && name.starts_with('.') && !name.starts_with("..") => {}
                _ => return Scope::All,
            }
        }
        match (stems.is_empty(), names.is_empty()) {
            (_, true) => Scope::Stems(stems),
            (true, false) => Scope::Acme(names),
            (false, false) => Scope::All,
        }
    }
}

/// The name whose ACME pair `path` belongs to: `<acme>/<name>` itself (a
/// folder made or renamed) or a file in it.
fn acme_name_of(path: &Path, acme: &Path, real: &Path) -> Option<String> {
    let rel = path
        .strip_prefix(acme)
        .or_else(|_| path.strip_prefix(real))
        .ok()?;
    let name = rel.components().next()?.as_os_str().to_str()?;
    if name.starts_with('.') || name.is_empty() {
        return None;
    }
    Some(name.to_string())
}

fn canonical_or(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The folders to watch for one file: the folder holding every symbolic
/// link met while resolving its path, one component at a time (a link to a
/// file like certbot's `live/NAME/fullchain.pem`, or a link to a folder like
/// Kubernetes' `..data` or a `current -> releases/v2` switch), and the folder
/// of the final file. All are real paths, free of links, so a watch is on
/// the folder where a swap really happens. A link whose target does not exist
/// (yet) gets the nearest existing folder on the way to it.
pub fn link_dirs(path: &Path) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    let mut pending = segments(path);
    let mut current = PathBuf::new();
    let mut hops = 0;
    while let Some(segment) = pending.pop_front() {
        let name = match segment {
            Segment::Root => {
                current = PathBuf::from("/");
                continue;
            }
            Segment::Parent => {
                current.pop();
                continue;
            }
            Segment::Name(name) => name,
        };
        let next = current.join(&name);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                let Ok(target) = std::fs::read_link(&next) else {
                    break;
                };
                if hops > 40 {
                    // A loop: the kernel gives up at 40 too.
                    break;
                }
                dirs.insert(current.clone());
                // The link's target takes its place in what is left to walk.
                for s in segments(&target).into_iter().rev() {
                    pending.push_front(s);
                }
            }
            Ok(_) => current = next,
            Err(_) => {
                // Missing: watch the folder where it will appear.
                dirs.insert(current);
                return dirs;
            }
        }
    }
    if let Some(parent) = current.parent() {
        dirs.insert(parent.to_path_buf());
    }
    dirs
}

/// One step of a path walk.
enum Segment {
    Root,
    Parent,
    Name(std::ffi::OsString),
}

fn segments(path: &Path) -> std::collections::VecDeque<Segment> {
    use std::path::Component;
    path.components()
        .filter_map(|c| match c {
            Component::RootDir => Some(Segment::Root),
            Component::ParentDir => Some(Segment::Parent),
            Component::Normal(n) => Some(Segment::Name(n.to_os_string())),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

impl Actor for CertStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::fault_point(ActorName::CertStore);
        self.health.set(ActorName::CertStore, ActorState::Running);
        let every = self.settings.rescan_interval;
        ctx.run_interval(every, |act, ctx| {
            act.defer_young = true;
            act.refresh(Scope::All);
            act.defer_young = false;
            if !act.deferred.is_empty() || !act.deferred_acme.is_empty() {
                ctx.run_later(YOUNG, |act, _| {
                    let stems = std::mem::take(&mut act.deferred);
                    act.refresh(Scope::Stems(stems));
                    let names = std::mem::take(&mut act.deferred_acme);
                    act.refresh(Scope::Acme(names));
                });
            }
            // A watched folder deleted and made again needs a new watch.
            act.send_watch();
            // A daemon that runs for more than a year replaces its expired
            // self-signed default here.
            act.check_expired_self_signed();
        });
        log::info!(target: TARGET, "cert store running on {} ({} pairs), rescanning every {every:?}", self.settings.cert_location.display(), self.slots.len());
    }
}

impl Supervised for CertStore {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.health
            .set(ActorName::CertStore, ActorState::Restarting);
        log::info!(target: TARGET, "restarting the cert store: full rescan");
        // A restart forgets what was examined, so every pair is read again;
        // the last good versions keep serving until then.
        for slot in self.slots.values_mut() {
            slot.seen = None;
        }
        self.ensure_default();
        self.refresh(Scope::All);
        self.check_expired_self_signed();
    }
}

impl Handler<PathsChanged> for CertStore {
    type Result = ();

    fn handle(&mut self, msg: PathsChanged, _ctx: &mut Context<Self>) {
        let scope = self.scope_of(&msg.paths);
        log::debug!(target: TARGET, "{} paths changed: {scope:?}", msg.paths.len());
        self.busy = msg.busy;
        self.eager = msg.eager;
        self.confirming = msg.eager && msg.since.is_some();
        self.refresh(scope);
        self.eager = false;
        self.confirming = false;
        self.busy.clear();
        if let (Some(since), false) = (msg.since, self.found.is_empty()) {
            self.hold_for_check(since);
        }
        // A folder may have been replaced under the same path (a renamed
        // `live/`): the watcher re-checks what its watches are on.
        self.send_watch();
    }
}

impl CertStore {
    /// Asks the watcher to confirm the pairs just found (see
    /// [`crate::watch_barrier`]); they are served on its answer.
    fn hold_for_check(&mut self, since: u64) {
        let found = std::mem::take(&mut self.found);
        let Some(checks) = &self.checks else {
            return;
        };
        // Each file as named and where its links lead now: the answer is
        // read against these same paths.
        let found: Vec<(Candidate, Vec<PathBuf>)> = found
            .into_iter()
            .map(|c| {
                let mut paths = Vec::new();
                for f in [&c.crt, &c.key] {
                    paths.push(f.clone());
                    if let Ok(real) = std::fs::canonicalize(f) {
                        paths.push(real);
                    }
                }
                (c, paths)
            })
            .collect();
        let files: BTreeSet<PathBuf> = found
            .iter()
            .flat_map(|(_, paths)| paths.iter().cloned())
            .collect();
        self.next_token += 1;
        let token = self.next_token;
        while self.held.len() >= MAX_HELD {
            self.held.pop_first();
        }
        self.held.insert(token, found);
        checks.do_send(EagerCheck {
            token,
            since,
            files,
        });
    }
}

impl Handler<EagerChecked> for CertStore {
    type Result = ();

    fn handle(&mut self, msg: EagerChecked, _ctx: &mut Context<Self>) {
        let Some(found) = self.held.remove(&msg.token) else {
            return;
        };
        let mut changed = false;
        for (c, paths) in found {
            if paths.iter().any(|p| msg.written.contains(p)) {
                // Written around the read: the debounced look decides.
                continue;
            }
            changed |= self.take(c);
        }
        if changed {
            self.publish();
        }
        self.update_watch();
    }
}

impl Handler<Rescan> for CertStore {
    type Result = ();

    fn handle(&mut self, _: Rescan, _ctx: &mut Context<Self>) {
        self.refresh(Scope::All);
    }
}

impl Handler<Restart> for CertStore {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Context<Self>) {
        crate::fault_point(ActorName::CertStore);
        ctx.stop();
    }
}

impl Handler<ReconfigureStore> for CertStore {
    type Result = ();

    fn handle(&mut self, msg: ReconfigureStore, ctx: &mut Context<Self>) {
        if msg.settings.cert_location != self.settings.cert_location {
            // Another folder: nothing of the old one is served any more.
            self.slots.clear();
            self.dirs_changed = true;
        }
        if msg.settings.acme_dir != self.settings.acme_dir {
            self.acme_slots.clear();
            self.challenges.clear();
            self.dirs_changed = true;
        }
        self.settings = msg.settings;
        ctx.stop();
    }
}

impl Handler<SetChallenge> for CertStore {
    type Result = ();

    fn handle(&mut self, msg: SetChallenge, _ctx: &mut Context<Self>) {
        let changed = match msg.cert {
            Some(cert) => {
                self.challenges.insert(msg.name, cert);
                true
            }
            None => self.challenges.remove(&msg.name).is_some(),
        };
        if changed {
            self.publish();
        }
    }
}

impl Handler<AcmeStored> for CertStore {
    type Result = ();

    fn handle(&mut self, msg: AcmeStored, _ctx: &mut Context<Self>) {
        // Written a moment ago by the issuer, whole (renamed into place).
        self.refresh(Scope::Acme(msg.names.into_iter().collect()));
    }
}

impl Handler<SubscribeIssuer> for CertStore {
    type Result = ();

    fn handle(&mut self, msg: SubscribeIssuer, _ctx: &mut Context<Self>) {
        self.issuer = Some(msg.issuer);
    }
}

impl Handler<SubscribeWatcher> for CertStore {
    type Result = ();

    fn handle(&mut self, msg: SubscribeWatcher, _ctx: &mut Context<Self>) {
        self.watcher = Some(msg.watcher);
        self.checks = Some(msg.checks);
        self.held.clear();
        self.send_watch();
        // Whatever changed while the watcher was (re)starting had no event.
        self.refresh(Scope::All);
    }
}
