//! Every message the actors exchange.

use std::collections::BTreeSet;
use std::path::PathBuf;

use actix::Message;

/// Asks an actor to restart: it stops, and its supervisor starts it again
/// at once (no backoff: the restart was asked for, nothing failed).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Restart;

/// Asks a listener to stop accepting and let in-flight requests finish
/// (up to the graceful timeout); answered once the server has stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Watcher -> cert store: these paths may have changed (debounced).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PathsChanged {
    pub paths: BTreeSet<PathBuf>,
    /// Files still open for writing: a pair with one of these is not read
    /// now (it will be, once the file is closed and sent in `paths`).
    pub busy: BTreeSet<PathBuf>,
    /// Sent at once on a close or a rename, before the burst is over: a
    /// pair that is whole and valid now is taken now; anything else (a key
    /// not there yet, a file half replaced, a deletion) is left, unlogged,
    /// to the debounced message that follows.
    pub eager: bool,
    /// On an eager message, when the watcher can confirm: the number of
    /// the last event it had seen when it sent this. A pair found whole
    /// and valid is then held until the watcher confirms that no file of
    /// it was written since ([`EagerCheck`]); `None`: taken at once.
    pub since: Option<u64>,
}

/// Cert store -> watcher: pairs read whole and valid on an eager message;
/// were any of these files written (an event numbered above `since`)
/// before the moment of this check? Answered by [`EagerChecked`] once every
/// event queued before the check has been delivered.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct EagerCheck {
    pub token: u64,
    pub since: u64,
    pub files: BTreeSet<PathBuf>,
}

/// Watcher -> cert store: the answer to [`EagerCheck`]: the files of the
/// check that were written meanwhile (a pair with one of them is left to
/// the debounced look; the others are served now).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct EagerChecked {
    pub token: u64,
    pub written: BTreeSet<PathBuf>,
}

/// Cert store -> watcher: the folders to watch now (the certificate
/// folders and every folder along the symbolic links of their files).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WatchDirs {
    pub dirs: BTreeSet<PathBuf>,
}

/// Cert store: re-check every pair now (the periodic rescan, SIGUSR1).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Rescan;

/// Watcher -> itself: raw events forwarded from notify's thread.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RawEvents {
    pub paths: Vec<PathBuf>,
    /// The watcher backend reported an error (queue overflow, lost watch):
    /// the store should rescan everything.
    pub overflow: bool,
    pub kind: RawKind,
}

/// What a raw event says about its paths, as far as debouncing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// Data was written (a write may still be going on).
    Written,
    /// A file opened for writing was closed: its write is complete.
    Closed,
    /// Renamed (from or to) or removed: whatever was open under that name
    /// is no longer written there.
    MovedOrRemoved,
    Other,
}

/// Watcher -> cert store, when the watcher (re)starts: send me the folders
/// to watch, now and whenever they change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeWatcher {
    pub watcher: actix::Recipient<WatchDirs>,
    pub checks: actix::Recipient<EagerCheck>,
}

/// Supervisor -> listener (SIGHUP): serve on this new socket and host from
/// now on; the old server stops gracefully and the old socket closes.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Rebind {
    pub host: String,
    pub socket: std::net::TcpListener,
}

/// Supervisor -> cert store (SIGHUP): new settings; the store restarts with
/// a full rescan.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReconfigureStore {
    pub settings: crate::certstore::StoreSettings,
}

/// Supervisor -> watcher (SIGHUP): new mode and rescan interval; the
/// watcher restarts.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReconfigureWatcher {
    pub mode: crate::settings::CertWatch,
    pub rescan_interval: std::time::Duration,
}

/// ACME issuer -> cert store: serve this TLS-ALPN-01 challenge certificate
/// for `name` (`None`: the challenge is over). Answered once the snapshot
/// holding it is published.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetChallenge {
    pub name: String,
    pub cert: Option<std::sync::Arc<rustls::sign::CertifiedKey>>,
}

/// ACME issuer -> cert store: certificates for these names were written to
/// the storage; read them now. Answered once they are published.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AcmeStored {
    pub names: Vec<String>,
}

/// Cert store -> ACME issuer: a new snapshot was published (a file
/// certificate that covered a name may be gone).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SnapshotPublished;

/// ACME issuer -> cert store, when the issuer starts: tell me of every new
/// snapshot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeIssuer {
    pub issuer: actix::Recipient<SnapshotPublished>,
}

/// Supervisor -> ACME issuer (SIGHUP): new settings; `None` disables ACME.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReconfigureAcme {
    pub settings: Option<crate::acme::AcmeSettings>,
}
