//! The PostgreSQL back end (issue 12): one table,
//! `clace_storage(key text PRIMARY KEY, value bytea, modified timestamptz)`,
//! made on first use; one dedicated connection per handle, on which every
//! operation runs (the issue: session advisory locks on a dedicated
//! connection, writes made on that same connection), reconnected with
//! backoff; `LISTEN`/`NOTIFY` on the channel `clace_storage`, whose payload
//! is the key written or deleted.
//!
//! **No TLS to PostgreSQL yet** (`NoTls`; a URL asking for
//! `sslmode=require` is refused): keep the server on loopback or a private
//! network, or reach it through a local pgbouncer or stunnel.
//!
//! Locks are session advisory locks, numbered by [`target::lock_id`]
//! (64-bit FNV-1a of `clace:<name>`, fixed across versions): one ends with
//! its session, so an instance that dies holds nothing, and a lease knows
//! it is lost once the connection it was taken on is gone.
//!
//! While the server is unreachable every operation fails at once (after at
//! most [`CONNECTING_WAIT`] for an attempt under way) with
//! `PostgreSQL at HOST:PORT/DB is unreachable: ...`; every query is bounded
//! by [`QUERY_TIMEOUT`], after which the connection is dropped and made
//! again (a hung server never hangs the issuer).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot, watch};

use super::backend::KeyInfo;
use link::{Link, Session};
use target::{error_text, like_under, lock_id, Target};

mod link;
mod target;

/// How long an operation waits for a connection attempt under way.
pub const CONNECTING_WAIT: Duration = Duration::from_secs(2);

/// The bound on every query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many notifications a slow receiver may fall behind by (it then
/// gets `Lagged` and should reread everything).
const CHANGES_BUFFER: usize = 256;

/// A handle on the storage; clones share the connection, which ends with
/// the last clone (and the last [`PgLease`]).
#[derive(Clone)]
pub struct Postgres {
    shared: Arc<Shared>,
}

struct Shared {
    target: Target,
    link: watch::Receiver<Link>,
    changes: broadcast::Sender<String>,
    /// The locks this instance holds, with the connection generation each
    /// was taken on: advisory locks are re-entrant within a session, so a
    /// second `try_lock` of a name held here must be refused here.
    held: Mutex<HashMap<String, u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A session advisory lock held; unlocked by [`PgLease::release`] or, in a
/// task, when dropped.
pub struct PgLease {
    held: Option<Held>,
}

struct Held {
    shared: Arc<Shared>,
    key: String,
    generation: u64,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Postgres")
            .field(&self.shared.target.described)
            .finish()
    }
}

impl std::fmt::Debug for PgLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("PgLease");
        if let Some(h) = &self.held {
            d.field("key", &h.key).field("generation", &h.generation);
        }
        d.finish()
    }
}

fn lock_held(shared: &Shared) -> MutexGuard<'_, HashMap<String, u64>> {
    shared.held.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Postgres {
    /// A handle that connects (and reconnects) in the background; never
    /// fails for an unreachable server (operations fail until it is back).
    /// Fails for a URL that cannot be used (the error does not repeat it),
    /// or outside a tokio runtime.
    pub fn connect(url: &str) -> Result<Postgres, String> {
        let target = Target::parse(url)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the PostgreSQL storage needs a running tokio runtime".to_string())?;
        let (link_tx, link_rx) = watch::channel(Link::Connecting { last: None });
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        let task = runtime.spawn(link::run(target.clone(), link_tx, changes.clone()));
        Ok(Postgres {
            shared: Arc::new(Shared {
                target,
                link: link_rx,
                changes,
                held: Mutex::new(HashMap::new()),
                task,
            }),
        })
    }

    pub async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let s = self.session().await?;
        let row = self
            .run(&s, s.client.query_opt(&s.statements.load, &[&key]))
            .await?;
        row.map(|r| r.try_get::<_, Vec<u8>>(0))
            .transpose()
            .map_err(|e| self.failed(&e))
    }

    /// Upserts the value and notifies `clace_storage` with the key, in one
    /// statement (one transaction).
    pub async fn store(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let s = self.session().await?;
        self.run(&s, s.client.execute(&s.statements.store, &[&key, &value]))
            .await
            .map(drop)
    }

    /// Deletes the key (notified when there was one); a missing key is no
    /// error.
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        let s = self.session().await?;
        self.run(&s, s.client.execute(&s.statements.delete, &[&key]))
            .await
            .map(drop)
    }

    /// Every key under `prefix/` (every key for `""`), sorted by bytes as
    /// the folder's are.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let s = self.session().await?;
        let rows = match like_under(prefix) {
            None => {
                self.run(&s, s.client.query(&s.statements.list_all, &[]))
                    .await?
            }
            Some(pattern) => {
                self.run(&s, s.client.query(&s.statements.list_like, &[&pattern]))
                    .await?
            }
        };
        let mut keys = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.failed(&e))?;
        keys.sort();
        Ok(keys)
    }

    /// When the key was last written (Unix seconds) and its value's size.
    pub async fn stat(&self, key: &str) -> Result<Option<KeyInfo>, String> {
        let s = self.session().await?;
        let Some(row) = self
            .run(&s, s.client.query_opt(&s.statements.stat, &[&key]))
            .await?
        else {
            return Ok(None);
        };
        let modified: i64 = row.try_get(0).map_err(|e| self.failed(&e))?;
        let size: i64 = row.try_get(1).map_err(|e| self.failed(&e))?;
        Ok(Some(KeyInfo {
            modified,
            size: u64::try_from(size).unwrap_or(0),
        }))
    }

    /// One attempt at the advisory lock of `key`; `Ok(None)` when another
    /// session (or another holder in this instance) has it.
    pub async fn try_lock(&self, key: &str) -> Result<Option<PgLease>, String> {
        let s = self.session().await?;
        {
            let mut held = lock_held(&self.shared);
            if held.get(key) == Some(&s.generation) {
                return Ok(None);
            }
            held.insert(key.to_string(), s.generation);
        }
        // In a task of its own: should the caller give up on this future,
        // a lock taken is still wrapped in a lease, whose drop unlocks it.
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            let id = lock_id(&key);
            let got = this
                .run(&s, s.client.query_one(&s.statements.try_lock, &[&id]))
                .await
                .and_then(|row| row.try_get::<_, bool>(0).map_err(|e| this.failed(&e)));
            let result = match got {
                Ok(true) => Ok(Some(PgLease {
                    held: Some(Held {
                        shared: this.shared.clone(),
                        key,
                        generation: s.generation,
                    }),
                })),
                Ok(false) => {
                    forget(&this.shared, &key, s.generation);
                    Ok(None)
                }
                Err(e) => {
                    forget(&this.shared, &key, s.generation);
                    Err(e)
                }
            };
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| {
            format!(
                "PostgreSQL at {}: the lock attempt was cancelled",
                self.at()
            )
        })?
    }

    /// Keys written or deleted by any instance (this one too); `"*"` after
    /// every (re)connection, when anything may have changed.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.shared.changes.subscribe()
    }

    /// `postgres://user@host:port/db`, never the password.
    pub fn describe(&self) -> String {
        self.shared.target.described.clone()
    }

    fn at(&self) -> &str {
        &self.shared.target.at
    }

    /// The current session; waits up to [`CONNECTING_WAIT`] for an attempt
    /// under way, fails at once while the server is known to be down.
    async fn session(&self) -> Result<Arc<Session>, String> {
        let mut link = self.shared.link.clone();
        let stopped = matches!(
            tokio::time::timeout(
                CONNECTING_WAIT,
                link.wait_for(|l| !matches!(l, Link::Connecting { .. })),
            )
            .await,
            Ok(Err(_))
        );
        if stopped {
            return Err(format!(
                "PostgreSQL at {}: the connection task has stopped",
                self.at()
            ));
        }
        let now = link.borrow().clone();
        match now {
            Link::Up(session) => Ok(session),
            Link::Down { error } => Err(self.unreachable(&error)),
            Link::Connecting { last: Some(error) } => Err(self.unreachable(&error)),
            Link::Connecting { last: None } => Err(self.unreachable(&format!(
                "no connection after {} s",
                CONNECTING_WAIT.as_secs()
            ))),
        }
    }

    /// A query on `session`, bounded by [`QUERY_TIMEOUT`]; on a timeout
    /// the connection is dropped (and made again).
    async fn run<T>(
        &self,
        session: &Session,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(QUERY_TIMEOUT, query).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_closed() => Err(self.unreachable(&error_text(&e))),
            Ok(Err(e)) => Err(self.failed(&e)),
            Err(_) => {
                session.abandon.notify_one();
                Err(self.unreachable(&format!(
                    "no answer in {} s; reconnecting",
                    QUERY_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn unreachable(&self, why: &str) -> String {
        format!("PostgreSQL at {} is unreachable: {why}", self.at())
    }

    fn failed(&self, e: &tokio_postgres::Error) -> String {
        format!("PostgreSQL at {}: {}", self.at(), error_text(e))
    }
}

/// Forgets a lock of this instance, if it is still the one of `generation`.
fn forget(shared: &Shared, key: &str, generation: u64) {
    let mut held = lock_held(shared);
    if held.get(key) == Some(&generation) {
        held.remove(key);
    }
}

/// Unlocks `held` if its connection is still the current one (otherwise
/// the lock ended with its session); errors are ignored.
async fn unlock(held: Held) {
    let this = Postgres {
        shared: held.shared.clone(),
    };
    let current = match &*held.shared.link.borrow() {
        Link::Up(s) if s.generation == held.generation => Some(s.clone()),
        _ => None,
    };
    if let Some(s) = current {
        let id = lock_id(&held.key);
        if let Err(e) = this
            .run(&s, s.client.query_one(&s.statements.unlock, &[&id]))
            .await
        {
            log::debug!(target: crate::acme::TARGET, "storage: unlocking {}: {e}", held.key);
        }
    }
    forget(&held.shared, &held.key, held.generation);
}

impl PgLease {
    /// Whether the connection the lock was taken on has ended: the lock
    /// ended with its session, and another instance may hold it now.
    pub fn lost(&self) -> bool {
        let Some(h) = &self.held else {
            return true;
        };
        !matches!(&*h.shared.link.borrow(), Link::Up(s) if s.generation == h.generation)
    }

    pub async fn release(mut self) {
        if let Some(held) = self.held.take() {
            unlock(held).await;
        }
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(unlock(held));
            }
            // No runtime left: the connection is going too, and the lock
            // with its session.
            Err(_) => forget(&held.shared, &held.key, held.generation),
        }
    }
}

#[cfg(test)]
mod live;
