//! The one connection of a [`super::Postgres`] handle: a task that
//! connects, makes the table, `LISTEN`s, drives the connection (which
//! delivers the notifications) and reconnects with backoff, publishing
//! the current session on a `watch` channel.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::sync::{broadcast, watch, Notify};
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use super::target::{error_text, lock_id, Target};
use crate::acme::TARGET;

/// The table, and the channel its changes are announced on.
pub(super) const TABLE: &str = "clace_storage";

/// First pause after a failed attempt; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A session that lasted less than this and ended does not reset the
/// backoff (a server that lets us in and drops us at once is not hammered).
const STABLE: Duration = Duration::from_secs(10);

/// The bound on connecting and setting up (table, `LISTEN`, statements).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Made once, by whichever instance comes first: an advisory transaction
/// lock orders concurrent creators (two `CREATE TABLE IF NOT EXISTS` at
/// once can fail on the catalog's unique index), and an existing table
/// needs no `CREATE` privilege (PostgreSQL 15 gives none on `public` to
/// other roles: an operator may create the table and grant only DML).
const SETUP: &str = "DO $clace$
BEGIN
    IF to_regclass('clace_storage') IS NULL THEN
        PERFORM pg_advisory_xact_lock($LOCK$);
        CREATE TABLE IF NOT EXISTS clace_storage (
            key text PRIMARY KEY,
            value bytea NOT NULL,
            modified timestamptz NOT NULL DEFAULT now()
        );
    END IF;
END
$clace$;
LISTEN clace_storage;";

/// The number of the advisory lock taken while the table is created.
const TABLE_LOCK: i64 = lock_id("\0create table clace_storage");

/// The statements of a session, prepared once per connection.
pub(super) struct Statements {
    pub load: Statement,
    pub store: Statement,
    pub delete: Statement,
    pub list_all: Statement,
    pub list_like: Statement,
    pub stat: Statement,
    pub try_lock: Statement,
    pub unlock: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            load: client
                .prepare("SELECT value FROM clace_storage WHERE key = $1")
                .await?,
            // One statement, so one transaction: the notification goes out
            // when the row is committed.
            store: client
                .prepare(
                    "WITH up AS (INSERT INTO clace_storage (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, modified = now() \
                     RETURNING key) \
                     SELECT pg_notify('clace_storage', key) FROM up",
                )
                .await?,
            delete: client
                .prepare(
                    "WITH gone AS (DELETE FROM clace_storage WHERE key = $1 RETURNING key) \
                     SELECT pg_notify('clace_storage', key) FROM gone",
                )
                .await?,
            list_all: client.prepare("SELECT key FROM clace_storage").await?,
            list_like: client
                .prepare("SELECT key FROM clace_storage WHERE key LIKE $1 ESCAPE '\\'")
                .await?,
            stat: client
                .prepare(
                    "SELECT floor(extract(epoch FROM modified))::bigint, \
                     octet_length(value)::bigint FROM clace_storage WHERE key = $1",
                )
                .await?,
            try_lock: client
                .prepare("SELECT pg_try_advisory_lock($1::bigint)")
                .await?,
            unlock: client
                .prepare("SELECT pg_advisory_unlock($1::bigint)")
                .await?,
        })
    }
}

/// One connection, up.
pub(super) struct Session {
    pub client: Client,
    pub statements: Statements,
    /// Counts connections (from 1): a lock belongs to one.
    pub generation: u64,
    /// Told by an operation that got no answer in time: the connection is
    /// dropped (its locks go with it) and a new one made.
    pub abandon: Notify,
}

/// What a handle sees of its connection.
#[derive(Clone)]
pub(super) enum Link {
    /// An attempt is under way; the previous one's error, if any.
    Connecting {
        last: Option<String>,
    },
    Up(Arc<Session>),
    /// Waiting to try again after this error.
    Down {
        error: String,
    },
}

/// Runs until aborted (when the last handle goes).
pub(super) async fn run(
    target: Target,
    link: watch::Sender<Link>,
    changes: broadcast::Sender<String>,
) {
    let mut generation = 0u64;
    let mut backoff = BACKOFF_MIN;
    // Whether this outage was logged already (once per outage).
    let mut outage_logged = false;
    let mut last: Option<String> = None;
    loop {
        link.send_replace(Link::Connecting { last: last.clone() });
        generation += 1;
        match connect(&target, generation, &changes).await {
            Ok((session, messages)) => {
                log::info!(target: TARGET, "storage: connected to PostgreSQL at {}", target.at);
                outage_logged = false;
                let session = Arc::new(session);
                link.send_replace(Link::Up(session.clone()));
                // Anything may have changed while we were away.
                let _ = changes.send("*".to_string());
                let since = Instant::now();
                let why = serve(&session, messages, &changes).await;
                // The connection is closed here (its stream was dropped);
                // the session's advisory locks end with it.
                link.send_replace(Link::Down { error: why.clone() });
                log::warn!(target: TARGET, "storage: lost the connection to PostgreSQL at {}: {why}; reconnecting", target.at);
                if since.elapsed() >= STABLE {
                    backoff = BACKOFF_MIN;
                }
                last = Some(why);
            }
            Err(e) => {
                if outage_logged {
                    log::debug!(target: TARGET, "storage: PostgreSQL at {} is still unreachable: {e}", target.at);
                } else {
                    log::warn!(target: TARGET, "storage: PostgreSQL at {} is unreachable: {e}; retrying", target.at);
                    outage_logged = true;
                }
                link.send_replace(Link::Down { error: e.clone() });
                last = Some(e);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

type Messages = std::pin::Pin<
    Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send + 'static>,
>;

/// One connection made and set up, with the stream that drives it.
async fn connect(
    target: &Target,
    generation: u64,
    changes: &broadcast::Sender<String>,
) -> Result<(Session, Messages), String> {
    let attempt = async {
        let (client, mut connection) = target
            .config
            .connect(NoTls)
            .await
            .map_err(|e| error_text(&e))?;
        let mut messages: Messages = Box::pin(futures_util::stream::poll_fn(move |cx| {
            connection.poll_message(cx)
        }));
        let setup = SETUP.replace("$LOCK$", &TABLE_LOCK.to_string());
        while_driving(&mut messages, changes, client.batch_execute(&setup))
            .await
            .map_err(|e| format!("cannot set up the table {TABLE}: {e}"))?;
        let statements = while_driving(&mut messages, changes, Statements::prepare(&client))
            .await
            .map_err(|e| format!("cannot prepare the queries: {e}"))?;
        Ok((
            Session {
                client,
                statements,
                generation,
                abandon: Notify::new(),
            },
            messages,
        ))
    };
    match tokio::time::timeout(SETUP_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no connection after {} s", SETUP_TIMEOUT.as_secs())),
    }
}

/// Runs `work` while the connection is driven (a request is answered only
/// while it is); the connection ending first is an error.
async fn while_driving<T>(
    messages: &mut Messages,
    changes: &broadcast::Sender<String>,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done.map_err(|e| error_text(&e)),
            message = messages.next() => handle(message, changes)?,
        }
    }
}

/// Drives an established connection until it ends or is abandoned;
/// returns why it ended.
async fn serve(
    session: &Session,
    mut messages: Messages,
    changes: &broadcast::Sender<String>,
) -> String {
    loop {
        tokio::select! {
            message = messages.next() => {
                if let Err(why) = handle(message, changes) {
                    return why;
                }
            }
            () = session.abandon.notified() => {
                return "a query got no answer in time".to_string();
            }
        }
    }
}

/// One message of the connection: a notification is passed on; the end of
/// the connection is an `Err` saying why.
fn handle(
    message: Option<Result<AsyncMessage, tokio_postgres::Error>>,
    changes: &broadcast::Sender<String>,
) -> Result<(), String> {
    match message {
        Some(Ok(AsyncMessage::Notification(n))) => {
            if n.channel() == TABLE {
                let _ = changes.send(n.payload().to_string());
            }
            Ok(())
        }
        Some(Ok(AsyncMessage::Notice(n))) => {
            log::debug!(target: TARGET, "storage: PostgreSQL says {}: {}", n.severity(), n.message());
            Ok(())
        }
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(error_text(&e)),
        None => Err("the connection was closed".to_string()),
    }
}
