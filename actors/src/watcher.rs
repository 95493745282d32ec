//! The filesystem watcher actor.
//!
//! It turns raw notify events into debounced "these paths may have changed"
//! messages for the cert store, and watches the folders the store asks for.
//! It knows nothing about certificates. notify's thread only forwards
//! events to the actor's mailbox; debouncing and decisions happen here.
//!
//! When inotify cannot be used (no instance or watch left, a filesystem
//! without events) it says so and the store's periodic rescan, every
//! `cert_rescan_interval`, is the polling that remains.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::certstore::CertStore;
use crate::health::{ActorName, ActorState, Health};
use crate::messages::{
    EagerCheck, EagerChecked, PathsChanged, RawEvents, RawKind, ReconfigureWatcher, Restart,
    SubscribeWatcher, WatchDirs,
};
use crate::settings::CertWatch;
use crate::watch_barrier::Barrier;

const TARGET: &str = "clace::watcher";
/// A burst of events ends after this much quiet...
const QUIET: Duration = Duration::from_millis(20);
/// ...or this long after its first event, whichever comes first...
const MAX_DELAY: Duration = Duration::from_millis(150);
/// ...except that a file written in place is waited for until it is closed
/// (a chain written certificate by certificate is not taken half-way), for
/// at most this long after its first write.
const MAX_OPEN_WRITE: Duration = Duration::from_secs(1);
/// Without a barrier (see [`crate::watch_barrier`]), a close or a rename
/// is looked at this soon, before the burst is over: long enough for the
/// events of a write that follows at once (a key renamed into place, then
/// its certificate written in place) to arrive and mark that file busy, so
/// only a pair whole now is taken early. With a barrier it is looked at at
/// once, and what it finds is confirmed by the barrier instead.
const EAGER_DELAY: Duration = Duration::from_millis(2);
/// A barrier whose event has not come back by then (a lost event, an
/// overflowed queue) answers its checks with "written": the debounced look
/// takes those pairs instead.
const BARRIER_TIMEOUT: Duration = Duration::from_millis(100);
/// Bound on the remembered writes (a folder written to without pause).
const MAX_WRITTEN: usize = 4096;

pub struct Watcher {
    store: Addr<CertStore>,
    mode: CertWatch,
    rescan_interval: Duration,
    health: Arc<Health>,
    notify: Option<RecommendedWatcher>,
    /// Each watched folder, with the (device, inode) the watch is on: a
    /// folder replaced by a rename keeps its path but needs a new watch.
    watched: BTreeMap<PathBuf, (u64, u64)>,
    pending: BTreeSet<PathBuf>,
    /// Paths of completed writes waiting for their eager look.
    eager: BTreeSet<PathBuf>,
    eager_scheduled: bool,
    /// Files written but not closed yet, with the time of their first write.
    open_writes: HashMap<PathBuf, Instant>,
    flush_scheduled: bool,
    burst_start: Option<Instant>,
    last_event: Option<Instant>,
    /// The eager path's proof (None: no watcher, or the barrier could not
    /// be made or watched; then the eager look waits [`EAGER_DELAY`]).
    barrier: Option<Barrier>,
    /// Number of the last event received.
    seq: u64,
    /// Each file written, with the number of its last write event.
    written: HashMap<PathBuf, u64>,
    /// Writes numbered at or below this were forgotten ([`MAX_WRITTEN`]).
    forgotten: u64,
    /// Checks waiting for the next barrier, and those of the barrier out now.
    checks_waiting: Vec<EagerCheck>,
    checks_out: Vec<EagerCheck>,
    /// Counts barriers sent, so a timeout knows whether its own is still out.
    barrier_gen: u64,
}

impl Watcher {
    pub fn new(
        store: Addr<CertStore>,
        mode: CertWatch,
        rescan_interval: Duration,
        health: Arc<Health>,
    ) -> Watcher {
        Watcher {
            store,
            mode,
            rescan_interval,
            health,
            notify: None,
            watched: BTreeMap::new(),
            pending: BTreeSet::new(),
            eager: BTreeSet::new(),
            eager_scheduled: false,
            open_writes: HashMap::new(),
            flush_scheduled: false,
            burst_start: None,
            last_event: None,
            barrier: None,
            seq: 0,
            written: HashMap::new(),
            forgotten: 0,
            checks_waiting: Vec::new(),
            checks_out: Vec::new(),
            barrier_gen: 0,
        }
    }

    /// Makes and watches the barrier; without one the eager look falls
    /// back to [`EAGER_DELAY`].
    fn start_barrier(&mut self) {
        let Some(notify) = self.notify.as_mut() else {
            return;
        };
        match Barrier::create() {
            Ok(b) => match notify.watch(b.dir(), RecursiveMode::NonRecursive) {
                Ok(()) => self.barrier = Some(b),
                Err(e) => {
                    log::debug!(target: TARGET, "cannot watch {} ({e}); eager looks wait {EAGER_DELAY:?}", b.dir().display())
                }
            },
            Err(e) => {
                log::debug!(target: TARGET, "cannot make the watcher's barrier file ({e}); eager looks wait {EAGER_DELAY:?}")
            }
        }
    }

    /// Sends out a barrier for the waiting checks, unless one is out.
    fn send_barrier(&mut self, ctx: &mut Context<Self>) {
        if !self.checks_out.is_empty() || self.checks_waiting.is_empty() {
            return;
        }
        self.checks_out = std::mem::take(&mut self.checks_waiting);
        // A new generation for each barrier: a late event of an earlier one
        // (timed out) must never confirm these checks.
        self.barrier_gen += 1;
        let gen = self.barrier_gen;
        let touched = self.barrier.as_mut().map(|b| b.touch(gen));
        match touched {
            Some(Ok(())) => {
                ctx.run_later(BARRIER_TIMEOUT, move |act, ctx| {
                    if act.barrier_gen == gen && !act.checks_out.is_empty() {
                        log::debug!(target: TARGET, "the barrier's event did not come back; eager pairs left to the debounced look");
                        act.answer_checks(ctx, true);
                    }
                });
            }
            Some(Err(e)) => {
                log::debug!(target: TARGET, "cannot write the barrier ({e}); eager looks wait {EAGER_DELAY:?}");
                self.barrier = None;
                self.answer_checks(ctx, true);
            }
            None => self.answer_checks(ctx, true),
        }
    }

    /// Answers the checks of the barrier out: each file written after the
    /// check's `since` (all of them if `refuse`), then sends the next barrier.
    fn answer_checks(&mut self, ctx: &mut Context<Self>, refuse: bool) {
        for check in std::mem::take(&mut self.checks_out) {
            let written = check
                .files
                .into_iter()
                .filter(|f| {
                    refuse
                        || check.since < self.forgotten
                        || self.written.get(f).is_some_and(|&n| n > check.since)
                })
                .collect();
            self.store.do_send(EagerChecked {
                token: check.token,
                written,
            });
        }
        self.send_barrier(ctx);
    }

    fn start_notify(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                if is_noise(&event.kind) {
                    return;
                }
                addr.do_send(RawEvents {
                    overflow: event.need_rescan(),
                    kind: raw_kind(&event.kind),
                    paths: event.paths,
                });
            }
            Err(e) => {
                log::warn!(target: TARGET, "file watcher error: {e}; rescanning");
                addr.do_send(RawEvents {
                    paths: e.paths,
                    overflow: true,
                    kind: RawKind::Other,
                });
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(w) => self.notify = Some(w),
            Err(e) => log::warn!(
                target: TARGET,
                "cannot start the file watcher ({e}); polling the certificate folders every {}s instead",
                self.rescan_interval.as_secs()
            ),
        }
    }

    /// Sends the paths whose burst is over. A path written in place and
    /// not closed yet is held back (at most [`MAX_OPEN_WRITE`] from its
    /// first write); the others go now, so one file written for a long
    /// time never delays the rest.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        let (Some(first), Some(last)) = (self.burst_start, self.last_event) else {
            return;
        };
        let now = Instant::now();
        let wait = QUIET
            .saturating_sub(now - last)
            .min(MAX_DELAY.saturating_sub(now - first));
        if !wait.is_zero() {
            self.schedule_flush(ctx, wait);
            return;
        }
        self.open_writes
            .retain(|_, since| now - *since < MAX_OPEN_WRITE);
        let (held, ready): (BTreeSet<PathBuf>, BTreeSet<PathBuf>) =
            std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|p| self.open_writes.contains_key(p));
        if !ready.is_empty() {
            self.store.do_send(PathsChanged {
                paths: ready,
                busy: held.clone(),
                eager: false,
                since: None,
            });
        }
        if held.is_empty() {
            self.burst_start = None;
            self.last_event = None;
            return;
        }
        // The close event flushes them sooner; this bounds the wait.
        let left = held
            .iter()
            .filter_map(|p| self.open_writes.get(p))
            .map(|since| MAX_OPEN_WRITE.saturating_sub(now - *since))
            .min()
            .unwrap_or(Duration::ZERO);
        self.pending = held;
        self.burst_start = Some(now);
        self.schedule_flush(
            ctx,
            left.clamp(Duration::from_millis(1), Duration::from_millis(50)),
        );
    }

    /// Sends the paths of completed writes for an eager look (see
    /// [`EAGER_DELAY`]), with the files still open at this moment.
    fn flush_eager(&mut self) {
        self.eager_scheduled = false;
        let paths = std::mem::take(&mut self.eager);
        if paths.is_empty() {
            return;
        }
        self.store.do_send(PathsChanged {
            paths,
            busy: self.open_writes.keys().cloned().collect(),
            eager: true,
            since: self.barrier.as_ref().map(|_| self.seq),
        });
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>, after: Duration) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(after, |act, ctx| act.flush(ctx));
        }
    }
}

/// What an event means for debouncing.
fn raw_kind(kind: &EventKind) -> RawKind {
    match kind {
        EventKind::Modify(ModifyKind::Data(_)) => RawKind::Written,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => RawKind::Closed,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => RawKind::MovedOrRemoved,
        _ => RawKind::Other,
    }
}

/// Opening or reading a file changes nothing (and the store's own reads
/// would otherwise echo back as events); closing a file written is kept.
fn is_noise(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Open(_))
            | EventKind::Access(AccessKind::Read)
            | EventKind::Access(AccessKind::Close(AccessMode::Read))
            | EventKind::Access(AccessKind::Close(AccessMode::Execute))
    )
}

impl Actor for Watcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::fault_point(ActorName::Watcher);
        match self.mode {
            CertWatch::Poll => log::info!(
                target: TARGET,
                "cert_watch = \"poll\": certificate folders are rescanned every {}s, no file events",
                self.rescan_interval.as_secs()
            ),
            CertWatch::Auto => {
                self.start_notify(ctx);
                self.start_barrier();
            }
        }
        self.health.set(ActorName::Watcher, ActorState::Running);
        self.store.do_send(SubscribeWatcher {
            watcher: ctx.address().recipient(),
            checks: ctx.address().recipient(),
        });
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.notify = None;
        self.barrier = None;
        self.watched.clear();
        Running::Stop
    }
}

impl Supervised for Watcher {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.health.set(ActorName::Watcher, ActorState::Restarting);
        log::info!(target: TARGET, "restarting the file watcher");
        self.notify = None;
        self.watched.clear();
        self.pending.clear();
        self.eager.clear();
        self.eager_scheduled = false;
        self.open_writes.clear();
        self.flush_scheduled = false;
        self.burst_start = None;
        self.last_event = None;
        self.barrier = None;
        self.written.clear();
        self.forgotten = self.seq;
        // Checks in flight are not answered: the store drops what it held
        // when the debounced look (or the rescan on resubscribing) comes.
        self.checks_waiting.clear();
        self.checks_out.clear();
    }
}

impl Handler<WatchDirs> for Watcher {
    type Result = ();

    fn handle(&mut self, msg: WatchDirs, _ctx: &mut Context<Self>) {
        let Some(notify) = self.notify.as_mut() else {
            return;
        };
        let mut now_watched = BTreeMap::new();
        for dir in &msg.dirs {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            match self.watched.remove(dir) {
                Some(old) if old == id => {
                    now_watched.insert(dir.clone(), id);
                    continue;
                }
                // Same path, another folder (renamed into place): the old
                // watch follows the old folder; move it.
                Some(_) => {
                    let _ = notify.unwatch(dir);
                }
                None => {}
            }
            match notify.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    log::debug!(target: TARGET, "watching {}", dir.display());
                    now_watched.insert(dir.clone(), id);
                }
                Err(e) => log::warn!(
                    target: TARGET,
                    "cannot watch {} ({e}); it is polled every {}s instead",
                    dir.display(),
                    self.rescan_interval.as_secs()
                ),
            }
        }
        for gone in self.watched.keys() {
            // The folder may be gone already; nothing to undo then.
            let _ = notify.unwatch(gone);
            log::debug!(target: TARGET, "no longer watching {}", gone.display());
        }
        self.watched = now_watched;
    }
}

impl Handler<RawEvents> for Watcher {
    type Result = ();

    fn handle(&mut self, msg: RawEvents, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if let Some(b) = &self.barrier {
            if msg.paths.iter().any(|p| b.owns(p)) {
                // The watcher's own file: never the store's business.
                // Only the event of the barrier out now confirms its checks.
                let back = msg.kind == RawKind::Closed
                    && msg
                        .paths
                        .iter()
                        .any(|p| b.generation(p) == Some(self.barrier_gen));
                if back && !self.checks_out.is_empty() {
                    self.answer_checks(ctx, false);
                }
                return;
            }
        }
        self.seq += 1;
        if msg.overflow {
            // Lost events: a write may be among them.
            self.written.clear();
            self.forgotten = self.seq;
        }
        if msg.kind == RawKind::Written {
            if self.written.len() >= MAX_WRITTEN {
                self.written.clear();
                self.forgotten = self.seq;
            }
            for path in &msg.paths {
                self.written.insert(path.clone(), self.seq);
            }
        }
        if msg.overflow || msg.paths.is_empty() {
            // An empty path list stands for "something changed, somewhere".
            self.pending.insert(PathBuf::from("/"));
        }
        for path in &msg.paths {
            match msg.kind {
                RawKind::Written => {
                    self.open_writes.entry(path.clone()).or_insert(now);
                }
                RawKind::Closed => {
                    self.open_writes.remove(path);
                }
                RawKind::MovedOrRemoved => {
                    // A file renamed before it is closed is closed under its
                    // new name: stop waiting for the old one.
                    self.open_writes.remove(path);
                    // A watched folder deleted or moved away took its watch
                    // with it (a folder made again at that path may even get
                    // the same inode): forget it, so the store's next
                    // `WatchDirs` watches the path again.
                    if self.watched.remove(path).is_some() {
                        if let Some(notify) = self.notify.as_mut() {
                            let _ = notify.unwatch(path);
                        }
                        log::debug!(target: TARGET, "{} went away; it is watched again when it is back", path.display());
                    }
                }
                RawKind::Other => {}
            }
        }
        if matches!(msg.kind, RawKind::Closed | RawKind::MovedOrRemoved)
            && !msg.overflow
            && !msg.paths.is_empty()
        {
            // A write just completed: a pair that is whole with it is served
            // almost at once, without waiting for the burst to be over.
            self.eager.extend(msg.paths.iter().cloned());
            if !self.eager_scheduled {
                self.eager_scheduled = true;
                if self.barrier.is_some() {
                    // At once (after the events already in the mailbox): the
                    // barrier confirms what the store finds.
                    ctx.notify(FlushEager);
                } else {
                    ctx.run_later(EAGER_DELAY, |act, _| act.flush_eager());
                }
            }
        }
        self.pending.extend(msg.paths);
        if self.burst_start.is_none() {
            self.burst_start = Some(now);
        }
        self.last_event = Some(now);
        self.schedule_flush(ctx, QUIET);
    }
}

/// Watcher -> itself: send the eager paths gathered so far.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushEager;

impl Handler<FlushEager> for Watcher {
    type Result = ();

    fn handle(&mut self, _: FlushEager, _ctx: &mut Context<Self>) {
        self.flush_eager();
    }
}

impl Handler<EagerCheck> for Watcher {
    type Result = ();

    fn handle(&mut self, msg: EagerCheck, ctx: &mut Context<Self>) {
        self.checks_waiting.push(msg);
        self.send_barrier(ctx);
    }
}

impl Handler<ReconfigureWatcher> for Watcher {
    type Result = ();

    fn handle(&mut self, msg: ReconfigureWatcher, ctx: &mut Context<Self>) {
        self.mode = msg.mode;
        self.rescan_interval = msg.rescan_interval;
        ctx.stop();
    }
}

impl Handler<Restart> for Watcher {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Context<Self>) {
        crate::fault_point(ActorName::Watcher);
        ctx.stop();
    }
}
