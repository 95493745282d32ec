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

use crate::certs::store::CertStore;
use crate::health::{ActorName, ActorState, Health};
use crate::messages::{
    PathsChanged, RawEvents, ReconfigureWatcher, Restart, SubscribeWatcher, WatchDirs,
};
use crate::settings::CertWatch;

const TARGET: &str = "clace::watcher";
/// A burst of events ends after this much quiet...
const QUIET: Duration = Duration::from_millis(20);
/// ...or this long after its first event, whichever comes first...
const MAX_DELAY: Duration = Duration::from_millis(150);
/// ...except that a file written in place is waited for until it is closed
/// (a chain written certificate by certificate is not taken half-way), for
/// at most this long after its last write.
const MAX_OPEN_WRITE: Duration = Duration::from_secs(1);

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
    /// Files written but not closed yet, with the time of their last write.
    open_writes: HashMap<PathBuf, Instant>,
    burst_start: Option<Instant>,
    last_event: Option<Instant>,
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
            open_writes: HashMap::new(),
            burst_start: None,
            last_event: None,
        }
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
                    written: matches!(event.kind, EventKind::Modify(ModifyKind::Data(_))),
                    closed: matches!(
                        event.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write))
                    ),
                    paths: event.paths,
                });
            }
            Err(e) => {
                log::warn!(target: TARGET, "file watcher error: {e}; rescanning");
                addr.do_send(RawEvents {
                    paths: e.paths,
                    overflow: true,
                    written: false,
                    closed: false,
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

    fn flush(&mut self, ctx: &mut Context<Self>) {
        let (Some(first), Some(last)) = (self.burst_start, self.last_event) else {
            return;
        };
        let now = Instant::now();
        let quiet_left = QUIET.saturating_sub(now - last);
        let max_left = MAX_DELAY.saturating_sub(now - first);
        let mut wait = quiet_left.min(max_left);
        self.open_writes.retain(|_, at| now - *at < MAX_OPEN_WRITE);
        if let Some(open_left) = self
            .pending
            .iter()
            .filter_map(|p| self.open_writes.get(p))
            .map(|at| MAX_OPEN_WRITE.saturating_sub(now - *at))
            .max()
        {
            // The close event flushes sooner; this bounds the wait.
            wait = wait.max(open_left.min(Duration::from_millis(50)));
        }
        if !wait.is_zero() {
            ctx.run_later(wait, |act, ctx| act.flush(ctx));
            return;
        }
        self.burst_start = None;
        self.last_event = None;
        let paths = std::mem::take(&mut self.pending);
        self.store.do_send(PathsChanged { paths });
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
        match self.mode {
            CertWatch::Poll => log::info!(
                target: TARGET,
                "cert_watch = \"poll\": certificate folders are rescanned every {}s, no file events",
                self.rescan_interval.as_secs()
            ),
            CertWatch::Auto => self.start_notify(ctx),
        }
        self.health.set(ActorName::Watcher, ActorState::Running);
        self.store.do_send(SubscribeWatcher {
            watcher: ctx.address().recipient(),
        });
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.notify = None;
        self.watched.clear();
        Running::Stop
    }
}

impl Supervised for Watcher {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.health.set(ActorName::Watcher, ActorState::Restarting);
        self.health.count_restart(ActorName::Watcher);
        log::info!(target: TARGET, "restarting the file watcher");
        self.notify = None;
        self.watched.clear();
        self.pending.clear();
        self.open_writes.clear();
        self.burst_start = None;
        self.last_event = None;
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
        if msg.overflow || msg.paths.is_empty() {
            // An empty path list stands for "something changed, somewhere".
            self.pending.insert(PathBuf::from("/"));
        }
        for path in &msg.paths {
            if msg.written {
                self.open_writes.insert(path.clone(), now);
            } else if msg.closed {
                self.open_writes.remove(path);
            }
        }
        self.pending.extend(msg.paths);
        if self.burst_start.is_none() {
            self.burst_start = Some(now);
            ctx.run_later(QUIET, |act, ctx| act.flush(ctx));
        }
        self.last_event = Some(now);
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
        ctx.stop();
    }
}
