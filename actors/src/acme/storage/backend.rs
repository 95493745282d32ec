//! The storage interface of the ACME issuer (issue 12): load, store
//! atomically, delete, list, stat, and a lock with a lease, over a folder
//! (the default, certmagic's layout and lock files) or PostgreSQL (one
//! table, session advisory locks, `LISTEN`/`NOTIFY`). Keys are the
//! folder layout's relative paths (`certificates/<issuer>/<name>/<name>.crt`).
//!
//! An enum rather than a trait object: two back ends, both known here, and
//! async methods without boxing.

use std::time::Duration;

use super::folder::{Folder, FolderLease};
use super::postgres::{PgLease, Postgres};

/// What `stat` says of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// Unix seconds.
    pub modified: i64,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub enum Backend {
    Folder(Folder),
    Postgres(Postgres),
}

/// A lock held; released by [`Lease::release`] or when dropped (a folder
/// lock file is removed; a PostgreSQL advisory lock is unlocked, and ends
/// with its session anyway).
#[derive(Debug)]
pub enum Lease {
    Folder(FolderLease),
    Postgres(PgLease),
}

/// How often a waiter tries a held lock again.
pub const LOCK_POLL: Duration = Duration::from_millis(250);

impl Backend {
    pub async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Backend::Folder(f) => f.load(key),
            Backend::Postgres(p) => p.load(key).await,
        }
    }

    /// Stores `value` under `key` atomically (a reader sees the old value
    /// or the new one); announced to other instances.
    pub async fn store(&self, key: &str, value: &[u8]) -> Result<(), String> {
        match self {
            Backend::Folder(f) => f.store(key, value, true),
            Backend::Postgres(p) => p.store(key, value).await,
        }
    }

    /// Like [`Backend::store`] for what the next write replaces anyway
    /// (heartbeats): no fsync of the folder.
    pub async fn store_volatile(&self, key: &str, value: &[u8]) -> Result<(), String> {
        match self {
            Backend::Folder(f) => f.store(key, value, false),
            Backend::Postgres(p) => p.store(key, value).await,
        }
    }

    /// Removes `key`; a missing key is no error.
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        match self {
            Backend::Folder(f) => f.delete(key),
            Backend::Postgres(p) => p.delete(key).await,
        }
    }

    /// Every key under `prefix` (a folder-like prefix without a trailing
    /// `/`), recursively, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        match self {
            Backend::Folder(f) => f.list(prefix),
            Backend::Postgres(p) => p.list(prefix).await,
        }
    }

    pub async fn stat(&self, key: &str) -> Result<Option<KeyInfo>, String> {
        match self {
            Backend::Folder(f) => f.stat(key),
            Backend::Postgres(p) => p.stat(key).await,
        }
    }

    /// One attempt at the lock named `key`; `Ok(None)` when another
    /// instance holds it. The `bool` says a stale lock (an instance that
    /// died) was taken over.
    pub async fn try_lock(&self, key: &str) -> Result<Option<(Lease, bool)>, String> {
        match self {
            Backend::Folder(f) => Ok(f.try_lock(key)?.map(|(l, over)| (Lease::Folder(l), over))),
            Backend::Postgres(p) => Ok(p.try_lock(key).await?.map(|l| (Lease::Postgres(l), false))),
        }
    }

    /// Keys changed by any instance, as the back end hears of them
    /// (PostgreSQL's notifications; `"*"` after a reconnection, when
    /// anything may have changed). The folder has none: the file watcher
    /// and the polls see its changes.
    pub fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        match self {
            Backend::Folder(_) => None,
            Backend::Postgres(p) => Some(p.changes()),
        }
    }

    /// What the operator wrote, for log lines (a PostgreSQL URL without its
    /// password).
    pub fn describe(&self) -> String {
        match self {
            Backend::Folder(f) => f.root().display().to_string(),
            Backend::Postgres(p) => p.describe(),
        }
    }
}

impl Lease {
    /// Whether the lock was lost while held (taken over after a missed
    /// refresh, or the database session ended): another instance may be
    /// ordering the same name now.
    pub fn lost(&self) -> bool {
        match self {
            Lease::Folder(l) => l.lost(),
            Lease::Postgres(l) => l.lost(),
        }
    }

    pub async fn release(self) {
        match self {
            Lease::Folder(l) => l.release(),
            Lease::Postgres(l) => l.release().await,
        }
    }
}
